"""GpuCompute: one construct per platform, each producing a :class:`~gpu_constructs.cluster.GpuCluster`
and stating its node groups and platform facts (:mod:`gpu_constructs.compute.base`).

Each platform is one package that holds everything it knows: its compute and props, its provider
bindings, the scripts it runs and its data (``eks``: the VPC, the system cluster, Karpenter, the AWS
controllers and their IAM policies; ``k3s_host``, ``proxmox``, ``k3d`` and ``lke``; ``k3s``: what the
two k3s platforms share). The workload constructs consume only the contract
(:mod:`gpu_constructs.cluster`) and never import a platform package.

Each name is imported on first use, so an app pays only for the platforms it uses and needs only
their extras (``EksGpuCompute`` and its parts need ``gpu-constructs[aws]``; the others need none).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu_constructs.compute.base import GpuCompute, NodeGroup, PlatformFacts
    from gpu_constructs.compute.eks import EksGpuCompute, EksProps
    from gpu_constructs.compute.eks.cluster import EksSystemCluster, EksSystemClusterProps
    from gpu_constructs.compute.eks.karpenter import Karpenter, KarpenterProps
    from gpu_constructs.compute.eks.nodepools import DisruptionBudget, NodeClassSpec, NodePoolSpec
    from gpu_constructs.compute.eks.vpc import AwsVpc, AwsVpcProps
    from gpu_constructs.compute.k3d import K3dGpuCompute, K3dProps
    from gpu_constructs.compute.k3s.etcd import EtcdS3, EtcdSnapshots
    from gpu_constructs.compute.k3s_host import K3sHostGpuCompute, K3sHostProps
    from gpu_constructs.compute.lke import LkeGpuCompute, LkeProps
    from gpu_constructs.compute.proxmox import (
        GpuDevice,
        ProxmoxGpuCompute,
        ProxmoxProps,
        VmSize,
    )

_EXPORTS = {
    "AwsVpc": "eks.vpc",
    "AwsVpcProps": "eks.vpc",
    "DisruptionBudget": "eks.nodepools",
    "EksGpuCompute": "eks",
    "EksProps": "eks",
    "EksSystemCluster": "eks.cluster",
    "EksSystemClusterProps": "eks.cluster",
    "EtcdS3": "k3s.etcd",
    "EtcdSnapshots": "k3s.etcd",
    "GpuCompute": "base",
    "GpuDevice": "proxmox",
    "K3dGpuCompute": "k3d",
    "K3dProps": "k3d",
    "K3sHostGpuCompute": "k3s_host",
    "K3sHostProps": "k3s_host",
    "Karpenter": "eks.karpenter",
    "KarpenterProps": "eks.karpenter",
    "LkeGpuCompute": "lke",
    "LkeProps": "lke",
    "NodeClassSpec": "eks.nodepools",
    "NodeGroup": "base",
    "NodePoolSpec": "eks.nodepools",
    "PlatformFacts": "base",
    "ProxmoxGpuCompute": "proxmox",
    "ProxmoxProps": "proxmox",
    "VmSize": "proxmox",
}
"""Exported name -> the submodule that defines it, imported when the name is first used."""

__all__ = [
    "AwsVpc",
    "AwsVpcProps",
    "DisruptionBudget",
    "EksGpuCompute",
    "EksProps",
    "EksSystemCluster",
    "EksSystemClusterProps",
    "EtcdS3",
    "EtcdSnapshots",
    "GpuCompute",
    "GpuDevice",
    "K3dGpuCompute",
    "K3dProps",
    "K3sHostGpuCompute",
    "K3sHostProps",
    "Karpenter",
    "KarpenterProps",
    "LkeGpuCompute",
    "LkeProps",
    "NodeClassSpec",
    "NodeGroup",
    "NodePoolSpec",
    "PlatformFacts",
    "ProxmoxGpuCompute",
    "ProxmoxProps",
    "VmSize",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
