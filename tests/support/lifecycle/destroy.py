"""Destroy order: what a controller needs outlives it, and it outlives what it finalizes.

Terraform destroys in the reverse of the dependency graph (``DestroyEdgeTransformer``,
hashicorp/terraform ``internal/terraform/transform_destroy_edge.go`` v1.11, used by
``graph_builder_apply.go`` for a destroy plan): A is destroyed before B iff A depends on B,
transitively (tests/support/lifecycle/graph.py). A resource nothing depends on may go first, in parallel.

Two rules:
1. A release that installs a controller owning cloud resources or finalizers must depend on every
   resource the controller needs to clean up at uninstall: the cluster and nodes it runs on, and on
   EKS its IAM role (through its pod identity association) with the role's policies, and for
   Karpenter the node role, its policy attachments and access entry (terminating instances and
   letting them leave), the interruption queue, and the subnets and security group tag it discovers.
   Otherwise the uninstall runs against a controller that can no longer call AWS: the ALB stays,
   Karpenter's instances keep running and the VPC cannot be deleted. On EKS that includes the
   nodes' route out (node_network): eks-karpenter creates no VPC endpoints, so the EC2, ELB,
   Route 53, STS and EKS Auth (Pod Identity) APIs are reached through the NAT gateways only, and a
   route table association deleted early leaves every controller on the nodes without AWS.
2. A release whose objects a controller finalizes (Ingress: the load balancer controller;
   NodePool/EC2NodeClass: Karpenter; CloudNativePG Cluster; cert-manager Certificate/Issuer;
   GPUCluster: the GPU Operator; CloudFirewall: cloud-firewall-controller) must depend on that
   controller's release, or the controller is uninstalled first and the finalizer never runs (the
   delete hangs until the Helm timeout). The controller's own release is no exception: its uninstall
   deletes the controller with the object.

Controllers are recognised from the rendered Deployments' container images (CONTROLLERS). Vault
is not one: it owns no cloud resources and puts no finalizer on another release's objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.lifecycle import graph
from tests.support.render import Release, RenderedStack

# controller -> a substring of its controller Deployment's image
CONTROLLERS = {
    "aws-load-balancer-controller": "eks/aws-load-balancer-controller",
    "karpenter": "karpenter/controller",
    "cloudnative-pg": "cloudnative-pg/cloudnative-pg",
    "cert-manager": "cert-manager-controller",
    "gpu-operator": "nvidia/gpu-operator",
    "cloud-firewall-controller": "linode/cloud-firewall-controller",
    # Owns Route 53 records: with policy sync it deletes them once their Ingresses are gone, which it
    # can only do while it reaches Route 53 with its pod identity.
    "external-dns": "external-dns/external-dns",
}

# (apiVersion group, kind) of objects a controller puts a finalizer on -> the controller
FINALIZED = {
    ("networking.k8s.io", "Ingress"): "aws-load-balancer-controller",
    ("karpenter.sh", "NodePool"): "karpenter",
    ("karpenter.k8s.aws", "EC2NodeClass"): "karpenter",
    ("postgresql.cnpg.io", "Cluster"): "cloudnative-pg",
    ("cert-manager.io", "Certificate"): "cert-manager",
    ("cert-manager.io", "Issuer"): "cert-manager",
    ("cert-manager.io", "ClusterIssuer"): "cert-manager",
    # gpu-operator v26.7.0 controllers/gpucluster_controller.go: gpucluster.nvidia.com/dra-resourceclaim,
    # removed by the running operator once it has drained the DRA driver's operands. The ClusterPolicy
    # carries no finalizer (controllers/clusterpolicy_controller.go: "Owned objects are automatically
    # garbage collected"; the only EnsureFinalizer call is the GPUCluster's): its operand DaemonSets
    # go with it by their owner references, with or without the operator.
    ("nvidia.com", "GPUCluster"): "gpu-operator",
    # cloud-firewall-controller v0.2.1 internal/controller/cloudfirewall_controller.go checkFinalizer:
    # cloudfirewalls.networking.linode.com/finalizer, removed by the running controller once it has
    # deleted the Linode firewall.
    ("networking.linode.com", "CloudFirewall"): "cloud-firewall-controller",
}
# Kinds whose finalizer is read from the controller's source, so one rendered in the controller's
# own release is a finding too. Not GPUCluster: the GPU Operator chart's own one (gpuCluster.deployCR,
# off here) is deleted by its pre-delete hook while the operator runs (templates/cleanup_gpucluster.yaml,
# `cleanup-gpuclusters`, which waits for it to be gone) and kept from Helm's own deletion
# (helm.sh/resource-policy: keep).
FINALIZER_READ = {("networking.linode.com", "CloudFirewall")}

# The resources a cluster runs on, per platform: every controller release must outlive them
CLUSTER_TYPES = (
    "aws_eks_cluster",
    "aws_eks_node_group",
    "linode_lke_cluster",
    "linode_lke_node_pool",
    "proxmox_virtual_environment_vm",
)
CLUSTER_DATA = (
    "server-k3s",
    "k3d_cluster",
    "kubeconfig",
)  # terraform_data standing for a cluster


@dataclass(frozen=True)
class Finding:
    stack: str
    release: str
    needs: str  # address destroyed too early (a resource, or a controller's release)
    why: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.stack, self.release, self.needs)


Resources = dict[str, dict[str, Any]]


def _addresses(synthesized: dict[str, Any], kind: str, keep: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {
        f"{kind}.{logical_id}"
        for logical_id, body in synthesized.get("resource", {}).get(kind, {}).items()
        if keep(body)
    }


def _refers(synthesized: dict[str, Any], value: Any, address: str) -> bool:
    return address in graph.references(synthesized, value)


def cluster_resources(synthesized: dict[str, Any]) -> set[str]:
    found = set()
    for kind in CLUSTER_TYPES:
        found |= _addresses(synthesized, kind, lambda _: True)
    for logical_id, body in synthesized.get("resource", {}).get("terraform_data", {}).items():
        if "kubeconfig" in logical_id and not _read_by_a_provider(synthesized, body):
            continue  # a copy for kubectl (single-node's providers derive their access each run)
        if any(part in logical_id for part in CLUSTER_DATA):
            found.add(f"terraform_data.{logical_id}")
    return found


def _read_by_a_provider(synthesized: dict[str, Any], step: dict[str, Any]) -> bool:
    """Whether the kubeconfig a step writes is the file a helm provider reads."""
    read = {
        p.get("kubernetes", {}).get("config_path") for p in synthesized.get("provider", {}).get("helm", [])
    }
    written = {
        b["local-exec"].get("environment", {}).get("KUBECONFIG_OUT")
        for b in step.get("provisioner", [])
        if "local-exec" in b
    }
    return bool((read - {None}) & written)


def node_network(synthesized: dict[str, Any]) -> set[str]:
    """What the EKS node groups' subnets reach AWS through: each subnet's route table association
    and route table (its routes, inline or ``aws_route``), the NAT gateways and internet gateway they
    route to, and for each NAT gateway the same of its own subnet (a NAT gateway forwards only while
    its subnet routes to the internet gateway). Empty on a stack with no ``aws_eks_node_group``."""
    resources = synthesized.get("resource", {})
    subnets = set()
    for body in resources.get("aws_eks_node_group", {}).values():
        subnets |= {
            a for a in graph.references(synthesized, body.get("subnet_ids")) if a.startswith("aws_subnet.")
        }
    found: set[str] = set()
    seen: set[str] = set()
    while subnets - seen:
        subnet = sorted(subnets - seen)[0]
        seen.add(subnet)
        for logical_id, body in resources.get("aws_route_table_association", {}).items():
            if not _refers(synthesized, body.get("subnet_id"), subnet):
                continue
            found.add(f"aws_route_table_association.{logical_id}")
            for table in graph.references(synthesized, body.get("route_table_id")):
                found.add(table)
                routes = [resources.get("aws_route_table", {}).get(table.split(".", 1)[1], {}).get("route")]
                for route_id, route in resources.get("aws_route", {}).items():
                    if _refers(synthesized, route.get("route_table_id"), table):
                        found.add(f"aws_route.{route_id}")
                        routes.append(route)
                for target in graph.references(synthesized, routes):
                    if target.startswith(("aws_nat_gateway.", "aws_internet_gateway.")):
                        found.add(target)
                    if target.startswith("aws_nat_gateway."):
                        nat = resources["aws_nat_gateway"][target.split(".", 1)[1]]
                        subnets |= graph.references(synthesized, nat.get("subnet_id"))
    return found


def _role_policies(synthesized: dict[str, Any], role: str) -> set[str]:
    found = set()
    for kind in ("aws_iam_role_policy", "aws_iam_role_policy_attachment"):
        found |= _addresses(synthesized, kind, lambda body: _refers(synthesized, body.get("role"), role))
    return found


def _pod_identity(synthesized: dict[str, Any], release: Release) -> set[str]:
    """The release's ServiceAccounts' pod identity associations, their roles and role policies."""
    accounts = {
        (obj["metadata"].get("namespace", release.namespace), obj["metadata"]["name"])
        for obj in release.objects
        if obj.get("kind") == "ServiceAccount"
    }
    found: set[str] = set()
    for logical_id, body in (
        synthesized.get("resource", {}).get("aws_eks_pod_identity_association", {}).items()
    ):
        if (body.get("namespace"), body.get("service_account")) in accounts:
            found.add(f"aws_eks_pod_identity_association.{logical_id}")
            for role in graph.references(synthesized, body.get("role_arn")):
                found |= {role, *_role_policies(synthesized, role)}
    return found


def _karpenter_nodes(synthesized: dict[str, Any], _: Release) -> set[str]:
    """The node role (the role of an EC2_LINUX access entry), its attachments, the access entry, the
    interruption queue and its policy, the subnets and the discovery tag of the security group."""
    found: set[str] = set()
    for logical_id, body in synthesized.get("resource", {}).get("aws_eks_access_entry", {}).items():
        if body.get("type") == "EC2_LINUX":
            found.add(f"aws_eks_access_entry.{logical_id}")
            for role in graph.references(synthesized, body.get("principal_arn")):
                found |= {role, *_role_policies(synthesized, role)}
    found |= _addresses(synthesized, "aws_sqs_queue", lambda _: True)
    found |= _addresses(synthesized, "aws_sqs_queue_policy", lambda _: True)
    found |= _addresses(
        synthesized, "aws_subnet", lambda b: "karpenter.sh/discovery" in (b.get("tags") or {})
    )
    found |= _addresses(synthesized, "aws_ec2_tag", lambda b: b.get("key") == "karpenter.sh/discovery")
    return found


def _load_balancer_network(synthesized: dict[str, Any], _: Release) -> set[str]:
    """The subnets it places load balancers in (tagged kubernetes.io/role/elb) and the VPC."""
    found = _addresses(
        synthesized,
        "aws_subnet",
        lambda b: any(tag.startswith("kubernetes.io/role/") for tag in b.get("tags") or {}),
    )
    return found | _addresses(synthesized, "aws_vpc", lambda _: True)


# controller -> what else its release must outlive, beyond the cluster it runs on
NEEDS: dict[str, list[Callable[[dict[str, Any], Release], set[str]]]] = {
    "aws-load-balancer-controller": [_pod_identity, _load_balancer_network],
    "karpenter": [_pod_identity, _karpenter_nodes],
    "cloudnative-pg": [],
    "cert-manager": [],
    "gpu-operator": [],
    "cloud-firewall-controller": [],
    "external-dns": [_pod_identity],
}


def controllers(rendered: RenderedStack) -> Iterator[tuple[str, Release]]:
    for release in rendered.releases:
        images = {
            container.get("image", "")
            for obj in release.objects
            if obj.get("kind") == "Deployment"
            for container in obj["spec"]["template"]["spec"].get("containers") or []
        }
        for controller, image in CONTROLLERS.items():
            if any(image in found for found in images):
                yield controller, release


def findings(rendered: RenderedStack) -> list[Finding]:
    synthesized = rendered.synthesized
    found = []
    installed = dict(controllers(rendered))
    for controller, release in installed.items():
        needs = cluster_resources(synthesized) | node_network(synthesized)
        for rule in NEEDS[controller]:
            needs |= rule(synthesized, release)
        before = graph.dependencies(synthesized, release.address)
        for address in sorted(needs - before):
            found.append(
                Finding(rendered.stack, release.address, address, f"{controller} needs it to uninstall")
            )
    for release, obj in rendered.objects():
        group = obj.get("apiVersion", "v1").rpartition("/")[0]
        controller = FINALIZED.get((group, obj.get("kind", "")))
        if controller is None or controller not in installed:
            continue
        owner = installed[controller]
        if owner.address == release.address and (group, obj.get("kind", "")) in FINALIZER_READ:
            # helm uninstall deletes the object and the controller's Deployment and RBAC in one pass
            # (unknown kinds last, helm v3 pkg/release/util/kind_sorter.go): no controller is left
            # to remove the finalizer, and the uninstall waits out its timeout.
            why = f"{controller} finalizes {obj['kind']} in its own release"
        elif owner.address == release.address or graph.depends_on(
            synthesized, release.address, owner.address
        ):
            continue
        else:
            why = f"{controller} finalizes {obj['kind']}"
        finding = Finding(rendered.stack, release.address, owner.address, why)
        if finding not in found:
            found.append(finding)
    return found


# --- cluster access ---------------------------------------------------------------------------------
# The helm provider's `aws eks get-token` runs with the credentials Terraform runs with. A
# cluster-admin access entry the stack manages is deleted in a destroy's first wave unless the
# releases depend on it; then every later uninstall fails (401 without the entry, 403 without its
# policy association). The creator's access is EKS's own (bootstrap_cluster_creator_admin_permissions,
# an entry made at cluster creation and outside the state). A role the stack creates whose only IAM
# permission is eks:DescribeCluster cannot run a plan at all (refreshing any other resource is an
# implicit deny), so its entry need not outlive the releases.
_DESCRIBE_ONLY = {"eks:DescribeCluster"}


def _grants_only_describe(synthesized: dict[str, Any], role: str) -> bool:
    resources = synthesized.get("resource", {})
    body = resources.get("aws_iam_role", {}).get(role.split(".", 1)[1], {})
    if body.get("managed_policy_arns") or body.get("inline_policy"):
        return False
    actions: set[str] = set()
    for policy in _role_policies(synthesized, role):
        kind, logical_id = policy.split(".", 1)
        if kind != "aws_iam_role_policy":
            return False  # an attached policy: its actions are not in the stack
        document = json.loads(resources[kind][logical_id]["policy"])
        for statement in document.get("Statement", []):
            if statement.get("Effect") == "Allow":
                listed = statement.get("Action", [])
                actions |= {listed} if isinstance(listed, str) else set(listed)
    return actions <= _DESCRIBE_ONLY


def access_findings(synthesized: dict[str, Any]) -> list[str]:
    """Releases that do not depend on a cluster-admin access entry (and its policy association)
    whose principal could run the destroy."""
    resources = synthesized.get("resource", {})
    associations = resources.get("aws_eks_access_policy_association", {})
    releases = sorted(f"helm_release.{n}" for n in resources.get("helm_release", {}))
    found = []
    for logical_id, entry in sorted(resources.get("aws_eks_access_entry", {}).items()):
        address = f"aws_eks_access_entry.{logical_id}"
        grants = {
            f"aws_eks_access_policy_association.{n}"
            for n, body in associations.items()
            if _refers(synthesized, body.get("principal_arn"), address)
            or body.get("principal_arn") == entry.get("principal_arn")
        }
        admin = any(
            associations[g.split(".", 1)[1]].get("policy_arn", "").endswith("/AmazonEKSClusterAdminPolicy")
            for g in grants
        )
        if entry.get("type", "STANDARD") != "STANDARD" or not admin:
            continue  # a node role's entry (Karpenter's, in its own rule) or no admin policy
        roles = {
            r
            for r in graph.references(synthesized, entry.get("principal_arn"))
            if r.startswith("aws_iam_role.")
        }
        if roles and all(_grants_only_describe(synthesized, role) for role in roles):
            continue
        for release in releases:
            for missing in sorted(({address} | grants) - graph.dependencies(synthesized, release)):
                found.append(f"{release}: {missing} may be deleted first")
    return found


# --- volumes ----------------------------------------------------------------------------------------
# Platforms whose cluster deletion leaves the cluster's volumes in the account, billed: the default
# StorageClass and each class's reclaimPolicy.
# LKE: Linode API v4 DELETE /lke/clusters/{id}: "Does not delete any of the volumes created by this
# Kubernetes cluster"; the CSI driver's classes (linode-blockstorage-csi-driver deploy manifest):
# linode-block-storage-retain (the default, reclaimPolicy Retain) and linode-block-storage (Delete).
CLOUD_VOLUMES = {
    "linode_lke_cluster": (
        "linode-block-storage-retain",
        {"linode-block-storage-retain": "Retain", "linode-block-storage": "Delete"},
    ),
}


def _claims(obj: dict[str, Any]) -> list[tuple[str, str | None, bool]]:
    """(what, storageClassName, deleted with its owner) for each claim ``obj`` makes. A claim a
    StatefulSet makes from its templates outlives the StatefulSet unless its
    persistentVolumeClaimRetentionPolicy says Delete; the Prometheus Operator passes the CR's policy
    to the StatefulSet it creates."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    name = f"{kind} {obj.get('metadata', {}).get('name')}"
    deleted = (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get("whenDeleted") == "Delete"
    if kind == "PersistentVolumeClaim":
        return [(name, spec.get("storageClassName"), True)]
    if kind == "StatefulSet":
        return [
            (name, t.get("spec", {}).get("storageClassName"), deleted)
            for t in spec.get("volumeClaimTemplates") or []
        ]
    if kind in ("Prometheus", "Alertmanager") and obj.get("apiVersion", "").startswith(
        "monitoring.coreos.com/"
    ):
        template = (spec.get("storage") or {}).get("volumeClaimTemplate")
        return [(name, template.get("spec", {}).get("storageClassName"), deleted)] if template else []
    return []


def volume_findings(rendered: RenderedStack) -> list[str]:
    """Claims whose cloud volume would outlive the stack's destroy."""
    resources = rendered.synthesized.get("resource", {})
    platform = next((p for p in CLOUD_VOLUMES if p in resources), None)
    if platform is None:
        return []
    default, reclaim = CLOUD_VOLUMES[platform]
    found = []
    for release, obj in rendered.objects():
        for what, storage_class, deleted in _claims(obj):
            name = storage_class or default
            policy = reclaim.get(name)
            if policy != "Delete":
                found.append(f"{release.address}: {what}: StorageClass {name} reclaims with {policy}")
            if not deleted:
                found.append(f"{release.address}: {what}: its claims outlive helm uninstall")
    return sorted(found)
