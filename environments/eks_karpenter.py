"""eks-karpenter: EKS with Karpenter and scale-to-zero GPU nodes, RDS, ALB controller and ACM.

Everything the cluster runs is a Helm release (Karpenter, its NodePools and EC2NodeClasses, the
NVIDIA device plugin, the Load Balancer Controller, the inference workload), so the first apply
plans without a cluster: the helm provider is configured from the cluster's attributes and only
connects when it creates the first release, after the cluster and its system nodes exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from cdktf import Fn, TerraformOutput, TerraformStack, TerraformVariable
from cdktf_cdktf_provider_aws.provider import AwsProvider, AwsProviderDefaultTags
from constructs import Construct

from environments import use_cluster
from environments.state import Backend, use_backend
from environments.variables import dns_name_rule, pinned_image_rule, rule
from gpu_constructs import validate, versions
from gpu_constructs.app_chart import DEFAULT_VALUES, AppChart, AppChartProps
from gpu_constructs.autoscaling import INTERCEPTOR_ADMIN_PORT, Keda, KedaProps
from gpu_constructs.backup import bucket_name
from gpu_constructs.cluster import GpuSharing, Manager
from gpu_constructs.compute.eks import (
    SEED_NODE_CLASSES,
    SEED_NODE_POOLS,
    SYSTEM_TAINT,
    EksGpuCompute,
    EksProps,
    NodePoolSpec,
)
from gpu_constructs.compute.eks.cluster import EbsCsiDriver
from gpu_constructs.compute.eks.nodepools import check_ami_alias
from gpu_constructs.compute.eks.services import (
    Certificate,
    DeployerRole,
    ExternalDns,
    LoadBalancerController,
    RdsPostgres,
    RdsPostgresProps,
)
from gpu_constructs.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginProps
from gpu_constructs.errors import ConfigError
from gpu_constructs.helm import ValuesLayers, deep_merge
from gpu_constructs.monitoring import DcgmSource, GrafanaIngress, Monitoring, MonitoringProps

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INFERENCE_RELEASE_TIMEOUT_S = 1800
"""Node launch and join (about 5 min), GPU advertised, image pull (several GB) and model load (the
startup probe's 10 min) for the first inference pod on a GPU pool at zero."""
COLD_START_TIMEOUT_S = 900
"""How long the interceptor holds a request that arrives while the workload is at zero: a GPU node's
launch and join, the image pull and the model load (about 5 to 12 minutes for TinyLlama on g4dn)."""
ALB_IDLE_TIMEOUT_S = COLD_START_TIMEOUT_S + 60
"""The ALB closes a connection idle this long (default 60 s): longer than the interceptor's hold, so
a request made at zero gets the application's answer or the interceptor's timeout, not an ALB 504."""


@dataclass(frozen=True)
class EksKarpenterSettings:
    """Structural settings of an eks-karpenter instance; defaults are the seed's dev environment."""

    environment: str = "dev"
    cluster_name: str = "gpu-dev-euw1-eks"
    region: str = "eu-west-1"
    availability_zones: tuple[str, ...] = ("eu-west-1a", "eu-west-1b", "eu-west-1c")
    vpc_cidr: str = EksProps.vpc_cidr
    kubernetes_version: str = EksProps.kubernetes_version
    extended_support: bool = EksProps.extended_support
    """Allow a Kubernetes version past EKS standard support (billed at the extended rate) and keep
    the cluster on it when standard support ends; False lets EKS upgrade it instead."""
    node_pools: tuple[NodePoolSpec, ...] = SEED_NODE_POOLS
    ami_alias: str = versions.EKS_NODE_AMI.version
    """The EKS-optimized AMI release every EC2NodeClass launches, ``al2023@vYYYYMMDD`` (or
    ``bottlerocket@vX.Y.Z``); it must exist for kubernetes_version in the region. A new value
    drifts the nodes, which Karpenter replaces as the pools' disruption budgets allow (the GPU pool:
    when a node is empty). Bottlerocket's NVIDIA variants run NVIDIA's device plugin themselves, so
    the stack installs none."""
    time_slicing_replicas: int = 1
    """Pods that share one GPU by time-slicing (1: none): NVIDIA's device plugin config on AL2023, the
    GPU class's Bottlerocket settings (v1.25.0 or later) on Bottlerocket."""
    rds_instance_class: str = "db.t4g.medium"
    rds_multi_az: bool = False
    rds_backup_retention_days: int = 30
    """RDS automated backups, the seed's 30-day retention (RDS allows 1 to 35)."""
    rds_deletion_protection: bool = True
    """RDS refuses to delete the database; set False and apply once before a destroy."""
    workload_name: str = "tinyllama-inference"
    workload_namespace: str = "inference"
    scale_to_zero: bool = True
    """The inference workload scales to zero when idle (KEDA's HTTP add-on) and the GPU pool with it;
    False keeps the HorizontalPodAutoscaler and at least one GPU node running."""
    scaledown_period_s: int = 300
    """Idle seconds before the last inference replica goes (then Karpenter removes the empty node
    after the GPU pool's consolidate_after)."""
    state_bucket: str | None = None
    """S3 bucket for the Terraform state, in ``region``: the shorthand of
    ``backend=Backend("s3", {"bucket": ..., "region": region})``; None with no backend keeps local
    state (synth needs no bucket)."""
    state_locking: bool = True
    """S3 native state locking (a lock file next to the state), with state_bucket."""
    backend: Backend | None = None
    """Where Terraform keeps this stack's state: None for state/<stack>.tfstate on this machine
    (git-ignored, mode 0700), or a remote backend such as ``Backend("s3", {"bucket": "acme-tf-state",
    "region": "eu-west-1"})`` (docs/settings.md)."""
    values_dir: Path = field(default=PROJECT_ROOT / "helm-values")

    monitoring: bool = True
    """Prometheus, Alertmanager and Grafana with GPU metrics and alerts, on the system nodes."""
    monitoring_retention: str = "7d"
    grafana_host: str = ""
    """Grafana at https://<grafana_host> behind its own internet-facing ALB with an ACM certificate
    validated in route53_zone_id (which must hold the name), open only to api_allowed_cidrs; ExternalDNS
    points the name at the ALB, as it does app_domain. Empty: no ingress (kubectl port-forward)."""

    PROPS_SETTINGS: ClassVar[Mapping[str, str]] = {
        "cluster name": "cluster_name",
        "instance_class": "rds_instance_class",
        "backup_retention_days": "rds_backup_retention_days",
        "app name": "workload_name",
        "app namespace": "workload_namespace",
    }
    """The settings that the constructs' props fields come from, where their names differ."""

    def __post_init__(self) -> None:
        validate.field_types(self)
        validate.one_of("environment", self.environment, ("dev", "staging", "production"))
        validate.k8s_name("workload_name", self.workload_name)
        validate.int_range("scaledown_period_s", self.scaledown_period_s, 30, 86400)
        check_ami_alias("ami_alias", self.ami_alias)
        declared = [p.name for p in self.node_pools if p.scale_to_zero]
        if not self.scale_to_zero and declared:
            raise ConfigError(
                "scale_to_zero",
                self.scale_to_zero,
                f"node pool {declared[0]} is declared scale_to_zero and the inference workload would "
                "keep a node in it; keep scale_to_zero=True or give that pool scale_to_zero=False",
            )
        if self.state_bucket is not None:
            bucket_name("state_bucket", self.state_bucket)
            if self.backend is not None:
                raise ConfigError(
                    "state_bucket",
                    self.state_bucket,
                    "backend is set too: give the bucket in backend's config, or drop backend",
                )
        if self.grafana_host:
            validate.dns_name("grafana_host", self.grafana_host)
            if not self.monitoring:
                raise ConfigError("grafana_host", self.grafana_host, "set monitoring=True or leave it empty")

    def state_backend(self) -> Backend | None:
        """The backend: ``backend``, or S3 in ``state_bucket``, or None for the local default."""
        if self.state_bucket is None:
            return self.backend
        return Backend(
            "s3", {"bucket": self.state_bucket, "region": self.region, "use_lockfile": self.state_locking}
        )


class EksKarpenterStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, settings: EksKarpenterSettings) -> None:
        super().__init__(scope, id)
        s = settings
        use_backend(self, s.state_backend())

        account_id = TerraformVariable(
            self,
            "aws_account_id",
            type="string",
            description="The AWS account the stack deploys into (12 digits).",
            validation=[
                rule('can(regex("^[0-9]{12}$", var.aws_account_id))', "aws_account_id must be 12 digits.")
            ],
        )
        api_cidrs = TerraformVariable(
            self,
            "api_allowed_cidrs",
            type="list(string)",
            description="Networks allowed to reach the public Kubernetes API endpoint.",
            validation=[
                rule("length(var.api_allowed_cidrs) > 0", "api_allowed_cidrs needs at least one network."),
                rule(
                    "alltrue([for c in var.api_allowed_cidrs : can(cidrnetmask(c))])",
                    "api_allowed_cidrs entries must be IPv4 CIDRs.",
                ),
            ],
        )
        deployer = TerraformVariable(
            self,
            "deployer_principal_arn",
            type="string",
            description="IAM principal (your CI's role or SSO role) allowed to assume the deployer role.",
            validation=[
                rule(
                    'can(regex("^arn:aws:iam::[0-9]{12}:", var.deployer_principal_arn))',
                    "deployer_principal_arn must be an IAM ARN.",
                )
            ],
        )
        domain = TerraformVariable(
            self,
            "app_domain",
            type="string",
            description="Public host name of the inference endpoint.",
            validation=[dns_name_rule("app_domain", "inference.example.com")],
        )
        zone_id = TerraformVariable(
            self,
            "route53_zone_id",
            type="string",
            description="Route 53 hosted zone of app_domain (DNS validation).",
            validation=[
                rule(
                    'can(regex("^[A-Z0-9]{1,32}$", var.route53_zone_id))',
                    "route53_zone_id must be a hosted zone id such as Z0123456789ABCDEFGHIJ (without "
                    "/hostedzone/).",
                )
            ],
        )
        image = TerraformVariable(
            self,
            "inference_image",
            type="string",
            description="Inference image with a pinned tag or digest.",
            validation=[pinned_image_rule("inference_image")],
        )

        AwsProvider(
            self,
            "aws",
            region=s.region,
            allowed_account_ids=[account_id.string_value],
            default_tags=[AwsProviderDefaultTags(tags={"stack": id, "environment": s.environment})],
        )
        compute = EksGpuCompute(
            self,
            "eks",
            props=EksProps(
                name=s.cluster_name,
                region=s.region,
                account_id=account_id.string_value,
                availability_zones=s.availability_zones,
                vpc_cidr=s.vpc_cidr,
                kubernetes_version=s.kubernetes_version,
                extended_support=s.extended_support,
                public_access_cidrs=api_cidrs.list_value,
                node_classes=tuple(replace(c, ami_alias=s.ami_alias) for c in SEED_NODE_CLASSES),
                node_pools=s.node_pools,
                sharing=GpuSharing(time_slicing_replicas=s.time_slicing_replicas),
            ),
        )
        cluster = use_cluster(self, compute.cluster)

        deployer_role = DeployerRole(self, "deployer", compute=compute, principal_arn=deployer.string_value)
        database = RdsPostgres(
            self,
            "rds",
            props=RdsPostgresProps(
                compute=compute,
                name=f"{s.cluster_name}-db",
                instance_class=s.rds_instance_class,
                multi_az=s.rds_multi_az,
                backup_retention_days=s.rds_backup_retention_days,
                deletion_protection=s.rds_deletion_protection,
            ),
        )
        certificate = Certificate(
            self, "certificate", domain=domain.string_value, zone_id=zone_id.string_value
        )
        lb_controller = LoadBalancerController(self, "alb-controller", compute=compute)
        # app_domain (and grafana_host) point at their ALBs through ExternalDNS, which reads the
        # Ingresses' hosts and the ALB's address from their status.
        external_dns = ExternalDns(self, "external-dns", compute=compute, zone_id=zone_id.string_value)
        # Bottlerocket's NVIDIA variants run NVIDIA's device plugin themselves, configured by the
        # EC2NodeClass's settings; a DaemonSet there would be a second plugin for nvidia.com/gpu,
        # and the kubelet keeps only the last one to register (kubernetes
        # pkg/kubelet/cm/devicemanager/manager.go, PluginConnected).
        device_plugin = (
            NvidiaDevicePlugin(
                self,
                "nvidia-device-plugin",
                props=NvidiaDevicePluginProps(cluster=cluster, depends_on=[compute.node_pools]),
            )
            if compute.platform.device_plugin is Manager.STACK
            else None
        )

        system_tolerations = [{"key": SYSTEM_TAINT.key, "operator": "Exists", "effect": SYSTEM_TAINT.effect}]
        keda = Keda(
            self,
            "keda",
            props=KedaProps(
                cluster=cluster,
                node_selector={"role": "system"},
                tolerations=system_tolerations,
            ),
        )
        scale_to_zero = (
            keda.scale_to_zero(
                scaledown_period_s=s.scaledown_period_s,
                cold_start_timeout_s=COLD_START_TIMEOUT_S,
                # The first pod after an install gets the release's whole wait to become ready.
                initial_cooldown_s=INFERENCE_RELEASE_TIMEOUT_S,
            )
            if s.scale_to_zero
            else None
        )
        values = ValuesLayers(overlay=s.environment, directory=s.values_dir)
        if s.monitoring:
            ebs = EbsCsiDriver(
                self,
                "ebs-csi",
                eks=compute.eks,
                cluster=cluster,
                name=s.cluster_name,
                # The Pod Identity agent add-on hands the controller its credentials.
                depends_on=[compute.system_nodes, *compute.control_plane.addons],
            )
            Monitoring(
                self,
                "monitoring",
                props=MonitoringProps(
                    cluster=cluster,
                    # No GPU Operator: the AMI brings the driver; the exporter runs as a DaemonSet
                    # on the GPU nodes Karpenter launches (a DaemonSet does not keep a node up).
                    dcgm=DcgmSource.STANDALONE,
                    scheduling={
                        "nodeSelector": {"role": "system"},
                        "tolerations": [SYSTEM_TAINT.toleration()],
                    },
                    retention=s.monitoring_retention,
                    storage_class=ebs.storage_class_name,
                    grafana_ingress=self._grafana_ingress(s.grafana_host, zone_id, api_cidrs),
                    values=values,
                    # After the class and so after the driver: a destroy uninstalls the monitoring
                    # releases while the driver still runs to detach their volumes, and the load
                    # balancer controller removes Grafana's ALB before it goes.
                    depends_on=[
                        compute.node_pools,
                        ebs.storage_class,
                        lb_controller.release,
                        external_dns.record_cleanup,
                    ],
                ),
            )
        if scale_to_zero is not None:
            # The targets are the interceptor's pods, which answer /readyz on their admin port (the
            # ALB's default, "/" on the traffic port, is routed by Host header and answers a health
            # check with 404). The ALB's idle timeout outlasts the interceptor's hold of a request
            # made at zero.
            health = {
                "alb.ingress.kubernetes.io/healthcheck-path": "/readyz",
                "alb.ingress.kubernetes.io/healthcheck-port": str(INTERCEPTOR_ADMIN_PORT),
                "alb.ingress.kubernetes.io/load-balancer-attributes": (
                    f"idle_timeout.timeout_seconds={ALB_IDLE_TIMEOUT_S}"
                ),
            }
        else:
            # The target group checks what the pod's readiness probe checks (the ALB's default,
            # "/", is not served by the inference app).
            probes = deep_merge(DEFAULT_VALUES, values.load("inference"))["probes"]
            health = {"alb.ingress.kubernetes.io/healthcheck-path": probes["readiness"]}
        workload = AppChart(
            self,
            "workload",
            props=AppChartProps(
                cluster=cluster,
                name=s.workload_name,
                namespace=s.workload_namespace,
                image=image.string_value,
                host=domain.string_value,
                values=values,
                values_chart="inference",
                cluster_issuer=None,
                ingress_class="alb",
                ingress_namespace=scale_to_zero.interceptor_namespace if scale_to_zero else "kube-system",
                ingress_annotations={
                    "alb.ingress.kubernetes.io/scheme": "internet-facing",
                    "alb.ingress.kubernetes.io/target-type": "ip",
                    "alb.ingress.kubernetes.io/listen-ports": '[{"HTTPS": 443}]',
                    "alb.ingress.kubernetes.io/certificate-arn": certificate.arn,
                    "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                    **health,
                },
                # The VPC CNI enforces NetworkPolicies only with its network policy agent enabled.
                network_policies=False,
                scale_to_zero=scale_to_zero,
                # The HTTPScaledObject needs the add-on's CRD and its Ingress the interceptor's Service.
                # ExternalDNS too (through its destroy-time pause): on destroy it deletes app_domain's
                # record once the Ingress is gone.
                depends_on=[
                    *([device_plugin.release] if device_plugin else []),
                    lb_controller.release,
                    external_dns.record_cleanup,
                    compute.node_pools,
                    keda.http_add_on,
                ],
            ),
        )
        # A start from zero GPU nodes takes minutes before the pod is ready: Karpenter launches a
        # node, the AL2023 NVIDIA AMI boots and joins, the device plugin advertises the GPU, the
        # image is pulled and the model loads (the startup probe allows 10 minutes). The release
        # stays atomic, with a timeout that fits all of it instead of the 600 s default.
        workload.release.timeout = INFERENCE_RELEASE_TIMEOUT_S

        TerraformOutput(self, "cluster_name", value=s.cluster_name)
        TerraformOutput(self, "cluster_endpoint", value=compute.eks.endpoint)
        TerraformOutput(
            self,
            "update_kubeconfig",
            value=f"aws eks update-kubeconfig --region {s.region} --name {s.cluster_name}",
        )
        TerraformOutput(self, "interruption_queue", value=compute.interruption_queue.name)
        TerraformOutput(self, "database_endpoint", value=database.instance.endpoint)
        TerraformOutput(
            self,
            "database_secret_arn",
            value=database.master_secret_arn,
            description="Secrets Manager secret with the master credentials.",
        )
        TerraformOutput(self, "certificate_arn", value=certificate.arn)
        TerraformOutput(self, "deployer_role_arn", value=deployer_role.role.arn)

    def _grafana_ingress(
        self, host: str, zone_id: TerraformVariable, api_cidrs: TerraformVariable
    ) -> GrafanaIngress | None:
        if not host:
            return None
        certificate = Certificate(self, "grafana-certificate", domain=host, zone_id=zone_id.string_value)
        return GrafanaIngress(
            host,
            ingress_class="alb",
            annotations={
                "alb.ingress.kubernetes.io/scheme": "internet-facing",
                "alb.ingress.kubernetes.io/target-type": "ip",
                "alb.ingress.kubernetes.io/listen-ports": '[{"HTTPS": 443}]',
                "alb.ingress.kubernetes.io/certificate-arn": certificate.arn,
                "alb.ingress.kubernetes.io/ssl-policy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                # Grafana's login page is the only other gate: the admins' networks only.
                "alb.ingress.kubernetes.io/inbound-cidrs": Fn.join(",", api_cidrs.list_value),
                "alb.ingress.kubernetes.io/healthcheck-path": "/api/health",
            },
        )
