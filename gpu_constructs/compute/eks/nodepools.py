"""What Karpenter builds GPU and system nodes from: EC2NodeClass and NodePool specs, their disruption
budgets and the checks that refuse, at synth, what Karpenter's CRDs or controller would refuse later;
and the seed's classes and pools."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GPU_TAINT, GpuSharing, MigStrategy, Taint
from gpu_constructs.errors import ConfigError

GPU_POOL = "gpu-inference"

RESERVED_LABEL_DOMAINS = ("karpenter.sh", "karpenter.k8s.aws", "kubernetes.io", "k8s.io")
"""Label domains a NodePool's template labels may not use. The NodePool CRD (karpenter.sh/v1 at
v1.14.1, spec.template.metadata.labels x-kubernetes-validations) rejects karpenter.sh and
karpenter.k8s.aws keys other than the well-known labels Karpenter sets itself from the launched
instance (those are given as requirements here, never pinned as labels) and kubernetes.io/hostname;
Karpenter's RestrictedLabelDomains (kubernetes-sigs/karpenter pkg/apis/v1/labels.go) adds
kubernetes.io and k8s.io, which the kubelet's NodeRestriction refuses to self-set, except the
LABEL_DOMAIN_EXCEPTIONS. A domain is the key's part before '/', matched on its suffix as upstream does."""
LABEL_DOMAIN_EXCEPTIONS = ("node.kubernetes.io", "node-restriction.kubernetes.io", "kops.k8s.io")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
"""The NodePool CRD's pattern (and maxLength 63) for template label values."""


def _check_labels(field: str, labels: Mapping[str, str]) -> None:
    """Template labels as the NodePool CRD and the API server's label syntax accept them."""
    if len(labels) > 100:
        raise ConfigError(field, len(labels), "give at most 100 labels (NodePool CRD maxProperties)")
    for key, value in labels.items():
        prefix, slash, name = key.rpartition("/")
        if (
            (slash and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)))
            or len(name) > 63
            or not _LABEL_NAME.match(name)
        ):
            raise ConfigError(
                field,
                key,
                "give a label key such as example.com/team: an optional DNS prefix, '/', "
                "and a name of at most 63 letters, digits, '-', '_' or '.'",
            )
        domain = key.partition("/")[0]
        if any(domain.endswith(reserved) for reserved in RESERVED_LABEL_DOMAINS) and not any(
            domain.endswith(allowed) for allowed in LABEL_DOMAIN_EXCEPTIONS
        ):
            raise ConfigError(
                field,
                key,
                f"use a label domain outside {', '.join(RESERVED_LABEL_DOMAINS)}, which "
                "Karpenter and the kubelet reserve (node.kubernetes.io is allowed), e.g. example.com/team",
            )
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ConfigError(
                f"{field}[{key}]",
                value,
                "give a label value of at most 63 letters, digits, '-', '_' "
                "or '.', starting and ending with a letter or digit",
            )


# Instance families the NodePools may name, with whether they carry NVIDIA GPUs.
INSTANCE_FAMILIES = {
    "t3": False,
    "t3a": False,
    "m5": False,
    "m6i": False,
    "m7i": False,
    "c5": False,
    "c6i": False,
    "c7i": False,
    "r5": False,
    "r6i": False,
    "g4dn": True,
    "g5": True,
    "g6": True,
    "g6e": True,
    "p3": True,
    "p4d": True,
    "p5": True,
}
GPU_MODELS = {
    "g4dn": "NVIDIA T4",
    "g5": "NVIDIA A10G",
    "g6": "NVIDIA L4",
    "g6e": "NVIDIA L40S",
    "p3": "NVIDIA V100",
    "p4d": "NVIDIA A100",
    "p5": "NVIDIA H100",
}
"""The GPU of each GPU instance family (EC2's accelerated computing instance types)."""
ARCHITECTURE = "amd64"
SIZES = ("small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")
DURATION = re.compile(r"^([0-9]+(s|m|h))+$|^Never$")
"""``consolidateAfter`` and ``expireAfter`` (karpenter.sh_nodepools.yaml, v1.14.1:
``^(([0-9]+(s|m|h))+|Never)$``)."""
GRACE_PERIOD = re.compile(r"^([0-9]+(s|m|h))+$")
"""``spec.template.spec.terminationGracePeriod``: the same durations without ``Never``."""
BUDGET_DURATION = re.compile(r"^((([0-9]+(h|m))|([0-9]+h[0-9]+m))(0s)?)$")
"""``spec.disruption.budgets[].duration``: hours or minutes, or hours then minutes, no seconds but
a trailing ``0s`` (Go's time.Duration String form, ``8h0m0s``)."""
BUDGET_SCHEDULE = re.compile(
    r"^(@(annually|yearly|monthly|weekly|daily|midnight|hourly))|((.+)\s(.+)\s(.+)\s(.+)\s(.+))$"
)
"""``spec.disruption.budgets[].schedule``: a cron macro or five fields (the CRD's pattern; Karpenter
parses it with robfig/cron's standard parser)."""


AMI_FAMILIES = ("al2023", "bottlerocket")
"""Linux AMI families with NVIDIA variants that Karpenter selects by alias on current EKS."""


BOTTLEROCKET_OS_VOLUME_GI = 4
"""Bottlerocket's OS volume, /dev/xvda: Karpenter's default for the family (aws/karpenter-provider-aws
v1.14.1 pkg/providers/amifamily/bottlerocket.go, DefaultBlockDeviceMappings), which is the OS image
of its NVIDIA variants (bottlerocket-os/bottlerocket variants/aws-k8s-1.35-nvidia/Cargo.toml,
``os-image-size-gib = 4``). Images and containers live on the data volume, /dev/xvdb."""

EPHEMERAL_DEVICE = {"al2023": "/dev/xvda", "bottlerocket": "/dev/xvdb"}
"""The device of each AMI family that holds images, containers and pods' ephemeral storage, and that
Karpenter counts as the node's ephemeral-storage (v1.14.1 ``EphemeralBlockDevice`` in
pkg/providers/amifamily/al2023.go and bottlerocket.go; pkg/providers/instancetype/types.go
ephemeralStorage). AL2023 has one volume, the root."""


@dataclass(frozen=True)
class NodeClassSpec:
    """A Karpenter EC2NodeClass: AMI family and the volume that holds images and containers."""

    name: str
    volume_size_gi: int
    """The volume images and containers are stored on (``EPHEMERAL_DEVICE``): AL2023's root
    volume, Bottlerocket's data volume (its OS volume stays at ``BOTTLEROCKET_OS_VOLUME_GI``)."""
    iops: int = 3000
    throughput_mibs: int = 125
    ami_alias: str = versions.EKS_NODE_AMI.version
    """``family@version`` with a pinned release (Karpenter 1.14 EC2NodeClass CRD, amiSelectorTerms
    alias: "al2023@v20240625", "bottlerocket@v1.10.0"); Karpenter picks the NVIDIA variant of the
    release for GPU instance types by itself. ``latest`` is refused: every AMI release would drift
    every node, the single inference replica's included."""

    def __post_init__(self) -> None:
        validate.k8s_name("node class name", self.name)
        validate.int_range(f"{self.name}.volume_size_gi", self.volume_size_gi, 20, 16384)
        validate.int_range(f"{self.name}.iops", self.iops, 3000, 16000, why="gp3 allows 3000 to 16000")
        validate.int_range(
            f"{self.name}.throughput_mibs", self.throughput_mibs, 125, 1000, why="gp3 allows 125 to 1000"
        )
        # EC2 refuses the launch of a gp3 volume beyond two ratios, which the EC2NodeClass CRD does
        # not check (v1.14.1: iops and throughput carry only their ranges): provisioned IOPS at most
        # 500 per GiB of the volume, throughput at most 0.25 MiB/s per provisioned IOPS (EBS User
        # Guide, "General Purpose SSD volumes", gp3). Every launch from the class would fail.
        if self.iops > GP3_IOPS_PER_GI * self.volume_size_gi:
            raise ConfigError(
                f"{self.name}.iops",
                self.iops,
                f"gp3 allows at most {GP3_IOPS_PER_GI} IOPS per GiB, {GP3_IOPS_PER_GI * self.volume_size_gi} "
                f"on {self.volume_size_gi} GiB: lower iops or raise volume_size_gi",
            )
        if self.throughput_mibs * GP3_IOPS_PER_MIBS > self.iops:
            raise ConfigError(
                f"{self.name}.throughput_mibs",
                self.throughput_mibs,
                f"gp3 allows at most 0.25 MiB/s per IOPS, {self.iops // GP3_IOPS_PER_MIBS} with "
                f"{self.iops} IOPS: lower throughput_mibs or raise iops",
            )
        check_ami_alias(f"{self.name}.ami_alias", self.ami_alias)


GP3_IOPS_PER_GI = 500
"""The most provisioned IOPS a gp3 volume takes per GiB of its size."""
GP3_IOPS_PER_MIBS = 4
"""The IOPS a gp3 volume needs provisioned per MiB/s of its throughput (0.25 MiB/s per IOPS)."""


def check_ami_alias(setting: str, alias: str) -> None:
    """Refuse an EC2NodeClass alias that is not ``family@release`` with a pinned release."""
    family, _, release = alias.partition("@")
    # The release formats of the two families' AMIs: AL2023's vYYYYMMDD, Bottlerocket's vX.Y.Z.
    formats = {"al2023": r"v20[0-9]{6}", "bottlerocket": r"v[0-9]+\.[0-9]+\.[0-9]+"}
    if family not in AMI_FAMILIES or not re.fullmatch(formats[family], release):
        raise ConfigError(
            setting,
            alias,
            f"use family@release with a family of {', '.join(AMI_FAMILIES)} (EKS publishes no AL2 AMIs "
            "for Kubernetes 1.33 and later) and a pinned release such as al2023@v20260304 or "
            "bottlerocket@v1.50.0 (latest would roll every node on each AMI release)",
        )


def ami_family(alias: str) -> str:
    """The AMI family of an EC2NodeClass alias (``al2023`` of ``al2023@v20260304``)."""
    return alias.partition("@")[0]


BOTTLEROCKET_TIME_SLICING = (1, 25, 0)
"""The first Bottlerocket release whose NVIDIA variants take time-slicing settings
(bottlerocket-os/bottlerocket CHANGELOG v1.25.0, "Add support for NVIDIA GPU time slicing";
settings-migrations/v1.25.0/kubelet-device-plugins-time-slicing-settings)."""


def bottlerocket_device_plugin_settings(sharing: GpuSharing) -> str | None:
    """The EC2NodeClass userData that configures the NVIDIA device plugin Bottlerocket's NVIDIA
    variants run themselves (its ``nvidia-k8s-device-plugin`` service, which the kubelet gets
    ``nvidia.com/gpu`` from), or None for Bottlerocket's defaults (no sharing).

    The values mirror NVIDIA's DaemonSet config on AL2023 (gpu_constructs/device_plugin.py): the
    replicas keep the resource name ``nvidia.com/gpu`` and a pod may ask for more than one, which are
    the plugin's own defaults (NVIDIA/k8s-device-plugin api/config/v1 ReplicatedResources: false)
    but not Bottlerocket's: its template defaults rename-by-default and
    fail-requests-greater-than-one to true (bottlerocket-os/bottlerocket-core-kit
    packages/nvidia-k8s-device-plugin/nvidia-k8s-device-plugin-conf), which would advertise
    ``nvidia.com/gpu.shared`` and leave every pod asking for ``nvidia.com/gpu`` unschedulable.
    Karpenter keeps these settings and merges its own ``settings.kubernetes`` into the TOML
    (aws/karpenter-provider-aws v1.14.1 pkg/providers/amifamily/bootstrap/bottlerocketsettings.go,
    SettingsRaw)."""
    if sharing.time_slicing_replicas == 1:
        return None
    return (
        "[settings.kubelet-device-plugins.nvidia]\n"
        'device-sharing-strategy = "time-slicing"\n'
        "\n"
        "[settings.kubelet-device-plugins.nvidia.time-slicing]\n"
        f"replicas = {sharing.time_slicing_replicas}\n"
        "rename-by-default = false\n"
        "fail-requests-greater-than-one = false\n"
    )


def check_bottlerocket_gpu_classes(
    node_classes: tuple[NodeClassSpec, ...], node_pools: tuple[NodePoolSpec, ...], sharing: GpuSharing
) -> None:
    """Refuse GPU sharing that Bottlerocket's own device plugin cannot be given. On Bottlerocket the
    stack installs no device plugin (the NVIDIA variants run one), so sharing is the node's
    settings: time-slicing from BOTTLEROCKET_TIME_SLICING on, in userData that only the NVIDIA
    variants know (the aws-k8s variants' settings model has no kubelet-device-plugins:
    bottlerocket-os/bottlerocket sources/settings-plugins/aws-k8s against aws-k8s-nvidia), so its
    class serves GPU pools only; MIG is not offered here."""
    for spec in node_classes:
        family, _, release = spec.ami_alias.partition("@")
        pools = [p for p in node_pools if p.node_class == spec.name]
        if family != "bottlerocket" or not any(p.has_gpus for p in pools):
            continue
        if sharing.mig_strategy is not MigStrategy.NONE:
            raise ConfigError(
                "mig_strategy",
                sharing.mig_strategy.value,
                f"use MigStrategy.NONE with node class {spec.name} on Bottlerocket, whose own device "
                "plugin the stack does not configure for MIG, or an al2023 alias",
            )
        if sharing.time_slicing_replicas == 1:
            continue
        version = tuple(int(part) for part in release.removeprefix("v").split("."))
        if version < BOTTLEROCKET_TIME_SLICING:
            raise ConfigError(
                "time_slicing_replicas",
                sharing.time_slicing_replicas,
                f"node class {spec.name} runs {spec.ami_alias}, which has no time-slicing settings: use "
                "bottlerocket@v1.25.0 or later, or time_slicing_replicas=1",
            )
        plain = [p.name for p in pools if not p.has_gpus]
        if plain:
            raise ConfigError(
                "time_slicing_replicas",
                sharing.time_slicing_replicas,
                f"node class {spec.name} also serves pool {plain[0]} without GPUs, whose Bottlerocket "
                "variant refuses the device plugin settings: give that pool its own node class",
            )


def block_device_mappings(spec: NodeClassSpec) -> list[dict[str, Any]]:
    """The EC2NodeClass's volumes. Given any, they replace Karpenter's defaults for the family
    entirely, so a Bottlerocket class names both of its volumes: the OS volume at its default size
    and the data volume, where the GPU images go, at ``volume_size_gi`` (with only /dev/xvda the
    data volume would be missing and the OS volume oversized)."""

    def volume(device: str, size_gi: int, performance: Mapping[str, int]) -> dict[str, Any]:
        return {
            "deviceName": device,
            "ebs": {
                "volumeSize": f"{size_gi}Gi",
                "volumeType": "gp3",
                **performance,
                "encrypted": True,
                "deleteOnTermination": True,
            },
        }

    family = spec.ami_alias.partition("@")[0]
    data = volume(
        EPHEMERAL_DEVICE[family],
        spec.volume_size_gi,
        {"iops": spec.iops, "throughput": spec.throughput_mibs},
    )
    if family == "bottlerocket":
        # gp3's baseline (3000 IOPS, 125 MiB/s) without provisioning any, as Karpenter's own default
        # mapping for the family has it: 3000 provisioned IOPS on 4 GiB exceed gp3's 500 per GiB.
        return [volume("/dev/xvda", BOTTLEROCKET_OS_VOLUME_GI, {}), data]
    return [data]


BUDGET_NODES = re.compile(r"^((100|[0-9]{1,2})%|[0-9]+)$")
BUDGET_REASONS = ("Underutilized", "Empty", "Drifted")


def _cron_fields_ok(schedule: str) -> bool:
    """A macro, or exactly five whitespace-separated fields: the CRD's pattern admits a sixth field
    glued into one of its ``.+`` groups, which robfig/cron's standard parser then refuses."""
    macro = re.fullmatch(r"@(annually|yearly|monthly|weekly|daily|midnight|hourly)", schedule)
    return bool(macro) or len(schedule.split()) == 5


@dataclass(frozen=True)
class DisruptionBudget:
    """One NodePool disruption budget: at most ``nodes`` (a count or a percentage) disrupted at a
    time, for ``reasons`` (all when empty), during ``schedule``/``duration`` (always when None)."""

    nodes: str = "10%"
    reasons: tuple[str, ...] = ()
    schedule: str | None = None
    """Cron schedule when the budget starts to apply, e.g. ``0 9 * * mon-fri``; needs a duration."""
    duration: str | None = None

    def __post_init__(self) -> None:
        if not BUDGET_NODES.match(self.nodes):
            raise ConfigError(
                "budget.nodes", self.nodes, "give a node count such as 1 or a percentage such as 10%"
            )
        for reason in self.reasons:
            validate.one_of("budget.reasons", reason, BUDGET_REASONS)
        if (self.schedule is None) != (self.duration is None):
            raise ConfigError(
                "budget.schedule", self.schedule, "give a schedule and a duration together, or neither"
            )
        if self.duration is not None and not BUDGET_DURATION.match(self.duration):
            raise ConfigError(
                "budget.duration",
                self.duration,
                "give hours or minutes such as 8h, 30m or 1h30m (the NodePool CRD allows no seconds)",
            )
        if self.schedule is not None and not (
            BUDGET_SCHEDULE.match(self.schedule) and _cron_fields_ok(self.schedule)
        ):
            raise ConfigError(
                "budget.schedule",
                self.schedule,
                "give a cron schedule of five fields (minute hour day month weekday) such as "
                "'0 9 * * mon-fri', or a macro such as @daily",
            )

    def manifest(self) -> dict[str, Any]:
        budget: dict[str, Any] = {"nodes": self.nodes}
        if self.reasons:
            budget["reasons"] = list(self.reasons)
        if self.schedule is not None:
            budget |= {"schedule": self.schedule, "duration": self.duration}
        return budget


@dataclass(frozen=True)
class NodePoolSpec:
    """A Karpenter NodePool, as the seed's table describes one."""

    name: str
    node_class: str
    families: tuple[str, ...]
    sizes: tuple[str, ...]
    capacity_types: tuple[str, ...]
    consolidate_after: str
    cpu_limit: int
    memory_limit_gi: int
    gpu_limit: int | None = None
    taints: tuple[Taint, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    budgets: tuple[DisruptionBudget, ...] = (DisruptionBudget(),)
    """How many nodes Karpenter may disrupt at once; the default is Karpenter's own (10%)."""
    termination_grace_period: str | None = None
    """How long a draining node may wait for pods that block eviction before it is terminated
    anyway (e.g. ``24h``); None waits as long as the pods' PodDisruptionBudgets say."""
    expire_after: str = "720h"
    """Node lifetime before Karpenter replaces it (AMI and security updates); ``Never`` keeps nodes."""
    scale_to_zero: bool = False
    """Declares that the pool runs no node at rest: nothing scheduled on it may keep a replica
    (and so a node) when idle. The stack's tests hold every workload that can land here to it."""

    def __post_init__(self) -> None:
        validate.k8s_name("node pool name", self.name)
        _check_labels(f"{self.name}.labels", self.labels)
        if self.termination_grace_period is not None and not GRACE_PERIOD.match(
            self.termination_grace_period
        ):
            raise ConfigError(
                f"{self.name}.termination_grace_period",
                self.termination_grace_period,
                "give a duration such as 30m or 24h (not Never: leave it unset to wait as long as "
                "the pods' disruption budgets say)",
            )
        if not DURATION.match(self.expire_after):
            raise ConfigError(
                f"{self.name}.expire_after", self.expire_after, "give a duration such as 720h or Never"
            )
        for family in self.families:
            if family not in INSTANCE_FAMILIES:
                raise ConfigError(
                    f"{self.name}.families",
                    family,
                    f"use known instance families: {', '.join(INSTANCE_FAMILIES)}",
                )
        for size in self.sizes:
            validate.one_of(f"{self.name}.sizes", size, SIZES)
        for capacity in self.capacity_types:
            validate.one_of(f"{self.name}.capacity_types", capacity, ("spot", "on-demand"))
        if not DURATION.match(self.consolidate_after):
            raise ConfigError(
                f"{self.name}.consolidate_after",
                self.consolidate_after,
                "give a duration such as 30s, 1m or 5m",
            )
        validate.int_range(f"{self.name}.cpu_limit", self.cpu_limit, 1)
        validate.int_range(f"{self.name}.memory_limit_gi", self.memory_limit_gi, 1)
        if self.gpu_limit is not None:
            validate.int_range(f"{self.name}.gpu_limit", self.gpu_limit, 1)

    @property
    def has_gpus(self) -> bool:
        return any(INSTANCE_FAMILIES[family] for family in self.families)

    @property
    def gpu_model(self) -> str | None:
        """The GPU of the pool's nodes when all its GPU families have the same one."""
        models = {GPU_MODELS.get(family) for family in self.families if INSTANCE_FAMILIES[family]}
        return models.pop() if len(models) == 1 else None

    @property
    def instance_types(self) -> tuple[str, ...]:
        return tuple(f"{family}.{size}" for family in self.families for size in self.sizes)

    def requirements(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The NodePool's ``In`` requirements, each a node label and the values Karpenter picks from."""
        return (
            ("karpenter.k8s.aws/instance-family", self.families),
            ("karpenter.k8s.aws/instance-size", self.sizes),
            ("karpenter.sh/capacity-type", self.capacity_types),
            ("kubernetes.io/arch", (ARCHITECTURE,)),
        )


GPU_POOL_BUDGETS = (
    DisruptionBudget("100%", reasons=("Empty",)),
    DisruptionBudget("0", reasons=("Underutilized", "Drifted")),
)
"""The inference workload runs one replica per GPU node (at most), and none at rest: a GPU node is
removed as soon as it is empty (scale to zero), but never consolidated or replaced for drift while
the replica runs on it, which would evict the only replica (Karpenter 1.14 NodePool
spec.disruption.budgets, per reason; the most restrictive budget for a reason applies). A drifted
node (a new AMI pin, a changed EC2NodeClass) is replaced when it empties at the next scale-down, or
at expireAfter. Spot interruptions and node repair are not voluntary disruptions and ignore
budgets."""

SEED_NODE_CLASSES = (NodeClassSpec("default", 50), NodeClassSpec("gpu", 200, iops=4000, throughput_mibs=200))
SEED_NODE_POOLS = (
    NodePoolSpec(
        "general",
        "default",
        ("t3", "m5", "c5"),
        ("small", "medium", "large"),
        ("spot", "on-demand"),
        "1m",
        50,
        100,
    ),
    NodePoolSpec(
        "critical",
        "default",
        ("t3", "m5"),
        ("small", "medium"),
        ("on-demand",),
        "5m",
        20,
        40,
        taints=(Taint("workload", "critical", "NoSchedule"),),
    ),
    NodePoolSpec(
        GPU_POOL,
        "gpu",
        ("g4dn",),
        ("xlarge", "2xlarge"),
        ("spot", "on-demand"),
        "5m",
        32,
        128,
        gpu_limit=4,
        taints=(GPU_TAINT,),
        labels={"nodepool": GPU_POOL},
        budgets=GPU_POOL_BUDGETS,
        scale_to_zero=True,
    ),
)
