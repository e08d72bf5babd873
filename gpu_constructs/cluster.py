"""The GPU cluster contract: what every GpuCompute produces and every workload construct consumes.

A :class:`GpuCluster` says how to reach a cluster and how a pod lands on one of its GPUs. GpuOperator
and AppChart take it instead of loose strings, so a GPU workload always carries the toleration,
node selector, runtime class and resource request that match the cluster it runs on.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the engine is imported where it is used: importing the contract starts no jsii kernel
    from cdktf import TerraformResource

from gpu_constructs.errors import ConfigError

GPU_RESOURCE = "nvidia.com/gpu"


class Manager(enum.Enum):
    """Who installs a piece of the NVIDIA stack on the GPU nodes."""

    HOST = "host"
    """The node bootstrap installs it (the k3s host scripts)."""
    IMAGE = "image"
    """The machine image brings it (EKS AL2023 NVIDIA AMI, LKE GPU nodes)."""
    OPERATOR = "operator"
    """The GPU Operator installs it as a container."""
    STACK = "stack"
    """A release of the stack installs it into the cluster: NVIDIA's device plugin chart or the GPU
    Operator, whichever the stack chooses; the platform brings none."""


class MigStrategy(enum.Enum):
    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str = "NoSchedule"

    def __post_init__(self) -> None:
        if self.effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ConfigError("taint.effect", self.effect, "use NoSchedule, PreferNoSchedule or NoExecute")

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}"

    def toleration(self) -> dict[str, str]:
        """The Kubernetes toleration that matches this taint exactly."""
        return {"key": self.key, "operator": "Equal", "value": self.value, "effect": self.effect}


GPU_LABEL = (GPU_RESOURCE, "true")
"""The label GPU nodes carry where the compute labels them itself (k3s hosts, Proxmox workers, LKE's
GPU pool): the one NVIDIA's device plugin and GPU Operator examples select on."""
GPU_TAINT = Taint(GPU_RESOURCE, "true", "NoSchedule")
"""The taint GPU nodes carry (or GPU pods tolerate where the nodes are untainted): it keeps pods that
do not ask for a GPU off GPU nodes."""
USER_NODE_LABEL = ("hub.jupyter.org/node-purpose", "user")
"""The label of nodes meant for users' notebook servers, where a compute gives it (the Proxmox
workers): the one JupyterHub's ``scheduling.userPods.nodeAffinity.matchNodePurpose`` matches."""


@dataclass(frozen=True)
class ContainerdPaths:
    """Where a non-standard containerd keeps its config and socket (k3s), for the GPU Operator's
    container toolkit (its CONTAINERD_CONFIG, CONTAINERD_SOCKET and RUNTIME_CONFIG_SOURCE)."""

    config: str
    """The file the toolkit writes the nvidia runtime into: on k3s the template k3s renders its
    containerd config from, since k3s overwrites the rendered config.toml on every start."""
    socket: str
    runtime_config_source: str | None = None
    """Where the toolkit reads the current config from (``file=<path>``), when ``config`` is a template
    that does not hold it: k3s' rendered config.toml, so the template keeps everything k3s sets."""


K3S_CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/etc/containerd"


def k3s_containerd(k3s_version: str) -> ContainerdPaths:
    """The containerd paths of a k3s release. k3s with containerd 2 (v1.31.6+k3s1, v1.32.2+k3s1 and
    later: the February 2025 backports k3s-io/k3s#11746 and #11745 of #11375) renders its config
    (version 3) from ``config-v3.toml.tmpl`` and ignores ``config.toml.tmpl``
    (docs.k3s.io, "Configuring containerd"); earlier releases read ``config.toml.tmpl``. The socket and
    reading the rendered config as the source follow NVIDIA's GPU Operator install notes for
    k3s/RKE2 (toolkit.env CONTAINERD_CONFIG, CONTAINERD_SOCKET, RUNTIME_CONFIG_SOURCE). NVIDIA's
    alternative, its NRI plugin (chart value ``cdi.nriPluginEnabled``, which needs the operator's
    toolkit), injects devices without editing containerd's config; these paths are what the
    default, config-editing toolkit needs."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)\+k3s\d+", k3s_version)
    if match is None:
        raise ConfigError("k3s_version", k3s_version, "give a pinned version such as v1.35.5+k3s1")
    minor, patch = int(match.group(1)), int(match.group(2))
    containerd2 = minor >= 33 or (minor == 32 and patch >= 2) or (minor == 31 and patch >= 6)
    template = "config-v3.toml.tmpl" if containerd2 else "config.toml.tmpl"
    return ContainerdPaths(
        config=f"{K3S_CONTAINERD_DIR}/{template}",
        socket="/run/k3s/containerd/containerd.sock",
        runtime_config_source=f"file={K3S_CONTAINERD_DIR}/config.toml",
    )


K3S_CONTAINERD = k3s_containerd("v1.35.5+k3s1")
"""The paths of the k3s releases this library pins (containerd 2)."""


@dataclass(frozen=True)
class GpuSharing:
    """How one physical GPU is shared between pods."""

    time_slicing_replicas: int = 1
    """Pods that may share one GPU by time-slicing; 1 switches time-slicing off."""
    mig_strategy: MigStrategy = MigStrategy.NONE
    """MIG strategy for GPUs that have MIG (A100, H100); ``NONE`` elsewhere."""

    def __post_init__(self) -> None:
        if not 1 <= self.time_slicing_replicas <= 48:
            raise ConfigError(
                "time_slicing_replicas",
                self.time_slicing_replicas,
                "use 1 (no sharing) up to 48 pods per GPU",
            )


@dataclass(frozen=True)
class KubeAccess:
    """How the kubernetes and helm providers reach the cluster.

    ``config_path`` is a kubeconfig file written during the apply (Proxmox). The providers
    read it lazily, when a resource is first created, so the plan of a first apply needs no cluster.
    ``host`` with an ``exec`` credential plugin derives the access at every run instead (EKS, the
    k3s hosts, k3d): nothing depends on a file an earlier apply left on one machine.
    """

    config_path: str | None = None
    config_context: str | None = None
    """The context of ``config_path`` to use; None: the file's current context."""
    host: str | None = None
    cluster_ca_certificate: str | None = None
    token: str | None = None
    """A bearer token (LKE's kubeconfig carries one); sensitive, a reference only."""
    exec_api_version: str | None = None
    exec_command: str | None = None
    exec_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.config_path is None) == (self.host is None):
            raise ConfigError(
                "kube_access",
                self,
                "give either config_path (a kubeconfig file) or host (an API endpoint), not both",
            )
        if self.config_context is not None and self.config_path is None:
            raise ConfigError("config_context", self.config_context, "a context names one of config_path's")

    def helm_kubernetes(self) -> dict[str, Any]:
        """The ``kubernetes`` block of the helm provider."""
        if self.config_path is not None:
            if self.config_context is not None:
                return {"config_path": self.config_path, "config_context": self.config_context}
            return {"config_path": self.config_path}
        block: dict[str, Any] = {"host": self.host}
        if self.cluster_ca_certificate is not None:
            block["cluster_ca_certificate"] = self.cluster_ca_certificate
        if self.token is not None:
            block["token"] = self.token
        if self.exec_command is not None:
            block["exec"] = {
                "api_version": self.exec_api_version,
                "command": self.exec_command,
                "args": list(self.exec_args),
            }
        return block


@dataclass(frozen=True)
class GpuCluster:
    """What a GpuCompute hands to everything that runs on the cluster."""

    name: str
    access: KubeAccess
    gpu_node_selector: Mapping[str, str]
    """Labels every GPU node carries; GPU pods select on them."""
    gpu_taint: Taint | None
    """The taint GPU nodes carry, or None where they carry none."""
    gpu_toleration_taint: Taint
    """The taint GPU pods tolerate: the nodes' taint, or the one they would carry if tainted later."""
    runtime_class: str | None
    """RuntimeClass GPU pods run with (``nvidia`` on k3s/k3d), or None where nvidia is the default."""
    driver: Manager
    toolkit: Manager
    containerd: ContainerdPaths | None = None
    """Non-standard containerd paths, for the GPU Operator's toolkit (k3s)."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    node_pool_labels: Mapping[str, str] = field(default_factory=dict)
    """Extra labels of the GPU node pool (Karpenter ``nodepool: gpu-inference``)."""
    gpu_capacity: int | None = None
    """Schedulable GPU slots (GPUs x time-slicing replicas), where the platform knows it at synth."""
    gpus_per_node: int | None = None
    """GPU slots one node offers: the most a single pod can ask for, where known at synth."""
    ready: Sequence[Any] = ()
    """Resources that must exist before anything is installed into the cluster."""
    identity: Sequence[TerraformResource] = ()
    """The resources that stand for the cluster itself: replaced, the cluster is new and empty, so
    everything installed into it is replaced with them (see :meth:`installed`)."""

    def installed(self, depends_on: Sequence[Any] = (), replaced_with: Sequence[str] = ()) -> dict[str, Any]:
        """``depends_on`` and ``lifecycle`` of a resource installed into this cluster: after
        :attr:`ready` (and ``depends_on``), and replaced whenever an :attr:`identity` resource is,
        or one of ``replaced_with`` (bare references, as below: a step that configures what a release
        installed, re-run when that release changes or is re-created).

        ``depends_on`` only orders; Terraform replaces a dependent only through
        ``lifecycle.replace_triggered_by`` (developer.hashicorp.com/terraform/language/meta-arguments/
        lifecycle). Each entry is the bare ``<type>.<name>.id``: in a JSON configuration Terraform
        1.11 reads the strings as references and rejects an interpolation (``${...}``, what cdktf
        makes of a resource object). The ``id`` rather than the whole resource: a reference to a
        resource triggers on any update of it (an EKS version upgrade, a tag), one to an attribute
        only when its value changes, and a resource being replaced plans a new, unknown ``id``. A
        newly created identity resource triggers nothing (no prior value to change), so adding one to
        a running stack replaces nothing."""
        from cdktf import TerraformResourceLifecycle

        triggers = [
            *(f"{r.terraform_resource_type}.{r.friendly_unique_id}.id" for r in self.identity),
            *replaced_with,
        ]
        return {
            "depends_on": list(dict.fromkeys([*self.ready, *depends_on])) or None,
            "lifecycle": TerraformResourceLifecycle(replace_triggered_by=triggers) if triggers else None,
        }

    @property
    def gpu_toleration(self) -> dict[str, str]:
        return self.gpu_toleration_taint.toleration()

    def gpu_pod_spec(self) -> dict[str, Any]:
        """The pod-spec fields that put a pod on a GPU node of this cluster."""
        spec: dict[str, Any] = {
            "nodeSelector": dict(sorted({**self.gpu_node_selector, **self.node_pool_labels}.items())),
            "tolerations": [self.gpu_toleration],
        }
        if self.runtime_class is not None:
            spec["runtimeClassName"] = self.runtime_class
        return spec

    def gpu_node_affinity(self) -> dict[str, Any]:
        """A required node affinity on the GPU node labels (for charts that take affinity)."""
        labels = {**self.gpu_node_selector, **self.node_pool_labels}
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": key, "operator": "In", "values": [value]}
                                for key, value in sorted(labels.items())
                            ]
                        }
                    ]
                }
            }
        }

    def check_pod_fits(self, field_name: str, gpus_per_pod: int) -> None:
        """Fail when one pod asks for more GPUs than any single node has."""
        if self.gpus_per_node is not None and gpus_per_pod > self.gpus_per_node:
            raise ConfigError(
                field_name,
                gpus_per_pod,
                f"a pod asking for {gpus_per_pod} GPUs never schedules: the GPU nodes of {self.name!r} have "
                f"{self.gpus_per_node} each; give the nodes more GPUs or drop the request",
            )

    def check_gpu_demand(self, field_name: str, pods: int, gpus_per_pod: int) -> None:
        """Fail when ``pods`` pods of ``gpus_per_pod`` GPUs can never all be scheduled."""
        if self.gpu_capacity is None:
            return
        demand = pods * gpus_per_pod
        if demand > self.gpu_capacity:
            raise ConfigError(
                field_name,
                pods,
                f"{pods} pods x {gpus_per_pod} GPU need {demand} GPU slots but cluster "
                f"{self.name!r} has {self.gpu_capacity}; lower it, or raise GPUs per node or "
                "time_slicing_replicas",
            )
