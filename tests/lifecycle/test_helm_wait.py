"""Gate: every release Helm waits for can become ready from what the stack runs, and its readiness
means something (model and upstream references in tests/support/lifecycle/helm_wait.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.lifecycle import helm_wait

# (stack, helm_release address, object) -> issue that fixes it
KNOWN: dict[tuple[str, str, str], int] = {}


def unexpected(
    rendered: Any, known: dict[tuple[str, str, str], int] = KNOWN
) -> tuple[dict[tuple[str, str, str], str], list[tuple[str, str, str]]]:
    found = {finding.key: finding.problem for finding in helm_wait.findings(rendered)}
    new = {key: problem for key, problem in found.items() if key not in known}
    gone = [key for key in known if key[0] == rendered.stack and key not in found]
    return new, gone


def test_every_waited_release_can_become_ready(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == {}, f"{rendered_stack.stack}: Helm's wait would time out or prove nothing"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


def _object(rendered: Any, release_id: str, kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        o for o in rendered.release(release_id).objects if o["kind"] == kind and o["metadata"]["name"] == name
    ]
    return found


@pytest.fixture
def proxmox(helm, upstream):
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    return copy.deepcopy(render.rendered(instance))


def test_a_rollout_that_may_drop_to_zero_ready_pods_breaks_the_gate(proxmox):
    rancher = _object(proxmox, "rancher", "Deployment", "rancher")
    rancher["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = "100%"
    new, _ = unexpected(proxmox)
    assert new == {
        ("proxmox-ha", "helm_release.rancher", "Deployment/cattle-system/rancher"): (
            "3 replica(s) with maxUnavailable 3: Helm waits for 0 ready pods, so a failed rollout is reported ready"
        )
    }


def test_an_unmounted_wait_for_first_consumer_claim_breaks_the_gate(proxmox):
    """JupyterHub's hub database claim on the WaitForFirstConsumer class, its mount gone."""
    claim = _object(proxmox, "jupyterhub_A58A1B4E", "PersistentVolumeClaim", "hub-db-dir")
    claim["spec"]["storageClassName"] = "fast-scratch"
    hub = _object(proxmox, "jupyterhub_A58A1B4E", "Deployment", "hub")
    volumes = hub["spec"]["template"]["spec"]["volumes"]
    hub["spec"]["template"]["spec"]["volumes"] = [v for v in volumes if "persistentVolumeClaim" not in v]
    new, _ = unexpected(proxmox)
    assert list(new) == [
        ("proxmox-ha", "helm_release.jupyterhub_A58A1B4E", "PersistentVolumeClaim/jupyterhub/hub-db-dir")
    ]
    assert "StorageClass fast-scratch binds WaitForFirstConsumer" in next(iter(new.values()))


def test_atomic_implies_wait(proxmox):
    """wait = false does not stop the wait while atomic is set; both false, nothing is waited for."""
    release = proxmox.release("rancher")
    _object(proxmox, "rancher", "Deployment", "rancher")["spec"]["replicas"] = 1
    release.raw["wait"], release.raw["atomic"] = False, True
    assert [f.obj for f in helm_wait.findings(proxmox)] == ["Deployment/cattle-system/rancher"]
    release.raw["atomic"] = False
    assert helm_wait.findings(proxmox) == []


def test_a_fixed_known_finding_must_leave_the_table(helm, upstream):
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    rendered = copy.deepcopy(render.rendered(instance))
    deployment = _object(rendered, "workload_release_6A99B1F2", "Deployment", "tinyllama-inference")
    key = (
        "eks-karpenter",
        "helm_release.workload_release_6A99B1F2",
        "Deployment/inference/tinyllama-inference",
    )
    deployment["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    assert unexpected(rendered, {key: 21}) == ({}, [])
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    assert unexpected(rendered, {key: 21}) == ({}, [key])


@pytest.mark.parametrize(
    ("strategy", "replicas", "needed"),
    [
        (None, 1, 1),  # API defaults 25%/25%: surge rounds up to 1, unavailable down to 0
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}, 1, 0),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}, 1, 0),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 1, 1),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}, 4, 2),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 5}}, 3, 0),  # capped at replicas
        ({"type": "Recreate"}, 2, 2),
    ],
)
def test_deployment_readiness_is_helms(strategy, replicas, needed):
    spec: dict[str, Any] = {"replicas": replicas}
    if strategy is not None:
        spec["strategy"] = strategy
    assert helm_wait.deployment_ready_pods_needed({"kind": "Deployment", "spec": spec}) == needed


def test_a_timeout_shorter_than_the_startup_budget_breaks_the_gate(helm, upstream):
    """single-node's app at Helm's 600 s: its startup probe alone allows 600 s."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    rendered = copy.deepcopy(render.rendered(instance))
    release = rendered.release("app_release_E0EC404F")
    release.raw["timeout"] = 600
    new, _ = unexpected(rendered)
    assert list(new) == [("single-node", "helm_release.app_release_E0EC404F", "Deployment/ffe/ffe-backend")]
    assert "startup probe's 600s" in next(iter(new.values()))
    del release.raw["timeout"]  # the provider's 300 s
    assert "timeout 300s" in next(iter(unexpected(rendered)[0].values()))


def test_an_on_delete_statefulset_breaks_the_gate(helm, upstream):
    """Vault at its chart's default updateStrategy: an upgrade installs and never runs."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    rendered = copy.deepcopy(render.rendered(instance))
    _object(rendered, "vault_BBE00A92", "StatefulSet", "vault")["spec"]["updateStrategy"] = {
        "type": "OnDelete"
    }
    new, _ = unexpected(rendered)
    assert list(new) == [("single-node", "helm_release.vault_BBE00A92", "StatefulSet/vault/vault")]
    assert "never reaches the running pods" in next(iter(new.values()))
