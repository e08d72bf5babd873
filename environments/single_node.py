"""single-node: an existing Ubuntu GPU host (plus optional GPU agents) reached over SSH.

k3s with the NVIDIA driver and toolkit, the GPU Operator, firewall and DNS, storage classes and
backups, Vault, cert-manager, Traefik ingress, PostgreSQL 16 and the application on a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cdktf import (
    DataResource,
    Fn,
    TerraformOutput,
    TerraformStack,
    TerraformVariable,
)
from constructs import Construct

from environments import use_cluster
from environments.state import Backend, use_backend
from environments.variables import (
    cloudflare_token_variable,
    dns_name_rule,
    host_in_zone_rule,
    in_zone_rule,
    k3s_token_variable,
    pinned_image_rule,
    public_address_variable,
    rule,
)
from environments.variables import kubeconfig_path as kubeconfig_path_of
from gpu_constructs import validate, versions
from gpu_constructs.app_chart import AppChart, AppChartProps
from gpu_constructs.backup import ObjectStore
from gpu_constructs.cluster import GpuSharing, MigStrategy
from gpu_constructs.compute.k3s.etcd import EtcdS3, EtcdSnapshots
from gpu_constructs.compute.k3s_host import NODE_SERVICES, K3sHostGpuCompute, K3sHostProps
from gpu_constructs.database import ObjectStoreAccess, Postgres, PostgresProps
from gpu_constructs.errors import ConfigError
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
from gpu_constructs.helm import ValuesLayers
from gpu_constructs.hostexec import HOST_KEY_IN_TEXT, SshHost
from gpu_constructs.monitoring import (
    HOST_NETWORK_PORTS,
    DcgmSource,
    GrafanaIngress,
    Monitoring,
    MonitoringProps,
)
from gpu_constructs.networking import ACME_SOLVERS, Networking, NetworkingProps
from gpu_constructs.storage import Storage, StorageProps
from gpu_constructs.vault import AwsKmsSeal, Vault, VaultProps, VaultSnapshots

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VAULT_SEALS = ("awskms", "shamir")
GRAFANA_ISSUER = "letsencrypt-production"


def kms_seal_variables(scope: Construct) -> AwsKmsSeal:
    """The AWS KMS key that unseals Vault, and the access keys of an IAM user allowed to use it."""
    region = TerraformVariable(
        scope,
        "vault_kms_region",
        type="string",
        description="AWS region of the KMS key that unseals Vault, e.g. eu-west-1.",
        validation=[
            rule(
                'can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.vault_kms_region))',
                "vault_kms_region must be an AWS region such as eu-west-1.",
            )
        ],
    )
    key_id = TerraformVariable(
        scope,
        "vault_kms_key_id",
        type="string",
        description="KMS key that unseals Vault: its id, ARN or alias (alias/vault-unseal).",
        validation=[
            rule(
                'can(regex("^(alias/[A-Za-z0-9/_-]+|[0-9a-f-]{36}|arn:aws[a-z-]*:kms:[^ ]+)$", '
                "var.vault_kms_key_id))",
                "vault_kms_key_id must be a KMS key id, key ARN or alias/<name>.",
            )
        ],
    )
    access_key_id = TerraformVariable(
        scope,
        "vault_kms_access_key_id",
        type="string",
        sensitive=True,
        description="Access key id of an IAM user allowed kms:Encrypt, kms:Decrypt and kms:DescribeKey.",
        validation=[
            rule(
                'can(regex("^[A-Z0-9]{16,128}$", var.vault_kms_access_key_id))',
                "vault_kms_access_key_id must be an AWS access key id (upper-case letters and digits).",
            )
        ],
    )
    secret_access_key = TerraformVariable(
        scope,
        "vault_kms_secret_access_key",
        type="string",
        sensitive=True,
        description="Secret access key of that IAM user.",
        validation=[
            rule(
                'can(regex("^[A-Za-z0-9/+=]{30,128}$", var.vault_kms_secret_access_key))',
                "vault_kms_secret_access_key must be an AWS secret access key.",
            )
        ],
    )
    return AwsKmsSeal(
        region=region.string_value,
        kms_key_id=key_id.string_value,
        access_key_id=access_key_id.string_value,
        secret_access_key=secret_access_key.string_value,
    )


@dataclass(frozen=True)
class SingleNodeSettings:
    """Structural settings of a single-node instance. Defaults are the seed's, except where noted."""

    environment: str = "production"
    """dev, staging or production: picks the values overlay and the Vault secret paths."""
    agent_count: int = 0
    """GPU hosts that join as k3s agents; ``gpu_node_ips`` lists the server and then each agent."""
    gpu_enabled: bool = K3sHostProps.gpu_enabled
    """Set up the NVIDIA stack; False deploys everything without a GPU (the app then asks for none)."""
    nvidia_driver_version: str = versions.NVIDIA_DRIVER_BRANCH.version
    """NVIDIA driver branch (the seed's 545 is end-of-life; 580 is the long-term branch)."""
    nvidia_kernel_modules: str = "open"
    """open (NVIDIA's default since 560; Turing and newer) or proprietary (Volta, Pascal and older)."""
    container_toolkit_version: str = versions.NVIDIA_CONTAINER_TOOLKIT.version
    k3s_version: str = versions.K3S.version
    etcd_snapshot_cron: str = "0 */6 * * *"
    """When k3s snapshots its datastore (embedded etcd; cron, the server's local time) and uploads the
    snapshot to the backup bucket under ``<backup_path>/k3s/``."""
    etcd_snapshot_retention: int = 28
    """Snapshots k3s keeps on the server and in the bucket: 28 at six-hourly is a week."""
    taint_gpu_nodes: bool = K3sHostProps.taint_gpu_nodes
    """The seed taints GPU nodes; with one host that would strand every non-GPU pod, so it is off."""
    gpus_per_node: int = K3sHostProps.gpus_per_node
    time_slicing_replicas: int = 1
    """Pods per GPU by time-slicing; the seed's 2-10 replicas on one GPU need this above 1."""
    mig_strategy: str = "none"
    """none, single or mixed (MIG on A100/H100)."""
    mig_config: str = GpuOperatorProps.mig_config
    """With MIG: the MIG manager configuration every MIG-capable GPU gets (all-1g.10gb, ...)."""
    deploy_gpu_operator: bool = True
    gpu_monitoring: bool = True
    """DCGM exporter."""
    monitoring: bool = True
    """Prometheus, Alertmanager and Grafana with the GPU alerts and dashboards (gpu_constructs.monitoring)."""
    monitoring_retention: str = "15d"
    monitoring_storage_size: str = "20Gi"
    grafana_host: str = ""
    """Grafana at https://<grafana_host> through Traefik, with a Let's Encrypt certificate and an A
    record like app_domain's; a name inside dns_zone. Empty: no ingress (kubectl port-forward)."""
    vault_ha: bool = False
    vault_replicas: int = 3
    vault_bootstrap: bool = True
    """Initialize, unseal and configure Vault from the k3s server after install."""
    vault_seal: str = "awskms"
    """How Vault unseals after a restart or reboot: ``awskms`` (auto-unseal with an AWS KMS key; needs
    the vault_kms_* variables) or ``shamir`` (key holders unseal by hand after every restart; the
    application is down until then)."""
    vault_snapshot_schedule: str = "30 2 * * *"
    """When Vault's raft snapshot is taken and uploaded to the backup bucket (cron, UTC), under
    ``<backup_path>/vault/``."""
    vault_snapshot_retention_days: int = 30
    """Vault snapshots older than this are deleted after each new upload."""
    postgres_instances: int = 1
    postgres_storage_size: str = "20Gi"
    backup_schedule: str = "0 2 * * *"
    """When the base backup runs (cron, UTC); WAL is archived continuously in between."""
    backup_retention_days: int = 30
    backup_endpoint: str = "https://s3.amazonaws.com"
    """S3 API of the object store the database backs up to: AWS S3, MinIO, Cloudflare R2, Backblaze B2
    (keys in the backup_access_key_id and backup_secret_access_key variables)."""
    backup_region: str = "us-east-1"
    """The bucket's signing region (``auto`` on R2)."""
    backup_bucket: str = "ffe-backups"
    """An existing bucket (barman-cloud does not create it): set your own."""
    backup_path: str = "single-node"
    """Folder in the bucket; the database's WAL and base backups go under ``<path>/ffe-db/``."""
    backup_encryption: str = "AES256"
    """Server-side encryption of every object: AES256, aws:kms, or "" for the bucket's own policy
    (MinIO without a KMS refuses the header)."""
    backup_wal_compression: str = "gzip"
    backup_data_compression: str = "gzip"
    app_name: str = "ffe-backend"
    app_namespace: str = VaultProps.app_namespace
    """Namespace of the application and of its database. Changing it moves the database: with
    ``protect_data`` the plan refuses that."""
    protect_data: bool = True
    """``lifecycle.prevent_destroy`` on the releases that hold data (the PostgreSQL Cluster, Vault):
    a plan that would destroy or replace them (``app_namespace`` changed, a forced replacement, a
    ``cdktf destroy``) fails instead of deleting the database's claim or Vault's storage. Set False,
    synth and apply or destroy, once the backups are checked."""
    app_gpus: int = 1
    letsencrypt_challenge: str = "dns01-cloudflare"
    """How Let's Encrypt validates the domains: ``dns01-cloudflare`` (a TXT record in the Cloudflare
    zone; works for a private address such as 192.168.1.100, needs the cloudflare_api_token variable) or
    ``http01`` (through the ingress; the A record's address must be reachable from the internet)."""
    host_network_prefix: int = 24
    """Without the admin_cidrs variable, SSH and the API are open to each host's own /24 network."""
    network_policies: bool = AppChartProps.network_policies
    verify_ssh_host_keys: bool = True
    """Check every host's SSH key against the ``ssh_host_keys`` variable. False connects without
    checking (and drops the variable): whoever answers at the address gets the cluster token."""
    values_dir: Path = PROJECT_ROOT / "helm-values"
    """Folder of the values files; ``<chart>/base.yaml`` plus ``<chart>/<environment>.yaml``."""
    backend: Backend | None = None
    """Where Terraform keeps this stack's state: None for state/<stack>.tfstate on this machine
    (git-ignored, mode 0700), or a remote backend such as ``Backend("s3", {"bucket": "acme-tf-state",
    "region": "eu-west-1"})`` (docs/settings.md)."""

    PROPS_SETTINGS: ClassVar[Mapping[str, str]] = {
        "driver_branch": "nvidia_driver_version",
        "driver_kernel_modules": "nvidia_kernel_modules",
        "toolkit_version": "container_toolkit_version",
        "verify_host_keys": "verify_ssh_host_keys",
        "gpus": "app_gpus",
        "app name": "app_name",
        "app namespace": "app_namespace",
        "postgres namespace": "app_namespace",
    }
    """The settings that the constructs' props fields come from, where their names differ."""

    def __post_init__(self) -> None:
        validate.field_types(self)
        validate.one_of("environment", self.environment, ("dev", "staging", "production"))
        self.object_store()
        validate.int_range("agent_count", self.agent_count, 0, 50)
        validate.one_of("mig_strategy", self.mig_strategy, [m.value for m in MigStrategy])
        validate.one_of("letsencrypt_challenge", self.letsencrypt_challenge, ACME_SOLVERS)
        validate.one_of("vault_seal", self.vault_seal, VAULT_SEALS)
        EtcdSnapshots(self.etcd_snapshot_cron, self.etcd_snapshot_retention).check()
        validate.cron("vault_snapshot_schedule", self.vault_snapshot_schedule)
        validate.int_range("vault_snapshot_retention_days", self.vault_snapshot_retention_days, 1, 3650)
        validate.int_range("host_network_prefix", self.host_network_prefix, 8, 32)
        if self.monitoring and self.gpu_enabled and not (self.gpu_monitoring and self.deploy_gpu_operator):
            raise ConfigError(
                "monitoring",
                True,
                "GPU monitoring scrapes the GPU Operator's DCGM exporter: keep deploy_gpu_operator and "
                "gpu_monitoring True, or set monitoring=False",
            )
        if self.taint_gpu_nodes and self.gpu_enabled:
            raise ConfigError(
                "taint_gpu_nodes",
                True,
                "every host of single-node is a GPU node, so the taint leaves no node for Vault, "
                "PostgreSQL and the ingress (they would stay Pending); set taint_gpu_nodes=False",
            )
        if self.grafana_host:
            validate.dns_name("grafana_host", self.grafana_host)
            if not self.monitoring:
                raise ConfigError("grafana_host", self.grafana_host, "set monitoring=True or leave it empty")
        if not self.gpu_enabled and self.app_gpus:
            raise ConfigError(
                "app_gpus", self.app_gpus, "gpu_enabled is False, so set app_gpus=0 to run the app on CPU"
            )

    def object_store(self) -> ObjectStore:
        return ObjectStore(
            bucket=self.backup_bucket,
            endpoint=self.backup_endpoint,
            region=self.backup_region,
            path=self.backup_path,
            retention_days=self.backup_retention_days,
            schedule=self.backup_schedule,
            wal_compression=self.backup_wal_compression,
            data_compression=self.backup_data_compression,
            encryption=self.backup_encryption,
        )


class SingleNodeStack(TerraformStack):
    """The single-node environment as one Terraform stack."""

    def __init__(self, scope: Construct, id: str, *, settings: SingleNodeSettings) -> None:
        super().__init__(scope, id)
        s = settings
        hosts_count = 1 + s.agent_count
        use_backend(self, s.backend)

        node_ips = TerraformVariable(
            self,
            "gpu_node_ips",
            type="list(string)",
            description=f"IPv4 addresses of the hosts: the k3s server first, then {s.agent_count} agent(s).",
            validation=[
                rule(
                    f"length(var.gpu_node_ips) == {hosts_count}",
                    f"gpu_node_ips must list exactly {hosts_count} address(es): the server "
                    "first, then one per agent (agent_count in the stack settings).",
                ),
                rule(
                    'alltrue([for ip in var.gpu_node_ips : can(cidrhost("${ip}/32", 0))])',
                    "Every gpu_node_ips entry must be an IPv4 address such as 192.168.1.100.",
                ),
            ],
        )
        ssh_user = TerraformVariable(
            self,
            "ssh_user",
            type="string",
            default="ubuntu",
            description="SSH user with passwordless sudo on every host.",
            validation=[
                rule(
                    'can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))',
                    "ssh_user must be a Linux user name such as ubuntu.",
                )
            ],
        )
        ssh_key = TerraformVariable(
            self,
            "ssh_private_key_path",
            type="string",
            default="~/.ssh/id_ed25519",
            description="Private key that logs in as ssh_user on every host.",
            # Not validated: UNVALIDATED in environments/variables.py says why.
        )
        host_keys = None
        if s.verify_ssh_host_keys:
            host_keys = TerraformVariable(
                self,
                "ssh_host_keys",
                type="list(string)",
                description=(
                    "SSH host keys of each host, in gpu_node_ips order: the output of "
                    "'ssh-keyscan <ip>' (every key type, one a line; compare 'ssh-keygen -lf' of it "
                    "with 'ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub' on the host's console). The "
                    "stack pins the key Terraform's SSH client negotiates (ECDSA on a stock host)."
                ),
                validation=[
                    rule(
                        f"length(var.ssh_host_keys) == {hosts_count}",
                        f"ssh_host_keys must list exactly {hosts_count} key(s), one per gpu_node_ips entry.",
                    ),
                    rule(
                        "alltrue([for k in var.ssh_host_keys : "
                        f'length(regexall("{HOST_KEY_IN_TEXT}", k)) > 0])',
                        "Every ssh_host_keys entry must hold the host's public keys as 'ssh-keyscan <ip>' "
                        "prints them, e.g. '192.168.1.100 ecdsa-sha2-nistp256 AAAAE2Vj...' (one a line).",
                    ),
                ],
            )
        k3s_token = k3s_token_variable(self)
        app_domain = TerraformVariable(
            self,
            "app_domain",
            type="string",
            description="Public host name of the application, e.g. api.example.com.",
            validation=[
                rule(
                    'can(regex("^([a-z0-9]([-a-z0-9]*[a-z0-9])?[.])+[a-z]{2,}$", var.app_domain))',
                    "app_domain must be a lower-case DNS name such as api.example.com.",
                )
            ],
        )
        dns_zone = TerraformVariable(
            self,
            "dns_zone",
            type="string",
            description="Cloudflare zone that holds app_domain, e.g. example.com.",
            validation=[
                dns_name_rule("dns_zone", "example.com"),
                in_zone_rule(["app_domain"]),
                *([host_in_zone_rule("grafana_host", s.grafana_host, "dns_zone")] if s.grafana_host else []),
            ],
        )
        acme_email = TerraformVariable(
            self,
            "acme_email",
            type="string",
            description="Contact e-mail for Let's Encrypt.",
            validation=[
                rule(
                    'can(regex("^[^@ ]+@[^@ ]+[.][^@ ]+$", var.acme_email))',
                    "acme_email must be an e-mail address such as ops@example.com.",
                )
            ],
        )
        # admin_cidrs and public_address are read by expressions given to Networking below.
        TerraformVariable(
            self,
            "admin_cidrs",
            type="list(string)",
            default=[],
            description=(
                "Networks that may reach SSH (22) and the Kubernetes API (6443) on the hosts; include the "
                f"machine that runs Terraform. Empty: each host's own /{s.host_network_prefix} network."
            ),
            validation=[
                rule(
                    "alltrue([for c in var.admin_cidrs : can(cidrnetmask(c))])",
                    "Every admin_cidrs entry must be an IPv4 network such as 203.0.113.0/24.",
                )
            ],
        )
        public_address_variable(self, s.letsencrypt_challenge, "var.gpu_node_ips[0]")
        cloudflare_api_token = (
            cloudflare_token_variable(self) if s.letsencrypt_challenge == "dns01-cloudflare" else None
        )
        backup_access_key_id = TerraformVariable(
            self,
            "backup_access_key_id",
            type="string",
            sensitive=True,
            description=f"Access key id for the backup bucket {s.backup_bucket} at {s.backup_endpoint}.",
            validation=[
                rule(
                    'can(regex("^[^[:space:]]+$", var.backup_access_key_id))',
                    "backup_access_key_id must be an access key id, without spaces or line breaks.",
                )
            ],
        )
        backup_secret_access_key = TerraformVariable(
            self,
            "backup_secret_access_key",
            type="string",
            sensitive=True,
            description="Secret access key that goes with backup_access_key_id.",
            validation=[
                rule(
                    'can(regex("^[^[:space:]]+$", var.backup_secret_access_key))',
                    "backup_secret_access_key must be a secret key, without spaces or line breaks.",
                )
            ],
        )
        app_image = TerraformVariable(
            self,
            "app_image",
            type="string",
            description="Application image with a pinned tag or digest, e.g. ghcr.io/acme/ffe-backend:2.0.1.",
            validation=[pinned_image_rule("app_image")],
        )

        kubeconfig_path = kubeconfig_path_of(id)
        hosts = [
            SshHost(
                address=Fn.element(node_ips.list_value, index),
                user=ssh_user.string_value,
                private_key_path=ssh_key.string_value,
                host_key=Fn.element(host_keys.list_value, index) if host_keys else None,
            )
            for index in range(hosts_count)
        ]

        compute = K3sHostGpuCompute(
            self,
            "compute",
            props=K3sHostProps(
                hosts=hosts,
                k3s_token=k3s_token.string_value,
                kubeconfig_path=kubeconfig_path,
                k3s_version=s.k3s_version,
                gpu_enabled=s.gpu_enabled,
                driver_branch=s.nvidia_driver_version,
                driver_kernel_modules=s.nvidia_kernel_modules,
                toolkit_version=s.container_toolkit_version,
                taint_gpu_nodes=s.taint_gpu_nodes,
                gpus_per_node=s.gpus_per_node,
                sharing=GpuSharing(s.time_slicing_replicas, MigStrategy(s.mig_strategy)),
                verify_host_keys=s.verify_ssh_host_keys,
                database_instances=s.postgres_instances,
                etcd_snapshots=EtcdSnapshots(
                    schedule_cron=s.etcd_snapshot_cron,
                    retention=s.etcd_snapshot_retention,
                    s3=EtcdS3.from_object_store(
                        s.object_store(),
                        access_key=backup_access_key_id.string_value,
                        secret_key=backup_secret_access_key.string_value,
                    ),
                ),
            ),
        )
        cluster = use_cluster(self, compute.cluster)
        values = ValuesLayers(overlay=s.environment, directory=s.values_dir)

        networking = Networking(
            self,
            "networking",
            props=NetworkingProps(
                cluster=cluster,
                acme_email=acme_email.string_value,
                domains=(app_domain.string_value, *([s.grafana_host] if s.grafana_host else [])),
                ingress_address=compute.server.address,
                public_address=(
                    '${var.public_address != "" ? var.public_address : element(var.gpu_node_ips, 0)}'
                ),
                acme_solver=s.letsencrypt_challenge,
                cloudflare_api_token=cloudflare_api_token.string_value if cloudflare_api_token else None,
                secret_host=compute.server,
                dns_zone=dns_zone.string_value,
                firewall_hosts=hosts,
                trusted_cidrs=compute.trusted_cidrs,
                pod_host_ports=HOST_NETWORK_PORTS if s.monitoring else (),
                service_monitor=s.monitoring,
                admin_cidrs=(
                    '${join(" ", length(var.admin_cidrs) > 0 ? var.admin_cidrs : distinct('
                    f'[for ip in var.gpu_node_ips : cidrsubnet("${{ip}}/{s.host_network_prefix}", 0, 0)]))}}',
                ),
            ),
        )
        # ufw is enabled on a host only after its driver step, which may reboot it and waits until it
        # is back: the firewall step never runs into a host going down.
        reboots = [f"terraform_data.{step.friendly_unique_id}" for step in compute.reboot_steps]
        for firewall in networking.firewalls if reboots else ():
            firewall.add_override("depends_on", reboots)
        # Each host's k3s starts only with the tiers' filesystems mounted (storage-check.sh).
        storage = Storage(
            self,
            "storage",
            props=StorageProps(cluster=cluster, check_hosts=hosts, node_services=NODE_SERVICES),
        )
        # The same for the storage-tier checks, which SSH to the same hosts.
        for check in storage.checks if reboots else ():
            check.add_override("depends_on", reboots)

        gpu_operator = None
        if s.gpu_enabled and s.deploy_gpu_operator:
            gpu_operator = GpuOperator(
                self,
                "gpu-operator",
                props=GpuOperatorProps(
                    cluster=cluster,
                    values=values,
                    dcgm_exporter=s.gpu_monitoring,
                    mig_config=s.mig_config,
                ),
            )

        monitoring = None
        if s.monitoring:
            monitoring = Monitoring(
                self,
                "monitoring",
                props=MonitoringProps(
                    cluster=cluster,
                    dcgm=DcgmSource.GPU_OPERATOR,
                    storage_class=storage.class_name("fast-ssd"),
                    retention=s.monitoring_retention,
                    storage_size=s.monitoring_storage_size,
                    grafana_ingress=(
                        GrafanaIngress(
                            s.grafana_host,
                            ingress_class=networking.ingress_class,
                            cluster_issuer=GRAFANA_ISSUER,
                        )
                        if s.grafana_host
                        else None
                    ),
                    values=values,
                    # cert-manager's ServiceMonitor comes with this release's objects: the
                    # cert-manager release cannot come after this one, which needs the issuers
                    service_monitors=[networking.service_monitor] if networking.service_monitor else [],
                    depends_on=[storage.release, networking.issuers],
                ),
            )

        object_store_access = ObjectStoreAccess(
            access_key_id=backup_access_key_id.string_value,
            secret_access_key=backup_secret_access_key.string_value,
            secret_host=compute.server,
        )
        database = Postgres(
            self,
            "postgres",
            props=PostgresProps(
                cluster=cluster,
                namespace=s.app_namespace,
                storage_class=storage.class_name("fast-ssd"),
                object_store=s.object_store(),
                object_store_access=object_store_access,
                instances=s.postgres_instances,
                storage_size=s.postgres_storage_size,
                monitoring_namespace=monitoring.namespace if monitoring else None,
                # The PodMonitor needs the Prometheus Operator's CRDs.
                depends_on=[storage.release, *([monitoring.release] if monitoring else [])],
            ),
        )

        vault = Vault(
            self,
            "vault",
            props=VaultProps(
                cluster=cluster,
                environment=s.environment,
                storage_class=storage.class_name("fast-ssd"),
                ha=s.vault_ha,
                replicas=s.vault_replicas,
                node_count=hosts_count,
                bootstrap_host=compute.server if s.vault_bootstrap else None,
                seal=kms_seal_variables(self) if s.vault_seal == "awskms" else None,
                secret_host=compute.server,
                app_namespace=s.app_namespace,
                app_service_account=s.app_name,
                policy_name=s.app_name,
                database=database,
                snapshots=VaultSnapshots(
                    object_store=s.object_store(),
                    access=object_store_access,
                    schedule=s.vault_snapshot_schedule,
                    retention_days=s.vault_snapshot_retention_days,
                ),
                depends_on=(storage.release, *([monitoring.release] if monitoring else [])),
                service_monitor=monitoring is not None,
            ),
        )

        if s.protect_data:
            # Terraform fails the plan of any destroy or replacement of these (a helm_release's
            # namespace forces a new release: a Helm release cannot move), naming the resource.
            for release in (database.release, vault.release):
                release.add_override("lifecycle.prevent_destroy", True)

        app_after: list[Any] = [networking.issuers, database.release]
        if gpu_operator is not None:
            app_after.append(gpu_operator.release)
        if vault.bootstrap is not None:
            app_after.append(vault.bootstrap)
        AppChart(
            self,
            "app",
            props=AppChartProps(
                cluster=cluster,
                name=s.app_name,
                namespace=s.app_namespace,
                image=app_image.string_value,
                host=app_domain.string_value,
                values=values,
                gpus=s.app_gpus,
                ingress_class=networking.ingress_class,
                ingress_namespace=networking.ingress_namespace,
                cluster_issuer="letsencrypt-production",
                vault=vault,
                database=database,
                network_policies=s.network_policies,
                depends_on=app_after,
            ),
        )

        TerraformOutput(
            self,
            "kubeconfig_path",
            value=kubeconfig_path,
            description="export KUBECONFIG=<this path> (relative to cdktf.out/stacks/<stack>)",
        )
        TerraformOutput(
            self,
            "dns_records",
            value=networking.dns_records,
            description="A records to create for the domains.",
        )
        TerraformOutput(
            self,
            "cloudflare_commands",
            value=networking.cloudflare_commands,
            description="flarectl commands that create the A records.",
        )
        TerraformOutput(self, "vault_address", value=vault.address)
        TerraformOutput(self, "vault_secret_paths", value=vault.secret_paths)
        TerraformOutput(self, "app_url", value=f"https://{app_domain.string_value}")
        TerraformOutput(
            self,
            "database_secret",
            value=f"{s.app_namespace}/{database.credentials_secret}",
            description="Kubernetes Secret with the generated database credentials.",
        )
        TerraformOutput(
            self,
            "database_backup_server_name",
            value=database.backup_server_name,
            description="Barman server name of the database's backups (the prefix under backup_path).",
        )
        if host_keys is not None:
            pin_host_keys(self, keep=compute.datastore)


def pin_host_keys(stack: Construct, *, keep: DataResource) -> None:
    """Every step that runs on a host is keyed on the host's pinned SSH key too: reinstalling a host
    gives it new keys, which the operator must put into ``ssh_host_keys`` anyway, and that alone
    re-runs every step on it (firewall, storage check, driver, k3s, Secrets); the steps are
    idempotent, so a key rotation only re-applies them. Terraform replaces a terraform_data when
    ``triggers_replace`` changes, and its provisioners run at creation only
    (developer.hashicorp.com/terraform/language/resources/terraform-data). ``keep``, the step that
    stands for the datastore, stays keyed on the address: a key rotation must not replace the
    releases and the database's volumes with it."""
    for construct in stack.node.find_all():
        if not isinstance(construct, DataResource) or construct is keep:
            continue
        connection = construct.connection
        host_key = getattr(connection, "host_key", None)
        if host_key:
            construct.add_override("triggers_replace.host_key", host_key)
