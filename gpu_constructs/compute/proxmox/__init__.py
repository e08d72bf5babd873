"""GpuCompute for Proxmox VE: control-plane and GPU-worker VMs with PCIe passthrough, and k3s HA.

The VMs boot an Ubuntu cloud image; cloud-init (a snippet per VM) installs k3s: the first server
initializes embedded etcd, the others join it, and the workers join with the GPU label and taint.
GPUs are passed through by PCI resource mappings, since raw device ids need root password auth and
do not work with API tokens. The GPU Operator installs driver and toolkit inside the VMs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from cdktf import Fn, LocalExecProvisioner, Postcondition, TerraformResourceLifecycle, Token
from constructs import Construct

from gpu_constructs import validate, versions
from gpu_constructs.cluster import (
    GPU_LABEL,
    GPU_TAINT,
    USER_NODE_LABEL,
    GpuCluster,
    GpuSharing,
    KubeAccess,
    Manager,
    k3s_containerd,
)
from gpu_constructs.compute.base import NodeGroup, PlatformFacts, k3s_platform
from gpu_constructs.compute.k3s.etcd import EtcdSnapshots
from gpu_constructs.compute.proxmox.bindings import (
    Agent,
    Cpu,
    Disk,
    Dns,
    DownloadFile,
    EfiDisk,
    File,
    FirewallOptions,
    FirewallRule,
    FirewallRules,
    HardwareMappingPci,
    HostPci,
    Initialization,
    IpConfig,
    Ipv4,
    Memory,
    NetworkDevice,
    OperatingSystem,
    PciMap,
    SourceRaw,
    Vm,
)
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import ScriptRun, run_local_script, script_literal

SCRATCH_MOUNT = "/mnt/scratch"
SCRATCH_DEVICE = "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_drive-scsi1"
"""The workers' scratch disk (scsi1) by the id QEMU gives it (drive-<name>), stable across boots."""
SCRATCH_LABEL = ("gpu-constructs.io/scratch-disk", "true")
"""On the workers, which format and mount the scratch disk; the control planes have only the OS
disk, which holds etcd."""
WORKER_LABELS = (GPU_LABEL, SCRATCH_LABEL, USER_NODE_LABEL)
"""k3s applies node-label when a node registers: a node built before a label was added gets it
from ``kubectl label node`` (docs/proxmox-ha.md, "JupyterHub: profiles and storage")."""
PCI_PATH = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
PCI_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
NVIDIA_VENDOR = "10de"
K3S_DISABLED = ("traefik", "local-storage")
"""Bundled k3s components the servers run without: ingress and storage come from the stack (Traefik,
the NFS and scratch classes); k3s' bundled local-path class would be a second default StorageClass."""
CONTROL_PLANE_LABELS = (
    ("node-role.kubernetes.io/control-plane", "true"),
    ("node-role.kubernetes.io/etcd", "true"),
)
"""The role labels k3s puts on a server with embedded etcd."""
CLOUD_INIT_INPUTS = (
    "initialization[0].user_data_file_id",
    "initialization[0].meta_data_file_id",
    "initialization[0].ip_config",
    "initialization[0].dns",
)
"""VM arguments that reach the guest only through cloud-init. bpg/proxmox marks the snippet ids
ForceNew (proxmoxtf/resource/vm/vm.go), so without ignoring them a new token, key, k3s version or
VIP would replace every VM at once, all etcd members with them. ip_config and dns it updates in
place and rebuilds the cloud-init drive, but with the VM's fixed instance-id cloud-init applies
network config only to a new instance (NoCloud's default update event is boot-new-instance), so
the VM would keep its old address while the plan reported success: the VMs ignore them too, and a
postcondition refuses a plan whose network differs from what a VM was built with (CLOUD_INIT_NETWORK).
Such changes roll out node by node (docs/proxmox-ha.md, "Changing cloud-init inputs: node by node")."""


@dataclass(frozen=True)
class GpuDevice:
    """One GPU on the Proxmox host, as a PCI resource mapping needs it; each field may be a
    reference to a variable (Terraform then validates it). Proxmox compares every field with the
    device when a VM using the mapping starts, so none of them is assumed."""

    id: str
    """Vendor:device id as ``lspci -nn -d 10de:`` prints it, e.g. 10de:20f1 (A100 PCIe 40GB) or
    10de:20b5 (A100 PCIe 80GB)."""
    path: str
    """PCI address as ``lspci -D`` prints it, e.g. 0000:41:00.0."""
    iommu_group: int | str
    """The IOMMU group of the device: the directory under /sys/kernel/iommu_groups holding it."""
    subsystem_id: str
    """Subsystem vendor:device id, e.g. 10de:145f (``lspci -nn -v -s <path>``, 'Subsystem')."""

    def check(self, field_name: str) -> None:
        if not validate.is_reference(self.id):
            if not PCI_ID.fullmatch(self.id):
                raise ConfigError(
                    f"{field_name}.id",
                    self.id,
                    "give the GPU's vendor:device id from `lspci -nn -d 10de:`, e.g. 10de:20b5",
                )
            if not self.id.startswith(f"{NVIDIA_VENDOR}:"):
                raise ConfigError(
                    f"{field_name}.id",
                    self.id,
                    f"the GPU Operator drives NVIDIA (vendor {NVIDIA_VENDOR}) GPUs only; give an NVIDIA "
                    "device id from `lspci -nn -d 10de:`",
                )
        if not validate.is_reference(self.path) and not PCI_PATH.fullmatch(self.path):
            raise ConfigError(
                f"{field_name}.path", self.path, "give the address as `lspci -D` prints it, e.g. 0000:41:00.0"
            )
        if isinstance(self.iommu_group, str):
            if not validate.is_reference(self.iommu_group):
                raise ConfigError(
                    f"{field_name}.iommu_group",
                    self.iommu_group,
                    "give the group number from /sys/kernel/iommu_groups, e.g. 32",
                )
        else:
            validate.int_range(f"{field_name}.iommu_group", self.iommu_group, 0, 65535)
        if not validate.is_reference(self.subsystem_id) and not PCI_ID.fullmatch(self.subsystem_id):
            raise ConfigError(
                f"{field_name}.subsystem_id",
                self.subsystem_id,
                "give the subsystem vendor:device id from `lspci -nn -v`, e.g. 10de:145f",
            )


@dataclass(frozen=True)
class SshHostKey:
    """A VM's SSH host key, which the stack installs with cloud-init and then checks on every SSH
    connection to the VM: ed25519, both halves references to variables."""

    public_key: str
    """``ssh-ed25519 <base64>``, as the ``.pub`` file holds it without the comment."""
    private_key: str
    """The OpenSSH private key file's text: a reference to a sensitive variable."""

    def check(self, name: str) -> None:
        if not validate.is_reference(self.private_key):
            raise ConfigError(
                f"ssh_host_keys.{name}.private_key",
                "(hidden)",
                "pass a sensitive variable reference, never the key itself",
            )
        if not validate.is_reference(self.public_key) and not self.public_key.startswith("ssh-ed25519 "):
            raise ConfigError(
                f"ssh_host_keys.{name}.public_key",
                self.public_key,
                "give the ed25519 public key, e.g. from `ssh-keygen -t ed25519 -N '' -f cp1`",
            )


@dataclass(frozen=True)
class VmSize:
    vcpus: int
    memory_gb: int
    disk_gb: int

    def __post_init__(self) -> None:
        validate.int_range("vcpus", self.vcpus, 1, 512)
        validate.int_range("memory_gb", self.memory_gb, 1, 4096)
        validate.int_range("disk_gb", self.disk_gb, 10, 65536)

    @property
    def shape(self) -> str:
        return f"{self.vcpus} vCPU, {self.memory_gb} GB, {self.disk_gb} GB disk"


@dataclass(frozen=True)
class ProxmoxProps:
    """The VM layout and network plan; defaults are the seed's."""

    k3s_token: str
    """Reference to a sensitive variable: the server token, which only servers get."""
    ssh_public_key: str
    ssh_private_key_path: str
    gpu_devices: Sequence[GpuDevice]
    """The GPUs to pass through, one resource mapping each: gpus_per_worker x workers of them."""
    kubeconfig_path: str
    k3s_agent_token: str | None = None
    """Reference to a sensitive variable: the servers' ``agent-token``, with which the workers join.
    A worker then holds no secret that lets it join as a server (and read etcd)."""
    known_hosts_path: str | None = None
    """The stack's own SSH known-hosts file for cp1 (default: next to the kubeconfig): it holds
    cp1's key from ``ssh_host_keys``, and without them the key cp1 showed first."""
    ssh_host_keys: Mapping[str, SshHostKey] = field(default_factory=dict)
    """Each VM's SSH host key by VM name (cp1, ..., wk-gpu1, ...), for every VM or none: cloud-init
    installs it, and every SSH connection to the VM accepts that key only. Without them, the
    first connection accepts whatever key answers at the address."""
    node_name: str = "pve"
    vm_datastore: str = "local-lvm"
    scratch_datastore: str | None = None
    """Where the workers' scratch disks go (default: vm_datastore), e.g. an NVMe thin pool."""
    datastore_capacity_gb: Mapping[str, int] = field(default_factory=dict)
    """Usable GB of each datastore (``pvesm status``), required for every datastore the VMs use:
    the thin volumes the stack puts on one are summed at synth and must fit, since a full thin pool
    stops every VM on it."""
    snippets_datastore: str = "local"
    """Needs the 'snippets' content type enabled (docs/proxmox-ha.md, Proxmox prerequisites)."""
    image_datastore: str = "local"
    bridge: str = "vmbr0"
    network: str = "10.0.0.0/24"
    gateway: str = "10.0.0.1"
    dns_servers: tuple[str, ...] = ("10.0.0.1",)
    control_plane_ips: tuple[str, ...] = ("10.0.0.11", "10.0.0.12", "10.0.0.13")
    worker_ips: tuple[str, ...] = ("10.0.0.21", "10.0.0.22", "10.0.0.23", "10.0.0.24")
    control_plane_size: VmSize = field(default_factory=lambda: VmSize(4, 16, 100))
    worker_size: VmSize = field(default_factory=lambda: VmSize(16, 128, 500))
    scratch_gb: int = 1024
    gpus_per_worker: int = 2
    host_gpu_count: int = 8
    """GPUs the Proxmox host has (the seed: 8x A100)."""
    api_vip: str | None = None
    """Optional kube-vip address for the API (the seed: 10.0.0.100)."""
    firewall: bool = True
    """Each VM's Proxmox firewall (input DROP): everything from the VM network (the nodes' k3s,
    etcd, flannel and kubelet traffic), SSH and the API from ``admin_cidrs``, HTTP(S) to the
    ingress and ICMP from anywhere. Proxmox applies VM rules only with the datacenter firewall on."""
    admin_cidrs: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    """Where SSH (22) and the Kubernetes API (6443) may be reached from, besides the VM network."""
    cluster_cidr: str = "10.42.0.0/16"
    service_cidr: str = "10.43.0.0/16"
    k3s_version: str = versions.K3S_PROXMOX.version
    hugepages: bool = False
    """Back worker memory with 1 GiB huge pages (configure them on the host first)."""
    cpu_pinning: bool = False
    """Pin each worker's vCPUs to its own host cores, after the control planes'."""
    host_cpus: int = 128
    """Logical CPUs of the Proxmox host (``nproc``); pinned cores must exist."""
    root_auth: bool = False
    """The provider logs in as root@pam with a password: Proxmox allows hugepages and CPU affinity
    to no one else, API tokens included (even root@pam's)."""
    etcd_snapshots: EtcdSnapshots = field(default_factory=EtcdSnapshots)
    image_url: str = versions.UBUNTU_CLOUD_IMAGE.version
    """A dated release of the Ubuntu cloud image, never ``current/``."""
    image_sha256: str = versions.UBUNTU_CLOUD_IMAGE_SHA256.version
    """The image's line in its release directory's SHA256SUMS; Proxmox checks the download with it."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    vm_id_base: int = 200
    protect_control_plane: bool = True
    """``lifecycle.prevent_destroy`` on the server VMs: Terraform then fails a plan that would destroy
    or replace one (a ``-replace``, a forced replacement, a destroy) before anything is changed. A
    new cp1 would start a new, empty cluster while cp2, cp3 and the workers stay in the old one,
    both announcing the VIP. Set False for one apply to rebuild cp2 or cp3, or to destroy."""

    def __post_init__(self) -> None:
        validate.k8s_name("node_name", self.node_name)
        for name in ("vm_datastore", "snippets_datastore", "image_datastore", "scratch_datastore"):
            value = getattr(self, name)
            if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", value):
                raise ConfigError(name, value, "give a Proxmox storage id such as local-lvm")
        if not re.fullmatch(r"vmbr\d{1,4}|[A-Za-z][A-Za-z0-9_-]{0,14}", self.bridge):
            raise ConfigError("bridge", self.bridge, "give a Linux bridge or SDN vnet name such as vmbr0")
        if not self.image_url.startswith("https://"):
            raise ConfigError("image_url", self.image_url, "download the cloud image over https://")
        if "/current/" in self.image_url:
            raise ConfigError(
                "image_url",
                self.image_url,
                "pin a dated release such as https://cloud-images.ubuntu.com/releases/noble/release-20250516/"
                "ubuntu-24.04-server-cloudimg-amd64.img: current/ is republished, and a new size replaces "
                "the download at the next plan",
            )
        if not re.fullmatch(r"[0-9a-f]{64}", self.image_sha256):
            raise ConfigError(
                "image_sha256",
                self.image_sha256,
                "give the image's SHA-256 from the SHA256SUMS file of its release directory",
            )
        count = len(self.control_plane_ips)
        if count < 3 or count % 2 == 0:
            raise ConfigError(
                "control_plane_count", count, "k3s embedded etcd needs an odd count of at least 3 for HA"
            )
        if count > 9:
            # Server VM ids are vm_id_base + 11 ... + 19, the workers' + 21 on: a tenth server
            # would take wk-gpu1's id, which Proxmox refuses at create, halfway into the apply.
            raise ConfigError(
                "control_plane_count",
                count,
                "give at most 9 control planes (their VM ids come before the workers')",
            )
        if not self.worker_ips:
            raise ConfigError("worker_ips", (), "give at least one GPU worker")
        network = validate.cidr("network", self.network)
        if not self.dns_servers:
            raise ConfigError("dns_servers", (), "give at least one DNS server, e.g. the gateway")
        for index, server in enumerate(self.dns_servers):
            validate.ipv4(f"dns_servers[{index}]", server)
        addresses = {"gateway": self.gateway}
        if self.api_vip:
            addresses["api_vip"] = self.api_vip
        for index, ip in enumerate(self.control_plane_ips):
            addresses[f"control_plane_ips[{index}]"] = ip
        for index, ip in enumerate(self.worker_ips):
            addresses[f"worker_ips[{index}]"] = ip
        seen: dict[str, str] = {}
        for name, ip in addresses.items():
            validate.ipv4(name, ip)
            if ipaddress.IPv4Address(ip) not in network:
                raise ConfigError(name, ip, f"use an address inside {self.network}")
            if ip in seen:
                raise ConfigError(
                    name, ip, f"it is already used by {seen[ip]}; give each node its own address"
                )
            seen[ip] = name
        if self.gpus_per_worker < 1:
            raise ConfigError(
                "gpus_per_worker", self.gpus_per_worker, "every GPU worker needs at least one GPU mapping"
            )
        wanted = self.gpus_per_worker * len(self.worker_ips)
        if wanted > self.host_gpu_count:
            raise ConfigError(
                "gpus_per_worker",
                self.gpus_per_worker,
                f"{len(self.worker_ips)} workers x {self.gpus_per_worker} GPUs need {wanted} passthrough "
                f"GPUs but the host has {self.host_gpu_count}",
            )
        validate.int_range(
            "gpus_per_worker", self.gpus_per_worker, 1, 16, why="a VM takes hostpci0 to hostpci15"
        )
        validate.int_range("scratch_gb", self.scratch_gb, 10, 65536)
        if len(self.gpu_devices) != wanted:
            raise ConfigError(
                "gpu_devices",
                len(self.gpu_devices),
                f"give exactly {wanted} GPUs: {len(self.worker_ips)} workers x {self.gpus_per_worker}",
            )
        for index, device in enumerate(self.gpu_devices):
            device.check(f"gpu_devices[{index}]")
        for attribute in ("path", "iommu_group"):
            literal = [
                str(getattr(d, attribute))
                for d in self.gpu_devices
                if not validate.is_reference(str(getattr(d, attribute)))
            ]
            # A VM takes a whole IOMMU group: two GPUs in one group cannot go to two VMs.
            validate.unique(f"gpu_devices.{attribute}", literal)
        validate.int_range("vm_id_base", self.vm_id_base, 100, 999_999_000)
        if self.firewall and not self.admin_cidrs:
            raise ConfigError(
                "admin_cidrs", (), "give the networks SSH and the API are reached from, e.g. 192.168.1.0/24"
            )
        for index, cidr in enumerate(self.admin_cidrs):
            validate.cidr(f"admin_cidrs[{index}]", cidr)
        validate.int_range("host_cpus", self.host_cpus, 1, 8192)
        for flag, enabled in (("hugepages", self.hugepages), ("cpu_pinning", self.cpu_pinning)):
            if enabled and not self.root_auth:
                raise ConfigError(
                    flag,
                    True,
                    "Proxmox allows hugepages and CPU affinity only to root@pam with a password (API "
                    "tokens are refused, even root@pam's): set root_auth=True and give the root password",
                )
        if self.cpu_pinning:
            last = self.pinned_cores(len(self.worker_ips) - 1)[1]
            if last >= self.host_cpus:
                raise ConfigError(
                    "cpu_pinning",
                    True,
                    f"pinning needs host cores up to {last} but host_cpus is {self.host_cpus}; "
                    "raise host_cpus to the host's nproc or turn pinning off",
                )
        self.etcd_snapshots.check()
        if self.ssh_host_keys:
            missing = sorted(set(self.vm_names) - set(self.ssh_host_keys))
            extra = sorted(set(self.ssh_host_keys) - set(self.vm_names))
            if missing or extra:
                raise ConfigError(
                    "ssh_host_keys",
                    sorted(self.ssh_host_keys),
                    f"give one key for each VM: {', '.join(self.vm_names)}",
                )
            for name, key in self.ssh_host_keys.items():
                key.check(name)
        for datastore, used in self.disk_usage_gb().items():
            capacity = self.datastore_capacity_gb.get(datastore)
            if capacity is None:
                # Thin pools accept more than they hold until they fill, and then every VM on
                # them stops: no datastore goes unchecked.
                raise ConfigError(
                    f"datastore_capacity_gb.{datastore}",
                    "unset",
                    f"the VMs' disks on {datastore} add up to {used} GB: give its usable GB from "
                    f"`pvesm status`, e.g. datastore_capacity_gb=(('{datastore}', 2000),)",
                )
            if used > capacity:
                raise ConfigError(
                    f"datastore_capacity_gb.{datastore}",
                    capacity,
                    f"the VMs' disks on {datastore} add up to {used} GB; give scratch its own datastore "
                    "(scratch_datastore), shrink disk_gb or scratch_gb, or give the real capacity",
                )
        validate.version("k3s_version", self.k3s_version, r"v\d+\.\d+\.\d+\+k3s\d+", "v1.33.4+k3s1")
        if validate.cidr("cluster_cidr", self.cluster_cidr).overlaps(network) or validate.cidr(
            "service_cidr", self.service_cidr
        ).overlaps(network):
            raise ConfigError(
                "cluster_cidr", self.cluster_cidr, f"keep pod and service CIDRs out of {self.network}"
            )

    def disk_usage_gb(self) -> dict[str, int]:
        """GB of the thin volumes each datastore gets at full use: OS, scratch, EFI and cloud-init
        disks (the last two a few MB each, counted as 1 GB per VM)."""
        usage: dict[str, int] = {}
        vms = [self.control_plane_size] * len(self.control_plane_ips) + [self.worker_size] * len(
            self.worker_ips
        )
        for size in vms:
            usage[self.vm_datastore] = usage.get(self.vm_datastore, 0) + size.disk_gb + 1
        scratch = self.scratch_datastore or self.vm_datastore
        usage[scratch] = usage.get(scratch, 0) + self.scratch_gb * len(self.worker_ips)
        return usage

    @property
    def vm_names(self) -> list[str]:
        return [f"cp{i + 1}" for i in range(len(self.control_plane_ips))] + [
            f"wk-gpu{i + 1}" for i in range(len(self.worker_ips))
        ]

    def host_key(self, name: str) -> str | None:
        """The VM's SSH public host key, when the stack gives the VMs theirs."""
        key = self.ssh_host_keys.get(name)
        return key.public_key if key else None

    @property
    def known_hosts(self) -> str:
        return self.known_hosts_path or re.sub(r"\.ya?ml$", "", self.kubeconfig_path) + ".known_hosts"

    @property
    def control_plane_names(self) -> tuple[str, ...]:
        """The control-plane VMs' names, which are their hostnames and Kubernetes node names."""
        return tuple(f"cp{i + 1}" for i in range(len(self.control_plane_ips)))

    @property
    def worker_names(self) -> tuple[str, ...]:
        return tuple(f"wk-gpu{i + 1}" for i in range(len(self.worker_ips)))

    @property
    def server_address(self) -> str:
        return self.api_vip or self.control_plane_ips[0]

    def pinned_cores(self, worker: int) -> tuple[int, int]:
        """First and last host core of a worker's pinned vCPUs, after the control planes' cores."""
        start = len(self.control_plane_ips) * self.control_plane_size.vcpus + worker * self.worker_size.vcpus
        return start, start + self.worker_size.vcpus - 1


class ProxmoxGpuCompute(Construct):
    """k3s HA on Proxmox VMs, GPU workers with passthrough NVIDIA GPUs."""

    def __init__(self, scope: Construct, id: str, *, props: ProxmoxProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.image = DownloadFile(
            self,
            "cloud-image",
            node_name=props.node_name,
            datastore_id=props.image_datastore,
            content_type="import",
            url=props.image_url,
            file_name="ubuntu-noble-cloudimg-amd64.qcow2",
            # Proxmox verifies the download against it (download-url's checksum); with overwrite
            # false the provider never compares the URL's size with the stored file's
            # (fwprovider/nodes/resource_download_file.go Read), so a plan never replaces it.
            # A new pin (url and checksum) replaces it; the VMs keep their disks (import_from is
            # read at creation only).
            checksum=props.image_sha256,
            checksum_algorithm="sha256",
            overwrite=False,
        )
        self.gpu_mappings = [
            HardwareMappingPci(
                self,
                f"gpu{index}",
                name=f"gpu{index}",
                comment="GPU passed through to a k3s worker",
                map=[
                    PciMap(
                        id=device.id,
                        node=props.node_name,
                        path=device.path,
                        iommu_group=device.iommu_group,
                        subsystem_id=device.subsystem_id,
                    )
                ],
            )
            for index, device in enumerate(props.gpu_devices)
        ]
        self.control_planes = [
            self._vm(
                props.control_plane_names[i],
                ip,
                props.vm_id_base + 11 + i,
                props.control_plane_size,
                role="server",
                first=i == 0,
            )
            for i, ip in enumerate(props.control_plane_ips)
        ]
        self.workers = [
            self._vm(
                props.worker_names[i], ip, props.vm_id_base + 21 + i, props.worker_size, role="agent", index=i
            )
            for i, ip in enumerate(props.worker_ips)
        ]
        self.kubeconfig = run_local_script(
            self,
            "kubeconfig",
            run=ScriptRun(
                "fetch-kubeconfig.sh",
                {
                    "SSH_USER": "ubuntu",
                    "SSH_HOST": props.control_plane_ips[0],
                    "SSH_KEY": props.ssh_private_key_path,
                    **({"HOST_KEY": key} if (key := props.host_key("cp1")) else {}),
                    "KUBECONFIG_OUT": props.kubeconfig_path,
                    # The VIP when there is one: the kubeconfig then survives the loss of cp1.
                    "API_SERVER": props.server_address,
                    "KNOWN_HOSTS": props.known_hosts,
                    "WAIT_SECONDS": "1200",
                },
            ),
            triggers={"server": self.control_planes[0].id_ref},
            depends_on=[*self.control_planes, *self.workers],
            expect_file=props.kubeconfig_path,
        )
        gpus = props.gpus_per_worker * len(props.worker_ips)
        self.cluster = GpuCluster(
            name=id,
            access=KubeAccess(config_path=props.kubeconfig_path),
            gpu_node_selector=dict([GPU_LABEL]),
            gpu_taint=GPU_TAINT,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class="nvidia",
            driver=Manager.OPERATOR,
            toolkit=Manager.OPERATOR,
            # this cluster's k3s decides the containerd config template, not the library's pin
            containerd=k3s_containerd(props.k3s_version),
            sharing=props.sharing,
            gpu_capacity=gpus * props.sharing.time_slicing_replicas,
            gpus_per_node=props.gpus_per_worker * props.sharing.time_slicing_replicas,
            ready=(self.kubeconfig,),
            # cp1 carries cluster-init, and the kubeconfig (so the helm provider) comes from it.
            # Rebuilt, it boots an empty datastore and k3s starts a new etcd cluster on it instead
            # of rejoining cp2 and cp3: an init node rejoins only with `server:` pointing at a live
            # member in place of `cluster-init` and its db directory deleted (k3s maintainers,
            # k3s-io/k3s discussion #7070), which its first-boot user data cannot know. So a replaced
            # cp1 is a new, empty cluster and everything is installed into it again; the plan lists
            # every release as replaced, the sign to stop unless a new cluster is meant (docs/proxmox-ha.md,
            # "Changing cloud-init inputs"), and with protect_control_plane Terraform refuses that
            # plan: cp2, cp3 and the workers would stay in the old cluster, both announcing the VIP.
            # cp2, cp3 and the workers join the existing cluster: replaced, they leave and rejoin
            # it, and what runs in it stays.
            identity=(self.control_planes[0],),
        )

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        props = self.props
        cps, workers = props.control_plane_names, props.worker_names
        return (
            NodeGroup(
                "control planes",
                names=cps,
                labels=dict(CONTROL_PLANE_LABELS),
                instance_types=(props.control_plane_size.shape,),
                gpus_per_node=0,
                min_nodes=len(cps),
                max_nodes=len(cps),
                system=True,
            ),
            NodeGroup(
                "gpu workers",
                names=workers,
                labels=dict(WORKER_LABELS),
                taints=(GPU_TAINT,),
                instance_types=(props.worker_size.shape,),
                gpu=True,
                gpus_per_node=props.gpus_per_worker,
                min_nodes=len(workers),
                max_nodes=len(workers),
            ),
        )

    @property
    def platform(self) -> PlatformFacts:
        cluster = self.cluster
        return k3s_platform(
            self.props.k3s_version,
            K3S_DISABLED,
            driver=cluster.driver,
            toolkit=cluster.toolkit,
            etcd_snapshots=self.props.etcd_snapshots.where,
        )

    # --- VMs ----------------------------------------------------------------------------------------------
    def _vm(
        self, name: str, ip: str, vm_id: int, size: VmSize, *, role: str, first: bool = False, index: int = 0
    ) -> Vm:
        props = self.props
        address = f"{ip}/{ipaddress.IPv4Network(props.network).prefixlen}"
        snippet = File(
            self,
            f"{name}-user-data",
            node_name=props.node_name,
            datastore_id=props.snippets_datastore,
            content_type="snippets",
            source_raw=SourceRaw(self.user_data(name, ip, role=role, first=first), f"{name}-user-data.yaml"),
            # The user data holds the k3s token and the S3 keys. Snippets are uploaded over SFTP as
            # the provider's ssh user (root here), which chmods the file after the upload
            # (proxmox/ssh/client.go NodeStreamUpload); the reference page's "root@pam only" is
            # about API uploads, which snippets never use.
            file_mode="0600",
        )
        # Proxmox rebuilds the cloud-init drive at every VM start, and without a meta-data file its
        # instance-id is the SHA-1 of the current user data and network config (qemu-server
        # src/PVE/QemuServer/Cloudinit.pm): an edited snippet would look like a new instance to
        # every VM at its next start, and all of them would re-run cloud-init together (a new
        # token stops every server). A fixed instance-id keeps what each VM first booted with;
        # only a rebuilt VM, with a fresh disk, runs the new user data.
        meta_data = File(
            self,
            f"{name}-meta-data",
            node_name=props.node_name,
            datastore_id=props.snippets_datastore,
            content_type="snippets",
            source_raw=SourceRaw(self.meta_data(name, vm_id), f"{name}-meta-data.yaml"),
            file_mode="0600",
        )
        disks = [
            Disk(
                "scsi0",
                props.vm_datastore,
                size.disk_gb,
                import_from=self.image.id_ref,
                iothread=True,
                discard="on",
            )
        ]
        hostpci: list[HostPci] = []
        memory = Memory(dedicated=size.memory_gb * 1024)
        cpu = Cpu(cores=size.vcpus, type="host")
        if role == "agent":
            disks.append(
                Disk(
                    "scsi1",
                    props.scratch_datastore or props.vm_datastore,
                    props.scratch_gb,
                    iothread=True,
                    ssd=True,
                    discard="on",
                )
            )
            first_gpu = index * props.gpus_per_worker
            hostpci = [
                HostPci(
                    f"hostpci{n}",
                    self.gpu_mappings[first_gpu + n].get_string_attribute("name"),
                    pcie=True,
                    rombar=True,
                )
                for n in range(props.gpus_per_worker)
            ]
            if props.hugepages:
                memory = Memory(dedicated=size.memory_gb * 1024, hugepages="1024", keep_hugepages=True)
            if props.hugepages or props.cpu_pinning:
                # hugepages require cpu.numa (provider docs, memory.hugepages); pinning keeps it too.
                low, high = props.pinned_cores(index)
                cpu = Cpu(
                    cores=size.vcpus,
                    type="host",
                    numa=True,
                    affinity=f"{low}-{high}" if props.cpu_pinning else None,
                )
        vm = Vm(
            self,
            name,
            node_name=props.node_name,
            name=name,
            vm_id=vm_id,
            description=f"k3s {role} ({'GPU worker' if role == 'agent' else 'control plane'})",
            tags=["k3s", "gpu" if role == "agent" else "control-plane"],
            cpu=cpu,
            memory=memory,
            efi_disk=EfiDisk(datastore_id=props.vm_datastore, type="4m"),
            disk=disks,
            network_device=[NetworkDevice(bridge=props.bridge, firewall=props.firewall or None)],
            initialization=Initialization(
                datastore_id=props.vm_datastore,
                ip_config=[IpConfig(Ipv4(address, props.gateway))],
                user_data_file_id=snippet.id_ref,
                meta_data_file_id=meta_data.id_ref,
                dns=Dns(servers=props.dns_servers),
            ),
            hostpci=hostpci,
            agent=Agent(enabled=True),
            operating_system=OperatingSystem("l26"),
            # Terraform updates all VMs of a plan in parallel: with the provider's default (true) a
            # size or hardware change powers cp1, cp2 and cp3 off together (etcd loses quorum) and
            # every GPU worker with them. false leaves such a change pending in the VM's config
            # with a warning, for the node-by-node reboot (docs/proxmox-ha.md), and fails a change
            # that cannot wait for one (bpg/proxmox v0.111.1 proxmoxtf/resource/vm/vm.go,
            # vmPowerOffForPendingChanges, vmFinalizePowerState, rebootAfterUpdateDisabledError).
            reboot_after_update=False,
            lifecycle=TerraformResourceLifecycle(
                ignore_changes=list(CLOUD_INIT_INPUTS),
                postcondition=[network_postcondition(name, address, props.gateway, props.dns_servers)],
                # Terraform refuses at plan to destroy it, a replacement and -replace included
                # ("Instance cannot be destroyed"), before any release is uninstalled.
                prevent_destroy=(role == "server" and props.protect_control_plane) or None,
            ),
            provisioners=[self.delete_node_provisioner()],
        )
        if props.firewall:
            self._firewall(name, vm_id, vm)
        return vm

    def _firewall(self, name: str, vm_id: int, vm: Vm) -> None:
        """The VM's firewall: rules first, then the switch, so it never drops with no rules. Proxmox
        deletes a VM's firewall file with the VM, and these name the VM by its literal id, so both
        are replaced with it (a replaced VM plans a new, unknown ``id``): a rebuilt VM never runs
        with its network device's firewall on and no rules, open to every network."""
        props = self.props
        with_vm = TerraformResourceLifecycle(
            replace_triggered_by=[f"{vm.terraform_resource_type}.{vm.friendly_unique_id}.id"]
        )
        rules = FirewallRules(
            self,
            f"{name}-firewall-rules",
            node_name=props.node_name,
            vm_id=vm_id,
            rule=[
                FirewallRule("in", "ACCEPT", "the cluster's nodes", source=props.network),
                FirewallRule(
                    "in",
                    "ACCEPT",
                    "SSH and the Kubernetes API from the admin networks",
                    source=",".join(props.admin_cidrs),
                    proto="tcp",
                    dport="22,6443",
                ),
                FirewallRule("in", "ACCEPT", "HTTP and HTTPS to the ingress", proto="tcp", dport="80,443"),
                FirewallRule("in", "ACCEPT", "ICMP (path MTU discovery, ping)", proto="icmp"),
            ],
            depends_on=[vm],
            lifecycle=with_vm,
        )
        FirewallOptions(
            self,
            f"{name}-firewall",
            node_name=props.node_name,
            vm_id=vm_id,
            enabled=True,
            input_policy="DROP",
            output_policy="ACCEPT",
            depends_on=[rules],
            lifecycle=with_vm,
        )

    def delete_node_provisioner(self) -> LocalExecProvisioner:
        """Before a VM is destroyed (a rebuild with ``-replace`` or a destroy), drain it and delete
        its Node: k3s refuses a rebuilt node of the same name until then (its node password).
        A destroy-time provisioner may refer to ``self`` and ``path`` only (Terraform
        internal/configs/provisioner.go, onlySelfRefs), so the node name is ``self.name`` and the
        kubeconfig a path. The script lets the destroy go on when the API does not answer (a
        whole-stack destroy, where the servers go down in parallel), after printing the command to
        run by hand; a refused delete stops it."""
        return LocalExecProvisioner(
            type="local-exec",
            when="destroy",
            command=script_literal("delete-node.sh"),
            interpreter=["bash", "-c"],
            environment={"KUBECONFIG": self.props.kubeconfig_path, "NODE": "${self.name}"},
        )

    @staticmethod
    def meta_data(name: str, vm_id: int) -> str:
        """The NoCloud meta-data: an instance-id that depends on the VM alone, never on its user data."""
        return yaml.safe_dump({"instance-id": f"{name}-{vm_id}", "local-hostname": name}, sort_keys=True)

    def k3s_config(self, ip: str, *, role: str, first: bool) -> dict[str, Any]:
        props = self.props
        config: dict[str, Any] = {"token": props.k3s_token, "node-ip": ip}
        if role == "server" and props.k3s_agent_token:
            config["agent-token"] = props.k3s_agent_token
        elif role != "server" and props.k3s_agent_token:
            config["token"] = props.k3s_agent_token
        if role == "server":
            config.update(
                {
                    "tls-san": sorted({ip, props.server_address}),
                    "cluster-cidr": props.cluster_cidr,
                    "service-cidr": props.service_cidr,
                    "disable": list(K3S_DISABLED),
                    "write-kubeconfig-mode": "0600",
                }
            )
            config.update(props.etcd_snapshots.k3s_flags())
            if first:
                config["cluster-init"] = True
            else:
                config["server"] = f"https://{props.control_plane_ips[0]}:6443"
        else:
            config["server"] = f"https://{props.server_address}:6443"
            config["node-label"] = ["=".join(label) for label in WORKER_LABELS]
            config["node-taint"] = [str(GPU_TAINT)]
        return config

    def user_data(self, name: str, ip: str, *, role: str, first: bool) -> str:
        props = self.props
        install = (
            f"curl -sfL https://get.k3s.io | INSTALL_K3S_VERSION='{props.k3s_version}' "
            f"INSTALL_K3S_EXEC='{role}' sh -"
        )
        document: dict[str, Any] = {
            "hostname": name,
            "users": [
                {
                    "name": "ubuntu",
                    "groups": ["sudo"],
                    "shell": "/bin/bash",
                    "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "ssh_authorized_keys": [_yaml_string(props.ssh_public_key)],
                }
            ],
            "package_update": True,
            "packages": ["qemu-guest-agent", "nfs-common"],
            "write_files": [
                {
                    "path": "/etc/rancher/k3s/config.yaml",
                    "permissions": "0600",
                    "content": yaml.safe_dump(self.k3s_config(ip, role=role, first=first), sort_keys=True),
                },
                {
                    "path": "/etc/modules-load.d/k3s.conf",
                    "content": "br_netfilter\noverlay\n",
                },
            ],
            "runcmd": [
                "systemctl enable --now qemu-guest-agent",
                # modprobe takes one module and its parameters; -a loads every name given.
                "modprobe -a br_netfilter overlay",
                "swapoff -a",
            ],
        }
        host_key = props.ssh_host_keys.get(name)
        if host_key:
            # The key Terraform checks on every connection (write_files runs before cloud-init's
            # ssh module, which keeps keys with ssh_deletekeys false and generates no other type
            # with ssh_genkeytypes empty, so the host offers this key only). base64 keeps the
            # multi-line key one YAML scalar after Terraform fills it in.
            document["ssh_deletekeys"] = False
            document["ssh_genkeytypes"] = []
            document["write_files"][:0] = [
                {
                    "path": "/etc/ssh/ssh_host_ed25519_key",
                    "permissions": "0600",
                    "encoding": "b64",
                    "content": f"${{base64encode({_expression(host_key.private_key)})}}",
                },
                {
                    "path": "/etc/ssh/ssh_host_ed25519_key.pub",
                    "permissions": "0644",
                    "content": f"{host_key.public_key} root@{name}\n",
                },
            ]
        if role == "agent":
            # The scratch disk by its stable id (scsi1: QEMU names it after the drive), not /dev/sdb,
            # which another disk can take. k3s starts only with scratch mounted: with nofail alone,
            # a boot without the disk would let the fast-scratch class write into /mnt/scratch on
            # the OS disk while the node still carries the scratch-disk label.
            document["fs_setup"] = [
                {"label": "scratch", "filesystem": "ext4", "device": SCRATCH_DEVICE, "partition": "auto"}
            ]
            document["mounts"] = [["LABEL=scratch", SCRATCH_MOUNT, "ext4", "defaults,nofail", "0", "2"]]
            document["write_files"].append(
                {
                    "path": "/etc/systemd/system/k3s-agent.service.d/scratch.conf",
                    "content": f"[Unit]\nRequiresMountsFor={SCRATCH_MOUNT}\n",
                }
            )
        if role == "server" and props.api_vip:
            document["write_files"].append(
                {
                    "path": "/var/lib/rancher/k3s/server/manifests/kube-vip.yaml",
                    "content": yaml.safe_dump_all(kube_vip_manifests(props.api_vip), sort_keys=True),
                }
            )
        if role == "server" and not first:
            # Join only once the first server answers.
            document["runcmd"].append(
                f"until curl -ksf https://{props.control_plane_ips[0]}:6443/ping; do sleep 10; done"
            )
        elif role == "agent":
            document["runcmd"].append(
                f"until curl -ksf https://{props.server_address}:6443/ping; do sleep 10; done"
            )
        document["runcmd"].append(install)
        return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=True, width=1000)

    def ansible_inventory(self) -> str:
        """An Ansible inventory of the nodes, for day-2 playbooks."""
        props = self.props
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": props.ssh_private_key_path,
                },
                "children": {
                    "control_plane": {
                        "hosts": {
                            name: {"ansible_host": ip}
                            for name, ip in zip(
                                props.control_plane_names, props.control_plane_ips, strict=True
                            )
                        }
                    },
                    "gpu_workers": {
                        "hosts": {
                            name: {"ansible_host": ip}
                            for name, ip in zip(props.worker_names, props.worker_ips, strict=True)
                        }
                    },
                },
            }
        }
        return yaml.safe_dump(inventory, sort_keys=True)


def network_postcondition(name: str, address: str, gateway: str, dns_servers: Sequence[str]) -> Postcondition:
    """Refuse a plan whose address, gateway or DNS servers for the VM differ from what it was
    built with. With ip_config and dns ignored, ``self`` keeps the values the provider reads back
    from the VM's config (bpg/proxmox v0.111.1 vm.go: the address as stored, the nameserver split
    at spaces); a new or replaced VM plans the configured ones and passes."""
    servers = " ".join(dns_servers)
    ipv4 = "self.initialization[0].ip_config[0].ipv4[0]"
    return Postcondition(
        condition=(
            f'${{{ipv4}.address == "{address}" && {ipv4}.gateway == "{gateway}" && '
            f'join(" ", self.initialization[0].dns[0].servers) == "{servers}"}}'
        ),
        error_message=(
            f"{name} was built with another address, gateway or DNS servers than the settings now give "
            f"({address} via {gateway}, DNS {servers}); cloud-init applies network settings only to a "
            "new instance, so the running VM would keep its old ones. A new gateway or DNS server: "
            "change it in place on every node (qm set --nameserver/--ipconfig0 and the guest's "
            'netplan, docs/proxmox-ha.md "A new gateway or DNS server, in place"). A new address: '
            'rebuild the node as "Changing cloud-init inputs: node by node" says, '
            "terraform apply -replace=ADDRESS (its firewall is replaced with it), one node at a time "
            "(never cp1: a new cp1 is a new cluster)."
        ),
    )


def _yaml_string(value: str) -> str:
    """``value`` for a YAML position where Terraform fills a reference in after yaml.safe_dump has
    quoted the text around it: as ``jsonencode(...)``, a JSON string, which YAML reads as a
    double-quoted scalar whatever it holds. Filled in raw, an SSH key comment such as ``ops: laptop``
    would make the list item a mapping (a plain scalar ends at ": "), and cloud-init would install
    no key. Literal text is left to yaml.safe_dump, which quotes it itself."""
    if not validate.is_reference(value):
        return value
    if Token.is_unresolved(value):
        return str(Fn.jsonencode(value))
    return f"${{jsonencode({_expression(value)})}}"


def _expression(reference: str) -> str:
    """The Terraform expression inside a ``${...}`` reference."""
    if not (reference.startswith("${") and reference.endswith("}")):
        raise ValueError(f"not a ${{...}} reference: {reference}")
    return reference[2:-1]


def kube_vip_manifests(address: str) -> list[dict[str, Any]]:
    """kube-vip as a DaemonSet on the control planes, announcing ``address`` by ARP."""
    labels = {"app.kubernetes.io/name": "kube-vip"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kube-vip", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kube-vip"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["services", "services/status", "nodes", "endpoints"],
                    "verbs": ["list", "get", "watch", "update"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "verbs": ["list", "get", "watch", "update", "create"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kube-vip"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-vip"},
            "subjects": [{"kind": "ServiceAccount", "name": "kube-vip", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "kube-vip", "namespace": "kube-system", "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "kube-vip",
                        "hostNetwork": True,
                        "nodeSelector": {"node-role.kubernetes.io/control-plane": "true"},
                        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                        "containers": [
                            {
                                "name": "kube-vip",
                                "image": versions.KUBE_VIP_IMAGE.version,
                                "args": ["manager"],
                                "env": [
                                    {"name": "address", "value": address},
                                    {"name": "port", "value": "6443"},
                                    {"name": "vip_arp", "value": "true"},
                                    {"name": "cp_enable", "value": "true"},
                                    {"name": "vip_leaderelection", "value": "true"},
                                ],
                                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                            }
                        ],
                    },
                },
            },
        },
    ]
