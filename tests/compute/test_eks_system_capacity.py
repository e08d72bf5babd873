"""Everything that can run on the tainted system nodes fits them: the requests of every pod that
tolerates the system taint and may land there (add-ons, controllers, Karpenter, KEDA, monitoring),
packed onto the system group's nodes against each node's allocatable.

The scheduler places a pod only on a node whose allocatable minus what its pods request covers the
pod's requests: a system group too small for what tolerates its taint leaves Karpenter or the
load balancer controller Pending on the first apply, with nothing to launch nodes for them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from gpu_constructs.compute.eks import cluster as eks_cluster
from gpu_constructs.compute.eks.cluster import SYSTEM_INSTANCE_TYPE, PodRequests, unplaced
from tests.support import render
from tests.support.placement import from_compute, why_not

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


def millicores(value: Any) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def mebibytes(value: Any) -> int:
    text = str(value)
    units = {
        "Ki": 1 / 1024,
        "Mi": 1,
        "Gi": 1024,
        "K": 1000 / 1048576,
        "M": 1000000 / 1048576,
        "G": 1e9 / 1048576,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match, text
    number, unit = float(match.group(1)), match.group(2)
    return int(number * units[unit]) if unit else int(number / 1048576)


def requests(containers: list[dict[str, Any]]) -> tuple[int, int]:
    cpu = memory = 0
    for container in containers:
        wanted = (container.get("resources") or {}).get("requests") or {}
        cpu += millicores(wanted.get("cpu", "0"))
        memory += mebibytes(wanted.get("memory", "0"))
    return cpu, memory


def pod_requests(spec: dict[str, Any]) -> tuple[int, int]:
    """A pod's effective requests: its containers' sum, or its largest init container's."""
    cpu, memory = requests(spec.get("containers") or [])
    for init in spec.get("initContainers") or []:
        init_cpu, init_memory = requests([init])
        cpu, memory = max(cpu, init_cpu), max(memory, init_memory)
    return cpu, memory


def system_pods(stack: render.RenderedStack, group: Any) -> list[PodRequests]:
    """Every rendered pod that may land on ``group``, and the EKS add-ons' pods on it."""
    placed = from_compute(group)
    found = []
    for release, obj in stack.objects():
        kind, spec = obj.get("kind"), obj.get("spec") or {}
        where = f"{release.address}: {kind} {obj.get('metadata', {}).get('name')}"
        if kind in WORKLOADS:
            template = spec["template"]["spec"]
            replicas = spec.get("replicas", 1)
        elif obj.get("apiVersion") == "monitoring.coreos.com/v1" and kind in ("Prometheus", "Alertmanager"):
            # The operator's StatefulSet: the custom resource's scheduling and resources.
            template = {
                **{k: spec[k] for k in ("nodeSelector", "tolerations", "affinity") if k in spec},
                "containers": [{"resources": spec.get("resources") or {}}],
            }
            replicas = spec.get("replicas", 1)
        else:
            continue
        if why_not(template, placed) is not None:
            continue
        cpu, memory = pod_requests(template)
        found.append(PodRequests(where, kind == "DaemonSet", replicas, cpu, memory))
    return [*found, *eks_cluster.SYSTEM_ADDON_PODS]


def fit_problems(stack: render.RenderedStack) -> list[str]:
    """Each tainted system group's pods packed onto the fewest nodes it runs
    (eks_cluster.unplaced, first-fit decreasing after the DaemonSets): a pod that fits no node."""
    problems = []
    for group in stack.node_groups:
        if not (group.system and group.taints and group.instance_types):
            continue
        # The smallest shape the group may run (one type here).
        (instance_type,) = group.instance_types
        pods = system_pods(stack, group)
        problems += [f"{group.name}: {p}" for p in unplaced(pods, group.min_nodes, instance_type)]
    return problems


@pytest.fixture
def eks(helm, upstream):
    """Rendered once per session (render.rendered caches it)."""
    from tests.support.stacks import INSTANCES

    return render.rendered(INSTANCES["eks-karpenter"])


def test_everything_tolerating_the_system_taint_fits_the_system_nodes(eks):
    pods = {p.where for p in system_pods(eks, next(g for g in eks.node_groups if g.system))}
    # The gate sees what it is for: Karpenter, the load balancer controller, KEDA, the monitoring.
    for expected in ("Deployment karpenter", "aws-load-balancer-controller", "keda", "Prometheus"):
        assert any(expected in where for where in pods), (expected, sorted(pods))
    assert next(g for g in eks.node_groups if g.system).instance_types == (SYSTEM_INSTANCE_TYPE,)
    assert fit_problems(eks) == []


def test_the_seeds_system_nodes_fail_the_gate(eks):
    """The seed's two t3.small (1.5 GiB allocatable each): Prometheus's 2Gi request fits neither,
    and Karpenter's two 1Gi replicas leave no room for the rest."""
    small = dataclasses.replace(
        eks,
        node_groups=tuple(
            dataclasses.replace(g, instance_types=("t3.small",)) if g.system else g for g in eks.node_groups
        ),
    )
    problems = fit_problems(small)
    assert any("Prometheus kube-prometheus-stack-prometheus" in p for p in problems), problems
    assert all("2 x t3.small" in p for p in problems)


def test_a_pod_left_on_the_system_nodes_counts(eks):
    """A workload that tolerates the taint and is not kept elsewhere is counted: one asking for more
    than a node has fails the gate."""
    rendered = dataclasses.replace(eks, releases=list(eks.releases))
    release = dataclasses.replace(rendered.releases[0])
    big = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "oversized"},
        "spec": {
            "replicas": 1,
            "template": {
                "spec": {
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "containers": [{"name": "x", "resources": {"requests": {"cpu": "64", "memory": "1Gi"}}}],
                }
            },
        },
    }
    release.objects = [*release.objects, big]
    rendered.releases[0] = release
    assert any("oversized" in p for p in fit_problems(rendered))
