"""What a deployed stack should look like, read from the stack itself.

The stack is built in-process (as ``cdktf synth`` would) and two things are read from it: its
GpuCompute (the GPU cluster contract and the node groups with the labels and taints that compute
gives them, through the :class:`~gpu_constructs.compute.base.GpuCompute` interface, so any platform
that implements it is verified alike) and its synthesized Helm releases (the charts it installs
and the objects of its bundled manifests chart). Verification then checks exactly what the stack
deploys, nothing more.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpu_constructs.cluster import GpuCluster
from gpu_constructs.compute.base import GpuCompute, NodeGroup, compute_of, gpu_slots_per_node
from gpu_constructs.errors import ConfigError


def app_root() -> Path:
    """The app's directory, where ``make verify`` runs and cdktf writes ``cdktf.out``: the current
    directory (this repository's root for main.py; another app's own directory), never the
    installed package's."""
    return Path.cwd()


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
    etcd_snapshots: str | None = None
    """Where the servers' etcd is snapshotted (``node`` or ``s3``), where the stack schedules it
    (:attr:`~gpu_constructs.compute.base.PlatformFacts.etcd_snapshots`)."""

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


def node_groups(compute: GpuCompute) -> tuple[tuple[NodeGroup, ...], int | None]:
    """The node groups a GpuCompute creates, and the GPU slots of one GPU node where fixed."""
    return compute.node_groups, gpu_slots_per_node(compute)


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


def kubeconfig_file(access_path: str, stack: str, root: Path | None = None) -> Path:
    """The file behind the contract's kubeconfig path, which is relative to the stack's working
    directory (``cdktf.out/stacks/<stack>``)."""
    base = app_root() if root is None else root
    return (base / "cdktf.out" / "stacks" / stack / access_path.replace("${path.root}/", "")).resolve()


def from_stack(stack: Any) -> Expectation:
    """The expectation of a built (not yet synthesized) stack."""
    from cdktf import Testing

    compute = compute_of(stack)
    cluster = compute.cluster
    synthesized = json.loads(Testing.synth(stack))
    groups, slots = node_groups(compute)
    name = stack.node.id
    kubeconfig = None
    eks = None
    if cluster.access.config_path is not None:
        kubeconfig = kubeconfig_file(cluster.access.config_path, name)
    elif cluster.access.exec_command == "aws":
        args = list(cluster.access.exec_args)
        eks = (args[args.index("--cluster-name") + 1], args[args.index("--region") + 1])
    else:
        # The providers derive their access at every run; kubectl's copy is kubeconfig/<stack>.yaml,
        # written by a step of the stack (single-node, k3d-poc) or `make kubeconfig` (lke).
        kubeconfig = app_root() / "kubeconfig" / f"{name}.yaml"
    return Expectation(
        stack=name,
        cluster=cluster,
        node_groups=groups,
        releases=releases(synthesized),
        gpu_slots_per_node=slots,
        kubeconfig=kubeconfig,
        eks=eks,
        etcd_snapshots=compute.platform.etcd_snapshots,
    )


def for_stack(stack: str, instances: Sequence[Any] | None = None, app: str = "main") -> Expectation:
    """The expectation of the stack named ``stack`` among ``instances``, by default the
    ``INSTANCES`` of the module ``app`` (this repository's main.py; another app names its own): each
    an object with a ``stack`` name and a ``build(app)`` that returns the built stack."""
    if instances is None:
        from gpu_constructs import provider_imports

        provider_imports.install()  # before the first engine import, as main.py does
        try:
            module = importlib.import_module(app)
        except ModuleNotFoundError as error:
            if error.name != app:
                raise
            raise ConfigError("--app", app, "name the module of your app that lists INSTANCES") from None
        instances = getattr(module, "INSTANCES", None)
        if instances is None:
            raise ConfigError("--app", app, "the module has no INSTANCES: list your stacks' instances there")
    from cdktf import App

    names = [instance.stack for instance in instances]
    if stack not in names:
        raise ConfigError("STACK", stack, f"use a stack from {app}: {', '.join(names)}")
    instance = instances[names.index(stack)]
    return from_stack(instance.build(App()))
