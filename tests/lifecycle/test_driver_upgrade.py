"""Gate: where the GPU Operator manages the driver, a driver upgrade can finish on every node.

The operator replaces the driver one node at a time: it cordons the node, evicts the pods that use a
GPU with kubectl's drain helper, replaces the driver pod and uncordons the node (gpu-operator v26.7.0
vendor/github.com/NVIDIA/k8s-operator-libs/pkg/upgrade/pod_manager.go SchedulePodEviction). The drain
helper refuses a pod no controller owns unless ``force``, and one with an emptyDir unless
``deleteEmptyDir`` (k8s.io/kubectl pkg/drain/filters.go); then the node stays cordoned in
upgrade-failed with the old driver until a person deletes the pods
(pkg/upgrade/common_manager.go ProcessUpgradeFailedNodes). The library runs GPU pods of both
kinds: JupyterHub's servers (KubeSpawner creates bare pods; proxmox-ha, whose operator installs the
driver) and the app chart's (an emptyDir /tmp). So the rendered ClusterPolicy must let the eviction
delete them, within a bound.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support import render


def policies(stack: render.RenderedStack) -> list[dict[str, Any]]:
    return [
        obj["spec"]
        for release, obj in stack.objects()
        if release.chart == "gpu-operator" and obj["kind"] == "ClusterPolicy"
    ]


def problems(stack: render.RenderedStack) -> list[str]:
    found = []
    for spec in policies(stack):
        if not spec["driver"].get("enabled"):
            continue  # the host or the image owns the driver: the operator never reloads it
        policy = spec["driver"].get("upgradePolicy") or {}
        if not policy.get("autoUpgrade"):
            continue
        deletion = policy.get("podDeletion") or {}
        if not deletion.get("force"):
            found.append(f"{stack.stack}: podDeletion.force is off: a bare GPU pod fails the node's upgrade")
        if not deletion.get("deleteEmptyDir"):
            found.append(
                f"{stack.stack}: podDeletion.deleteEmptyDir is off: a GPU pod with an emptyDir fails it"
            )
        if not 0 < int(deletion.get("timeoutSeconds") or 0) <= 900:
            found.append(
                f"{stack.stack}: podDeletion.timeoutSeconds {deletion.get('timeoutSeconds')}: no bound"
            )
    return found


def test_a_driver_upgrade_can_evict_every_gpu_pod(rendered_stack):
    assert problems(rendered_stack) == []


def test_the_gate_sees_an_operator_managed_driver(helm, upstream):
    """Not vacuous: proxmox-ha's operator installs the driver, with auto-upgrade on (the chart's default)."""
    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    stack = render.rendered(instance)
    (spec,) = policies(stack)
    assert spec["driver"]["enabled"] is True
    assert spec["driver"]["upgradePolicy"]["autoUpgrade"] is True
    assert spec["driver"]["upgradePolicy"]["maxParallelUpgrades"] == 1


@pytest.mark.parametrize("field", ["force", "deleteEmptyDir", "timeoutSeconds"])
def test_a_policy_that_cannot_evict_fails_the_gate(helm, upstream, field):
    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    stack = copy.deepcopy(render.rendered(instance))
    (spec,) = policies(stack)
    spec["driver"]["upgradePolicy"]["podDeletion"][field] = 0 if field == "timeoutSeconds" else False
    assert len(problems(stack)) == 1, problems(stack)
