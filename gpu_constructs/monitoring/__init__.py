"""Monitoring: Prometheus, Alertmanager and Grafana for a GPU cluster, with GPU metrics and alerts.

One kube-prometheus-stack release (Prometheus Operator, Prometheus, Alertmanager, Grafana,
kube-state-metrics, node-exporter) on the nodes the stack names for it, never on a GPU node, and a
second release with what is this library's own: the alert rules in ``rules/`` as PrometheusRules,
the ServiceMonitor that scrapes the DCGM exporter on every GPU node, the GPU dashboard, and, where no
GPU Operator runs (the device plugin stacks), the DCGM exporter DaemonSet itself.

The second release needs the Prometheus Operator's CRDs, so it depends on the first. Prometheus
selects every ServiceMonitor, PodMonitor and PrometheusRule in the cluster (the chart's
``*SelectorNilUsesHelmValues: false``), not only the ones carrying this release's label, so the GPU
Operator's and other charts' monitors are scraped as well.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError

NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
NODE_EXPORTER_PORT = 9100
"""node-exporter's port on every node: kube-prometheus-stack's prometheus-node-exporter runs with
hostNetwork (subchart values ``hostNetwork: true``, ``service.port: 9100``), so Prometheus scrapes each
node's own address and a node firewall must admit the port between the nodes."""
RULES_DIR = Path(__file__).parent / "rules"
DASHBOARDS_DIR = Path(__file__).parent / "dashboards"
DCGM_PORT = 9400
HOST_NETWORK_PORTS = (f"{NODE_EXPORTER_PORT}/tcp",)
"""The node ports the monitoring release's hostNetwork pods serve to other pods."""
NVIDIA_DASHBOARD = {"gnetId": 12239, "revision": 2}
"""NVIDIA's "NVIDIA DCGM Exporter Dashboard" on grafana.com (the dashboard NVIDIA/dcgm-exporter keeps
in grafana/dcgm-exporter-dashboard.json), which Grafana downloads when it starts."""


class DcgmSource(enum.Enum):
    """Where the DCGM exporter on the GPU nodes comes from."""

    GPU_OPERATOR = "gpu-operator"
    """The GPU Operator runs it: its Service ``nvidia-dcgm-exporter`` (gpu-operator v26.7.0
    assets/state-dcgm-exporter/0400_service.yaml: label ``app: nvidia-dcgm-exporter``, port
    ``gpu-metrics`` 9400) in the operator's namespace is scraped."""
    STANDALONE = "standalone"
    """This construct runs it as a DaemonSet on the GPU nodes (device plugin stacks)."""


@dataclass(frozen=True)
class MonitoringSize:
    """Requests for the monitoring pods; ``small`` fits a laptop (k3d), ``standard`` a real cluster."""

    prometheus_cpu: str
    prometheus_memory: str
    grafana_memory: str

    @classmethod
    def named(cls, name: str) -> MonitoringSize:
        validate.one_of("monitoring_size", name, tuple(SIZES))
        return SIZES[name]


SIZES = {
    "small": MonitoringSize(prometheus_cpu="100m", prometheus_memory="512Mi", grafana_memory="128Mi"),
    "standard": MonitoringSize(prometheus_cpu="500m", prometheus_memory="2Gi", grafana_memory="256Mi"),
}


@dataclass(frozen=True)
class GrafanaIngress:
    """Grafana behind the stack's ingress controller at ``host``."""

    host: str
    """The stack's ``grafana_host`` setting: a DNS name."""
    ingress_class: str
    cluster_issuer: str | None = None
    """cert-manager ClusterIssuer that fills the Ingress' TLS Secret ``grafana-tls``; None where the
    certificate is the ingress controller's own (an ALB with an ACM certificate) or there is none."""
    tls: bool = True
    """Grafana is served over HTTPS; False only where the stack has no certificate to give it (a
    local k3d cluster)."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Further Ingress annotations (the ALB's scheme, listener and certificate)."""

    def __post_init__(self) -> None:
        validate.dns_name("grafana_host", self.host)


@dataclass(frozen=True)
class MonitoringProps:
    cluster: GpuCluster
    dcgm: DcgmSource
    dcgm_namespace: str = "gpu-operator"
    """The GPU Operator's namespace (DcgmSource.GPU_OPERATOR)."""
    scheduling: Mapping[str, Any] = field(default_factory=dict)
    """``nodeSelector`` and ``tolerations`` that put Prometheus, Alertmanager, Grafana, the operator and
    kube-state-metrics on the stack's system or infra nodes; empty where every node may run them."""
    storage_class: str | None = None
    """StorageClass of Prometheus', Alertmanager's and Grafana's volumes; None uses the cluster's
    default. Never an NFS class: Prometheus' TSDB does not support it (prometheus.io/docs/prometheus/
    latest/storage, "Operational aspects": "Non-POSIX compliant filesystems are not supported ...
    including NFS")."""
    persistent: bool = True
    """Volumes for Prometheus, Alertmanager and Grafana; False keeps their data in an emptyDir (lost
    when the pod moves), for clusters without a StorageClass Prometheus supports."""
    retention: str = "15d"
    """How long Prometheus keeps samples (Prometheus duration: 15d, 12h, 2w)."""
    storage_size: str = "20Gi"
    """Prometheus' volume; retention by size is set to 90% of it, so the volume never fills."""
    size: str = "standard"
    grafana_ingress: GrafanaIngress | None = None
    nvidia_dashboard: bool = True
    """Provision NVIDIA's DCGM dashboard from grafana.com (Grafana needs egress to grafana.com)."""
    delete_volumes: bool = False
    """Delete Prometheus' and Alertmanager's volume claims with their StatefulSets
    (``persistentVolumeClaimRetentionPolicy.whenDeleted: Delete``): claims made from a StatefulSet's
    templates outlive ``helm uninstall`` otherwise. With a StorageClass that deletes its volumes,
    uninstalling frees the disks; for clusters whose deletion leaves volumes behind (LKE)."""
    host_root_fs: bool = True
    """Mount each node's ``/`` into node-exporter (the host's filesystem metrics), with the chart's
    HostToContainer propagation. False where nodes are containers whose ``/`` is not a shared mount
    (k3d): there the kubelet cannot create the container ("path / is mounted on / but it is not a
    shared or slave mount") and the waited release never becomes ready."""
    values: helm.ValuesLayers | None = None
    service_monitors: Sequence[Mapping[str, Any]] = ()
    """Other releases' ServiceMonitors (``Networking.service_monitor``), shipped with this
    construct's own objects after the Prometheus Operator's CRDs: those releases then need not
    come after this one, which may itself come after them."""
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.duration("monitoring_retention", self.retention, units="smhdwy")
        validate.quantity("monitoring_storage_size", self.storage_size)
        if self.storage_size[-2:] not in ("Mi", "Gi", "Ti") or float(self.storage_size[:-2]) <= 0:
            raise ConfigError(
                "monitoring_storage_size",
                self.storage_size,
                "give a size above zero in Mi, Gi or Ti, e.g. 20Gi",
            )
        MonitoringSize.named(self.size)
        unknown = set(self.scheduling) - {"nodeSelector", "tolerations"}
        if unknown:
            raise ConfigError(
                "monitoring scheduling", sorted(unknown), "give only nodeSelector and tolerations"
            )


def rule_groups() -> dict[str, list[dict[str, Any]]]:
    """The alert rule files, by file name without ``.yaml``: each file's ``groups``."""
    return {
        path.stem: yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        for path in sorted(RULES_DIR.glob("*.yaml"))
    }


def dashboards() -> dict[str, str]:
    """This library's Grafana dashboards, by file name: the JSON text, compacted."""
    return {
        path.name: json.dumps(json.loads(path.read_text(encoding="utf-8")), sort_keys=True)
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def _size_bytes_90(quantity: str) -> str:
    """90% of a Kubernetes quantity in Gi/Mi/Ti, as Prometheus' retention size (GB/MB/TB)."""
    number, unit = quantity[:-2], quantity[-2:]
    return f"{int(float(number) * 0.9 * {'Mi': 1, 'Gi': 1024, 'Ti': 1024 * 1024}[unit])}MB"


class Monitoring(Construct):
    """kube-prometheus-stack with the GPU exporter, alert rules and dashboards of this library."""

    namespace = NAMESPACE

    def __init__(self, scope: Construct, id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, id)
        self.props = props
        layered = props.values.load("kube-prometheus-stack") if props.values else {}
        self.values = helm.deep_merge(layered, self.contract_values())
        self.release = helm.release(
            self,
            "kube-prometheus-stack",
            cluster=props.cluster,
            name=RELEASE,
            chart="kube-prometheus-stack",
            repository=versions.REPO_PROMETHEUS_COMMUNITY,
            version=versions.KUBE_PROMETHEUS_STACK_CHART.version,
            namespace=NAMESPACE,
            values=self.values,
            depends_on=props.depends_on,
            timeout=900,
        )
        self.gpu_release = helm.manifests_release(
            self,
            "gpu-monitoring",
            cluster=props.cluster,
            name="gpu-monitoring",
            namespace=NAMESPACE,
            manifests=self.manifests(),
            depends_on=[self.release],
            # The standalone exporter's DaemonSet has no pods while a GPU pool is scaled to zero.
            wait=props.dcgm is not DcgmSource.STANDALONE,
        )

    # --- kube-prometheus-stack values -------------------------------------------------------------

    def _placed(self) -> dict[str, Any]:
        return {key: value for key, value in sorted(self.props.scheduling.items()) if value}

    def _volume(self, size: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        }
        if self.props.storage_class is not None:
            spec["storageClassName"] = self.props.storage_class
        return {"volumeClaimTemplate": {"spec": spec}}

    def contract_values(self) -> dict[str, Any]:
        props = self.props
        placed = self._placed()
        size = MonitoringSize.named(props.size)
        grafana: dict[str, Any] = {
            **placed,
            # No adminPassword: the Grafana chart generates one into the Secret
            # kube-prometheus-stack-grafana and keeps it on upgrades (charts/grafana
            # templates/_helpers.tpl "grafana.password": lookup of the existing Secret, else
            # randAlphaNum 40), so it never passes through Terraform.
            "adminUser": "admin",
            "resources": {"requests": {"cpu": "50m", "memory": size.grafana_memory}},
            "defaultDashboardsTimezone": "utc",
        }
        if props.persistent:
            grafana["persistence"] = {
                "enabled": True,
                "type": "pvc",
                "accessModes": ["ReadWriteOnce"],
                "size": "1Gi",
                **({"storageClassName": props.storage_class} if props.storage_class is not None else {}),
            }
            # A ReadWriteOnce volume attaches to one node: a rolling update would start the new pod
            # beside the old one and, on another node, wait for the volume forever (Multi-Attach).
            grafana["deploymentStrategy"] = {"type": "Recreate"}
        if props.nvidia_dashboard:
            grafana["dashboardProviders"] = {
                "gpu-dashboards.yaml": {
                    "apiVersion": 1,
                    "providers": [
                        {
                            "name": "gpu",
                            "folder": "GPU",
                            "type": "file",
                            "disableDeletion": True,
                            "options": {"path": "/var/lib/grafana/dashboards/gpu"},
                        }
                    ],
                }
            }
            grafana["dashboards"] = {
                "gpu": {"nvidia-dcgm-exporter": {**NVIDIA_DASHBOARD, "datasource": "Prometheus"}}
            }
        if props.grafana_ingress is not None:
            ingress = props.grafana_ingress
            annotations = dict(sorted(ingress.annotations.items()))
            if ingress.cluster_issuer is not None:
                # cert-manager's ingress-shim issues the certificate of the Ingress' tls entry.
                annotations["cert-manager.io/cluster-issuer"] = ingress.cluster_issuer
            grafana["ingress"] = {
                "enabled": True,
                "ingressClassName": ingress.ingress_class,
                "hosts": [ingress.host],
                "annotations": annotations,
                **(
                    {"tls": [{"secretName": "grafana-tls", "hosts": [ingress.host]}]}
                    if ingress.cluster_issuer is not None
                    else {}
                ),
            }
            # The address in Grafana's links and redirects; without it Grafana builds them from the
            # chart's server.domain (the host) with its own port 3000 and plain HTTP. Set as
            # Grafana's environment override of [server] root_url (GF_<SECTION>_<KEY>).
            scheme = "https" if ingress.tls else "http"
            grafana["env"] = {"GF_SERVER_ROOT_URL": f"{scheme}://{ingress.host}"}
        retention_policy = (
            {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"}}
            if props.delete_volumes and props.persistent
            else {}
        )
        alertmanager_spec: dict[str, Any] = {
            **placed,
            **({"storage": self._volume("2Gi")} if props.persistent else {}),
            **retention_policy,
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
        }
        prometheus_spec: dict[str, Any] = {
            **placed,
            "retention": props.retention,
            "retentionSize": _size_bytes_90(props.storage_size),
            **({"storageSpec": self._volume(props.storage_size)} if props.persistent else {}),
            **retention_policy,
            "resources": {"requests": {"cpu": size.prometheus_cpu, "memory": size.prometheus_memory}},
            # Every monitor and rule in the cluster, not only those labelled for this release.
            "serviceMonitorSelectorNilUsesHelmValues": False,
            "podMonitorSelectorNilUsesHelmValues": False,
            "ruleSelectorNilUsesHelmValues": False,
            "probeSelectorNilUsesHelmValues": False,
            "scrapeConfigSelectorNilUsesHelmValues": False,
            # The chart's default 0 is rendered (Helm 3.18 renders chart 88.5.3's
            # `if maximumStartupDurationSeconds` true for it) and the Prometheus CRD requires at
            # least 60; 900 is what the operator uses when the field is unset (CRD description).
            "maximumStartupDurationSeconds": 900,
        }
        return {
            "fullnameOverride": RELEASE,
            # The Prometheus Operator's CRDs are in the chart's crds subchart's crds/, which Helm
            # installs on the first install only. The chart's upgrade job applies the CRDs of the
            # chart's version before each install, upgrade and rollback (a pre-install,pre-upgrade,
            # pre-rollback hook running `kubectl apply --server-side --force-conflicts`;
            # kube-prometheus-stack 88.5.3 charts/crds/templates/upgrade/job.yaml), so a chart bump
            # brings the operator the schemas it expects. Its kubectl image follows the cluster's
            # version (the chart's default tag); busybox, which unpacks the CRDs, is pinned.
            "crds": {
                "upgradeJob": {
                    "enabled": True,
                    "image": {"busybox": {"tag": versions.LOCAL_PATH_HELPER_IMAGE.version.rsplit(":", 1)[1]}},
                    "resources": {"requests": {"cpu": "10m", "memory": "128Mi"}},
                    **placed,
                }
            },
            "alertmanager": {"alertmanagerSpec": alertmanager_spec},
            "prometheus": {"prometheusSpec": prometheus_spec},
            "grafana": grafana,
            "prometheusOperator": {
                **placed,
                "admissionWebhooks": {"patch": dict(placed)},
                "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
            },
            "kube-state-metrics": {**placed},
            "prometheus-node-exporter": {
                "service": {"port": NODE_EXPORTER_PORT},
                **({} if props.host_root_fs else {"hostRootFsMount": {"enabled": False}}),
            },
            # The control plane's own components are not scrapeable here: k3s runs the controller
            # manager, scheduler, proxy and etcd inside its one process with their metrics on
            # 127.0.0.1, and EKS and LKE manage them out of the cluster. Scraped anyway, each would
            # be a target that is always down and a TargetDown alert that never clears.
            "kubeControllerManager": {"enabled": False},
            "kubeScheduler": {"enabled": False},
            "kubeProxy": {"enabled": False},
            "kubeEtcd": {"enabled": False},
        }

    # --- this library's objects -------------------------------------------------------------------

    def manifests(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": f"{name}-alerts", "namespace": NAMESPACE},
                "spec": {"groups": groups},
            }
            for name, groups in rule_groups().items()
        ]
        objects += [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"dashboard-{file_name.removesuffix('.json')}",
                    "namespace": NAMESPACE,
                    # The Grafana sidecar loads every ConfigMap with this label
                    # (kube-prometheus-stack values grafana.sidecar.dashboards.label).
                    "labels": {"grafana_dashboard": "1"},
                },
                "data": {file_name: text},
            }
            for file_name, text in dashboards().items()
        ]
        objects.append(self.dcgm_service_monitor())
        objects += [dict(monitor) for monitor in self.props.service_monitors]
        if self.props.dcgm is DcgmSource.STANDALONE:
            objects += self.dcgm_exporter()
        return objects

    def dcgm_service_monitor(self) -> dict[str, Any]:
        standalone = self.props.dcgm is DcgmSource.STANDALONE
        namespace = NAMESPACE if standalone else self.props.dcgm_namespace
        app = "dcgm-exporter" if standalone else "nvidia-dcgm-exporter"
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "dcgm-exporter", "namespace": NAMESPACE},
            "spec": {
                "namespaceSelector": {"matchNames": [namespace]},
                "selector": {"matchLabels": {"app": app}},
                "endpoints": [
                    {
                        "port": "gpu-metrics",
                        "interval": "15s",
                        # DCGM's Hostname label is the node name inside Kubernetes; keep the
                        # exporter's own labels over the target's.
                        "honorLabels": True,
                        "relabelings": [
                            {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}
                        ],
                    }
                ],
            },
        }

    def dcgm_exporter(self) -> list[dict[str, Any]]:
        """NVIDIA's DCGM exporter on every GPU node, as the GPU Operator runs it
        (gpu-operator v26.7.0 assets/state-dcgm-exporter/0800_daemonset.yaml): the kubelet's
        pod-resources socket for per-pod labels, the GPU Operator's counter list, and NODE_NAME."""
        cluster = self.props.cluster
        labels = {"app": "dcgm-exporter"}
        pod_spec: dict[str, Any] = {
            **cluster.gpu_pod_spec(),
            "priorityClassName": "system-node-critical",
            "containers": [
                {
                    "name": "dcgm-exporter",
                    "image": versions.DCGM_EXPORTER_IMAGE.version,
                    "env": [
                        {"name": "DCGM_EXPORTER_LISTEN", "value": f":{DCGM_PORT}"},
                        {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                        # The series' Hostname label, which the alert rules and the GPU dashboard
                        # read as the node name: without NODE_NAME the exporter falls back to
                        # os.Hostname(), the pod's name (dcgm-exporter 4.5.3-4.8.2
                        # internal/pkg/hostname/hostname.go getLocalHostname). It also limits the
                        # exporter's pod watch to its own node (transformation/kubernetes.go).
                        {
                            "name": "NODE_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                        },
                        {
                            "name": "DCGM_EXPORTER_COLLECTORS",
                            "value": "/etc/dcgm-exporter/dcp-metrics-included.csv",
                        },
                        # Every GPU of the node, without requesting one (the nvidia runtime
                        # exposes the devices this variable names).
                        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                    ],
                    "ports": [{"name": "gpu-metrics", "containerPort": DCGM_PORT}],
                    "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}, "runAsUser": 0},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
                    "volumeMounts": [
                        {
                            "name": "pod-gpu-resources",
                            "readOnly": True,
                            "mountPath": "/var/lib/kubelet/pod-resources",
                        }
                    ],
                }
            ],
            "volumes": [
                {"name": "pod-gpu-resources", "hostPath": {"path": "/var/lib/kubelet/pod-resources"}}
            ],
        }
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "metadata": {"name": "dcgm-exporter", "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": pod_spec},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "dcgm-exporter", "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "selector": labels,
                    "ports": [{"name": "gpu-metrics", "port": DCGM_PORT, "targetPort": DCGM_PORT}],
                },
            },
        ]
