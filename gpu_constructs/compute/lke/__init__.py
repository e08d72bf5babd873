"""GpuCompute for Linode LKE: an HA control plane, a small system pool and an autoscaling GPU pool.

The GPU pool is its own linode_lke_node_pool, tagged as externally managed for the cluster resource,
with no node count: the autoscaler owns the count, so the next plan does not try to reset it (the
provider's known pitfall with a count and an autoscaler together).

The node firewall depends on the tier. A pool's ``firewall_id`` is applied on LKE Enterprise (the
provider's acceptance tests use it only there, over ``v4beta``) but is reported as not attached on a
standard-tier cluster (linode/terraform-provider-linode#2294, open). On the standard tier Linode's
cloud-firewall-controller keeps every node, autoscaled or recycled, in one firewall instead.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cdktf import Fn, Postcondition, Precondition, TerraformResourceLifecycle, Token
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GPU_LABEL, GPU_TAINT, GpuCluster, GpuSharing, KubeAccess, Manager
from gpu_constructs.compute.base import NodeGroup, PlatformFacts
from gpu_constructs.compute.lke.bindings import (
    Acl,
    AclAddresses,
    Autoscaler,
    ClusterPool,
    ControlPlane,
    Filter,
    Firewall,
    FirewallRule,
    LkeCluster,
    LkeClusterData,
    LkeClusters,
    LkeNodePool,
    PoolTaint,
)
from gpu_constructs.errors import ConfigError

GPU_POOL_TAG = "gpu-pool"
SYSTEM_STANDBY_TAG = "system-standby"
"""The tag of the standby system pool (``system_standby_plan``), its own linode_lke_node_pool: like
the GPU pool's, in the cluster's external_pool_tags, so the cluster resource leaves it alone."""
# LKE's private networks: the control plane and nodes (192.168.128.0/17) and NodeBalancers
# (192.168.255.0/24) must reach the nodes for kubelet, Calico and NodePorts.
LKE_PRIVATE = "192.168.128.0/17"
NODEBALANCERS = "192.168.255.0/24"
GPU_PLAN = re.compile(r"^g\d+-gpu-[a-z0-9-]+$")
PLAN = re.compile(r"^g\d+-[a-z0-9-]+$")
REGION = re.compile(r"^[a-z]{2}-[a-z]+(-\d+)?$")
TIERS = ("standard", "enterprise")
ENTERPRISE_VERSION = re.compile(r"^v1\.\d+\.\d+\+lke\d+$")
"""LKE Enterprise takes a full version (``v1.31.8+lke5`` in the provider's lke_cluster page), from
GET /v4beta/lke/tiers/enterprise/versions; the standard tier takes a minor (``1.34``)."""
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
"""LKE's cloud controller labels each node with its Linode plan."""
STORAGE_CLASSES = frozenset({"linode-block-storage", "linode-block-storage-retain"})
"""The StorageClasses of the Linode CSI driver LKE installs (linode-blockstorage-csi-driver)."""
DEFAULT_STORAGE_CLASS = "linode-block-storage-retain"
"""The one LKE marks default: a deleted claim keeps its volume."""
GPU_MODELS = {
    "g2-gpu-rtx4000a": "NVIDIA RTX 4000 Ada",
    "g3-gpu-rtxpro6000-blackwell-": "NVIDIA RTX PRO 6000 Blackwell",
}
"""The GPU of each plan family of versions.LKE_GPU_REGIONS (Linode's GPU plan documentation)."""
ENTERPRISE_UPDATE_STRATEGY = "rolling_update"
LB_FIREWALL_ACL = "service.beta.kubernetes.io/linode-loadbalancer-firewall-acl"
"""The Linode CCM's Service annotation for a NodeBalancer's Cloud Firewall ACL (JSON)."""
CLOUD_FIREWALL_NAMESPACE = "kube-system"
"""Where the controller runs: it looks up its own Deployment and its CloudFirewall there
(cloud-firewall-controller v0.2.1 internal/controller, checkOwnership; the chart's firewall.yaml)."""
LINODE_DELETE_CLASS = "linode-block-storage"
"""The Linode CSI driver's StorageClass with reclaimPolicy Delete; its default class,
linode-block-storage-retain, keeps a volume after its claim is deleted (linode-blockstorage-csi-driver
deploy manifest)."""
CLOUD_FIREWALL_NAME = "primary"
"""The CloudFirewall the controller keeps the nodes in: the one it creates when there is none."""
CLOUD_FIREWALL_SECRET = "linode-cfw"
"""The Secret the controller reads its token from (key ``token``) when the chart's ``apiToken`` is set
(templates/deployment.yaml: ``--linode-creds=linode-cfw``, cmd/main.go, createLinodeClient)."""

LKE_DEFAULT_INBOUND = (
    FirewallRule("allow-all-icmp", "ACCEPT", "ICMP", ipv4=("0.0.0.0/0",), ipv6=("::/0",)),
    FirewallRule("allow-kubelet-health-checks", "ACCEPT", "TCP", "10250,10256", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-lke-wireguard", "ACCEPT", "UDP", "51820", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-cluster-dns-tcp", "ACCEPT", "TCP", "53", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-cluster-dns-udp", "ACCEPT", "UDP", "53", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-calico-bgp", "ACCEPT", "TCP", "179", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-calico-typha", "ACCEPT", "TCP", "5473", ipv4=(LKE_PRIVATE,)),
    FirewallRule("allow-cluster-nodeports-tcp", "ACCEPT", "TCP", "30000-32767", ipv4=(NODEBALANCERS,)),
    FirewallRule("allow-cluster-nodeports-udp", "ACCEPT", "UDP", "30000-32767", ipv4=(NODEBALANCERS,)),
    FirewallRule("allow-cluster-ipencap", "ACCEPT", "IPENCAP", ipv4=(LKE_PRIVATE,)),
)
"""Linode's own default inbound rules for LKE nodes, in their order (rules are evaluated in order):
the ruleset of linode/cloud-firewall-controller (internal/rules/defaults.go, February 2026), which
Linode's "LKE network and firewall details" page recommends. Between the nodes: kubelet and
kube-proxy health, WireGuard for kubectl proxy, cluster DNS, Calico BGP, Typha and IP-in-IP; from
NodeBalancers: NodePorts over TCP and UDP; ICMP from anywhere. The Kubernetes API is not on the
nodes but on the managed control plane, which its ACL guards (api_allowlist), so the nodes open no
API port."""


def plan_gpus(plan: str) -> int:
    """GPUs of an LKE GPU plan: the digit after the card in ``g2-gpu-rtx4000a2-m``, the count at the
    end of ``g3-gpu-rtxpro6000-blackwell-4``."""
    match = re.match(r"g\d-gpu-[a-z0-9]+?[a-z](\d)-[a-z]+$", plan) or re.match(r"g\d-gpu-.*-(\d+)$", plan)
    return int(match.group(1)) if match else 1


def gpu_model(plan: str) -> str | None:
    return next((model for family, model in GPU_MODELS.items() if plan.startswith(family)), None)


def gpu_regions(plan: str) -> tuple[str, ...] | None:
    """The regions that offer ``plan``, from versions.LKE_GPU_REGIONS; None for an unknown family."""
    for family, regions in versions.LKE_GPU_REGIONS.items():
        if plan.startswith(family):
            return regions
    return None


LINODE_LABEL = re.compile(r"^[A-Za-z0-9]([-_.A-Za-z0-9]*[A-Za-z0-9])?$")
DOUBLED_SEPARATOR = re.compile(r"--|__|\.\.")
"""A firewall label as the Linode API v4 accepts it (Create Firewall, ``label``): 3-32 characters
that begin and end with a letter or digit, only letters, digits, '-', '_' and '.', and no two
'-', '_' or '.' in a row. An LKE cluster label takes UTF-8 without 4-byte characters; the API
spec's longest escaped form (193 characters, 6 per code point) bounds it at 32 characters."""


@dataclass(frozen=True)
class LkeProps:
    label: str
    """Cluster label (the seed: ``<prefix>-lke-gpu-kubeflow``); a variable reference allowed."""
    api_allowlist: Sequence[str]
    """Networks allowed to the Kubernetes API (control-plane ACL and firewall); a reference allowed."""
    ui_allowlist: Sequence[str]
    """Networks allowed to ports 80 and 443 of the nodes; a reference allowed."""
    runner_allowlist: Sequence[str]
    """Where Terraform runs (its helm provider talks to the API): always merged into the API ACL,
    whatever ``firewall`` says, since the ACL is always enabled and an empty one denies everyone."""
    firewall_label: str
    """The node firewall's label, unique in the Linode account (carry the cluster's prefix so a
    second instance does not collide); 3-32 characters; a reference allowed."""
    region: str = "us-ord"
    k8s_version: str = versions.LKE_KUBERNETES.version
    high_availability: bool = True
    gpu_plan: str = versions.LKE_GPU_PLAN.version
    gpu_min_nodes: int = 1
    gpu_max_nodes: int = 5
    system_plan: str = "g6-standard-2"
    system_nodes: int = 2
    """Untainted nodes for CoreDNS, Calico and operators, which do not tolerate the GPU taint."""
    system_standby_plan: str | None = None
    """A second untainted pool of ``system_nodes`` nodes on this plan, while ``system_plan`` changes:
    the cluster resource replaces its own pool by deleting the old one before the new nodes are up,
    so a new ``system_plan`` is refused at plan unless this pool already runs the system pods
    (docs/lke.md, Change the system plan). None the rest of the time."""
    firewall: bool = True
    tier: str = "standard"
    """LKE tier: ``standard`` (the node firewall kept by cloud-firewall-controller) or ``enterprise``
    (the firewall attached through the pools' ``firewall_id``; the provider needs ``api_version
    v4beta`` and ``k8s_version`` is a full version such as v1.31.8+lke5)."""
    firewall_controller_token: str | None = None
    """A reference to a sensitive variable: the Linode API token cloud-firewall-controller uses on
    the standard tier (Firewalls and Linodes read/write). Written into Secret kube-system/linode-cfw,
    never into a values document; required with ``firewall`` on the standard tier, unused otherwise."""
    driver_preinstalled: bool = True
    """Whether the GPU nodes' image brings the NVIDIA driver and container toolkit. LKE's GPU nodes do:
    Akamai's guide to GPUs on LKE installs only NVIDIA's device plugin on them, so the GPU Operator
    runs with driver.enabled and toolkit.enabled false (the contract's Manager.IMAGE) instead of
    installing a second driver over the node's. False hands both to the GPU Operator."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    node_tcp_ports: Sequence[int] = ()
    """TCP ports that pods on other nodes reach at a node's own address (hostNetwork pods scraped
    from inside the cluster, such as node-exporter's); the firewall admits them from LKE's private
    range, which Linode's defaults open only for kubelet and kube-proxy health."""

    def __post_init__(self) -> None:
        for port in self.node_tcp_ports:
            validate.int_range("node_tcp_ports", port, 1, 65535)
        if self.gpu_plan.startswith("g1-gpu-rtx6000"):
            raise ConfigError(
                "gpu_plan",
                self.gpu_plan,
                "LKE does not offer Quadro RTX 6000 (g1-gpu-rtx6000-*) plans; use an RTX 4000 Ada plan "
                "such as g2-gpu-rtx4000a1-s (the node the seed describes)",
            )
        if not GPU_PLAN.match(self.gpu_plan):
            raise ConfigError("gpu_plan", self.gpu_plan, "use a Linode GPU plan such as g2-gpu-rtx4000a1-s")
        if not REGION.match(self.region):
            raise ConfigError("region", self.region, "give a Linode region id such as us-ord")
        regions = gpu_regions(self.gpu_plan)
        if regions is None:
            raise ConfigError(
                "gpu_plan",
                self.gpu_plan,
                f"not a GPU plan family this project knows ({', '.join(versions.LKE_GPU_REGIONS)}); add its "
                "regions to versions.LKE_GPU_REGIONS",
            )
        if self.region not in regions:
            raise ConfigError(
                "region", self.region, f"{self.gpu_plan} is offered in {', '.join(regions)}; pick one of them"
            )
        validate.one_of("tier", self.tier, TIERS)
        if self.tier == "enterprise" and not self.firewall:
            # Both pools' firewall_id is Optional and Computed (provider v3.13.0: the cluster's
            # pool in linode/lke/schema_resource.go; linode_lke_node_pool in
            # linode/lkenodepool/framework_resource_schema.go, with UseStateForUnknown). Dropped
            # from the configuration it keeps the state's value, so turning the firewall off would
            # delete linode_firewall and leave its id on both pools, with no update sent
            # (ReconcileLKENodePoolSpecs and the pool's update diff only the planned value). And a
            # pool without firewall_id gets the default firewall anyway (lke_node_pool page).
            raise ConfigError(
                "firewall",
                False,
                "LKE Enterprise keeps a pool's firewall_id once set (Optional+Computed in provider "
                "3.13.0): keep firewall=True (docs/lke.md, Node firewall)",
            )
        if self.tier == "enterprise":
            if not ENTERPRISE_VERSION.match(self.k8s_version):
                raise ConfigError(
                    "k8s_version",
                    self.k8s_version,
                    "LKE Enterprise takes a full version such as v1.31.8+lke5 "
                    "(GET /v4beta/lke/tiers/enterprise/versions)",
                )
        else:
            validate.version("k8s_version", self.k8s_version, r"1\.\d{2}", "1.34")
            if self.k8s_version not in versions.LKE_KUBERNETES_OFFERED:
                raise ConfigError(
                    "k8s_version",
                    self.k8s_version,
                    f"LKE offers {', '.join(versions.LKE_KUBERNETES_OFFERED)} "
                    "(versions.LKE_KUBERNETES_OFFERED)",
                )
        if self.firewall and self.tier == "standard":
            token = self.firewall_controller_token
            if token is None or not validate.is_reference(token):
                raise ConfigError(
                    "firewall_controller_token",
                    "(hidden)" if token else token,
                    "give a reference to a sensitive variable (the standard tier's node firewall is kept "
                    "by cloud-firewall-controller, which needs a Linode token); a literal would land in "
                    "the synthesized JSON",
                )
        validate.int_range("gpu_min_nodes", self.gpu_min_nodes, 1, 100)
        validate.int_range(
            "gpu_max_nodes",
            self.gpu_max_nodes,
            self.gpu_min_nodes,
            100,
            why="max cannot be below gpu_min_nodes",
        )
        validate.int_range("system_nodes", self.system_nodes, 1, 100)
        for name, plan in (
            ("system_plan", self.system_plan),
            ("system_standby_plan", self.system_standby_plan),
        ):
            if plan is not None and (not PLAN.match(plan) or GPU_PLAN.match(plan)):
                raise ConfigError(
                    name, plan, "use a Linode CPU plan such as g6-standard-2 for the system pool"
                )
        if not validate.is_reference(self.firewall_label):
            if not 3 <= len(self.firewall_label) <= 32:
                raise ConfigError("firewall_label", self.firewall_label, "use 3 to 32 characters")
            if not LINODE_LABEL.match(self.firewall_label) or DOUBLED_SEPARATOR.search(self.firewall_label):
                raise ConfigError(
                    "firewall_label",
                    self.firewall_label,
                    "use letters, digits, '-', '_' or '.', starting and ending with a letter or digit, "
                    "without '--', '__' or '..'",
                )
        if not validate.is_reference(self.label) and (
            not 1 <= len(self.label) <= 32 or any(ord(c) > 0xFFFF for c in self.label)
        ):
            raise ConfigError(
                "label", self.label, "use 1 to 32 characters, none outside the Basic Multilingual Plane"
            )
        if isinstance(self.runner_allowlist, (list, tuple)) and not self.runner_allowlist:
            raise ConfigError(
                "runner_allowlist",
                [],
                "give the network Terraform runs from (e.g. 198.51.100.7/32); the API ACL is always on "
                "and would lock Terraform out",
            )
        for name, allowlist in (
            ("api_allowlist", self.api_allowlist),
            ("ui_allowlist", self.ui_allowlist),
            ("runner_allowlist", self.runner_allowlist),
        ):
            if isinstance(allowlist, (list, tuple)):
                if self.firewall and not allowlist:
                    raise ConfigError(name, [], "give at least one network, or set firewall=False")
                for network in allowlist:
                    if not validate.is_reference(network):
                        validate.cidr(name, network)


class LkeGpuCompute(Construct):
    """An LKE cluster with an autoscaling GPU node pool behind a firewall."""

    def __init__(self, scope: Construct, id: str, *, props: LkeProps) -> None:
        super().__init__(scope, id)
        self.props = props
        enterprise = props.tier == "enterprise"
        self.firewall = None
        if props.firewall and enterprise:
            self.firewall = Firewall(
                self,
                "firewall",
                label=props.firewall_label,
                inbound_policy="DROP",
                outbound_policy="ACCEPT",
                inbound=self.inbound_rules(),
            )
        firewall_id = self.firewall.id_ref if self.firewall else None
        # LKE Enterprise versions node pools separately from the control plane: without the pools'
        # own k8s_version a version bump upgrades only the control plane. rolling_update replaces
        # the nodes one at a time (on_recycle would wait for a manual recycle). The provider's
        # enterprise acceptance template sets both (v3.13.0 linode/lke/tmpl/enterprise.gotf).
        pool_version = props.k8s_version if enterprise else None
        update_strategy = ENTERPRISE_UPDATE_STRATEGY if enterprise else None
        # The deployed cluster, found by its label (unique in an account: "The unique label for the
        # cluster", provider v3.13.0 docs/data-sources/lke_clusters.md). It depends on no resource,
        # so Terraform reads it at every plan, before the cluster's update; none on a first deploy.
        self.deployed = LkeClusters(self, "deployed", filter=[Filter("label", [props.label])])
        preconditions = [version_guard(self.deployed, props.k8s_version)]
        if props.system_standby_plan:
            # The new system_plan goes through now, once the standby runs: in one deploy with the
            # standby's creation, the cluster's update (and the old pool's delete) would come first.
            clusters = f"{self.deployed.fqn_path}.lke_clusters"
            self.deployed_pools = LkeClusterData(
                self,
                "deployed-pools",
                cluster_id=f"${{{clusters}[count.index].id}}",
                count=f"${{length({clusters})}}",
            )
            preconditions.append(standby_guard(self.deployed_pools, props.system_plan))
        lifecycle = TerraformResourceLifecycle(
            precondition=preconditions,
            **({} if props.system_standby_plan else system_pool_guard(props.system_plan)),
        )
        self.lke = LkeCluster(
            self,
            "cluster",
            label=props.label,
            k8s_version=props.k8s_version,
            region=props.region,
            control_plane=ControlPlane(
                high_availability=props.high_availability,
                acl=Acl(enabled=True, addresses=AclAddresses(ipv4=self.api_acl())),
            ),
            pool=[
                ClusterPool(
                    type=props.system_plan,
                    count=props.system_nodes,
                    label="system",
                    firewall_id=firewall_id,
                    k8s_version=pool_version,
                    update_strategy=update_strategy,
                )
            ],
            # The standby's tag whether it exists or not: adding or dropping it changes nothing else.
            external_pool_tags=[GPU_POOL_TAG, SYSTEM_STANDBY_TAG],
            tier="enterprise" if enterprise else None,
            lifecycle=lifecycle,
        )
        self.system_standby = None
        if props.system_standby_plan:
            # Created, it is ready (the provider's Create waits for WaitForNodePoolReady) before
            # the system pods are drained onto it; a new plan replaces it, the new one first.
            self.system_standby = LkeNodePool(
                self,
                "system-standby",
                cluster_id=self.lke.id_ref,
                type=props.system_standby_plan,
                node_count=props.system_nodes,
                label="system-standby",
                firewall_id=firewall_id,
                # On its nodes too (LKE cascades a pool's labels), so a drain can tell the two
                # system pools apart when they share a plan.
                labels={SYSTEM_STANDBY_TAG: "true"},
                tags=[SYSTEM_STANDBY_TAG],
                k8s_version=pool_version,
                update_strategy=update_strategy,
                lifecycle=TerraformResourceLifecycle(create_before_destroy=True),
            )
        self.gpu_pool = LkeNodePool(
            self,
            "gpu-pool",
            cluster_id=self.lke.id_ref,
            type=props.gpu_plan,
            label="gpu",
            firewall_id=firewall_id,
            # The GPU placement, on every tier: LKE cascades a pool's labels and taints to its nodes
            # (Akamai's "Labels and taints" guide), and provider v3.13.0 sends them on create and in
            # place on every update whatever the tier, gating only k8s_version and update_strategy
            # on "enterprise" (linode/lkenodepool/framework_models.go, SetNodePoolCreateOptions and
            # SetNodePoolUpdateOptions). Its acceptance tests add, change and remove them on
            # standard clusters (TestAccResourceNodePool_taints_labels;
            # TestAccResourceLKEClusterNodePoolTaintsLabels, tmpl/taints_labels.gotf: tier = "standard").
            labels=dict([GPU_LABEL]),
            taint=[PoolTaint(GPU_TAINT.key, GPU_TAINT.value, GPU_TAINT.effect)],
            tags=[GPU_POOL_TAG],
            autoscaler=Autoscaler(min=props.gpu_min_nodes, max=props.gpu_max_nodes),
            k8s_version=pool_version,
            update_strategy=update_strategy,
            lifecycle=TerraformResourceLifecycle(
                # The autoscaler owns the node count; Terraform never sets or resets it.
                ignore_changes=["node_count"],
                # A new gpu_plan replaces the pool (`type` is RequiresReplace in provider v3.13.0,
                # linode/lkenodepool/framework_resource_schema.go, since #1478). Destroyed first,
                # its GPU nodes would be gone before the new ones are provisioned and ready, and every
                # GPU pod pending meanwhile. Created first, the new pool is ready (the provider's
                # Create waits for WaitForNodePoolReady, at the autoscaler's min nodes) before the
                # old one is deleted. Terraform makes what the pool depends on (the cluster, the
                # Enterprise firewall) create-before-destroy too: linode_firewall has no
                # RequiresReplace attribute, and the cluster's replacement is refused
                # (protect_cluster) and done as destroy, then deploy (docs/lke.md).
                create_before_destroy=True,
            ),
        )
        kubeconfig = Fn.yamldecode(Fn.base64decode(self.lke.kubeconfig))
        self.kubeconfig = self.lke.kubeconfig
        manager = Manager.IMAGE if props.driver_preinstalled else Manager.OPERATOR
        self.cluster = GpuCluster(
            name=id,
            access=KubeAccess(
                host=_kube_field(kubeconfig, "clusters", "cluster", "server"),
                cluster_ca_certificate=Fn.base64decode(
                    _kube_field(kubeconfig, "clusters", "cluster", "certificate-authority-data")
                ),
                token=_kube_field(kubeconfig, "users", "user", "token"),
            ),
            gpu_node_selector=dict([GPU_LABEL]),
            gpu_taint=GPU_TAINT,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class=None,
            driver=manager,
            toolkit=manager,
            sharing=props.sharing,
            # The plan names its GPUs (g2-gpu-rtx4000a2-m: 2, g3-gpu-rtxpro6000-blackwell-4: 4), as
            # node_groups has it; each is time_slicing_replicas slots.
            gpu_capacity=plan_gpus(props.gpu_plan)
            * props.gpu_max_nodes
            * props.sharing.time_slicing_replicas,
            gpus_per_node=plan_gpus(props.gpu_plan) * props.sharing.time_slicing_replicas,
            ready=(self.gpu_pool,),
            # Replaced (a new region, or a label the provider forces a new cluster for), the LKE
            # cluster is a new, empty one; its node pools only add and drain nodes.
            identity=(self.lke,),
        )
        self.cloud_firewall = None
        if props.firewall and not enterprise:
            assert props.firewall_controller_token is not None
            self.cloud_firewall = CloudFirewallController(
                self,
                "cloud-firewall",
                token=props.firewall_controller_token,
                inbound=[*self.node_rules(), self.ui_rule()],
                cluster=self.cluster,
            )
            # The node firewall is in place before anything else is installed.
            self.cluster = dataclasses.replace(
                self.cluster, ready=(self.gpu_pool, self.cloud_firewall.ruleset)
            )

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        props = self.props
        return (
            NodeGroup(
                "system pool",
                members={INSTANCE_TYPE_LABEL: props.system_plan},
                instance_types=(props.system_plan,),
                gpus_per_node=0,
                min_nodes=props.system_nodes,
                max_nodes=props.system_nodes,
                system=True,
            ),
            NodeGroup(
                "gpu pool",
                members={INSTANCE_TYPE_LABEL: props.gpu_plan},
                labels=dict([GPU_LABEL]),
                taints=(GPU_TAINT,),
                instance_types=(props.gpu_plan,),
                gpu=True,
                gpus_per_node=plan_gpus(props.gpu_plan),
                gpu_model=gpu_model(props.gpu_plan),
                min_nodes=props.gpu_min_nodes,
                max_nodes=props.gpu_max_nodes,
            ),
        )

    @property
    def platform(self) -> PlatformFacts:
        cluster = self.cluster
        return PlatformFacts(
            kubernetes_version=self.props.k8s_version,
            driver=cluster.driver,
            toolkit=cluster.toolkit,
            device_plugin=Manager.STACK,
            storage_classes=STORAGE_CLASSES,
            default_storage_class=DEFAULT_STORAGE_CLASS,
        )

    def api_acl(self) -> Sequence[str]:
        """The control plane's ACL: the API allowlist and the runner's networks, each once."""
        lists = (self.props.api_allowlist, self.props.runner_allowlist)
        if any(validate.is_reference(network) for networks in lists for network in networks):
            merged = Token.as_list(Fn.concat([list(networks) for networks in lists]))
            return Token.as_list(Fn.distinct(merged))
        return list(dict.fromkeys([*lists[0], *lists[1]]))

    @property
    def load_balancer_annotations(self) -> dict[str, str]:
        """The annotations every LoadBalancer Service on this cluster carries. A NodeBalancer reaches
        the nodes from 192.168.255.0/24, so the node firewall's UI rule does not restrict who reaches
        the NodeBalancer; the Linode CCM puts a Cloud Firewall with this ACL in front of it
        (linode-cloud-controller-manager docs/configuration/annotations.md, ``firewall-acl``:
        ``{"allowList": {"ipv4": [...]}}``). None without ``firewall``."""
        if not self.props.firewall:
            return {}
        allowlist = self.props.ui_allowlist
        if isinstance(allowlist, (list, tuple)) and not any(validate.is_reference(n) for n in allowlist):
            acl = json.dumps({"allowList": {"ipv4": list(allowlist)}}, separators=(",", ":"))
        else:
            # A list variable: a string template around jsonencode of the list alone, so the value
            # stays one Terraform string that any values document can carry.
            acl = '{"allowList":{"ipv4":' + Fn.jsonencode(allowlist) + "}}"
        return {LB_FIREWALL_ACL: acl}

    @property
    def provider_api_version(self) -> str | None:
        """The linode provider's ``api_version``: ``tier`` is only accepted over v4beta."""
        return "v4beta" if self.props.tier == "enterprise" else None

    def ui_rule(self) -> FirewallRule:
        return FirewallRule("allow-ui-http-https", "ACCEPT", "TCP", "80,443", ipv4=self.props.ui_allowlist)

    def node_rules(self) -> list[FirewallRule]:
        """``node_tcp_ports`` from LKE's private range, the nodes' own."""
        if not self.props.node_tcp_ports:
            return []
        ports = ",".join(str(port) for port in sorted(set(self.props.node_tcp_ports)))
        return [FirewallRule("allow-node-host-ports", "ACCEPT", "TCP", ports, ipv4=(LKE_PRIVATE,))]

    def inbound_rules(self) -> list[FirewallRule]:
        """Linode's LKE defaults, the stack's node ports, then HTTP and HTTPS from the UI allowlist."""
        return [*LKE_DEFAULT_INBOUND, *self.node_rules(), self.ui_rule()]


class CloudFirewallController(Construct):
    """linode/cloud-firewall-controller on a standard-tier cluster: its CRD, the Secret with its API
    token, and the controller with the stack's rules in its CloudFirewall.

    The controller creates a Linode firewall ``lke-<cluster id>`` with Linode's default LKE rules
    (``defaultRules``, the same as LKE_DEFAULT_INBOUND), appends the CloudFirewall's own inbound
    rules, and adds every node the API server lists, so autoscaled and recycled nodes are covered
    (v0.2.1 internal/controller/cloudfirewall_controller.go: effectiveRulesetSpec, nodeListChanges).
    It deletes the Linode firewall on the CR's finalizer, so on destroy the CR (its own release,
    which depends on the controller's) goes first, then the controller, then its token and the CRD.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        token: str,
        inbound: Sequence[FirewallRule],
        cluster: GpuCluster,
    ) -> None:
        super().__init__(scope, id)
        # The CRD ships in the chart's templates/, so Helm upgrades it; a waited release is ready once
        # the CRD is Established (helm v3.18 pkg/kube/ready.go, crdReady), before the CR is applied.
        self.crd = helm.release(
            self,
            "crd",
            name="cloud-firewall-crd",
            chart="cloud-firewall-crd",
            repository=versions.REPO_LINODE_CLOUD_FIREWALL,
            version=versions.CLOUD_FIREWALL_CRD_CHART.version,
            namespace=CLOUD_FIREWALL_NAMESPACE,
            cluster=cluster,
            values={},
        )
        # The token reaches the Secret through set_sensitive only, never a values document, and at
        # secrets.linode-cfw.stringData.token: a path of map keys, which the helm provider replaces with
        # "(sensitive value)" in the release's metadata.values. Through the manifests list
        # (manifests[0].stringData.token) its cloakSetValue stops at the list index and leaves the token
        # there in clear text: in the state, `terraform show` and every plan that updates or destroys
        # the release (terraform-provider-helm v3.1.1 helm/resource_helm_release.go, cloakSetValue,
        # setReleaseAttributes). Same release and Secret as before, so an upgrade patches it in place.
        self.token = helm.manifests_release(
            self,
            "token",
            name="cloud-firewall-token",
            namespace=CLOUD_FIREWALL_NAMESPACE,
            manifests=[],
            secrets=[helm.SensitiveSecret(CLOUD_FIREWALL_SECRET, {"token": token})],
            cluster=cluster,
        )
        rules = []
        set_lists = {}
        for index, rule in enumerate(inbound):
            if rule.ipv4 is not None and any(validate.is_reference(network) for network in rule.ipv4):
                # A list variable: known at plan time only, so it cannot be in the values document.
                set_lists[f"inbound[{index}].addresses.ipv4"] = rule.ipv4
                rule = dataclasses.replace(rule, ipv4=None)
            rules.append(crd_rule(rule))
        self.controller = helm.release(
            self,
            "controller",
            name="cloud-firewall",
            chart="cloud-firewall-controller",
            repository=versions.REPO_LINODE_CLOUD_FIREWALL,
            version=versions.CLOUD_FIREWALL_CONTROLLER_CHART.version,
            namespace=CLOUD_FIREWALL_NAMESPACE,
            values={
                # Only a switch: the chart then points the controller at Secret linode-cfw
                # (--linode-creds); the token itself is in the release above. No `firewall`: the
                # chart would render the CloudFirewall beside the controller (templates/firewall.yaml),
                # and uninstalling that release deletes the controller with the object it finalizes.
                "apiToken": True,
            },
            cluster=cluster,
            depends_on=[self.crd, self.token],
        )
        # The CloudFirewall in its own release, after the controller: on destroy Helm deletes it
        # (and waits) while the controller still runs, which removes its finalizer
        # (cloudfirewalls.networking.linode.com/finalizer) once it has deleted the Linode firewall
        # (cloudfirewall_controller.go checkFinalizer); only then is the controller uninstalled.
        self.ruleset = helm.manifests_release(
            self,
            "ruleset",
            name="cloud-firewall-ruleset",
            namespace=CLOUD_FIREWALL_NAMESPACE,
            manifests=[
                {
                    "apiVersion": "networking.linode.com/alpha1v1",
                    "kind": "CloudFirewall",
                    "metadata": {"name": CLOUD_FIREWALL_NAME, "namespace": CLOUD_FIREWALL_NAMESPACE},
                    "spec": {"ruleset": {"inbound": rules, "outbound": []}},
                }
            ],
            set_lists={f"manifests[0].spec.ruleset.{path}": value for path, value in set_lists.items()},
            cluster=cluster,
            depends_on=[self.controller],
        )
        # With no CloudFirewall, the running controller creates kube-system/primary itself on its
        # first Node event (SetupWithManager: "If for any reason no default CloudFirewall object
        # exists attempt to create it"), so this release adopts that object (helm --take-ownership).
        self.ruleset.take_ownership = True


def crd_rule(rule: FirewallRule) -> dict[str, object]:
    """A firewall rule as the CloudFirewall CRD (networking.linode.com/alpha1v1) spells it."""
    addresses = {key: list(value) for key, value in (("ipv4", rule.ipv4), ("ipv6", rule.ipv6)) if value}
    spec: dict[str, object] = {
        "label": rule.label,
        "action": rule.action,
        "protocol": rule.protocol,
        "addresses": addresses,
    }
    if rule.ports is not None:
        spec["ports"] = rule.ports
    return spec


def k8s_minor(version: str) -> int:
    """The minor of ``1.34`` (standard tier) or ``v1.34.1+lke1`` (Enterprise)."""
    return int(version.removeprefix("v").split(".")[1])


def version_guard(deployed: LkeClusters, k8s_version: str) -> Precondition:
    """Refuse a k8s_version more than one minor above, or below, the deployed cluster's.

    A new k8s_version updates the control plane, then recycles every node of every pool, the GPU
    pool included, and waits for all of them (provider v3.13.0 linode/lke/resource.go updateResource:
    "Implicitly recycling LKE cluster to apply Kubernetes version upgrade", recycleLKECluster over
    ListLKENodePools, which external_pool_tags does not filter). Kubernetes upgrades a control plane
    one minor at a time (its version skew policy); what LKE does with a skipped minor or a lower one
    is not confirmed here, so the plan refuses both before anything changes. On LKE Enterprise the
    same recycle runs too, before the pools' own k8s_version rolls their nodes again."""
    minor = k8s_minor(k8s_version)
    clusters = f"{deployed.fqn_path}.lke_clusters"
    # A for expression rather than [0]: no index into the empty list of a first deploy.
    running = f'[for c in {clusters} : tonumber(split(".", trimprefix(c.k8s_version, "v"))[1])]'
    return Precondition(
        condition=f"${{alltrue([for m in {running} : contains([{minor - 1}, {minor}], m)])}}",
        error_message=(
            f'The cluster runs Kubernetes ${{join(", ", {clusters}[*].k8s_version)}}, and k8s_version '
            f"{k8s_version} is neither its minor nor the next one: LKE upgrades one minor at a time and "
            "recycles every node, GPU nodes included, at each step; deploy each minor in turn, never a "
            'lower one (docs/lke.md "Upgrade Kubernetes").'
        ),
    )


def standby_guard(deployed: LkeClusterData, system_plan: str) -> Precondition:
    """With a standby system pool: refuse a new system_plan until the deployed cluster has the
    standby pool with every node ready. The deployed pools come from linode_lke_cluster, read at plan
    (its id from linode_lke_clusters, which depends on no resource); a first deploy has none."""
    external = f'["{GPU_POOL_TAG}", "{SYSTEM_STANDBY_TAG}"]'
    system = f"[for p in c.pools : p.type if length(setintersection(p.tags, {external})) == 0]"
    standby_ready = (
        f'[for p in c.pools : alltrue([for n in p.nodes : n.status == "ready"]) '
        f'if contains(p.tags, "{SYSTEM_STANDBY_TAG}")]'
    )
    return Precondition(
        condition=(
            f'${{alltrue([for c in {deployed.fqn_path} : alltrue([for t in {system} : t == "{system_plan}"]) '
            f"|| anytrue({standby_ready})])}}"
        ),
        error_message=(
            f"system_plan {system_plan} would replace the running system pool before the standby pool "
            "(system_standby_plan) runs with every node ready: deploy the standby first with the old "
            'system_plan, drain the old system nodes, then change system_plan (docs/lke.md "Change the '
            'system plan").'
        ),
    )


def system_pool_guard(system_plan: str) -> dict[str, Any]:
    """The cluster's lifecycle without a standby system pool: ``system_plan`` does not reach the
    cluster's own pool, and the plan fails while that pool runs another plan.

    The cluster resource replaces a pool whose type changed by creating the new one and deleting
    the old one in the same update, and waits for the new pool's nodes only after the delete
    (provider v3.13.0 linode/lke/cluster.go ReconcileLKENodePoolSpecs: "Types cannot be updated on
    node pools so we should delete the old one and create a new one"; linode/lke/resource.go
    updateResource: CreateLKENodePool, DeleteLKENodePool, then WaitForNodePoolReady). The GPU pool's
    taint keeps CoreDNS, Traefik and the operators off it, so they would have no node until the new
    pool is ready. With the type ignored, ``self`` keeps the type the state read back from LKE, and
    the postcondition compares it with the setting; a new cluster plans the setting and passes."""
    return dict(
        ignore_changes=["pool[0].type"],
        postcondition=[
            Postcondition(
                condition=f'${{self.pool[0].type == "{system_plan}"}}',
                error_message=(
                    f"The system pool runs ${{self.pool[0].type}}, not system_plan {system_plan}: the "
                    "provider would delete it before the new pool's nodes are ready, leaving CoreDNS, "
                    "Traefik and the operators without a node. Deploy with system_standby_plan first, "
                    'drain the old system nodes, then change system_plan (docs/lke.md "Change the '
                    'system plan"), or set system_plan back.'
                ),
            )
        ],
    )


def _kube_field(kubeconfig: object, section: str, entry: str, key: str) -> str:
    """``kubeconfig.<section>[0].<entry>.<key>`` as a Terraform expression."""
    return Fn.lookup(Fn.lookup(Fn.element(Fn.lookup(kubeconfig, section, []), 0), entry, {}), key, "")
