"""Karpenter on EKS: its AWS side (node role, interruption queue and rules, controller role through
Pod Identity) and its cluster side (the chart, EC2NodeClasses and NodePools), as aws-cdk keeps
cluster add-ons apart from ``eks.Cluster``.

The GPU nodes come from a Karpenter NodePool that scales to zero; the AL2023 NVIDIA AMI brings the
driver and the container toolkit. Karpenter's custom resources are installed by a Helm release after
the Karpenter chart, whose CRDs come from the karpenter-crd chart before it, so nothing needs a live
cluster at plan time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cdktf_cdktf_provider_aws.cloudwatch_event_rule import CloudwatchEventRule
from cdktf_cdktf_provider_aws.cloudwatch_event_target import CloudwatchEventTarget
from cdktf_cdktf_provider_aws.data_aws_ssm_parameter import DataAwsSsmParameter
from cdktf_cdktf_provider_aws.eks_access_entry import EksAccessEntry
from cdktf_cdktf_provider_aws.eks_cluster import EksCluster
from cdktf_cdktf_provider_aws.eks_pod_identity_association import EksPodIdentityAssociation
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.sqs_queue import SqsQueue
from cdktf_cdktf_provider_aws.sqs_queue_policy import SqsQueuePolicy
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GPU_RESOURCE, GPU_TAINT, GpuCluster, Taint
from gpu_constructs.compute.eks.cluster import SYSTEM_TAINT, node_role
from gpu_constructs.compute.eks.iam import policy_document, policy_file, service_trust
from gpu_constructs.errors import ConfigError

KARPENTER_NAMESPACE = "karpenter"
KARPENTER_RESOURCES = {"cpu": "1", "memory": "1Gi"}
"""Requests and limits of each Karpenter controller replica, as Karpenter's getting-started guide
installs the chart (controller.resources; the chart's values.yaml carries the same example)."""
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
        check_ami_alias(f"{self.name}.ami_alias", self.ami_alias)


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


def block_device_mappings(spec: NodeClassSpec) -> list[dict[str, Any]]:
    """The EC2NodeClass's volumes. Given any, they replace Karpenter's defaults for the family
    entirely, so a Bottlerocket class names both of its volumes: the OS volume at its default size
    and the data volume, where the GPU images go, at ``volume_size_gi`` (with only /dev/xvda the
    data volume would be missing and the OS volume oversized)."""

    def volume(device: str, size_gi: int, iops: int, throughput: int) -> dict[str, Any]:
        return {
            "deviceName": device,
            "ebs": {
                "volumeSize": f"{size_gi}Gi",
                "volumeType": "gp3",
                "iops": iops,
                "throughput": throughput,
                "encrypted": True,
                "deleteOnTermination": True,
            },
        }

    family = spec.ami_alias.partition("@")[0]
    data = volume(EPHEMERAL_DEVICE[family], spec.volume_size_gi, spec.iops, spec.throughput_mibs)
    if family == "bottlerocket":
        return [volume("/dev/xvda", BOTTLEROCKET_OS_VOLUME_GI, 3000, 125), data]
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


@dataclass(frozen=True)
class KarpenterProps:
    """Settings of Karpenter for one EKS cluster."""

    cluster_name: str
    """The cluster's name, known at synth (tags and policy conditions)."""
    cluster: EksCluster
    """The cluster itself: its resources refer to it, so Terraform creates them after it."""
    region: str
    account_id: str
    gpu_cluster: GpuCluster
    """The contract of the cluster the charts install into: its ``ready`` resources (the system
    nodes and core add-ons) exist before them, and they are replaced with the EKS cluster."""
    launch_prerequisites: Sequence[Any] = ()
    """What Karpenter reads to launch nodes besides its own resources (the cluster security group's
    discovery tag): it outlives the controller on destroy. Left out: nothing more is ordered."""
    node_classes: tuple[NodeClassSpec, ...] = SEED_NODE_CLASSES
    node_pools: tuple[NodePoolSpec, ...] = SEED_NODE_POOLS
    replicas: int = 2
    chart_version: str = versions.KARPENTER_CHART.version
    kubernetes_version: str | None = None
    """The cluster's Kubernetes minor version as configured (``1.35``): each AL2023 alias's AMI is
    then read for it at plan (:meth:`Karpenter.ami_parameters`); None reads none."""
    node_repair: bool = True
    """Karpenter replaces nodes that stay unhealthy (chart feature gate nodeRepair): kubelet not
    ready, and the conditions EKS's node monitoring agent reports (AcceleratedHardwareReady for the
    NVIDIA GPUs, kernel, networking, storage), installed with it by EksGpuCompute; False leaves
    broken nodes for an operator."""


class Karpenter(Construct):
    """Karpenter's AWS resources and its chart, EC2NodeClasses and NodePools.

    ``resource_scope`` is where the resources are created (this construct unless given): EksGpuCompute
    passes itself, so its resources keep the logical ids they had before the split.
    """

    def __init__(
        self, scope: Construct, id: str, *, props: KarpenterProps, resource_scope: Construct | None = None
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self._here: Construct = resource_scope or self
        self._aws()
        self._in_cluster()

    def _aws(self) -> None:
        props = self.props
        self.karpenter_nodes = node_role(
            self._here, "karpenter-node-role", f"{props.cluster_name}-karpenter-nodes"
        )
        self.karpenter_node_role = self.karpenter_nodes.role
        self.karpenter_node_access = EksAccessEntry(
            self._here,
            "karpenter-node-access",
            cluster_name=props.cluster.name,
            principal_arn=self.karpenter_node_role.arn,
            type="EC2_LINUX",
        )
        self.interruption_queue = SqsQueue(
            self._here,
            "interruption-queue",
            name=f"{props.cluster_name}-karpenter",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
        )
        self.interruption_queue_policy = SqsQueuePolicy(
            self._here,
            "interruption-queue-policy",
            queue_url=self.interruption_queue.url,
            policy=policy_document(
                {
                    "Sid": "EventBridge",
                    "Effect": "Allow",
                    "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                    "Action": "sqs:SendMessage",
                    "Resource": self.interruption_queue.arn,
                },
                {
                    "Sid": "DenyHTTP",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "sqs:*",
                    "Resource": self.interruption_queue.arn,
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ),
        )
        events = {
            "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
            "spot-interruption": {
                "source": ["aws.ec2"],
                "detail-type": ["EC2 Spot Instance Interruption Warning"],
            },
            "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
            "state-change": {
                "source": ["aws.ec2"],
                "detail-type": ["EC2 Instance State-change Notification"],
            },
            "capacity-reservation": {
                "source": ["aws.ec2"],
                "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
            },
        }
        for name, pattern in events.items():
            rule = CloudwatchEventRule(
                self._here,
                f"karpenter-{name}",
                name=f"{props.cluster_name}-karpenter-{name}",
                event_pattern=json.dumps(pattern, sort_keys=True),
            )
            CloudwatchEventTarget(
                self._here,
                f"karpenter-{name}-target",
                rule=rule.name,
                target_id="karpenter-interruption-queue",
                arn=self.interruption_queue.arn,
            )

        controller = IamRole(
            self._here,
            "karpenter-controller-role",
            name=f"{props.cluster_name}-karpenter-controller",
            assume_role_policy=service_trust("pods.eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        self.karpenter_policy = IamRolePolicy(
            self._here, "karpenter-controller-policy", role=controller.id, policy=self._karpenter_policy()
        )
        self.karpenter_identity = EksPodIdentityAssociation(
            self._here,
            "karpenter-pod-identity",
            cluster_name=props.cluster.name,
            namespace=KARPENTER_NAMESPACE,
            service_account="karpenter",
            role_arn=controller.arn,
        )

    def _karpenter_policy(self) -> str:
        """Karpenter's controller permissions (policies/karpenter-controller.json), scoped as
        terraform-aws-eks ``modules/karpenter`` (policy.tf, v1 policy) and Karpenter's getting-started
        CloudFormation scope them: what it creates must carry this cluster's tags, what it changes or
        deletes must already carry them. Beyond terraform-aws-eks, as Karpenter 1.14's CloudFormation:
        an EC2NodeClass's placement group (RunInstances on placement-group/*, DescribePlacementGroups),
        instance health for node repair (DescribeInstanceStatus) and capacity-reservation NodePools
        (DescribeCapacityReservations). The AMI aliases resolve through the public /aws/service/ SSM
        parameters; the pricing API has no region condition (it lives in us-east-1 and a few others)."""
        props = self.props
        return policy_file(
            "karpenter-controller",
            account_id=props.account_id,
            cluster=props.cluster_name,
            region=props.region,
            cluster_arn=props.cluster.arn,
            interruption_queue_arn=self.interruption_queue.arn,
            node_role_arn=self.karpenter_node_role.arn,
        )

    def _in_cluster(self) -> None:
        props = self.props
        # Helm installs a chart's crds/ directory on first install only and never upgrades or deletes
        # it (Helm docs, chart best practices: custom resource definitions), so the CRDs come from
        # their own chart, karpenter-crd at the controller's version, which ships them as templates
        # that Helm upgrades (aws/karpenter-provider-aws v1.14.1 charts/karpenter-crd; Karpenter's
        # upgrade guide installs it before the karpenter chart).
        self.karpenter_crd = helm.release(
            self._here,
            "karpenter-crd",
            name="karpenter-crd",
            chart="karpenter-crd",
            repository=versions.REPO_KARPENTER,
            version=props.chart_version,
            namespace=KARPENTER_NAMESPACE,
            values={},
            cluster=props.gpu_cluster,
        )
        self.karpenter = helm.release(
            self._here,
            "karpenter",
            name="karpenter",
            chart="karpenter",
            repository=versions.REPO_KARPENTER,
            version=props.chart_version,
            namespace=KARPENTER_NAMESPACE,
            values={
                "replicas": props.replicas,
                "settings": {
                    "clusterName": props.cluster_name,
                    "interruptionQueue": self.interruption_queue.name,
                    # The chart (1.14.1) writes every gate into FEATURE_GATES, capacityBuffer too, which
                    # its values.yaml leaves out; an unset gate renders as an empty value.
                    "featureGates": {
                        "nodeRepair": props.node_repair,
                        "capacityBuffer": False,
                        "nodeOverlay": False,
                        "reservedCapacity": True,
                        "spotToSpotConsolidation": False,
                        "staticCapacity": False,
                    },
                },
                "serviceAccount": {"name": "karpenter"},
                "controller": {
                    # The nodes' instance metadata answers only the node itself (hop limit 1), so
                    # the SDK cannot read the region from it (the chart's values.yaml suggests
                    # AWS_REGION in controller.env for this).
                    "env": [{"name": "AWS_REGION", "value": props.region}],
                    # Upstream's recommendation (getting started with Karpenter, the chart's
                    # controller.resources example): a guaranteed 1 CPU and 1Gi per replica.
                    "resources": {
                        "requests": dict(KARPENTER_RESOURCES),
                        "limits": dict(KARPENTER_RESOURCES),
                    },
                },
                # The chart's default affinity keeps Karpenter off the nodes it manages; with the
                # toleration below it lands on the system node group.
                "tolerations": [
                    {"key": SYSTEM_TAINT.key, "operator": "Exists", "effect": SYSTEM_TAINT.effect}
                ],
            },
            # Without its Pod Identity association the controller starts with no AWS credentials; with
            # its policy among its dependencies it also keeps them on destroy, until the node pools
            # are gone and it has terminated their instances (terraform-aws-eks v21 orders its
            # add-ons after their roles' policies the same way). The node role's grants and access
            # entry, the interruption queue's policy and the discovery tag outlive it too: its nodes
            # still drain as that role while it terminates them.
            cluster=props.gpu_cluster,
            depends_on=[
                self.karpenter_identity,
                self.karpenter_policy,
                self.karpenter_node_access,
                *self.karpenter_nodes.grants,
                self.interruption_queue_policy,
                *props.launch_prerequisites,
                self.karpenter_crd,
            ],
        )
        # The CRDs are the karpenter-crd release's; the chart's own crds/ copies stay out.
        self.karpenter.skip_crds = True
        self.node_pools = helm.manifests_release(
            self._here,
            "karpenter-node-pools",
            cluster=props.gpu_cluster,
            name="karpenter-node-pools",
            namespace=KARPENTER_NAMESPACE,
            manifests=[
                *map(self.node_class_manifest, props.node_classes),
                *map(self.node_pool_manifest, props.node_pools),
            ],
            # Deleting the NodePools makes Karpenter drain and terminate their nodes, which must
            # still join and run as the node role through its access entry until then; on destroy
            # this release goes first, before those and before the Karpenter release.
            depends_on=[
                self.karpenter,
                self.karpenter_node_access,
                *self.karpenter_nodes.grants,
            ],
        )
        # Read at plan whatever depends on them: a missing one fails the plan before any change.
        self.ami_images = self.ami_parameters()

    def ami_parameters(self) -> list[DataAwsSsmParameter]:
        """The SSM parameters Karpenter resolves each EC2NodeClass's AL2023 alias through, read at
        plan: a pinned release that AWS did not publish for the cluster's Kubernetes version (a
        version bump past the pin, a region without it) fails the plan with ParameterNotFound
        instead of leaving every pool of that class unable to launch. Karpenter 1.14.1
        (pkg/providers/amifamily/al2023.go, resolvePath) reads
        ``/aws/service/eks/optimized-ami/<k8s>/amazon-linux-2023/<arch>/<variant>/
        amazon-eks-node-al2023-<arch>-<variant>-<k8s>-<release>/image_id`` per variant and skips
        those it cannot read; here the variants the class's pools need: nvidia for GPU pools,
        standard for the others, x86_64 (the pools' only architecture). Only constant arguments
        and no depends_on, so Terraform reads them at plan, not at apply; nothing needs to depend on
        them for that (a dependent would only be ordered after the read)."""
        props = self.props
        if props.kubernetes_version is None:
            return []
        parameters = []
        for node_class in props.node_classes:
            family, _, release = node_class.ami_alias.partition("@")
            if family != "al2023":
                continue
            pools = [p for p in props.node_pools if p.node_class == node_class.name]
            variants = sorted({"nvidia" if p.has_gpus else "standard" for p in pools})
            for variant in variants:
                k8s, arch = props.kubernetes_version, "x86_64"
                parameters.append(
                    DataAwsSsmParameter(
                        self._here,
                        f"karpenter-ami-{node_class.name}-{variant}",
                        name=(
                            f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/{variant}/"
                            f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{release}/image_id"
                        ),
                    )
                )
        return parameters

    def node_class_manifest(self, spec: NodeClassSpec) -> dict[str, Any]:
        discovery = {"tags": {"karpenter.sh/discovery": self.props.cluster_name}}
        return {
            "apiVersion": "karpenter.k8s.aws/v1",
            "kind": "EC2NodeClass",
            "metadata": {"name": spec.name},
            "spec": {
                "role": self.karpenter_node_role.name,
                "amiSelectorTerms": [{"alias": spec.ami_alias}],
                "subnetSelectorTerms": [discovery],
                "securityGroupSelectorTerms": [discovery],
                "metadataOptions": {
                    "httpEndpoint": "enabled",
                    "httpProtocolIPv6": "disabled",
                    "httpPutResponseHopLimit": 1,
                    "httpTokens": "required",
                },
                "blockDeviceMappings": block_device_mappings(spec),
                # Karpenter tags its instances kubernetes.io/cluster/<name> itself; the EC2NodeClass CRD
                # (1.14.1) forbids that key in spec.tags by a CEL rule.
                "tags": {"Name": f"{self.props.cluster_name}-{spec.name}"},
            },
        }

    def node_pool_manifest(self, spec: NodePoolSpec) -> dict[str, Any]:
        limits: dict[str, Any] = {"cpu": str(spec.cpu_limit), "memory": f"{spec.memory_limit_gi}Gi"}
        if spec.gpu_limit is not None:
            limits[GPU_RESOURCE] = str(spec.gpu_limit)
        template: dict[str, Any] = {
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.k8s.aws",
                    "kind": "EC2NodeClass",
                    "name": spec.node_class,
                },
                "requirements": [
                    {"key": key, "operator": "In", "values": list(values)}
                    for key, values in spec.requirements()
                ],
                "expireAfter": spec.expire_after,
            }
        }
        if spec.termination_grace_period is not None:
            template["spec"]["terminationGracePeriod"] = spec.termination_grace_period
        if spec.taints:
            template["spec"]["taints"] = [
                {"key": t.key, "value": t.value, "effect": t.effect} for t in spec.taints
            ]
        if spec.labels:
            template["metadata"] = {"labels": dict(spec.labels)}
        return {
            "apiVersion": "karpenter.sh/v1",
            "kind": "NodePool",
            "metadata": {"name": spec.name},
            "spec": {
                "template": template,
                "disruption": {
                    "consolidationPolicy": "WhenEmptyOrUnderutilized",
                    "consolidateAfter": spec.consolidate_after,
                    "budgets": [budget.manifest() for budget in spec.budgets],
                },
                "limits": limits,
            },
        }
