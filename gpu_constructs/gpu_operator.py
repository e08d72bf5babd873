"""GpuOperator: the NVIDIA GPU Operator, configured from the GPU cluster contract.

Who owns the driver and the container toolkit comes from the contract: where the host bootstrap or the
machine image installed them, the operator leaves them alone instead of fighting them; where the
operator installs the toolkit on k3s, it is pointed at k3s' containerd config and socket.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from constructs import Construct

from gpu_constructs import helm, versions
from gpu_constructs.cluster import GpuCluster, Manager, MigStrategy

NAMESPACE = "gpu-operator"
SHARING_CONFIG = "gpu-sharing"


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
    chart_version: str = versions.GPU_OPERATOR.version
    depends_on: Sequence[Any] = field(default=())


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
        values: dict[str, Any] = {
            "driver": {"enabled": cluster.driver is Manager.OPERATOR},
            "toolkit": toolkit,
            "nfd": {"enabled": self.props.node_feature_discovery},
            "dcgmExporter": {
                "enabled": self.props.dcgm_exporter,
                "serviceMonitor": {"enabled": self.props.dcgm_exporter and self.props.service_monitor},
            },
            "daemonsets": {"tolerations": [cluster.gpu_toleration]},
            "devicePlugin": {"enabled": True, "config": self.sharing_config()},
        }
        if cluster.runtime_class is not None:
            values["operator"] = {"runtimeClass": cluster.runtime_class}
        if cluster.sharing.mig_strategy is not MigStrategy.NONE:
            values["mig"] = {"strategy": cluster.sharing.mig_strategy.value}
            values["migManager"] = {"enabled": True}
        return values

    def sharing_config(self) -> dict[str, Any]:
        """The device plugin config: MIG strategy and time-slicing replicas, as one named profile."""
        sharing = self.props.cluster.sharing
        config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": sharing.mig_strategy.value}}
        if sharing.time_slicing_replicas > 1:
            config["sharing"] = {
                "timeSlicing": {
                    "resources": [{"name": "nvidia.com/gpu", "replicas": sharing.time_slicing_replicas}]
                }
            }
        return {
            "create": True,
            "name": SHARING_CONFIG,
            "default": "default",
            "data": {"default": yaml.safe_dump(config, sort_keys=True)},
        }
