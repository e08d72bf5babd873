"""The GpuCompute interface: what every platform's compute says about the cluster it builds.

A compute hands out three things, all read from its own props at synth and none of them needing a
live cluster:

- :attr:`GpuCompute.cluster`, the :class:`~gpu_constructs.cluster.GpuCluster` contract: how to reach
  the cluster and how a pod lands on one of its GPUs;
- :attr:`GpuCompute.node_groups`, a :class:`NodeGroup` for each set of nodes that share a role: their
  labels and taints, instance shape, GPUs, size and whether they are the system group;
- :attr:`GpuCompute.platform`, the :class:`PlatformFacts` of the cluster before any release of the
  stack: its Kubernetes version, the storage and ingress classes it comes with, and who installs
  the NVIDIA driver, container toolkit and device plugin.

Verification (``make verify``) and the stack tests read these instead of knowing each platform, so a
new platform is one compute that implements this interface.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gpu_constructs.cluster import GpuCluster, Manager, Taint
from gpu_constructs.errors import ConfigError


@dataclass(frozen=True)
class NodeGroup:
    """Nodes that share a role, and what the compute gives them."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels each node carries: the ones the compute sets, and the ones the platform sets that the
    stack relies on (k3s' control-plane role labels)."""
    taints: tuple[Taint, ...] = ()
    """Taints each node carries."""
    members: Mapping[str, str] = field(default_factory=dict)
    """Labels the platform itself puts on the group's nodes and by which a node is known to belong
    to the group (LKE's plan label, EKS's node group name, Karpenter's NodePool); empty where
    ``names`` names the nodes, or where the group is every node."""
    names: tuple[str, ...] = ()
    """Node names of the group, where the compute names its nodes."""
    label_choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Labels whose value is one of several, decided when a node is created (the instance family,
    size and capacity type Karpenter picks from a NodePool's requirements)."""
    instance_types: tuple[str, ...] = ()
    """The instance shape: EC2 instance types, a Linode plan, a VM size (``16 vCPU, 128 GB``);
    empty where the machines exist already (k3s hosts, k3d containers)."""
    gpu: bool = False
    """A GPU group: its nodes offer ``nvidia.com/gpu``."""
    gpus_per_node: int | None = None
    """Physical GPUs of one node where the compute fixes it (time-slicing not counted), else None
    (the instance type Karpenter picks, every GPU of the machine on k3d). 0 on a group without GPUs."""
    gpu_model: str | None = None
    """The GPU model where the compute knows it (a Linode GPU plan's, an EC2 family's)."""
    min_nodes: int = 1
    max_nodes: int | None = None
    """The most nodes the group grows to, or None without a bound the compute sets."""
    scales_to_zero: bool = False
    """The group runs no node at rest: its nodes come and go with the pods that need them."""
    system: bool = False
    """The group that runs the cluster's own services (system node group, system pool, infra
    agents) rather than the stack's workloads."""
    control_plane_only: bool = False
    """The nodes run only the control plane: a pod of the stack that could land there is a mistake."""

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        """Whether the node called ``name`` with ``labels`` belongs to this group."""
        if self.names:
            return name in self.names
        return all(labels.get(key) == value for key, value in self.members.items())


@dataclass(frozen=True)
class PlatformFacts:
    """What the cluster has before any release of the stack, and who brings the NVIDIA stack."""

    kubernetes_version: str
    """The version as the compute asks for it: a k3s release (``v1.35.5+k3s1``), an EKS or LKE
    minor (``1.35``), an LKE Enterprise release (``v1.31.8+lke5``)."""
    driver: Manager
    toolkit: Manager
    device_plugin: Manager
    storage_classes: frozenset[str] = frozenset()
    """StorageClasses the platform creates itself and can provision volumes for."""
    default_storage_class: str | None = None
    """The one of them marked default, or None where a claim without a class stays Pending until a
    release marks one."""
    ingress_classes: frozenset[str] = frozenset()
    """IngressClasses the platform creates itself."""
    etcd_snapshots: str | None = None
    """Where the cluster's embedded etcd is snapshotted on a schedule: ``"node"`` (on each server),
    ``"s3"`` (on each server and in an object store), or None where the stack schedules none (or the
    provider runs etcd)."""

    def __post_init__(self) -> None:
        if self.etcd_snapshots not in (None, "node", "s3"):
            raise ConfigError("etcd_snapshots", self.etcd_snapshots, "use 'node', 's3' or None")
        if self.default_storage_class is not None and self.default_storage_class not in self.storage_classes:
            raise ConfigError(
                "default_storage_class",
                self.default_storage_class,
                f"name one of the platform's storage classes ({', '.join(sorted(self.storage_classes))})",
            )

    @property
    def kubernetes_minor(self) -> str:
        """The minor version (``1.35``) of :attr:`kubernetes_version`."""
        match = re.match(r"v?(1\.\d+)", self.kubernetes_version)
        if match is None:
            raise ConfigError("kubernetes_version", self.kubernetes_version, "give a version such as 1.35")
        return match.group(1)


K3S_LOCAL_PATH = "local-path"
"""The StorageClass of k3s' bundled local-path provisioner, marked default (docs.k3s.io, "Volumes and
Storage"); k3s deploys it unless its ``local-storage`` component is disabled."""
K3S_TRAEFIK = "traefik"
"""The IngressClass of k3s' bundled Traefik (docs.k3s.io, "Networking Services"), unless disabled."""


def k3s_platform(
    k3s_version: str,
    disabled: tuple[str, ...] | list[str],
    *,
    driver: Manager,
    toolkit: Manager,
    etcd_snapshots: str | None = None,
) -> PlatformFacts:
    """The facts of a k3s cluster whose servers run with ``--disable`` of ``disabled``."""
    local_path = "local-storage" not in disabled
    return PlatformFacts(
        kubernetes_version=k3s_version,
        driver=driver,
        toolkit=toolkit,
        device_plugin=Manager.STACK,
        storage_classes=frozenset({K3S_LOCAL_PATH}) if local_path else frozenset(),
        default_storage_class=K3S_LOCAL_PATH if local_path else None,
        ingress_classes=frozenset() if "traefik" in disabled else frozenset({K3S_TRAEFIK}),
        etcd_snapshots=etcd_snapshots,
    )


@runtime_checkable
class GpuCompute(Protocol):
    """A platform's compute: the cluster it builds, its node groups and its platform facts."""

    @property
    def cluster(self) -> GpuCluster: ...

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]: ...

    @property
    def platform(self) -> PlatformFacts: ...


def compute_of(stack: Any) -> GpuCompute:
    """The GpuCompute among a stack's children."""
    for child in stack.node.children:
        if isinstance(child, GpuCompute) and isinstance(child.cluster, GpuCluster):
            return child
    raise ConfigError("stack", stack.node.id, "it has no GpuCompute, so there is no cluster to verify")


def gpu_slots_per_node(compute: GpuCompute) -> int | None:
    """Allocatable ``nvidia.com/gpu`` of one GPU node (GPUs x time-slicing replicas) where every GPU
    group fixes its GPUs per node alike, else None (the node type decides)."""
    counts = {group.gpus_per_node for group in compute.node_groups if group.gpu}
    if len(counts) != 1 or None in counts:
        return None
    (count,) = counts
    assert count is not None
    return count * compute.cluster.sharing.time_slicing_replicas
