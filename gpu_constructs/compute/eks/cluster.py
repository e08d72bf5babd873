"""EksSystemCluster: an EKS control plane with its system node group and core add-ons, as aws-cdk's
``eks.Cluster`` with its default capacity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdktf import Fn, TerraformResourceLifecycle, Token
from cdktf_cdktf_provider_aws.cloudwatch_log_group import CloudwatchLogGroup
from cdktf_cdktf_provider_aws.data_aws_eks_addon_version import DataAwsEksAddonVersion
from cdktf_cdktf_provider_aws.data_aws_ssm_parameter import DataAwsSsmParameter
from cdktf_cdktf_provider_aws.ec2_tag import Ec2Tag
from cdktf_cdktf_provider_aws.eks_access_entry import EksAccessEntry
from cdktf_cdktf_provider_aws.eks_access_policy_association import EksAccessPolicyAssociation
from cdktf_cdktf_provider_aws.eks_addon import EksAddon, EksAddonPodIdentityAssociation
from cdktf_cdktf_provider_aws.eks_cluster import EksCluster
from cdktf_cdktf_provider_aws.eks_node_group import EksNodeGroup, EksNodeGroupTaint
from cdktf_cdktf_provider_aws.iam_role import IamRole
from cdktf_cdktf_provider_aws.iam_role_policy_attachment import IamRolePolicyAttachment
from cdktf_cdktf_provider_aws.launch_template import (
    LaunchTemplate,
    LaunchTemplateBlockDeviceMappings,
    LaunchTemplateBlockDeviceMappingsEbs,
)
from constructs import Construct

from gpu_constructs import helm, validate
from gpu_constructs.cluster import GpuCluster, Taint
from gpu_constructs.compute.eks.iam import service_trust

SYSTEM_NODE_GROUP = "system"
"""The managed node group's name prefix (EKS adds a unique suffix, and labels the nodes
``eks.amazonaws.com/nodegroup`` with the whole name): its nodes are known by SYSTEM_LABEL instead."""
SYSTEM_LABEL = ("role", "system")
SYSTEM_TAINT = Taint("CriticalAddonsOnly", "true", "NoSchedule")
SYSTEM_INSTANCE_TYPE = "t3.xlarge"
"""Two of them hold what tolerates the system taint (about 4.3 vCPU and 5.5 GiB of requests with
monitoring: Karpenter's two guaranteed 1 CPU / 1Gi replicas, Prometheus's 2Gi, KEDA, the load
balancer controller, CoreDNS, the EBS CSI controller; tests/compute/test_eks_system_capacity.py packs them);
the seed's t3.small (1.9 vCPU, 1.5 GiB allocatable) does not hold Karpenter alone."""


EC2_SHAPES: dict[str, tuple[int, int, int]] = {
    # type: (vCPUs, memory MiB, max pods with the VPC CNI and no prefix delegation)
    "t3.small": (2, 2048, 11),
    "t3.medium": (2, 4096, 17),
    "t3.large": (2, 8192, 35),
    "t3.xlarge": (4, 16384, 58),
    "t3.2xlarge": (8, 32768, 58),
    "m5.large": (2, 8192, 29),
    "m5.xlarge": (4, 16384, 58),
    "m5.2xlarge": (8, 32768, 58),
    "m6i.large": (2, 8192, 29),
    "m6i.xlarge": (4, 16384, 58),
    "m6i.2xlarge": (8, 32768, 58),
    "m7i.large": (2, 8192, 29),
    "m7i.xlarge": (4, 16384, 58),
    "m7i.2xlarge": (8, 32768, 58),
    "c5.large": (2, 4096, 29),
    "c5.xlarge": (4, 8192, 58),
    "c5.2xlarge": (8, 16384, 58),
    "c6i.large": (2, 4096, 29),
    "c6i.xlarge": (4, 8192, 58),
    "c6i.2xlarge": (8, 16384, 58),
    "r5.large": (2, 16384, 29),
    "r5.xlarge": (4, 32768, 58),
    "r6i.large": (2, 16384, 29),
    "r6i.xlarge": (4, 32768, 58),
}
"""System node shapes: vCPUs and memory from EC2's instance type specifications, max pods from
aws/amazon-vpc-cni-k8s misc/eni-max-pods.txt (ENIs x (IPv4 addresses per ENI - 1) + 2; nodeadm now
computes the same from DescribeInstanceTypes)."""


def allocatable(instance_type: str) -> tuple[int, int] | None:
    """What the kubelet of an EKS AL2023 node offers pods, in millicores and MiB, or None for a type
    not in EC2_SHAPES. nodeadm reserves for the kubelet (awslabs/amazon-eks-ami nodeadm,
    internal/kubelet/config.go, getMemoryMebibytesToReserve and getCPUMillicoresToReserve): memory
    11 MiB per pod plus 255 MiB; CPU 6% of the first core, 1% of the second, 0.5% of the third and
    fourth, 0.25% of the rest; and the kubelet evicts at 100 MiB available (evictionHard
    memory.available)."""
    shape = EC2_SHAPES.get(instance_type)
    if shape is None:
        return None
    cpus, memory, max_pods = shape
    cores = cpus * 1000
    reserved_cpu = 60 + (10 if cpus >= 2 else 0) + 5 * max(0, min(cpus, 4) - 2) + 2.5 * max(0, cpus - 4)
    reserved_memory = 255 + 11 * max_pods + 100
    return int(cores - reserved_cpu), memory - reserved_memory


@dataclass(frozen=True)
class PodRequests:
    """Pods of one workload and what each requests: ``replicas`` of them, or one per node."""

    where: str
    per_node: bool
    replicas: int
    cpu_m: int
    memory_mi: int


def unplaced(pods: Sequence[PodRequests], nodes: int, instance_type: str) -> list[str]:
    """Pack ``pods`` onto ``nodes`` nodes of ``instance_type`` as the scheduler would have to: each
    node's allocatable less its DaemonSet pods, then every other pod, largest first, on the first
    node with room (first-fit decreasing). Returns one line per pod no node has room for."""
    shape = allocatable(instance_type)
    if shape is None:
        return [f"no allocatable known for {instance_type} (EC2_SHAPES)"]
    cpu, memory = shape
    daemons_cpu = sum(p.cpu_m for p in pods if p.per_node)
    daemons_memory = sum(p.memory_mi for p in pods if p.per_node)
    free = [[cpu - daemons_cpu, memory - daemons_memory] for _ in range(nodes)]
    singles = [p for p in pods if not p.per_node for _ in range(p.replicas)]
    singles.sort(key=lambda p: -max(p.cpu_m / cpu, p.memory_mi / memory))
    problems = []
    for pod in singles:
        room = next((n for n in free if n[0] >= pod.cpu_m and n[1] >= pod.memory_mi), None)
        if room is None:
            problems.append(
                f"{pod.where} (requests {pod.cpu_m}m, {pod.memory_mi}Mi) fits none of {nodes} x "
                f"{instance_type} ({cpu}m, {memory}Mi allocatable; free: {[tuple(n) for n in free]})"
            )
            continue
        room[0] -= pod.cpu_m
        room[1] -= pod.memory_mi
    return problems


SYSTEM_ADDON_PODS = (
    PodRequests("EKS add-on coredns", False, 2, 100, 70),
    PodRequests("EKS add-on kube-proxy", True, 1, 100, 0),
    PodRequests("EKS add-on aws-node (VPC CNI)", True, 1, 25, 0),
    PodRequests("EKS add-on ebs-csi-controller", False, 2, 60, 240),
    PodRequests("EKS add-on ebs-csi-node", True, 1, 30, 120),
)
"""The EKS add-ons' pods on the system nodes, which no Helm release of the stack renders, with the
requests their upstream manifests set: CoreDNS's Deployment (100m, 70Mi; two replicas), kube-proxy's
and the VPC CNI's DaemonSets (100m, 25m), the EBS CSI driver's controller (six containers of 10m,
40Mi) and node plugin (three; installed with monitoring, counted always). These are the upstream
defaults as known when written, not read from the add-on versions EKS serves (``aws eks
describe-addon-configuration`` and the running pods show them); the Pod Identity and node monitoring
agents are not counted."""


@dataclass(frozen=True)
class EksSystemClusterProps:
    """Settings of the control plane and its system nodes."""

    name: str
    kubernetes_version: str
    subnet_ids: Sequence[str]
    """Private subnets of the control plane's network interfaces and the system nodes."""
    kms_key_arn: str
    """KMS key of the Kubernetes secrets and the control-plane log group."""
    node_network: Sequence[Any] = ()
    """What those subnets reach AWS through (AwsVpc.egress: route table associations, route tables,
    NAT gateways). The system nodes are created after it and deleted before it, and so is everything
    that runs on them."""
    public_access_cidrs: Sequence[str] = ("0.0.0.0/0",)
    """Networks allowed to the public API endpoint (a variable reference allowed)."""
    admin_role_arn: str | None = None
    """IAM role granted cluster-admin through an access entry; None grants only the creator."""
    system_instance_type: str = SYSTEM_INSTANCE_TYPE
    system_node_count: int = 2
    system_volume_size_gi: int = 30
    """Root volume (gp3, encrypted) of each system node."""
    log_retention_days: int = 365
    extended_support: bool = False
    """The cluster's upgrade policy: False (STANDARD) lets EKS upgrade the control plane when the
    version leaves standard support; True (EXTENDED) keeps it there, billed for extended support."""

    def __post_init__(self) -> None:
        validate.int_range("system_node_count", self.system_node_count, 1, 10)
        validate.int_range("system_volume_size_gi", self.system_volume_size_gi, 20, 16384)


@dataclass(frozen=True)
class NodeRole:
    """An EC2 node role and its policy attachments: what uses the role depends on both, so a
    destroy removes the nodes before the permissions they run with."""

    role: IamRole
    attachments: tuple[IamRolePolicyAttachment, ...]

    @property
    def grants(self) -> list[Any]:
        return [self.role, *self.attachments]


SYSTEM_AMI_TYPE = "AL2023_x86_64_STANDARD"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
"""The controller's ServiceAccount in kube-system (EKS user guide, "Use Kubernetes volume storage
with Amazon EBS": the add-on's Pod Identity association names it)."""
GP3_CLASS = "gp3"
VOLUME_TAG = "gpu-constructs.io/cluster"
"""Tag on every volume the gp3 class provisions, with the cluster's name: how the volumes a destroy
leaves behind are found (docs, "Volumes left after a destroy")."""


def addon(scope: Construct, id: str, cluster: EksCluster, name: str, **kwargs: Any) -> EksAddon:
    """An EKS add-on at the newest version EKS offers for the cluster's Kubernetes version, read at
    plan, as terraform-aws-eks v21 (main.tf, ``data "aws_eks_addon_version"`` with most_recent):
    without ``addon_version`` an add-on stays at the version it was created with while the control
    plane moves on, and the next control-plane upgrade is refused for the add-on's skew.

    Conflicts are overwritten on create and on update. A new cluster comes with EKS's self-managed
    vpc-cni, kube-proxy and CoreDNS (the provider's bootstrap_self_managed_addons defaults to true),
    and CreateAddon over them with NONE, what the API gets when nothing is set (terraform-provider-aws
    internal/service/eks/addon.go sends resolveConflicts only when given), "might fail"; so might
    each UpdateAddon a Kubernetes bump brings. terraform-aws-eks v20.37.2 (main.tf,
    resolve_conflicts_on_create_default and resolve_conflicts_on_update) sets OVERWRITE for both
    where self-managed add-ons are bootstrapped. Nothing in the stack edits an add-on's objects
    outside configuration_values, so OVERWRITE only restores EKS's values. Setting these on an
    existing add-on changes the state only (the provider's update calls UpdateAddon for a new
    version, configuration, role or Pod Identity association)."""
    version = DataAwsEksAddonVersion(
        scope, f"{id}-version", addon_name=name, kubernetes_version=cluster.version, most_recent=True
    )
    return EksAddon(
        scope,
        id,
        cluster_name=cluster.name,
        addon_name=name,
        addon_version=version.version,
        resolve_conflicts_on_create="OVERWRITE",
        resolve_conflicts_on_update="OVERWRITE",
        **kwargs,
    )


def node_role(scope: Construct, id: str, name: str) -> NodeRole:
    """An EC2 node role with the policies EKS nodes need (kubelet, VPC CNI, ECR pulls, SSM): those of
    Karpenter v1.14.1's getting-started CloudFormation (KarpenterNodeRole) and the EKS user guide's node
    IAM role, image pulls through AmazonEC2ContainerRegistryPullOnly."""
    role = IamRole(scope, id, name=name, assume_role_policy=service_trust("ec2.amazonaws.com"))
    attachments = tuple(
        IamRolePolicyAttachment(
            scope, f"{id}-{policy}", role=role.name, policy_arn=f"arn:aws:iam::aws:policy/{policy}"
        )
        for policy in (
            "AmazonEKSWorkerNodePolicy",
            "AmazonEKS_CNI_Policy",
            "AmazonEC2ContainerRegistryPullOnly",
            "AmazonSSMManagedInstanceCore",
        )
    )
    return NodeRole(role, attachments)


class EksSystemCluster(Construct):
    """The EKS control plane, its tainted system node group and the core add-ons.

    ``resource_scope`` is where the resources are created (this construct unless given): EksGpuCompute
    passes itself, so its resources keep the logical ids they had before the split.
    """

    eks: EksCluster
    system_nodes: EksNodeGroup
    addons: list[EksAddon]

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        props: EksSystemClusterProps,
        resource_scope: Construct | None = None,
    ) -> None:
        super().__init__(scope, id)
        self.props = props
        self._here: Construct = resource_scope or self
        self._control_plane()
        self._system_nodes()

    def _control_plane(self) -> None:
        props = self.props
        role = IamRole(
            self._here,
            "cluster-role",
            name=f"{props.name}-cluster",
            assume_role_policy=service_trust("eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        attachment = IamRolePolicyAttachment(
            self._here,
            "cluster-policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
        )
        # Created before the cluster (as terraform-aws-eks does): EKS would otherwise create the group
        # itself on first log delivery, and the next apply would collide with it.
        cluster_logs = CloudwatchLogGroup(
            self._here,
            "cluster-logs",
            name=f"/aws/eks/{props.name}/cluster",
            retention_in_days=props.log_retention_days,
            kms_key_id=props.kms_key_arn,
        )
        self.eks = EksCluster(
            self._here,
            "cluster",
            name=props.name,
            role_arn=role.arn,
            version=props.kubernetes_version,
            vpc_config={
                "subnet_ids": list(props.subnet_ids),
                "endpoint_private_access": True,
                "endpoint_public_access": True,
                "public_access_cidrs": list(props.public_access_cidrs),
            },
            encryption_config={"provider": {"key_arn": props.kms_key_arn}, "resources": ["secrets"]},
            access_config={"authentication_mode": "API", "bootstrap_cluster_creator_admin_permissions": True},
            enabled_cluster_log_types=["api", "audit", "authenticator", "controllerManager", "scheduler"],
            # Set explicitly: the API's default for a new cluster is EXTENDED, which moves it to the
            # extended-support rate when standard support ends (EKS user guide, "View Amazon EKS
            # cluster upgrade policy"; UpgradePolicyRequest supportType).
            upgrade_policy={"support_type": "EXTENDED" if props.extended_support else "STANDARD"},
            depends_on=[attachment, cluster_logs],
        )
        # Karpenter finds the security group for its nodes by this tag, like the private subnets.
        self.security_group_discovery = Ec2Tag(
            self._here,
            "cluster-security-group-discovery",
            resource_id=self.eks.vpc_config.cluster_security_group_id,
            key="karpenter.sh/discovery",
            value=props.name,
        )
        # The admin role's cluster access, for what is installed into the cluster to depend on
        # (GpuCluster.ready): Terraform run as that role (a cluster created by another principal and
        # taken over) keeps its access until the last release is uninstalled, instead of losing it
        # in the destroy's first wave (nothing else depends on the entry) and failing every
        # remaining uninstall (401 without the entry, 403 without its policy). The creator's own
        # access is EKS's (bootstrap_cluster_creator_admin_permissions: an access entry made at
        # cluster creation, outside the state) and lasts as long as the cluster.
        self.admin_access: list[Any] = []
        if props.admin_role_arn is not None:
            entry = EksAccessEntry(
                self._here, "admin-access", cluster_name=self.eks.name, principal_arn=props.admin_role_arn
            )
            association = EksAccessPolicyAssociation(
                self._here,
                "admin-access-policy",
                cluster_name=self.eks.name,
                principal_arn=entry.principal_arn,
                policy_arn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy",
                access_scope={"type": "cluster"},
            )
            self.admin_access = [entry, association]

    def _system_nodes(self) -> None:
        props = self.props
        nodes = node_role(self._here, "system-node-role", f"{props.name}-system-nodes")
        template = LaunchTemplate(
            self._here,
            "system-nodes-template",
            # A prefix, as the node group's: replaced with it (create_before_destroy propagates to
            # what it depends on), the new template must not collide with the old one's name.
            name_prefix=f"{props.name}-system-",
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
        # The EKS-optimized AMI release for the cluster's version, as terraform-aws-eks v21
        # (modules/eks-managed-node-group, use_latest_ami_release_version) reads it: with `version`
        # and `release_version` set, a version bump rolls the nodes after the control plane; without
        # them the nodes stay behind and the next control-plane upgrade is refused (kubelet skew).
        release = DataAwsSsmParameter(
            self._here,
            "system-nodes-ami-release",
            name=(
                f"/aws/service/eks/optimized-ami/{props.kubernetes_version}/amazon-linux-2023/x86_64/"
                "standard/recommended/release_version"
            ),
        )
        self.system_nodes = EksNodeGroup(
            self._here,
            "system-nodes",
            cluster_name=self.eks.name,
            # A new instance type (or AMI type, subnets, node role) replaces the group: with a fixed
            # name the new group would collide with the old one (ResourceInUseException), and deleted
            # first it would leave the add-ons and controllers without a node while its successor
            # is created. As terraform-aws-eks v21 (modules/eks-managed-node-group/main.tf:
            # node_group_name_prefix, lifecycle create_before_destroy), the new group is created
            # under a new name and joins before the old one is drained and deleted.
            node_group_name_prefix=f"{SYSTEM_NODE_GROUP}-",
            node_role_arn=nodes.role.arn,
            subnet_ids=list(props.subnet_ids),
            instance_types=[props.system_instance_type],
            capacity_type="ON_DEMAND",
            ami_type=SYSTEM_AMI_TYPE,
            version=self.eks.version,
            # A public String parameter, not a secret (the provider marks every value sensitive).
            release_version=Fn.nonsensitive(release.value),
            scaling_config={
                "desired_size": props.system_node_count,
                "min_size": props.system_node_count,
                "max_size": props.system_node_count + 1,
            },
            taint=[EksNodeGroupTaint(key=SYSTEM_TAINT.key, value=SYSTEM_TAINT.value, effect="NO_SCHEDULE")],
            labels=dict([SYSTEM_LABEL]),
            launch_template={"id": template.id, "version": Token.as_string(template.latest_version)},
            # As terraform-aws-eks (v21, modules/eks-managed-node-group/main.tf): nodes are created
            # after their role's policies and, on destroy, drained and deleted before them, so the
            # kubelet and the VPC CNI keep their permissions until the instances are gone.
            # After their subnets' route out too: without VPC endpoints a node pulls the add-ons'
            # images from ECR through the NAT gateway, and one booted before the route exists does
            # not become Ready (EKS user guide, "Deploy private clusters with limited internet
            # access": without outbound access images must come from a registry in the VPC). On
            # destroy every release depends on these nodes (GpuCluster.ready), so the controllers
            # keep reaching EC2, ELB, Route 53 and EKS Auth (Pod Identity credentials) until they
            # are uninstalled, instead of losing the route in the destroy's first wave
            # (aws-ia/terraform-aws-eks-blueprints#353: NAT gateway and VPC resources going first
            # leave the add-ons unable to clean up). The group's create_before_destroy extends to
            # these when they are replaced (Terraform propagates it to dependencies): an association
            # is replaced only for a new subnet (subnet_id forces a new one; a new route table is
            # swapped in place with ReplaceRouteTableAssociation, terraform-provider-aws
            # internal/service/ec2/vpc_route_table_association.go), so the new one never finds its
            # subnet still associated.
            depends_on=[*nodes.attachments, *props.node_network],
            lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
        )
        self.addons = [
            addon(self._here, f"addon-{name}", self.eks, name, depends_on=[self.system_nodes])
            for name in ("vpc-cni", "kube-proxy", "coredns", "eks-pod-identity-agent")
        ]


class EbsCsiDriver(Construct):
    """The EBS CSI driver EKS add-on, its IAM role through Pod Identity, and a ``gp3`` StorageClass.

    The class is encrypted with the account's EBS key (``aws/ebs``), not the cluster's KMS key: its
    volumes are retained after a destroy (below), and the cluster's key is scheduled for deletion
    with the stack, after which a volume encrypted with it could never be read again. The AWS-managed
    key needs no grants in the driver's role either.

    Reclaim policy ``Retain``: a destroy cannot wait for the driver to delete the volumes. The
    Prometheus and Alertmanager claims come from StatefulSets, which Helm's uninstall does not
    delete; the Grafana claim goes with its release, but the PersistentVolume's deletion is then
    asynchronous (external-provisioner), and the add-on, destroyed next, takes the controller with
    it. With Delete a destroy would race the driver and leave volumes nobody knows of; with Retain it
    leaves them on purpose, tagged ``gpu-constructs.io/cluster``, and an accidental claim deletion or
    ``monitoring=False`` keeps the metrics.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        eks: EksCluster,
        cluster: GpuCluster,
        name: str,
        depends_on: Sequence[Any] = (),
    ) -> None:
        super().__init__(scope, id)
        role = IamRole(
            self,
            "role",
            name=f"{name}-ebs-csi",
            assume_role_policy=service_trust("pods.eks.amazonaws.com", "sts:AssumeRole", "sts:TagSession"),
        )
        policy = IamRolePolicyAttachment(
            self,
            "policy",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy",
        )
        self.addon = addon(
            self,
            "addon",
            eks,
            "aws-ebs-csi-driver",
            pod_identity_association=[
                EksAddonPodIdentityAssociation(role_arn=role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT)
            ],
            configuration_values=json.dumps(
                {
                    # The controller on the system nodes, as the other controllers; the node plugin
                    # on every node, so a claim attaches wherever its pod lands.
                    "controller": {
                        "nodeSelector": dict([SYSTEM_LABEL]),
                        "tolerations": [{"key": SYSTEM_TAINT.key, "operator": "Exists"}],
                    },
                    "node": {"tolerateAllTaints": True},
                },
                sort_keys=True,
            ),
            # The role's policy outlives the add-on on destroy: the controller detaches volumes
            # while its pods are stopped.
            depends_on=[policy, *depends_on],
        )
        self.storage_class_name = GP3_CLASS
        self.storage_class = helm.manifests_release(
            self,
            "storage-class",
            cluster=cluster,
            name="storage-class-gp3",
            namespace="kube-system",
            manifests=[self.storage_class_manifest(name)],
            depends_on=[self.addon],
        )

    @staticmethod
    def storage_class_manifest(cluster_name: str) -> dict[str, Any]:
        return {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": GP3_CLASS},
            "provisioner": "ebs.csi.aws.com",
            "parameters": {
                "type": "gp3",
                "encrypted": "true",
                "csi.storage.k8s.io/fstype": "ext4",
                # aws-ebs-csi-driver docs/tagging.md: tagSpecification_<n> "key=value".
                "tagSpecification_1": f"{VOLUME_TAG}={cluster_name}",
            },
            "reclaimPolicy": "Retain",
            # The volume is created in the zone of the node the pod is scheduled to (an EBS volume
            # attaches only in its own zone).
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": True,
        }
