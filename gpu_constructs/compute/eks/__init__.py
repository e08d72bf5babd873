"""GpuCompute for AWS: a VPC, EKS with a system node group, and Karpenter with GPU node pools.

EksGpuCompute composes three constructs, each with its own props: AwsVpc (vpc.py),
EksSystemCluster (cluster.py) and Karpenter (karpenter.py). It builds their resources in its own
scope, so their logical ids (and Terraform state addresses) are the ones they had when all of it was
one class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from cdktf import Fn, TerraformStack
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from constructs import Construct

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GPU_TAINT, GpuCluster, GpuSharing, KubeAccess, Manager
from gpu_constructs.compute.base import NodeGroup, PlatformFacts
from gpu_constructs.compute.eks.cluster import (
    SYSTEM_ADDON_PODS,
    SYSTEM_INSTANCE_TYPE,
    SYSTEM_LABEL,
    SYSTEM_TAINT,
    EksSystemCluster,
    EksSystemClusterProps,
    PodRequests,
    addon,
    allocatable,
    unplaced,
)
from gpu_constructs.compute.eks.iam import policy_document
from gpu_constructs.compute.eks.karpenter import (
    KARPENTER_KUBERNETES,
    KARPENTER_NAMESPACE,
    KARPENTER_RESOURCES,
    Karpenter,
    KarpenterProps,
)
from gpu_constructs.compute.eks.nodepools import (
    AMI_FAMILIES,
    GPU_POOL,
    INSTANCE_FAMILIES,
    SEED_NODE_CLASSES,
    SEED_NODE_POOLS,
    SIZES,
    DisruptionBudget,
    NodeClassSpec,
    NodePoolSpec,
    ami_family,
    check_bottlerocket_gpu_classes,
)
from gpu_constructs.compute.eks.quotas import GpuQuotaCheck
from gpu_constructs.compute.eks.vpc import AwsVpc, AwsVpcProps, check_network
from gpu_constructs.errors import ConfigError, did_you_mean

__all__ = [
    "AMI_FAMILIES",
    "GPU_POOL",
    "GPU_TAINT",
    "KARPENTER_NAMESPACE",
    "SEED_NODE_CLASSES",
    "SEED_NODE_POOLS",
    "SYSTEM_TAINT",
    "DisruptionBudget",
    "EksGpuCompute",
    "EksProps",
    "NodeClassSpec",
    "NodePoolSpec",
    "check_eks_version",
    "check_karpenter_kubernetes",
]


NODE_MONITORING_AGENT = "eks-node-monitoring-agent"
"""The EKS add-on that reports GPU, kernel, network and storage health as node conditions."""

NAME_MAX_LENGTH = 36
"""IAM role names and EventBridge rule names may have 64 characters, and the longest one derived from
the cluster name is ``<name>-karpenter-spot-interruption`` (karpenter.py): 64 - 28."""


@dataclass(frozen=True)
class EksProps:
    """Settings of the EKS cluster, its network and Karpenter."""

    name: str
    region: str
    account_id: str
    """AWS account id (a variable reference allowed): ARNs are built from it, no API look-up at plan."""
    availability_zones: tuple[str, ...]
    """At least two; a private and a public subnet in each."""
    vpc_cidr: str = "10.0.0.0/16"
    kubernetes_version: str = versions.EKS_KUBERNETES.version
    public_access_cidrs: Sequence[str] = ("0.0.0.0/0",)
    """Networks allowed to the public API endpoint (a variable reference allowed)."""
    admin_role_arn: str | None = None
    """IAM role granted cluster-admin through an access entry."""
    system_instance_type: str = SYSTEM_INSTANCE_TYPE
    system_node_count: int = 2
    system_volume_size_gi: int = 30
    """Root volume (gp3, encrypted) of each system node."""
    single_nat_gateway: bool = True
    """One NAT gateway for all private subnets (cheap, the seed's dev); False puts one in each AZ."""
    flow_log_retention_days: int = 365
    node_classes: tuple[NodeClassSpec, ...] = SEED_NODE_CLASSES
    node_pools: tuple[NodePoolSpec, ...] = SEED_NODE_POOLS
    karpenter_replicas: int = 2
    node_repair: bool = True
    """Karpenter replaces nodes that stay unhealthy (chart feature gate nodeRepair), and the EKS
    node monitoring agent add-on reports what it sees: without the agent Karpenter sees only the
    kubelet's Ready condition, not a failed GPU (AcceleratedHardwareReady), kernel, network or disk.
    False leaves broken nodes for an operator and installs no agent."""
    extended_support: bool = False
    """Allow a Kubernetes version past EKS standard support, billed at the extended-support rate;
    also the cluster's upgrade policy (False: EKS upgrades the control plane itself when standard
    support ends, instead of moving it to extended support)."""
    karpenter_chart_version: str = versions.KARPENTER_CHART.version
    sharing: GpuSharing = field(default_factory=GpuSharing)

    def __post_init__(self) -> None:
        validate.k8s_name("cluster name", self.name)
        if len(self.name) > NAME_MAX_LENGTH:
            raise ConfigError(
                "cluster name",
                self.name,
                f"use at most {NAME_MAX_LENGTH} characters: IAM role and EventBridge rule names "
                f"derived from it (<name>-karpenter-spot-interruption) may have 64",
            )
        if self.region not in versions.AWS_REGIONS:
            raise ConfigError(
                "region",
                self.region,
                f"{did_you_mean(self.region, versions.AWS_REGIONS)}use an AWS region where EKS runs: "
                f"{', '.join(versions.AWS_REGIONS)}",
            )
        check_network(self.availability_zones, self.vpc_cidr)
        for zone in self.availability_zones:
            if not zone.startswith(self.region):
                raise ConfigError("availability_zones", zone, f"use zones of region {self.region}")
        validate.version("kubernetes_version", self.kubernetes_version, r"1\.\d{2}", "1.35")
        check_eks_version(self.kubernetes_version, extended_support=self.extended_support)
        check_karpenter_kubernetes(self.karpenter_chart_version, self.kubernetes_version)
        family, _, size = self.system_instance_type.partition(".")
        if family not in INSTANCE_FAMILIES or INSTANCE_FAMILIES[family] or size not in SIZES:
            raise ConfigError(
                "system_instance_type",
                self.system_instance_type,
                "use a non-GPU type such as t3.small or m6i.large (family.size of a known family)",
            )
        validate.int_range("system_node_count", self.system_node_count, 1, 10)
        validate.int_range("system_volume_size_gi", self.system_volume_size_gi, 20, 16384)
        validate.int_range("karpenter_replicas", self.karpenter_replicas, 1, 5)
        # What the library itself puts on the system nodes must fit them: Karpenter's guaranteed
        # replicas and the EKS add-ons' pods. The charts' pods (monitoring, KEDA, the controllers)
        # are known only once rendered: tests/compute/test_eks_system_capacity.py packs all of them.
        karpenter = PodRequests(
            "Karpenter",
            False,
            self.karpenter_replicas,
            int(KARPENTER_RESOURCES["cpu"]) * 1000,
            int(KARPENTER_RESOURCES["memory"].removesuffix("Gi")) * 1024,
        )
        if allocatable(self.system_instance_type) is not None:
            problems = unplaced(
                [karpenter, *SYSTEM_ADDON_PODS], self.system_node_count, self.system_instance_type
            )
            if problems:
                raise ConfigError(
                    "system_instance_type",
                    self.system_instance_type,
                    f"{self.system_node_count} such nodes cannot hold Karpenter's {self.karpenter_replicas} "
                    f"replicas of {KARPENTER_RESOURCES['cpu']} CPU and {KARPENTER_RESOURCES['memory']} "
                    f"with the EKS add-ons ({problems[0]}); use a larger type such as "
                    f"{SYSTEM_INSTANCE_TYPE} or raise system_node_count",
                )
        validate.unique("node_classes", (c.name for c in self.node_classes))
        validate.unique("node_pools", (p.name for p in self.node_pools))
        classes = {c.name for c in self.node_classes}
        for pool in self.node_pools:
            if pool.node_class not in classes:
                raise ConfigError(
                    f"{pool.name}.node_class", pool.node_class, f"use one of {', '.join(sorted(classes))}"
                )
        gpu_pools = [p for p in self.node_pools if p.name == GPU_POOL]
        if not gpu_pools or not gpu_pools[0].has_gpus or gpu_pools[0].gpu_limit is None:
            raise ConfigError(
                "node_pools", GPU_POOL, f"keep a {GPU_POOL!r} pool of GPU instance families with a gpu_limit"
            )
        check_bottlerocket_gpu_classes(self.node_classes, self.node_pools, self.sharing)

    @property
    def gpu_ami_family(self) -> str:
        """The AMI family of the GPU pool's nodes."""
        gpu_pool = next(p for p in self.node_pools if p.name == GPU_POOL)
        return ami_family(next(c.ami_alias for c in self.node_classes if c.name == gpu_pool.node_class))


def check_karpenter_kubernetes(chart_version: str, kubernetes_version: str) -> None:
    """Refuse a Kubernetes version outside what the Karpenter chart release supports, where the
    range of that release is recorded (KARPENTER_KUBERNETES); an unrecorded release is not checked."""
    supported = KARPENTER_KUBERNETES.get(chart_version)
    if supported is None:
        return

    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))

    low, high = supported
    if not key(low) <= key(kubernetes_version) <= key(high):
        raise ConfigError(
            "kubernetes_version",
            kubernetes_version,
            f"Karpenter {chart_version} supports Kubernetes {low} to {high} (its compatibility matrix); "
            "use a version in that range, or move karpenter_chart_version (versions.KARPENTER_CHART) to a "
            "release that supports it",
        )


def check_eks_version(
    version: str, *, extended_support: bool = False, on: date = versions.EKS_SUPPORT_RECORDED
) -> None:
    """Refuse a Kubernetes version EKS does not offer, or one past standard support (within
    EKS_STANDARD_SUPPORT_MARGIN_DAYS of ``on``) unless ``extended_support`` opts into its billing.

    ``on`` is the day the support table was recorded, not today: synth stays deterministic, and
    moving the table forward (with its date) is what makes an old version fail."""
    support = versions.EKS_SUPPORT.get(version)
    horizon = on + timedelta(days=versions.EKS_STANDARD_SUPPORT_MARGIN_DAYS)

    def key(v: str) -> tuple[int, ...]:
        return tuple(map(int, v.split(".")))

    offered = sorted((v for v, s in versions.EKS_SUPPORT.items() if s.extended_until > on), key=key)
    standard = sorted((v for v, s in versions.EKS_SUPPORT.items() if s.standard_until > horizon), key=key)
    if support is None or support.extended_until <= on:
        why = (
            "not in EKS's release calendar"
            if support is None
            else f"out of EKS support since {support.extended_until}"
        )
        raise ConfigError(
            "kubernetes_version",
            version,
            f"{why} ({versions.EKS_SUPPORT_SOURCE}); use one of {', '.join(offered)}",
        )
    if support.standard_until <= horizon and not extended_support:
        raise ConfigError(
            "kubernetes_version",
            version,
            f"EKS standard support ends {support.standard_until} (calendar as of {on}), then the "
            f"cluster is billed for extended support; use {' or '.join(standard) or 'a newer version'}, "
            "or set extended_support=True to pay for it",
        )


def support_check(scope: Construct, version: str, *, extended_support: bool = False) -> dict[str, Any]:
    """A Terraform ``check`` block that warns at every plan once ``version`` has left EKS support.

    Synth checks the version against the day the support table was recorded
    (versions.EKS_SUPPORT_RECORDED), so its output does not depend on the day it runs; this check
    compares the real date of each plan (``plantimestamp()``) with the end of support, and a failed
    check is a warning that does not stop the plan (Terraform 1.5+). Returns what it adds to the
    stack's ``locals`` and ``check`` sections."""
    support = versions.EKS_SUPPORT[version]
    until = support.extended_until if extended_support else support.standard_until
    if extended_support:
        what = f"Kubernetes {version} leaves EKS extended support on {until}: EKS then upgrades the cluster"
    else:
        what = (
            f"Kubernetes {version} leaves EKS standard support on {until}: EKS then upgrades the control "
            "plane itself (upgrade policy STANDARD)"
        )
    name = f"eks_kubernetes_{version.replace('.', '_')}_support"
    # Terraform refuses an assertion that refers to nothing in the configuration (timecmp of two
    # constants): the end of support is a local value, which also shows in the warning.
    ends = f"{name}_ends"
    block = {
        "assert": [
            {
                "condition": f"${{timecmp(plantimestamp(), local.{ends}) < 0}}",
                "error_message": f"{what}; move kubernetes_version to a newer version "
                f"({versions.EKS_SUPPORT_SOURCE}).",
            }
        ]
    }
    stack = TerraformStack.of(scope)
    stack.add_override(f"locals.{ends}", f"{until.isoformat()}T00:00:00Z")
    stack.add_override(f"check.{name}", block)
    return {"locals": {ends: f"{until.isoformat()}T00:00:00Z"}, "check": {name: block}}


class EksGpuCompute(Construct):
    """VPC, EKS, system nodes and Karpenter with scale-to-zero GPU capacity."""

    cluster: GpuCluster

    def __init__(self, scope: Construct, id: str, *, props: EksProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self._arn_prefix = f"arn:aws:iam::{props.account_id}"
        self.kms = KmsKey(
            self,
            "kms",
            description=f"{props.name}: EKS secrets and logs",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=self._kms_policy(),
        )
        self.network = AwsVpc(
            self,
            "network",
            resource_scope=self,
            props=AwsVpcProps(
                name=props.name,
                availability_zones=props.availability_zones,
                kms_key_arn=self.kms.arn,
                vpc_cidr=props.vpc_cidr,
                single_nat_gateway=props.single_nat_gateway,
                flow_log_retention_days=props.flow_log_retention_days,
            ),
        )
        self.vpc = self.network.vpc
        self.private_subnets = self.network.private_subnets
        self.public_subnets = self.network.public_subnets
        self.control_plane = EksSystemCluster(
            self,
            "control-plane",
            resource_scope=self,
            props=EksSystemClusterProps(
                name=props.name,
                kubernetes_version=props.kubernetes_version,
                subnet_ids=[s.id for s in self.private_subnets],
                node_network=self.network.egress,
                kms_key_arn=self.kms.arn,
                public_access_cidrs=props.public_access_cidrs,
                admin_role_arn=props.admin_role_arn,
                system_instance_type=props.system_instance_type,
                system_node_count=props.system_node_count,
                system_volume_size_gi=props.system_volume_size_gi,
                log_retention_days=props.flow_log_retention_days,
                extended_support=props.extended_support,
            ),
        )
        self.eks = self.control_plane.eks
        support_check(self, props.kubernetes_version, extended_support=props.extended_support)
        self.system_nodes = self.control_plane.system_nodes
        gpu_pool = next(p for p in props.node_pools if p.name == GPU_POOL)
        assert gpu_pool.gpu_limit is not None
        self.cluster = GpuCluster(
            name=props.name,
            access=KubeAccess(
                host=self.eks.endpoint,
                cluster_ca_certificate=Fn.base64decode(self.eks.certificate_authority.get(0).data),
                exec_api_version="client.authentication.k8s.io/v1beta1",
                exec_command="aws",
                exec_args=("eks", "get-token", "--cluster-name", props.name, "--region", props.region),
            ),
            gpu_node_selector={"karpenter.sh/nodepool": GPU_POOL},
            gpu_taint=GPU_TAINT,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class=None,
            driver=Manager.IMAGE,
            toolkit=Manager.IMAGE,
            sharing=props.sharing,
            node_pool_labels=dict(gpu_pool.labels),
            gpu_capacity=gpu_pool.gpu_limit * props.sharing.time_slicing_replicas,
            ready=(
                self.control_plane.system_nodes,
                *self.control_plane.addons,
                *self.control_plane.admin_access,
            ),
            # Replaced (a new name, subnets, encryption: what the provider forces a new cluster
            # for), the EKS cluster is a new, empty control plane.
            identity=(self.eks,),
        )
        self.karpenter = Karpenter(
            self,
            "karpenter-controller",
            resource_scope=self,
            props=KarpenterProps(
                cluster_name=props.name,
                region=props.region,
                account_id=props.account_id,
                cluster=self.eks,
                gpu_cluster=self.cluster,
                launch_prerequisites=[self.control_plane.security_group_discovery],
                node_classes=props.node_classes,
                node_pools=props.node_pools,
                kubernetes_version=props.kubernetes_version,
                replicas=props.karpenter_replicas,
                chart_version=props.karpenter_chart_version,
                node_repair=props.node_repair,
                sharing=props.sharing,
            ),
        )
        # Read at plan, before anything is created: a new account's G and P quotas are 0 vCPUs.
        self.gpu_quotas = GpuQuotaCheck(
            self, "gpu-quotas", pools=[p for p in props.node_pools if p.has_gpus], region=props.region
        )
        self.interruption_queue = self.karpenter.interruption_queue
        self.node_pools = self.karpenter.node_pools
        # The Metrics API behind HorizontalPodAutoscalers: EKS's metrics-server community add-on. Its
        # pods do not tolerate the system nodes' taint, so it comes after the NodePools that give it
        # a node (the add-on reports ACTIVE only once its pods run).
        self.metrics_server = addon(
            self, "addon-metrics-server", self.eks, "metrics-server", depends_on=[self.node_pools]
        )
        # Karpenter's node repair acts on the node conditions this agent sets: AcceleratedHardwareReady
        # (the NVIDIA GPU, replaced after 10 minutes), ContainerRuntimeReady, KernelReady,
        # NetworkingReady and StorageReady (30 minutes), besides the kubelet's Ready (EKS user guide,
        # "Automatically repair nodes in EKS clusters" and "Detect node health issues and enable
        # automatic node repair"). Without it Karpenter sees only Ready. A DaemonSet on every node,
        # the GPU nodes Karpenter launches included.
        self.node_monitoring = (
            addon(
                self,
                "addon-eks-node-monitoring-agent",
                self.eks,
                NODE_MONITORING_AGENT,
                depends_on=[self.system_nodes],
            )
            if props.node_repair
            else None
        )

    @property
    def name(self) -> str:
        """The cluster's name, which the stack's AWS resources are named after."""
        return self.props.name

    @property
    def region(self) -> str:
        return self.props.region

    @property
    def account_id(self) -> str:
        return self.props.account_id

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        """The managed system node group, then one group per Karpenter NodePool."""
        props = self.props
        groups = [
            NodeGroup(
                "system node group",
                # The group's name carries a unique suffix (a replacement gets a new one): its nodes
                # are known by the label the group gives them.
                members=dict([SYSTEM_LABEL]),
                labels=dict([SYSTEM_LABEL]),
                taints=(SYSTEM_TAINT,),
                instance_types=(props.system_instance_type,),
                gpus_per_node=0,
                min_nodes=props.system_node_count,
                # scaling_config.max_size: one more node while a version upgrade rolls the group
                max_nodes=props.system_node_count + 1,
                system=True,
            )
        ]
        for pool in props.node_pools:
            groups.append(
                NodeGroup(
                    f"nodepool {pool.name}",
                    members={"karpenter.sh/nodepool": pool.name},
                    labels=dict(pool.labels),
                    taints=tuple(pool.taints),
                    label_choices=dict(pool.requirements()),
                    instance_types=pool.instance_types,
                    gpu=pool.has_gpus,
                    # The instance type Karpenter picks decides the GPUs; it labels the node with the count.
                    gpus_per_node=None if pool.has_gpus else 0,
                    gpu_model=pool.gpu_model,
                    # Karpenter keeps no minimum: a NodePool has nodes only while pods need them.
                    min_nodes=0,
                    scales_to_zero=pool.scale_to_zero,
                )
            )
        return tuple(groups)

    @property
    def platform(self) -> PlatformFacts:
        """No StorageClass that provisions and no IngressClass until a controller adds one. EKS still
        creates its ``gp2`` class, but from 1.30 without the default annotation, and its in-tree
        ``kubernetes.io/aws-ebs`` provisioner is served by the EBS CSI driver (CSI migration, GA in
        Kubernetes 1.25; the in-tree plugin is gone since 1.27), which this compute does not install:
        a claim on it would stay Pending."""
        cluster = self.cluster
        return PlatformFacts(
            kubernetes_version=self.props.kubernetes_version,
            driver=cluster.driver,
            toolkit=cluster.toolkit,
            # Bottlerocket's NVIDIA variants run NVIDIA's device plugin as a host service
            # (bottlerocket-os/bottlerocket-core-kit packages/nvidia-k8s-device-plugin); the AL2023
            # NVIDIA AMI brings none (the stack installs the chart's DaemonSet).
            device_plugin=Manager.IMAGE if self.props.gpu_ami_family == "bottlerocket" else Manager.STACK,
        )

    def _kms_policy(self) -> str:
        props = self.props
        return policy_document(
            {
                "Sid": "Account",
                "Effect": "Allow",
                "Principal": {"AWS": f"{self._arn_prefix}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                # CloudWatch Logs may use the key only for this stack's two log groups: the control
                # plane's and the VPC flow logs' (CloudWatch Logs user guide, "Encrypt log data in
                # CloudWatch Logs using AWS KMS": the kms:EncryptionContext:aws:logs:arn condition).
                # Any other log group in the account, or in another account, is refused.
                "Sid": "CloudWatchLogs",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{props.region}.amazonaws.com"},
                "Action": [
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": self.log_group_arns}},
            },
        )

    @property
    def log_group_arns(self) -> list[str]:
        """The log groups this key encrypts (cluster.py and vpc.py name them so)."""
        props = self.props
        logs = f"arn:aws:logs:{props.region}:{props.account_id}:log-group"
        return [f"{logs}:/aws/eks/{props.name}/cluster", f"{logs}:/aws/vpc/{props.name}/flow-logs"]
