"""NvidiaDevicePlugin: the NVIDIA device plugin alone, where the nodes already have driver and toolkit.

Used where the GPU Operator would be too much (the EKS AL2023 NVIDIA AMI brings driver and toolkit).
It runs only on the cluster's GPU nodes, with their toleration and runtime class, from the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from constructs import Construct

from gpu_constructs import helm, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster

NAMESPACE = "kube-system"


@dataclass(frozen=True)
class NvidiaDevicePluginProps:
    cluster: GpuCluster
    chart_version: str = versions.NVIDIA_DEVICE_PLUGIN_CHART.version
    depends_on: Sequence[Any] = ()


class NvidiaDevicePlugin(Construct):
    """The k8s-device-plugin DaemonSet on the GPU nodes, with the contract's sharing config."""

    def __init__(self, scope: Construct, id: str, *, props: NvidiaDevicePluginProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.values = self.contract_values()
        self.release = helm.release(
            self,
            "nvidia-device-plugin",
            cluster=props.cluster,
            name="nvidia-device-plugin",
            chart="nvidia-device-plugin",
            repository=versions.REPO_NVIDIA_DEVICE_PLUGIN,
            version=props.chart_version,
            namespace=NAMESPACE,
            values=self.values,
            depends_on=props.depends_on,
            # The DaemonSet has no pods until a GPU node exists (scale to zero): nothing to wait for.
            wait=False,
        )

    def contract_values(self) -> dict[str, Any]:
        cluster = self.props.cluster
        sharing = cluster.sharing
        config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": sharing.mig_strategy.value}}
        if sharing.time_slicing_replicas > 1:
            config["sharing"] = {
                "timeSlicing": {
                    "resources": [{"name": GPU_RESOURCE, "replicas": sharing.time_slicing_replicas}]
                }
            }
        return {
            "nodeSelector": dict(sorted({**cluster.gpu_node_selector, **cluster.node_pool_labels}.items())),
            "tolerations": [cluster.gpu_toleration],
            # The chart's default affinity wants NFD labels the nodes do not carry; the node
            # selector above places it instead (null removes the chart's default in Helm).
            "affinity": None,
            "runtimeClassName": cluster.runtime_class,
            "config": {"map": {"default": yaml.safe_dump(config, sort_keys=True)}, "default": "default"},
        }
