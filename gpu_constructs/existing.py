"""A GPU cluster contract for a cluster that exists already: reached through a kubeconfig context,
its GPU nodes described by the facts the platform gives them.

No compute creates such a cluster, so its contract has no ``ready`` or ``identity`` resources:
releases into it depend on nothing of the stack's and are never replaced with the cluster. The
facts below are each platform's defaults for GPU nodes; every one can be overridden.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpu_constructs.cluster import (
    GPU_LABEL,
    GPU_TAINT,
    K3S_CONTAINERD,
    ContainerdPaths,
    GpuCluster,
    GpuSharing,
    KubeAccess,
    Manager,
    Taint,
)
from gpu_constructs.errors import ConfigError


@dataclass(frozen=True)
class PlatformDefaults:
    """What a platform gives its GPU nodes, where it fixes it."""

    gpu_node_selector: Mapping[str, str] | None
    """Labels the platform puts on every GPU node, or None where it puts none the stack can rely on
    (the selector must then be given)."""
    gpu_taint: Taint | None
    """The taint GPU nodes carry by the platform or its documented convention, or None."""
    driver: Manager | None
    """Who installs the NVIDIA driver, or None where nothing can be assumed (it must be given)."""
    toolkit: Manager | None
    runtime_class: str | None = None
    containerd: ContainerdPaths | None = None
    selector_hint: str = ""
    """An example selector for the error where the platform has none."""


AKS_GPU_TAINT = Taint("sku", "gpu", "NoSchedule")
"""The taint AKS' GPU guide puts on a GPU node pool (``az aks nodepool add --node-taints
sku=gpu:NoSchedule``, learn.microsoft.com/azure/aks/use-nvidia-gpu); AKS does not add it itself."""
GKE_GPU_TAINT = Taint(GPU_LABEL[0], "present", "NoSchedule")
"""The taint GKE puts on the nodes of a GPU node pool in a cluster that has non-GPU pools
(cloud.google.com/kubernetes-engine/docs/how-to/gpus)."""
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
"""The label GKE puts on GPU nodes, valued with the accelerator type (``nvidia-l4``)."""
AKS_ACCELERATOR_LABEL = "kubernetes.azure.com/accelerator"
"""The label AKS puts on GPU nodes, ``nvidia`` (learn.microsoft.com/azure/aks/use-labels)."""

PLATFORMS: dict[str, PlatformDefaults] = {
    # The EKS-optimized AL2023 NVIDIA AMI ships the driver and the NVIDIA container toolkit, which it
    # sets as containerd's default runtime (awslabs/amazon-eks-ami, templates/al2023: the nvidia
    # accelerator variant). EKS labels and taints no GPU node itself: a managed node group carries
    # its own eks.amazonaws.com/nodegroup label, and taints are what the node group is given.
    "eks": PlatformDefaults(
        gpu_node_selector=None,
        gpu_taint=None,
        driver=Manager.IMAGE,
        toolkit=Manager.IMAGE,
        selector_hint="{'eks.amazonaws.com/nodegroup': '<the GPU node group>'}",
    ),
    # GKE installs the driver (node pool gpu-driver-version=default or latest) and configures
    # containerd for it; it labels GPU nodes with the accelerator type and taints them
    # nvidia.com/gpu=present:NoSchedule (cloud.google.com/kubernetes-engine/docs/how-to/gpus).
    "gke": PlatformDefaults(
        gpu_node_selector=None,
        gpu_taint=GKE_GPU_TAINT,
        driver=Manager.IMAGE,
        toolkit=Manager.IMAGE,
        selector_hint=f"{{'{GKE_ACCELERATOR_LABEL}': 'nvidia-l4'}} or accelerator='nvidia-l4'",
    ),
    # AKS installs the driver on GPU node pools unless created with --gpu-driver none, and its GPU
    # node images bring the NVIDIA container toolkit (NVIDIA's GPU Operator guide for AKS); it labels
    # GPU nodes kubernetes.azure.com/accelerator=nvidia. The sku=gpu taint is its guide's convention.
    "aks": PlatformDefaults(
        gpu_node_selector={AKS_ACCELERATOR_LABEL: "nvidia"},
        gpu_taint=AKS_GPU_TAINT,
        driver=Manager.IMAGE,
        toolkit=Manager.IMAGE,
    ),
    # k3s puts an nvidia runtime into its containerd config when it finds the NVIDIA container
    # runtime on the host at start, and ships the nvidia RuntimeClass; it does not make it the
    # default, so GPU pods name it (docs.k3s.io, "Advanced Options": NVIDIA Container Runtime
    # Support; k3s-io/k3s#8751). The driver and toolkit are the host's; the nodes carry the label
    # the library's own k3s computes give them (kubectl label node <gpu node> nvidia.com/gpu=true).
    "k3s": PlatformDefaults(
        gpu_node_selector=dict([GPU_LABEL]),
        gpu_taint=None,
        driver=Manager.HOST,
        toolkit=Manager.HOST,
        runtime_class="nvidia",
        containerd=K3S_CONTAINERD,
    ),
    "generic": PlatformDefaults(
        gpu_node_selector=None,
        gpu_taint=None,
        driver=None,
        toolkit=None,
        selector_hint="the labels your GPU nodes carry, e.g. {'nvidia.com/gpu.present': 'true'}",
    ),
}
"""The GPU node facts of each platform ``existing_cluster`` knows."""

_UNSET: Any = object()
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}")
"""A label key: an optional DNS-subdomain prefix and ``/``, then a name (Kubernetes' label syntax,
kubernetes.io/docs/concepts/overview/working-with-objects/labels)."""
_LABEL_VALUE = re.compile(f"({_LABEL_NAME})?")


def existing_cluster(
    *,
    name: str,
    kubeconfig: str,
    context: str | None = None,
    platform: str = "generic",
    gpu_node_selector: Mapping[str, str] | None = None,
    accelerator: str | None = None,
    gpu_taint: Taint | None = _UNSET,
    gpu_toleration_taint: Taint | None = None,
    runtime_class: str | None = _UNSET,
    driver: Manager | None = None,
    toolkit: Manager | None = None,
    containerd: ContainerdPaths | None = _UNSET,
    sharing: GpuSharing | None = None,
    gpus_per_node: int | None = None,
    gpu_nodes: int | None = None,
) -> GpuCluster:
    """The contract of an existing cluster on ``platform`` (eks, gke, aks, k3s or generic).

    ``kubeconfig`` is read by the providers at plan and apply: an absolute path, one under ``~``,
    or a reference (a variable); ``context`` is the kubeconfig context (its current one if None).
    ``accelerator`` (GKE) selects nodes of that accelerator type. ``gpus_per_node`` and
    ``gpu_nodes`` (physical GPUs) let synth refuse a request the GPU nodes can never hold."""
    from gpu_constructs import validate

    validate.one_of("platform", platform, PLATFORMS)
    defaults = PLATFORMS[platform]
    validate.k8s_name("name", name)
    if not isinstance(kubeconfig, str) or not kubeconfig:
        raise ConfigError("kubeconfig", kubeconfig, "give the kubeconfig file's path, e.g. '~/.kube/config'")
    if not validate.is_reference(kubeconfig) and not kubeconfig.startswith(("/", "~")):
        # The providers run in cdktf.out/stacks/<stack>, where a relative path would not find it.
        raise ConfigError(
            "kubeconfig",
            kubeconfig,
            "give an absolute path or one under ~: a relative path is read from cdktf.out/stacks/<stack>",
        )
    if context is not None and (not isinstance(context, str) or not context.strip()):
        raise ConfigError("context", context, "name a context of the kubeconfig, or None for its current one")

    if accelerator is not None:
        if platform != "gke":
            raise ConfigError(
                "accelerator", accelerator, f"it selects GKE nodes; on {platform} give gpu_node_selector"
            )
        if gpu_node_selector is not None:
            raise ConfigError("accelerator", accelerator, "give accelerator or gpu_node_selector, not both")
        validate.k8s_name("accelerator", accelerator)
        gpu_node_selector = {GKE_ACCELERATOR_LABEL: accelerator}
    selector = gpu_node_selector if gpu_node_selector is not None else defaults.gpu_node_selector
    if not selector:
        raise ConfigError(
            "gpu_node_selector",
            gpu_node_selector,
            f"{platform} puts no label on GPU nodes that GPU pods can select on; give "
            f"gpu_node_selector={defaults.selector_hint}",
        )
    for key, value in selector.items():
        if not isinstance(key, str) or not isinstance(value, str) or not _LABEL_KEY.fullmatch(key):
            raise ConfigError(
                "gpu_node_selector",
                dict(selector),
                "give label keys as '[<DNS prefix>/]<name>', e.g. {'nvidia.com/gpu': 'true'}",
            )
        if not _LABEL_VALUE.fullmatch(value):
            raise ConfigError(
                f"gpu_node_selector[{key!r}]",
                value,
                "a label value is at most 63 letters, digits, '-', '_' or '.', starting and ending "
                "with a letter or digit",
            )

    chosen_driver = driver if driver is not None else defaults.driver
    chosen_toolkit = toolkit if toolkit is not None else defaults.toolkit
    for field, manager in (("driver", chosen_driver), ("toolkit", chosen_toolkit)):
        if manager is None:
            raise ConfigError(
                field,
                manager,
                f"a {platform} cluster says nothing about who installs the NVIDIA {field}; give "
                f"{field}=Manager.HOST (the nodes have it), Manager.IMAGE (their image brings it) or "
                "Manager.OPERATOR (the GPU Operator installs it)",
            )
        if not isinstance(manager, Manager):
            raise ConfigError(field, manager, "give a Manager: HOST, IMAGE or OPERATOR")
        if manager is Manager.STACK:
            raise ConfigError(field, manager, "STACK is for the device plugin; give HOST, IMAGE or OPERATOR")

    assert chosen_driver is not None and chosen_toolkit is not None
    taint = defaults.gpu_taint if gpu_taint is _UNSET else gpu_taint
    if taint is not None and not isinstance(taint, Taint):
        raise ConfigError("gpu_taint", taint, "give a Taint('key', 'value', 'NoSchedule') or None")
    toleration = gpu_toleration_taint or taint or GPU_TAINT
    if taint is not None and toleration != taint:
        raise ConfigError(
            "gpu_toleration_taint",
            str(toleration),
            f"GPU pods must tolerate the nodes' taint {taint}; leave it unset",
        )
    sharing = sharing or GpuSharing()
    capacity = None
    for field, count in (("gpus_per_node", gpus_per_node), ("gpu_nodes", gpu_nodes)):
        if count is not None:
            validate.int_range(field, count, 1, 1000)
    if gpus_per_node is not None and gpu_nodes is not None:
        capacity = gpus_per_node * gpu_nodes * sharing.time_slicing_replicas
    return GpuCluster(
        name=name,
        access=KubeAccess(config_path=kubeconfig, config_context=context),
        gpu_node_selector=dict(sorted(selector.items())),
        gpu_taint=taint,
        gpu_toleration_taint=toleration,
        runtime_class=defaults.runtime_class if runtime_class is _UNSET else runtime_class,
        driver=chosen_driver,
        toolkit=chosen_toolkit,
        containerd=defaults.containerd if containerd is _UNSET else containerd,
        sharing=sharing,
        gpu_capacity=capacity,
        gpus_per_node=None if gpus_per_node is None else gpus_per_node * sharing.time_slicing_replicas,
    )
