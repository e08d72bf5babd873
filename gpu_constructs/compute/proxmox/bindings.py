"""Typed cdktf bindings for the bpg/proxmox provider (v0.111.1), for what the proxmox-ha stack uses.

No prebuilt cdktf package exists for this provider. The arguments follow the reference pages in
../shared/upstream/provider-docs/proxmox/; tests check every emitted key against them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdktf import TerraformProvider, TerraformProviderGeneratorMetadata, TerraformResourceLifecycle
from constructs import Construct

from gpu_constructs.providers._base import BoundResource, block, drop_none

PROVIDER_SOURCE = "bpg/proxmox"
PROVIDER_VERSION = "0.111.1"


@dataclass(frozen=True)
class ProviderSsh:
    """The provider's ``ssh`` block: snippets are uploaded over SSH."""

    agent: bool | None = None
    username: str | None = None


class ProxmoxProvider(TerraformProvider):
    """``provider "proxmox"``, authenticated with an API token, or with a user and password where
    Proxmox allows an operation only to ``root@pam`` (both secrets from sensitive variables)."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        endpoint: str,
        api_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        insecure: Any = None,
        ssh: ProviderSsh | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            terraform_resource_type="proxmox",
            terraform_generator_metadata=TerraformProviderGeneratorMetadata(
                provider_name="proxmox", provider_version=PROVIDER_VERSION
            ),
            terraform_provider_source=PROVIDER_SOURCE,
        )
        self._arguments = {
            "endpoint": endpoint,
            "api_token": api_token,
            "username": username,
            "password": password,
            "insecure": insecure,
            "ssh": [block(ssh)] if ssh else None,
        }

    def _synthesize_attributes(self) -> Mapping[str, Any]:
        return drop_none(self._arguments)


class _ProxmoxResource(BoundResource):
    PROVIDER = "proxmox"
    VERSION = PROVIDER_VERSION


@dataclass(frozen=True)
class SourceRaw:
    data: str
    file_name: str


class File(_ProxmoxResource):
    """``proxmox_virtual_environment_file``: here, cloud-init snippets."""

    TYPE = "proxmox_virtual_environment_file"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        node_name: str,
        datastore_id: str,
        content_type: str,
        source_raw: SourceRaw,
        file_mode: str | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "node_name": node_name,
                "datastore_id": datastore_id,
                "content_type": content_type,
                "source_raw": [block(source_raw)],
                "file_mode": file_mode,
            },
        )


class DownloadFile(_ProxmoxResource):
    """``proxmox_virtual_environment_download_file``: the cloud image."""

    TYPE = "proxmox_virtual_environment_download_file"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        node_name: str,
        datastore_id: str,
        content_type: str,
        url: str,
        file_name: str | None = None,
        checksum: str | None = None,
        checksum_algorithm: str | None = None,
        overwrite: bool | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "node_name": node_name,
                "datastore_id": datastore_id,
                "content_type": content_type,
                "url": url,
                "file_name": file_name,
                "checksum": checksum,
                "checksum_algorithm": checksum_algorithm,
                "overwrite": overwrite,
            },
        )


@dataclass(frozen=True)
class PciMap:
    """One host device of a PCI resource mapping. Proxmox checks every field when a VM using the
    mapping starts: without ``iommu_group`` the mapping is incomplete ("missing expected property
    'iommugroup'"), and a ``subsystem_id`` other than the device's fails as "PCI device mapping
    invalid"; so both are required here."""

    id: str
    """Vendor and device id, e.g. 10de:20f1 (A100 PCIe 40GB)."""
    node: str
    path: str
    """PCI address on the host, e.g. 0000:41:00.0."""
    iommu_group: int | str
    """The device's IOMMU group (a number, or a reference to one)."""
    subsystem_id: str
    """Subsystem vendor and device id, e.g. 10de:145f (``lspci -nn -v -s <path>``)."""
    comment: str | None = None


class HardwareMappingPci(_ProxmoxResource):
    """``proxmox_virtual_environment_hardware_mapping_pci``: lets API-token users pass devices through."""

    TYPE = "proxmox_virtual_environment_hardware_mapping_pci"

    def __init__(
        self, scope: Construct, id: str, *, name: str, map: Sequence[PciMap], comment: str | None = None
    ) -> None:
        super().__init__(scope, id, {"name": name, "comment": comment, "map": [block(m) for m in map]})


@dataclass(frozen=True)
class Agent:
    enabled: bool


@dataclass(frozen=True)
class Cpu:
    cores: int
    type: str = "host"
    sockets: int | None = None
    numa: bool | None = None
    affinity: str | None = None


@dataclass(frozen=True)
class Memory:
    dedicated: int
    """MiB."""
    hugepages: str | None = None
    keep_hugepages: bool | None = None


@dataclass(frozen=True)
class EfiDisk:
    datastore_id: str
    type: str = "4m"
    file_format: str | None = None


@dataclass(frozen=True)
class Disk:
    interface: str
    datastore_id: str
    size: int
    """GiB."""
    import_from: str | None = None
    file_format: str | None = None
    iothread: bool | None = None
    ssd: bool | None = None
    discard: str | None = None


@dataclass(frozen=True)
class NetworkDevice:
    bridge: str = "vmbr0"
    model: str = "virtio"
    vlan_id: int | None = None
    firewall: bool | None = None
    """Apply the VM's firewall rules on this interface (Proxmox default: off). Network devices are
    hotplugged: bpg/proxmox v0.111.1 reboots no VM for a change (proxmoxtf/resource/vm/vm.go)."""


@dataclass(frozen=True)
class Ipv4:
    address: str
    gateway: str | None = None


@dataclass(frozen=True)
class IpConfig:
    ipv4: Ipv4


@dataclass(frozen=True)
class Dns:
    servers: Sequence[str]
    domain: str | None = None


@dataclass(frozen=True)
class Initialization:
    datastore_id: str
    ip_config: Sequence[IpConfig]
    user_data_file_id: str
    dns: Dns | None = None
    meta_data_file_id: str | None = None
    """A snippet sent as ``cicustom meta=`` (proxmox/nodes/vms/custom_cloud_init.go): Proxmox then
    writes it as the drive's meta-data instead of generating one whose instance-id is the SHA-1 of
    the user data and network config (qemu-server src/PVE/QemuServer/Cloudinit.pm)."""


@dataclass(frozen=True)
class HostPci:
    device: str
    """hostpci0 .. hostpci15."""
    mapping: str
    """The resource mapping's name (raw ids do not work with API tokens)."""
    pcie: bool = True
    rombar: bool = True
    """Always sent: the reference page says it defaults to true, but bpg/proxmox v0.111.1 sends an
    unset rombar as ``rombar=0`` (vmGetHostPCIDeviceObjects in proxmoxtf/resource/vm/vm.go passes
    the bool's zero value; proxmox/nodes/vms/custom_pci_device.go encodes it), hiding the ROM BAR
    where Proxmox's own default shows it."""


@dataclass(frozen=True)
class OperatingSystem:
    type: str = "l26"


class Vm(_ProxmoxResource):
    """``proxmox_virtual_environment_vm``."""

    TYPE = "proxmox_virtual_environment_vm"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        node_name: str,
        name: str,
        vm_id: int,
        cpu: Cpu,
        memory: Memory,
        disk: Sequence[Disk],
        network_device: Sequence[NetworkDevice],
        initialization: Initialization,
        machine: str = "q35",
        bios: str = "ovmf",
        efi_disk: EfiDisk | None = None,
        hostpci: Sequence[HostPci] = (),
        agent: Agent | None = None,
        operating_system: OperatingSystem | None = None,
        scsi_hardware: str | None = "virtio-scsi-single",
        on_boot: bool | None = True,
        tags: Sequence[str] = (),
        description: str | None = None,
        stop_on_destroy: bool | None = True,
        reboot_after_update: bool | None = None,
        depends_on: Sequence[Any] | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
        provisioners: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "node_name": node_name,
                "name": name,
                "vm_id": vm_id,
                "description": description,
                # Proxmox stores tags sorted; an unsorted list shows a diff on every plan.
                "tags": sorted(tags) or None,
                "machine": machine,
                "bios": bios,
                "on_boot": on_boot,
                "scsi_hardware": scsi_hardware,
                "stop_on_destroy": stop_on_destroy,
                "reboot_after_update": reboot_after_update,
                "agent": [block(agent)] if agent else None,
                "cpu": [block(cpu)],
                "memory": [block(memory)],
                "efi_disk": [block(efi_disk)] if efi_disk else None,
                "disk": [block(d) for d in disk],
                "network_device": [block(n) for n in network_device],
                "initialization": [block(initialization)],
                "hostpci": [block(h) for h in hostpci] or None,
                "operating_system": [block(operating_system)] if operating_system else None,
            },
            depends_on=depends_on,
            lifecycle=lifecycle,
            provisioners=provisioners,
        )


@dataclass(frozen=True)
class FirewallRule:
    """One rule of ``proxmox_virtual_environment_firewall_rules``."""

    type: str
    action: str
    comment: str | None = None
    source: str | None = None
    proto: str | None = None
    dport: str | None = None


class FirewallOptions(_ProxmoxResource):
    """``proxmox_virtual_environment_firewall_options``: a VM's firewall switch and policies."""

    TYPE = "proxmox_virtual_environment_firewall_options"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        node_name: str,
        vm_id: Any,
        enabled: bool,
        input_policy: str,
        output_policy: str,
        depends_on: Sequence[Any] | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {
                "node_name": node_name,
                "vm_id": vm_id,
                "enabled": enabled,
                "input_policy": input_policy,
                "output_policy": output_policy,
            },
            depends_on=depends_on,
            lifecycle=lifecycle,
        )


class FirewallRules(_ProxmoxResource):
    """``proxmox_virtual_environment_firewall_rules``: a VM's firewall rules, in order."""

    TYPE = "proxmox_virtual_environment_firewall_rules"

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        node_name: str,
        vm_id: Any,
        rule: Sequence[FirewallRule],
        depends_on: Sequence[Any] | None = None,
        lifecycle: TerraformResourceLifecycle | None = None,
    ) -> None:
        super().__init__(
            scope,
            id,
            {"node_name": node_name, "vm_id": vm_id, "rule": [block(r) for r in rule]},
            depends_on=depends_on,
            lifecycle=lifecycle,
        )


# --- Proxmox privileges ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Privilege:
    """One privilege a resource type needs from the provider's Proxmox user or token."""

    resource: str
    """The Terraform resource type."""
    privilege: str
    path: str
    """The ACL path Proxmox checks it on (granting the role on ``/`` covers every one)."""
    operation: str
    source: str
    """Where Proxmox VE checks it: repository, file, API method or function."""


QEMU = "proxmox/qemu-server src/PVE/API2/Qemu.pm"
STORAGE_STATUS = "proxmox/pve-storage src/PVE/API2/Storage/Status.pm"
STORAGE_CONTENT = "proxmox/pve-storage src/PVE/API2/Storage/Content.pm"

FIREWALL = "proxmox/pve-firewall src/PVE/API2/Firewall/VM.pm"

PRIVILEGES: tuple[Privilege, ...] = (
    Privilege(
        FirewallOptions.TYPE,
        "VM.Config.Network",
        "/vms/{vmid}",
        "enable the VM's firewall and set its policies (PUT firewall/options)",
        f"{FIREWALL} set_options",
    ),
    Privilege(
        FirewallOptions.TYPE,
        "VM.Audit",
        "/vms/{vmid}",
        "read the VM's firewall options (GET firewall/options)",
        f"{FIREWALL} get_options",
    ),
    Privilege(
        FirewallRules.TYPE,
        "VM.Config.Network",
        "/vms/{vmid}",
        "create, update and delete the VM's firewall rules",
        "proxmox/pve-firewall src/PVE/Firewall.pm rules_modify_permissions",
    ),
    Privilege(
        FirewallRules.TYPE,
        "VM.Audit",
        "/vms/{vmid}",
        "read the VM's firewall rules",
        "proxmox/pve-firewall src/PVE/Firewall.pm rules_audit_permissions",
    ),
    Privilege(
        DownloadFile.TYPE,
        "Datastore.AllocateTemplate",
        "/storage/{image_datastore}",
        "download the cloud image (POST download-url)",
        f"{STORAGE_STATUS} download_url",
    ),
    Privilege(
        DownloadFile.TYPE,
        "Sys.AccessNetwork",
        "/nodes/{node}",
        "download-url and query-url-metadata probe the host's network (or Sys.Audit and Sys.Modify on /)",
        f"{STORAGE_STATUS} download_url; proxmox/pve-manager PVE/API2/Nodes.pm query_url_metadata",
    ),
    Privilege(
        DownloadFile.TYPE,
        "Datastore.Audit",
        "/storage/{image_datastore}",
        "read the image back (GET content)",
        f"{STORAGE_CONTENT} index",
    ),
    Privilege(
        DownloadFile.TYPE,
        "Datastore.Allocate",
        "/storage/{image_datastore}",
        "delete or replace the image (DELETE content)",
        f"{STORAGE_CONTENT} delete",
    ),
    Privilege(
        File.TYPE,
        "Datastore.Allocate",
        "/storage/{snippets_datastore}",
        "read the datastore's path before the SSH upload (GET /storage/{storage}); delete a snippet",
        "proxmox/pve-storage src/PVE/API2/Storage/Config.pm read; " + f"{STORAGE_CONTENT} delete",
    ),
    Privilege(
        File.TYPE,
        "Datastore.Audit",
        "/storage/{snippets_datastore}",
        "read the snippet back (GET content)",
        f"{STORAGE_CONTENT} index",
    ),
    Privilege(
        HardwareMappingPci.TYPE,
        "Mapping.Modify",
        "/mapping/pci",
        "create, update, read and delete the PCI resource mappings",
        "proxmox/pve-manager PVE/API2/Cluster/Mapping/PCI.pm create, update, get, delete",
    ),
    Privilege(
        Vm.TYPE, "VM.Allocate", "/vms/{vmid}", "create and destroy the VM", f"{QEMU} create_vm, destroy_vm"
    ),
    Privilege(
        Vm.TYPE,
        "VM.Audit",
        "/vms/{vmid}",
        "read config and status; find the VM's node (GET /cluster/resources lists only VMs with it)",
        f"{QEMU} vm_config, vm_status; proxmox/pve-manager PVE/API2/Cluster.pm resources",
    ),
    Privilege(
        Vm.TYPE,
        "VM.Config.CPU",
        "/vms/{vmid}",
        "cpu cores, type, numa",
        f"{QEMU} check_vm_modify_config_perm",
    ),
    Privilege(Vm.TYPE, "VM.Config.Memory", "/vms/{vmid}", "memory", f"{QEMU} check_vm_modify_config_perm"),
    Privilege(
        Vm.TYPE,
        "VM.Config.Disk",
        "/vms/{vmid}",
        "grow the imported disk, change disks",
        f"{QEMU} resize_vm, check_vm_modify_config_perm",
    ),
    Privilege(Vm.TYPE, "VM.Config.Network", "/vms/{vmid}", "net0", f"{QEMU} check_vm_modify_config_perm"),
    Privilege(
        Vm.TYPE,
        "VM.Config.HWType",
        "/vms/{vmid}",
        "machine, bios, scsihw, hostpci with a mapping",
        f"{QEMU} check_vm_modify_config_perm, check_hostpci_perm",
    ),
    Privilege(
        Vm.TYPE,
        "VM.Config.Options",
        "/vms/{vmid}",
        "name, description, tags, onboot, ostype, agent",
        f"{QEMU} check_vm_modify_config_perm",
    ),
    Privilege(
        Vm.TYPE,
        "VM.Config.Cloudinit",
        "/vms/{vmid}",
        "cicustom (the snippet), ipconfig0, nameserver",
        f"{QEMU} check_vm_modify_config_perm",
    ),
    Privilege(
        Vm.TYPE,
        "VM.Config.CDROM",
        "/vms/{vmid}",
        "re-add or move the cloud-init drive (ide2) on an update: a changed initialization datastore, "
        "or a drive that went missing",
        f"{QEMU} update_vm (a cloud-init drive needs VM.Config.Cloudinit and VM.Config.CDROM)",
    ),
    Privilege(
        Vm.TYPE,
        "VM.PowerMgmt",
        "/vms/{vmid}",
        "start after create, reboot after an update, stop before destroy",
        f"{QEMU} vm_start, vm_reboot, vm_stop",
    ),
    Privilege(
        Vm.TYPE,
        "VM.GuestAgent.Audit",
        "/vms/{vmid}",
        "read the guest's addresses through the agent (VM.Monitor before qemu-server 9.0.3, PVE 8)",
        "proxmox/qemu-server src/PVE/API2/Qemu/Agent.pm network-get-interfaces",
    ),
    Privilege(
        Vm.TYPE,
        "Mapping.Use",
        "/mapping/pci/{mapping}",
        "hostpci entries that name a PCI resource mapping",
        f"{QEMU} check_hostpci_perm",
    ),
    Privilege(
        Vm.TYPE,
        "Datastore.AllocateSpace",
        "/storage/{vm_datastore}",
        "the OS, scratch, EFI and cloud-init disks",
        f"{QEMU} check_storage_access",
    ),
    Privilege(
        Vm.TYPE,
        "Datastore.Audit",
        "/storage/{image_datastore}",
        "import_from the downloaded image (an 'import' volume: Datastore.Audit or AllocateSpace)",
        "proxmox/pve-storage src/PVE/Storage.pm check_volume_access",
    ),
    Privilege(
        Vm.TYPE,
        "SDN.Use",
        "/sdn/zones/localnetwork/{bridge}",
        "net0 on the bridge",
        "proxmox/qemu-server src/PVE/QemuServer.pm check_bridge_access (pve-guest-common check_vnet_access)",
    ),
)
"""The privileges each resource type of the proxmox-ha stack needs, as Proxmox VE 9's API checks
them (qemu-server 9.2, pve-storage 9.1, pve-manager 9). Snippets are uploaded over SSH as root
(the provider's ``ssh`` block), not through the API; hugepages and CPU affinity are root@pam's only."""

PVE8_RENAMED = {"VM.GuestAgent.Audit": "VM.Monitor"}
"""Privileges Proxmox VE 8 names otherwise (qemu-server 9.0.3 split VM.Monitor)."""


def role_privileges(pve_major: int = 9) -> list[str]:
    """The union of PRIVILEGES, sorted, as Proxmox VE ``pve_major`` names them."""
    names = {row.privilege for row in PRIVILEGES}
    if pve_major < 9:
        names = {PVE8_RENAMED.get(name, name) for name in names}
    return sorted(names)


def pveum_role_add(role: str = "TerraformProxmoxHa", pve_major: int = 9) -> str:
    """The ``pveum role add`` command of a role with every privilege the stack needs."""
    return f'pveum role add {role} --privs "{",".join(role_privileges(pve_major))}"'
