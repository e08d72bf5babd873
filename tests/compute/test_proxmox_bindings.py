"""The hand-written bpg/proxmox bindings emit only arguments their reference pages document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cdktf
import pytest
from cdktf import TerraformResourceLifecycle, TerraformStack

import main
from gpu_constructs.compute.proxmox.bindings import (
    Agent,
    Cpu,
    Disk,
    Dns,
    DownloadFile,
    EfiDisk,
    File,
    HardwareMappingPci,
    HostPci,
    Initialization,
    IpConfig,
    Ipv4,
    Memory,
    NetworkDevice,
    OperatingSystem,
    PciMap,
    ProviderSsh,
    ProxmoxProvider,
    SourceRaw,
    Vm,
)
from tests.support.validators import argument_keys


def documented(upstream: Path, page: str) -> set[str]:
    """Every argument name of a reference page: ``- `name` -`` (SDK pages) or ``- `name` (Type)`` (framework)."""
    text = (upstream / "provider-docs" / "proxmox" / page).read_text()
    text = re.split(r"^## Attribute", text, flags=re.M)[0]
    return set(re.findall(r"^\s*- `([a-z0-9_]+)`", text, re.M))


@pytest.fixture(scope="module")
def synthesized() -> dict:
    stack = TerraformStack(cdktf.Testing.app(), "bindings")
    ProxmoxProvider(
        stack,
        "proxmox",
        endpoint="https://pve:8006/",
        api_token="${var.token}",
        ssh=ProviderSsh(agent=True, username="root"),
    )
    image = DownloadFile(
        stack,
        "image",
        node_name="pve",
        datastore_id="local",
        content_type="import",
        url="https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img",
        file_name="noble.qcow2",
    )
    snippet = File(
        stack,
        "user-data",
        node_name="pve",
        datastore_id="local",
        content_type="snippets",
        source_raw=SourceRaw("#cloud-config\n", "cp1.yaml"),
    )
    gpu = HardwareMappingPci(
        stack,
        "gpu0",
        name="gpu0",
        map=[
            PciMap(id="10de:20f1", node="pve", path="0000:41:00.0", iommu_group=32, subsystem_id="10de:145f")
        ],
    )
    Vm(
        stack, "vm", node_name="pve", name="wk-gpu1", vm_id=221,
        cpu=Cpu(cores=16, numa=True, affinity="0-15"),
        memory=Memory(dedicated=131072, hugepages="1024", keep_hugepages=True),
        efi_disk=EfiDisk(datastore_id="local-lvm"),
        disk=[Disk("scsi0", "local-lvm", 500, import_from=image.id_ref), Disk("scsi1", "local-lvm", 1024, ssd=True)],
        network_device=[NetworkDevice()],
        initialization=Initialization(
            "local-lvm", [IpConfig(Ipv4("10.0.0.21/24", "10.0.0.1"))], snippet.id_ref, Dns(["10.0.0.1"])
        ),
        tags=["k3s", "gpu"], lifecycle=TerraformResourceLifecycle(ignore_changes=["initialization[0].user_data_file_id"]),
        hostpci=[HostPci("hostpci0", gpu.get_string_attribute("name"))],
        agent=Agent(enabled=True), operating_system=OperatingSystem(), reboot_after_update=False,
    )  # fmt: skip
    return json.loads(cdktf.Testing.synth(stack))


@pytest.mark.parametrize(
    ("kind", "page", "required"),
    [
        ("proxmox_virtual_environment_vm", "virtual_environment_vm.md", {"node_name"}),
        ("proxmox_virtual_environment_file", "virtual_environment_file.md", {"node_name", "datastore_id"}),
        (
            "proxmox_virtual_environment_download_file",
            "virtual_environment_download_file.md",
            {"content_type", "datastore_id", "node_name", "url"},
        ),
        (
            "proxmox_virtual_environment_hardware_mapping_pci",
            "virtual_environment_hardware_mapping_pci.md",
            {"map", "name"},
        ),
    ],
)
def test_resources_emit_only_documented_arguments(synthesized, upstream, kind, page, required):
    (body,) = synthesized["resource"][kind].values()
    assert argument_keys(body) <= documented(upstream, page)
    assert required <= set(body)


def test_provider_block(synthesized, upstream):
    assert synthesized["terraform"]["required_providers"]["proxmox"] == {
        "source": "bpg/proxmox",
        "version": "0.111.1",
    }
    (provider,) = synthesized["provider"]["proxmox"]
    assert argument_keys(provider) <= documented(upstream, "index.md")
    assert provider["api_token"] == "${var.token}"


def test_password_login_for_root_pam(upstream):
    stack = TerraformStack(cdktf.Testing.app(), "root")
    ProxmoxProvider(stack, "proxmox", endpoint="https://pve:8006/", username="root@pam", password="${var.pw}")
    (provider,) = json.loads(cdktf.Testing.synth(stack))["provider"]["proxmox"]
    assert provider == {"endpoint": "https://pve:8006/", "username": "root@pam", "password": "${var.pw}"}
    assert set(provider) <= documented(upstream, "index.md")


def test_vm_blocks_are_terraform_blocks(synthesized):
    (vm,) = synthesized["resource"]["proxmox_virtual_environment_vm"].values()
    assert vm["cpu"] == [{"cores": 16, "type": "host", "numa": True, "affinity": "0-15"}]
    assert vm["tags"] == ["gpu", "k3s"]
    assert vm["lifecycle"] == {"ignore_changes": ["initialization[0].user_data_file_id"]}
    assert vm["initialization"][0]["dns"] == [{"servers": ["10.0.0.1"]}]
    (gpu,) = synthesized["resource"]["proxmox_virtual_environment_hardware_mapping_pci"].values()
    assert gpu["map"] == [
        {
            "id": "10de:20f1",
            "node": "pve",
            "path": "0000:41:00.0",
            "iommu_group": 32,
            "subsystem_id": "10de:145f",
        }
    ]
    assert vm["hostpci"] == [
        {
            "device": "hostpci0",
            "mapping": "${proxmox_virtual_environment_hardware_mapping_pci.gpu0.name}",
            "pcie": True,
            "rombar": True,
        }
    ]
    assert (vm["machine"], vm["bios"]) == ("q35", "ovmf")
    assert vm["reboot_after_update"] is False
    assert vm["disk"][0]["import_from"].startswith("${proxmox_virtual_environment_download_file.image")


# What bpg/proxmox v0.111.1 sends to Proxmox for a hostpci attribute left unset: the SDK hands an
# unset bool over as false and vmGetHostPCIDeviceObjects (proxmoxtf/resource/vm/vm.go) always puts
# pcie, rombar and x-vga into the device string (proxmox/nodes/vms/custom_pci_device.go encodes
# false as "rombar=0"); unset strings are left out, so Proxmox's own default applies. ``None``:
# nothing is sent.
SENT_WHEN_UNSET: dict[str, object] = {
    "device": None,
    "id": None,
    "mapping": None,
    "mdev": None,
    "pcie": False,
    "rombar": False,
    "rom_file": None,
    "xvga": False,
}


def hostpci_defaults(upstream: Path) -> dict[str, object]:
    """Each ``hostpci`` sub-argument of the VM page, with its documented default (None: none given)."""
    text = (upstream / "provider-docs" / "proxmox" / "virtual_environment_vm.md").read_text()
    block = re.search(r"^- `hostpci` .*?\n((?:    .*\n)+)", text, re.M)
    assert block, "the VM page has no hostpci block"
    found: dict[str, object] = {}
    for name, body in re.findall(r"^    - `([a-z_]+)` (.*?)(?=^    - |\Z)", block.group(1), re.M | re.S):
        default = re.search(r"defaults\s+to\s+`([^`]+)`", body)
        found[name] = None if default is None else {"true": True, "false": False}.get(default[1], default[1])
    return found


def test_hostpci_sets_every_attribute_whose_default_the_provider_does_not_send(synthesized, upstream):
    """The VM page says rombar defaults to true, but the provider sends rombar=0 when it is unset:
    each such attribute must be set explicitly, in the bindings and in the proxmox-ha stack."""
    documented_defaults = hostpci_defaults(upstream)
    assert set(documented_defaults) == set(SENT_WHEN_UNSET), "the hostpci block changed: update the model"
    differing = {
        name: default
        for name, default in documented_defaults.items()
        if default is not None and SENT_WHEN_UNSET[name] != default
    }
    assert differing == {"rombar": True}
    blocks = list(synthesized["resource"]["proxmox_virtual_environment_vm"]["vm"]["hostpci"])
    for instance in main.INSTANCES:
        if instance.environment == "proxmox-ha":
            stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
            for vm in stack["resource"]["proxmox_virtual_environment_vm"].values():
                blocks += vm.get("hostpci", [])
    assert len(blocks) > 8
    for hostpci in blocks:
        for name, default in differing.items():
            assert hostpci.get(name) == default, (hostpci["device"], name)
