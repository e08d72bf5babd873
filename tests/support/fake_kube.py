"""A fake Kubernetes API server on 127.0.0.1 for the verification tests.

It stores objects by their API path and answers the calls the Kubernetes Python client makes: GET of
an object or a collection (with equality label selectors and the involvedObject.name field
selector), POST into a collection, DELETE, and raw text for pod logs and API-server proxy paths.
``healthy(expected)`` fills it with a cluster that has what a stack's expectation asks for; tests
then break one thing at a time.
"""

from __future__ import annotations

import copy
import datetime
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from gpu_constructs.verify.checks import runtime_class_of
from gpu_constructs.verify.expect import Expectation

NOW = "2026-11-23T01:00:00Z"


def _hours_ago(hours: float) -> str:
    """An RFC 3339 time ``hours`` before the real now (backup ages are measured against the clock)."""
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


JOB_NAMESPACE = "gpu-verify"
VERSION = {
    "major": "1",
    "minor": "35",
    "gitVersion": "v1.35.0",
    "gitCommit": "66452049f3d692768c39c797b21b793dce80314e",
    "gitTreeState": "clean",
    "buildDate": "2025-12-17T12:32:00Z",
    "goVersion": "go1.25.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def status(code: int, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}


def _selected(obj: dict[str, Any], query: dict[str, list[str]]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for selector in query.get("labelSelector", []):
        for term in filter(None, selector.split(",")):
            key, _, value = term.partition("=")
            if labels.get(key) != value:
                return False
    for selector in query.get("fieldSelector", []):
        key, _, value = selector.partition("=")
        if key == "involvedObject.name" and obj.get("involvedObject", {}).get("name") != value:
            return False
    return True


class FakeKube:
    """The store and the server. ``url`` is set once started."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.raw: dict[str, tuple[int, str]] = {}
        self.raw_once: dict[str, str] = {}
        """Paths answered once with this JSON, then as the store says."""
        self.errors: dict[str, int] = {}
        """Paths (or ``*``) answered with this HTTP status instead."""
        self.requests: list[tuple[str, str]] = []
        self.on_create: dict[str, Callable[[dict[str, Any]], None]] = {}
        """Collection path -> what the cluster does when an object is created there."""
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    # --- the store --------------------------------------------------------------------------------------
    def put(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("name", path.rsplit("/", 1)[1])
        meta.setdefault("creationTimestamp", NOW)
        meta.setdefault("uid", f"uid-{len(self.objects)}")
        self.objects[path] = obj
        return obj

    def _collection(self, path: str, query: dict[str, list[str]]) -> list[dict[str, Any]] | None:
        found = []
        cluster_wide = "/namespaces/" not in path
        for key, obj in self.objects.items():
            parent = key.rsplit("/", 1)[0]
            if cluster_wide and "/namespaces/" in parent:
                head, _, rest = parent.partition("/namespaces/")
                parent = f"{head}/{rest.split('/', 1)[1]}" if "/" in rest else parent
            if parent == path and _selected(obj, query):
                found.append(obj)
        known = any(k.rsplit("/", 1)[0] == path for k in self.objects) or path.endswith(
            ("/pods", "/events", "/jobs", "/nodes", "/certificates", "/namespaces")
        )
        return found if found or known else None

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, str, str]:
        parts = urlsplit(target)
        path, query = unquote(parts.path), parse_qs(parts.query)
        self.requests.append((method, path))
        code = self.errors.get(path, self.errors.get("*"))
        if code is not None:
            return code, "application/json", json.dumps(status(code, "Forced"))
        if method == "GET" and path in self.raw_once:
            return 200, "application/json", self.raw_once.pop(path)
        if method == "GET" and path in self.raw:
            code, text = self.raw[path]
            return code, "text/plain", text
        if method == "GET" and path.rstrip("/") == "/version":
            return 200, "application/json", json.dumps(VERSION)
        if method == "GET" and path in self.objects:
            return 200, "application/json", json.dumps(self.objects[path])
        if method == "GET":
            items = self._collection(path, query)
            if items is not None:
                limit = int(query.get("limit", ["0"])[0])
                items = items[:limit] if limit else items
                document = {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
                return 200, "application/json", json.dumps(document)
        if method == "POST":
            obj = json.loads(body)
            created = self.put(f"{path}/{obj['metadata']['name']}", obj)
            if path in self.on_create:
                self.on_create[path](created)
            return 201, "application/json", json.dumps(created)
        if method == "DELETE" and path in self.objects:
            self.objects.pop(path)
            return 200, "application/json", json.dumps({"kind": "Status", "status": "Success"})
        return 404, "application/json", json.dumps(status(404, "NotFound"))

    # --- the server -------------------------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                code, kind, text = fake.handle(self.command, self.path, self.rfile.read(length))
                data = text.encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.timeout = 5
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }


# --- objects ----------------------------------------------------------------------------------------------
def node(name: str, labels: dict[str, str], taints: list[dict[str, str]], gpus: int = 0) -> dict[str, Any]:
    allocatable = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def pod(
    name: str, namespace: str, labels: dict[str, str], node_name: str, phase: str = "Running"
) -> dict[str, Any]:
    ready = "True" if phase == "Running" else "False"
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "example:1"}]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": NOW},
                {"type": "Ready", "status": ready},
            ],
        },
    }


def ready(status_value: str = "True", message: str = "") -> dict[str, Any]:
    condition = {"type": "Ready", "status": status_value, "reason": "Test", "message": message}
    return {"conditions": [{**condition, "lastTransitionTime": NOW}]}


def add_node(fake: FakeKube, obj: dict[str, Any]) -> None:
    fake.put(f"/api/v1/nodes/{obj['metadata']['name']}", obj)


def add_pod(fake: FakeKube, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    fake.put(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", obj)


def gpu_job_succeeds(fake: FakeKube, node_name: str, new_node: dict[str, Any] | None = None) -> None:
    """The cluster runs every verification Job to completion on ``node_name`` (starting ``new_node``
    first, as Karpenter would) and its log shows the GPU."""

    def run(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        job["metadata"]["creationTimestamp"] = "2026-11-23T01:00:00Z"
        job["status"] = {"succeeded": 1, "completionTime": "2026-11-23T01:01:40Z"}
        if new_node is not None:
            add_node(fake, new_node)
        p = pod(f"{name}-x1", JOB_NAMESPACE, {"job-name": name}, node_name, phase="Succeeded")
        p["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-23T01:01:12Z"
        add_pod(fake, p)
        fake.raw[f"/api/v1/namespaces/{JOB_NAMESPACE}/pods/{name}-x1/log"] = (
            200,
            "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-4b1f0c2e-7d11-4a8e-9f00-000000000001)\n",
        )

    fake.on_create[f"/apis/batch/v1/namespaces/{JOB_NAMESPACE}/jobs"] = run


def gpu_job_pending(fake: FakeKube, events: list[tuple[str, str, str]]) -> None:
    """Every verification Job's pod stays Pending; ``events`` are (component, reason, message)."""

    def run(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        job["status"] = {"active": 1}
        p = pod(f"{name}-x1", JOB_NAMESPACE, {"job-name": name}, "", phase="Pending")
        del p["spec"]["nodeName"]
        p["status"]["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": events[0][2] if events else "unschedulable",
            }
        ]
        add_pod(fake, p)
        for index, (component, reason, message) in enumerate(events):
            fake.put(
                f"/api/v1/namespaces/{JOB_NAMESPACE}/events/{name}-x1.{index}",
                {
                    "metadata": {"name": f"{name}-x1.{index}", "namespace": JOB_NAMESPACE},
                    "involvedObject": {"kind": "Pod", "name": f"{name}-x1", "namespace": JOB_NAMESPACE},
                    "reason": reason,
                    "message": message,
                    "source": {"component": component},
                    "type": "Warning",
                },
            )

    fake.on_create[f"/apis/batch/v1/namespaces/{JOB_NAMESPACE}/jobs"] = run


def healthy(expected: Expectation) -> FakeKube:
    """A cluster with everything ``expected`` asks for, working: the nodes of each group with their
    labels and taints, allocatable GPUs, a GPU Job that completes, and every platform component."""
    fake = FakeKube()
    gpu_names: list[str] = []
    pending_gpu_node: dict[str, Any] | None = None
    for index, group in enumerate(expected.node_groups):
        names = list(group.names) or [f"group{index}-node{i}" for i in range(group.min_nodes)]
        taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in group.taints]
        labels = {**group.members, **group.labels}
        gpus = expected.gpu_slots_per_node
        if gpus is None and group.gpu:
            gpus = expected.time_slicing_replicas
            if expected.eks is not None:
                # Karpenter labels its nodes with the instance type's GPU count.
                labels["karpenter.k8s.aws/instance-gpu-count"] = "1"
        if group.gpu and not names:
            pending_gpu_node = node(f"group{index}-gpu-from-zero", labels, taints, gpus or 1)
            continue
        for name in names:
            add_node(fake, node(name, labels, taints, gpus or 0 if group.gpu else 0))
            if group.gpu:
                gpu_names.append(name)
    job_node = gpu_names[0] if gpu_names else "group-gpu-from-zero"
    if pending_gpu_node is not None and not gpu_names:
        job_node = pending_gpu_node["metadata"]["name"]
    gpu_job_succeeds(fake, job_node, pending_gpu_node if not gpu_names else None)
    all_gpu = [*gpu_names, *([job_node] if pending_gpu_node is not None and not gpu_names else [])]

    runtime_class = runtime_class_of(expected)

    def gpu_pod(obj: dict[str, Any]) -> dict[str, Any]:
        """A GPU DaemonSet's pod runs with the GPU RuntimeClass (the device plugin, the operands)."""
        if runtime_class is not None:
            obj["spec"]["runtimeClassName"] = runtime_class
        return obj

    operator = expected.release("gpu-operator")
    if operator is not None:
        for name in all_gpu:
            add_pod(
                fake, gpu_pod(pod(f"nvidia-device-plugin-{name}", operator.namespace, {"app": "dp"}, name))
            )
        add_pod(fake, pod("gpu-operator-0", operator.namespace, {"app": "gpu-operator"}, "n"))
        fake.raw[
            f"/api/v1/namespaces/{operator.namespace}/services/nvidia-dcgm-exporter:9400/proxy/metrics"
        ] = (
            200,
            "# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).\n"
            'DCGM_FI_DEV_GPU_UTIL{gpu="0",modelName="NVIDIA A100-SXM4-40GB"} 3\n',
        )
    monitoring = expected.release("kube-prometheus-stack")
    if monitoring is not None:
        serve_prometheus(fake, monitoring.namespace, prometheus_targets(all_gpu), WATCHDOG)
    plugin = expected.release("nvidia-device-plugin")
    if plugin is not None:
        for name in all_gpu:
            labels = {"app.kubernetes.io/name": "nvidia-device-plugin"}
            add_pod(fake, gpu_pod(pod(f"nvidia-device-plugin-{name}", plugin.namespace, labels, name)))
    karpenter = expected.release("karpenter")
    if karpenter is not None:
        for i in range(2):
            labels = {"app.kubernetes.io/name": "karpenter"}
            add_pod(fake, pod(f"karpenter-{i}", karpenter.namespace, labels, "group0-node0"))
    if expected.release("cert-manager") is not None:
        fake.put(
            "/apis/cert-manager.io/v1/namespaces/ffe/certificates/app-tls",
            {"metadata": {"namespace": "ffe"}, "status": ready()},
        )
    vault = expected.release("vault")
    if vault is not None:
        add_pod(
            fake,
            pod("vault-0", vault.namespace, {"app.kubernetes.io/name": "vault", "component": "server"}, "n"),
        )
        fake.raw[f"/api/v1/namespaces/{vault.namespace}/pods/vault-0:8200/proxy/v1/sys/seal-status"] = (
            200,
            json.dumps(
                {
                    "type": "shamir",
                    "initialized": True,
                    "sealed": False,
                    "t": 1,
                    "n": 1,
                    "progress": 0,
                    "version": "2.0.4",
                }
            ),
        )
    nfs = expected.release("nfs-subdir-external-provisioner")
    if nfs is not None:
        name = nfs.values["storageClass"]["name"]
        fake.put(f"/apis/storage.k8s.io/v1/storageclasses/{name}", {"provisioner": "cluster.local/nfs"})
    hub = expected.release("jupyterhub")
    if hub is not None:
        fake.put(
            f"/apis/apps/v1/namespaces/{hub.namespace}/deployments/hub", deployment(1, {"component": "hub"})
        )
    if expected.etcd_snapshots is not None:
        # k3s' record of a scheduled snapshot two hours ago (on S3 where the stack sends them).
        s3 = {"bucket": "ffe-backups"} if expected.etcd_snapshots == "s3" else None
        fake.put(
            "/apis/k3s.cattle.io/v1/etcdsnapshotfiles/s3-etcd-snapshot-server-1764640800-1a2b3c",
            {
                "spec": {
                    "snapshotName": "etcd-snapshot-server-1764640800",
                    "nodeName": "server",
                    **({"s3": s3} if s3 else {}),
                },
                "status": {"readyToUse": True, "creationTime": _hours_ago(2)},
            },
        )
    for release, manifest in expected.manifests():
        meta, kind = manifest["metadata"], manifest["kind"]
        ns, name = meta.get("namespace", release.namespace), meta["name"]
        stored = {k: copy.deepcopy(v) for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        if kind == "Cluster":
            instances = manifest["spec"].get("instances", 1)
            fake.put(
                f"/apis/postgresql.cnpg.io/v1/namespaces/{ns}/clusters/{name}",
                {
                    "metadata": {"creationTimestamp": NOW},
                    "spec": {"instances": instances},
                    "status": {
                        "phase": "Cluster in healthy state",
                        "readyInstances": instances,
                        "lastSuccessfulBackup": _hours_ago(3),
                        "firstRecoverabilityPoint": _hours_ago(27),
                        "conditions": [
                            {
                                "type": "ContinuousArchiving",
                                "status": "True",
                                "reason": "ContinuousArchivingSuccess",
                            }
                        ],
                    },
                },
            )
        elif kind == "CronJob":
            fake.put(
                f"/apis/batch/v1/namespaces/{ns}/jobs/{name}-29400000",
                {
                    "metadata": {
                        "namespace": ns,
                        "ownerReferences": [
                            {"apiVersion": "batch/v1", "kind": "CronJob", "name": name, "uid": "u1"}
                        ],
                    },
                    "spec": {"template": {"spec": {"containers": [{"name": "dump"}]}}},
                    "status": {"succeeded": 1, "completionTime": _hours_ago(2)},
                },
            )
        elif kind == "Job":
            fake.put(
                f"/apis/batch/v1/namespaces/{ns}/jobs/{name}",
                {"spec": copy.deepcopy(manifest["spec"]), "status": {"succeeded": 1, "completionTime": NOW}},
            )
        elif kind == "CloudFirewall":
            # The controller's record: every node's Linode id (LKE nodes' providerID linode://<id>).
            ids = []
            for key, obj in fake.objects.items():
                if key.startswith("/api/v1/nodes/"):
                    obj["spec"]["providerID"] = f"linode://{4000 + len(ids)}"
                    ids.append(4000 + len(ids))
            fake.put(
                f"/apis/networking.linode.com/alpha1v1/namespaces/{ns}/cloudfirewalls/{name}",
                {**stored, "status": {"firewall-id": "123456", "nodes": ids}},
            )
        elif kind == "StorageClass":
            fake.put(f"/apis/storage.k8s.io/v1/storageclasses/{name}", copy.deepcopy(dict(manifest)))
        elif kind == "EC2NodeClass":
            fake.put(f"/apis/karpenter.k8s.aws/v1/ec2nodeclasses/{name}", {**stored, "status": ready()})
        elif kind == "NodePool":
            fake.put(f"/apis/karpenter.sh/v1/nodepools/{name}", {**stored, "status": ready()})
        elif kind == "GitRepo":
            fake.put(
                f"/apis/fleet.cattle.io/v1alpha1/namespaces/{ns}/gitrepos/{name}",
                {**stored, "status": ready()},
            )
        elif kind == "Deployment":
            template = copy.deepcopy(manifest["spec"]["template"])
            obj = deployment(manifest["spec"].get("replicas", 1), manifest["spec"]["selector"]["matchLabels"])
            obj["spec"]["template"] = template
            fake.put(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}", obj)
            replicas = obj["spec"]["replicas"]
            for i in range(replicas):
                add_pod(
                    fake,
                    pod(
                        f"{name}-{i}",
                        ns,
                        dict(template["metadata"]["labels"]),
                        all_gpu[0] if all_gpu else "n",
                    ),
                )
    return fake


def deployment(replicas: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "main"}]}},
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
    }


# --- Prometheus' HTTP API (prometheus/prometheus docs/querying/api.md, "Targets" and "Alerts") ---------
PROMETHEUS_PROXY = "/api/v1/namespaces/{namespace}/services/kube-prometheus-stack-prometheus:9090/proxy"
WATCHDOG = [
    {
        "labels": {"alertname": "Watchdog", "severity": "none"},
        "annotations": {
            "summary": "An alert that should always be firing to certify that Alertmanager is working properly."
        },
        "state": "firing",
        "activeAt": "2026-12-02T08:00:00.000000000Z",
        "value": "1e+00",
    },
    {
        "labels": {"alertname": "InfoInhibitor", "severity": "none", "namespace": "kube-system"},
        "annotations": {"summary": "Info-level alert inhibition."},
        "state": "firing",
        "activeAt": "2026-12-02T08:00:00.000000000Z",
        "value": "1e+00",
    },
]


def dcgm_target(node_name: str, index: int, health: str = "up", error: str = "") -> dict[str, Any]:
    """An active target of the DCGM ServiceMonitor on ``node_name``, as /api/v1/targets lists it."""
    address = f"10.42.{index}.17:9400"
    return {
        "discoveredLabels": {
            "__address__": address,
            "__metrics_path__": "/metrics",
            "__scheme__": "http",
            "__meta_kubernetes_pod_node_name": node_name,
            "job": "serviceMonitor/monitoring/dcgm-exporter/0",
        },
        "labels": {
            "container": "dcgm-exporter",
            "endpoint": "gpu-metrics",
            "instance": address,
            "job": "dcgm-exporter",
            "namespace": "monitoring",
            "node": node_name,
            "pod": f"dcgm-exporter-{index}",
            "service": "dcgm-exporter",
        },
        "scrapePool": "serviceMonitor/monitoring/dcgm-exporter/0",
        "scrapeUrl": f"http://{address}/metrics",
        "globalUrl": f"http://{address}/metrics",
        "lastError": error,
        "lastScrape": "2026-12-02T11:59:50.123456789Z",
        "lastScrapeDuration": 0.021,
        "health": health,
        "scrapeInterval": "15s",
        "scrapeTimeout": "10s",
    }


def prometheus_targets(gpu_nodes: list[str]) -> list[dict[str, Any]]:
    """A DCGM target per GPU node, and another job's target on the same node, which is not one."""
    targets = [dcgm_target(name, index) for index, name in enumerate(gpu_nodes)]
    if gpu_nodes:
        other = dcgm_target(gpu_nodes[0], 99)
        other["scrapePool"] = "serviceMonitor/monitoring/kube-prometheus-stack-prometheus-node-exporter/0"
        other["labels"]["job"] = "node-exporter"
        targets.append(other)
    return targets


def serve_prometheus(
    fake: FakeKube, namespace: str, targets: list[dict[str, Any]], alerts: list[dict[str, Any]]
) -> None:
    base = PROMETHEUS_PROXY.format(namespace=namespace)
    fake.raw[f"{base}/api/v1/targets"] = (
        200,
        json.dumps(
            {
                "status": "success",
                "data": {"activeTargets": targets, "droppedTargets": [], "droppedTargetCounts": {}},
            }
        ),
    )
    fake.raw[f"{base}/api/v1/alerts"] = (200, json.dumps({"status": "success", "data": {"alerts": alerts}}))
