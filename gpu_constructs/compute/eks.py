"""GpuCompute for AWS: VPC, EKS with a system node group, and Karpenter with GPU node pools.

The GPU nodes come from a Karpenter NodePool that scales to zero; the AL2023 NVIDIA AMI brings the
driver and the container toolkit, so the contract says the image manages them. Karpenter's
custom resources are installed by a Helm release after the Karpenter chart (which brings the CRDs),
so nothing needs a live cluster at plan time.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cdktf import Fn, Token
from cdktf_cdktf_provider_aws.cloudwatch_event_rule import CloudwatchEventRule
from cdktf_cdktf_provider_aws.cloudwatch_event_target import CloudwatchEventTarget
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.default_security_group import DefaultSecurityGroup
from cdktf_cdktf_provider_aws.ec2_tag import Ec2Tag
from cdktf_cdktf_provider_aws.eip import Eip
from cdktf_cdktf_provider_aws.eks_access_entry import EksAccessEntry
from cdktf_cdktf_provider_aws.eks_access_policy_association import EksAccessPolicyAssociation
from cdktf_cdktf_provider_aws.eks_addon import EksAddon
from cdktf_cdktf_provider_aws.eks_cluster import EksCluster
from cdktf_cdktf_provider_aws.eks_node_group import EksNodeGroup, EksNodeGroupTaint
from cdktf_cdktf_provider_aws.eks_pod_identity_association import EksPodIdentityAssociation
from cdktf_cdktf_provider_aws.flow_log import FlowLog
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy import IamRolePolicy
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.internet_gateway import InternetGateway
from cdktf_cdktf_provider_aws.kms_key import KmsKey
from cdktf_cdktf_provider_aws.launch_template import (
    LaunchTemplate,
    LaunchTemplateBlockDeviceMappings,
    LaunchTemplateBlockDeviceMappingsEbs,
)
from cdktf_cdktf_provider_aws.nat_gateway import NatGateway
from cdktf_cdktf_provider_aws.route_table import RouteTable, RouteTableRoute
from cdktf_cdktf_provider_aws.route_table_association import RouteTableAssociation
from cdktf_cdktf_provider_aws.sqs_queue import SqsQueue
from cdktf_cdktf_provider_aws.sqs_queue_policy import SqsQueuePolicy
from cdktf_cdktf_provider_aws.subnet import Subnet
from cdktf_cdktf_provider_aws.vpc import Vpc
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster, GpuSharing, KubeAccess, Manager, Taint
from gpu_constructs.errors import ConfigError
from gpu_constructs.iam import policy_document, service_trust

KARPENTER_NAMESPACE = "karpenter"
GPU_POOL = "gpu-inference"
GPU_TAINT = Taint("nvidia.com/gpu", "true", "NoSchedule")
SYSTEM_TAINT = Taint("CriticalAddonsOnly", "true", "NoSchedule")

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
SIZES = ("small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")
DURATION = re.compile(r"^([0-9]+(s|m|h))+$|^Never$")


AMI_FAMILIES = ("al2023", "bottlerocket")
"""Linux AMI families with NVIDIA variants that Karpenter selects by alias on current EKS."""


@dataclass(frozen=True)
class NodeClassSpec:
    """A Karpenter EC2NodeClass: AMI family and root volume."""

    name: str
    volume_size_gi: int
    iops: int = 3000
    throughput_mibs: int = 125
    ami_alias: str = "al2023@latest"
    """``family@version``: Karpenter picks the NVIDIA variant of AL2023 or Bottlerocket for GPU
    instance types by itself. Pin a release (``al2023@v20251120``) to roll AMIs out deliberately."""

    def __post_init__(self) -> None:
        validate.k8s_name("node class name", self.name)
        validate.int_range(f"{self.name}.volume_size_gi", self.volume_size_gi, 20, 16384)
        validate.int_range(f"{self.name}.iops", self.iops, 3000, 16000, why="gp3 allows 3000 to 16000")
        validate.int_range(
            f"{self.name}.throughput_mibs", self.throughput_mibs, 125, 1000, why="gp3 allows 125 to 1000"
        )
        family, _, release = self.ami_alias.partition("@")
        if family not in AMI_FAMILIES or not re.fullmatch(r"latest|v[0-9][0-9.]*", release):
            raise ConfigError(
                f"{self.name}.ami_alias",
                self.ami_alias,
                f"use family@version with a family of {', '.join(AMI_FAMILIES)} (EKS publishes no AL2 "
                "AMIs for Kubernetes 1.33 and later) and version latest or a release such as "
                "al2023@v20251120",
            )


BUDGET_NODES = re.compile(r"^((100|[0-9]{1,2})%|[0-9]+)$")
BUDGET_REASONS = ("Underutilized", "Empty", "Drifted")


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
        if self.duration is not None and not re.fullmatch(r"([0-9]+(s|m|h))+", self.duration):
            raise ConfigError("budget.duration", self.duration, "give a duration such as 8h or 30m")

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

    def __post_init__(self) -> None:
        validate.k8s_name("node pool name", self.name)
        for name, value in (
            ("termination_grace_period", self.termination_grace_period),
            ("expire_after", self.expire_after),
        ):
            if value is not None and not DURATION.match(value):
                raise ConfigError(f"{self.name}.{name}", value, "give a duration such as 30m, 24h or Never")
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
    ),
)


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
    system_instance_type: str = "t3.small"
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
    """Karpenter replaces nodes whose kubelet or NVIDIA GPU reports unhealthy (chart feature gate
    nodeRepair); False leaves broken nodes for an operator."""
    karpenter_chart_version: str = versions.KARPENTER_CHART.version
    sharing: GpuSharing = field(default_factory=GpuSharing)

    def __post_init__(self) -> None:
        validate.k8s_name("cluster name", self.name)
        if len(self.availability_zones) < 2:
            raise ConfigError(
                "availability_zones",
                self.availability_zones,
                "give at least two zones: EKS needs subnets in two",
            )
        validate.unique("availability_zones", self.availability_zones)
        for zone in self.availability_zones:
            if not zone.startswith(self.region):
                raise ConfigError("availability_zones", zone, f"use zones of region {self.region}")
        network = validate.cidr("vpc_cidr", self.vpc_cidr)
        if network.prefixlen > 20:
            raise ConfigError(
                "vpc_cidr", self.vpc_cidr, "use a /20 or larger network for the subnets and pods"
            )
        validate.version("kubernetes_version", self.kubernetes_version, r"1\.\d{2}", "1.34")
        check_eks_version(self.kubernetes_version, date.today())
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

    def subnets(self) -> tuple[list[str], list[str]]:
        """(private, public) CIDRs: /3 larger private subnets first, small public ones at the end."""
        network = ipaddress.IPv4Network(self.vpc_cidr)
        quarters = list(network.subnets(new_prefix=network.prefixlen + 3))
        private = [str(s) for s in quarters[: len(self.availability_zones)]]
        public_block = quarters[-1]
        public = [
            str(s)
            for s in list(public_block.subnets(new_prefix=public_block.prefixlen + 3))[
                : len(self.availability_zones)
            ]
        ]
        if len(self.availability_zones) > 7:
            raise ConfigError("availability_zones", self.availability_zones, "use at most 7 zones")
        return private, public


def check_eks_version(version: str, today: date) -> None:
    """Refuse a Kubernetes version EKS does not offer for new clusters on ``today``."""
    support = versions.EKS_SUPPORT.get(version)
    offered = sorted(
        (v for v, s in versions.EKS_SUPPORT.items() if s.extended_until > today),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    if support is None or support.extended_until <= today:
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


class EksGpuCompute(Construct):
    """VPC, EKS, system nodes and Karpenter with scale-to-zero GPU capacity."""

    cluster: GpuCluster

    def __init__(self, scope: Construct, id: str, *, props: EksProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self._arn_prefix = f"arn:aws:iam::{props.account_id}"
        self._network()
        self._control_plane()
        self._system_nodes()
        self._karpenter_aws()
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
            ready=(self.system_nodes, *self.addons),
        )
        self._karpenter_cluster()

    # --- network --------------------------------------------------------------------------------------
    def _network(self) -> None:
        props = self.props
        tags = {"Name": props.name}
        self.vpc = Vpc(
            self,
            "vpc",
            cidr_block=props.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=tags,
        )
        # The VPC's default security group allows nothing: every resource here gets its own group.
        DefaultSecurityGroup(self, "default-security-group", vpc_id=self.vpc.id, tags=tags)
        igw = InternetGateway(self, "igw", vpc_id=self.vpc.id, tags=tags)
        private_cidrs, public_cidrs = props.subnets()
        self.public_subnets = [
            Subnet(
                self,
                f"public-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                tags={"Name": f"{props.name}-public-{zone}", "kubernetes.io/role/elb": "1"},
            )
            for zone, cidr in zip(props.availability_zones, public_cidrs, strict=True)
        ]
        self.private_subnets = [
            Subnet(
                self,
                f"private-{zone}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=zone,
                tags={
                    "Name": f"{props.name}-private-{zone}",
                    "kubernetes.io/role/internal-elb": "1",
                    "karpenter.sh/discovery": props.name,
                },
            )
            for zone, cidr in zip(props.availability_zones, private_cidrs, strict=True)
        ]
        public_routes = RouteTable(
            self,
            "public-routes",
            vpc_id=self.vpc.id,
            route=[RouteTableRoute(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=tags,
        )
        for subnet, zone in zip(self.public_subnets, props.availability_zones, strict=True):
            RouteTableAssociation(
                self, f"public-{zone}-routes", subnet_id=subnet.id, route_table_id=public_routes.id
            )
        nat_count = 1 if props.single_nat_gateway else len(props.availability_zones)
        nats = []
        for index in range(nat_count):
            zone = props.availability_zones[index]
            address = Eip(self, f"nat-{zone}-address", domain="vpc", tags=tags)
            nats.append(
                NatGateway(
                    self,
                    f"nat-{zone}",
                    allocation_id=address.id,
                    subnet_id=self.public_subnets[index].id,
                    tags=tags,
                    depends_on=[igw],
                )
            )
        for index, (subnet, zone) in enumerate(
            zip(self.private_subnets, props.availability_zones, strict=True)
        ):
            nat = nats[index % nat_count]
            routes = RouteTable(
                self,
                f"private-{zone}-routes",
                vpc_id=self.vpc.id,
                route=[RouteTableRoute(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags=tags,
            )
            RouteTableAssociation(
                self, f"private-{zone}-association", subnet_id=subnet.id, route_table_id=routes.id
            )

        self.kms = KmsKey(
            self,
            "kms",
            description=f"{props.name}: EKS secrets and logs",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=self._kms_policy(),
        )
        flow_logs = CloudwatchLogGroup(
            self,
            "flow-logs",
            name=f"/aws/vpc/{props.name}/flow-logs",
            retention_in_days=props.flow_log_retention_days,
            kms_key_id=self.kms.arn,
        )
        flow_role = IamRole(
            self,
            "flow-logs-role",
            name=f"{props.name}-flow-logs",
            assume_role_policy=service_trust("vpc-flow-logs.amazonaws.com"),
        )
        IamRolePolicy(
            self,
            "flow-logs-policy",
            role=flow_role.id,
            policy=policy_document(
                {
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    "Resource": f"{flow_logs.arn}:*",
                }
            ),
        )
        FlowLog(
            self,
            "flow-log",
            vpc_id=self.vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_logs.arn,
            iam_role_arn=flow_role.arn,
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
            },
        )

    # --- control plane --------------------------------------------------------------------------------
    def _control_plane(self) -> None:
        props = self.props
        role = IamRole(
            self,
            "cluster-role",
            name=f"{props.name}-cluster",
            assume_role_policy=service_trust("eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        attachment = IamRolePolicyAttachment(
            self,
            "cluster-policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
        )
        # Created before the cluster (as terraform-aws-eks does): EKS would otherwise create the group
        # itself on first log delivery, and the next apply would collide with it.
        cluster_logs = CloudwatchLogGroup(
            self,
            "cluster-logs",
            name=f"/aws/eks/{props.name}/cluster",
            retention_in_days=props.flow_log_retention_days,
            kms_key_id=self.kms.arn,
        )
        self.eks = EksCluster(
            self,
            "cluster",
            name=props.name,
            role_arn=role.arn,
            version=props.kubernetes_version,
            vpc_config={
                "subnet_ids": [s.id for s in self.private_subnets],
                "endpoint_private_access": True,
                "endpoint_public_access": True,
                "public_access_cidrs": list(props.public_access_cidrs),
            },
            encryption_config={"provider": {"key_arn": self.kms.arn}, "resources": ["secrets"]},
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            enabled_cluster_log_types=["api", "audit", "authenticator", "controllerManager", "scheduler"],
            depends_on=[attachment, cluster_logs],
        )
        # Karpenter finds the security group for its nodes by this tag, like the private subnets.
        Ec2Tag(
            self,
            "cluster-security-group-discovery",
            resource_id=self.eks.vpc_config.cluster_security_group_id,
            key="karpenter.sh/discovery",
            value=props.name,
        )
        if props.admin_role_arn is not None:
            entry = EksAccessEntry(
                self, "admin-access", cluster_name=self.eks.name, principal_arn=props.admin_role_arn
            )
            EksAccessPolicyAssociation(
                self,
                "admin-access-policy",
                cluster_name=self.eks.name,
                principal_arn=entry.principal_arn,
                policy_arn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                access_scope={"type": "cluster"},
            )

    def _node_role(self, id: str, name: str) -> IamRole:
        role = IamRole(self, id, name=name, assume_role_policy=service_trust("ec2.amazonaws.com"))
        for policy in (
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryReadOnly",
            "AmazonSSMManagedInstanceCore",
        ):
            IamRolePolicyAttachment(
                self, f"{id}-{policy}", role=role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}"
            )
        return role

    def _system_nodes(self) -> None:
        props = self.props
        role = self._node_role("system-node-role", f"{props.name}-system-nodes")
        template = LaunchTemplate(
            self,
            "system-nodes-template",
            name=f"{props.name}-system",
            metadata_options={
                "http_tokens": "required",
                "http_put_response_hop_limit": 1,
                "http_endpoint": "enabled",
            },
            # The AL2023 EKS AMIs boot from /dev/xvda; EC2 refuses a mapping without a device name.
            block_device_mappings=[
                LaunchTemplateBlockDeviceMappings(
                    device_name="/dev/xvda",
                    ebs=LaunchTemplateBlockDeviceMappingsEbs(
                        volume_size=props.system_volume_size_gi,
                        volume_type="gp3",
                        encrypted="true",
                        delete_on_termination="true",
                    ),
                )
            ],
        )
        self.system_nodes = EksNodeGroup(
            self,
            "system-nodes",
            cluster_name=self.eks.name,
            node_group_name="system",
            node_role_arn=role.arn,
            subnet_ids=[s.id for s in self.private_subnets],
            instance_types=[props.system_instance_type],
            capacity_type="ON_DEMAND",
            ami_type="AL2023_x86_64_STANDARD",
            scaling_config={
                "desired_size": props.system_node_count,
                "min_size": props.system_node_count,
                "max_size": props.system_node_count + 1,
            },
            taint=[EksNodeGroupTaint(key=SYSTEM_TAINT.key, value=SYSTEM_TAINT.value, effect="NO_SCHEDULE")],
            labels={"role": "system"},
            launch_template={"id": template.id, "version": Token.as_string(template.latest_version)},
        )
        self.addons = [
            EksAddon(
                self,
                f"addon-{name}",
                cluster_name=self.eks.name,
                addon_name=name,
                depends_on=[self.system_nodes],
            )
            for name in ("vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent")
        ]

    # --- Karpenter: AWS side --------------------------------------------------------------------------
    def _karpenter_aws(self) -> None:
        props = self.props
        self.karpenter_node_role = self._node_role("karpenter-node-role", f"{props.name}-karpenter-nodes")
        EksAccessEntry(
            self,
            "karpenter-node-access",
            cluster_name=self.eks.name,
            principal_arn=self.karpenter_node_role.arn,
            type="EC2_LINUX",
        )
        self.interruption_queue = SqsQueue(
            self,
            "interruption-queue",
            name=f"{props.name}-karpenter",
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
        )
        SqsQueuePolicy(
            self,
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
                self,
                f"karpenter-{name}",
                name=f"{props.name}-karpenter-{name}",
                event_pattern=json.dumps(pattern, sort_keys=True),
            )
            CloudwatchEventTarget(
                self,
                f"karpenter-{name}-target",
                rule=rule.name,
                target_id="karpenter-interruption-queue",
                arn=self.interruption_queue.arn,
            )

        controller = IamRole(
            self,
            "karpenter-controller-role",
            name=f"{props.name}-karpenter-controller",
            assume_role_policy=service_trust("pods.eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        IamRolePolicy(
            self, "karpenter-controller-policy", role=controller.id, policy=self._karpenter_policy()
        )
        self.karpenter_identity = EksPodIdentityAssociation(
            self,
            "karpenter-pod-identity",
            cluster_name=self.eks.name,
            namespace=KARPENTER_NAMESPACE,
            service_account="karpenter",
            role_arn=controller.arn,
        )

    def _karpenter_policy(self) -> str:
        """Karpenter's controller permissions, scoped as terraform-aws-eks ``modules/karpenter``
        (policy.tf, v1 policy) and Karpenter's getting-started CloudFormation scope them: what it
        creates must carry this cluster's tags, what it changes or deletes must already carry them."""
        props = self.props
        cluster = props.name
        ec2 = f"arn:aws:ec2:{props.region}"
        owned_request = {
            f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
            "aws:RequestTag/eks:eks-cluster-name": cluster,
        }
        owned_resource = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
        created = [
            f"{ec2}:*:{kind}/*"
            for kind in (
                "fleet",
                "instance",
                "volume",
                "network-interface",
                "launch-template",
                "spot-instances-request",
            )
        ]
        profile_tags = {"aws:ResourceTag/topology.kubernetes.io/region": props.region, **owned_resource}
        return policy_document(
            {
                "Sid": "AllowScopedEC2InstanceAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": [
                    f"{ec2}::image/*",
                    f"{ec2}::snapshot/*",
                    f"{ec2}:*:security-group/*",
                    f"{ec2}:*:subnet/*",
                    f"{ec2}:*:capacity-reservation/*",
                ],
            },
            {
                "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
                "Resource": f"{ec2}:*:launch-template/*",
                "Condition": {
                    "StringEquals": owned_resource,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedEC2InstanceActionsWithTags",
                "Effect": "Allow",
                "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                "Resource": created,
                "Condition": {
                    "StringEquals": owned_request,
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceCreationTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": created,
                "Condition": {
                    "StringEquals": {
                        **owned_request,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowScopedResourceTagging",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": f"{ec2}:*:instance/*",
                "Condition": {
                    "StringEquals": owned_resource,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            },
            {
                "Sid": "AllowScopedDeletion",
                "Effect": "Allow",
                "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                "Condition": {
                    "StringEquals": owned_resource,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                },
            },
            {
                "Sid": "AllowRegionalReadActions",
                "Effect": "Allow",
                # DescribeInstanceStatus: Karpenter's instance health checks (node repair);
                # DescribeCapacityReservations: capacity-reservation NodePools.
                "Action": [
                    "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:RequestedRegion": props.region}},
            },
            {
                # The AMI aliases resolve through the public /aws/service/ parameters.
                "Sid": "AllowSSMReadActions",
                "Effect": "Allow",
                "Action": "ssm:GetParameter",
                "Resource": f"arn:aws:ssm:{props.region}::parameter/aws/service/*",
            },
            {
                # No region condition: the pricing API lives in us-east-1 and a few other regions.
                "Sid": "AllowPricingReadActions",
                "Effect": "Allow",
                "Action": "pricing:GetProducts",
                "Resource": "*",
            },
            {
                "Sid": "AllowInterruptionQueueActions",
                "Effect": "Allow",
                "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                "Resource": self.interruption_queue.arn,
            },
            {
                "Sid": "AllowPassingInstanceRole",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": self.karpenter_node_role.arn,
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
            },
            {
                "Sid": "AllowScopedInstanceProfileCreationActions",
                "Effect": "Allow",
                "Action": "iam:CreateInstanceProfile",
                "Resource": f"{self._arn_prefix}:instance-profile/*",
                "Condition": {
                    "StringEquals": {
                        f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
                        "aws:RequestTag/eks:eks-cluster-name": cluster,
                        "aws:RequestTag/topology.kubernetes.io/region": props.region,
                    },
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileTagActions",
                "Effect": "Allow",
                "Action": "iam:TagInstanceProfile",
                "Resource": f"{self._arn_prefix}:instance-profile/*",
                "Condition": {
                    "StringEquals": {
                        **profile_tags,
                        f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
                        "aws:RequestTag/eks:eks-cluster-name": cluster,
                        "aws:RequestTag/topology.kubernetes.io/region": props.region,
                    },
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            },
            {
                "Sid": "AllowScopedInstanceProfileActions",
                "Effect": "Allow",
                "Action": [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                "Resource": f"{self._arn_prefix}:instance-profile/*",
                "Condition": {
                    "StringEquals": profile_tags,
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            },
            {
                "Sid": "AllowInstanceProfileReadActions",
                "Effect": "Allow",
                "Action": ["iam:GetInstanceProfile", "iam:ListInstanceProfiles"],
                "Resource": "*",
            },
            {
                "Sid": "AllowAPIServerEndpointDiscovery",
                "Effect": "Allow",
                "Action": "eks:DescribeCluster",
                "Resource": self.eks.arn,
            },
        )

    # --- Karpenter: cluster side ----------------------------------------------------------------------
    def _karpenter_cluster(self) -> None:
        props = self.props
        self.karpenter = helm.release(
            self,
            "karpenter",
            name="karpenter",
            chart="karpenter",
            repository=versions.REPO_KARPENTER,
            version=props.karpenter_chart_version,
            namespace=KARPENTER_NAMESPACE,
            values={
                "replicas": props.karpenter_replicas,
                "settings": {
                    "clusterName": props.name,
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
                # The chart's default affinity keeps Karpenter off the nodes it manages; with the
                # toleration below it lands on the system node group.
                "tolerations": [
                    {"key": SYSTEM_TAINT.key, "operator": "Exists", "effect": SYSTEM_TAINT.effect}
                ],
            },
            # Without its Pod Identity association the controller starts with no AWS credentials.
            depends_on=[*self.cluster.ready, self.karpenter_identity],
        )
        self.node_pools = helm.manifests_release(
            self,
            "karpenter-node-pools",
            name="karpenter-node-pools",
            namespace=KARPENTER_NAMESPACE,
            manifests=[
                *map(self.node_class_manifest, props.node_classes),
                *map(self.node_pool_manifest, props.node_pools),
            ],
            depends_on=[self.karpenter],
        )
        # The Metrics API behind HorizontalPodAutoscalers: EKS's metrics-server community add-on. Its
        # pods do not tolerate the system nodes' taint, so it comes after the NodePools that give it
        # a node (the add-on reports ACTIVE only once its pods run).
        self.metrics_server = EksAddon(
            self,
            "addon-metrics-server",
            cluster_name=self.eks.name,
            addon_name="metrics-server",
            depends_on=[self.node_pools],
        )

    def node_class_manifest(self, spec: NodeClassSpec) -> dict[str, Any]:
        discovery = {"tags": {"karpenter.sh/discovery": self.props.name}}
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
                "blockDeviceMappings": [
                    {
                        "deviceName": "/dev/xvda",
                        "ebs": {
                            "volumeSize": f"{spec.volume_size_gi}Gi",
                            "volumeType": "gp3",
                            "iops": spec.iops,
                            "throughput": spec.throughput_mibs,
                            "encrypted": True,
                            "deleteOnTermination": True,
                        },
                    }
                ],
                # Karpenter tags its instances kubernetes.io/cluster/<name> itself; the EC2NodeClass CRD
                # (1.14.1) forbids that key in spec.tags by a CEL rule.
                "tags": {"Name": f"{self.props.name}-{spec.name}"},
            },
        }

    def node_pool_manifest(self, spec: NodePoolSpec) -> dict[str, Any]:
        limits: dict[str, Any] = {"cpu": str(spec.cpu_limit), "memory": f"{spec.memory_limit_gi}Gi"}
        if spec.gpu_limit is not None:
            limits["nvidia.com/gpu"] = str(spec.gpu_limit)
        template: dict[str, Any] = {
            "spec": {
                "nodeClassRef": {
                    "group": "karpenter.k8s.aws",
                    "kind": "EC2NodeClass",
                    "name": spec.node_class,
                },
                "requirements": [
                    {
                        "key": "karpenter.k8s.aws/instance-family",
                        "operator": "In",
                        "values": list(spec.families),
                    },
                    {"key": "karpenter.k8s.aws/instance-size", "operator": "In", "values": list(spec.sizes)},
                    {
                        "key": "karpenter.sh/capacity-type",
                        "operator": "In",
                        "values": list(spec.capacity_types),
                    },
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
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
