"""Gate: on destroy, every controller is uninstalled before what it needs to clean up, and what it
finalizes is uninstalled before it (model and upstream references in tests/lifecycle/destroy.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.lifecycle import destroy

_ALB = "helm_release.alb-controller_release_0735D108"
_KARPENTER = "helm_release.eks_karpenter_7C03CC45"

# (stack, release, resource it must outlive) -> issue that fixes it
KNOWN = {
    # eks-karpenter: the Karpenter node role's attachments and access entry, the interruption queue
    # policy, the discovery tag and the load balancer subnets are not outlived by the controller
    # releases (the node pools release depends on the node role's attachments and access entry)
    ("eks-karpenter", _ALB, "aws_subnet.eks_public-eu-west-1a_52919524"): 21,
    ("eks-karpenter", _ALB, "aws_subnet.eks_public-eu-west-1b_19B2274E"): 21,
    ("eks-karpenter", _ALB, "aws_subnet.eks_public-eu-west-1c_1444DA1E"): 21,
    ("eks-karpenter", _KARPENTER, "aws_ec2_tag.eks_cluster-security-group-discovery_55846FB5"): 21,
    ("eks-karpenter", _KARPENTER, "aws_eks_access_entry.eks_karpenter-node-access_16D924AA"): 21,
    **{
        (
            "eks-karpenter",
            _KARPENTER,
            f"aws_iam_role_policy_attachment.eks_karpenter-node-role-{policy}",
        ): 21
        for policy in (
            "AmazonEC2ContainerRegistryReadOnly_290B0C70",
            "AmazonEKSWorkerNodePolicy_DED32352",
            "AmazonEKS_CNI_Policy_1B695280",
            "AmazonSSMManagedInstanceCore_8BDB8668",
        )
    },
    ("eks-karpenter", _KARPENTER, "aws_sqs_queue_policy.eks_interruption-queue-policy_79B25D3D"): 21,
}


def unexpected(rendered: Any) -> tuple[dict[tuple[str, str, str], str], list[tuple[str, str, str]]]:
    found = {finding.key: finding.why for finding in destroy.findings(rendered)}
    new = {key: why for key, why in found.items() if key not in KNOWN}
    gone = [key for key in KNOWN if key[0] == rendered.stack and key not in found]
    return new, gone


def test_controllers_outlive_what_they_finalize_and_need_what_they_clean_up(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == {}, f"{rendered_stack.stack}: destroyed before a controller that needs it is uninstalled"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


def _rendered(stack: str) -> Any:
    import main
    from tests import render

    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return copy.deepcopy(render.rendered(instance))


def test_the_gate_sees_the_controllers(helm, upstream):
    """Not vacuous: every controller in CONTROLLERS is found in some stack, from its image."""
    found = {
        controller
        for stack in ("single-node", "eks-karpenter")
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


def test_a_fixed_known_finding_must_leave_the_table(helm, upstream):
    rendered = _rendered("eks-karpenter")
    for address in (_ALB, _KARPENTER):
        release = rendered.synthesized["resource"]["helm_release"][address.split(".", 1)[1]]
        release.setdefault("depends_on", []).extend(key[2] for key in KNOWN if key[1] == address)
    new, gone = unexpected(rendered)
    assert new == {}
    assert sorted(gone) == sorted(KNOWN)
