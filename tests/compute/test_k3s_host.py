from __future__ import annotations

import json
import re

import pytest

from gpu_constructs.cluster import GpuSharing, Manager
from gpu_constructs.compute.k3s_host import K3sHostGpuCompute, K3sHostProps
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost, script_literal
from tests.conftest import resources

TOKEN = "${var.k3s_token}"


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0xHqY0n3vXbKp7nB8m0f1S7o3b5Yw6x9Zk1Q2R"


def hosts(count: int) -> list[SshHost]:
    return [
        SshHost(f"192.168.1.{100 + i}", "ubuntu", "~/.ssh/id_ed25519", host_key=HOST_KEY)
        for i in range(count)
    ]


def props(**overrides) -> K3sHostProps:
    fields = {"hosts": hosts(1), "k3s_token": TOKEN, "kubeconfig_path": "kube/single-node.yaml"}
    fields.update(overrides)
    return K3sHostProps(**fields)


def build(synth, **overrides):
    made = {}

    def go(stack):
        made["compute"] = K3sHostGpuCompute(stack, "compute", props=props(**overrides))

    return synth(go), made["compute"]


def steps(synthesized) -> dict[str, dict]:
    # Logical ids are "<construct path>_<hash>": compute_server-k3s_CF7027BF -> server-k3s
    return {
        logical_id.removeprefix("compute_").rsplit("_", 1)[0]: body
        for logical_id, body in resources(synthesized, "terraform_data").items()
    }


def inline(step: dict, scripts_only: bool = True) -> list[str]:
    """The commands of the step's last remote-exec: those that run its scripts, or all of them."""
    commands = [p["remote-exec"]["inline"] for p in step["provisioner"] if "remote-exec" in p][-1]
    return [c for c in commands if c.startswith("sudo ")] if scripts_only else commands


def test_server_steps_run_detection_driver_toolkit_and_k3s_in_order(synth):
    synthesized, _ = build(synth)
    found = steps(synthesized)
    assert sorted(found) == [
        "agents-leave",
        "cluster",
        "kubeconfig",
        "node-labels",
        "server-gpu-driver",
        "server-k3s",
    ]
    assert [c.split(" bash ")[1] for c in inline(found["server-gpu-driver"])] == [
        '"$HOME/.gpu-constructs/gpu-detect.sh"',
        '"$HOME/.gpu-constructs/nvidia-driver.sh"',
    ]
    k3s = inline(found["server-k3s"])
    assert "TOOLKIT_VERSION='1.20.0'" in k3s[0]
    assert "K3S_ROLE='server'" in k3s[1] and "NODE_LABELS='nvidia.com/gpu=true'" in k3s[1]
    assert "DISABLE='traefik local-storage'" in k3s[1]
    assert "NODE_TAINTS" not in k3s[1]
    assert found["server-k3s"]["depends_on"] == ["terraform_data.compute_server-gpu-driver_837B4D8C"]


def test_driver_step_waits_for_the_reboot_before_the_next_step_connects(synth):
    step = steps(build(synth)[0])["server-gpu-driver"]
    kinds = [next(iter(p)) for p in step["provisioner"]]
    assert kinds[-3:] == ["remote-exec", "local-exec", "local-exec"]
    local = step["provisioner"][-2]["local-exec"]
    assert "wait-for-reboot.sh" in local["command"] or "boot_id" in local["command"]
    assert local["environment"] == {
        "SSH_USER": "ubuntu",
        "SSH_HOST": "192.168.1.100",
        "SSH_KEY": "~/.ssh/id_ed25519",
        "HOST_KEY": HOST_KEY,
        "WAIT_SECONDS": "900",
    }


def test_open_kernel_modules_by_default_proprietary_as_a_setting(synth):
    driver = inline(steps(build(synth)[0])["server-gpu-driver"])[1]
    assert "DRIVER_KERNEL_MODULES='open'" in driver
    old = inline(steps(build(synth, driver_kernel_modules="proprietary")[0])["server-gpu-driver"])[1]
    assert "DRIVER_KERNEL_MODULES='proprietary'" in old


def test_token_goes_in_a_private_file_not_on_a_command_line_nor_in_triggers(synth):
    synthesized, _ = build(synth)
    k3s = steps(synthesized)["server-k3s"]
    provisioners = k3s["provisioner"]
    commands = [c for p in provisioners if "remote-exec" in p for c in p["remote-exec"]["inline"]]
    assert not [c for c in commands if "k3s_token" in c or "K3S_TOKEN" in c]
    assert "k3s_token" not in str(k3s["triggers_replace"])
    uploads = [p["file"] for p in provisioners if "file" in p]
    (secrets,) = [u for u in uploads if u["destination"].endswith(".env")]
    assert secrets == {
        "content": "K3S_TOKEN=${var.k3s_token}\n",
        "destination": ".gpu-constructs/k3s-install.sh.env",
    }
    # The directory is made private before the file is uploaded into it.
    mkdir = provisioners.index(
        {"remote-exec": {"inline": ["set -e", 'install -d -m 0700 "$HOME/.gpu-constructs"']}}
    )
    assert mkdir < provisioners.index({"file": secrets})
    assert inline(k3s, scripts_only=False)[:2] == [
        "set -e",
        'chmod 0600 "$HOME/.gpu-constructs/k3s-install.sh.env"',
    ]
    assert 'SECRETS_FILE="$HOME/.gpu-constructs/k3s-install.sh.env"' in inline(k3s)[1]


def test_script_change_changes_the_trigger_hash(synth, monkeypatch):
    from gpu_constructs import hostexec

    before = steps(build(synth)[0])["server-k3s"]["triggers_replace"]["scripts"]
    original = hostexec.script_text

    def edited(name: str) -> str:
        return original(name) + ("\n# edited" if name == "k3s-install.sh" else "")

    monkeypatch.setattr(hostexec, "script_text", edited)
    after = steps(build(synth)[0])["server-k3s"]["triggers_replace"]["scripts"]
    assert before != after


def test_scripts_are_escaped_for_terraform_templates(synth):
    from gpu_constructs.hostexec import script_text

    synthesized, _ = build(synth)
    uploads = {
        p["file"]["destination"]: p["file"]["content"]
        for p in steps(synthesized)["server-k3s"]["provisioner"]
        if "file" in p
    }
    content = uploads[".gpu-constructs/k3s-install.sh"]
    assert "$${K3S_ROLE:?" in content
    # What Terraform renders from the template is the script, byte for byte.
    assert content.replace("$${", "${").replace("%%{", "%{") == script_text("k3s-install.sh")


def test_agents_join_the_server_after_it_is_up(synth):
    synthesized, compute = build(synth, hosts=hosts(3))
    found = steps(synthesized)
    assert {"agent-1-k3s", "agent-2-k3s", "agent-1-gpu-driver", "agent-2-gpu-driver"} <= set(found)
    agent = found["agent-2-k3s"]
    assert "K3S_URL='https://192.168.1.100:6443'" in inline(agent)[1]
    assert "terraform_data.compute_server-k3s_CF7027BF" in agent["depends_on"]
    assert compute.cluster.gpu_capacity == 3
    assert len(found["kubeconfig"]["depends_on"]) == 3


def test_the_cluster_is_the_servers_datastore_not_its_k3s_install(synth):
    """A new k3s version or setting re-runs the k3s steps and replaces nothing in the cluster; a new
    server host (or a -replace of the datastore resource) re-runs every k3s step, and everything
    installed into the cluster is replaced with it (its id is the cluster's identity)."""
    synthesized, compute = build(synth, hosts=hosts(3))
    found = steps(synthesized)
    (address,) = [f"terraform_data.{i}" for i in resources(synthesized, "terraform_data") if "_cluster_" in i]
    assert found["cluster"]["triggers_replace"] == {"server": "192.168.1.100"}
    assert "provisioner" not in found["cluster"]
    for name in ("server-k3s", "agent-1-k3s", "agent-2-k3s"):
        assert found[name]["triggers_replace"]["cluster"] == f"${{{address}.id}}", name
    for name in ("server-gpu-driver", "kubeconfig"):
        assert "cluster" not in found[name]["triggers_replace"], name
    assert compute.cluster.identity == (compute.datastore,)
    assert compute.cluster.installed()["lifecycle"].replace_triggered_by == [f"{address}.id"]
    upgraded, _ = build(synth, hosts=hosts(3), k3s_version="v1.35.6+k3s1")
    assert steps(upgraded)["cluster"] == found["cluster"]


def test_taint_when_asked_for(synth):
    synthesized, compute = build(synth, taint_gpu_nodes=True)
    assert "NODE_TAINTS='nvidia.com/gpu=true:NoSchedule'" in inline(steps(synthesized)["server-k3s"])[1]
    assert str(compute.cluster.gpu_taint) == "nvidia.com/gpu=true:NoSchedule"


def test_labels_and_taints_reach_registered_nodes_through_the_api_on_a_change(synth):
    synthesized, compute = build(synth, hosts=hosts(2))
    found = steps(synthesized)
    step = found["node-labels"]
    (command,) = inline(step)
    assert "NODE_IPS='192.168.1.100 192.168.1.101'" in command
    assert "NODE_LABELS='nvidia.com/gpu=true'" in command and "NODE_TAINTS=''" in command
    assert step["triggers_replace"]["node-labels.sh:NODE_TAINTS"] == ""
    assert len(step["depends_on"]) == 2
    # A reinstalled k3s re-registers its nodes: the step runs again.
    assert step["triggers_replace"]["k3s-0"] == "${terraform_data.compute_server-k3s_CF7027BF.id}"
    assert compute.node_labels in compute.cluster.ready
    tainted = steps(build(synth, hosts=hosts(2), taint_gpu_nodes=True)[0])["node-labels"]
    assert tainted["triggers_replace"]["node-labels.sh:NODE_TAINTS"] == "nvidia.com/gpu=true:NoSchedule"
    bare = steps(build(synth, gpu_enabled=False)[0])["node-labels"]
    assert bare["triggers_replace"]["node-labels.sh:NODE_LABELS"] == ""


def test_without_gpu_no_nvidia_steps_and_no_capacity(synth):
    synthesized, compute = build(synth, gpu_enabled=False)
    found = steps(synthesized)
    assert sorted(found) == ["agents-leave", "cluster", "kubeconfig", "node-labels", "server-k3s"]
    assert "NODE_LABELS" not in inline(found["server-k3s"])[0]
    assert compute.cluster.gpu_capacity == 0


def test_contract_says_the_host_owns_driver_and_toolkit(synth):
    _, compute = build(synth, sharing=GpuSharing(time_slicing_replicas=4))
    cluster = compute.cluster
    assert (cluster.driver, cluster.toolkit) == (Manager.HOST, Manager.HOST)
    assert cluster.runtime_class == "nvidia"
    assert cluster.gpu_capacity == 4
    assert cluster.access.config_path is None
    assert cluster.access.host == "https://192.168.1.100:6443"


def _provider_access(synth, **overrides):
    """The helm provider's kubernetes block and the data source it reads, as a stack declares them."""
    from cdktf_cdktf_provider_helm.provider import HelmProvider

    def go(stack):
        compute = K3sHostGpuCompute(stack, "compute", props=props(**overrides))
        HelmProvider(stack, "k3s-helm", alias="k3s", kubernetes=compute.cluster.access.helm_kubernetes())

    synthesized = synth(go)
    ((ca_id, ca),) = synthesized["data"]["external"].items()
    (kubernetes,) = [p["kubernetes"] for p in synthesized["provider"]["helm"] if p.get("alias") == "k3s"]
    return synthesized, kubernetes, ca_id, ca


def test_providers_derive_their_access_from_the_server_at_every_run(synth):
    """No kubeconfig file: the API address from the settings, the CA read at plan from the server,
    the client certificate from the exec plugin; both over SSH with the pinned key."""
    synthesized, kubernetes, ca_id, ca = _provider_access(synth)
    assert "config_path" not in kubernetes and "config_paths" not in kubernetes
    assert kubernetes["host"] == "https://192.168.1.100:6443"
    assert (
        kubernetes["cluster_ca_certificate"] == f"${{base64decode(data.external.{ca_id}.result.ca_base64)}}"
    )
    execution = kubernetes["exec"]
    assert execution["api_version"] == "client.authentication.k8s.io/v1"
    assert execution["command"] == "env"
    assert execution["args"][-5:-2] == ["bash", "-c", script_literal("kube-access.sh")]
    assert execution["args"][-2:] == ["kube-access", "credential"]
    assert ca["program"][0] == "env" and ca["program"][-2:] == ["kube-access", "ca"]
    ca_settings = [arg for arg in ca["program"][1:] if not arg.startswith("CA_WAIT_SECONDS=")]
    for program in (execution["args"], ca_settings):
        assert program[:4] == [
            f"HOST_KEY={HOST_KEY}",
            "SSH_HOST=192.168.1.100",
            "SSH_KEY=~/.ssh/id_ed25519",
            "SSH_USER=ubuntu",
        ]
    assert synthesized["terraform"]["required_providers"]["external"] == {
        "source": "hashicorp/external",
        "version": "2.3.5",
    }


def test_the_ca_is_read_at_plan_on_every_deployed_cluster_and_waited_for_on_a_first_apply(synth):
    """The data source's query references only the cluster step: a resource with no dependency that
    every earlier version of the stack has in its state (the k3s steps are keyed on it), replaced
    with the datastore only. So the query is known on every plan of a deployed cluster, and the helm
    provider never refreshes releases with an unknown CA (helm v3.1.1 Read then drops them from the
    state). On a first apply the script waits for k3s.yaml instead of an ordering step."""
    synthesized, _, _, ca = _provider_access(synth)
    found = steps(synthesized)
    (cluster,) = [i for i in resources(synthesized, "terraform_data") if i.startswith("compute_cluster_")]
    assert ca["query"] == {"cluster": f"${{terraform_data.{cluster}.id}}"}
    referenced = set(re.findall(r"\$\{([a-z_]+\.[A-Za-z0-9_-]+)", json.dumps(ca)))
    assert referenced == {f"terraform_data.{cluster}"}
    assert "depends_on" not in ca
    assert "depends_on" not in found["cluster"]
    assert found["cluster"]["triggers_replace"] == {"server": "192.168.1.100"}
    program = ca["program"]
    assert "CA_WAIT_SECONDS=2700" in program  # reboot_wait_seconds (900) + the driver and k3s steps


@pytest.mark.parametrize(
    ("change", "replaces"),
    [
        ({"k3s_version": "v1.35.6+k3s1"}, False),
        ({"disable": ("traefik", "servicelb")}, False),
        ({"cluster_cidr": "10.52.0.0/16"}, False),
        ({"driver_branch": "575"}, False),
        ({"hosts": [SshHost("192.168.1.101", "ubuntu", "~/.ssh/id_ed25519", host_key=HOST_KEY)]}, True),
    ],
)
def test_only_a_new_server_replaces_what_the_ca_read_is_keyed_on(synth, change, replaces):
    """A k3s upgrade or config change re-runs the k3s step but leaves the cluster step (and so the
    CA's query) as it is: the CA stays known at plan."""
    before = steps(_provider_access(synth)[0])
    after = steps(_provider_access(synth, **change)[0])
    assert (after["cluster"] != before["cluster"]) is replaces
    if "k3s_version" in change:
        assert after["server-k3s"] != before["server-k3s"]


def test_nothing_the_providers_read_is_a_file_from_an_earlier_apply(synth):
    """The kubeconfig copy is for kubectl only: no release waits for it, and a plan on a machine
    without it (a clean checkout, a CI runner) is not refused."""
    synthesized, kubernetes, _, _ = _provider_access(synth)
    assert "file(" not in json.dumps(kubernetes) and "fileexists(" not in json.dumps(kubernetes)
    kubeconfig = steps(synthesized)["kubeconfig"]
    assert "lifecycle" not in kubeconfig
    _, compute = build(synth)
    ready = compute.cluster.installed()["depends_on"]
    assert compute.kubeconfig not in ready
    assert compute.node_labels in ready


def test_kubeconfig_fetch_runs_locally_with_the_server_address(synth):
    step = steps(build(synth)[0])["kubeconfig"]
    local = step["provisioner"][0]["local-exec"]
    assert local["interpreter"] == ["bash", "-c"]
    assert local["environment"]["SSH_HOST"] == "192.168.1.100"
    assert local["environment"]["KUBECONFIG_OUT"] == "kube/single-node.yaml"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hosts": []}, r"'hosts' is \[\]: give at least one host"),
        (
            {"k3s_token": "hunter2"},
            r"'k3s_token' is '<literal>': pass a reference to a sensitive Terraform variable",
        ),
        ({"k3s_version": "1.35"}, r"'k3s_version' is '1.35': give a pinned version such as v1.35.5\+k3s1"),
        ({"driver_branch": "latest"}, r"'driver_branch' is 'latest': give a pinned version such as 580"),
        ({"toolkit_version": "v1.20"}, r"'toolkit_version' is 'v1.20'"),
        ({"driver_kernel_modules": "nouveau"}, r"'driver_kernel_modules' is 'nouveau': use one of open"),
        (
            {"driver_branch": "470"},
            r"'driver_branch' is '470': NVIDIA ships open kernel modules from branch 515; .*proprietary",
        ),
        ({"reboot_wait_seconds": 5}, r"'reboot_wait_seconds' is 5: use from 60 to 3600"),
        ({"gpus_per_node": 0}, r"'gpus_per_node' is 0: use from 1 to 16"),
        ({"cluster_cidr": "10.42.0.0/33"}, r"'cluster_cidr' is '10.42.0.0/33': give an IPv4 network"),
        ({"service_cidr": "10.42.128.0/17"}, r"'service_cidr' is '10.42.128.0/17': it overlaps cluster_cidr"),
        ({"disable": ("nginx",)}, r"'disable' is 'nginx': use one of traefik"),
    ],
)
def test_bad_settings_fail_with_field_value_and_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)


def test_every_connection_checks_the_host_key(synth):
    synthesized, compute = build(synth, hosts=hosts(2))
    found = steps(synthesized)
    for name in ("server-gpu-driver", "server-k3s", "agent-1-gpu-driver", "agent-1-k3s"):
        assert found[name]["connection"]["host_key"] == HOST_KEY, name
    assert found["kubeconfig"]["provisioner"][0]["local-exec"]["environment"]["HOST_KEY"] == HOST_KEY
    (ca,) = synthesized["data"]["external"].values()
    assert f"HOST_KEY={HOST_KEY}" in ca["program"]
    assert f"HOST_KEY={HOST_KEY}" in compute.cluster.access.exec_args


def test_a_host_without_a_host_key_is_refused_unless_the_check_is_switched_off(synth):
    bare = [SshHost("192.168.1.100", "ubuntu", "~/.ssh/id_ed25519")]
    with pytest.raises(
        ConfigError, match=r"'hosts\[0\].host_key' is None: give the public key of 192.168.1.100"
    ):
        props(hosts=bare)
    synthesized, _ = build(synth, hosts=bare, verify_host_keys=False)
    found = steps(synthesized)
    assert "host_key" not in found["server-k3s"]["connection"]
    assert "HOST_KEY" not in found["kubeconfig"]["provisioner"][0]["local-exec"]["environment"]
    (ca,) = synthesized["data"]["external"].values()
    assert not [arg for arg in ca["program"] if arg.startswith("HOST_KEY=")]


def test_a_malformed_host_key_fails_at_synth():
    with pytest.raises(
        ConfigError,
        match=r"'host_key' is 'SHA256:abc': give the host's keys as 'ssh-keyscan <address>' prints",
    ):
        SshHost("192.168.1.100", "ubuntu", "~/.ssh/id", host_key="SHA256:abc")


ECDSA_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg="
RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7"


def test_a_host_given_every_key_type_pins_the_one_terraform_negotiates(synth):
    """ssh-keyscan's output of a stock Ubuntu host: Terraform's Go client picks ECDSA, so that is
    the key every connection (and the local scripts) must check."""
    keyscan = "\n".join(
        [
            "# 192.168.1.100:22 SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5",
            f"192.168.1.100 {RSA_KEY}",
            f"192.168.1.100 {HOST_KEY}",
            f"192.168.1.100 {ECDSA_KEY}",
        ]
    )
    host = SshHost("192.168.1.100", "ubuntu", "~/.ssh/id_ed25519", host_key=keyscan)
    synthesized, _ = build(synth, hosts=[host])
    found = steps(synthesized)
    assert found["server-k3s"]["connection"]["host_key"] == ECDSA_KEY
    assert found["kubeconfig"]["provisioner"][0]["local-exec"]["environment"]["HOST_KEY"] == ECDSA_KEY
    without_ecdsa = SshHost("192.168.1.100", "ubuntu", "~/.ssh/id", host_key=f"{HOST_KEY}\n{RSA_KEY}")
    assert without_ecdsa.pinned_host_key == RSA_KEY


def test_bad_host_address_fails():
    with pytest.raises(ConfigError, match=r"'address' is '192.168.1.300': give an IPv4 address"):
        SshHost("192.168.1.300", "ubuntu", "~/.ssh/id")


def test_references_are_left_for_terraform_to_check():
    assert SshHost("${var.server_ip}", "ubuntu", "~/.ssh/id").address == "${var.server_ip}"
    assert props(k3s_token="${var.k3s_token}").k3s_token == "${var.k3s_token}"


def test_contract_carries_the_containerd_template_of_the_installed_k3s(synth):
    _, new = build(synth)
    assert new.cluster.containerd is not None
    assert new.cluster.containerd.config.endswith("/config-v3.toml.tmpl")
    _, old = build(synth, k3s_version="v1.30.4+k3s1")
    assert old.cluster.containerd is not None
    assert old.cluster.containerd.config.endswith("/config.toml.tmpl")


def _snapshots(access_key="${var.a}", secret_key="${var.s}", **overrides):
    from gpu_constructs.backup import ObjectStore
    from gpu_constructs.compute.k3s.etcd import EtcdS3, EtcdSnapshots

    store = ObjectStore(bucket="ffe-backups", endpoint="http://minio.lan:9000", path="lab")
    s3 = EtcdS3.from_object_store(store, access_key=access_key, secret_key=secret_key)
    return EtcdSnapshots(s3=s3, **overrides)


def test_etcd_snapshots_reach_only_the_server_and_its_keys_only_as_a_hash(synth):
    from cdktf import TerraformVariable

    def go(stack):
        a = TerraformVariable(stack, "a", type="string", sensitive=True).string_value
        s = TerraformVariable(stack, "s", type="string", sensitive=True).string_value
        K3sHostGpuCompute(stack, "compute", props=props(hosts=hosts(2), etcd_snapshots=_snapshots(a, s)))

    found = steps(synth(go))
    server, agent = found["server-k3s"], found["agent-1-k3s"]
    triggers = server["triggers_replace"]
    assert triggers["k3s-install.sh:ETCD_S3_ENDPOINT"] == "minio.lan:9000"
    assert triggers["k3s-install.sh:ETCD_S3_INSECURE"] == "true"
    assert triggers["k3s-install.sh:ETCD_S3_FOLDER"] == "lab/k3s"
    # One server prunes the bucket's folder: it keeps as many as the server's disk.
    assert (
        triggers["k3s-install.sh:ETCD_S3_RETENTION"]
        == triggers["k3s-install.sh:ETCD_SNAPSHOT_RETENTION"]
        == "28"
    )
    assert triggers["etcd_s3_keys_sha256"] == '${sha256("${var.a}:${var.s}")}'
    others = {k: v for k, v in triggers.items() if k != "etcd_s3_keys_sha256"}
    assert "var.a" not in str(others) and "var.s}" not in str(others)
    assert not [c for c in inline(server) if "var.a" in c or "var.s}" in c]
    assert not [k for k in agent["triggers_replace"] if "ETCD" in k or "etcd" in k]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retention": 0}, "'etcd_snapshot_retention' is 0"),
        ({"schedule_cron": "daily"}, "etcd_snapshot_cron"),
    ],
)
def test_bad_etcd_snapshot_settings_fail_at_synth(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(etcd_snapshots=_snapshots(**overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"servers": 3}, r"'etcd_snapshots\.servers' is 3"),
        ({"in_cluster_secret": True}, r"'etcd_snapshots\.in_cluster_secret' is True"),
    ],
)
def test_etcd_snapshots_of_a_cluster_on_hosts_have_one_server_and_their_s3_settings_in_its_config(
    overrides, message
):
    """hosts[0] is the only server: S3 retention counts one server's snapshots, and no step writes
    the in-cluster S3 Secret, so the S3 settings must be in the server's config."""
    with pytest.raises(ConfigError, match=message):
        props(etcd_snapshots=_snapshots(**overrides))


def test_single_node_refuses_a_zero_etcd_retention():
    from environments.single_node import SingleNodeSettings

    with pytest.raises(ConfigError, match="etcd_snapshot_retention"):
        SingleNodeSettings(etcd_snapshot_retention=0)


def _local_scripts(step: dict) -> list[tuple[int, str, dict]]:
    """(position, script's first comment line, environment) of each local-exec of a step."""
    found = []
    for position, provisioner in enumerate(step["provisioner"]):
        if "local-exec" in provisioner:
            body = provisioner["local-exec"]
            found.append((position, body["command"].splitlines()[1], body["environment"]))
    return found


def test_the_driver_step_drains_first_and_uncordons_after_the_boot_check(synth):
    """Order inside the step: uploads, drain (asks the uploaded nvidia-driver.sh), the driver,
    the reboot wait with nvidia-smi, uncordon. The drain runs on the server for every node."""
    synthesized, _ = build(synth, hosts=hosts(2))
    for name, node_ip, bypass in (
        ("server-gpu-driver", "192.168.1.100", "0"),
        ("agent-1-gpu-driver", "192.168.1.101", "0"),
    ):
        step = steps(synthesized)[name]
        kinds = [next(iter(p)) for p in step["provisioner"]]
        remote = max(i for i, kind in enumerate(kinds) if kind == "remote-exec")
        (drain, wait, uncordon) = _local_scripts(step)
        assert kinds[: drain[0]].count("file") == 2 and drain[0] < remote < wait[0] < uncordon[0]
        assert "Drain a node" in drain[1] and "Wait until" in wait[1] and "Drain a node" in uncordon[1]
        assert (drain[2]["MODE"], uncordon[2]["MODE"]) == ("drain", "uncordon")
        for env in (drain[2], uncordon[2]):
            assert env["SSH_HOST"] == "192.168.1.100" and env["NODE_SSH_HOST"] == node_ip
            assert env["HOST_KEY"] == HOST_KEY and env["NODE_HOST_KEY"] == HOST_KEY
        assert drain[2]["DRIVER_BRANCH"] == "580" and drain[2]["BYPASS_PDB"] == bypass
    single = steps(build(synth)[0])["server-gpu-driver"]
    assert _local_scripts(single)[0][2]["BYPASS_PDB"] == "1"


@pytest.mark.parametrize(
    ("count", "database", "bypass"), [(2, 1, "1"), (3, 1, "1"), (2, 2, "0"), (2, 0, "0"), (1, 3, "1")]
)
def test_a_drain_never_relies_on_evicting_a_single_instance_database(synth, count, database, bypass):
    """CloudNativePG's primary budget (minAvailable 1) cannot be met by one instance on any host
    count: every drain then deletes rather than evicts, or it would wait 10 minutes and fail."""
    found = steps(build(synth, hosts=hosts(count), database_instances=database)[0])
    drains = [_local_scripts(step)[0][2] for name, step in found.items() if name.endswith("-gpu-driver")]
    assert len(drains) == count
    assert {env["BYPASS_PDB"] for env in drains} == {bypass}


def test_driver_steps_run_one_host_after_the_other_server_first(synth):
    """A driver upgrade drains and reboots one node at a time; an agent's drain never asks a server
    that is rebooting for its own driver."""
    synthesized, _ = build(synth, hosts=hosts(3))
    ids = {
        name: i
        for i in resources(synthesized, "terraform_data")
        for name in [i.removeprefix("compute_").rsplit("_", 1)[0]]
    }
    found = steps(synthesized)
    assert found["server-gpu-driver"].get("depends_on") is None
    assert found["agent-1-gpu-driver"]["depends_on"] == [f"terraform_data.{ids['server-gpu-driver']}"]
    assert found["agent-2-gpu-driver"]["depends_on"] == [f"terraform_data.{ids['agent-1-gpu-driver']}"]


def test_each_agent_leaves_through_a_destroy_time_step_keyed_by_its_address(synth):
    synthesized, compute = build(synth, hosts=hosts(3))
    found = steps(synthesized)
    leave = found["agents-leave"]
    assert leave["for_each"] == '${toset(["192.168.1.101", "192.168.1.102"])}'
    (provisioner,) = leave["provisioner"]
    local = provisioner["local-exec"]
    assert local["when"] == "destroy" and local["interpreter"] == ["bash", "-c"]
    assert local["command"] == script_literal("delete-node.sh")
    # At destroy only the instance's own values are there: everything comes from self.input.
    assert local["environment"] == {key: f"${{self.input.{key}}}" for key in leave["input"]}
    assert "connection" not in leave
    settings = leave["input"]
    assert settings["NODE_IP"] == "${each.key}"
    assert (settings["SSH_HOST"], settings["HOST_KEY"]) == ("192.168.1.100", HOST_KEY)
    assert settings["NODE_HOST_KEY"] == (
        f'${{zipmap(["192.168.1.101", "192.168.1.102"], ["{HOST_KEY}", "{HOST_KEY}"])[each.key]}}'
    )
    assert (settings["API_GONE"], settings["UNINSTALL_AGENT"], settings["WARN_LOCAL_VOLUMES"]) == (
        "fail",
        "1",
        "1",
    )
    # Destroyed before every node's k3s step, and after the releases (which wait for it).
    assert leave["depends_on"] == [
        "terraform_data.compute_server-k3s_CF7027BF",
        "terraform_data.compute_agent-1-k3s_3CEF8888",
        "terraform_data.compute_agent-2-k3s_C46D1CEB",
    ]
    assert compute.agents_leave in compute.cluster.ready
    # a new datastore is a new cluster: the agents leave the old one before they join it
    assert leave["triggers_replace"] == {"cluster": "${terraform_data.compute_cluster_E15A6318.id}"}


def test_a_single_host_keeps_an_empty_leave_step(synth):
    leave = steps(build(synth)[0])["agents-leave"]
    assert leave["for_each"] == "${toset([])}"


def test_unverified_host_keys_reach_the_leave_step_empty(synth):
    unverified = [SshHost(f"192.168.1.{100 + i}", "ubuntu", "~/.ssh/id_ed25519") for i in range(2)]
    synthesized, _ = build(synth, hosts=unverified, verify_host_keys=False)
    settings = steps(synthesized)["agents-leave"]["input"]
    assert settings["HOST_KEY"] == ""
    assert settings["NODE_HOST_KEY"] == '${zipmap(["192.168.1.101"], [""])[each.key]}'
