"""eks-karpenter at rest: no GPU node runs while the inference endpoint is idle.

Over the objects Helm renders for the stack: every workload asking for ``nvidia.com/gpu`` that can
land on a node pool declared ``scale_to_zero`` has a scaler that takes it to zero (KEDA's
HTTPScaledObject or ScaledObject, minimum 0), no HorizontalPodAutoscaler holding it at one or more,
and no ``spec.replicas`` of its own (Helm would set it again on every upgrade). KEDA and its HTTP
add-on run on the system nodes, and the Ingress reaches the workload through the interceptor.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import cdktf
import pytest

from environments import Instance
from gpu_constructs.errors import ConfigError
from tests.conftest import by_kind, manifests_of, resources
from tests.support import render
from tests.support.placement import GPU, _requests_gpu, node_groups, pod_templates, why_not

SCALED_KINDS = ("Deployment", "StatefulSet")


def _instance() -> Instance:
    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    return instance


def _rendered() -> render.RenderedStack:
    return copy.deepcopy(render.rendered(_instance()))


def scale_to_zero_pools(stack: render.RenderedStack) -> set[str]:
    """The NodePools the stack's GpuCompute declares scale-to-zero."""
    return {g.members["karpenter.sh/nodepool"] for g in stack.node_groups if g.scales_to_zero}


def _target(obj: dict[str, Any]) -> tuple[str, str] | None:
    """(namespace, Deployment name) a scaler object points at."""
    ref = (obj.get("spec") or {}).get("scaleTargetRef")
    if not isinstance(ref, dict) or ref.get("kind", "Deployment") not in SCALED_KINDS:
        return None
    return obj["metadata"].get("namespace", ""), ref.get("name", "")


def gpu_demand_at_rest(stack: render.RenderedStack, pools: set[str]) -> tuple[list[str], int]:
    """Problems that keep a GPU replica (and its node) on a scale-to-zero pool while idle, and how
    many GPU workloads on such pools were checked."""
    groups = [g for g in node_groups(stack) if (g.labels.get("karpenter.sh/nodepool") or set()) & pools]
    assert groups, f"no rendered NodePool named {sorted(pools)}"
    objects = [obj for _, obj in stack.objects()]
    to_zero: set[tuple[str, str]] = set()
    held: dict[tuple[str, str], str] = {}
    for obj in objects:
        target = _target(obj)
        if target is None:
            continue
        kind, spec = obj["kind"], obj["spec"]
        minimum = {
            "HTTPScaledObject": (spec.get("replicas") or {}).get("min", 0),
            "ScaledObject": spec.get("minReplicaCount", 0),
        }
        if minimum.get(kind) == 0:
            to_zero.add(target)
        elif kind in ("HTTPScaledObject", "ScaledObject"):
            held[target] = f"{kind} {obj['metadata']['name']} keeps a minimum above 0"
        elif kind == "HorizontalPodAutoscaler" and spec.get("minReplicas", 1) >= 1:
            held[target] = f"HorizontalPodAutoscaler {obj['metadata']['name']} minReplicas >= 1"
    problems: list[str] = []
    checked = 0
    templates = {t.where: t for t in pod_templates(stack)}
    for release, obj in stack.objects():
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        template = templates.get(f"{release.address}: {kind} {name}")
        if template is None or not _requests_gpu(template.spec):
            continue
        landing = [g.name for g in groups if why_not(template.spec, g) is None]
        if not landing:
            continue
        checked += 1
        where = f"{release.address}: {kind} {name} (pool {', '.join(landing)})"
        if kind not in SCALED_KINDS:
            problems.append(f"{where}: a {kind} asking for {GPU} always runs")
            continue
        key = (obj["metadata"].get("namespace", release.namespace), name)
        if obj["spec"].get("replicas") is not None:
            problems.append(f"{where}: spec.replicas {obj['spec']['replicas']} set by the chart")
        if key in held:
            problems.append(f"{where}: {held[key]}")
        if key not in to_zero:
            problems.append(f"{where}: no scaler takes it to zero")
    return problems, checked


def test_gpu_demand_at_rest_is_zero_on_scale_to_zero_pools(helm, upstream):
    stack = _rendered()
    assert scale_to_zero_pools(stack) == {"gpu-inference"}
    problems, checked = gpu_demand_at_rest(stack, scale_to_zero_pools(stack))
    assert problems == []
    assert checked >= 1, "no GPU workload found on a scale-to-zero pool"


def _inference(stack: render.RenderedStack, kind: str) -> dict[str, Any]:
    release = next(r for r in stack.releases if r.name == "tinyllama-inference")
    (obj,) = [o for o in release.objects if o["kind"] == kind]
    return obj


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda s: _inference(s, "Deployment")["spec"].update(replicas=1),
            "spec.replicas 1 set by the chart",
        ),
        (
            lambda s: _inference(s, "HTTPScaledObject")["spec"]["replicas"].update(min=1),
            "no scaler takes it to zero",
        ),
        (
            lambda s: s.releases[0].objects.append(
                {
                    "apiVersion": "autoscaling/v2",
                    "kind": "HorizontalPodAutoscaler",
                    "metadata": {"name": "extra", "namespace": "inference"},
                    "spec": {
                        "scaleTargetRef": {"kind": "Deployment", "name": "tinyllama-inference"},
                        "maxReplicas": 2,
                    },
                }
            ),
            "HorizontalPodAutoscaler extra minReplicas >= 1",
        ),
        (
            lambda s: [
                r.objects.remove(o)
                for r in s.releases
                for o in list(r.objects)
                if o["kind"] == "HTTPScaledObject"
            ],
            "no scaler takes it to zero",
        ),
    ],
    ids=["replicas", "min-1", "hpa", "no-scaler"],
)
def test_a_gpu_replica_held_at_rest_fails(helm, upstream, change, expected):
    stack = _rendered()
    change(stack)
    problems, _ = gpu_demand_at_rest(stack, scale_to_zero_pools(stack))
    assert any(expected in p for p in problems), problems


def test_a_pool_not_declared_scale_to_zero_is_not_held_to_it(helm, upstream):
    stack = _rendered()
    _inference(stack, "Deployment")["spec"]["replicas"] = 1
    problems, checked = gpu_demand_at_rest(stack, {"general"})
    assert (problems, checked) == ([], 0)


def test_keda_and_the_http_add_on_run_on_the_system_nodes(helm, upstream):
    stack = _rendered()
    groups = {g.name: g for g in node_groups(stack)}
    (system,) = [g for g in groups.values() if g.labels.get("role") == {"system"}]
    gpu = [g for g in groups.values() if g.gpu]
    checked = 0
    for template in pod_templates(stack):
        if "keda" not in template.where and "http-add-on" not in template.where:
            continue
        checked += 1
        assert why_not(template.spec, system) is None, template.where
        assert all(why_not(template.spec, g) is not None for g in gpu), template.where
    assert checked >= 6  # operator, metrics API server, webhooks; add-on operator, scaler, interceptor


def test_the_ingress_sends_requests_through_the_interceptor_which_routes_the_host(helm, upstream):
    stack = _rendered()
    keda_objects = [o for r in stack.releases if r.chart == "keda-add-ons-http" for o in r.objects]
    (proxy,) = [o for o in keda_objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("proxy")]
    (interceptor,) = [
        o for o in keda_objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("interceptor")
    ]
    ingress = _inference(stack, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress["metadata"]["namespace"] == proxy["metadata"]["namespace"] == "keda"
    assert backend == {
        "name": proxy["metadata"]["name"],
        "port": {"number": proxy["spec"]["ports"][0]["port"]},
    }
    # The ALB checks the interceptor's readiness on its admin port.
    ports = {
        p["name"]: p["containerPort"]
        for p in interceptor["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    annotations = ingress["metadata"]["annotations"]
    assert annotations["alb.ingress.kubernetes.io/healthcheck-port"] == str(ports["admin"])
    assert annotations["alb.ingress.kubernetes.io/healthcheck-path"] == "/readyz"
    # The interceptor routes the Ingress's host to the application's Service.
    scaled = _inference(stack, "HTTPScaledObject")
    service = _inference(stack, "Service")
    assert scaled["spec"]["hosts"] == [ingress["spec"]["rules"][0]["host"]]
    assert scaled["spec"]["scaleTargetRef"]["service"] == service["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"]["port"] == service["spec"]["ports"][0]["port"]
    # The ALB keeps a connection open longer than the interceptor holds a request at zero.
    idle = int(annotations["alb.ingress.kubernetes.io/load-balancer-attributes"].split("=")[1])
    assert idle > int(scaled["spec"]["timeouts"]["conditionWait"].rstrip("s"))


def test_the_first_pod_after_install_is_waited_for_before_keda_may_scale_to_zero(helm, upstream):
    stack = _rendered()
    release = next(r for r in stack.releases if r.name == "tinyllama-inference")
    scaled = _inference(stack, "HTTPScaledObject")
    assert scaled["spec"]["initialCooldownPeriod"] >= release.raw["timeout"]


def test_the_workload_waits_for_the_add_on_and_the_add_on_for_keda():
    stack = json.loads(cdktf.Testing.synth(_instance().build(cdktf.Testing.app())))
    by_name = {r["name"]: (k, r) for k, r in resources(stack, "helm_release").items()}
    keda_id, _ = by_name["keda"]
    add_on_id, add_on = by_name["http-add-on"]
    _, workload = by_name["tinyllama-inference"]
    assert f"helm_release.{keda_id}" in add_on["depends_on"]
    assert f"helm_release.{add_on_id}" in workload["depends_on"]
    assert by_kind(manifests_of(workload), "HorizontalPodAutoscaler") == []


def test_without_scale_to_zero_the_hpa_stays_and_the_pool_may_not_be_declared():
    with pytest.raises(ConfigError, match=r"'scale_to_zero' is False: node pool gpu-inference"):
        Instance("x", "eks-karpenter", {"scale_to_zero": False}).settings()
