"""GpuCompute: one construct per platform, each producing a :class:`~gpu_constructs.cluster.GpuCluster`."""

from gpu_constructs.compute.k3s_host import K3sHostGpuCompute, K3sHostProps

__all__ = ["K3sHostGpuCompute", "K3sHostProps"]
