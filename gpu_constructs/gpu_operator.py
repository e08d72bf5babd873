"""GpuOperator: the NVIDIA GPU Operator, configured from the GPU cluster contract.

Who owns the driver and the container toolkit comes from the contract: where the host bootstrap or the
machine image installed them, the operator leaves them alone instead of fighting them; where the
operator installs the toolkit on k3s, it is pointed at k3s' containerd config and socket.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from constructs import Construct

from gpu_constructs import helm, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster, Manager, MigStrategy
from gpu_constructs.errors import ConfigError

NAMESPACE = "gpu-operator"
SHARING_CONFIG = "gpu-sharing"
MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_CAPABLE_LABEL = "nvidia.com/mig.capable"
MIG_LABELER = "mig-config-labeler"


@dataclass(frozen=True)
class GpuOperatorProps:
    cluster: GpuCluster
    values: helm.ValuesLayers | None = None
    """Values files (``helm-values/gpu-operator/``); None uses only what the contract sets."""
    dcgm_exporter: bool = True
    """Export GPU metrics with DCGM."""
    service_monitor: bool = False
    """Create a Prometheus Operator ServiceMonitor for the exporter (needs the Prometheus CRDs)."""
    node_feature_discovery: bool = True
    """Deploy NFD, which labels the GPU nodes the operator's daemonsets select."""
    mig_config: str = "all-balanced"
    """With a MIG strategy: the mig-parted configuration MIG manager applies to every MIG-capable GPU
    node (the operator's own ConfigMap names all-disabled, all-enabled, all-balanced, all-1g.10gb, ...)."""
    chart_version: str = versions.GPU_OPERATOR.version
    depends_on: Sequence[Any] = field(default=())

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", self.mig_config):
            raise ConfigError(
                "mig_config", self.mig_config, "use a MIG manager configuration name such as all-balanced"
            )


class GpuOperator(Construct):
    """NVIDIA GPU Operator: device plugin, GFD, NFD, DCGM exporter, MIG manager, sharing config."""

    namespace = NAMESPACE

    def __init__(self, scope: Construct, id: str, *, props: GpuOperatorProps) -> None:
        super().__init__(scope, id)
        self.props = props
        layered = props.values.load("gpu-operator") if props.values else {}
        self.values = helm.deep_merge(layered, self.contract_values())
        self.release = helm.release(
            self,
            "gpu-operator",
            cluster=props.cluster,
            name="gpu-operator",
            chart="gpu-operator",
            repository=versions.REPO_NVIDIA,
            version=props.chart_version,
            namespace=NAMESPACE,
            values=self.values,
            depends_on=props.depends_on,
            timeout=900,
        )
        # MIG manager partitions a GPU only as the node's nvidia.com/mig.config label says; the
        # operator itself only ever sets all-disabled there (gpu-operator v26.7.0
        # controllers/nodelabeling_controller.go, migManager.config.default), so nothing would
        # partition the GPUs. A CronJob labels every MIG-capable node (labelled by GFD) with the
        # stack's configuration, nodes that join later included.
        self.mig_labeler = None
        if props.cluster.sharing.mig_strategy is not MigStrategy.NONE:
            self.mig_labeler = helm.manifests_release(
                self,
                "mig-config",
                cluster=props.cluster,
                name=MIG_LABELER,
                namespace=NAMESPACE,
                manifests=self.mig_labeler_manifests(),
                depends_on=[self.release],
            )

    def contract_values(self) -> dict[str, Any]:
        """The values the cluster contract dictates; these win over any values file."""
        cluster = self.props.cluster
        toolkit: dict[str, Any] = {"enabled": cluster.toolkit is Manager.OPERATOR}
        if cluster.toolkit is Manager.OPERATOR and cluster.containerd is not None:
            toolkit["env"] = [
                {"name": "CONTAINERD_CONFIG", "value": cluster.containerd.config},
                {"name": "CONTAINERD_SOCKET", "value": cluster.containerd.socket},
                {"name": "CONTAINERD_RUNTIME_CLASS", "value": cluster.runtime_class or "nvidia"},
            ]
            if cluster.containerd.runtime_config_source is not None:
                toolkit["env"].append(
                    {"name": "RUNTIME_CONFIG_SOURCE", "value": cluster.containerd.runtime_config_source}
                )
        driver: dict[str, Any] = {"enabled": cluster.driver is Manager.OPERATOR}
        if cluster.driver is Manager.OPERATOR:
            driver["upgradePolicy"] = self.driver_upgrade_policy()
        values: dict[str, Any] = {
            "driver": driver,
            "toolkit": toolkit,
            "nfd": {"enabled": self.props.node_feature_discovery},
            "dcgmExporter": {
                "enabled": self.props.dcgm_exporter,
                "serviceMonitor": {"enabled": self.props.dcgm_exporter and self.props.service_monitor},
            },
            "daemonsets": {"tolerations": [cluster.gpu_toleration]},
            "devicePlugin": {"enabled": True, "config": self.sharing_config()},
        }
        # Helm installs the chart's crds/ (ClusterPolicy, NVIDIADriver, GPUCluster) once and never
        # upgrades them; the chart's pre-upgrade hook applies the CRDs of the new version, and NFD's
        # with nfd.enabled, from the operator image (gpu-operator v26.7.0
        # templates/upgrade_crd.yaml, `manage-crds apply`). On by default; set so that no values
        # file turns it off (tests/lifecycle/test_crds.py).
        values["operator"] = {"upgradeCRD": True}
        if cluster.runtime_class is not None:
            values["operator"]["runtimeClass"] = cluster.runtime_class
        # Always set: the chart's default is mig.strategy "single" and migManager on (values.yaml),
        # so leaving them out with no MIG would still tell GFD and the device plugin to expose MIG
        # devices. The ClusterPolicy CRD accepts none, single and mixed.
        mig_strategy = cluster.sharing.mig_strategy
        values["mig"] = {"strategy": mig_strategy.value}
        values["migManager"] = {"enabled": mig_strategy is not MigStrategy.NONE}
        return values

    @staticmethod
    def driver_upgrade_policy() -> dict[str, Any]:
        """How the operator replaces the driver on a node (a new driver version, a chart bump): one
        node at a time (maxParallelUpgrades 1, the chart's default), cordoned, its GPU pods (those
        requesting nvidia.com/gpu or nvidia.com/mig-*) evicted, the driver pod replaced, uncordoned.

        The eviction is kubectl's drain helper limited to the GPU pods (gpu-operator v26.7.0
        vendor/github.com/NVIDIA/k8s-operator-libs/pkg/upgrade/pod_manager.go SchedulePodEviction),
        and with the chart's gpuPodDeletion (force and deleteEmptyDir false) it refuses a pod no
        controller owns, such as a JupyterHub server (KubeSpawner creates bare pods), and one with an
        emptyDir (k8s.io/kubectl pkg/drain/filters.go unreplicatedFilter, localStorageFilter). The
        node is then left cordoned in upgrade-failed with the old driver until someone deletes the
        pods (pkg/upgrade/common_manager.go ProcessUpgradeFailedNodes). Those pods lose their GPU at
        the driver reload anyway, so they are deleted too, within the chart's 300 s bound. Evictions
        honour PodDisruptionBudgets, and no setting bypasses them: a budget that allows no
        disruption of a GPU pod still fails the node's upgrade after that bound."""
        return {"gpuPodDeletion": {"force": True, "deleteEmptyDir": True, "timeoutSeconds": 300}}

    def sharing_config(self) -> dict[str, Any]:
        """The device plugin config: MIG strategy and time-slicing replicas, as one named profile,
        in a ConfigMap named after its content.

        Neither the device plugin nor the config-manager beside it reads the file again when the
        ConfigMap changes: the plugin restarts on SIGHUP, which config-manager sends only when the
        node's nvidia.com/device-plugin.config label changes (k8s-device-plugin v0.20.0
        cmd/config-manager/main.go), and the operator watches no ConfigMap (gpu-operator v26.7.0
        controllers/clusterpolicy_controller.go SetupWithManager). A new name changes the
        ClusterPolicy, so the operator rewrites the ConfigMap volume of its device plugin and GFD
        DaemonSets (controllers/object_controls.go handleDevicePluginConfig) and their pods are
        replaced with the new config; Helm deletes the old ConfigMap."""
        sharing = self.props.cluster.sharing
        config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": sharing.mig_strategy.value}}
        if sharing.time_slicing_replicas > 1:
            config["sharing"] = {
                "timeSlicing": {
                    "resources": [{"name": GPU_RESOURCE, "replicas": sharing.time_slicing_replicas}]
                }
            }
        data = {"default": yaml.safe_dump(config, sort_keys=True)}
        return {
            "create": True,
            "name": f"{SHARING_CONFIG}-{helm.content_digest(data)}",
            "default": "default",
            "data": data,
        }

    def mig_labeler_manifests(self) -> list[dict[str, Any]]:
        """ServiceAccount, ClusterRole and binding (nodes: list, patch) and the labelling CronJob."""
        meta = {"name": MIG_LABELER, "labels": {"app.kubernetes.io/name": MIG_LABELER}}
        command = [
            "kubectl",
            "label",
            "nodes",
            "--selector",
            f"{MIG_CAPABLE_LABEL}=true",
            f"{MIG_CONFIG_LABEL}={self.props.mig_config}",
            "--overwrite",
        ]
        container = {
            "name": "label",
            "image": versions.KUBECTL_IMAGE.version,
            "command": command,
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "capabilities": {"drop": ["ALL"]},
            },
        }
        pod = {
            "serviceAccountName": MIG_LABELER,
            "restartPolicy": "OnFailure",
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "tolerations": [self.props.cluster.gpu_toleration],
            "containers": [container],
        }
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {**meta, "namespace": NAMESPACE}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta,
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": meta,
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": MIG_LABELER,
                },
                "subjects": [{"kind": "ServiceAccount", "name": MIG_LABELER, "namespace": NAMESPACE}],
            },
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {**meta, "namespace": NAMESPACE},
                "spec": {
                    "schedule": "*/5 * * * *",
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 1,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"spec": {"backoffLimit": 2, "template": {"spec": pod}}},
                },
            },
        ]
