"""Gate: on destroy, every controller is uninstalled before what it needs to clean up, and what it
finalizes is uninstalled before it (model and upstream references in tests/support/lifecycle/destroy.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.support.lifecycle import destroy, graph

_ALB = "helm_release.alb-controller_release_0735D108"
_KARPENTER = "helm_release.eks_karpenter_7C03CC45"
_EXTERNAL_DNS = "helm_release.external-dns_release_90291C33"
_SYSTEM_NODES = "aws_eks_node_group.eks_system-nodes_D2929AE6"

# (stack, release, resource it must outlive) -> issue that fixes it
KNOWN: dict[tuple[str, str, str], int] = {}


def unexpected(
    rendered: Any, known: dict[tuple[str, str, str], int] = KNOWN
) -> tuple[dict[tuple[str, str, str], str], list[tuple[str, str, str]]]:
    found = {finding.key: finding.why for finding in destroy.findings(rendered)}
    new = {key: why for key, why in found.items() if key not in known}
    gone = [key for key in known if key[0] == rendered.stack and key not in found]
    return new, gone


def test_controllers_outlive_what_they_finalize_and_need_what_they_clean_up(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == {}, f"{rendered_stack.stack}: destroyed before a controller that needs it is uninstalled"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


def _rendered(stack: str) -> Any:
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return copy.deepcopy(render.rendered(instance))


def test_the_gate_sees_the_controllers(helm, upstream):
    """Not vacuous: every controller in CONTROLLERS is found in some stack, from its image."""
    found = {
        controller
        for stack in ("single-node", "eks-karpenter", "lke")
        for controller, _ in destroy.controllers(_rendered(stack))
    }
    assert found == set(destroy.CONTROLLERS)


def test_a_database_cluster_beside_its_operator_breaks_the_gate(helm, upstream):
    """single-node's CNPG Cluster without its dependency on the operator: its finalizer never runs."""
    rendered = _rendered("single-node")
    release = rendered.synthesized["resource"]["helm_release"]["postgres_cluster_ACE3EF20"]
    release["depends_on"] = [
        d for d in release["depends_on"] if d != "helm_release.postgres_operator_ADDDFA8E"
    ]
    new, _ = unexpected(rendered)
    assert new == {
        (
            "single-node",
            "helm_release.postgres_cluster_ACE3EF20",
            "helm_release.postgres_operator_ADDDFA8E",
        ): "cloudnative-pg finalizes Cluster"
    }


def test_a_controller_that_may_outlive_its_cluster_breaks_the_gate(helm, upstream):
    """lke's GPU Operator with neither its dependency on the GPU pool nor a provider naming the cluster."""
    rendered = _rendered("lke")
    rendered.synthesized["provider"]["helm"] = [{"kubernetes": {"config_path": "/tmp/kubeconfig"}}]
    del rendered.synthesized["resource"]["helm_release"]["gpu-operator_0115E288"]["depends_on"]
    new, _ = unexpected(rendered)
    assert set(new) == {
        ("lke", "helm_release.gpu-operator_0115E288", "linode_lke_cluster.lke_cluster_E4172A41"),
        ("lke", "helm_release.gpu-operator_0115E288", "linode_lke_node_pool.lke_gpu-pool_C50C7EDA"),
    }


def test_subnets_the_alb_sits_in_must_outlive_its_controller(helm, upstream):
    """eks-karpenter's load balancer controller without its dependency on the public subnets; a
    table entry for the finding silences it, and must go once the dependency is back."""
    rendered = _rendered("eks-karpenter")
    release = rendered.synthesized["resource"]["helm_release"][_ALB.split(".", 1)[1]]
    original = list(release["depends_on"])
    release["depends_on"] = [d for d in original if not d.startswith("aws_subnet.")]
    new, _ = unexpected(rendered)
    subnets = {key[2] for key in new}
    assert {key[1] for key in new} == {_ALB}
    # The NAT gateway's subnet is still held through the nodes, which depend on their route out.
    public = {f"aws_subnet.{n}" for n in rendered.synthesized["resource"]["aws_subnet"] if "public" in n}
    through_nodes = graph.dependencies(rendered.synthesized, _SYSTEM_NODES)
    assert subnets == public - through_nodes
    assert len(subnets) == 2
    known = dict.fromkeys(new, 21)
    assert unexpected(rendered, known) == ({}, [])
    release["depends_on"] = original
    assert sorted(unexpected(rendered, known)[1]) == sorted(known)


def test_a_route_out_that_may_go_first_breaks_the_gate(helm, upstream):
    """eks-karpenter's system nodes without their dependency on the private subnets' route out:
    Terraform could then delete the route table associations, route tables and NAT gateway in the
    destroy's first wave, and every controller on the nodes (Karpenter, the load balancer
    controller, ExternalDNS) would lose EC2, ELB and Route 53 while it cleans up."""
    rendered = _rendered("eks-karpenter")
    synthesized = rendered.synthesized
    network = destroy.node_network(synthesized)
    kinds = {address.split(".")[0] for address in network}
    assert kinds == {
        "aws_route_table_association",
        "aws_route_table",
        "aws_nat_gateway",
        "aws_internet_gateway",
    }
    # The three private subnets' associations and the NAT gateway's public one.
    assert sum(a.startswith("aws_route_table_association.") for a in network) == 4
    assert unexpected(rendered) == ({}, [])
    nodes = synthesized["resource"]["aws_eks_node_group"][_SYSTEM_NODES.split(".", 1)[1]]
    nodes["depends_on"] = [d for d in nodes["depends_on"] if d.startswith("aws_iam_")]
    new, _ = unexpected(rendered)
    assert {key[1] for key in new} == {_ALB, _KARPENTER, _EXTERNAL_DNS}
    for release in (_ALB, _KARPENTER, _EXTERNAL_DNS):
        assert {key[2] for key in new if key[1] == release} == network


def test_a_cloud_firewall_beside_its_controller_breaks_the_gate(helm, upstream):
    """lke: the CloudFirewall rendered by the controller's own chart (its `firewall` value), or in a
    release that does not depend on the controller: either way its finalizer outlives the controller."""
    rendered = _rendered("lke")
    by_name = {r.name: r for r in rendered.releases}
    controller, ruleset = by_name["cloud-firewall"], by_name["cloud-firewall-ruleset"]
    assert [o["kind"] for o in ruleset.objects] == ["CloudFirewall"]
    assert unexpected(rendered) == ({}, [])
    controller.objects.append(ruleset.objects.pop())
    new, _ = unexpected(rendered)
    assert new == {
        (
            "lke",
            controller.address,
            controller.address,
        ): "cloud-firewall-controller finalizes CloudFirewall in its own release"
    }
    rendered = _rendered("lke")
    name = ruleset.address.split(".", 1)[1]
    rendered.synthesized["resource"]["helm_release"][name]["depends_on"] = []
    new, _ = unexpected(rendered)
    assert new == {
        ("lke", ruleset.address, controller.address): "cloud-firewall-controller finalizes CloudFirewall"
    }


def test_cloud_volumes_are_deleted_before_the_cluster(rendered_stack):
    """On a platform whose cluster deletion leaves volumes billed (LKE), every claim is deleted with
    its release and its class deletes the volume."""
    assert destroy.volume_findings(rendered_stack) == []


def test_a_retained_monitoring_volume_breaks_the_volume_gate(helm, upstream):
    rendered = _rendered("lke")
    assert destroy.volume_findings(rendered) == []
    for _, obj in rendered.objects():
        if obj.get("kind") == "Prometheus":
            del obj["spec"]["persistentVolumeClaimRetentionPolicy"]
        if obj.get("kind") == "Alertmanager":
            del obj["spec"]["storage"]["volumeClaimTemplate"]["spec"]["storageClassName"]
    found = destroy.volume_findings(rendered)
    assert [f.split(": ", 1)[1] for f in found] == [
        "Alertmanager kube-prometheus-stack-alertmanager: StorageClass linode-block-storage-retain reclaims with Retain",
        "Prometheus kube-prometheus-stack-prometheus: its claims outlive helm uninstall",
    ]


def test_cluster_admins_who_can_run_the_destroy_keep_access_until_the_last_release(rendered_stack):
    """A cluster-admin access entry the stack manages, for a principal that could run Terraform,
    outlives every release (model in tests/support/lifecycle/destroy.py, access_findings)."""
    assert destroy.access_findings(rendered_stack.synthesized) == []


def test_the_admin_roles_access_outlives_the_releases(synth):
    """EksProps.admin_role_arn: the role may be what Terraform runs as, so every release depends
    on its access entry and policy association; without that the access gate finds each release."""
    from tests.support.eks import eks_stack

    synthesized = eks_stack(synth, admin_role_arn="arn:aws:iam::123456789012:role/platform")
    assert destroy.access_findings(synthesized) == []
    access = {
        f"{kind}.{n}"
        for kind in ("aws_eks_access_entry", "aws_eks_access_policy_association")
        for n in synthesized["resource"][kind]
        if "admin-access" in n
    }
    assert len(access) == 2
    releases = synthesized["resource"]["helm_release"]
    for release in releases.values():
        release["depends_on"] = [d for d in release["depends_on"] if d not in access]
    found = destroy.access_findings(synthesized)
    assert len(found) == 2 * len(releases) and all("admin-access" in f for f in found)


def test_a_deployer_role_that_could_run_terraform_breaks_the_access_gate(helm, upstream):
    """eks-karpenter's deployer role may only describe the cluster, so it cannot run a plan and its
    access need not outlive the releases; granted anything more, it could run the destroy, and
    every release would have to depend on its access entry and policy association."""
    rendered = _rendered("eks-karpenter")
    synthesized = rendered.synthesized
    assert destroy.access_findings(synthesized) == []
    (policy,) = [b for n, b in synthesized["resource"]["aws_iam_role_policy"].items() if "deployer" in n]
    document = json.loads(policy["policy"])
    document["Statement"][0]["Action"] = ["eks:DescribeCluster", "ec2:DescribeVpcs"]
    policy["policy"] = json.dumps(document)
    found = destroy.access_findings(synthesized)
    assert len(found) == 2 * len(synthesized["resource"]["helm_release"])
    assert all("deployer_" in f.split(": ", 1)[1] for f in found)
