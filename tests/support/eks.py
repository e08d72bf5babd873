"""eks-karpenter helpers shared by its test modules: a stack of EksGpuCompute alone, the destroy
order model, and the stack's AWS part for a real plan or apply."""

from __future__ import annotations

import json
import re

from gpu_constructs.compute.eks import (
    EksProps,
)
from tests.conftest import (
    by_kind,
    manifests_of,
    resources,
)
from tests.support import render


def eks_stack(synth, **overrides) -> dict:
    """A stack holding only EksGpuCompute with ``eks_props(**overrides)``."""
    from cdktf_cdktf_provider_aws.provider import AwsProvider

    from gpu_constructs.compute.eks import EksGpuCompute

    def build(stack):
        AwsProvider(stack, "aws", region="eu-west-1")
        EksGpuCompute(stack, "eks", props=eks_props(**overrides))

    return synth(build)


def destroy_order_problems(stack: render.RenderedStack) -> list[str]:
    """What Terraform could destroy before something that still needs it.

    Destroy walks the graph backwards: a resource goes before everything it depends on, directly or
    transitively, and in parallel with the rest. So what a node, a controller or an object needs while
    it is torn down must be among its dependencies, as terraform-aws-eks orders them (the node group
    after its role's attachments, each add-on after its role's policies and Pod Identity association,
    Karpenter's node pools after the node access entry and node role).
    """
    from tests.support.order import dependency_closure, provides

    synthesized = stack.synthesized
    needs: dict[str, set[str]] = {}
    for name, group in resources(synthesized, "aws_eks_node_group").items():
        role = role_of(group["node_role_arn"])
        needs[f"aws_eks_node_group.{name}"] = {role, *grants_of(synthesized, role)}
    associations = resources(synthesized, "aws_eks_pod_identity_association")
    ingress_controller = [r for r in stack.releases if r.chart == "aws-load-balancer-controller"]
    for release in stack.releases:
        wanted = needs.setdefault(release.address, set())
        accounts = provides(release).service_accounts
        for name, association in associations.items():
            if (association["namespace"], association["service_account"]) in accounts:
                role = role_of(association["role_arn"])
                wanted |= {f"aws_eks_pod_identity_association.{name}", *grants_of(synthesized, role)}
        # The synthesized manifests, where the node role is still a reference.
        synthesized_objects = manifests_of(release.raw) if release.is_manifests_chart else []
        for node_class in by_kind(synthesized_objects, "EC2NodeClass"):
            address = role_of(node_class["spec"]["role"])
            entries = [
                f"aws_eks_access_entry.{n}"
                for n, e in resources(synthesized, "aws_eks_access_entry").items()
                if ROLE_REFERENCE.search(e["principal_arn"]) and role_of(e["principal_arn"]) == address
            ]
            assert entries, (
                f"no access entry for the node role of EC2NodeClass {node_class['metadata']['name']}"
            )
            wanted |= {address, *grants_of(synthesized, address), *entries}
        # The controller removes its finalizer from an Ingress after deleting the ALB: it must outlive
        # every release with an Ingress of its class.
        if any(
            o.get("kind") == "Ingress" and o.get("spec", {}).get("ingressClassName") == "alb"
            for o in release.objects
        ):
            wanted |= {r.address for r in ingress_controller}
    problems = []
    for address, wanted in sorted(needs.items()):
        missing = wanted - dependency_closure(synthesized, address)
        problems += [f"{m} may be destroyed before {address}" for m in sorted(missing)]
    return problems


def eks_props(**overrides) -> EksProps:
    """Valid EksProps but for ``overrides``."""
    fields = {
        "name": "c",
        "region": "eu-west-1",
        "account_id": "1",
        "availability_zones": ("eu-west-1a", "eu-west-1b"),
    }
    return EksProps(**{**fields, **overrides})


# --- a real plan against hashicorp/aws 5.100.0, offline ------------------------------------------------
PLAN_VARS = {
    "aws_account_id": "123456789012",
    "api_allowed_cidrs": '["203.0.113.0/24"]',
    "deployer_principal_arn": "arn:aws:iam::123456789012:role/ci",
    "app_domain": "inference.example.com",
    "route53_zone_id": "Z0123456789ABCDEFGHIJ",
    "inference_image": "ghcr.io/acme/tinyllama:1.0.0",
}


def aws_part(stack_json: dict) -> dict:
    """The stack without its Helm layer (whose provider cannot be installed offline), with fake
    credentials and no account look-up. Nothing in the AWS part refers to the Helm releases but one
    ordering, dropped here."""
    config = json.loads(json.dumps(stack_json))
    config["resource"].pop("helm_release")
    # The metrics-server add-on waits for Karpenter's NodePools (its pods need their nodes): an
    # ordering on the Helm layer, which is left out here.
    for bodies in config["resource"].values():
        for body in bodies.values():
            if "depends_on" in body:
                body["depends_on"] = [d for d in body["depends_on"] if not d.startswith("helm_release.")]
    # Data sources (the AMI release parameter, the add-on versions) are read at plan, which offline
    # is impossible: depending on the cluster, which the plan creates, defers their read to apply.
    (cluster,) = config["resource"]["aws_eks_cluster"]
    for bodies in config.get("data", {}).values():
        for body in bodies.values():
            body["depends_on"] = [f"aws_eks_cluster.{cluster}"]
    config["provider"].pop("helm")
    config["terraform"]["required_providers"].pop("helm")
    config["terraform"].pop("backend", None)
    (aws,) = config["provider"]["aws"]
    aws.pop("allowed_account_ids")  # needs the account id from STS, which is offline here
    aws.update(
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="offline-plan-not-a-secret",
        skip_credentials_validation=True,
        skip_requesting_account_id=True,
        skip_metadata_api_check=True,
    )
    assert "helm_release." not in json.dumps(config)
    return config


ROLE_REFERENCE = re.compile(r"\$\{aws_iam_role\.([A-Za-z0-9_-]+)\.")


def role_of(reference: str) -> str:
    (role,) = ROLE_REFERENCE.findall(reference)
    return f"aws_iam_role.{role}"


def grants_of(synthesized: dict, role: str) -> set[str]:
    """The inline policies and policy attachments of ``role`` (an address)."""
    return {
        f"{kind}.{name}"
        for kind in ("aws_iam_role_policy", "aws_iam_role_policy_attachment")
        for name, body in resources(synthesized, kind).items()
        if role_of(body["role"]) == role
    }
