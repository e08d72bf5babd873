"""Gate: everything installed into a cluster or host install is replaced with it (model and upstream
references in tests/support/lifecycle/replacement.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from typing import Any

import pytest

from tests.support.lifecycle import replacement

_K3S = "terraform_data.compute_server-k3s_CF7027BF"
_CP1 = "proxmox_virtual_environment_vm.vms_cp1_64F8B207"
_EKS = "aws_eks_cluster.eks_cluster_55B0C966"
_K3D = "terraform_data.k3d_cluster_287F46EA"
_LKE = "linode_lke_cluster.lke_cluster_E4172A41"

# (stack, installed resource, cluster replaced without it) -> issue that fixes it
KNOWN: dict[tuple[str, str, str], int] = {}


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


def test_every_release_carries_its_cluster_identity(stack):
    """Not vacuous: each stack has a release, and each of them (through helm.release) is replaced
    when what stands for its cluster is, by the attribute that a replacement makes unknown."""
    name, synthesized = stack
    (cluster,) = replacement.clusters(synthesized)
    releases = synthesized["resource"]["helm_release"]
    assert releases, name
    for logical_id, body in releases.items():
        assert body["lifecycle"]["replace_triggered_by"] == [f"{cluster}.id"], (name, logical_id)
    # and after the cluster's readiness resources: the same ones for every release, none a release
    shared = set.intersection(*(set(body["depends_on"]) for body in releases.values()))
    assert shared and not any(address.startswith("helm_release.") for address in shared), name


def test_only_the_shared_path_builds_releases_and_sets_replace_triggered_by():
    """Every helm_release comes from helm.release (which takes the GpuCluster), and only the cluster
    contract writes replace_triggered_by: no call site can leave it out or wire it by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("gpu_constructs/**/*.py"), *root.glob("environments/*.py"), root / "main.py"]
    building = {p.relative_to(root).as_posix() for p in sources if _imports_release(p.read_text())}
    triggering = {p.relative_to(root).as_posix() for p in sources if "replace_triggered_by" in p.read_text()}
    assert building == {"gpu_constructs/helm.py"}
    # and proxmox's VM firewalls, replaced with their VM (no release)
    assert triggering == {"gpu_constructs/cluster.py", "gpu_constructs/compute/proxmox/__init__.py"}
    (firewall_triggers,) = [p for p in sources if p.parent.name == "proxmox" and p.name == "__init__.py"]
    assert "helm" not in firewall_triggers.read_text().split("def _firewall", 1)[1].split("\n    def ", 1)[0]
    # and no call site hands a cluster's readiness resources on by hand
    assert not [p for p in sources if re.search(r"\.ready\b", p.read_text()) and p.name != "cluster.py"]


def _imports_release(source: str) -> bool:
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "cdktf_cdktf_provider_helm.release"
        and any(alias.name == "Release" for alias in node.names)
        for node in ast.walk(ast.parse(source))
    )


@pytest.mark.parametrize("name", _stacks())
def test_a_release_that_stops_replacing_with_its_cluster_breaks_the_gate(name):
    """Each stack as synthesized, with the replace_triggered_by of one release removed."""
    synthesized = copy.deepcopy(_CACHE.get(name) or _synthesized(name))
    (cluster,) = replacement.clusters(synthesized)
    logical_id = sorted(synthesized["resource"]["helm_release"])[0]
    del synthesized["resource"]["helm_release"][logical_id]["lifecycle"]
    found = {finding.key for finding in replacement.findings(name, synthesized)}
    assert found == {(name, f"helm_release.{logical_id}", cluster)}


def test_an_in_cluster_step_that_stops_rerunning_with_its_cluster_breaks_the_gate():
    """proxmox-ha's fleet-crd-established (a terraform_data run against the cluster)."""
    synthesized = _synthesized("proxmox-ha")
    del synthesized["resource"]["terraform_data"]["fleet-crd-established"]["lifecycle"]
    found = {finding.address for finding in replacement.findings("proxmox-ha", synthesized)}
    assert found == {"terraform_data.fleet-crd-established"}


def test_a_trigger_through_a_replaced_kubeconfig_counts():
    """single-node's kubeconfig step is replaced with the k3s step, which is replaced with the
    datastore (their triggers_replace name the ids): releases replaced with the kubeconfig pass."""
    synthesized = _synthesized("single-node")
    for release in synthesized["resource"]["helm_release"].values():
        release["lifecycle"] = {"replace_triggered_by": ["terraform_data.compute_kubeconfig_D773601D.id"]}
    steps = synthesized["resource"]["terraform_data"]
    del steps["networking_cloudflare-secret_93FB5B4A"]["lifecycle"]
    del steps["vault_bootstrap_58883E97"]["lifecycle"]
    remaining = {finding.address for finding in replacement.findings("single-node", synthesized)}
    assert remaining == {
        "terraform_data.networking_cloudflare-secret_93FB5B4A",
        "terraform_data.vault_bootstrap_58883E97",
    }


def test_single_node_a_k3s_reinstall_replaces_no_release():
    """A new k3s version or setting re-runs the k3s step, which keeps the datastore: nothing in the
    cluster is replaced with it (the PostgreSQL cluster's volumes stay). A new datastore replaces
    the k3s step and every release."""
    synthesized = _synthesized("single-node")
    (datastore,) = replacement.clusters(synthesized)
    assert datastore.startswith("terraform_data.compute_cluster_")
    assert set(synthesized["resource"]["terraform_data"][datastore.split(".")[1]]["triggers_replace"]) == {
        "server"
    }
    releases = {f"helm_release.{name}" for name in synthesized["resource"]["helm_release"]}
    assert not replacement.replaced_with(synthesized, _K3S) & releases
    assert replacement.replaced_with(synthesized, datastore) >= releases | {_K3S}


def test_a_new_release_in_a_cluster_breaks_the_gate():
    """lke with a second release installed into the cluster and not replaced with it."""
    synthesized = _synthesized("lke")
    releases = synthesized["resource"]["helm_release"]
    releases["extra"] = copy.deepcopy(releases["gpu-operator_0115E288"])
    del releases["extra"]["lifecycle"]
    new, _ = unexpected("lke", synthesized)
    assert new == {("lke", "helm_release.extra", _LKE)}
