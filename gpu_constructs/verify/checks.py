"""The checks: nodes and their groups, allocatable GPUs, a short GPU Job, and the platform the stack
installs. Each returns a :class:`Result`; only the GPU Job changes anything (it is created and
deleted in its own namespace)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from gpu_constructs import versions
from gpu_constructs.cluster import GPU_RESOURCE
from gpu_constructs.compute.base import NodeGroup
from gpu_constructs.verify.connect import REQUEST_TIMEOUT
from gpu_constructs.verify.expect import Expectation

PASS, FAIL, SKIP = "pass", "fail", "skip"
JOB_NAMESPACE = "gpu-verify"
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpu-verify"}
GPU_COUNT_LABELS = ("nvidia.com/gpu.count", "karpenter.k8s.aws/instance-gpu-count")
"""Node labels with the physical GPU count: GPU feature discovery's, then Karpenter's."""
T = REQUEST_TIMEOUT
# What the charts call their objects (tests render the charts with each stack's values to prove it).
DEVICE_PLUGIN_PODS = "app.kubernetes.io/name=nvidia-device-plugin"
KARPENTER_PODS = "app.kubernetes.io/name=karpenter"
VAULT_SERVER_PODS = "app.kubernetes.io/name=vault,component=server"
HUB_DEPLOYMENT = "hub"
DCGM_EXPORTER = "nvidia-dcgm-exporter:9400"
"""The GPU Operator's exporter Service and port; the operator creates it, not the chart
(NVIDIA/gpu-operator assets/state-dcgm-exporter/0600_service.yaml)."""
QUIET_ALERTS = ("Watchdog", "InfoInhibitor")
"""kube-prometheus-stack's alerts that fire all the time by design (its default rules): Watchdog
proves the alerting pipeline works, InfoInhibitor inhibits info-level alerts."""
DCGM_SCRAPE_POOL = "serviceMonitor/monitoring/dcgm-exporter/"
"""Prometheus' scrape pool of the monitoring construct's ServiceMonitor (the operator names it
serviceMonitor/<namespace>/<name>/<endpoint index>)."""
CNPG_HEALTHY = "Cluster in healthy state"
"""CloudNativePG's phase when every instance is ready (api/v1 PhaseHealthy)."""
BASE_BACKUP_MAX_AGE = 26 * 3600
"""Seconds a daily base backup may be old: a day plus two hours for the backup itself."""


@dataclass(frozen=True)
class Result:
    check: str
    result: str
    evidence: str


@dataclass(frozen=True)
class JobSettings:
    timeout: float = 300.0
    """Seconds the GPU Job may take, scheduling included (a GPU node from zero takes minutes)."""
    poll: float = 2.0
    image: str = versions.CUDA_SMOKE_TEST_IMAGE.version


def _ready(conditions: Sequence[Any] | None, kind: str = "Ready") -> tuple[bool, str]:
    """(True, "") when condition ``kind`` is True, else (False, its reason and message)."""
    for condition in conditions or ():
        get = condition.get if isinstance(condition, Mapping) else lambda k, c=condition: getattr(c, k, None)
        if get("type") == kind:
            if get("status") == "True":
                return True, ""
            return False, " ".join(str(x) for x in (get("reason"), get("message")) if x) or "not ready"
    return False, f"no {kind} condition yet"


def _labels_of(node: client.V1Node) -> dict[str, str]:
    return dict(node.metadata.labels or {})


def _taints_of(node: client.V1Node) -> set[str]:
    return {f"{t.key}={t.value or ''}:{t.effect}" for t in (node.spec.taints or ())}


# --- nodes --------------------------------------------------------------------------------------------
def nodes_ready(nodes: Sequence[client.V1Node]) -> Result:
    if not nodes:
        return Result("nodes ready", FAIL, "the cluster has no nodes")
    bad = []
    for node in nodes:
        ok, why = _ready(node.status.conditions)
        if not ok:
            bad.append(f"{node.metadata.name}: {why}")
    if bad:
        return Result("nodes ready", FAIL, "; ".join(bad))
    return Result("nodes ready", PASS, f"{len(nodes)}/{len(nodes)} Ready")


def group_members(group: NodeGroup, nodes: Sequence[client.V1Node]) -> list[client.V1Node]:
    return [n for n in nodes if group.matches(n.metadata.name, _labels_of(n))]


def node_group(group: NodeGroup, nodes: Sequence[client.V1Node]) -> Result:
    check = f"node group {group.name}"
    members = group_members(group, nodes)
    count = len(members)
    bounds = f"{group.min_nodes}" if group.max_nodes == group.min_nodes else f"{group.min_nodes}-"
    if group.max_nodes is not None and group.max_nodes != group.min_nodes:
        bounds += str(group.max_nodes)
    problems = []
    if group.names:
        missing = sorted(set(group.names) - {n.metadata.name for n in members})
        if missing:
            problems.append(f"missing {', '.join(missing)}")
    if count < group.min_nodes or (group.max_nodes is not None and count > group.max_nodes):
        problems.append(f"{count} nodes, expected {bounds}")
    for node in members:
        labels, taints = _labels_of(node), _taints_of(node)
        wrong = [f"{k}={v}" for k, v in sorted(group.labels.items()) if labels.get(k) != v]
        absent = [str(t) for t in group.taints if str(t) not in taints]
        if wrong:
            problems.append(f"{node.metadata.name} lacks label {', '.join(wrong)}")
        if absent:
            problems.append(f"{node.metadata.name} lacks taint {', '.join(absent)}")
    if problems:
        return Result(check, FAIL, "; ".join(problems))
    if count == 0:
        return Result(check, SKIP, "no nodes now (the pool scales from zero)")
    shown = ", ".join(n.metadata.name for n in members[:4]) + (" ..." if count > 4 else "")
    marks = [*(f"{k}={v}" for k, v in sorted(group.labels.items())), *(str(t) for t in group.taints)]
    return Result(check, PASS, f"{count} ({shown})" + (f" with {', '.join(marks)}" if marks else ""))


def gpu_nodes(expected: Expectation, nodes: Sequence[client.V1Node]) -> list[client.V1Node]:
    seen: dict[str, client.V1Node] = {}
    for group in expected.node_groups:
        if group.gpu:
            for node in group_members(group, nodes):
                seen[node.metadata.name] = node
    return list(seen.values())


def gpu_allocatable(expected: Expectation, nodes: Sequence[client.V1Node]) -> list[Result]:
    gpus = gpu_nodes(expected, nodes)
    if not any(group.gpu for group in expected.node_groups):
        return [Result("gpu allocatable", SKIP, "the stack runs without GPUs")]
    if not gpus:
        if expected.scales_from_zero:
            return [Result("gpu allocatable", SKIP, "no GPU node now: the GPU job starts one")]
        return [Result("gpu allocatable", FAIL, "no GPU node in the cluster")]
    replicas = expected.time_slicing_replicas
    results = []
    for node in gpus:
        check = f"gpu allocatable {node.metadata.name}"
        have = int((node.status.allocatable or {}).get(GPU_RESOURCE, "0"))
        want = expected.gpu_slots_per_node
        basis = "the stack's GPUs per node"
        if want is None:
            labels = _labels_of(node)
            label = next((k for k in GPU_COUNT_LABELS if labels.get(k, "").isdigit()), None)
            if label is not None:
                want = int(labels[label]) * replicas
                basis = f"{label}={labels[label]}"
        if want is None:
            result = PASS if have > 0 else FAIL
            results.append(Result(check, result, f"{GPU_RESOURCE}={have} (node type decides the count)"))
        elif have == want:
            slicing = f" x {replicas} time-slicing replicas" if replicas > 1 else ""
            results.append(Result(check, PASS, f"{GPU_RESOURCE}={have} ({basis}{slicing})"))
        else:
            fix = "the device plugin has not registered the GPUs" if have == 0 else "sharing config differs"
            results.append(Result(check, FAIL, f"{GPU_RESOURCE}={have}, expected {want} ({basis}): {fix}"))
    return results


# --- the GPU job ----------------------------------------------------------------------------------------
def gpu_job_manifest(expected: Expectation, name: str, settings: JobSettings) -> dict[str, Any]:
    """A Job that runs ``nvidia-smi -L`` on one GPU, placed by the cluster contract."""
    pod_spec: dict[str, Any] = {
        **expected.cluster.gpu_pod_spec(),
        "restartPolicy": "Never",
        "containers": [
            {
                "name": "nvidia-smi",
                "image": settings.image,
                "command": ["nvidia-smi", "-L"],
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"memory": "128Mi", GPU_RESOURCE: 1},
                },
                "securityContext": {"allowPrivilegeEscalation": False},
            }
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": JOB_NAMESPACE, "labels": dict(MANAGED_BY)},
        "spec": {
            "backoffLimit": 0,
            # Past verification's own deadline, so a Pending pod is reported with its reasons first.
            "activeDeadlineSeconds": int(settings.timeout) + 60,
            # Removed by the cluster even if verification is interrupted before it deletes it.
            "ttlSecondsAfterFinished": 600,
            "template": {"metadata": {"labels": dict(MANAGED_BY)}, "spec": pod_spec},
        },
    }


def _ensure_namespace(core: client.CoreV1Api) -> None:
    try:
        core.read_namespace(JOB_NAMESPACE, _request_timeout=T)
    except ApiException as error:
        if error.status != 404:
            raise
        body = {"metadata": {"name": JOB_NAMESPACE, "labels": dict(MANAGED_BY)}}
        core.create_namespace(body, _request_timeout=T)


def _events(core: client.CoreV1Api, name: str) -> list[str]:
    """``component: reason: message`` of the events about object ``name`` in the Job's namespace."""
    events = core.list_namespaced_event(
        JOB_NAMESPACE, field_selector=f"involvedObject.name={name}", _request_timeout=T
    )
    lines = []
    for event in sorted(events.items, key=lambda e: str(e.last_timestamp or e.event_time or "")):
        if event.reason in ("Scheduled", "Pulling", "Pulled", "Created", "Started", "SuccessfulCreate"):
            continue
        component = (event.source.component if event.source else None) or event.reporting_component or "?"
        lines.append(f"{component}: {event.reason}: {event.message}")
    return lines


def _pending_reasons(core: client.CoreV1Api, job_name: str, pod: client.V1Pod | None) -> str:
    """Why the Job's pod is not running: the scheduler's condition and every event about the pod: the
    scheduler's FailedScheduling, and Karpenter's (it reports on the pod too, FailedScheduling "Failed
    to schedule pod, ..." or Nominated; karpenter pkg/controllers/provisioning/scheduling/events.go).
    Without a pod, the Job's events say why it made none (a quota, or Pod Security admission)."""
    if pod is None:
        return "; ".join(["no pod created", *_events(core, job_name)])
    reasons: list[str] = []
    for condition in pod.status.conditions or ():
        if condition.type == "PodScheduled" and condition.status != "True" and condition.message:
            reasons.append(f"scheduler: {condition.message}")
    reasons += [line for line in _events(core, pod.metadata.name) if line not in reasons]
    for status in pod.status.container_statuses or ():
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason:
            reasons.append(f"container: {waiting.reason}: {waiting.message or ''}".rstrip(": "))
    return "; ".join(reasons) or "no reason reported"


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds())


def gpu_job(
    api: client.ApiClient,
    expected: Expectation,
    nodes_before: Sequence[client.V1Node],
    settings: JobSettings,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    name = f"gpu-verify-{uuid.uuid4().hex[:8]}"
    gpu_before = {n.metadata.name for n in gpu_nodes(expected, nodes_before)}
    _ensure_namespace(core)
    job = batch.create_namespaced_job(
        JOB_NAMESPACE, gpu_job_manifest(expected, name, settings), _request_timeout=T
    )
    try:
        deadline = time.monotonic() + settings.timeout
        pod = None
        while True:
            job = batch.read_namespaced_job(name, JOB_NAMESPACE, _request_timeout=T)
            pods = core.list_namespaced_pod(
                JOB_NAMESPACE, label_selector=f"job-name={name}", _request_timeout=T
            ).items
            pod = pods[0] if pods else None
            if job.status.succeeded or job.status.failed:
                break
            if time.monotonic() >= deadline:
                phase = pod.status.phase if pod is not None else "not created"
                return Result(
                    "gpu job",
                    FAIL,
                    f"{phase} after {settings.timeout:g} s: {_pending_reasons(core, name, pod)}",
                )
            sleep(settings.poll)
        log = _log(core, pod)
        gpu_lines = [line.strip() for line in log.splitlines() if re.match(r"\s*GPU \d+: ", line)]
        if job.status.failed and (pod is None or pod.status.phase == "Pending"):
            failure = next(
                (f"{c.reason}: {c.message}" for c in job.status.conditions or () if c.type == "Failed"),
                "failed",
            )
            return Result(
                "gpu job", FAIL, f"Job {failure}; the pod never ran: {_pending_reasons(core, name, pod)}"
            )
        if job.status.failed or not gpu_lines:
            tail = " | ".join(log.strip().splitlines()[-3:]) or "no log"
            return Result("gpu job", FAIL, f"nvidia-smi saw no GPU on {_node(pod)}: {tail}")
        evidence = f"{gpu_lines[0]} on {_node(pod)}"
        if expected.scales_from_zero and pod is not None and pod.spec.node_name not in gpu_before:
            scheduled = next(
                (c.last_transition_time for c in pod.status.conditions or () if c.type == "PodScheduled"),
                None,
            )
            took = _seconds(job.metadata.creation_timestamp, scheduled)
            if took is not None:
                evidence += f"; GPU node started from zero, pod scheduled {took} s after the Job was created"
        return Result("gpu job", PASS, evidence)
    finally:
        _delete_job(batch, name)


def _log(core: client.CoreV1Api, pod: client.V1Pod | None) -> str:
    """The pod's log, or "" where it has none (it never started, or is gone)."""
    if pod is None:
        return ""
    try:
        response = core.read_namespaced_pod_log(
            pod.metadata.name, JOB_NAMESPACE, _preload_content=False, _request_timeout=T
        )
    except ApiException:
        return ""
    return str(response.data.decode("utf-8", "replace"))


def _delete_job(batch: client.BatchV1Api, name: str) -> None:
    """Delete the Job and its pod; one already gone (its TTL, or someone else) is fine."""
    try:
        batch.delete_namespaced_job(name, JOB_NAMESPACE, propagation_policy="Background", _request_timeout=T)
    except ApiException as error:
        if error.status != 404:
            raise


def _node(pod: client.V1Pod | None) -> str:
    return (pod.spec.node_name if pod is not None else None) or "no node"


# --- the platform ---------------------------------------------------------------------------------------
def _pods_ready(pods: Sequence[client.V1Pod]) -> list[str]:
    bad = []
    for pod in pods:
        if pod.status.phase == "Succeeded":
            continue
        ok, why = _ready(pod.status.conditions)
        if pod.status.phase != "Running" or not ok:
            waiting = [
                s.state.waiting.reason
                for s in pod.status.container_statuses or ()
                if s.state and s.state.waiting and s.state.waiting.reason
            ]
            bad.append(f"{pod.metadata.name}: {', '.join(waiting) or pod.status.phase or why}")
    return bad


def namespace_pods(api: client.ApiClient, check: str, namespace: str, selector: str = "") -> Result:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=selector, _request_timeout=T)
        .items
    )
    if not pods:
        return Result(check, FAIL, f"no pods in {namespace}" + (f" with {selector}" if selector else ""))
    bad = _pods_ready(pods)
    if bad:
        return Result(check, FAIL, "; ".join(bad))
    done = sum(1 for p in pods if p.status.phase == "Succeeded")
    return Result(check, PASS, f"{len(pods) - done} running, {done} completed in {namespace}")


def device_plugin(api: client.ApiClient, namespace: str, gpus: Sequence[client.V1Node]) -> Result:
    check = "device plugin pods"
    if not gpus:
        return Result(check, SKIP, "no GPU node now: the DaemonSet runs only on GPU nodes")
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=DEVICE_PLUGIN_PODS, _request_timeout=T)
        .items
    )
    on = {p.spec.node_name for p in pods}
    missing = sorted(n.metadata.name for n in gpus if n.metadata.name not in on)
    bad = _pods_ready(pods)
    if missing or bad:
        return Result(check, FAIL, "; ".join([*(f"none on {m}" for m in missing), *bad]))
    return Result(check, PASS, f"{len(pods)} Ready, one on each of {len(gpus)} GPU node(s)")


def runtime_class_of(expected: Expectation) -> str | None:
    """The RuntimeClass GPU pods run with: the contract's (k3s: ``nvidia``), else the GPU Operator's
    for its operands (chart value ``operator.runtimeClass``, default ``nvidia``; the operator sets it
    on every operand pod on containerd, NVIDIA/gpu-operator controllers/object_controls.go
    setRuntimeClass, also when the node image brings the toolkit); None when nothing asks for one."""
    if expected.cluster.runtime_class:
        return expected.cluster.runtime_class
    operator = expected.release("gpu-operator")
    if operator is not None:
        return str((operator.values.get("operator") or {}).get("runtimeClass", "nvidia"))
    return None


def gpu_runtime(api: client.ApiClient, runtime_class: str, gpus: Sequence[client.V1Node]) -> Result:
    """Each GPU node's containerd has the runtime handler GPU pods ask for: a pod with that
    RuntimeClass runs there. The RuntimeClass object alone proves nothing (k3s registers ``nvidia``
    on every node, found runtime or not); a missing handler fails the pod's sandbox ("no runtime for
    ... is configured") and the pod never starts."""
    check = f"gpu runtime {runtime_class}"
    if not gpus:
        return Result(check, SKIP, "no GPU node now")
    core = client.CoreV1Api(api)
    pods = [
        p
        for p in core.list_pod_for_all_namespaces(_request_timeout=T).items
        if (p.spec.runtime_class_name or "") == runtime_class
    ]
    proven, problems = [], []
    for node in gpus:
        name = node.metadata.name
        here = [p for p in pods if p.spec.node_name == name]
        running = [p for p in here if p.status.phase in ("Running", "Succeeded")]
        if running:
            proven.append(f"{name}: {running[0].metadata.name}")
            continue
        reasons = []
        for pod in here:
            events = core.list_namespaced_event(
                pod.metadata.namespace,
                field_selector=f"involvedObject.name={pod.metadata.name}",
                _request_timeout=T,
            ).items
            reasons += [
                f"{pod.metadata.name}: {e.reason}: {e.message}" for e in events if e.type == "Warning"
            ]
        why = "; ".join(reasons) or f"no pod with runtimeClassName {runtime_class} runs there"
        problems.append(f"{name}: {why}")
    if problems:
        return Result(
            check, FAIL, "; ".join(problems) + f" (is the {runtime_class!r} runtime in containerd?)"
        )
    return Result(check, PASS, f"pods with RuntimeClass {runtime_class} run on " + ", ".join(proven))


def cloud_firewall(
    api: client.ApiClient, namespace: str, name: str, nodes: Sequence[client.V1Node]
) -> Result:
    """Every node is in the Linode firewall cloud-firewall-controller keeps: its Linode id (the
    node's ``linode://<id>`` providerID) is in the CloudFirewall's ``status.nodes``, which the
    controller writes after attaching them (cloud-firewall-controller v0.2.1 internal/controller).
    A node missing there runs without the firewall: the controller could not act (an expired or
    revoked token, Linode API errors; it only logs them)."""
    check = f"cloud firewall {namespace}/{name}"
    item = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "networking.linode.com", "alpha1v1", namespace, "cloudfirewalls", name, _request_timeout=T
    )
    status = item.get("status") or {}
    attached = {int(n) for n in status.get("nodes") or []}
    missing = []
    for node in nodes:
        provider_id = node.spec.provider_id or ""
        linode = provider_id.removeprefix("linode://")
        if not linode.isdigit() or int(linode) not in attached:
            missing.append(f"{node.metadata.name} ({provider_id or 'no providerID'})")
    if not status.get("firewall-id"):
        return Result(
            check, FAIL, "no firewall-id in its status: the controller has not created the firewall"
        )
    if missing:
        return Result(
            check,
            FAIL,
            f"not in firewall {status['firewall-id']}: {', '.join(missing)}; check the controller's log "
            "(kubectl -n kube-system logs deploy/cloud-firewall-controller) and its token",
        )
    return Result(check, PASS, f"{len(nodes)} node(s) in firewall {status['firewall-id']}")


def _proxy_get(api: client.ApiClient, kind: str, name: str, namespace: str, path: str) -> str:
    """GET through the API server's proxy; raw text (the client would mangle a JSON body)."""
    core = client.CoreV1Api(api)
    call = (
        core.connect_get_namespaced_service_proxy_with_path
        if kind == "service"
        else core.connect_get_namespaced_pod_proxy_with_path
    )
    response = call(name, namespace, path, _preload_content=False, _request_timeout=T)
    return str(response.data.decode("utf-8", "replace"))


def dcgm_metrics(api: client.ApiClient, namespace: str, gpus: Sequence[client.V1Node]) -> Result:
    check = "dcgm metrics"
    if not gpus:
        return Result(check, SKIP, "no GPU node now: the exporter runs only on GPU nodes")
    text = _proxy_get(api, "service", DCGM_EXPORTER, namespace, "metrics")
    samples = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_GPU_UTIL")]
    if not samples:
        return Result(check, FAIL, "nvidia-dcgm-exporter serves no DCGM_FI_DEV_GPU_UTIL sample")
    return Result(check, PASS, f"{len(samples)} GPU(s): {samples[0][:90]}")


def prometheus_service(release: Any) -> str:
    """The Prometheus Service of a kube-prometheus-stack release, as ``name:port``: the chart's
    ``<fullname>-prometheus`` on ``prometheus.service.port`` (templates/prometheus/service.yaml)."""
    values = release.values
    # The chart's kube-prometheus-stack.fullname (templates/_helpers.tpl) without an override.
    chart = values.get("nameOverride") or "kube-prometheus-stack"
    fullname = values.get("fullnameOverride") or (
        release.name if chart in release.name else f"{release.name}-{chart}"
    )
    port = ((values.get("prometheus") or {}).get("service") or {}).get("port", 9090)
    return f"{fullname}-prometheus:{port}"


def _prometheus_api(api: client.ApiClient, namespace: str, service: str, path: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer (docs/querying/api.md: ``status`` and ``data``)."""
    document = json.loads(_proxy_get(api, "service", service, namespace, path))
    if document.get("status") != "success":
        raise ValueError(f"Prometheus {path}: {document.get('errorType')}: {document.get('error')}")
    return document["data"]


def _runbooks() -> dict[str, str]:
    """The runbook line of each alert this library ships."""
    from gpu_constructs.monitoring import rule_groups

    return {
        rule["alert"]: rule["annotations"].get("runbook", "")
        for groups in rule_groups().values()
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    }


def _target_node(target: Mapping[str, Any]) -> str | None:
    """The node a target runs on: the ServiceMonitor's ``node`` label, else the pod's node as
    service discovery found it."""
    labels, discovered = target.get("labels") or {}, target.get("discoveredLabels") or {}
    return labels.get("node") or discovered.get("__meta_kubernetes_pod_node_name")


def dcgm_targets(
    api: client.ApiClient, namespace: str, service: str, gpus: Sequence[client.V1Node]
) -> Result:
    """Prometheus scrapes a DCGM exporter on every GPU node and the last scrape of each was up."""
    check = "prometheus dcgm targets"
    if not gpus:
        return Result(check, SKIP, "no GPU node now: the exporter runs only on GPU nodes")
    data = _prometheus_api(api, namespace, service, "api/v1/targets")
    targets = [
        t
        for t in data.get("activeTargets") or ()
        if str(t.get("scrapePool", "")).startswith(DCGM_SCRAPE_POOL)
    ]
    runbooks = _runbooks()
    problems, up = [], []
    for node in gpus:
        name = node.metadata.name
        mine = [t for t in targets if _target_node(t) == name]
        if not mine:
            problems.append(
                f"no DCGM exporter target on {name} (runbook: {runbooks['GpuNodeWithoutDcgmMetrics']})"
            )
        for target in mine:
            if target.get("health") == "up":
                up.append(f"{name} {target.get('scrapeUrl')}")
            else:
                problems.append(
                    f"{name}: {target.get('scrapeUrl')} {target.get('health')}: {target.get('lastError')} "
                    f"(runbook: {runbooks['DcgmExporterDown']})"
                )
    if problems:
        return Result(check, FAIL, "; ".join(problems))
    return Result(check, PASS, f"{len(gpus)} GPU node(s) scraped: {', '.join(up[:3])}")


def firing_alerts(api: client.ApiClient, namespace: str, service: str) -> Result:
    """No alert fires but kube-prometheus-stack's always-firing ones, and Watchdog does fire."""
    check = "prometheus alerts"
    alerts = _prometheus_api(api, namespace, service, "api/v1/alerts").get("alerts") or ()
    firing = [a for a in alerts if a.get("state") == "firing"]
    names = {(a.get("labels") or {}).get("alertname") for a in firing}
    runbooks = _runbooks()
    problems = []
    for alert in firing:
        labels, annotations = alert.get("labels") or {}, alert.get("annotations") or {}
        name = labels.get("alertname", "?")
        if name in QUIET_ALERTS:
            continue
        where = ",".join(
            f"{key}={labels[key]}" for key in ("node", "namespace", "pod", "instance") if key in labels
        )
        runbook = annotations.get("runbook") or runbooks.get(name) or annotations.get("runbook_url") or "none"
        summary = annotations.get("summary", "")
        problems.append(f"{name}{{{where}}}: {summary} (runbook: {runbook})")
    if problems:
        return Result(check, FAIL, "; ".join(problems))
    if "Watchdog" not in names:
        return Result(
            check, FAIL, "Watchdog is not firing: Prometheus evaluates no rules (check its logs and rules)"
        )
    pending = sum(1 for a in alerts if a.get("state") == "pending")
    return Result(check, PASS, "only Watchdog firing" + (f", {pending} pending" if pending else ""))


def certificates(api: client.ApiClient) -> Result:
    check = "certificates"
    items = client.CustomObjectsApi(api).list_cluster_custom_object(
        "cert-manager.io", "v1", "certificates", _request_timeout=T
    )["items"]
    if not items:
        return Result(check, SKIP, "no Certificate yet (issued when an Ingress asks for one)")
    bad = []
    for item in items:
        ok, why = _ready(item.get("status", {}).get("conditions"))
        if not ok:
            bad.append(f"{item['metadata']['namespace']}/{item['metadata']['name']}: {why}")
    if bad:
        return Result(check, FAIL, "; ".join(bad))
    return Result(check, PASS, f"{len(items)} Ready")


def vault(api: client.ApiClient, namespace: str) -> Result:
    check = "vault unsealed"
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=VAULT_SERVER_PODS, _request_timeout=T)
        .items
    )
    if not pods:
        return Result(check, FAIL, f"no Vault server pod in {namespace}")
    states, bad = [], []
    for pod in pods:
        # /v1/sys/seal-status needs no token (Vault's API docs: sys/seal-status is unauthenticated).
        try:
            status = json.loads(
                _proxy_get(api, "pod", f"{pod.metadata.name}:8200", namespace, "v1/sys/seal-status")
            )
        except (ApiException, ValueError) as error:
            bad.append(f"{pod.metadata.name}: no answer ({getattr(error, 'reason', error)})")
            continue
        if not status.get("initialized"):
            bad.append(f"{pod.metadata.name}: not initialized")
        elif status.get("sealed"):
            bad.append(
                f"{pod.metadata.name}: sealed ({status.get('progress', 0)}/{status.get('t', '?')} keys): "
                f"unseal with unseal.sh from ConfigMap {namespace}/vault-operations"
            )
        else:
            states.append(f"{pod.metadata.name} unsealed (Vault {status.get('version', '?')})")
    if bad:
        return Result(check, FAIL, "; ".join(bad))
    return Result(check, PASS, ", ".join(states))


def postgres(api: client.ApiClient, namespace: str, name: str) -> Result:
    check = f"postgresql {namespace}/{name}"
    item = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", namespace, "clusters", name, _request_timeout=T
    )
    status = item.get("status", {})
    want, ready = item.get("spec", {}).get("instances", 1), status.get("readyInstances", 0)
    phase = status.get("phase", "no status yet")
    if phase == CNPG_HEALTHY and ready == want:
        return Result(check, PASS, f"{phase}, {ready}/{want} instances ready")
    return Result(check, FAIL, f"{phase}, {ready}/{want} instances ready")


def _age(timestamp: str, now: float) -> float:
    return now - datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _hours(seconds: float) -> str:
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def postgres_backup(
    api: client.ApiClient, namespace: str, name: str, now: Callable[[], float] = time.time
) -> Result:
    """The age of the last good base backup and the state of WAL archiving, from the Cluster's status
    (cloudnative-pg v1.29.1 api/v1/cluster_types.go: lastSuccessfulBackup, lastFailedBackup,
    firstRecoverabilityPoint, condition ContinuousArchiving), as the in-tree Barman Cloud sets it."""
    check = f"postgresql backup {namespace}/{name}"
    item = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", namespace, "clusters", name, _request_timeout=T
    )
    status = item.get("status", {})
    archiving = next(
        (c for c in status.get("conditions") or () if c.get("type") == "ContinuousArchiving"), None
    )
    if archiving is not None and archiving.get("status") != "True":
        why = archiving.get("message") or archiving.get("reason") or "no reason given"
        return Result(check, FAIL, f"WAL archiving failing: {why}")
    at = now()
    last, failed = status.get("lastSuccessfulBackup"), status.get("lastFailedBackup")
    if not last:
        created = item.get("metadata", {}).get("creationTimestamp")
        if created and _age(created, at) < BASE_BACKUP_MAX_AGE:
            return Result(check, SKIP, "no base backup finished yet (the first one starts with the Cluster)")
        return Result(
            check, FAIL, "no successful base backup" + (f"; last failure {failed}" if failed else "")
        )
    age = _age(last, at)
    evidence = f"last base backup {_hours(age)} ago ({last})"
    if failed and _age(failed, at) < age:
        return Result(check, FAIL, f"{evidence}, and the one at {failed} failed")
    if age > BASE_BACKUP_MAX_AGE:
        return Result(check, FAIL, f"{evidence}: older than {_hours(BASE_BACKUP_MAX_AGE)}")
    recoverable = status.get("firstRecoverabilityPoint")
    return Result(
        check,
        PASS,
        evidence + (f", recoverable from {recoverable}" if recoverable else "") + ", WAL archiving ok",
    )


def cron_job(
    api: client.ApiClient, namespace: str, name: str, now: Callable[[], float] = time.time
) -> Result:
    """The last run of a backup CronJob and the age of its newest successful one (the Jobs it keeps:
    successfulJobsHistoryLimit), held to the age a daily backup may have."""
    check = f"backup {namespace}/{name}"
    jobs = [
        job
        for job in client.BatchV1Api(api).list_namespaced_job(namespace, _request_timeout=T).items
        if any(o.kind == "CronJob" and o.name == name for o in job.metadata.owner_references or ())
    ]
    finished = [j for j in jobs if j.status.succeeded or j.status.failed]
    if not finished:
        return Result(check, SKIP, "no run finished yet" + (f" ({len(jobs)} running)" if jobs else ""))
    last = max(finished, key=lambda j: j.metadata.creation_timestamp)
    good = [j for j in finished if j.status.succeeded and j.status.completion_time]
    newest = max((j.status.completion_time for j in good), default=None)
    age = f"last good run {_hours(now() - newest.timestamp())} ago" if newest else "no good run kept"
    if not last.status.succeeded:
        _, why = _ready(last.status.conditions, "Complete")
        return Result(check, FAIL, f"last run {last.metadata.name} failed: {why}; {age}")
    assert newest is not None
    if now() - newest.timestamp() > BASE_BACKUP_MAX_AGE:
        return Result(check, FAIL, f"{age}: older than {_hours(BASE_BACKUP_MAX_AGE)}")
    return Result(check, PASS, f"{age} ({last.metadata.name} at {last.status.completion_time})")


def etcd_snapshots(api: client.ApiClient, s3: bool, now: Callable[[], float] = time.time) -> Result:
    """The age of k3s' newest good etcd snapshot (on S3 where the stack sends them there), from the
    ETCDSnapshotFile objects k3s keeps for every snapshot (k3s.cattle.io/v1, cluster-scoped; status
    readyToUse, creationTime and error). Prometheus does not see them: neither k3s nor
    kube-state-metrics' default collectors export them as metrics."""
    check = "k3s etcd snapshots"
    items = client.CustomObjectsApi(api).list_cluster_custom_object(
        "k3s.cattle.io", "v1", "etcdsnapshotfiles", _request_timeout=T
    )["items"]
    where = "on S3" if s3 else "on the servers"
    kept = [i for i in items if not s3 or (i.get("spec") or {}).get("s3")]

    def created(item: dict[str, Any]) -> str:
        return (item.get("status") or {}).get("creationTime") or item["metadata"]["creationTimestamp"]

    good = [i for i in kept if (i.get("status") or {}).get("readyToUse")]
    failed = [i for i in kept if (i.get("status") or {}).get("error")]
    at = now()
    if not good:
        return Result(
            check, FAIL, f"no usable snapshot {where}" + (f"; {len(failed)} failed" if failed else "")
        )
    newest = max(good, key=lambda i: _age(created(i), at) * -1)
    age = _age(created(newest), at)
    evidence = f"newest snapshot {where} {_hours(age)} ago ({newest['spec'].get('snapshotName', '?')})"
    newer_failures = [i for i in failed if _age(created(i), at) < age]
    if newer_failures:
        error = newer_failures[0]["status"]["error"]
        return Result(check, FAIL, f"{evidence}; a later one failed: {error.get('message', error)}")
    if age > BASE_BACKUP_MAX_AGE:
        return Result(check, FAIL, f"{evidence}: older than {_hours(BASE_BACKUP_MAX_AGE)}")
    return Result(check, PASS, evidence)


def condition_object(
    api: client.ApiClient, check: str, group: str, version: str, plural: str, name: str, namespace: str | None
) -> Result:
    objects = client.CustomObjectsApi(api)
    if namespace is None:
        item = objects.get_cluster_custom_object(group, version, plural, name, _request_timeout=T)
    else:
        item = objects.get_namespaced_custom_object(
            group, version, namespace, plural, name, _request_timeout=T
        )
    ok, why = _ready(item.get("status", {}).get("conditions"))
    return Result(check, PASS if ok else FAIL, "Ready" if ok else why)


def deployment(
    api: client.ApiClient, check: str, namespace: str, name: str, expected: Expectation | None = None
) -> Result:
    """A Deployment is available; one that asks for GPUs runs its pods on the GPU nodes."""
    item = client.AppsV1Api(api).read_namespaced_deployment(name, namespace, _request_timeout=T)
    want, ready = item.spec.replicas or 0, item.status.ready_replicas or 0
    if ready < want or want == 0:
        return Result(check, FAIL, f"{ready}/{want} replicas ready")
    evidence = f"{ready}/{want} replicas ready"
    limits = [(c.resources.limits or {}) if c.resources else {} for c in item.spec.template.spec.containers]
    if expected is not None and any(GPU_RESOURCE in limit for limit in limits):
        selector = ",".join(f"{k}={v}" for k, v in sorted((item.spec.selector.match_labels or {}).items()))
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=T).items
        gpu = {n.metadata.name for n in gpu_nodes(expected, core.list_node(_request_timeout=T).items)}
        off = sorted(f"{p.metadata.name} on {p.spec.node_name}" for p in pods if p.spec.node_name not in gpu)
        if off:
            return Result(check, FAIL, f"{evidence}, but not on a GPU node: {', '.join(off)}")
        evidence += f", on GPU node(s) {', '.join(sorted({p.spec.node_name for p in pods}))}"
    return Result(check, PASS, evidence)


def storage_class(api: client.ApiClient, name: str) -> Result:
    item = client.StorageV1Api(api).read_storage_class(name, _request_timeout=T)
    return Result(f"storageclass {name}", PASS, f"provisioner {item.provisioner}")


def job_object(api: client.ApiClient, namespace: str, name: str) -> Result:
    check = f"job {namespace}/{name}"
    job = client.BatchV1Api(api).read_namespaced_job(name, namespace, _request_timeout=T)
    if job.status.succeeded:
        return Result(check, PASS, f"completed at {job.status.completion_time}")
    _, why = _ready(job.status.conditions, "Complete")
    return Result(check, FAIL, f"not completed: {why}")


def platform(
    api: client.ApiClient, expected: Expectation, nodes: Sequence[client.V1Node]
) -> Iterator[tuple[str, Callable[[], Result]]]:
    """(check name, deferred check) for each platform component the stack installs."""
    gpus = gpu_nodes(expected, nodes)
    runtime_class = runtime_class_of(expected)
    if runtime_class is not None:
        yield f"gpu runtime {runtime_class}", partial(gpu_runtime, api, runtime_class, gpus)
    operator = expected.release("gpu-operator")
    if operator is not None:
        yield "gpu operator pods", partial(namespace_pods, api, "gpu operator pods", operator.namespace)
        if (operator.values.get("dcgmExporter") or {}).get("enabled", True):
            yield "dcgm metrics", partial(dcgm_metrics, api, operator.namespace, gpus)
    prometheus = expected.release("kube-prometheus-stack")
    if prometheus is not None:
        service = prometheus_service(prometheus)
        ns = prometheus.namespace
        yield "prometheus dcgm targets", partial(dcgm_targets, api, ns, service, gpus)
        yield "prometheus alerts", partial(firing_alerts, api, ns, service)
    plugin = expected.release("nvidia-device-plugin")
    if plugin is not None:
        yield "device plugin pods", partial(device_plugin, api, plugin.namespace, gpus)
    karpenter = expected.release("karpenter")
    if karpenter is not None:
        check = "karpenter pods"
        yield check, partial(namespace_pods, api, check, karpenter.namespace, KARPENTER_PODS)
    if expected.release("cert-manager") is not None:
        yield "certificates", partial(certificates, api)
    vault_release = expected.release("vault")
    if vault_release is not None:
        yield "vault unsealed", partial(vault, api, vault_release.namespace)
    hub = expected.release("jupyterhub")
    if hub is not None:
        yield "jupyterhub hub", partial(deployment, api, "jupyterhub hub", hub.namespace, HUB_DEPLOYMENT)
    for ns, name in _objects(expected, "postgresql.cnpg.io/v1", "Cluster"):
        yield f"postgresql {ns}/{name}", partial(postgres, api, ns, name)
    for release, manifest in expected.objects("postgresql.cnpg.io/v1", "Cluster"):
        if "backup" in manifest.get("spec", {}):
            ns, name = manifest["metadata"].get("namespace", release.namespace), manifest["metadata"]["name"]
            yield f"postgresql backup {ns}/{name}", partial(postgres_backup, api, ns, name)
    for ns, name in _objects(expected, "batch/v1", "CronJob"):
        yield f"backup {ns}/{name}", partial(cron_job, api, ns, name)
    if expected.etcd_snapshots is not None:
        s3 = expected.etcd_snapshots == "s3"
        yield "k3s etcd snapshots", partial(etcd_snapshots, api, s3)
    for ns, name in _objects(expected, "batch/v1", "Job"):
        yield f"job {ns}/{name}", partial(job_object, api, ns, name)
    for ns, name in _objects(expected, "networking.linode.com/alpha1v1", "CloudFirewall"):
        yield f"cloud firewall {ns}/{name}", partial(cloud_firewall, api, ns, name, nodes)
    for _, name in _objects(expected, "karpenter.sh/v1", "NodePool"):
        check = f"nodepool {name}"
        yield check, partial(condition_object, api, check, "karpenter.sh", "v1", "nodepools", name, None)
    for _, name in _objects(expected, "karpenter.k8s.aws/v1", "EC2NodeClass"):
        check = f"ec2nodeclass {name}"
        yield (
            check,
            partial(condition_object, api, check, "karpenter.k8s.aws", "v1", "ec2nodeclasses", name, None),
        )
    nfs = expected.release("nfs-subdir-external-provisioner")
    if nfs is not None:
        # The chart creates the class named in its values (storageClass.name, default nfs-client).
        name = (nfs.values.get("storageClass") or {}).get("name", "nfs-client")
        yield f"storageclass {name}", partial(storage_class, api, name)
    for _, name in _objects(expected, "storage.k8s.io/v1", "StorageClass"):
        yield f"storageclass {name}", partial(storage_class, api, name)
    for ns, name in _objects(expected, "fleet.cattle.io/v1alpha1", "GitRepo"):
        check = f"gitrepo {ns}/{name}"
        yield (
            check,
            partial(condition_object, api, check, "fleet.cattle.io", "v1alpha1", "gitrepos", name, ns),
        )
    for ns, name in _objects(expected, "apps/v1", "Deployment"):
        check = f"deployment {ns}/{name}"
        yield check, partial(deployment, api, check, ns, name, expected)


def _objects(expected: Expectation, api_version: str, kind: str) -> Iterator[tuple[str, str]]:
    """(namespace, name) of the stack's own objects of ``kind``."""
    for release, manifest in expected.objects(api_version, kind):
        yield manifest["metadata"].get("namespace", release.namespace), manifest["metadata"]["name"]
