"""What a deployed stack should look like, read from the stack itself.

The stack is built in-process (as ``cdktf synth`` would) and two things are read from it: its
GpuCompute (the GPU cluster contract and the node groups with the labels and taints that compute
gives them) and its synthesized Helm releases (the charts it installs and the objects of its
bundled manifests chart). Verification then checks exactly what the stack deploys, nothing more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from gpu_constructs.cluster import GpuCluster, Taint
from gpu_constructs.errors import ConfigError

if TYPE_CHECKING:  # gpu_constructs.validate imports cdktf, which the CLI loads later
    from gpu_constructs.compute.etcd import EtcdSnapshots

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class NodeGroup:
    """Nodes that share a role, and the labels and taints the stack gives them."""

    name: str
    members: Mapping[str, str] = field(default_factory=dict)
    """Labels the platform itself puts on the group's nodes (not the ones under test); empty with
    ``names`` or for every node."""
    names: tuple[str, ...] = ()
    """Node names of the group, where the stack names its nodes."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels each node must carry."""
    taints: tuple[Taint, ...] = ()
    """Taints each node must carry."""
    min_nodes: int = 1
    max_nodes: int | None = None
    gpu: bool = False
    """A GPU group: its nodes must offer ``nvidia.com/gpu``."""

    def matches(self, name: str, labels: Mapping[str, str]) -> bool:
        if self.names:
            return name in self.names
        return all(labels.get(key) == value for key, value in self.members.items())


@dataclass(frozen=True)
class Release:
    """One helm_release of the synthesized stack."""

    name: str
    namespace: str
    chart: str
    """The chart name, or ``manifests`` for the stack's bundled chart of its own objects."""
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Expectation:
    """What verification expects of one stack's cluster."""

    stack: str
    cluster: GpuCluster
    node_groups: tuple[NodeGroup, ...]
    releases: tuple[Release, ...]
    gpu_slots_per_node: int | None
    """Allocatable ``nvidia.com/gpu`` of one GPU node (GPUs x time-slicing replicas), where the
    stack fixes the GPUs per node; None where the node type decides (read from the node's labels)."""
    kubeconfig: Path | None
    """The kubeconfig the stack writes, or None where the cloud's login reaches the cluster."""
    eks: tuple[str, str] | None = None
    """(cluster name, region) where ``aws eks get-token`` authenticates."""
    etcd_snapshots: EtcdSnapshots | None = None
    """The k3s servers' etcd snapshots, where the stack schedules them."""

    @property
    def scales_from_zero(self) -> bool:
        return any(group.gpu and group.min_nodes == 0 for group in self.node_groups)

    @property
    def time_slicing_replicas(self) -> int:
        return self.cluster.sharing.time_slicing_replicas

    def release(self, chart: str) -> Release | None:
        return next((r for r in self.releases if r.chart == chart), None)

    def manifests(self) -> Iterator[tuple[Release, Mapping[str, Any]]]:
        """The objects the stack installs through its bundled manifests chart, with their release."""
        for release in self.releases:
            for manifest in release.values.get("manifests") or ():
                yield release, manifest

    def objects(self, api_version: str, kind: str) -> Iterator[tuple[Release, Mapping[str, Any]]]:
        """The stack's own objects of ``kind``."""
        for release, manifest in self.manifests():
            if manifest.get("apiVersion") == api_version and manifest.get("kind") == kind:
                yield release, manifest


def _compute(stack: Any) -> Any:
    for child in stack.node.children:
        if isinstance(getattr(child, "cluster", None), GpuCluster):
            return child
    raise ConfigError("stack", stack.node.id, "it has no GpuCompute, so there is no cluster to verify")


def node_groups(compute: Any, synthesized: Mapping[str, Any]) -> tuple[tuple[NodeGroup, ...], int | None]:
    """The node groups a GpuCompute creates, and the GPU slots of one GPU node where fixed."""
    kind = type(compute).__name__
    cluster: GpuCluster = compute.cluster
    props = compute.props
    replicas = cluster.sharing.time_slicing_replicas
    gpu_labels = {**cluster.gpu_node_selector, **cluster.node_pool_labels}
    gpu_taints = (cluster.gpu_taint,) if cluster.gpu_taint is not None else ()
    if kind == "K3sHostGpuCompute":
        hosts = len(props.hosts)
        group = NodeGroup(
            "hosts",
            labels=gpu_labels if props.gpu_enabled else {},
            taints=gpu_taints,
            min_nodes=hosts,
            max_nodes=hosts,
            gpu=props.gpu_enabled,
        )
        return (group,), props.gpus_per_node * replicas
    if kind == "K3dGpuCompute":
        from gpu_constructs.compute.k3d import TAINTED_ROLES, role_label, role_taint

        groups = [NodeGroup("server", names=(f"k3d-{props.name}-server-0",), min_nodes=1, max_nodes=1)]
        for role in dict.fromkeys(props.agents):
            names = tuple(props.node_name(i) for i, r in enumerate(props.agents) if r == role)
            groups.append(
                NodeGroup(
                    f"{role} agents",
                    names=names,
                    labels=dict([role_label(role)]),
                    taints=(role_taint(role),) if role in TAINTED_ROLES else (),
                    min_nodes=len(names),
                    max_nodes=len(names),
                    gpu=role == "gpu",
                )
            )
        # k3d hands every GPU of the machine to the node: the count is the machine's.
        return tuple(groups), None
    if kind == "ProxmoxGpuCompute":
        cps = tuple(f"cp{i + 1}" for i in range(len(props.control_plane_ips)))
        workers = tuple(f"wk-gpu{i + 1}" for i in range(len(props.worker_ips)))
        return (
            NodeGroup(
                "control planes",
                names=cps,
                labels={
                    "node-role.kubernetes.io/control-plane": "true",
                    "node-role.kubernetes.io/etcd": "true",
                },
                min_nodes=len(cps),
                max_nodes=len(cps),
            ),
            NodeGroup(
                "gpu workers",
                names=workers,
                labels=gpu_labels,
                taints=gpu_taints,
                min_nodes=len(workers),
                max_nodes=len(workers),
                gpu=True,
            ),
        ), props.gpus_per_worker * replicas
    if kind == "LkeGpuCompute":
        # LKE's cloud controller labels each node with its Linode plan.
        plan = "node.kubernetes.io/instance-type"
        return (
            NodeGroup(
                "system pool",
                members={plan: props.system_plan},
                min_nodes=props.system_nodes,
                max_nodes=props.system_nodes,
            ),
            NodeGroup(
                "gpu pool",
                members={plan: props.gpu_plan},
                labels=gpu_labels,
                taints=gpu_taints,
                min_nodes=props.gpu_min_nodes,
                max_nodes=props.gpu_max_nodes,
                gpu=True,
            ),
        ), _lke_gpus(props.gpu_plan) * replicas
    if kind == "EksGpuCompute":
        from gpu_constructs.compute.eks import SYSTEM_TAINT

        node_group = synthesized["resource"]["aws_eks_node_group"][compute.system_nodes.friendly_unique_id]
        groups = [
            NodeGroup(
                "system node group",
                # EKS labels managed nodes with their node group's name.
                members={"eks.amazonaws.com/nodegroup": node_group["node_group_name"]},
                labels={"role": "system"},
                taints=(SYSTEM_TAINT,),
                min_nodes=props.system_node_count,
                max_nodes=props.system_node_count + 1,
            )
        ]
        for pool in props.node_pools:
            groups.append(
                NodeGroup(
                    f"nodepool {pool.name}",
                    members={"karpenter.sh/nodepool": pool.name},
                    labels=dict(pool.labels),
                    taints=tuple(pool.taints),
                    min_nodes=0,
                    gpu=pool.has_gpus,
                )
            )
        # The instance type Karpenter picks decides the GPUs; it labels the node with the count.
        return tuple(groups), None
    raise ConfigError("compute", kind, "verification knows k3s hosts, k3d, Proxmox, LKE and EKS computes")


def _lke_gpus(plan: str) -> int:
    """GPUs of an LKE GPU plan: the digit after the card in ``g2-gpu-rtx4000a2-m``."""
    match = re.match(r"g\d-gpu-[a-z0-9]+?[a-z](\d)-[a-z]+$", plan)
    return int(match.group(1)) if match else 1


def releases(synthesized: Mapping[str, Any]) -> tuple[Release, ...]:
    found = []
    for resource in synthesized.get("resource", {}).get("helm_release", {}).values():
        values: dict[str, Any] = {}
        for document in resource.get("values") or ():
            values.update(yaml.safe_load(document) or {})
        chart = resource["chart"]
        if chart.startswith("assets/manifests-chart"):
            chart = "manifests"
        found.append(Release(resource["name"], resource["namespace"], chart, values))
    return tuple(sorted(found, key=lambda r: (r.namespace, r.name)))


def kubeconfig_file(access_path: str, stack: str, root: Path = PROJECT_ROOT) -> Path:
    """The file behind the contract's kubeconfig path, which is relative to the stack's working
    directory (``cdktf.out/stacks/<stack>``)."""
    return (root / "cdktf.out" / "stacks" / stack / access_path.replace("${path.root}/", "")).resolve()


def from_stack(stack: Any) -> Expectation:
    """The expectation of a built (not yet synthesized) stack."""
    from cdktf import Testing

    compute = _compute(stack)
    cluster: GpuCluster = compute.cluster
    synthesized = json.loads(Testing.synth(stack))
    groups, slots = node_groups(compute, synthesized)
    name = stack.node.id
    kubeconfig = None
    eks = None
    if cluster.access.config_path is not None:
        kubeconfig = kubeconfig_file(cluster.access.config_path, name)
    elif cluster.access.exec_command == "aws":
        args = list(cluster.access.exec_args)
        eks = (args[args.index("--cluster-name") + 1], args[args.index("--region") + 1])
    else:
        # The stack outputs the kubeconfig; its deploy steps write it to kubeconfig/<stack>.yaml.
        kubeconfig = PROJECT_ROOT / "kubeconfig" / f"{name}.yaml"
    return Expectation(
        stack=name,
        cluster=cluster,
        node_groups=groups,
        releases=releases(synthesized),
        gpu_slots_per_node=slots,
        kubeconfig=kubeconfig,
        eks=eks,
        etcd_snapshots=getattr(getattr(compute, "props", None), "etcd_snapshots", None),
    )


def for_stack(stack: str, instances: Sequence[Any] | None = None) -> Expectation:
    """The expectation of the stack named ``stack`` among ``instances`` (main.py's INSTANCES)."""
    if instances is None:
        from gpu_constructs import provider_imports

        provider_imports.install()  # before the first engine import, as main.py does
        import main

        instances = main.INSTANCES
    from cdktf import App

    names = [instance.stack for instance in instances]
    if stack not in names:
        raise ConfigError("STACK", stack, f"use a stack from main.py: {', '.join(names)}")
    instance = instances[names.index(stack)]
    return from_stack(instance.build(App()))
