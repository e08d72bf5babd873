"""lke: Linode LKE with an HA control plane, an autoscaling GPU pool, a firewall and GPU software.

Kubeflow is the seed's phase 2: it will be a construct that takes this stack's GpuCluster (like
AppChart) and is added after the GPU Operator below; nothing in the cluster layout needs to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from cdktf import Fn, TerraformOutput, TerraformStack, TerraformVariable
from constructs import Construct

from environments import use_cluster
from environments.state import Backend, use_backend
from environments.variables import rule
from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuSharing
from gpu_constructs.compute.lke import LINODE_DELETE_CLASS, LkeGpuCompute, LkeProps
from gpu_constructs.compute.lke.bindings import LinodeProvider
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
from gpu_constructs.monitoring import NODE_EXPORTER_PORT, DcgmSource, Monitoring, MonitoringProps
from gpu_constructs.networking import TRAEFIK_PROVIDERS
from gpu_constructs.smoke_test import smoke_test_job

SMOKE_TEST_NAMESPACE = "gpu-smoke-test"


@dataclass(frozen=True)
class LkeSettings:
    """Structural settings of an lke instance; defaults are the seed's."""

    region: str = LkeProps.region
    k8s_version: str = versions.LKE_KUBERNETES.version
    gpu_plan: str = versions.LKE_GPU_PLAN.version
    gpu_min_nodes: int = LkeProps.gpu_min_nodes
    gpu_max_nodes: int = LkeProps.gpu_max_nodes
    system_plan: str = LkeProps.system_plan
    system_nodes: int = LkeProps.system_nodes
    system_standby_plan: str | None = LkeProps.system_standby_plan
    """A second system pool on this plan while ``system_plan`` changes; a new ``system_plan`` alone
    fails the plan, since LKE would delete the old pool before the new one is up (docs/lke.md,
    Change the system plan)."""
    firewall: bool = LkeProps.firewall
    tier: str = LkeProps.tier
    """``standard``: cloud-firewall-controller keeps the nodes in the firewall; ``enterprise``: the
    pools' firewall_id (k8s_version then a full version such as v1.31.8+lke5)."""
    driver_preinstalled: bool = LkeProps.driver_preinstalled
    """LKE GPU nodes bring the NVIDIA driver and toolkit (Akamai's LKE GPU guide); False lets the GPU
    Operator install them."""
    time_slicing_replicas: int = 1
    smoke_test: bool = True
    """nvidia-smi on a GPU node during the apply, which waits for it: the Job gets a GPU only once the
    GPU Operator's device plugin runs, through RuntimeClass nvidia, so a node image without that
    runtime handler fails the apply instead of leaving the GPUs silently unadvertised."""
    monitoring: bool = True
    """Prometheus, Alertmanager and Grafana with GPU metrics and alerts on the system pool."""
    monitoring_retention: str = "15d"
    monitoring_storage_size: str = "20Gi"
    protect_cluster: bool = True
    """``lifecycle.prevent_destroy`` on the LKE cluster: Terraform refuses a plan that destroys or
    replaces it (a new region or tier). A replacement would delete the old cluster with every release
    still installed (their NodeBalancer, the controller's firewall and the volumes stay billed); set
    False only to run ``cdktf destroy lke`` (docs/lke.md, Replace the cluster)."""
    backend: Backend | None = None
    """Where Terraform keeps this stack's state: None for state/<stack>.tfstate on this machine
    (git-ignored, mode 0700), or a remote backend such as ``Backend("s3", {"bucket": "acme-tf-state",
    "region": "eu-west-1"})`` (docs/settings.md)."""

    PROPS_SETTINGS: ClassVar[Mapping[str, str]] = {}
    """The constructs' props fields have the settings' names."""

    def __post_init__(self) -> None:
        validate.field_types(self)


class LkeStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, settings: LkeSettings) -> None:
        super().__init__(scope, id)
        s = settings
        use_backend(self, s.backend)
        token = TerraformVariable(
            self,
            "linode_token",
            type="string",
            sensitive=True,
            description="Linode API token with LKE and firewall rights.",
            validation=[
                rule(
                    'can(regex("^[A-Za-z0-9]{32,128}$", var.linode_token))',
                    "linode_token must be a Linode API token (letters and digits).",
                )
            ],
        )
        prefix = TerraformVariable(
            self,
            "cluster_name_prefix",
            type="string",
            description="Prefix of the cluster label: <prefix>-lke-gpu-kubeflow.",
            validation=[
                rule(
                    # The cluster label <prefix>-lke-gpu-kubeflow within LKE's 32 characters, and
                    # the firewall label <prefix>-lke-gpu-nodes without '--' (Linode label rules).
                    'can(regex("^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$", var.cluster_name_prefix))'
                    ' && !strcontains(var.cluster_name_prefix, "--")',
                    "cluster_name_prefix must be 1-15 lower-case letters, digits or '-', starting and "
                    "ending with a letter or digit, without '--'.",
                )
            ],
        )
        cidr_rule = "alltrue([for c in var.{name} : can(cidrnetmask(c))])"
        allowlists = {}
        for name, what in (
            ("api_allowed_cidrs", "the Kubernetes API"),
            ("ui_allowed_cidrs", "ports 80 and 443 (the UI)"),
        ):
            rules = [
                rule(
                    cidr_rule.format(name=name), f"{name} entries must be IPv4 CIDRs such as 203.0.113.0/24."
                )
            ]
            if s.firewall:
                rules.append(
                    rule(
                        f"length(var.{name}) > 0",
                        f"{name} needs at least one network while the firewall is on.",
                    )
                )
            allowlists[name] = TerraformVariable(
                self, name, type="list(string)", description=f"Networks allowed to {what}.", validation=rules
            )
        # The API ACL is enabled whatever `firewall` says, and an enabled ACL with an empty list
        # denies everyone: without the runner's address the helm provider cannot reach the API.
        runner = TerraformVariable(
            self,
            "runner_cidrs",
            type="list(string)",
            description="Networks Terraform runs from (e.g. 198.51.100.7/32), always in the API ACL.",
            validation=[
                rule(
                    cidr_rule.format(name="runner_cidrs"),
                    "runner_cidrs entries must be IPv4 CIDRs such as 198.51.100.7/32.",
                ),
                rule(
                    "length(var.runner_cidrs) > 0",
                    "runner_cidrs needs the network Terraform runs from: the API ACL would lock it out.",
                ),
            ],
        )

        controller_token = None
        if s.firewall and s.tier == "standard":
            controller_token = TerraformVariable(
                self,
                "firewall_controller_token",
                type="string",
                sensitive=True,
                description=(
                    "Linode API token for cloud-firewall-controller (Firewalls and Linodes read/write); "
                    "written into Secret kube-system/linode-cfw in the cluster."
                ),
                validation=[
                    rule(
                        'can(regex("^[A-Za-z0-9]{32,128}$", var.firewall_controller_token))',
                        "firewall_controller_token must be a Linode API token (letters and digits).",
                    )
                ],
            ).string_value
        compute = LkeGpuCompute(
            self,
            "lke",
            props=LkeProps(
                label=f"{prefix.string_value}-lke-gpu-kubeflow",
                api_allowlist=allowlists["api_allowed_cidrs"].list_value,
                ui_allowlist=allowlists["ui_allowed_cidrs"].list_value,
                runner_allowlist=runner.list_value,
                # At most 16 + 14 characters: within the firewall label's 32.
                firewall_label=f"{prefix.string_value}-lke-gpu-nodes",
                region=s.region,
                k8s_version=s.k8s_version,
                gpu_plan=s.gpu_plan,
                gpu_min_nodes=s.gpu_min_nodes,
                gpu_max_nodes=s.gpu_max_nodes,
                system_plan=s.system_plan,
                system_nodes=s.system_nodes,
                system_standby_plan=s.system_standby_plan,
                firewall=s.firewall,
                tier=s.tier,
                firewall_controller_token=controller_token,
                driver_preinstalled=s.driver_preinstalled,
                sharing=GpuSharing(time_slicing_replicas=s.time_slicing_replicas),
                # Prometheus scrapes node-exporter at every node's address (hostNetwork).
                node_tcp_ports=(NODE_EXPORTER_PORT,) if s.monitoring else (),
            ),
        )
        if s.protect_cluster:
            # The helm provider is configured from this cluster's kubeconfig attribute, so on a
            # replacement Terraform refreshes and uninstalls the releases against the new, unknown
            # cluster: the releases are dropped from state (terraform-provider-helm v3.1.1
            # resource_helm_release.go Read removes a release on any lookup error,
            # hashicorp/terraform-provider-helm#1669) or uninstalled from the new, empty cluster after
            # the old one is deleted with them. A plain destroy orders them first; the plan refuses the rest.
            compute.lke.add_override("lifecycle.prevent_destroy", True)
        LinodeProvider(self, "linode", token=token.string_value, api_version=compute.provider_api_version)
        cluster = use_cluster(self, compute.cluster)
        operator = GpuOperator(self, "gpu-operator", props=GpuOperatorProps(cluster=cluster))
        if s.smoke_test:
            # The operator's operands roll out after its release is ready (Helm waits for the
            # operator only): the Job's deadline leaves them time, below the release's timeout.
            job = smoke_test_job(cluster, versions.CUDA_SMOKE_TEST_IMAGE.version, SMOKE_TEST_NAMESPACE, 1200)
            smoke_test = helm.manifests_release(
                self,
                "gpu-smoke-test",
                cluster=cluster,
                name="gpu-smoke-test",
                namespace=SMOKE_TEST_NAMESPACE,
                manifests=[job],
                depends_on=[operator.release],
            )
            smoke_test.wait_for_jobs = True
            smoke_test.timeout = 1500
        if s.monitoring:
            Monitoring(
                self,
                "monitoring",
                props=MonitoringProps(
                    cluster=cluster,
                    dcgm=DcgmSource.GPU_OPERATOR,
                    # Deleting an LKE cluster does not delete its volumes (Linode API, DELETE
                    # /lke/clusters/{id}), and the default class, linode-block-storage-retain, keeps
                    # them after their claims too. With linode-block-storage (reclaimPolicy Delete)
                    # and the claims deleted with their StatefulSets, uninstalling the release
                    # deletes the Linode volumes while the CSI driver still runs.
                    storage_class=LINODE_DELETE_CLASS,
                    delete_volumes=True,
                    # The GPU pool's taint keeps everything here on the system pool.
                    retention=s.monitoring_retention,
                    storage_size=s.monitoring_storage_size,
                ),
            )

        # The ingress the UI is served through, on the system pool (it does not tolerate the GPU
        # taint). Its LoadBalancer Service gets a NodeBalancer, which reaches the nodes past the node
        # firewall's UI rule, so the Linode CCM's firewall ACL annotation restricts it to
        # ui_allowed_cidrs.
        helm.release(
            self,
            "traefik",
            cluster=cluster,
            name="traefik",
            chart="traefik",
            repository=versions.REPO_TRAEFIK,
            version=versions.TRAEFIK_CHART.version,
            namespace="traefik",
            values={
                "providers": TRAEFIK_PROVIDERS,
                "ingressClass": {"enabled": True, "isDefaultClass": True, "name": "traefik"},
                "service": {"type": "LoadBalancer", "annotations": compute.load_balancer_annotations},
            },
        )

        TerraformOutput(
            self,
            "kubeconfig",
            value=Fn.base64decode(compute.kubeconfig),
            sensitive=True,
            description="make kubeconfig STACK=lke writes it to kubeconfig/lke.yaml with mode 0600",
        )
        # What a LoadBalancer Service on this cluster (Traefik's above; Kubeflow's, phase 2) puts in
        # its metadata.annotations, so its NodeBalancer admits only ui_allowed_cidrs.
        TerraformOutput(
            self,
            "load_balancer_annotations",
            value=compute.load_balancer_annotations,
            description="Annotations for LoadBalancer Services: the NodeBalancer's firewall ACL.",
        )
        TerraformOutput(self, "cluster_label", value=f"{prefix.string_value}-lke-gpu-kubeflow")
        TerraformOutput(self, "api_endpoints", value=compute.lke.get_list_attribute("api_endpoints"))
