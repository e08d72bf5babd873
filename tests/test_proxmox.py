"""proxmox-ha: VMs and passthrough, k3s HA by cloud-init, the cluster layer, and bad input."""

from __future__ import annotations

import json

import cdktf
import pytest
import yaml
from syrupy.extensions.json import JSONSnapshotExtension

from environments import Instance
from gpu_constructs.compute.proxmox import ProxmoxProps, kube_vip_manifests
from gpu_constructs.errors import ConfigError
from tests.conftest import by_kind, manifests_of, release_values, resources
from tests.validators import validate_manifest


def synth(**overrides) -> dict:
    return json.loads(
        cdktf.Testing.synth(Instance("proxmox-ha", "proxmox-ha", overrides).build(cdktf.Testing.app()))
    )


@pytest.fixture(scope="module")
def stack_json() -> dict:
    return synth()


def vms(stack_json) -> dict[str, dict]:
    return {vm["name"]: vm for vm in resources(stack_json, "proxmox_virtual_environment_vm").values()}


def user_data(stack_json, name) -> dict:
    (snippet,) = [
        f
        for f in resources(stack_json, "proxmox_virtual_environment_file").values()
        if f["source_raw"][0]["file_name"] == f"{name}-user-data.yaml"
    ]
    text = snippet["source_raw"][0]["data"]
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def k3s_config(stack_json, name) -> dict:
    files = {f["path"]: f for f in user_data(stack_json, name)["write_files"]}
    return yaml.safe_load(files["/etc/rancher/k3s/config.yaml"]["content"])


def releases(stack_json):
    return {r["name"]: r for r in resources(stack_json, "helm_release").values()}


def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_vm_layout_as_the_seed(stack_json):
    machines = vms(stack_json)
    assert sorted(machines) == ["cp1", "cp2", "cp3", "wk-gpu1", "wk-gpu2", "wk-gpu3", "wk-gpu4"]
    cp = machines["cp1"]
    assert cp["cpu"] == [{"cores": 4, "type": "host"}] and cp["memory"] == [{"dedicated": 16384}]
    assert [d["size"] for d in cp["disk"]] == [100]
    assert (cp["machine"], cp["bios"]) == ("q35", "ovmf")
    wk = machines["wk-gpu3"]
    assert wk["cpu"] == [{"cores": 16, "type": "host"}] and wk["memory"] == [{"dedicated": 131072}]
    assert [d["size"] for d in wk["disk"]] == [500, 1024]
    assert wk["initialization"][0]["ip_config"] == [
        {"ipv4": [{"address": "10.0.0.23/24", "gateway": "10.0.0.1"}]}
    ]
    assert [h["device"] for h in wk["hostpci"]] == ["hostpci0", "hostpci1"]
    assert all(
        h["mapping"].startswith("${proxmox_virtual_environment_hardware_mapping_pci.") for h in wk["hostpci"]
    )
    assert "hostpci" not in cp


def test_every_gpu_is_a_resource_mapping(stack_json):
    mappings = list(resources(stack_json, "proxmox_virtual_environment_hardware_mapping_pci").values())
    assert len(mappings) == 8
    assert mappings[0]["map"][0]["id"] == "10de:20f1"
    assert mappings[0]["map"][0]["path"] == "${element(var.gpu_pci_paths, 0)}"


def test_k3s_ha_by_cloud_init(stack_json):
    first = k3s_config(stack_json, "cp1")
    assert first["cluster-init"] is True and "server" not in first
    assert (first["cluster-cidr"], first["service-cidr"]) == ("10.42.0.0/16", "10.43.0.0/16")
    assert first["token"] == "${var.k3s_token}"
    assert k3s_config(stack_json, "cp2")["server"] == "https://10.0.0.11:6443"
    worker = k3s_config(stack_json, "wk-gpu1")
    assert worker["node-label"] == ["nvidia.com/gpu=true"] and worker["node-taint"] == [
        "nvidia.com/gpu=true:NoSchedule"
    ]
    data = user_data(stack_json, "wk-gpu1")
    assert data["mounts"] == [["LABEL=scratch", "/mnt/scratch", "ext4", "defaults,nofail", "0", "2"]]
    assert "INSTALL_K3S_EXEC='agent'" in data["runcmd"][-1] and "v1.33.4+k3s1" in data["runcmd"][-1]


def test_ansible_inventory_output(stack_json):
    inventory = yaml.safe_load(stack_json["output"]["ansible_inventory"]["value"])
    assert inventory["all"]["children"]["gpu_workers"]["hosts"]["wk-gpu4"] == {"ansible_host": "10.0.0.24"}


def test_storage_nfs_default_and_nvme_scratch(stack_json):
    nfs = release_values(releases(stack_json)["nfs-subdir-external-provisioner"])
    assert nfs["nfs"] == {"server": "10.0.0.30", "path": "/export/k3s"}
    assert nfs["storageClass"]["defaultClass"] is True
    (scratch,) = manifests_of(releases(stack_json)["storage-classes"])
    assert scratch["metadata"]["name"] == "fast-scratch" and scratch["parameters"] == {
        "nodePath": "/mnt/scratch"
    }


def test_gpu_operator_manages_driver_and_toolkit_with_k3s_paths(stack_json):
    values = release_values(releases(stack_json)["gpu-operator"])
    assert values["driver"] == {"enabled": True}
    env = {e["name"]: e["value"] for e in values["toolkit"]["env"]}
    assert env["CONTAINERD_SOCKET"] == "/run/k3s/containerd/containerd.sock"


def test_rancher_and_fleet_gitrepo(stack_json, upstream):
    rancher = release_values(releases(stack_json)["rancher"])
    assert rancher["replicas"] == 3 and rancher["hostname"] == "${var.rancher_hostname}"
    gitrepo_release = releases(stack_json)["cluster-maintenance"]
    (gitrepo,) = by_kind(manifests_of(gitrepo_release), "GitRepo")
    assert gitrepo["spec"]["repo"] == "${var.fleet_repo_url}"
    assert gitrepo_release["set_list"] == [{"name": "manifests[0].spec.paths", "value": "${var.fleet_paths}"}]
    validate_manifest(gitrepo, upstream)


def test_jupyterhub_profiles_fit_the_workers(stack_json):
    profiles = release_values(releases(stack_json)["jupyterhub"])["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == ["gpu-0", "gpu-1", "gpu-2"]


def test_a_4_gpu_profile_needs_4_gpu_workers():
    with pytest.raises(ConfigError, match=r"'gpu_profiles' is 4: a pod asking for 4 GPUs never schedules"):
        synth(jupyter_gpu_profiles=(0, 1, 2, 4))
    four = synth(jupyter_gpu_profiles=(0, 1, 2, 4), gpus_per_worker=4, worker_ips=("10.0.0.21", "10.0.0.22"))
    assert len(vms(four)) == 5


def test_kube_vip_when_asked(upstream):
    for manifest in kube_vip_manifests("10.0.0.100"):
        validate_manifest(manifest, upstream)
    stack = synth(api_vip="10.0.0.100")
    files = {f["path"] for f in user_data(stack, "cp1")["write_files"]}
    assert "/var/lib/rancher/k3s/server/manifests/kube-vip.yaml" in files
    assert k3s_config(stack, "wk-gpu1")["server"] == "https://10.0.0.100:6443"


def props(**overrides) -> ProxmoxProps:
    fields = {
        "k3s_token": "${var.t}",
        "ssh_public_key": "${var.k}",
        "ssh_private_key_path": "~/.ssh/id",
        "gpu_pci_paths": ["${var.p}"],
        "kubeconfig_path": "k",
    }
    fields.update(overrides)
    return ProxmoxProps(**fields)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"control_plane_ips": ("10.0.0.11", "10.0.0.12")},
            r"'control_plane_count' is 2: k3s embedded etcd needs an odd count of at least 3 for HA",
        ),
        (
            {"control_plane_ips": ("10.0.0.11",)},
            r"'control_plane_count' is 1: k3s embedded etcd needs an odd count",
        ),
        (
            {"gpus_per_worker": 3},
            r"'gpus_per_worker' is 3: 4 workers x 3 GPUs need 12 passthrough GPUs but the host has 8",
        ),
        ({"gpus_per_worker": 0}, r"'gpus_per_worker' is 0: every GPU worker needs at least one GPU mapping"),
        (
            {"worker_ips": ("10.0.0.21", "10.0.0.11")},
            r"'worker_ips\[1\]' is '10.0.0.11': it is already used by control_plane_ips\[0\]",
        ),
        (
            {"worker_ips": ("10.0.1.21",)},
            r"'worker_ips\[0\]' is '10.0.1.21': use an address inside 10.0.0.0/24",
        ),
        ({"api_vip": "10.0.0.1"}, r"'api_vip' is '10.0.0.1': it is already used by gateway"),
        (
            {"cluster_cidr": "10.0.0.0/16"},
            r"'cluster_cidr' is '10.0.0.0/16': keep pod and service CIDRs out of 10.0.0.0/24",
        ),
    ],
)
def test_bad_layout_fails_with_field_value_and_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)
