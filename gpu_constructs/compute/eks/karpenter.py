"""Karpenter on EKS: its AWS side (node role, interruption queue and rules, controller role through
Pod Identity) and its cluster side (the chart, EC2NodeClasses and NodePools), as aws-cdk keeps
cluster add-ons apart from ``eks.Cluster``.

The GPU nodes come from a Karpenter NodePool that scales to zero; the AL2023 NVIDIA AMI (or
Bottlerocket's NVIDIA variant, which runs the device plugin too) brings the driver and the container
toolkit. Karpenter's custom resources are installed by a Helm release after
the Karpenter chart, whose CRDs come from the karpenter-crd chart before it, so nothing needs a live
cluster at plan time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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

from gpu_constructs import helm, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster, GpuSharing
from gpu_constructs.compute.eks.cluster import SYSTEM_TAINT, node_role
from gpu_constructs.compute.eks.iam import policy_document, policy_file, service_trust
from gpu_constructs.compute.eks.nodepools import (
    SEED_NODE_CLASSES,
    SEED_NODE_POOLS,
    NodeClassSpec,
    NodePoolSpec,
    ami_family,
    block_device_mappings,
    bottlerocket_device_plugin_settings,
)

KARPENTER_NAMESPACE = "karpenter"
KARPENTER_KUBERNETES = {"1.14.1": ("1.26", "1.36")}
"""The Kubernetes minor versions each Karpenter chart release supports (aws/karpenter-provider-aws
v1.14.1 hack/docs/compatibilitymatrix_gen/compatibility.yaml: 1.14.x, minK8sVersion 1.26,
maxK8sVersion 1.36): a cluster upgraded past the maximum runs a controller upstream has not
released for it; bump the chart first."""
KARPENTER_RESOURCES = {"cpu": "1", "memory": "1Gi"}
"""Requests and limits of each Karpenter controller replica, as Karpenter's getting-started guide
installs the chart (controller.resources; the chart's values.yaml carries the same example)."""


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
    """The cluster's Kubernetes minor version as configured (``1.35``): each alias's AMI, AL2023's
    or Bottlerocket's, is then read for it at plan (:meth:`Karpenter.ami_parameters`); None reads
    none."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    """How the GPU pools' GPUs are shared: on Bottlerocket the node's own device plugin does it, from
    the EC2NodeClass's userData (:func:`bottlerocket_device_plugin_settings`)."""
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
        """The SSM parameters Karpenter resolves each EC2NodeClass's alias through, read at plan: a
        pinned release that AWS did not publish for the cluster's Kubernetes version (a version bump
        past the pin, a region without it) fails the plan with ParameterNotFound instead of leaving
        every pool of that class unable to launch. Karpenter 1.14.1 reads, and skips the variants
        it cannot read (pkg/providers/amifamily/al2023.go, resolvePath)
        ``/aws/service/eks/optimized-ami/<k8s>/amazon-linux-2023/<arch>/<variant>/
        amazon-eks-node-al2023-<arch>-<variant>-<k8s>-<release>/image_id`` for AL2023 and
        (bottlerocket.go, DescribeImageQuery) ``/aws/service/bottlerocket/aws-k8s-<k8s>[-nvidia]/
        <arch>/<release without its v>/image_id`` for Bottlerocket; here the variants the class's
        pools need: nvidia for GPU pools, standard for the others, x86_64 (the pools' only
        architecture). Only constant arguments and no depends_on, so Terraform reads them at plan,
        not at apply; nothing needs to depend on them for that (a dependent would only be ordered
        after the read)."""
        props = self.props
        if props.kubernetes_version is None:
            return []
        parameters = []
        for node_class in props.node_classes:
            family, _, release = node_class.ami_alias.partition("@")
            pools = [p for p in props.node_pools if p.node_class == node_class.name]
            variants = sorted({"nvidia" if p.has_gpus else "standard" for p in pools})
            for variant in variants:
                k8s, arch = props.kubernetes_version, "x86_64"
                if family == "bottlerocket":
                    suffix = "-nvidia" if variant == "nvidia" else ""
                    name = (
                        f"/aws/service/bottlerocket/aws-k8s-{k8s}{suffix}/{arch}/"
                        f"{release.removeprefix('v')}/image_id"
                    )
                else:
                    name = (
                        f"/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/{variant}/"
                        f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{release}/image_id"
                    )
                parameters.append(
                    DataAwsSsmParameter(self._here, f"karpenter-ami-{node_class.name}-{variant}", name=name)
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
                **self._user_data(spec),
            },
        }

    def _user_data(self, spec: NodeClassSpec) -> dict[str, str]:
        """Bottlerocket settings for a class of GPU pools (EksProps refuses them on a class that also
        serves pools without GPUs). A change drifts the class's nodes, replaced as their pools'
        budgets allow (Karpenter's EC2NodeClass hash covers userData: aws/karpenter-provider-aws v1.14.1
        pkg/apis/v1/ec2nodeclass.go, no ``hash:"ignore"`` on it)."""
        gpu = any(p.has_gpus for p in self.props.node_pools if p.node_class == spec.name)
        settings = bottlerocket_device_plugin_settings(self.props.sharing)
        if ami_family(spec.ami_alias) != "bottlerocket" or not gpu or settings is None:
            return {}
        return {"userData": settings}

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
