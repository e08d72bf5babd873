"""ProxmoxGpuCompute's props: the VMs, their GPUs, network, sizes and k3s settings, with the checks
that refuse a wrong one at synth."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GPU_LABEL, USER_NODE_LABEL, GpuSharing
from gpu_constructs.compute.k3s.etcd import EtcdSnapshots
from gpu_constructs.errors import ConfigError

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
    both announcing the VIP. Set False for one apply to rebuild cp2 or cp3 (or cp1 with
    ``rejoin_first_server``), or to destroy."""
    rejoin_first_server: bool = False
    """cp1 joins the running cluster through cp2 (``server:``) instead of initializing one
    (``cluster-init``), and the releases are no longer replaced with cp1: for rebuilding a lost cp1
    while cp2 and cp3 run (docs/proxmox-ha.md, "Losing cp1"). Only for a cluster that runs: with
    no server left, a new cp1 waits for cp2 and cp2 for cp1, and no cluster starts."""

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
