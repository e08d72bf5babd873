"""Whether every pod a stack runs in a namespace with a LimitRange is admitted, and with the GPUs it
asks for: the LimitRanger admission plugin as kube-apiserver runs it, over each rendered pod
template, the containers the stack's mutating webhooks add, and the pods its operators create.

kubernetes/kubernetes, for the model:
- pkg/apis/core/v1/defaults.go ``SetDefaults_LimitRangeItem`` (type Container): "If a default limit
  is unspecified, but the max is specified, default the limit to the max"; "If a default limit is
  specified, but the default request is not, default request to limit"; "If a default request is
  not specified, but the min is provided, default request to the min". The stored LimitRange is the
  defaulted one.
- plugin/pkg/admission/limitranger/admission.go: ``PodMutateLimitFunc`` sets, for every container
  and init container, each default limit and default request the container does not set;
  ``PodValidateLimitFunc`` then checks every container and init container against ``min``/``max``
  (``maxConstraint``: "maximum %s usage per %s is %s.  No limit is specified." when a limited
  resource has no limit).
- k8s.io/apiserver pkg/admission/reinvocation.go: when a mutating webhook changed the object, the
  chain runs again and "will reinvoke all in-tree plugins" (the webhook's own reinvocationPolicy only
  decides whether the webhook is called again), so LimitRanger defaults the containers a webhook
  added before validation sees them.
- pod resources for scheduling and quota: ``max(sum(containers), max(init containers))`` per
  resource (resourcehelper.PodRequests); an extended resource's request equals its limit.

Webhooks modelled: the Vault Agent Injector (hashicorp/vault-helm 0.34.1 injector, vault-k8s
agent-inject: ``vault-agent-init`` unless ``agent-pre-populate: "false"``, the ``vault-agent``
sidecar unless ``agent-pre-populate-only: "true"``, resources from the injector's
``AGENT_INJECT_{CPU,MEM}_{REQUEST,LIMIT}`` env or the pod's ``agent-{requests,limits}-{cpu,mem}``
annotations). Operators modelled: CloudNativePG's instance pods (``postgres`` and the
``bootstrap-controller`` init container, both with the Cluster's ``spec.resources``; pkg/specs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.support.render import Release, RenderedStack

GPU = "nvidia.com/gpu"
_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}


def quantity(value: Any) -> Decimal:
    """A resource.Quantity as a number (the suffixes the stacks use)."""
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"quantity {value!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


@dataclass(frozen=True)
class Finding:
    stack: str
    release: str
    pod: str  # Kind/namespace/name of what makes the pod
    problem: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.stack, self.release, self.pod)


def defaulted(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """SetDefaults_LimitRangeItem of a Container item: its default, defaultRequest, min and max."""
    default = dict(item.get("default") or {})
    request = dict(item.get("defaultRequest") or {})
    for key, value in (item.get("max") or {}).items():
        default.setdefault(key, value)
    for key, value in default.items():
        request.setdefault(key, value)
    for key, value in (item.get("min") or {}).items():
        request.setdefault(key, value)
    return {
        "default": default,
        "defaultRequest": request,
        "min": item.get("min") or {},
        "max": item.get("max") or {},
    }


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def api_defaults(pod: dict[str, Any]) -> None:
    """The core defaulting at create: a limit without a request sets the request to the limit."""
    for container in _containers(pod):
        resources = container.setdefault("resources", {})
        for key, value in (resources.get("limits") or {}).items():
            resources.setdefault("requests", {}).setdefault(key, value)


def mutate(pod: dict[str, Any], items: list[dict[str, dict[str, Any]]]) -> None:
    """PodMutateLimitFunc: each default the container does not set."""
    for item in items:
        for container in _containers(pod):
            resources = container.setdefault("resources", {})
            for key, value in item["default"].items():
                resources.setdefault("limits", {}).setdefault(key, value)
            for key, value in item["defaultRequest"].items():
                resources.setdefault("requests", {}).setdefault(key, value)


def validate(pod: dict[str, Any], items: list[dict[str, dict[str, Any]]]) -> list[str]:
    """PodValidateLimitFunc: min and max of every container and init container."""
    errors = []
    for item in items:
        for container in _containers(pod):
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for key, value in item["max"].items():
                if key not in limits:
                    errors.append(
                        f"{container['name']}: maximum {key} usage per Container is {value}.  No limit is specified."
                    )
                elif quantity(limits[key]) > quantity(value):
                    errors.append(f"{container['name']}: maximum {key} usage per Container is {value}")
            for key, value in item["min"].items():
                if key not in requests or quantity(requests[key]) < quantity(value):
                    errors.append(f"{container['name']}: minimum {key} usage per Container is {value}")
    return errors


def pod_gpus(pod: dict[str, Any]) -> Decimal:
    """The pod's GPU request for scheduling and quota: max(sum of containers, largest init)."""

    def gpus(container: dict[str, Any]) -> Decimal:
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU, (resources.get("requests") or {}).get(GPU, 0))
        return quantity(value)

    running = sum((gpus(c) for c in pod.get("containers") or []), Decimal(0))
    init = max((gpus(c) for c in pod.get("initContainers") or []), default=Decimal(0))
    return max(running, init)


def _pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        return obj
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return spec.get("template")
    return None


def vault_agent_resources(rendered: RenderedStack) -> dict[str, dict[str, str]] | None:
    """The injector's agent resources from its Deployment's env; None without an injector."""
    for _, obj in rendered.objects():
        if obj.get("kind") != "Deployment":
            continue
        for container in ((obj["spec"]["template"]["spec"]) or {}).get("containers") or []:
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            if "AGENT_INJECT_CPU_LIMIT" in env:
                return {
                    "requests": {
                        "cpu": env["AGENT_INJECT_CPU_REQUEST"],
                        "memory": env["AGENT_INJECT_MEM_REQUEST"],
                    },
                    "limits": {"cpu": env["AGENT_INJECT_CPU_LIMIT"], "memory": env["AGENT_INJECT_MEM_LIMIT"]},
                }
    return None


def inject_vault_agent(
    pod: dict[str, Any], annotations: dict[str, str], agent: dict[str, dict[str, str]]
) -> bool:
    """What the Vault Agent Injector's mutating webhook adds; whether it changed the pod."""
    if annotations.get("vault.hashicorp.com/agent-inject") != "true":
        return False
    resources: dict[str, dict[str, str]] = {
        "requests": dict(agent["requests"]),
        "limits": dict(agent["limits"]),
    }
    for kind in ("requests", "limits"):
        for short, key in (("cpu", "cpu"), ("mem", "memory")):
            if (value := annotations.get(f"vault.hashicorp.com/agent-{kind}-{short}")) is not None:
                resources[kind][key] = value
    if annotations.get("vault.hashicorp.com/agent-pre-populate", "true") != "false":
        pod.setdefault("initContainers", []).append(
            {"name": "vault-agent-init", "resources": _copy(resources)}
        )
    if annotations.get("vault.hashicorp.com/agent-pre-populate-only") != "true":
        pod.setdefault("containers", []).append({"name": "vault-agent", "resources": _copy(resources)})
    return True


def _copy(resources: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {kind: dict(values) for kind, values in resources.items()}


def _pods(rendered: RenderedStack) -> Iterator[tuple[Release, str, str, dict[str, Any], dict[str, str]]]:
    """(release, what makes the pod, namespace, pod spec, pod annotations) of every pod the stack runs."""
    import copy

    for release, obj in rendered.objects():
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace", release.namespace)
        name = f"{obj['kind']}/{namespace}/{meta.get('name')}"
        template = _pod_template(obj)
        if template is not None:
            spec = copy.deepcopy(template.get("spec") or {})
            annotations = dict((template.get("metadata") or {}).get("annotations") or {})
            yield release, name, namespace, spec, annotations
        elif obj.get("kind") == "Cluster" and obj.get("apiVersion", "").startswith("postgresql.cnpg.io/"):
            resources = copy.deepcopy((obj.get("spec") or {}).get("resources") or {})
            spec = {
                "initContainers": [{"name": "bootstrap-controller", "resources": copy.deepcopy(resources)}],
                "containers": [{"name": "postgres", "resources": resources}],
            }
            yield release, name, namespace, spec, {}


def findings(rendered: RenderedStack) -> list[Finding]:
    limits: dict[str, list[dict[str, dict[str, Any]]]] = {}
    quotas: dict[str, Decimal] = {}
    for release, obj in rendered.objects():
        namespace = (obj.get("metadata") or {}).get("namespace", release.namespace)
        if obj.get("kind") == "LimitRange":
            for item in (obj.get("spec") or {}).get("limits") or []:
                if item.get("type") == "Container":
                    limits.setdefault(namespace, []).append(defaulted(item))
        if obj.get("kind") == "ResourceQuota":
            hard = (obj.get("spec") or {}).get("hard") or {}
            for key in (f"requests.{GPU}", GPU):
                if key in hard:
                    quotas[namespace] = min(quotas.get(namespace, quantity(hard[key])), quantity(hard[key]))
    agent = vault_agent_resources(rendered)
    found = []
    for release, name, namespace, pod, pod_annotations in _pods(rendered):
        items = limits.get(namespace)
        if not items and namespace not in quotas:
            continue
        asked = pod_gpus(pod)
        api_defaults(pod)
        mutate(pod, items or [])
        if agent is not None and inject_vault_agent(pod, pod_annotations, agent):
            api_defaults(pod)
            mutate(pod, items or [])  # the in-tree plugins run again after a webhook's change
        problems = validate(pod, items or [])
        gets = pod_gpus(pod)
        if gets > asked:
            problems.append(f"asks for {asked} GPU(s) and is given {gets} by the LimitRange's defaults")
        if namespace in quotas and gets > quotas[namespace]:
            problems.append(f"needs {gets} GPU(s), more than the namespace's quota of {quotas[namespace]}")
        if problems:
            found.append(Finding(rendered.stack, release.address, name, "; ".join(problems)))
    return found
