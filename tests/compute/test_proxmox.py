"""proxmox-ha: VMs and passthrough, k3s HA by cloud-init, the cluster layer, and bad input."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import cdktf
import pytest
import yaml
from syrupy.extensions.json import JSONSnapshotExtension

import main
from environments import Instance
from gpu_constructs.compute.k3s.etcd import CONFIG_SECRET, EtcdS3, EtcdSnapshots
from gpu_constructs.compute.proxmox import (
    CLOUD_INIT_INPUTS,
    GpuDevice,
    ProxmoxProps,
    SshHostKey,
)
from gpu_constructs.compute.proxmox.bindings import PRIVILEGES, pveum_role_add
from gpu_constructs.compute.proxmox.cloudinit import kube_vip_manifests
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import negotiated_host_key_expression
from tests.conftest import (
    ON_ENGINE,
    by_kind,
    manifests_of,
    plan_variables,
    release_values,
    resources,
    variables_workdir,
)
from tests.support.host import Host
from tests.support.validators import validate_manifest

(MAIN,) = [instance for instance in main.INSTANCES if instance.stack == "proxmox-ha"]


def synth(**overrides) -> dict:
    """The proxmox-ha stack of main.py (its datastores), with ``overrides``."""
    instance = Instance("proxmox-ha", "proxmox-ha", {**MAIN.overrides, **overrides})
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))


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


@ON_ENGINE["cdktf"]
def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


@ON_ENGINE["cdktn"]
def test_snapshot_cdktn(stack_json, snapshot):
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


@pytest.fixture(scope="module")
def every_stack() -> dict[str, dict]:
    """Every proxmox-ha instance of main.py, synthesized."""
    return {
        instance.stack: json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
        for instance in main.INSTANCES
        if instance.environment == "proxmox-ha"
    }


def test_every_gpu_mapping_is_complete(every_stack):
    """Proxmox refuses to start a VM whose mapping lacks the IOMMU group ("missing expected property
    'iommugroup'") or whose subsystem id differs from the device's ("PCI device mapping invalid")."""
    assert every_stack
    for stack_json in every_stack.values():
        mappings = list(resources(stack_json, "proxmox_virtual_environment_hardware_mapping_pci").values())
        assert len(mappings) == 8
        for index, mapping in enumerate(mappings):
            (entry,) = mapping["map"]
            assert entry == {
                "id": f"${{var.gpu_devices[{index}].id}}",
                "node": "pve",
                "path": f"${{var.gpu_devices[{index}].path}}",
                "iommu_group": f"${{var.gpu_devices[{index}].iommu_group}}",
                "subsystem_id": f"${{var.gpu_devices[{index}].subsystem_id}}",
            }


def vm_references(node, path=""):
    """(attribute path, value) of every string in a VM body, with Terraform's index syntax."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from vm_references(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from vm_references(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def test_cloud_init_inputs_are_ignored_on_running_vms(every_stack):
    """bpg/proxmox replaces a VM when user_data_file_id changes (ForceNew), and a snippet whose
    content changes is replaced, making the id unknown: every VM argument that refers to a snippet
    must be in ignore_changes, or one token change recreates every node, all etcd members at once."""
    for stack_json in every_stack.values():
        for vm in resources(stack_json, "proxmox_virtual_environment_vm").values():
            ignored = vm["lifecycle"]["ignore_changes"]
            from_snippets = [
                path
                for path, value in vm_references({k: v for k, v in vm.items() if k != "lifecycle"})
                if "proxmox_virtual_environment_file." in value
            ]
            assert from_snippets and set(from_snippets) <= set(ignored), vm["name"]
            assert set(ignored) == set(CLOUD_INIT_INPUTS)


def test_every_argument_that_reaches_the_guest_through_cloud_init_is_ignored(every_stack):
    """The binding's own list of initialization arguments: all but the drive's datastore reach
    the guest only through cloud-init, which a running VM never re-applies (fixed instance-id);
    a new argument cannot be missed."""
    from dataclasses import fields

    from gpu_constructs.compute.proxmox.bindings import Initialization

    guest_only = {f"initialization[0].{f.name}" for f in fields(Initialization)} - {
        "initialization[0].datastore_id"
    }
    for stack_json in every_stack.values():
        for vm in vms(stack_json).values():
            assert guest_only <= set(vm["lifecycle"]["ignore_changes"]), vm["name"]


def test_a_network_change_is_refused_at_plan_until_the_node_is_rebuilt(tmp_path):
    """With ip_config and dns ignored, the postcondition compares what the VM was built with
    (its state) with the settings: Terraform itself, on a state holding an old address."""
    from tests.conftest import terraform_binary

    vm = vms(synth())["wk-gpu1"]
    (condition,) = vm["lifecycle"]["postcondition"]
    assert "10.0.0.21/24" in condition["condition"] and "node by node" in condition["error_message"]
    terraform = terraform_binary()

    def network(address: str) -> dict:
        ipv4 = [{"address": address, "gateway": "10.0.0.1"}]
        return {"initialization": [{"ip_config": [{"ipv4": ipv4}], "dns": [{"servers": ["10.0.0.1"]}]}]}

    def run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [terraform, *args, "-input=false", "-no-color"], cwd=directory, capture_output=True, text=True
        )

    results = {}
    for built_with in ("10.0.0.21/24", "10.0.0.99/24"):
        directory = tmp_path / built_with.replace("/", "_")
        directory.mkdir()
        config = {"resource": {"terraform_data": {"vm": {"input": network(built_with)}}}}
        (directory / "main.tf.json").write_text(json.dumps(config))
        assert run(directory, "apply", "-auto-approve").returncode == 0
        # the stack now: the configured address, ignored on the built VM, and the postcondition
        config["resource"]["terraform_data"]["vm"] = {
            "input": network("10.0.0.21/24"),
            "lifecycle": {
                "ignore_changes": ["input"],
                "postcondition": [
                    {
                        "condition": condition["condition"].replace("self.", "self.output."),
                        "error_message": condition["error_message"],
                    }
                ],
            },
        }
        (directory / "main.tf.json").write_text(json.dumps(config))
        results[built_with] = run(directory, "plan")
    assert results["10.0.0.21/24"].returncode == 0, results["10.0.0.21/24"].stderr
    refused = results["10.0.0.99/24"]
    assert refused.returncode != 0 and "wk-gpu1 was built with another address" in " ".join(
        refused.stderr.split()
    )


def test_a_server_vm_cannot_be_replaced_or_destroyed_unless_asked(tmp_path):
    """A rebuilt cp1 starts a new, empty cluster while cp2, cp3 and the workers stay in the old
    one: every server VM carries prevent_destroy, which Terraform itself enforces at plan for a
    -replace (here on a stand-in with the VM's lifecycle), before any release is uninstalled."""
    from tests.conftest import terraform_binary

    for stack_json in (synth(), synth(api_vip="10.0.0.101")):
        machines = vms(stack_json)
        for name, vm in machines.items():
            assert vm["lifecycle"].get("prevent_destroy") is (True if name.startswith("cp") else None), name
    unprotected = vms(synth(protect_control_plane=False))
    assert all("prevent_destroy" not in vm["lifecycle"] for vm in unprotected.values())

    terraform = terraform_binary()
    lifecycle = {k: v for k, v in vms(synth())["cp1"]["lifecycle"].items() if k == "prevent_destroy"}
    (tmp_path / "main.tf.json").write_text(
        json.dumps({"resource": {"terraform_data": {"cp1": {"input": "cp1", "lifecycle": lifecycle}}}})
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [terraform, *args, "-input=false", "-no-color"], cwd=tmp_path, capture_output=True, text=True
        )

    assert run("apply", "-auto-approve").returncode == 0
    refused = run("plan", "-replace=terraform_data.cp1")
    assert refused.returncode != 0 and "Instance cannot be destroyed" in refused.stderr
    assert "protect_control_plane" in page_section("Teardown")


def test_a_new_gateway_or_dns_server_has_an_in_place_way_out(stack_json):
    """With the postcondition, a new DNS server fails every plan until each VM's read-back network
    matches, and cp1 cannot be rebuilt: the page gives the in-place change (Proxmox config, which
    the provider reads back, and the guest's netplan), and every VM's message points to it. That a
    plan passes once the VM's state holds the configured values is
    test_a_network_change_is_refused_at_plan_until_the_node_is_rebuilt's first case."""
    for name, vm in vms(stack_json).items():
        (condition,) = vm["lifecycle"]["postcondition"]
        assert "A new gateway or DNS server, in place" in condition["error_message"], name
        assert "never cp1" in condition["error_message"]
    section = " ".join(page_section("Changing cloud-init inputs: node by node").split())
    in_place = section.split("### A new gateway or DNS server, in place", 1)[1]
    for step in (
        "qm set 211 --nameserver",
        "--ipconfig0",
        "/etc/netplan/50-cloud-init.yaml",
        "netplan apply",
    ):
        assert step in in_place, step
    assert "cp1 included" in in_place


def test_a_cloud_init_change_leaves_the_vms_as_they_are(stack_json):
    changed = synth(api_vip="10.0.0.101", etcd_snapshot_retention=10)
    assert resources(changed, "proxmox_virtual_environment_vm") == resources(
        stack_json, "proxmox_virtual_environment_vm"
    )
    assert k3s_config(changed, "cp2") != k3s_config(stack_json, "cp2")


def snippet_data(stack_json, file_name) -> str:
    (snippet,) = [
        f
        for f in resources(stack_json, "proxmox_virtual_environment_file").values()
        if f["source_raw"][0]["file_name"] == file_name
    ]
    return snippet["source_raw"][0]["data"]


def test_every_vm_keeps_its_instance_id_when_the_user_data_changes(stack_json):
    """Proxmox rebuilds the cloud-init drive at each start; without a meta-data file the instance-id
    is sha1(user-data . network-config) (qemu-server Cloudinit.pm), so an edited snippet re-runs
    cloud-init on every VM at its next start. Each VM names a meta-data snippet whose instance-id
    depends on the VM alone."""
    changed = synth(api_vip="10.0.0.101", etcd_snapshot_retention=10)
    files = {
        f["source_raw"][0]["file_name"]: key
        for key, f in resources(stack_json, "proxmox_virtual_environment_file").items()
    }
    ids = set()
    for name, vm in vms(stack_json).items():
        init = vm["initialization"][0]
        assert init["meta_data_file_id"] == (
            f"${{proxmox_virtual_environment_file.{files[f'{name}-meta-data.yaml']}.id}}"
        )
        meta = yaml.safe_load(snippet_data(stack_json, f"{name}-meta-data.yaml"))
        assert meta == {"instance-id": f"{name}-{vm['vm_id']}", "local-hostname": name}
        ids.add(meta["instance-id"])
        assert snippet_data(changed, f"{name}-meta-data.yaml") == snippet_data(
            stack_json, f"{name}-meta-data.yaml"
        )
        assert snippet_data(changed, f"{name}-user-data.yaml") != snippet_data(
            stack_json, f"{name}-user-data.yaml"
        )
    assert len(ids) == 7


def fill_in(template: str, values: dict) -> str:
    """``template`` with its ``${...}`` references filled in as Terraform does: ``var.X`` (or
    ``var.X[i]``) raw, ``jsonencode(...)`` as a JSON string, ``base64encode(...)`` as base64."""

    def value(reference: str):
        name, index = re.fullmatch(r"var\.([a-z0-9_]+)(?:\[(\d+)\])?", reference).groups()
        return values[name] if index is None else values[name][int(index)]

    def one(match: re.Match) -> str:
        inner = match.group(1)
        if call := re.fullmatch(r"(jsonencode|base64encode)\((.*)\)", inner):
            text = value(call.group(2))
            return (
                json.dumps(text)
                if call.group(1) == "jsonencode"
                else base64.b64encode(text.encode()).decode()
            )
        return value(inner)

    return re.sub(r"\$\{([^{}]+)\}", one, template)


@pytest.mark.parametrize(
    "comment", ["ops: laptop", "it's #1 - really", "&anchor *ref !tag", 'say "hi" \\ back', "{a: [b]}"]
)
def test_the_user_data_stays_yaml_whatever_key_comment_the_validation_admits(stack_json, comment):
    """cloud-init skips a #cloud-config it cannot parse: the user data must load, with the key
    intact, for every value the variables' validations accept (ssh_public_key's comment is free
    text), once Terraform has filled them in."""
    key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0 {comment}"
    assert re.fullmatch(
        r"(ssh-(ed25519|rsa)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*( [^\n]*)?", key
    )
    values = {
        "ssh_public_key": key,
        "k3s_token": "a" * 32,
        "k3s_agent_token": "b" * 32,
        "vm_ssh_host_keys": [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n}" for n in range(7)],
        "vm_ssh_host_private_keys": [
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n"
        ]
        * 7,
    }
    for snippet in resources(stack_json, "proxmox_virtual_environment_file").values():
        if not snippet["source_raw"][0]["file_name"].endswith("-user-data.yaml"):
            continue
        document = yaml.safe_load(fill_in(snippet["source_raw"][0]["data"], values))
        (user,) = document["users"]
        assert user["ssh_authorized_keys"] == [key], snippet["source_raw"][0]["file_name"]
        files = {f["path"]: f for f in document["write_files"]}
        assert yaml.safe_load(files["/etc/rancher/k3s/config.yaml"]["content"])["token"] in (
            "a" * 32,
            "b" * 32,
        )


def test_tags_are_sorted_and_dns_servers_used(every_stack):
    for stack_json in every_stack.values():
        for vm in resources(stack_json, "proxmox_virtual_environment_vm").values():
            assert vm["tags"] == sorted(vm["tags"]), vm["name"]
            assert vm["initialization"][0]["dns"] == [{"servers": ["10.0.0.1"]}]
    custom = synth(dns_servers=("10.0.0.1", "9.9.9.9"))
    assert {
        tuple(vm["initialization"][0]["dns"][0]["servers"])
        for vm in resources(custom, "proxmox_virtual_environment_vm").values()
    } == {("10.0.0.1", "9.9.9.9")}


@pytest.mark.parametrize("flag", ["hugepages", "cpu_pinning"])
def test_hugepages_and_pinning_need_root_pam(flag):
    with pytest.raises(
        ConfigError, match=rf"'{flag}' is True: Proxmox allows hugepages and CPU affinity only"
    ):
        synth(**{flag: True})


def test_hugepages_and_pinning_with_root_pam_set_numa(upstream):
    stack = synth(hugepages=True, cpu_pinning=True, root_auth=True)
    (provider,) = stack["provider"]["proxmox"]
    assert provider["username"] == "root@pam" and provider["password"] == "${var.proxmox_root_password}"
    assert "api_token" not in provider and "proxmox_api_token" not in stack["variable"]
    assert stack["variable"]["proxmox_root_password"]["sensitive"] is True
    machines = vms(stack)
    assert machines["wk-gpu1"]["cpu"] == [{"cores": 16, "type": "host", "numa": True, "affinity": "12-27"}]
    assert machines["wk-gpu4"]["cpu"][0]["affinity"] == "60-75"
    assert machines["wk-gpu1"]["memory"] == [
        {"dedicated": 131072, "hugepages": "1024", "keep_hugepages": True}
    ]
    assert "numa" not in machines["cp1"]["cpu"][0]
    with pytest.raises(ConfigError, match=r"'cpu_pinning' is True: pinning needs host cores up to 75"):
        synth(cpu_pinning=True, root_auth=True, host_cpus=64)


def test_etcd_snapshots_scheduled_and_sent_to_s3(stack_json):
    """The servers' config is cloud-init user data, which Terraform's state and Proxmox's snippet
    storage keep: it names k3s' etcd-s3-config-secret and nothing else of S3 (k3s ignores the Secret
    when any other etcd-s3-* setting is given, pkg/etcd/s3/s3.go), and the target and keys reach
    kube-system through the step's uploaded secrets file."""
    for name in ("cp1", "cp2", "cp3"):
        config = k3s_config(stack_json, name)
        assert config["etcd-snapshot-schedule-cron"] == "0 */6 * * *"
        assert config["etcd-snapshot-retention"] == 28
        assert config["etcd-s3"] is True and config["etcd-s3-config-secret"] == CONFIG_SECRET
        assert not [k for k in config if k.startswith("etcd-s3-") and k != "etcd-s3-config-secret"]
    for data in (user_data(stack_json, name) for name in ("cp1", "cp2", "cp3")):
        assert "etcd_s3" not in json.dumps(data)
    assert not [key for key in k3s_config(stack_json, "wk-gpu1") if key.startswith("etcd")]
    for secret in ("etcd_s3_access_key", "etcd_s3_secret_key"):
        assert stack_json["variable"][secret]["sensitive"] is True
    (step,) = [v for k, v in resources(stack_json, "terraform_data").items() if "etcd-s3-secret" in k]
    assert step["connection"]["host"] == "10.0.0.11"
    (upload,) = [
        p["file"] for p in step["provisioner"] if "file" in p and p["file"]["destination"].endswith(".env")
    ]
    lines = dict(line.split("=", 1) for line in upload["content"].splitlines())
    assert lines == {
        "etcd-s3-access-key": "${var.etcd_s3_access_key}",
        "etcd-s3-bucket": "${var.etcd_s3_bucket}",
        "etcd-s3-endpoint": "s3.amazonaws.com",
        "etcd-s3-folder": "proxmox-ha",
        "etcd-s3-insecure": "false",
        "etcd-s3-region": "us-east-1",
        "etcd-s3-retention": "84",
        "etcd-s3-secret-key": "${var.etcd_s3_secret_key}",
    }
    commands = [c for p in step["provisioner"] if "remote-exec" in p for c in p["remote-exec"]["inline"]]
    assert not [c for c in commands if "var.etcd_s3" in c]
    assert step["triggers_replace"]["etcd-s3-secret-key_sha256"] == "${sha256(var.etcd_s3_secret_key)}"
    assert "var.etcd_s3_secret_key}" not in json.dumps(step["triggers_replace"])
    local_only = synth(etcd_s3=False)
    assert "etcd-s3" not in k3s_config(local_only, "cp1")
    assert "etcd_s3_secret_key" not in local_only["variable"]
    assert not [k for k in resources(local_only, "terraform_data") if "etcd-s3-secret" in k]


def etcd_secret_lines(synthesized: dict) -> dict[str, str]:
    (step,) = [v for k, v in resources(synthesized, "terraform_data").items() if "etcd-s3-secret" in k]
    (upload,) = [
        p["file"] for p in step["provisioner"] if "file" in p and p["file"]["destination"].endswith(".env")
    ]
    return dict(line.split("=", 1) for line in upload["content"].splitlines())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "control_plane_ips": ("10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14", "10.0.0.15"),
            "datastore_capacity_gb": (("local-lvm", 2600), ("nvme", 4096)),
            "etcd_snapshot_retention": 10,
        },
    ],
)
def test_s3_keeps_as_many_snapshots_of_each_server_as_its_disk(overrides):
    """S3 retention is k3s' etcd-s3-retention (its own setting since v1.33.4+k3s1, default 5), not
    etcd-snapshot-retention, and every server prunes the folder shared by all of them
    (<folder>/etcd-snapshot*): S3 keeps etcd_snapshot_retention of each server only when the Secret,
    where k3s reads it, says retention x servers. The servers' config stays free of it (any other
    etcd-s3-* setting there may make k3s ignore the Secret)."""
    synthesized = synth(**overrides) if overrides else synth()
    servers = [name for name in vms(synthesized) if name.startswith("cp")]
    configs = [k3s_config(synthesized, name) for name in servers]
    assert all(config["etcd-s3"] is True for config in configs)
    (local,) = {config["etcd-snapshot-retention"] for config in configs}
    assert etcd_secret_lines(synthesized)["etcd-s3-retention"] == str(local * len(servers))
    assert not [key for config in configs for key in config if key == "etcd-s3-retention"]


def test_the_etcd_secret_is_what_k3s_reads(tmp_path):
    """kube-secret.sh writes every line of the secrets file as a key of kube-system/k3s-etcd-s3, the
    keys k3s' getConfigFromSecret reads, and refuses a missing key naming its variable."""
    host = Host(tmp_path)
    host.stub(
        "k3s", '[ "$2" = apply ] && cat >> "$STATE/applied.yaml" && echo --- >> "$STATE/applied.yaml"; true'
    )
    data = EtcdSnapshots(
        s3=EtcdS3("minio.lan:9000", "snaps", "AKIAIOSFODNN7EXAMPLE", "k/ey+ends=", insecure=True)
    ).secret_data()
    secrets = host.state / "keys.env"
    secrets.write_text("".join(f"{k}={v}\n" for k, v in data.items()))
    result = host.run(
        "kube-secret.sh", NAMESPACE="kube-system", SECRET_NAME=CONFIG_SECRET, SECRETS_FILE=str(secrets),
        REQUIRED="etcd-s3-secret-key:etcd_s3_secret_key",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (secret,) = [
        d
        for d in yaml.safe_load_all((host.state / "applied.yaml").read_text())
        if d and d["kind"] == "Secret"
    ]
    assert secret["metadata"] == {"name": "k3s-etcd-s3", "namespace": "kube-system"}
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {**data, "etcd-s3-insecure": "true"} and decoded["etcd-s3-secret-key"] == "k/ey+ends="
    assert not secrets.exists() and "k/ey+ends=" not in host.log.read_text() + result.stdout + result.stderr
    secrets.write_text("etcd-s3-bucket=snaps\netcd-s3-secret-key=\n")
    refused = host.run(
        "kube-secret.sh", NAMESPACE="kube-system", SECRET_NAME=CONFIG_SECRET, SECRETS_FILE=str(secrets),
        REQUIRED="etcd-s3-secret-key:etcd_s3_secret_key",
    )  # fmt: skip
    assert refused.returncode == 2
    assert (
        "etcd-s3-secret-key of kube-system/k3s-etcd-s3 is empty or missing: set the Terraform variable etcd_s3_secret_key"
        in refused.stderr
    )


def test_k3s_ha_by_cloud_init(stack_json):
    first = k3s_config(stack_json, "cp1")
    assert first["cluster-init"] is True and "server" not in first
    assert (first["cluster-cidr"], first["service-cidr"]) == ("10.42.0.0/16", "10.43.0.0/16")
    assert first["token"] == "${var.k3s_token}"
    assert k3s_config(stack_json, "cp2")["server"] == "https://10.0.0.11:6443"
    worker = k3s_config(stack_json, "wk-gpu1")
    assert worker["node-label"] == [
        "nvidia.com/gpu=true",
        "gpu-constructs.io/scratch-disk=true",
        "hub.jupyter.org/node-purpose=user",
    ] and worker["node-taint"] == ["nvidia.com/gpu=true:NoSchedule"]
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
    scratch, server_local = manifests_of(releases(stack_json)["storage-classes"])
    assert scratch["metadata"]["name"] == "fast-scratch" and scratch["parameters"] == {
        "nodePath": "/mnt/scratch"
    }
    # Monitoring's volumes: on the servers' OS disks, never on NFS or the GPU workers' scratch.
    assert server_local["metadata"]["name"] == "server-local"
    assert server_local["parameters"] == {"nodePath": "/var/lib/gpu-constructs/server-local"}
    assert server_local["allowedTopologies"] == [
        {"matchLabelExpressions": [{"key": "node-role.kubernetes.io/control-plane", "values": ["true"]}]}
    ]
    prometheus = release_values(releases(stack_json)["kube-prometheus-stack"])["prometheus"]
    claim = prometheus["prometheusSpec"]["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == "server-local"


def test_gpu_operator_manages_driver_and_toolkit_with_k3s_paths(stack_json):
    values = release_values(releases(stack_json)["gpu-operator"])
    assert values["driver"]["enabled"] is True
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
    with pytest.raises(
        ConfigError, match=r"'jupyter_gpu_profiles' is 4: a pod asking for 4 GPUs never schedules"
    ):
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


def kubeconfig_step(stack_json) -> dict:
    (step,) = [
        r
        for r in resources(stack_json, "terraform_data").values()
        if "fetch-kubeconfig" in r.get("provisioner", [{}])[0].get("local-exec", {}).get("command", "")
    ]
    return step["provisioner"][0]["local-exec"]["environment"]


def test_kubeconfig_uses_the_vip_and_the_stacks_own_known_hosts(stack_json):
    env = kubeconfig_step(stack_json)
    assert (env["SSH_HOST"], env["API_SERVER"]) == ("10.0.0.11", "10.0.0.100")
    assert env["KNOWN_HOSTS"] == "${path.root}/../../../kubeconfig/proxmox-ha.known_hosts"
    for name in ("cp1", "cp2", "cp3"):
        assert "10.0.0.100" in k3s_config(stack_json, name)["tls-san"], name
    single = synth(api_vip=None, single_api_address=True)
    assert kubeconfig_step(single)["API_SERVER"] == "10.0.0.11"


def test_nothing_reaches_the_api_through_one_server_unless_accepted(stack_json):
    """HA covers losing cp1 too: the workers join, and Terraform plans, through the VIP."""
    for name in ("wk-gpu1", "wk-gpu2", "wk-gpu3", "wk-gpu4"):
        assert k3s_config(stack_json, name)["server"] == "https://10.0.0.100:6443", name
    with pytest.raises(ConfigError, match=r"'api_vip' is None: without it the workers, the kubeconfig"):
        synth(api_vip=None)


def test_every_vm_gets_its_own_host_key_and_every_connection_checks_it(stack_json):
    """cloud-init installs the key Terraform knows (and generates no other), so the kubeconfig
    fetch and the token upload accept that key only, also from a rebuilt VM."""
    names = ["cp1", "cp2", "cp3", "wk-gpu1", "wk-gpu2", "wk-gpu3", "wk-gpu4"]
    for index, name in enumerate(names):
        document = user_data(stack_json, name)
        assert (document["ssh_deletekeys"], document["ssh_genkeytypes"]) == (False, []), name
        files = {f["path"]: f for f in document["write_files"]}
        private = files["/etc/ssh/ssh_host_ed25519_key"]
        assert private == {
            "path": "/etc/ssh/ssh_host_ed25519_key",
            "permissions": "0600",
            "encoding": "b64",
            "content": f"${{base64encode(var.vm_ssh_host_private_keys[{index}])}}",
        }
        public = files["/etc/ssh/ssh_host_ed25519_key.pub"]["content"]
        assert public == f"${{var.vm_ssh_host_keys[{index}]}} root@{name}\n"
    assert stack_json["variable"]["vm_ssh_host_private_keys"]["sensitive"] is True
    assert kubeconfig_step(stack_json)["HOST_KEY"] == "${var.vm_ssh_host_keys[0]}"
    uploads = [
        r for r in resources(stack_json, "terraform_data").values() if r.get("connection", {}).get("host")
    ]
    # the Cloudflare token, the etcd S3 Secret and JupyterHub's admin password, all from cp1
    assert len(uploads) == 3
    for upload in uploads:
        assert (
            upload["connection"]["host_key"]
            == f"${{{negotiated_host_key_expression('var.vm_ssh_host_keys[0]')}}}"
        )
    assert stack_json["output"]["ssh_known_hosts"]["value"].startswith(
        "10.0.0.11 ${var.vm_ssh_host_keys[0]}\n"
    )
    unchecked = synth(verify_ssh_host_keys=False)
    assert "vm_ssh_host_keys" not in unchecked["variable"]
    assert "HOST_KEY" not in kubeconfig_step(unchecked)


def test_the_apply_waits_for_every_gpu_worker_before_jupyterhub(every_stack):
    """Helm's waits pass without GPU nodes; a bounded step checks each VM with passthrough GPUs is
    Ready with them allocatable, after the GPU Operator (its device plugin sets them) and before
    the hub whose profiles need them."""
    from tests.support.lifecycle import graph

    for stack_json in every_stack.values():
        steps = {
            f"terraform_data.{logical_id}": step
            for logical_id, step in resources(stack_json, "terraform_data").items()
            if "wait-gpu-nodes" in json.dumps(step.get("provisioner", []))
        }
        ((address, step),) = steps.items()
        env = step["provisioner"][0]["local-exec"]["environment"]
        gpu_vms = sorted(vm["name"] for vm in vms(stack_json).values() if vm.get("hostpci"))
        assert sorted(env["NODES"].split()) == gpu_vms
        assert env["GPUS"] == "2"
        releases_ = {r["name"]: f"helm_release.{k}" for k, r in resources(stack_json, "helm_release").items()}
        assert graph.depends_on(stack_json, releases_["jupyterhub"], address)
        assert graph.depends_on(stack_json, address, releases_["gpu-operator"])


def test_a_rebuilt_worker_is_waited_for_in_the_same_apply(every_stack, tmp_path):
    """The GPU wait runs on create only: its triggers hold every GPU worker's id, so a -replace of
    a worker (a new, unknown id) re-runs it, as Terraform itself plans on a stand-in."""
    from tests.conftest import terraform_binary

    for stack_json in every_stack.values():
        (step,) = [
            s for s in resources(stack_json, "terraform_data").values() if "wait-gpu-nodes" in json.dumps(s)
        ]
        ids = {
            f"${{proxmox_virtual_environment_vm.{key}.id}}"
            for key, vm in resources(stack_json, "proxmox_virtual_environment_vm").items()
            if vm.get("hostpci")
        }
        assert len(ids) == 4 and ids <= set(step["triggers_replace"].values())
    config = {
        "resource": {
            "terraform_data": {
                "worker": {"input": "wk-gpu1"},
                "wait": {"triggers_replace": {"wk-gpu1": "${terraform_data.worker.id}"}},
            }
        }
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    terraform = terraform_binary()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [terraform, *args, "-input=false", "-no-color"], cwd=tmp_path, capture_output=True, text=True
        )

    assert run("apply", "-auto-approve").returncode == 0
    planned = run("plan", "-replace=terraform_data.worker")
    assert "terraform_data.wait must be replaced" in planned.stdout, planned.stdout


def test_every_vm_deletes_its_node_before_it_is_destroyed(every_stack):
    """k3s refuses a rebuilt node of the same name until its Node (and node password) is deleted;
    a destroy-time provisioner may refer to self, path and terraform only (Terraform onlySelfRefs)."""
    for stack_json in every_stack.values():
        for vm in resources(stack_json, "proxmox_virtual_environment_vm").values():
            (provisioner,) = vm["provisioner"]
            local = provisioner["local-exec"]
            assert local["when"] == "destroy", vm["name"]
            assert "kubectl delete node" in local["command"] and "kubectl drain" in local["command"]
            assert local["environment"]["NODE"] == "${self.name}"
            # the VM's disk goes with it: the step names the claims whose local volumes are there
            assert local["environment"]["WARN_LOCAL_VOLUMES"] == "1", vm["name"]
            refs = re.findall(r"(?<!\$)\$\{([a-z_]+)\.", json.dumps(local))
            assert refs and set(refs) <= {"self", "path", "terraform"}, (vm["name"], refs)


# kubectl as the destroy-time step sees it: $STATE/nodes holds "name Ready" lines, $STATE/pvs the
# PersistentVolumes as delete-node.sh's jsonpath prints them (claim, phase, node affinity values).
DELETE_NODE_KUBECTL = r"""
case "$1" in
  get)
    case "$2" in
      node) awk -v n="$3" '$1 == n { print $1 " " $2 }' "$STATE/nodes" ;;
      pv) cat "$STATE/pvs" ;;
    esac ;;
esac
exit 0
"""


@pytest.mark.parametrize("vm", ["wk-gpu4", "cp2"])
def test_a_destroyed_vm_names_the_local_volumes_on_its_disk(stack_json, tmp_path, vm):
    """The scratch disk (a worker) and server-local (a server) go with the VM: its destroy-time step,
    run with the environment it is synthesized with, names the bound claims whose volumes are there
    and only those (docs/proxmox-ha.md, "Removing a GPU worker")."""
    from tests.support.host import Host

    (local,) = [p["local-exec"] for p in vms(stack_json)[vm]["provisioner"]]
    host = Host(tmp_path)
    host.stub("kubectl", DELETE_NODE_KUBECTL)
    (host.state / "nodes").write_text(f"{vm} True\n")
    (host.state / "pvs").write_text(
        f"jupyterhub/jupyter-alice-scratch Bound {vm}\n"
        f"monitoring/prometheus-db Bound {vm}\n"
        "jupyterhub/jupyter-bob-scratch Bound wk-gpu1\n"
        f"jupyterhub/claim-old Released {vm}\n"
    )
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text("")
    env = dict(local["environment"], KUBECONFIG=str(kubeconfig), NODE=vm)
    assert set(env) == set(local["environment"]) and local["environment"]["NODE"] == "${self.name}"
    result = host.run("delete-node.sh", **env)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "local volumes" in line]
    assert "jupyterhub/jupyter-alice-scratch monitoring/prometheus-db" in warning
    assert "bob" not in warning and "claim-old" not in warning
    assert f"deleted {vm}" in result.stdout
    assert "WARN_LOCAL_VOLUMES=1" in page_section("Removing a GPU worker")


def proxmox_page() -> str:
    return (Path(main.__file__).parent / "docs" / "proxmox-ha.md").read_text()


def page_section(title: str) -> str:
    """The text of one ``## title`` section of docs/proxmox-ha.md."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", proxmox_page(), re.M | re.S)
    assert match, f"docs/proxmox-ha.md has no section {title!r}"
    return match.group(1)


def test_no_update_reboots_the_vms_together(every_stack):
    """Terraform updates the VMs of a plan in parallel; with the provider's default
    (reboot_after_update true) a size change would power off every server at once. Every VM
    leaves such a change pending, and the page says how to reboot node by node."""
    for stack_json in every_stack.values():
        machines = vms(stack_json)
        assert len(machines) == 7
        for name, vm in machines.items():
            assert vm.get("reboot_after_update") is False, name
    procedure = " ".join(page_section("Resizing and hardware changes: reboot node by node").split())
    for step in ("qm pending", "kubectl drain", "qm reboot", "/readyz/etcd", "kubectl uncordon"):
        assert step in procedure, step
    assert "reboot_after_update = false" in procedure


def unordered_secret_uploads(synthesized: dict) -> list[tuple[str, str, str]]:
    """Pairs of steps that upload the same secrets file to the same host with no order between
    them: each script's secrets file has one path (ScriptRun.secrets_path) that the script deletes
    after reading, so two such steps running at once read each other's values or none."""
    from tests.support.lifecycle import graph

    uploads: dict[tuple[str, str], list[str]] = {}
    for name, step in resources(synthesized, "terraform_data").items():
        host = (step.get("connection") or {}).get("host")
        for provisioner in step.get("provisioner", []):
            destination = provisioner.get("file", {}).get("destination", "")
            if host and destination.endswith(".env"):
                uploads.setdefault((host, destination), []).append(f"terraform_data.{name}")
    found = []
    for (_host, destination), steps in uploads.items():
        for index, first in enumerate(steps):
            for second in steps[index + 1 :]:
                if not (
                    graph.depends_on(synthesized, first, second)
                    or graph.depends_on(synthesized, second, first)
                ):
                    found.append((destination, first, second))
    return found


def test_no_two_steps_write_one_secrets_file_at_once():
    """A gate over every stack of main.py. proxmox-ha's etcd and JupyterHub admin Secrets both go
    through kube-secret.sh on cp1, each with a secrets file of its own; the two sharing one file
    with no order between them breaks it."""
    shared = 0
    for instance in main.INSTANCES:
        stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
        assert unordered_secret_uploads(stack) == [], instance.stack
        if instance.stack == "proxmox-ha":
            (admin,) = [k for k in resources(stack, "terraform_data") if "admin-password" in k]
            steps = stack["resource"]["terraform_data"]
            uploads = [
                p["file"]
                for name in (admin, "etcd-s3-secret")
                for p in steps[name]["provisioner"]
                if p.get("file", {}).get("destination", "").endswith(".env")
            ]
            assert len({u["destination"] for u in uploads}) == 2
            assert "terraform_data.etcd-s3-secret" not in steps[admin].get("depends_on", [])
            shared += 1
            uploads[0]["destination"] = uploads[1]["destination"]
            (pair,) = unordered_secret_uploads(stack)
            assert pair[0] == ".gpu-constructs/kube-secret.kube-system.k3s-etcd-s3.env"
    assert shared == 1


def test_the_page_says_how_a_kube_vip_pin_reaches_the_running_servers(stack_json, tmp_path):
    """A new KUBE_VIP_IMAGE changes only the servers' first-boot manifests: the page's procedure
    extracts the manifest from the synthesized stack and writes it on every server. Its script,
    run here on the synthesized stack, yields the manifests the servers' user data carries."""
    from gpu_constructs import versions
    from gpu_constructs.compute.proxmox.cloudinit import kube_vip_manifests

    section = page_section("kube-vip upgrades")
    assert "KUBE_VIP_IMAGE" in section and "/var/lib/rancher/k3s/server/manifests/kube-vip.yaml" in section
    (script,) = re.findall(r"<<'PY'\n(.*?)\nPY\n", section, re.S)
    addresses = re.search(r"for ip in ([0-9. ]+);", section).group(1).split()
    assert addresses == list(MAIN.overrides.get("control_plane_ips", ("10.0.0.11", "10.0.0.12", "10.0.0.13")))
    (tmp_path / "cdk.tf.json").write_text(json.dumps(stack_json))
    (tmp_path / "extract.py").write_text(script)
    out = subprocess.run(
        [sys.executable, str(tmp_path / "extract.py"), str(tmp_path / "cdk.tf.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert list(yaml.safe_load_all(out)) == kube_vip_manifests("10.0.0.100")
    assert versions.KUBE_VIP_IMAGE.version in out


def test_the_page_says_when_and_how_to_renew_the_kubeconfig():
    """The copied admin certificate expires a year after the fetch, and k3s renews the servers'
    only at a start within 90 days of expiry: the page gives the check, the window and the re-fetch."""
    section = " ".join(page_section("The kubeconfig's certificate: re-fetch it every year").split())
    for text in (
        "365 days",
        "90 days",
        "openssl x509 -noout -enddate",
        "systemctl restart k3s",
        "-replace=ADDRESS",
    ):
        assert text in section, text


@pytest.fixture
def rendered_proxmox(helm, upstream):
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "proxmox-ha"]
    return render.rendered(instance)


def rendered_of(rendered, chart_or_name: str, kind: str) -> list[dict]:
    return [
        obj
        for release, obj in rendered.objects()
        if chart_or_name in (release.chart, release.name) and obj.get("kind") == kind
    ]


def test_notebooks_never_land_on_the_control_planes(stack_json, rendered_proxmox):
    """The control planes keep etcd on their 100 GB OS disk: every notebook, CPU-only ones too,
    must run on a worker (hub.jupyter.org/node-purpose=user, required), and a CPU notebook
    tolerates the GPU taint to get there."""
    for name in ("wk-gpu1", "wk-gpu4"):
        assert "hub.jupyter.org/node-purpose=user" in k3s_config(stack_json, name)["node-label"]
    for name in ("cp1", "cp2", "cp3"):
        assert "node-label" not in k3s_config(stack_json, name)
    (hub,) = [r for r in resources(stack_json, "helm_release").values() if r["chart"] == "jupyterhub"]
    values = release_values(hub)
    assert values["scheduling"]["userPods"]["nodeAffinity"]["matchNodePurpose"] == "require"
    gpu = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    assert gpu in values["singleuser"]["extraTolerations"]
    (puller,) = rendered_of(rendered_proxmox, "jupyterhub", "DaemonSet")
    spec = puller["spec"]["template"]["spec"]
    (term,) = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "hub.jupyter.org/node-purpose", "operator": "In", "values": ["user"]} in term[
        "matchExpressions"
    ]
    assert gpu in spec["tolerations"]


def test_scratch_is_provisioned_only_on_nodes_with_the_scratch_disk(stack_json, rendered_proxmox):
    (scratch,) = [
        c for c in rendered_of(rendered_proxmox, "storage-classes", "StorageClass")
        if c["metadata"]["name"] == "fast-scratch"
    ]  # fmt: skip
    (term,) = scratch["allowedTopologies"]
    (expression,) = term["matchLabelExpressions"]
    label = f"{expression['key']}={expression['values'][0]}"
    assert scratch["volumeBindingMode"] == "WaitForFirstConsumer"
    for name in ("wk-gpu1", "wk-gpu2", "wk-gpu3", "wk-gpu4"):
        assert label in k3s_config(stack_json, name)["node-label"]
        assert user_data(stack_json, name)["mounts"][0][:2] == ["LABEL=scratch", "/mnt/scratch"]
    for name in ("cp1", "cp2", "cp3"):
        assert "node-label" not in k3s_config(stack_json, name)


def test_the_image_puller_does_not_hold_the_atomic_install(rendered_proxmox):
    """z2jh's install hook waits (an awaiter Job) until every node has pulled every image, inside the
    release's timeout: with 10-20 GB NGC images that rolls the atomic install back. The continuous
    puller pulls them instead, and its DaemonSet (maxUnavailable 100%) does not hold Helm's wait."""
    jobs = rendered_of(rendered_proxmox, "jupyterhub", "Job")
    assert jobs == []
    (puller,) = rendered_of(rendered_proxmox, "jupyterhub", "DaemonSet")
    assert puller["metadata"]["name"] == "continuous-image-puller"
    assert "helm.sh/hook" not in puller["metadata"].get("annotations", {})
    assert puller["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"
    pulled = {c["image"] for c in puller["spec"]["template"]["spec"]["initContainers"]}
    assert any(i.startswith("registry.example.com/ml/notebook-pytorch:") for i in pulled)
    assert any(i.startswith("registry.example.com/ml/notebook-tensorflow:") for i in pulled)


def test_the_ingress_survives_the_loss_of_one_server(stack_json, rendered_proxmox):
    """Rancher and JupyterHub reach users through Traefik only: one replica per server, so a
    failed or drained server leaves the others serving (the VIP moves within seconds)."""
    (deployment,) = [
        d
        for d in rendered_of(rendered_proxmox, "traefik", "Deployment")
        if d["metadata"]["name"] == "traefik"
    ]
    servers = [name for name in vms(stack_json) if name.startswith("cp")]
    assert deployment["spec"]["replicas"] == len(servers) == 3


def test_rancher_serves_a_lets_encrypt_certificate(rendered_proxmox):
    """Not Rancher's own self-signed CA: the Ingress serves a secret that cert-manager fills from the
    stack's ClusterIssuer, the one JupyterHub uses."""
    (ingress,) = rendered_of(rendered_proxmox, "rancher", "Ingress")
    annotations = ingress["metadata"]["annotations"]
    (hub_ingress,) = rendered_of(rendered_proxmox, "jupyterhub", "Ingress")
    issuer = hub_ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    assert annotations["cert-manager.io/cluster-issuer"] == issuer
    assert "cert-manager.io/issuer" not in annotations
    assert [t["secretName"] for t in ingress["spec"]["tls"]] == ["tls-rancher-ingress"]
    assert rendered_of(rendered_proxmox, "rancher", "Issuer") == []
    issuers = [
        c["metadata"]["name"] for _, c in rendered_proxmox.objects() if c.get("kind") == "ClusterIssuer"
    ]
    assert issuer in issuers


def test_fleet_deploys_only_what_terraform_does_not(stack_json):
    """The seed's clusters/homelab holds the GPU Operator, JupyterHub and the StorageClasses, which
    Terraform deploys: the default Fleet path is another, and docs/proxmox-ha.md names every
    Terraform-owned component Fleet must not hold."""
    from environments.proxmox_ha import FLEET_DEFAULT_PATH, FLEET_MAY_NOT_HOLD

    assert stack_json["variable"]["fleet_paths"]["default"] == [FLEET_DEFAULT_PATH]
    assert FLEET_DEFAULT_PATH != "clusters/homelab"
    charts = {r["chart"] for r in resources(stack_json, "helm_release").values() if r["chart"] != "manifests"}
    for chart in ("gpu-operator", "jupyterhub", "nfs-subdir-external-provisioner", "rancher"):
        assert chart in charts and chart in FLEET_MAY_NOT_HOLD
    page = (Path(__file__).parents[2] / "docs" / "proxmox-ha.md").read_text()
    section = page.split("**Fleet owns only what Terraform does not deploy.**")[1].split("\n\n")[0]
    assert FLEET_DEFAULT_PATH in section and "FLEET_MAY_NOT_HOLD" in section


def test_gpu_operator_containerd_paths_follow_this_clusters_k3s():
    old = ProxmoxProps(**{**PROPS_FIELDS, "gpu_devices": devices(), "k3s_version": "v1.31.5+k3s1"})
    from gpu_constructs.cluster import k3s_containerd

    assert k3s_containerd(old.k3s_version).config.endswith("/config.toml.tmpl")
    stack = cdktf.Testing.app()
    from cdktf import TerraformStack

    from gpu_constructs.compute.proxmox import ProxmoxGpuCompute

    compute = ProxmoxGpuCompute(TerraformStack(stack, "s"), "vms", props=old)
    assert compute.cluster.containerd.config.endswith("/config.toml.tmpl")


def test_the_cloud_image_is_a_pinned_release_checked_by_its_sha256(every_stack):
    """noble/current is republished; with overwrite left true the provider compares the URL's size
    with the stored file's at every Read and replaces the download when they differ
    (fwprovider/nodes/resource_download_file.go)."""
    for stack_json in every_stack.values():
        downloads = resources(stack_json, "proxmox_virtual_environment_download_file").values()
        assert downloads
        for download in downloads:
            assert re.search(r"/releases/noble/release-\d{8}/", download["url"]), download["url"]
            assert "/current/" not in download["url"]
            assert re.fullmatch(r"[0-9a-f]{64}", download["checksum"])
            assert download["checksum_algorithm"] == "sha256"
            assert download["overwrite"] is False


def test_the_notebook_namespace_has_a_quota_and_limits(stack_json, upstream):
    """Every GPU, CPU, memory and scratch request in the hub's namespace is capped (local-path
    checks no capacity: 200Gi sessions would overfill the 1 TB scratch disks), and every container
    without requests gets one, or the quota would reject the hub's own pods."""
    quota_release = releases(stack_json)["notebook-quota"]
    assert quota_release["namespace"] == "jupyterhub"
    manifests = manifests_of(quota_release)
    for manifest in manifests:
        validate_manifest(manifest, upstream)
    (quota,) = by_kind(manifests, "ResourceQuota")
    assert quota["spec"]["hard"] == {
        "requests.nvidia.com/gpu": "8",
        "requests.cpu": "64",
        "requests.memory": "512Gi",
        "fast-scratch.storageclass.storage.k8s.io/requests.storage": "4096Gi",
        "nfs-client.storageclass.storage.k8s.io/requests.storage": "5000Gi",
    }
    ((limits,),) = [m["spec"]["limits"] for m in by_kind(manifests, "LimitRange")]
    assert set(limits["defaultRequest"]) == {"cpu", "memory"}
    from tests.support.lifecycle import graph

    address = {r["name"]: f"helm_release.{k}" for k, r in resources(stack_json, "helm_release").items()}
    assert graph.depends_on(stack_json, address["notebook-quota"], address["jupyterhub"])
    smaller = releases(synth(notebook_quota_gpus=2, notebook_quota_scratch_gb=1000))["notebook-quota"]
    (quota,) = by_kind(manifests_of(smaller), "ResourceQuota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"
    assert quota["spec"]["hard"]["fast-scratch.storageclass.storage.k8s.io/requests.storage"] == "1000Gi"
    with pytest.raises(ConfigError, match=r"'notebook_quota_gpus' is 0: use from 1"):
        synth(notebook_quota_gpus=0)


def test_every_modprobe_of_several_modules_loads_them_all(stack_json):
    """modprobe(8): `modprobe name params...`; only -a loads every name given."""
    for name in ("cp1", "wk-gpu1"):
        for command in user_data(stack_json, name)["runcmd"]:
            if command.startswith("modprobe"):
                words = command.split()
                modules = [w for w in words[1:] if not w.startswith("-")]
                assert len(modules) == 1 or "-a" in words, command


def test_scratch_is_found_by_id_and_k3s_waits_for_its_mount(stack_json):
    """/dev/sdb is whichever disk the kernel names so; and with nofail alone a boot without the
    disk lets fast-scratch volumes land on the OS disk under /mnt/scratch."""
    document = user_data(stack_json, "wk-gpu1")
    (setup,) = document["fs_setup"]
    assert setup["device"].startswith("/dev/disk/by-id/") and setup["device"].endswith("drive-scsi1")
    assert [d["interface"] for d in vms(stack_json)["wk-gpu1"]["disk"]] == ["scsi0", "scsi1"]
    files = {f["path"]: f["content"] for f in document["write_files"]}
    assert "RequiresMountsFor=/mnt/scratch" in files["/etc/systemd/system/k3s-agent.service.d/scratch.conf"]


def test_every_vm_has_its_firewall_with_the_clusters_rules(stack_json):
    """Input DROP on every VM, after its rules: the VM network (k3s, etcd, flannel, kubelet),
    SSH and the API from the admin networks, the ingress and ICMP; the NIC applies them."""
    names = {vm["vm_id"]: vm["name"] for vm in vms(stack_json).values()}
    options = resources(stack_json, "proxmox_virtual_environment_firewall_options")
    rules = resources(stack_json, "proxmox_virtual_environment_firewall_rules")
    assert sorted(names[o["vm_id"]] for o in options.values()) == sorted(names.values())
    assert sorted(names[r["vm_id"]] for r in rules.values()) == sorted(names.values())
    for option in options.values():
        assert (option["enabled"], option["input_policy"], option["output_policy"]) == (
            True,
            "DROP",
            "ACCEPT",
        )
        (rules_of_vm,) = [k for k, r in rules.items() if r["vm_id"] == option["vm_id"]]
        assert f"proxmox_virtual_environment_firewall_rules.{rules_of_vm}" in option["depends_on"]
    for rule_set in rules.values():
        accepted = {(r.get("source"), r.get("proto"), r.get("dport")) for r in rule_set["rule"]}
        assert accepted == {
            ("10.0.0.0/24", None, None),
            ("10.0.0.0/8,172.16.0.0/12,192.168.0.0/16", "tcp", "22,6443"),
            (None, "tcp", "80,443"),
            (None, "icmp", None),
        }
        assert {r["type"] for r in rule_set["rule"]} == {"in"}
    for vm in vms(stack_json).values():
        assert vm["network_device"][0]["firewall"] is True, vm["name"]
    open_stack = synth(vm_firewall=False)
    assert "proxmox_virtual_environment_firewall_options" not in open_stack["resource"]
    with pytest.raises(ConfigError, match=r"'admin_cidrs\[0\]' is 'lan'"):
        synth(admin_cidrs=("lan",))


def test_a_rebuilt_vm_gets_its_firewall_back_in_the_same_apply(every_stack, tmp_path):
    """Proxmox deletes a VM's firewall with the VM; both firewall resources name their VM by its
    literal id, so only replace_triggered_by brings them back with a replaced VM. Terraform itself
    (on stand-ins with the same lifecycle) plans them replaced with a -replace of the VM."""
    from tests.conftest import terraform_binary

    for stack_json in every_stack.values():
        addresses = {
            vm["vm_id"]: f"proxmox_virtual_environment_vm.{key}"
            for key, vm in resources(stack_json, "proxmox_virtual_environment_vm").items()
        }
        for kind in ("firewall_rules", "firewall_options"):
            found = resources(stack_json, f"proxmox_virtual_environment_{kind}")
            assert len(found) == len(addresses)
            for key, firewall in found.items():
                triggers = firewall.get("lifecycle", {}).get("replace_triggered_by")
                assert triggers == [f"{addresses[firewall['vm_id']]}.id"], key

    (rules_key, rules) = next(
        iter(resources(every_stack["proxmox-ha"], "proxmox_virtual_environment_firewall_rules").items())
    )
    config = {
        "resource": {
            "terraform_data": {
                "vm": {"input": "vm"},
                "rules": {"input": "rules", "lifecycle": {"replace_triggered_by": ["terraform_data.vm.id"]}},
            }
        }
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    terraform = terraform_binary()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [terraform, *args, "-input=false", "-no-color"], cwd=tmp_path, capture_output=True, text=True
        )

    assert run("apply", "-auto-approve").returncode == 0, rules_key
    planned = run("plan", "-replace=terraform_data.vm")
    assert planned.returncode == 0, planned.stderr
    assert "terraform_data.rules will be replaced" in planned.stdout
    assert "2 to add, 0 to change, 2 to destroy" in planned.stdout
    assert rules["lifecycle"]["replace_triggered_by"][0].endswith(".id")


def test_snippets_are_root_only_and_tls_verification_is_a_variable(stack_json):
    for snippet in resources(stack_json, "proxmox_virtual_environment_file").values():
        assert snippet["file_mode"] == "0600", snippet["source_raw"][0]["file_name"]
    (provider,) = stack_json["provider"]["proxmox"]
    assert provider["insecure"] == "${var.proxmox_insecure}"
    assert stack_json["variable"]["proxmox_insecure"] == {
        "type": "bool",
        "default": False,
        "description": "Skip TLS verification of the Proxmox API (only for its self-signed certificate).",
    }


def test_thin_volumes_must_fit_each_datastore():
    """The seed's disks add up to 6.4 TB (3 x 100 + 4 x 500 + 4 x 1024 GB of scratch): on a 2 TB
    pool, synth fails and says how to fix it; scratch on its own datastore fits."""
    with pytest.raises(
        ConfigError,
        match=r"'datastore_capacity_gb.local-lvm' is 2000: the VMs' disks on local-lvm add up to 6403 GB",
    ):
        synth(datastore_capacity_gb=(("local-lvm", 2000),), scratch_datastore=None)
    # no datastore goes unchecked: a missing capacity fails too, with the sum and the fix
    with pytest.raises(
        ConfigError,
        match=r"'datastore_capacity_gb.local-lvm' is 'unset': the VMs' disks on local-lvm add up to "
        r"6403 GB: give its usable GB from `pvesm status`",
    ):
        synth(datastore_capacity_gb=(), scratch_datastore=None)
    with pytest.raises(ConfigError, match=r"'datastore_capacity_gb.nvme' is 'unset'.* 4096 GB"):
        synth(datastore_capacity_gb=(("local-lvm", 2400),))
    with pytest.raises(ConfigError, match=r"add up to 2307 GB"):
        synth(datastore_capacity_gb=(("local-lvm", 2000),), scratch_datastore="nvme")
    fits = synth(datastore_capacity_gb=(("local-lvm", 2400), ("nvme", 4096)), scratch_datastore="nvme")
    worker = vms(fits)["wk-gpu1"]
    assert [(d["datastore_id"], d["size"]) for d in worker["disk"]] == [("local-lvm", 500), ("nvme", 1024)]


def test_workers_join_with_the_agent_token_only(stack_json):
    for name in ("cp1", "cp2", "cp3"):
        config = k3s_config(stack_json, name)
        assert (config["token"], config["agent-token"]) == ("${var.k3s_token}", "${var.k3s_agent_token}")
    for name in ("wk-gpu1", "wk-gpu4"):
        config = k3s_config(stack_json, name)
        assert config["token"] == "${var.k3s_agent_token}" and "agent-token" not in config
        assert "${var.k3s_token}" not in snippet_data(stack_json, f"{name}-user-data.yaml")
    assert stack_json["variable"]["k3s_agent_token"]["sensitive"] is True


def devices(count: int = 8) -> list[GpuDevice]:
    return [GpuDevice("10de:20b5", f"0000:{0x41 + i:02x}:00.0", 32 + i, "10de:1533") for i in range(count)]


PROPS_FIELDS = {
    "k3s_token": "${var.t}",
    "ssh_public_key": "${var.k}",
    "ssh_private_key_path": "~/.ssh/id",
    "kubeconfig_path": "k",
    "datastore_capacity_gb": {"local-lvm": 8000},
}


def props(**overrides) -> ProxmoxProps:
    fields = {
        "k3s_token": "${var.t}",
        "ssh_public_key": "${var.k}",
        "ssh_private_key_path": "~/.ssh/id",
        "gpu_devices": devices(),
        "kubeconfig_path": "k",
        "datastore_capacity_gb": {"local-lvm": 8000},
    }
    fields.update(overrides)
    return ProxmoxProps(**fields)


S3 = EtcdS3("s3.amazonaws.com", "etcd-snapshots", "${var.a}", "${var.s}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"control_plane_ips": ("10.0.0.11", "10.0.0.12")},
            r"'control_plane_count' is 2: k3s embedded etcd needs an odd count of at least 3 for HA",
        ),
        (
            {"control_plane_ips": tuple(f"10.0.0.{i}" for i in range(101, 112))},
            r"'control_plane_count' is 11: give at most 9 control planes \(their VM ids come before the workers'\)",
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
        ({"gpu_devices": devices(6)}, r"'gpu_devices' is 6: give exactly 8 GPUs: 4 workers x 2"),
        (
            {"gpu_devices": [*devices(7), GpuDevice("10de:20b5", "41:00.0", 1, "10de:145f")]},
            r"'gpu_devices\[7\].path' is '41:00.0': give the address as `lspci -D` prints it",
        ),
        (
            {"gpu_devices": [*devices(7), GpuDevice("10de:20b5", "0000:99:00.0", 32, "10de:145f")]},
            r"'gpu_devices.iommu_group' is '32': each entry must appear once",
        ),
        (
            {"gpu_devices": [*devices(7), GpuDevice("10de:20b5", "0000:99:00.0", 99, "145f")]},
            r"'gpu_devices\[7\].subsystem_id' is '145f': give the subsystem vendor:device id",
        ),
        (
            {"gpu_devices": [*devices(7), GpuDevice("10de:20b5", "0000:99:00.0", -1, "10de:145f")]},
            r"'gpu_devices\[7\].iommu_group' is -1: use from 0 to 65535",
        ),
        (
            {"gpu_devices": [*devices(7), GpuDevice("20b5", "0000:99:00.0", 99, "10de:145f")]},
            r"'gpu_devices\[7\].id' is '20b5': give the GPU's vendor:device id from `lspci -nn -d 10de:`",
        ),
        (
            {"gpu_devices": [*devices(7), GpuDevice("1002:740f", "0000:99:00.0", 99, "1002:0c34")]},
            r"'gpu_devices\[7\].id' is '1002:740f': .*NVIDIA \(vendor 10de\)",
        ),
        (
            {"ssh_host_keys": {"cp1": SshHostKey("${var.p}", "${var.k}")}},
            r"'ssh_host_keys' is \['cp1'\]: give one key for each VM: cp1, cp2, cp3, wk-gpu1",
        ),
        ({"dns_servers": ()}, r"'dns_servers' is \(\): give at least one DNS server"),
        ({"dns_servers": ("dns.example.com",)}, r"'dns_servers\[0\]' is 'dns.example.com': give an IPv4"),
        ({"vm_id_base": 5}, r"'vm_id_base' is 5: use from 100"),
        ({"node_name": "PVE 1"}, r"'node_name' is 'PVE 1': use a lower-case DNS label"),
        ({"vm_datastore": "local lvm"}, r"'vm_datastore' is 'local lvm': give a Proxmox storage id"),
        ({"bridge": "vmbr 0"}, r"'bridge' is 'vmbr 0': give a Linux bridge"),
        ({"image_url": "http://cloud-images.ubuntu.com/x.img"}, r"'image_url' is 'http://.*over https://"),
        (
            {"image_url": "https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img"},
            r"'image_url' is .*current.*: pin a dated release",
        ),
        ({"image_sha256": "abc"}, r"'image_sha256' is 'abc': give the image's SHA-256"),
        (
            {"etcd_snapshots": EtcdSnapshots(schedule_cron="hourly")},
            r"'etcd_snapshot_cron' is 'hourly': give a five-field cron schedule",
        ),
        ({"etcd_snapshots": EtcdSnapshots(retention=0)}, r"'etcd_snapshot_retention' is 0: use from 1"),
        (
            {
                "etcd_snapshots": EtcdSnapshots(
                    s3=EtcdS3("https://s3.amazonaws.com", "b-1", "${var.a}", "${var.s}")
                )
            },
            r"'etcd_s3.endpoint' is 'https://s3.amazonaws.com': give host\[:port\] without a scheme",
        ),
        (
            {
                "etcd_snapshots": EtcdSnapshots(
                    s3=EtcdS3("s3.amazonaws.com", "b-1", "${var.a}", "hunter2hunter2")
                )
            },
            r"'etcd_s3.secret_key' is '\(hidden\)': pass a sensitive variable reference",
        ),
    ],
)
def test_bad_layout_fails_with_field_value_and_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)


def test_good_props_with_literal_devices_and_s3():
    made = props(etcd_snapshots=EtcdSnapshots(s3=S3))
    assert made.gpu_devices[0].path == "0000:41:00.0"


def test_notebooks_run_the_images_built_from_ngc_with_jupyterhub(stack_json):
    """NGC's images lack jupyterhub-singleuser: every image the hub starts is one of the notebook
    images (docker/notebook-*) in the notebook_registry, tagged with its NGC base and JupyterHub."""
    (hub,) = [r for r in releases(stack_json).values() if r["chart"] == "jupyterhub"]
    values = release_values(hub)
    choices = values["singleuser"]["profileList"][0]["profile_options"]["image"]["choices"]
    used = {c["kubespawner_override"]["image"] for c in choices.values()}
    used.add(f"{values['singleuser']['image']['name']}:{values['singleuser']['image']['tag']}")
    assert used == {
        "registry.example.com/ml/notebook-pytorch:25.01-py3-jupyterhub5.5.0",
        "registry.example.com/ml/notebook-tensorflow:25.01-tf2-py3-jupyterhub5.5.0",
    }
    for profile in values["singleuser"]["profileList"]:
        for choice in profile.get("profile_options", {}).get("image", {}).get("choices", {}).values():
            assert not choice["kubespawner_override"]["image"].startswith("nvcr.io/"), profile


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        (None, r"'notebook_registry' is None: give the registry you push the notebook images to"),
        ("https://registry.example.com", r"'notebook_registry' is 'https://registry.example.com'"),
        ("Registry.example.com/ML", r"'notebook_registry' is 'Registry.example.com/ML'"),
    ],
)
def test_the_notebook_registry_is_required_and_checked(registry, message):
    with pytest.raises(ConfigError, match=message):
        synth(notebook_registry=registry)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nfs_path": "export/k3s"}, r"'nfs_path' is 'export/k3s': give the export's absolute path"),
        ({"nfs_server": "nas"}, r"'nfs_server' is 'nas': give an IPv4 address"),
        ({"rancher_replicas": 0}, r"'rancher_replicas' is 0: use from 1 to 10"),
        ({"etcd_snapshot_retention": 0}, r"'etcd_snapshot_retention' is 0"),
    ],
)
def test_bad_stack_settings_fail_at_synth(overrides, message):
    with pytest.raises(ConfigError, match=message):
        synth(**overrides)


@pytest.fixture(scope="module")
def variables_dir(stack_json, tmp_path_factory) -> Path:
    return variables_workdir(stack_json["variable"], tmp_path_factory.mktemp("proxmox-variables"))


def gpu_list(groups=range(32, 40), subsystem="10de:145f", device="10de:20f1") -> str:
    entries = [
        f'{{id = "{device}", path = "0000:{0x41 + i:02x}:00.0", iommu_group = {group}, '
        f'subsystem_id = "{subsystem}"}}'
        for i, group in enumerate(groups)
    ]
    return "[" + ", ".join(entries) + "]"


def plan(directory: Path, **variables: str | None) -> subprocess.CompletedProcess[str]:
    base = {
        "proxmox_endpoint": "https://pve:8006/",
        "proxmox_api_token": "t@pve!x=y",
        "k3s_token": "a" * 32,
        "k3s_agent_token": "b" * 32,
        "ssh_public_key": "ssh-ed25519 AAAA",
        "gpu_devices": gpu_list(),
        "acme_email": "ops@example.com",
        "rancher_hostname": "rancher.example.com",
        "jupyterhub_hostname": "jupyter.example.com",
        "fleet_repo_url": "https://example.com/r.git",
        "etcd_s3_bucket": "etcd",
        "etcd_s3_access_key": "a",
        "etcd_s3_secret_key": "s",
        "cloudflare_api_token": "a" * 40,
        "dns_zone": "example.com",
        "jupyterhub_admin_user": "ops-lead",
        "jupyterhub_admin_password": "Zx8!long-enough-password",
        "vm_ssh_host_keys": host_keys(),
        "vm_ssh_host_private_keys": "["
        + ", ".join(
            ['"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3Blbg==\\n-----END OPENSSH PRIVATE KEY-----\\n"'] * 7
        )
        + "]",
    }
    return plan_variables(directory, {**base, **variables})


def host_keys(count: int = 7, duplicate: bool = False) -> str:
    keys = [
        f'"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{"A" if duplicate else chr(65 + i)}key"' for i in range(count)
    ]
    return "[" + ", ".join(keys) + "]"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (host_keys(6), "vm_ssh_host_keys must list exactly 7 keys, in the order cp1, cp2, cp3, wk-gpu1"),
        (host_keys(duplicate=True), "vm_ssh_host_keys must give each VM its own key"),
        ('["ssh-rsa AAAA", "b", "c", "d", "e", "f", "g"]', "is an ed25519 public key"),
    ],
)
def test_bad_host_keys_fail_in_terraform(variables_dir, value, message):
    result = plan(variables_dir, vm_ssh_host_keys=value)
    assert result.returncode != 0 and message in " ".join(result.stderr.split())


def test_a_host_private_key_that_is_not_one_fails_in_terraform(variables_dir):
    result = plan(variables_dir, vm_ssh_host_private_keys='["x", "x", "x", "x", "x", "x", "x"]')
    assert result.returncode != 0 and "OpenSSH private key" in " ".join(result.stderr.split())


def test_the_agent_token_must_differ_from_the_server_token(variables_dir):
    result = plan(variables_dir, k3s_agent_token="a" * 32)
    assert result.returncode != 0 and "differ from k3s_token" in result.stderr


def test_good_gpu_devices_plan(variables_dir):
    result = plan(variables_dir)
    assert result.returncode == 0, result.stderr
    # an A100 80GB (10de:20b5) is as welcome as the 40GB card
    result = plan(variables_dir, gpu_devices=gpu_list(device="10de:20b5", subsystem="10de:1533"))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (gpu_list(range(32, 38)), "gpu_devices must list exactly 8 GPUs"),
        (gpu_list([32, 32, 34, 35, 36, 37, 38, 39]), "each in its own IOMMU group"),
        (gpu_list(subsystem="145f"), "gpu_devices subsystem_id looks like 10de:145f"),
        (gpu_list([32, 33, 34, 35, 36, 37, 38, -1]), "gpu_devices iommu_group is the whole number"),
        (gpu_list(device="20b5"), "gpu_devices id is the NVIDIA vendor:device id"),
        (gpu_list(device="1002:740f"), "gpu_devices id is the NVIDIA vendor:device id"),
    ],
)
def test_bad_gpu_devices_fail_in_terraform(variables_dir, value, message):
    result = plan(variables_dir, gpu_devices=value)
    assert result.returncode != 0 and message in " ".join(result.stderr.split())


def test_root_password_login_variables_plan(tmp_path):
    variables_workdir(synth(root_auth=True, hugepages=True)["variable"], tmp_path)
    with_token = plan(tmp_path, proxmox_api_token="t@pve!x=y", proxmox_root_password="s3cret")
    assert with_token.returncode != 0 and "Value for undeclared variable" in with_token.stderr
    assert plan(tmp_path, proxmox_root_password="s3cret", **{"proxmox_api_token": None}).returncode == 0
    empty = plan(tmp_path, proxmox_root_password="", **{"proxmox_api_token": None})
    assert empty.returncode != 0 and "proxmox_root_password is empty." in empty.stderr


def test_lets_encrypt_by_dns01_through_cloudflare_on_the_private_network(stack_json):
    """The ingress is on 10.0.0.0/24, which Let's Encrypt cannot reach over HTTP-01: by default the
    issuers solve DNS-01 in the Cloudflare zone, with the token written into the cluster from cp1."""
    issuers = next(r for k, r in resources(stack_json, "helm_release").items() if "cluster-issuers" in k)
    for issuer in manifests_of(issuers):
        (solver,) = issuer["spec"]["acme"]["solvers"]
        assert solver["dns01"]["cloudflare"]["apiTokenSecretRef"]["name"] == "cloudflare-api-token"
        assert solver["selector"] == {"dnsZones": ["${var.dns_zone}"]}
    (step,) = [r for k, r in resources(stack_json, "terraform_data").items() if "cloudflare-secret" in k]
    assert step["connection"]["host"] == "10.0.0.11" and step["connection"]["user"] == "ubuntu"
    assert stack_json["variable"]["cloudflare_api_token"]["sensitive"] is True
    assert "var.cloudflare_api_token" not in json.dumps(issuers)


def test_http01_needs_a_public_address_checked_at_plan(tmp_path):
    stack = synth(letsencrypt_challenge="http01")
    assert "cloudflare_api_token" not in stack["variable"] and "dns_zone" not in stack["variable"]
    variables_workdir(stack["variable"], tmp_path)
    unset = {"cloudflare_api_token": None, "dns_zone": None}
    private = plan(tmp_path, **unset)
    assert private.returncode != 0
    assert "Let's Encrypt cannot reach a private address over HTTP-01" in " ".join(private.stderr.split())
    assert plan(tmp_path, public_address="203.0.113.10", **unset).returncode == 0


def test_privilege_table_covers_every_proxmox_resource_type(every_stack):
    """The token's role comes from one table: every resource type a proxmox-ha stack emits has its
    rows there (a new type without rows would stop the deploy at "Permission check failed")."""
    emitted: set[str] = set()
    for stack_json in [*every_stack.values(), synth(root_auth=True, hugepages=True, cpu_pinning=True)]:
        for block in ("resource", "data"):
            emitted |= {kind for kind in stack_json.get(block, {}) if kind.startswith("proxmox_")}
    assert emitted == {row.resource for row in PRIVILEGES}
    for row in PRIVILEGES:
        assert re.fullmatch(r"[A-Z][A-Za-z]+\.[A-Za-z.]+", row.privilege), row
        assert re.match(r"proxmox/[a-z-]+ (src/)?PVE/\S+\.pm \S", row.source), row
        assert row.path.startswith("/"), row
    privileges = {(row.resource, row.privilege) for row in PRIVILEGES}
    # download-url needs network access besides the template right (pve-storage Status.pm)
    assert {
        ("proxmox_virtual_environment_download_file", "Sys.AccessNetwork"),
        ("proxmox_virtual_environment_download_file", "Datastore.AllocateTemplate"),
        ("proxmox_virtual_environment_vm", "Mapping.Use"),
    } <= privileges


DRIVE_PRIVILEGES = {
    # qemu-server src/PVE/API2/Qemu.pm, update path: a cloud-init drive is checked with
    # check_vm_perm(..., ['VM.Config.Cloudinit', 'VM.Config.CDROM']) and without $any every listed
    # privilege is required (pve-access-control RPCEnvironment.pm check_full). bpg/proxmox v0.111.1
    # re-sends ide2 as <datastore>:cloudinit on an update (proxmoxtf/resource/vm/vm.go).
    "initialization": ("VM.Config.Cloudinit", "VM.Config.CDROM"),
    # any other disk on update: VM.Config.Disk
    "disk": ("VM.Config.Disk",),
    "efi_disk": ("VM.Config.Disk",),
}


def test_the_role_can_update_every_drive_kind_the_vms_have(every_stack):
    """Creating a VM skips the drive keys' checks (check_vm_modify_config_perm), so a first apply
    passes without them; the first update that re-adds the cloud-init drive fails with 403."""
    granted = {row.privilege for row in PRIVILEGES if row.resource == "proxmox_virtual_environment_vm"}
    kinds = {kind for stack_json in every_stack.values() for vm in vms(stack_json).values() for kind in vm}
    needed = {p for kind, privileges in DRIVE_PRIVILEGES.items() if kind in kinds for p in privileges}
    assert "initialization" in kinds
    assert needed - granted == set()


def _role_commands() -> list[str]:
    """The role commands of the proxmox-ha page, docs/proxmox-ha.md."""
    page = Path(main.__file__).parent / "docs" / "proxmox-ha.md"
    return re.findall(r"^ *(pveum role add .*)$", page.read_text(), re.M)


def test_the_proxmox_page_role_command_is_the_tables():
    assert _role_commands() == [
        pveum_role_add(),
        pveum_role_add(pve_major=8),
    ]


def restore_runbook() -> str:
    """The proxmox-ha restore runbook of docs/backup.md, its shell blocks dedented."""
    page = (Path(main.__file__).parent / "docs" / "backup.md").read_text()
    section = page[page.index("### proxmox-ha") : page.index("### Other stacks")]
    return section[section.index("Restore (all servers") :]


def runbook_blocks() -> list[str]:
    return [
        "\n".join(line.removeprefix("   ") for line in block.splitlines())
        for block in re.findall(r"```bash\n(.*?)```", restore_runbook(), re.S)
    ]


def test_the_restore_runbook_reruns_every_step_the_restored_cluster_no_longer_matches(stack_json):
    """After an etcd restore, the cluster is the snapshot's and the state the last apply's: every
    terraform_data step but the kubeconfig fetch (the restore writes the same CA back) either wrote
    into the cluster (a Secret, back to its value at the snapshot while the state keeps the hashes of
    the current one) or waited for something in it (GPU workers, Fleet's CRD), and no plan re-runs
    it. The runbook's apply replaces each by the address the synthesized stack has."""
    (apply,) = [b.replace("\\\n", " ") for b in runbook_blocks() if "apply" in b and "-replace=" in b]
    assert apply.startswith("terraform -chdir=cdktf.out/stacks/proxmox-ha apply ")
    replaced = re.findall(r"-replace=(\S+)", apply)
    for address in replaced:
        kind, name = address.split(".", 1)
        assert name in resources(stack_json, kind), address
    steps = resources(stack_json, "terraform_data")
    (kubeconfig,) = [k for k, v in steps.items() if "fetch-kubeconfig.sh:API_SERVER" in v["triggers_replace"]]
    writers = [
        k
        for k, v in steps.items()
        for p in v.get("provisioner", [])
        if "SECRET_NAME=" in " ".join(p.get("remote-exec", {}).get("inline", []))
    ]
    assert len(writers) == 3
    assert sorted(replaced) == sorted(f"terraform_data.{k}" for k in steps if k != kubeconfig)


def test_the_restore_runbook_finds_the_releases_upgraded_after_the_snapshot(stack_json, tmp_path):
    """A release the restored cluster runs at an older revision than the state records was upgraded
    after the snapshot, and helm provider v3.1.1 does not read its values back (setReleaseAttributes):
    the runbook's loop, run on the state's JSON (helm_release's metadata is an object) and helm's
    history, names exactly those, by address; a release the cluster lacks is left to the refresh."""
    (loop,) = [b for b in runbook_blocks() if "show -json" in b]
    names = sorted(resources(stack_json, "helm_release"))
    state = {
        "values": {
            "root_module": {
                "resources": [
                    {
                        "address": f"helm_release.{name}",
                        "type": "helm_release",
                        "values": {
                            "name": release["name"],
                            "namespace": release["namespace"],
                            "metadata": {"revision": 3},
                        },
                    }
                    for name, release in resources(stack_json, "helm_release").items()
                ]
                + [{"address": "terraform_data.x", "type": "terraform_data", "values": {}}]
            }
        }
    }
    upgraded, missing = names[0], names[1]
    in_cluster = {
        resources(stack_json, "helm_release")[name]["name"]: 2 if name == upgraded else 3
        for name in names
        if name != missing
    }
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "state.json").write_text(json.dumps(state))
    (tmp_path / "history.json").write_text(json.dumps(in_cluster))
    (bin_dir / "terraform").write_text(f'#!/bin/sh\n[ "$2" = show ] && cat {tmp_path}/state.json\n')
    (bin_dir / "helm").write_text(
        "#!/bin/sh\n"
        f"rev=$(jq -r --arg n \"$4\" '.[$n] // empty' {tmp_path}/history.json)\n"
        '[ -n "$rev" ] || { echo "Error: release: not found" >&2; exit 1; }\n'
        'echo "[{\\"revision\\": 1}, {\\"revision\\": $rev}]"\n'
    )
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", loop],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"-replace=helm_release.{upgraded}"]


def test_the_page_says_how_etcd_setting_changes_reach_the_running_servers(stack_json, tmp_path):
    """The servers' etcd settings are cloud-init's config.yaml, read by k3s at start, and cp1 is
    never rebuilt: a new etcd_snapshot_cron, etcd_snapshot_retention or etcd_s3 reaches it only
    by the page's procedure. Its two scripts, run here, take the settings from the synthesized
    stack and replace every etcd-* line of a server's config (a pre-Secret server's S3 options
    included), leaving the rest and the file's mode as they are; etcd_s3=False turns uploads off."""
    section = page_section("etcd snapshots")
    extract, update = re.findall(r"<<'PY'\n(.*?)\nPY\n", section, re.S)
    addresses = re.search(r"for ip in ([0-9. ]+);", section).group(1).split()
    assert addresses == list(MAIN.overrides.get("control_plane_ips", ("10.0.0.11", "10.0.0.12", "10.0.0.13")))
    assert "systemctl restart k3s" in section and "/readyz/etcd" in section
    (tmp_path / "extract.py").write_text(extract)

    def settings(synthesized: dict) -> dict:
        (tmp_path / "cdk.tf.json").write_text(json.dumps(synthesized))
        run = subprocess.run(
            [sys.executable, str(tmp_path / "extract.py"), str(tmp_path / "cdk.tf.json")],
            capture_output=True,
            text=True,
            check=True,
        )
        return yaml.safe_load(run.stdout)

    expected = {k: v for k, v in k3s_config(stack_json, "cp1").items() if k.startswith("etcd-")}
    assert all(k.startswith(("etcd-s3", "etcd-snapshot-")) for k in expected)
    assert settings(stack_json) == expected and expected["etcd-s3"] is True
    assert settings(synth(etcd_s3=False, etcd_snapshot_cron="0 */4 * * *")) == {
        "etcd-s3": False,
        "etcd-snapshot-schedule-cron": "0 */4 * * *",
        "etcd-snapshot-retention": 28,
    }
    config = tmp_path / "config.yaml"
    kept = {
        "token": "t0ken",
        "node-ip": "10.0.0.12",
        "server": "https://10.0.0.11:6443",
        "tls-san": ["a"],
        "etcd-expose-metrics": True,
    }
    old = {
        "etcd-snapshot-schedule-cron": "0 */12 * * *",
        "etcd-s3": True,
        "etcd-s3-bucket": "b",
        "etcd-s3-secret-key": "s",
    }
    config.write_text(yaml.safe_dump({**kept, **old}))
    config.chmod(0o600)
    assert '"/etc/rancher/k3s/config.yaml"' in update
    (tmp_path / "update.py").write_text(update.replace('"/etc/rancher/k3s/config.yaml"', repr(str(config))))
    subprocess.run(
        [sys.executable, str(tmp_path / "update.py")], input=yaml.safe_dump(expected), text=True, check=True
    )
    assert yaml.safe_load(config.read_text()) == {**kept, **expected}
    assert config.stat().st_mode & 0o777 == 0o600


def test_removing_the_last_worker_destroys_that_worker_only():
    """docs/proxmox-ha.md "Removing a GPU worker": names, VM ids, GPU mappings and host keys follow
    worker_ips' order, so dropping its last address removes that worker's VM, snippets, firewall
    and GPU mappings, changes what counts the workers, and leaves every other resource as it was
    (no other VM, mapping or release is replaced)."""
    section = page_section("Removing a GPU worker")
    assert "remove the last worker only" in section
    full = synth()
    workers = list(MAIN.overrides.get("worker_ips", ProxmoxProps.worker_ips))
    fewer = synth(worker_ips=tuple(workers[:-1]))
    last = f"wk-gpu{len(workers)}"
    gpus = ProxmoxProps.gpus_per_worker
    last_mappings = {f"gpu{i}" for i in range(gpus * (len(workers) - 1), gpus * len(workers))}
    gone, changed = set(), set()
    for kind, named in full["resource"].items():
        for name, resource in named.items():
            after = fewer["resource"].get(kind, {}).get(name)
            if after is None:
                gone.add((kind, name))
            elif after != resource:
                changed.add((kind, name))
    assert all(n.startswith(f"vms_{last}") or n.split("_")[1] in last_mappings for _, n in gone), gone
    assert {k for k, _ in gone} == {
        "proxmox_virtual_environment_vm",
        "proxmox_virtual_environment_file",
        "proxmox_virtual_environment_firewall_rules",
        "proxmox_virtual_environment_firewall_options",
        "proxmox_virtual_environment_hardware_mapping_pci",
    }
    assert len([k for k, _ in gone if k.endswith("mapping_pci")]) == gpus
    assert {k for k, _ in changed} <= {"terraform_data", "helm_release"}
    assert {n for _, n in changed} == {
        "notebook-quota",
        "gpu-nodes-ready",
        next(iter(kubeconfig_names(full))),
    }
    assert not [n for n in fewer["resource"]["proxmox_virtual_environment_vm"] if last in n]
    (kubeconfig,) = kubeconfig_names(full)
    steps = resources(full, "terraform_data"), resources(fewer, "terraform_data")
    assert steps[0][kubeconfig]["triggers_replace"] == steps[1][kubeconfig]["triggers_replace"]


def kubeconfig_names(synthesized: dict) -> list[str]:
    return [
        k
        for k, v in resources(synthesized, "terraform_data").items()
        if "fetch-kubeconfig.sh:API_SERVER" in v["triggers_replace"]
    ]


def test_two_clusters_never_share_a_snapshot_folder():
    """Every cluster names its snapshots etcd-snapshot-cp1-<time> ..., and k3s prunes every object
    under its folder that starts with etcd-snapshot: two proxmox-ha instances in one bucket with one
    folder would overwrite and prune each other's snapshots. The folder defaults to the instance's
    name, which main.py keeps unique."""
    lab = Instance("proxmox-lab", "proxmox-ha", dict(MAIN.overrides))
    synthesized = json.loads(cdktf.Testing.synth(lab.build(cdktf.Testing.app())))
    assert etcd_secret_lines(synthesized)["etcd-s3-folder"] == "proxmox-lab"
    assert etcd_secret_lines(synth())["etcd-s3-folder"] == MAIN.stack
    assert etcd_secret_lines(synth(etcd_s3_folder="lab/etcd"))["etcd-s3-folder"] == "lab/etcd"


# --- Losing cp1 -------------------------------------------------------------------------------------------
_ADDRESS = re.compile(
    r"\b((?:proxmox_virtual_environment_[a-z_]+|terraform_data|helm_release)\.[A-Za-z0-9_-]+)"
)


def cp1_address(synthesized: dict) -> str:
    (name,) = [
        n for n in resources(synthesized, "proxmox_virtual_environment_vm") if n.startswith("vms_cp1_")
    ]
    return f"proxmox_virtual_environment_vm.{name}"


def without_lifecycle(synthesized: dict) -> dict[str, dict]:
    return {
        f"{kind}.{name}": {key: value for key, value in body.items() if key != "lifecycle"}
        for kind, named in synthesized["resource"].items()
        for name, body in named.items()
    }


def test_a_rejoining_cp1_joins_through_cp2_and_nothing_else_changes(stack_json):
    """rejoin_first_server gives cp1 a joining server's k3s config (server: cp2, no cluster-init),
    after cp2 answers; every other VM's user data and every other resource stay as they are, but
    for the lifecycle of what was replaced with cp1."""
    rejoin = synth(rejoin_first_server=True)
    first = k3s_config(rejoin, "cp1")
    assert "cluster-init" not in first and first["server"] == "https://10.0.0.12:6443"
    assert {k: v for k, v in first.items() if k != "server"} == {
        k: v for k, v in k3s_config(stack_json, "cp1").items() if k != "cluster-init"
    }
    runcmd = user_data(rejoin, "cp1")["runcmd"]
    assert runcmd[-2:] == [
        "until curl -ksf https://10.0.0.12:6443/ping; do sleep 10; done",
        user_data(stack_json, "cp1")["runcmd"][-1],
    ]
    for name in ("cp2", "cp3", "wk-gpu1"):
        assert user_data(rejoin, name) == user_data(stack_json, name), name
    before, after = without_lifecycle(stack_json), without_lifecycle(rejoin)
    assert before.keys() == after.keys()
    changed = {address for address in before if before[address] != after[address]}
    (snippet,) = changed
    assert snippet.startswith("proxmox_virtual_environment_file.vms_cp1-user-data_")


def test_a_rebuilt_cp1_replaces_every_release_unless_it_rejoins(stack_json):
    """cp1 with cluster-init is a new cluster when rebuilt: everything installed into the cluster is
    replaced with it. Rejoining, it is one more member of the running cluster: only the VM, its
    firewall and the kubeconfig fetched from it are replaced."""
    rejoin = synth(rejoin_first_server=True)
    cp1 = cp1_address(stack_json)
    releases = {f"helm_release.{name}" for name in resources(stack_json, "helm_release")}
    assert releases and releases <= replacement_of(stack_json, cp1)
    (kubeconfig,) = kubeconfig_names(stack_json)
    assert replacement_of(rejoin, cp1) == {
        cp1,
        f"terraform_data.{kubeconfig}",
        *(
            f"{kind}.{n}"
            for kind in (
                "proxmox_virtual_environment_firewall_rules",
                "proxmox_virtual_environment_firewall_options",
            )
            for n in resources(rejoin, kind)
            if n.startswith("vms_cp1-")
        ),
    }
    for body in resources(rejoin, "helm_release").values():
        assert "replace_triggered_by" not in (body.get("lifecycle") or {})


def replacement_of(synthesized: dict, address: str) -> set[str]:
    from tests.support.lifecycle import replacement

    return replacement.replaced_with(synthesized, address)


def test_the_losing_cp1_runbook_names_what_the_stack_replaces(stack_json):
    """docs/proxmox-ha.md "Losing cp1": every address it names is in the synthesized stack; the walk
    of a replaced cp1 lists what Terraform replaces with it; the rejoin plan lists exactly what
    it replaces (and cp1's new user data); the every-server rebuild replaces the three server VMs
    and targets them and their firewalls only, none of which depends on a release or step."""
    section = page_section("Losing cp1")
    text = section.replace("\\\n", " ")
    every = {f"{kind}.{name}" for kind, named in stack_json["resource"].items() for name in named}
    named = set(_ADDRESS.findall(text))
    assert named and named <= every, named - every
    cp1 = cp1_address(stack_json)
    walk = text[text.index("- Without it,") : text.index("- If cp1's VM is gone")]
    replaced = replacement_of(stack_json, cp1)
    assert set(_ADDRESS.findall(walk)) == {a for a in replaced if not a.startswith("helm_release.")} - {
        cp1,
        *(a for a in replaced if "firewall" in a or "kubeconfig" in a),
    }
    rejoin = synth(rejoin_first_server=True)
    plan = text[text.index("3. Plan the rebuild") : text.index("4. Wait until")]
    (command,) = re.findall(r"```bash\n(.*?)```", plan, re.S)
    assert re.findall(r"-replace=(\S+)", command) == [cp1]
    listed = set(_ADDRESS.findall(plan.split("```", 2)[2]))
    assert listed == replacement_of(rejoin, cp1) | {
        a for a in every if a.startswith("proxmox_virtual_environment_file.vms_cp1-user-data_")
    }
    assert '"rejoin_first_server": True' in text and '"protect_control_plane": False' in text
    assert_cp1_gets_cluster_init_back(text, stack_json, rejoin)
    restore = text[text.index("### Every server lost") :]
    apply, refetch = re.findall(r"```bash\n(.*?)```", restore, re.S)
    (kubeconfig,) = kubeconfig_names(stack_json)
    assert set(re.findall(r"-(?:target|replace)=(\S+)", refetch)) == {f"terraform_data.{kubeconfig}"}
    servers = {a for a in every if re.match(r"proxmox_virtual_environment_vm\.vms_cp\d_", a)}
    assert set(re.findall(r"-replace=(\S+)", apply)) == servers
    targets = set(re.findall(r"-target=(\S+)", apply))
    firewalls = {a for a in every if "firewall" in a and re.search(r"\.vms_cp\d-", a)}
    assert targets == servers | firewalls
    from tests.support.lifecycle import graph

    pulled_in = set().union(*(graph.dependencies(stack_json, t) for t in targets))
    assert not [a for a in pulled_in if a.startswith(("helm_release.", "terraform_data."))]


def assert_cp1_gets_cluster_init_back(text: str, stack_json: dict, rejoin: dict) -> None:
    """The runbook's edit, run on the config a rejoined cp1 booted with, gives the config cp1's user
    data has without the setting: cluster-init, no server (which --cluster-reset refuses)."""
    import tempfile

    ((host, remote),) = re.findall(r'ssh ubuntu@(\S+) "(sudo sed [^"]*)"', text)
    assert host == "10.0.0.11"
    (config_file,) = [
        f for f in user_data(rejoin, "cp1")["write_files"] if f["path"] == "/etc/rancher/k3s/config.yaml"
    ]
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "config.yaml"
        config.write_text(config_file["content"])
        command = (
            remote.replace("\\$", "$")
            .removeprefix("sudo ")
            .replace("/etc/rancher/k3s/config.yaml", str(config))
        )
        subprocess.run(["bash", "-c", command], check=True)
        assert yaml.safe_load(config.read_text()) == k3s_config(stack_json, "cp1")
