"""Gate: everything installed into a cluster or host install is replaced with it (model and upstream
references in tests/lifecycle/replacement.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.lifecycle import replacement

_K3S = "terraform_data.compute_server-k3s_CF7027BF"
_CP1 = "proxmox_virtual_environment_vm.vms_cp1_64F8B207"
_EKS = "aws_eks_cluster.eks_cluster_55B0C966"
_K3D = "terraform_data.k3d_cluster_287F46EA"
_LKE = "linode_lke_cluster.lke_cluster_E4172A41"

# (stack, installed resource, cluster replaced without it) -> issue that fixes it
KNOWN = {
    **{
        ("single-node", address, _K3S): 20
        for address in (
            "helm_release.app_release_E0EC404F",
            "helm_release.gpu-operator_0115E288",
            "helm_release.monitoring_gpu-monitoring_42B7CC66",
            "helm_release.monitoring_kube-prometheus-stack_A33E1781",
            "helm_release.networking_cert-manager_7666BAB7",
            "helm_release.networking_cluster-issuers_002F712E",
            "helm_release.networking_traefik_68953DDE",
            "helm_release.postgres_backup_22970E12",
            "helm_release.postgres_cluster_ACE3EF20",
            "helm_release.postgres_operator_ADDDFA8E",
            "helm_release.storage_local-path-provisioner_C0EC6F97",
            "helm_release.storage_storage-classes_2C96E226",
            "helm_release.vault_BBE00A92",
            "helm_release.vault_operations_4A5EB94F",
            "terraform_data.networking_cloudflare-secret_93FB5B4A",
            "terraform_data.vault_bootstrap_58883E97",
        )
    },
    **{
        ("proxmox-ha", address, _CP1): 22
        for address in (
            "helm_release.fleet-gitrepo",
            "helm_release.gpu-operator_0115E288",
            "helm_release.jupyterhub_A58A1B4E",
            "helm_release.networking_cert-manager_7666BAB7",
            "helm_release.networking_cluster-issuers_002F712E",
            "helm_release.networking_traefik_68953DDE",
            "helm_release.nfs-provisioner",
            "helm_release.rancher",
            "helm_release.storage_local-path-provisioner_C0EC6F97",
            "helm_release.storage_storage-classes_2C96E226",
            "terraform_data.fleet-crd-established",
            "terraform_data.networking_cloudflare-secret_93FB5B4A",
        )
    },
    **{
        ("eks-karpenter", address, _EKS): 21
        for address in (
            "helm_release.alb-controller_release_0735D108",
            "helm_release.eks_karpenter-crd_83895B08",
            "helm_release.eks_karpenter-node-pools_255D75B3",
            "helm_release.eks_karpenter_7C03CC45",
            "helm_release.nvidia-device-plugin_E84D3A1A",
            "helm_release.workload_release_6A99B1F2",
        )
    },
    ("lke", "helm_release.gpu-operator_0115E288", _LKE): 23,
}


def _synthesized(stack: str) -> dict[str, Any]:
    import cdktf

    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    result: dict[str, Any] = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    return result


def _stacks() -> list[str]:
    import main

    return sorted(instance.stack for instance in main.INSTANCES)


_CACHE: dict[str, dict[str, Any]] = {}


@pytest.fixture(params=_stacks())
def stack(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param not in _CACHE:
        _CACHE[request.param] = _synthesized(request.param)
    return request.param, copy.deepcopy(_CACHE[request.param])


def unexpected(stack: str, synthesized: dict[str, Any]) -> tuple[set[tuple[str, str, str]], list[Any]]:
    found = {finding.key for finding in replacement.findings(stack, synthesized)}
    new = {key for key in found if key not in KNOWN}
    gone = [key for key in KNOWN if key[0] == stack and key not in found]
    return new, gone


def test_what_is_installed_into_a_cluster_is_replaced_with_it(stack):
    name, synthesized = stack
    new, gone = unexpected(name, synthesized)
    assert new == set(), f"{name}: installed into a cluster that can be replaced without it"
    assert gone == [], f"{name}: fixed, remove from KNOWN in {__file__}"


def test_every_stack_has_a_cluster(stack):
    """Not vacuous: CLUSTERS names exactly one resource per stack."""
    name, synthesized = stack
    assert len(replacement.clusters(synthesized)) == 1, name


def test_replace_triggered_by_fixes_it_and_a_table_entry_must_go():
    synthesized = _synthesized("lke")
    synthesized["resource"]["helm_release"]["gpu-operator_0115E288"]["lifecycle"] = {
        "replace_triggered_by": [_LKE]
    }
    new, gone = unexpected("lke", synthesized)
    assert new == set()
    assert sorted(gone) == sorted(key for key in KNOWN if key[0] == "lke")


def test_k3d_releases_are_replaced_with_the_cluster():
    """k3d-poc as synthesized: every release carries replace_triggered_by on the cluster."""
    assert replacement.findings("k3d-poc", _synthesized("k3d-poc")) == []


def test_a_trigger_through_a_replaced_kubeconfig_counts():
    """single-node's kubeconfig step is replaced with k3s (its triggers_replace names the k3s id)."""
    synthesized = _synthesized("single-node")
    for release in synthesized["resource"]["helm_release"].values():
        release["lifecycle"] = {"replace_triggered_by": ["terraform_data.compute_kubeconfig_D773601D.id"]}
    remaining = {finding.address for finding in replacement.findings("single-node", synthesized)}
    assert remaining == {
        "terraform_data.networking_cloudflare-secret_93FB5B4A",
        "terraform_data.vault_bootstrap_58883E97",
    }


def test_a_release_that_stops_replacing_with_its_cluster_breaks_the_gate():
    """k3d-poc with its releases replaced with the cluster, then one of them losing it."""
    synthesized = _synthesized("k3d-poc")
    del synthesized["resource"]["helm_release"]["gpu-smoke-test"]["lifecycle"]
    found = {finding.key for finding in replacement.findings("k3d-poc", synthesized)}
    assert found == {("k3d-poc", "helm_release.gpu-smoke-test", _K3D)}


def test_a_new_release_in_a_cluster_breaks_the_gate():
    """lke with a second release installed into the cluster and not replaced with it."""
    synthesized = _synthesized("lke")
    releases = synthesized["resource"]["helm_release"]
    releases["extra"] = copy.deepcopy(releases["gpu-operator_0115E288"])
    new, _ = unexpected("lke", synthesized)
    assert new == {("lke", "helm_release.extra", _LKE)}
