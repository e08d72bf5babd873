"""proxmox-ha: k3s HA on Proxmox VMs with A100 passthrough, NFS and NVMe storage, the GPU Operator,
cert-manager, Rancher with Fleet GitOps, and JupyterHub with GPU profiles."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cdktf import TerraformOutput, TerraformStack, TerraformVariable
from constructs import Construct

from environments import use_cluster
from environments.state import Backend, use_backend
from environments.variables import (
    DNS_NAME_REGEX,
    cloudflare_token_variable,
    dns_name_rule,
    host_in_zone_rule,
    in_zone_rule,
    k3s_token_variable,
    no_space_rule,
    public_address_variable,
    rule,
)
from environments.variables import kubeconfig_path as kubeconfig_path_of
from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster, GpuSharing
from gpu_constructs.compute.k3s.etcd import EtcdS3, EtcdSnapshots
from gpu_constructs.compute.proxmox import (
    CONTROL_PLANE_LABELS,
    SCRATCH_LABEL,
    SCRATCH_MOUNT,
    GpuDevice,
    ProxmoxGpuCompute,
    ProxmoxProps,
    SshHostKey,
)
from gpu_constructs.compute.proxmox.bindings import ProviderSsh, ProxmoxProvider
from gpu_constructs.errors import ConfigError
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
from gpu_constructs.hostexec import ScriptRun, SshHost, run_local_script
from gpu_constructs.jupyterhub import NAMESPACE as JUPYTERHUB_NAMESPACE
from gpu_constructs.jupyterhub import HubAuth, JupyterHub, JupyterHubProps
from gpu_constructs.monitoring import DcgmSource, GrafanaIngress, Monitoring, MonitoringProps
from gpu_constructs.networking import ACME_SOLVERS, INGRESS_CLASS, Networking, NetworkingProps
from gpu_constructs.storage import Storage, StorageProps, StorageTier

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NFS_CLASS = "nfs-client"
SCRATCH_CLASS = "fast-scratch"
SERVER_LOCAL_CLASS = "server-local"
SERVER_LOCAL_PATH = "/var/lib/gpu-constructs/server-local"
FLEET_GITREPO_CRD = "gitrepos.fleet.cattle.io"
FLEET_DEFAULT_PATH = "clusters/proxmox-ha/maintenance"
FLEET_MAY_NOT_HOLD = (
    "gpu-operator",
    "jupyterhub",
    "StorageClass",
    "nfs-subdir-external-provisioner",
    "cert-manager",
    "traefik",
    "rancher",
)
"""What Terraform deploys on proxmox-ha, one owner each: a Fleet bundle must never hold these."""
RANCHER_ISSUER = "letsencrypt-production"
RANCHER_TLS_SECRET = "tls-rancher-ingress"


NOTEBOOK_BASES = {"pytorch": versions.NGC_PYTORCH_IMAGE, "tensorflow": versions.NGC_TENSORFLOW_IMAGE}


def notebook_image(registry: str | None, kind: str) -> str:
    """The notebook image built from docker/notebook-<kind> as pushed to ``registry``: the NGC tag
    and the JupyterHub version in its tag, so a new pin is a new image, never a moved tag."""
    ngc_tag = NOTEBOOK_BASES[kind].version.rsplit(":", 1)[1]
    return f"{registry}/notebook-{kind}:{ngc_tag}-jupyterhub{versions.JUPYTERHUB_SINGLEUSER.version}"


def notebook_quota(s: ProxmoxHaSettings, props: ProxmoxProps) -> list[dict[str, object]]:
    """ResourceQuota and LimitRange of the notebook namespace (the hub runs there too).

    The quota caps what all notebooks together request: GPUs, CPU, memory, and the scratch and
    home claims per StorageClass (``<class>.storageclass.storage.k8s.io/requests.storage``); a
    spawn beyond it fails with "exceeded quota". A quota on requests.cpu and requests.memory
    rejects pods without such requests, so the LimitRange gives every container that has none a
    small request (z2jh's hub and proxy set none), and caps each container at one worker. With no
    ``default`` the API server defaults a container's limits to ``max`` (kubernetes
    pkg/apis/core/v1/defaults.go SetDefaults_LimitRangeItem): at most one worker's size."""
    workers = len(props.worker_ips)
    gpus = s.notebook_quota_gpus or workers * props.gpus_per_worker * props.sharing.time_slicing_replicas
    cpus = s.notebook_quota_cpus or workers * props.worker_size.vcpus
    memory = s.notebook_quota_memory_gb or workers * props.worker_size.memory_gb
    scratch = s.notebook_quota_scratch_gb or workers * props.scratch_gb
    home = s.notebook_quota_home_gb
    return [
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "notebooks", "namespace": JUPYTERHUB_NAMESPACE},
            "spec": {
                "hard": {
                    f"requests.{GPU_RESOURCE}": str(gpus),
                    "requests.cpu": str(cpus),
                    "requests.memory": f"{memory}Gi",
                    f"{SCRATCH_CLASS}.storageclass.storage.k8s.io/requests.storage": f"{scratch}Gi",
                    f"{NFS_CLASS}.storageclass.storage.k8s.io/requests.storage": f"{home}Gi",
                }
            },
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "notebooks", "namespace": JUPYTERHUB_NAMESPACE},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
                        "max": {
                            "cpu": str(props.worker_size.vcpus),
                            "memory": f"{props.worker_size.memory_gb}Gi",
                        },
                    }
                ]
            },
        },
    ]


@dataclass(frozen=True)
class ProxmoxHaSettings:
    """Structural settings of a proxmox-ha instance; defaults are the seed's VM layout and network plan."""

    environment: str = "production"
    node_name: str = ProxmoxProps.node_name
    control_plane_ips: tuple[str, ...] = ProxmoxProps.control_plane_ips
    worker_ips: tuple[str, ...] = ProxmoxProps.worker_ips
    gpus_per_worker: int = ProxmoxProps.gpus_per_worker
    host_gpu_count: int = ProxmoxProps.host_gpu_count
    api_vip: str | None = "10.0.0.100"
    """The seed's kube-vip address in front of the API servers: the workers join through it, the
    kubeconfig and Terraform reach the API through it, and it is in every server's tls-san. None
    needs single_api_address=True: everything then reaches the API through cp1 alone."""
    single_api_address: bool = False
    """Accept api_vip=None: a worker rebuilt while cp1 is down cannot register, and Terraform cannot
    plan while cp1 is down, although the other servers still run the cluster."""
    dns_servers: tuple[str, ...] = ProxmoxProps.dns_servers
    vm_datastore: str = ProxmoxProps.vm_datastore
    scratch_datastore: str | None = ProxmoxProps.scratch_datastore
    """The workers' scratch disks' datastore (default: vm_datastore)."""
    datastore_capacity_gb: tuple[tuple[str, int], ...] = ()
    """(datastore, usable GB) pairs from ``pvesm status``, one for every datastore the VMs use
    (vm_datastore, scratch_datastore): synth fails for a missing one, and for one whose thin volumes
    do not fit."""
    nfs_server: str = "10.0.0.30"
    nfs_path: str = "/export/k3s"
    hugepages: bool = ProxmoxProps.hugepages
    cpu_pinning: bool = ProxmoxProps.cpu_pinning
    host_cpus: int = ProxmoxProps.host_cpus
    """Logical CPUs of the Proxmox host (``nproc``), the bound for cpu_pinning."""
    root_auth: bool = ProxmoxProps.root_auth
    """Log the provider in as root@pam with the proxmox_root_password variable instead of an API
    token; hugepages and cpu_pinning need it (Proxmox allows them to root@pam only)."""
    protect_control_plane: bool = ProxmoxProps.protect_control_plane
    """Refuse at plan any destroy or replacement of a server VM (``lifecycle.prevent_destroy``): a
    rebuilt cp1 is a new, empty cluster beside the running one. Set False, synth and apply for one
    rebuild of cp2 or cp3 (docs/proxmox-ha.md, node by node), of cp1 with rejoin_first_server, or to
    destroy the stack."""
    rejoin_first_server: bool = ProxmoxProps.rejoin_first_server
    """A rebuilt cp1 joins the running cluster through cp2 instead of starting a new one, and the
    releases stay (docs/proxmox-ha.md, "Losing cp1"): set it for the rebuild of a lost cp1 while cp2
    and cp3 run, and back to False once cp1 is Ready. Never on a stack without running servers: no
    server would start the cluster."""
    etcd_snapshot_cron: str = "0 */6 * * *"
    etcd_snapshot_retention: int = 28
    etcd_s3: bool = True
    """Send the etcd snapshots to an S3-compatible bucket (etcd_s3_* variables); without it they
    stay on the control-plane disks and are lost with them."""
    etcd_s3_endpoint: str = "s3.amazonaws.com"
    etcd_s3_region: str = "us-east-1"
    etcd_s3_folder: str | None = None
    """The snapshots' folder in the bucket (default: the instance's name). Two clusters must never
    share one: both name their snapshots after the node (etcd-snapshot-cp1-<time>), and k3s prunes
    every snapshot under the folder whose name starts like its own."""
    time_slicing_replicas: int = 1
    jupyter_gpu_profiles: tuple[int, ...] = (0, 1, 2)
    """The seed lists 0, 1, 2 and 4 GPUs, but its workers have 2 A100s each, so a 4-GPU notebook
    could never schedule; add 4 together with gpus_per_worker=4 (synth fails otherwise)."""
    rancher_replicas: int = 3
    letsencrypt_challenge: str = "dns01-cloudflare"
    """How Let's Encrypt validates the Rancher and JupyterHub names: ``dns01-cloudflare`` (a TXT
    record in the Cloudflare zone dns_zone; works on the private VM network, needs the
    cloudflare_api_token variable) or ``http01`` (through the ingress: the public_address variable
    must be a public address that forwards 80 and 443 to the ingress)."""
    jupyter_auth: str = "native"
    """How JupyterHub users log in: native (sign-ups an admin approves; the admin's account, from
    the jupyterhub_admin_user and jupyterhub_admin_password variables, exists before the hub
    answers), github or oidc (an OAuth app whose client id and secret are the
    jupyterhub_oauth_client_* variables). Never dummy: the hub is public."""
    jupyter_admin_users: tuple[str, ...] = ()
    """github and oidc: the hub's admins (none by default). native takes its one admin from the
    jupyterhub_admin_user variable instead."""
    jupyter_allowed_users: tuple[str, ...] = ()
    jupyter_github_organizations: tuple[str, ...] = ()
    jupyter_oidc_authorize_url: str | None = None
    jupyter_oidc_token_url: str | None = None
    jupyter_oidc_userdata_url: str | None = None
    jupyter_oidc_allowed_groups: tuple[str, ...] = ()

    verify_ssh_host_keys: bool = True
    """Give each VM its SSH host key from the vm_ssh_host_keys and vm_ssh_host_private_keys
    variables and accept only that key on every SSH connection (the kubeconfig fetch, the
    Cloudflare token's upload). False drops both variables, and the first connection to cp1
    accepts whatever key answers at its address: whoever answers gets the Cloudflare token and
    hands Terraform a kubeconfig."""

    vm_firewall: bool = True
    """Each VM's Proxmox firewall (input DROP): all from the VM network, SSH and the API from
    admin_cidrs, HTTP(S) and ICMP from anywhere. Takes effect with the datacenter firewall on."""
    admin_cidrs: tuple[str, ...] = ProxmoxProps.admin_cidrs
    """Networks SSH and the Kubernetes API are reached from (the machine that runs Terraform's)."""
    notebook_registry: str | None = None
    """Where you push the notebook images built from docker/notebook-pytorch and
    docker/notebook-tensorflow (registry host, optional port and path, e.g. registry.example.com/ml):
    NGC's images lack jupyterhub-singleuser, which z2jh starts in every notebook. Required."""

    notebook_quota_gpus: int | None = None
    """GPUs all notebooks together may request (the ResourceQuota of the notebook namespace;
    default: every GPU of the workers)."""
    notebook_quota_cpus: int | None = None
    """CPUs all pods of the notebook namespace may request (default: the workers' vCPUs)."""
    notebook_quota_memory_gb: int | None = None
    """Memory all pods of the notebook namespace may request (default: the workers' memory)."""
    notebook_quota_scratch_gb: int | None = None
    """Scratch (fast-scratch) all notebook sessions may claim together (default: the workers'
    scratch disks): local-path checks no capacity, so without it sessions overfill the disks."""
    notebook_quota_home_gb: int = 5000
    """Home volumes (nfs-client) all users may claim together: size it to the NFS export."""

    monitoring: bool = True
    """Prometheus, Alertmanager and Grafana with GPU metrics and alerts (the seed's), on the servers."""
    monitoring_retention: str = "15d"
    backend: Backend | None = None
    """Where Terraform keeps this stack's state, which holds the k3s tokens and the Proxmox
    credentials: None for state/<stack>.tfstate on this machine (git-ignored, mode 0700), or a
    remote backend such as ``Backend("s3", {"bucket": "acme-tf-state",
    "region": "eu-west-1"})`` (docs/settings.md)."""

    PROPS_SETTINGS: ClassVar[Mapping[str, str]] = {
        "gpu_profiles": "jupyter_gpu_profiles",
        "auth.kind": "jupyter_auth",
        "auth.admin_users": "jupyter_admin_users",
        "auth.allowed_users": "jupyter_allowed_users",
        "auth.allowed_organizations": "jupyter_github_organizations",
        "auth.allowed_groups": "jupyter_oidc_allowed_groups",
        "auth.authorize_url": "jupyter_oidc_authorize_url",
        "auth.token_url": "jupyter_oidc_token_url",
        "auth.userdata_url": "jupyter_oidc_userdata_url",
        "etcd_s3.endpoint": "etcd_s3_endpoint",
        "etcd_s3.region": "etcd_s3_region",
        "etcd_s3.folder": "etcd_s3_folder",
    }
    """The settings that the constructs' props fields come from, where their names differ."""

    grafana_host: str = ""
    """Grafana at https://<grafana_host> through Traefik with a Let's Encrypt certificate, validated
    like the Rancher and JupyterHub names (inside dns_zone with dns01-cloudflare). Empty: no ingress
    (kubectl port-forward)."""

    def __post_init__(self) -> None:
        validate.field_types(self)
        validate.one_of("environment", self.environment, ("dev", "staging", "production"))
        validate.ipv4("nfs_server", self.nfs_server)
        vm_addresses = [(f"control_plane_ips[{i}]", ip) for i, ip in enumerate(self.control_plane_ips)]
        vm_addresses += [(f"worker_ips[{i}]", ip) for i, ip in enumerate(self.worker_ips)]
        if self.api_vip:
            vm_addresses.append(("api_vip", self.api_vip))
        # The NFS server and the DNS servers are machines of their own: a VM that took one of their
        # addresses would answer in their place (or not boot its network: duplicate address).
        changed = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != f.default]
        validate.distinct_addresses(
            [("nfs_server", self.nfs_server), *vm_addresses],
            "give the NFS server and each VM their own address",
            changed,
        )
        for index, server in enumerate(self.dns_servers):
            validate.distinct_addresses(
                [(f"dns_servers[{index}]", server), *vm_addresses],
                "a VM cannot be its own DNS server; give the gateway or a resolver",
                changed,
            )
        if not self.nfs_path.startswith("/") or "//" in self.nfs_path or "/../" in f"{self.nfs_path}/":
            raise ConfigError("nfs_path", self.nfs_path, "give the export's absolute path, e.g. /export/k3s")
        validate.int_range("rancher_replicas", self.rancher_replicas, 1, 10)
        validate.int_range("time_slicing_replicas", self.time_slicing_replicas, 1, 48)
        validate.k8s_name("node_name", self.node_name)
        validate.one_of("letsencrypt_challenge", self.letsencrypt_challenge, ACME_SOLVERS)
        if self.grafana_host:
            validate.dns_name("grafana_host", self.grafana_host)
            if not self.monitoring:
                raise ConfigError("grafana_host", self.grafana_host, "set monitoring=True or leave it empty")
        if self.notebook_registry is None or not re.fullmatch(
            r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*", self.notebook_registry
        ):
            raise ConfigError(
                "notebook_registry",
                self.notebook_registry,
                "give the registry you push the notebook images to, e.g. registry.example.com/ml "
                "(docker/notebook-pytorch and docker/notebook-tensorflow; NGC's images lack "
                "jupyterhub-singleuser)",
            )
        for name in ("notebook_quota_gpus", "notebook_quota_cpus", "notebook_quota_memory_gb"):
            if getattr(self, name) is not None:
                validate.int_range(name, getattr(self, name), 1, 100_000)
        if self.notebook_quota_scratch_gb is not None:
            validate.int_range("notebook_quota_scratch_gb", self.notebook_quota_scratch_gb, 1, 10_000_000)
        validate.int_range("notebook_quota_home_gb", self.notebook_quota_home_gb, 1, 10_000_000)
        if self.jupyter_auth == "native" and self.jupyter_admin_users:
            raise ConfigError(
                "jupyter_admin_users",
                self.jupyter_admin_users,
                "with jupyter_auth='native' the admin is the jupyterhub_admin_user variable, whose "
                "account the hub creates with jupyterhub_admin_password; leave it empty and make more "
                "admins on the hub's admin page",
            )
        if self.api_vip is None and not self.single_api_address:
            raise ConfigError(
                "api_vip",
                None,
                "without it the workers, the kubeconfig and Terraform reach the API through cp1 alone; "
                "give a free address on the VM network for kube-vip (e.g. 10.0.0.100), or set "
                "single_api_address=True to accept that",
            )


@dataclass(frozen=True)
class _Inputs:
    """What the stack's variables give the constructs (ProxmoxHaStack._inputs)."""

    k3s_token: TerraformVariable
    k3s_agent_token: TerraformVariable
    ssh_public_key: TerraformVariable
    ssh_key_path: TerraformVariable
    vm_names: list[str]
    host_keys: dict[str, SshHostKey]
    gpu_count: int
    etcd_s3: EtcdS3 | None
    acme_email: TerraformVariable
    rancher_host: TerraformVariable
    jupyter_host: TerraformVariable
    fleet_repo: TerraformVariable
    fleet_branch: TerraformVariable
    fleet_paths: TerraformVariable


class ProxmoxHaStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, settings: ProxmoxHaSettings) -> None:
        super().__init__(scope, id)
        s = settings
        use_backend(self, s.backend)
        v = self._inputs(s, id)
        kubeconfig_path = kubeconfig_path_of(id)
        props = ProxmoxProps(
            k3s_token=v.k3s_token.string_value,
            k3s_agent_token=v.k3s_agent_token.string_value,
            ssh_public_key=v.ssh_public_key.string_value,
            ssh_private_key_path=v.ssh_key_path.string_value,
            gpu_devices=[
                GpuDevice(
                    id=f"${{var.gpu_devices[{i}].id}}",
                    path=f"${{var.gpu_devices[{i}].path}}",
                    iommu_group=f"${{var.gpu_devices[{i}].iommu_group}}",
                    subsystem_id=f"${{var.gpu_devices[{i}].subsystem_id}}",
                )
                for i in range(v.gpu_count)
            ],
            kubeconfig_path=kubeconfig_path,
            ssh_host_keys=v.host_keys,
            firewall=s.vm_firewall,
            admin_cidrs=s.admin_cidrs,
            node_name=s.node_name,
            vm_datastore=s.vm_datastore,
            scratch_datastore=s.scratch_datastore,
            datastore_capacity_gb=dict(s.datastore_capacity_gb),
            control_plane_ips=s.control_plane_ips,
            worker_ips=s.worker_ips,
            gpus_per_worker=s.gpus_per_worker,
            host_gpu_count=s.host_gpu_count,
            api_vip=s.api_vip,
            dns_servers=s.dns_servers,
            hugepages=s.hugepages,
            cpu_pinning=s.cpu_pinning,
            host_cpus=s.host_cpus,
            root_auth=s.root_auth,
            protect_control_plane=s.protect_control_plane,
            rejoin_first_server=s.rejoin_first_server,
            etcd_snapshots=EtcdSnapshots(
                schedule_cron=s.etcd_snapshot_cron,
                retention=s.etcd_snapshot_retention,
                s3=v.etcd_s3,
                servers=len(s.control_plane_ips),
                # the servers' config is cloud-init user data, kept in the state and on Proxmox
                in_cluster_secret=True,
            ),
            sharing=GpuSharing(time_slicing_replicas=s.time_slicing_replicas),
        )
        compute = ProxmoxGpuCompute(self, "vms", props=props)
        cluster = use_cluster(self, compute.cluster)
        # k3s' kubectl runs on cp1: the steps that write Secrets into the cluster run there
        cp1 = SshHost(
            s.control_plane_ips[0],
            "ubuntu",
            v.ssh_key_path.string_value,
            host_key=props.host_key("cp1"),
        )
        if v.etcd_s3 is not None:
            props.etcd_snapshots.secret_step(
                self,
                "etcd-s3-secret",
                host=cp1,
                variables={
                    "etcd-s3-bucket": "etcd_s3_bucket",
                    "etcd-s3-access-key": "etcd_s3_access_key",
                    "etcd-s3-secret-key": "etcd_s3_secret_key",
                },
                cluster=cluster,
            )

        # The ingress is on the VMs' private network: Let's Encrypt reaches it over HTTP-01 only
        # through a public address that forwards 80 and 443; DNS-01 needs no inbound path.
        ingress_address = props.server_address
        public_address_variable(self, s.letsencrypt_challenge, f'"{ingress_address}"')
        cloudflare_api_token = dns_zone = None
        if s.letsencrypt_challenge == "dns01-cloudflare":
            cloudflare_api_token = cloudflare_token_variable(self)
            dns_zone = TerraformVariable(
                self,
                "dns_zone",
                type="string",
                description="Cloudflare zone of the Rancher and JupyterHub names, e.g. example.com.",
                validation=[
                    dns_name_rule("dns_zone", "example.com"),
                    in_zone_rule(["rancher_hostname", "jupyterhub_hostname"]),
                    *(
                        [host_in_zone_rule("grafana_host", s.grafana_host, "dns_zone")]
                        if s.grafana_host
                        else []
                    ),
                ],
            )
        networking = Networking(
            self,
            "networking",
            props=NetworkingProps(
                cluster=cluster,
                acme_email=v.acme_email.string_value,
                domains=(
                    v.rancher_host.string_value,
                    v.jupyter_host.string_value,
                    *([s.grafana_host] if s.grafana_host else []),
                ),
                service_monitor=s.monitoring,
                # one Traefik per server (the workers' GPU taint keeps it off them): with one, the
                # server that runs it takes Rancher and JupyterHub down with it, about five minutes
                # on a failure (the unreachable taint's default 300 s toleration) before it moves
                ingress_replicas=len(s.control_plane_ips),
                ingress_address=ingress_address,
                public_address=f'${{var.public_address != "" ? var.public_address : "{ingress_address}"}}',
                acme_solver=s.letsencrypt_challenge,
                cloudflare_api_token=cloudflare_api_token.string_value if cloudflare_api_token else None,
                # the token is written into the cluster from cp1, where k3s' kubectl runs
                secret_host=cp1,
                dns_zone=dns_zone.string_value if dns_zone else "",
            ),
        )
        nfs, storage = self._storage(s, cluster)
        operator = GpuOperator(self, "gpu-operator", props=GpuOperatorProps(cluster=cluster))
        # A worker that never joins (a wrong agent token, an unreachable API) leaves Helm's waits
        # green: the GPU DaemonSets have nothing to schedule. Wait for each worker, Ready, with its
        # GPUs allocatable (the operator's device plugin), before anything that needs them, and
        # again in the apply that rebuilds one: a replaced VM plans a new, unknown id, which
        # replaces this step (terraform_data triggers_replace).
        gpu_nodes = run_local_script(
            self,
            "gpu-nodes-ready",
            run=ScriptRun(
                "wait-gpu-nodes.sh",
                env={
                    "KUBECONFIG": kubeconfig_path,
                    "NODES": " ".join(name for name in v.vm_names if name.startswith("wk-")),
                    "GPUS": str(cluster.gpus_per_node),
                    "WAIT_SECONDS": "1800",
                },
            ),
            triggers={name: vm.id_ref for name, vm in zip(props.worker_names, compute.workers, strict=True)},
            cluster=cluster,
            depends_on=[operator.release],
        )
        if s.monitoring:
            Monitoring(
                self,
                "monitoring",
                props=MonitoringProps(
                    cluster=cluster,
                    dcgm=DcgmSource.GPU_OPERATOR,
                    retention=s.monitoring_retention,
                    storage_class=storage.class_name(SERVER_LOCAL_CLASS),
                    grafana_ingress=(
                        GrafanaIngress(
                            s.grafana_host, ingress_class=INGRESS_CLASS, cluster_issuer=RANCHER_ISSUER
                        )
                        if s.grafana_host
                        else None
                    ),
                    # cert-manager's ServiceMonitor comes with this release's objects: the
                    # cert-manager release cannot come after this one, which needs the issuers
                    service_monitors=[networking.service_monitor] if networking.service_monitor else [],
                    depends_on=[nfs, storage.release, networking.issuers],
                ),
            )
        self._rancher_and_fleet(s, v, cluster, networking, kubeconfig_path)
        hub = JupyterHub(
            self,
            "jupyterhub",
            props=JupyterHubProps(
                cluster=cluster,
                host=v.jupyter_host.string_value,
                home_storage_class=NFS_CLASS,
                scratch_storage_class=SCRATCH_CLASS,
                # SQLite's locks are unreliable on NFS: the hub's database on a server's disk
                hub_db_storage_class=storage.class_name(SERVER_LOCAL_CLASS),
                gpu_profiles=s.jupyter_gpu_profiles,
                pytorch_image=notebook_image(s.notebook_registry, "pytorch"),
                tensorflow_image=notebook_image(s.notebook_registry, "tensorflow"),
                # The control planes hold etcd on their OS disk: every notebook, CPU-only ones
                # too, runs on a GPU worker, which has the scratch disk.
                user_node_purpose="require",
                cpu_on_gpu_nodes=True,
                auth=self.hub_auth(s),
                # the native admin's password Secret is written from cp1, where k3s' kubectl runs
                secret_host=cp1,
                values=helm.ValuesLayers(overlay=s.environment, directory=PROJECT_ROOT / "helm-values"),
                depends_on=[nfs, storage.release, operator.release, gpu_nodes, networking.issuers],
            ),
        )

        helm.manifests_release(
            self,
            "notebook-quota",
            cluster=cluster,
            name="notebook-quota",
            namespace=JUPYTERHUB_NAMESPACE,
            manifests=notebook_quota(s, props),
            depends_on=[hub.release],
        )

        self._outputs(s, v, compute, networking, kubeconfig_path)

    def _inputs(self, s: ProxmoxHaSettings, id: str) -> _Inputs:
        """The stack's variables and the Proxmox provider."""
        endpoint = TerraformVariable(
            self,
            "proxmox_endpoint",
            type="string",
            description="Proxmox API, e.g. https://pve.example.com:8006/.",
            validation=[
                rule(
                    'can(regex("^https://[^/[:space:]]+(/[^[:space:]]*)?$", var.proxmox_endpoint))',
                    "proxmox_endpoint must be the API's https:// URL, e.g. https://pve.example.com:8006/.",
                )
            ],
        )
        if s.root_auth:
            root_password = TerraformVariable(
                self,
                "proxmox_root_password",
                type="string",
                sensitive=True,
                description="Password of root@pam (hugepages and CPU pinning are allowed to root@pam only).",
                validation=[rule("length(var.proxmox_root_password) > 0", "proxmox_root_password is empty.")],
            )
            token, username, password = None, "root@pam", root_password.string_value
        else:
            api_token = TerraformVariable(
                self,
                "proxmox_api_token",
                type="string",
                sensitive=True,
                description="user@realm!token=secret (rights in docs/proxmox-ha.md).",
                validation=[
                    rule(
                        'can(regex("^[^@[:space:]]+@[^![:space:]]+![^=[:space:]]+=[^[:space:]]+$", '
                        "var.proxmox_api_token))",
                        "proxmox_api_token must be user@realm!tokenid=secret, e.g. "
                        "terraform@pve!cdktf=<uuid>.",
                    )
                ],
            )
            token, username, password = api_token.string_value, None, None
        k3s_token = k3s_token_variable(self)
        k3s_agent_token = TerraformVariable(
            self,
            "k3s_agent_token",
            type="string",
            sensitive=True,
            description="k3s agent token the GPU workers join with (openssl rand -hex 32), not the "
            "server token.",
            validation=[
                rule(
                    'can(regex("^[A-Za-z0-9]{32,}$", var.k3s_agent_token)) && '
                    "var.k3s_agent_token != var.k3s_token",
                    "k3s_agent_token must be at least 32 letters or digits and differ from k3s_token.",
                )
            ],
        )
        ssh_public_key = TerraformVariable(
            self,
            "ssh_public_key",
            type="string",
            description="Public key for the ubuntu user on every VM.",
            validation=[
                rule(
                    'can(regex("^(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) '
                    '[A-Za-z0-9+/]+=*( [^\\n]*)?$", var.ssh_public_key))',
                    "ssh_public_key must be one OpenSSH public key line, e.g. the content of "
                    "~/.ssh/id_ed25519.pub.",
                )
            ],
        )
        # Not validated: UNVALIDATED in environments/variables.py says why.
        ssh_key_path = TerraformVariable(
            self, "ssh_private_key_path", type="string", default="~/.ssh/id_ed25519"
        )
        vm_names = [f"cp{i + 1}" for i in range(len(s.control_plane_ips))] + [
            f"wk-gpu{i + 1}" for i in range(len(s.worker_ips))
        ]
        host_keys: dict[str, SshHostKey] = {}
        if s.verify_ssh_host_keys:
            order = ", ".join(vm_names)
            TerraformVariable(
                self,
                "vm_ssh_host_keys",
                type="list(string)",
                description=(
                    f"Each VM's SSH host public key, in the order {order}: the .pub files of "
                    "ssh-keygen -t ed25519 -N '' -f <vm> without the comment (docs/proxmox-ha.md)."
                ),
                validation=[
                    rule(
                        f"length(var.vm_ssh_host_keys) == {len(vm_names)}",
                        f"vm_ssh_host_keys must list exactly {len(vm_names)} keys, in the order {order}.",
                    ),
                    rule(
                        'alltrue([for k in var.vm_ssh_host_keys : can(regex("^ssh-ed25519 '
                        '[A-Za-z0-9+/]+={0,3}$", k))])',
                        "Every vm_ssh_host_keys entry is an ed25519 public key such as "
                        "'ssh-ed25519 AAAAC3Nza...' without a comment.",
                    ),
                    rule(
                        "length(distinct(var.vm_ssh_host_keys)) == length(var.vm_ssh_host_keys)",
                        "vm_ssh_host_keys must give each VM its own key.",
                    ),
                ],
            )
            TerraformVariable(
                self,
                "vm_ssh_host_private_keys",
                type="list(string)",
                sensitive=True,
                description=f"The private halves of vm_ssh_host_keys, in the order {order}.",
                validation=[
                    rule(
                        f"length(var.vm_ssh_host_private_keys) == {len(vm_names)}",
                        f"vm_ssh_host_private_keys must list exactly {len(vm_names)} keys, in the "
                        f"order {order}.",
                    ),
                    rule(
                        "alltrue([for k in var.vm_ssh_host_private_keys : "
                        'startswith(trimspace(k), "-----BEGIN OPENSSH PRIVATE KEY-----")])',
                        "Every vm_ssh_host_private_keys entry is an OpenSSH private key file's text "
                        "(ssh-keygen -t ed25519 writes one).",
                    ),
                ],
            )
            host_keys = {
                name: SshHostKey(
                    public_key=f"${{var.vm_ssh_host_keys[{index}]}}",
                    private_key=f"${{var.vm_ssh_host_private_keys[{index}]}}",
                )
                for index, name in enumerate(vm_names)
            }
        gpu_count = s.gpus_per_worker * len(s.worker_ips)
        TerraformVariable(
            self,
            "gpu_devices",
            type="list(object({id = string, path = string, iommu_group = number, subsystem_id = string}))",
            description=(
                f"The {gpu_count} GPUs to pass through: vendor:device id (lspci -nn -d 10de:), PCI "
                "address (lspci -D -d 10de:), IOMMU group (/sys/kernel/iommu_groups) and subsystem id "
                "(lspci -nn -v); see docs/proxmox-ha.md."
            ),
            validation=[
                rule(
                    f"length(var.gpu_devices) == {gpu_count}",
                    f"gpu_devices must list exactly {gpu_count} GPUs: "
                    f"{len(s.worker_ips)} workers x {s.gpus_per_worker}.",
                ),
                rule(
                    "alltrue([for d in var.gpu_devices : "
                    'can(regex("^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}[.][0-7]$", d.path))])',
                    "gpu_devices paths look like 0000:41:00.0 (lspci -D).",
                ),
                rule(
                    'alltrue([for d in var.gpu_devices : can(regex("^10de:[0-9a-f]{4}$", d.id))])',
                    "gpu_devices id is the NVIDIA vendor:device id as lspci -nn -d 10de: prints it, e.g. "
                    "10de:20f1 (A100 PCIe 40GB) or 10de:20b5 (A100 PCIe 80GB).",
                ),
                rule(
                    "alltrue([for d in var.gpu_devices : "
                    'can(regex("^[0-9a-f]{4}:[0-9a-f]{4}$", d.subsystem_id))])',
                    "gpu_devices subsystem_id looks like 10de:145f (lspci -nn -v, 'Subsystem').",
                ),
                rule(
                    "alltrue([for d in var.gpu_devices : d.iommu_group >= 0 && floor(d.iommu_group) == "
                    "d.iommu_group])",
                    "gpu_devices iommu_group is the whole number of the group's directory in "
                    "/sys/kernel/iommu_groups.",
                ),
                rule(
                    "length(distinct([for d in var.gpu_devices : d.iommu_group])) == length(var.gpu_devices) "
                    "&& length(distinct([for d in var.gpu_devices : d.path])) == length(var.gpu_devices)",
                    "gpu_devices must name each GPU once, each in its own IOMMU group (a VM takes a whole "
                    "group).",
                ),
            ],
        )
        etcd_s3 = None
        if s.etcd_s3:
            bucket = TerraformVariable(
                self,
                "etcd_s3_bucket",
                type="string",
                description="S3 bucket for the etcd snapshots.",
                validation=[
                    rule(
                        'can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.etcd_s3_bucket))',
                        "etcd_s3_bucket must be a bucket name: 3-63 lower-case letters, digits, '-' and '.'.",
                    )
                ],
            )
            access_key = TerraformVariable(
                self,
                "etcd_s3_access_key",
                type="string",
                sensitive=True,
                description="S3 access key id.",
                validation=[no_space_rule("etcd_s3_access_key", "an access key id")],
            )
            secret_key = TerraformVariable(
                self,
                "etcd_s3_secret_key",
                type="string",
                sensitive=True,
                description="S3 secret key.",
                validation=[no_space_rule("etcd_s3_secret_key", "a secret key")],
            )
            etcd_s3 = EtcdS3(
                endpoint=s.etcd_s3_endpoint,
                bucket=bucket.string_value,
                access_key=access_key.string_value,
                secret_key=secret_key.string_value,
                region=s.etcd_s3_region,
                folder=s.etcd_s3_folder or id,
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
        rancher_host = TerraformVariable(
            self,
            "rancher_hostname",
            type="string",
            description="Host name of the Rancher UI.",
            validation=[dns_name_rule("rancher_hostname", "rancher.example.com")],
        )
        jupyter_host = TerraformVariable(
            self,
            "jupyterhub_hostname",
            type="string",
            description="Host name of JupyterHub.",
            validation=[
                rule(
                    f'can(regex("{DNS_NAME_REGEX}", var.jupyterhub_hostname)) && '
                    "var.jupyterhub_hostname != var.rancher_hostname",
                    "jupyterhub_hostname must be a lower-case DNS name such as jupyter.example.com, "
                    "other than rancher_hostname (two Ingresses cannot share a host).",
                )
            ],
        )
        fleet_repo = TerraformVariable(
            self,
            "fleet_repo_url",
            type="string",
            description="Git URL of the cluster-maintenance repository.",
            validation=[
                rule(
                    'can(regex("^(https://|ssh://|git@)[^[:space:]]+$", var.fleet_repo_url))',
                    "fleet_repo_url must be a Git URL: https://..., ssh://... or git@host:org/repo.git.",
                )
            ],
        )
        fleet_branch = TerraformVariable(
            self,
            "fleet_branch",
            type="string",
            default="main",
            validation=[
                rule(
                    'can(regex("^[A-Za-z0-9_][A-Za-z0-9._/-]*$", var.fleet_branch)) && '
                    '!can(regex("[.][.]|/$|[.]lock$", var.fleet_branch))',
                    "fleet_branch must be a Git branch name such as main.",
                )
            ],
        )
        # The seed's clusters/homelab holds the GPU Operator, JupyterHub and the StorageClasses,
        # which this stack deploys itself: two owners would undo each other's changes. The
        # default path is one for what the stack does not deploy (FLEET_MAY_NOT_HOLD, docs/proxmox-ha.md).
        fleet_paths = TerraformVariable(
            self,
            "fleet_paths",
            type="list(string)",
            default=[FLEET_DEFAULT_PATH],
            description=(
                "Paths of the Fleet repository to deploy; never anything Terraform deploys "
                "(docs/proxmox-ha.md)."
            ),
            validation=[
                rule(
                    "length(var.fleet_paths) > 0 && alltrue([for p in var.fleet_paths : "
                    'length(p) > 0 && !can(regex("^/|(^|/)[.][.](/|$)", p))])',
                    "fleet_paths must list folders of the repository, relative and without '..'.",
                )
            ],
        )

        # Not validated: UNVALIDATED in environments/variables.py says why.
        insecure = TerraformVariable(
            self,
            "proxmox_insecure",
            type="bool",
            default=False,
            description="Skip TLS verification of the Proxmox API (only for its self-signed certificate).",
        )
        ProxmoxProvider(
            self,
            "proxmox",
            endpoint=endpoint.string_value,
            insecure=insecure.boolean_value,
            api_token=token,
            username=username,
            password=password,
            ssh=ProviderSsh(agent=True, username="root"),
        )
        return _Inputs(
            k3s_token=k3s_token,
            k3s_agent_token=k3s_agent_token,
            ssh_public_key=ssh_public_key,
            ssh_key_path=ssh_key_path,
            vm_names=vm_names,
            host_keys=host_keys,
            gpu_count=gpu_count,
            etcd_s3=etcd_s3,
            acme_email=acme_email,
            rancher_host=rancher_host,
            jupyter_host=jupyter_host,
            fleet_repo=fleet_repo,
            fleet_branch=fleet_branch,
            fleet_paths=fleet_paths,
        )

    def _storage(self, s: ProxmoxHaSettings, cluster: GpuCluster) -> tuple[helm.Release, Storage]:
        """NFS, the default class (homes, Retain), and the node-local tiers: the workers' scratch disk
        and the servers' disk for the monitoring volumes."""
        nfs = helm.release(
            self,
            "nfs-provisioner",
            cluster=cluster,
            name="nfs-subdir-external-provisioner",
            chart="nfs-subdir-external-provisioner",
            repository=versions.REPO_NFS_SUBDIR,
            version=versions.NFS_SUBDIR_CHART.version,
            namespace="nfs-provisioner",
            values={
                "nfs": {"server": s.nfs_server, "path": s.nfs_path},
                "storageClass": {"name": NFS_CLASS, "defaultClass": True, "reclaimPolicy": "Retain"},
            },
        )
        storage = Storage(
            self,
            "storage",
            props=StorageProps(
                cluster=cluster,
                tiers=(
                    StorageTier(
                        SCRATCH_CLASS,
                        SCRATCH_MOUNT,
                        reclaim_policy="Delete",
                        allow_volume_expansion=False,
                        node_labels=dict([SCRATCH_LABEL]),
                    ),
                    # Prometheus', Alertmanager's and Grafana's volumes, on a server's OS disk: the
                    # default class is NFS, which Prometheus' TSDB does not support, and scratch is
                    # on the GPU workers only. An emptyDir would sit on the same disk
                    # (/var/lib/kubelet), so this adds no I/O beside etcd, only data that survives
                    # a restart; the volume's node affinity keeps each pod on its server, which it
                    # waits for while that server is down. Delete: nothing of it is kept on a
                    # server's disk once its claim is gone.
                    StorageTier(
                        SERVER_LOCAL_CLASS,
                        SERVER_LOCAL_PATH,
                        reclaim_policy="Delete",
                        node_labels={CONTROL_PLANE_LABELS[0][0]: CONTROL_PLANE_LABELS[0][1]},
                    ),
                ),
            ),
        )
        return nfs, storage

    def _rancher_and_fleet(
        self,
        s: ProxmoxHaSettings,
        v: _Inputs,
        cluster: GpuCluster,
        networking: Networking,
        kubeconfig_path: str,
    ) -> None:
        """Rancher behind the stack's ingress and issuer, and Fleet's GitRepo of the cluster-maintenance
        repository once Rancher has installed Fleet's CRDs."""
        rancher = helm.release(
            self,
            "rancher",
            cluster=cluster,
            name="rancher",
            chart="rancher",
            repository=versions.REPO_RANCHER,
            version=versions.RANCHER_CHART.version,
            namespace="cattle-system",
            values={
                "hostname": v.rancher_host.string_value,
                "replicas": s.rancher_replicas,
                # Rancher's own source ("rancher") serves a certificate from its self-signed CA;
                # "secret" makes the Ingress serve tls-rancher-ingress, which cert-manager's
                # ingress-shim fills from the stack's Let's Encrypt ClusterIssuer, as for JupyterHub
                # (chart templates/ingress.yaml adds its own Issuer annotations for the other sources).
                "ingress": {
                    "ingressClassName": INGRESS_CLASS,
                    "extraAnnotations": {"cert-manager.io/cluster-issuer": RANCHER_ISSUER},
                    "tls": {"source": "secret", "secretName": RANCHER_TLS_SECRET},
                },
            },
            depends_on=[networking.cert_manager, networking.ingress, networking.issuers],
            timeout=1200,
        )
        # Rancher installs Fleet and its CRDs itself after its release reports ready: the GitRepo
        # waits (bounded, with a clear error) until its CRD is Established.
        fleet_crd = run_local_script(
            self,
            "fleet-crd-established",
            run=ScriptRun(
                "wait-crd.sh",
                env={"KUBECONFIG": kubeconfig_path, "CRD": FLEET_GITREPO_CRD, "WAIT_SECONDS": "900"},
            ),
            triggers={"crd": FLEET_GITREPO_CRD, "rancher": versions.RANCHER_CHART.version},
            cluster=cluster,
            depends_on=[rancher],
        )
        helm.manifests_release(
            self,
            "fleet-gitrepo",
            cluster=cluster,
            name="cluster-maintenance",
            namespace="fleet-local",
            manifests=[
                {
                    "apiVersion": "fleet.cattle.io/v1alpha1",
                    "kind": "GitRepo",
                    "metadata": {"name": "cluster-maintenance", "namespace": "fleet-local"},
                    "spec": {
                        "repo": v.fleet_repo.string_value,
                        "branch": v.fleet_branch.string_value,
                        # A list variable cannot sit in a values document: set_list fills it in.
                        "paths": [],
                    },
                }
            ],
            depends_on=[rancher, fleet_crd],
            set_lists={"manifests[0].spec.paths": v.fleet_paths.list_value},
        )

    def _outputs(
        self,
        s: ProxmoxHaSettings,
        v: _Inputs,
        compute: ProxmoxGpuCompute,
        networking: Networking,
        kubeconfig_path: str,
    ) -> None:
        TerraformOutput(self, "kubeconfig_path", value=kubeconfig_path)
        TerraformOutput(
            self,
            "ansible_inventory",
            value=compute.ansible_inventory(),
            description="Ansible inventory (YAML) of the nodes.",
        )
        if v.host_keys:
            ips = [*s.control_plane_ips, *s.worker_ips]
            TerraformOutput(
                self,
                "ssh_known_hosts",
                value="".join(
                    f"{ip} {v.host_keys[name].public_key}\n" for ip, name in zip(ips, v.vm_names, strict=True)
                ),
                description="known_hosts lines of every VM, for ssh and Ansible (UserKnownHostsFile).",
            )
        TerraformOutput(self, "dns_records", value=networking.dns_records)
        TerraformOutput(self, "rancher_url", value=f"https://{v.rancher_host.string_value}")
        TerraformOutput(self, "jupyterhub_url", value=f"https://{v.jupyter_host.string_value}")

    def hub_auth(self, s: ProxmoxHaSettings) -> HubAuth:
        client_id = client_secret = admin_password = None
        admin_users = s.jupyter_admin_users
        if s.jupyter_auth == "native":
            # No default name: each deploy picks its own, and its account exists before the hub
            # answers, so nobody can claim it by signing up first (HubAuth.admin_password).
            admin_users = (
                TerraformVariable(
                    self,
                    "jupyterhub_admin_user",
                    type="string",
                    description="Name of JupyterHub's admin, who approves sign-ups (docs/proxmox-ha.md).",
                    validation=[
                        rule(
                            'can(regex("^[a-z0-9][a-z0-9._-]{0,63}$", var.jupyterhub_admin_user))',
                            "jupyterhub_admin_user must be 1-64 lower-case letters, digits, '.', '_' or '-' "
                            "(JupyterHub lower-cases names), e.g. ops-lead.",
                        )
                    ],
                ).string_value,
            )
            # as "${var...}" text: the step's secrets-file error then names the variable
            admin_password = "${var.jupyterhub_admin_password}"
            TerraformVariable(
                self,
                "jupyterhub_admin_password",
                type="string",
                sensitive=True,
                description="Initial password of jupyterhub_admin_user (openssl rand -base64 24).",
                validation=[
                    rule(
                        'can(regex("^[!-~]{16,72}$", var.jupyterhub_admin_password))',
                        "jupyterhub_admin_password must be 16 to 72 printable ASCII characters without "
                        "spaces (bcrypt takes at most 72 bytes), e.g. from openssl rand -base64 24.",
                    )
                ],
            )
        if s.jupyter_auth in ("github", "oidc"):
            client_id = TerraformVariable(
                self,
                "jupyterhub_oauth_client_id",
                type="string",
                description="OAuth app client id.",
                validation=[no_space_rule("jupyterhub_oauth_client_id", "the OAuth app's client id")],
            ).string_value
            client_secret = TerraformVariable(
                self,
                "jupyterhub_oauth_client_secret",
                type="string",
                sensitive=True,
                description="OAuth app client secret.",
                validation=[no_space_rule("jupyterhub_oauth_client_secret", "the OAuth app's client secret")],
            ).string_value
        return HubAuth(
            kind=s.jupyter_auth,
            admin_users=admin_users,
            admin_password=admin_password,
            allowed_users=s.jupyter_allowed_users,
            allowed_organizations=s.jupyter_github_organizations,
            allowed_groups=s.jupyter_oidc_allowed_groups,
            client_id=client_id,
            client_secret=client_secret,
            authorize_url=s.jupyter_oidc_authorize_url,
            token_url=s.jupyter_oidc_token_url,
            userdata_url=s.jupyter_oidc_userdata_url,
        )
