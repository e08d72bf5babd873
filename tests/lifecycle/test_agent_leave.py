"""A k3s host leaving the single-node stack, run by real Terraform 1.11: the agents' leave step of
K3sHostGpuCompute with its destroy-time provisioner's command replaced by one that records the
environment Terraform gives it (the script itself runs against a fake server in
tests/scripts/test_scripts.py), beside stand-ins for the k3s steps it depends on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import cdktf

from gpu_constructs.compute.k3s_host import K3sHostGpuCompute, K3sHostProps
from gpu_constructs.hostexec import SshHost
from tests.conftest import terraform_binary

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0xHqY0n3vXbKp7nB8m0f1S7o3b5Yw6x9Zk1Q2R"
RECORD = "NODE_IP SSH_HOST NODE_SSH_USER NODE_HOST_KEY API_GONE UNINSTALL_AGENT"


def _config(addresses: list[str], log: Path) -> dict[str, Any]:
    """The compute's terraform_data steps for these hosts (server first): the leave step as
    synthesized, every other step a stand-in keeping its name and dependencies that records its
    own destroy."""
    stack = cdktf.TerraformStack(cdktf.Testing.app(), "test")
    hosts = [SshHost(address, "ubuntu", "~/.ssh/id_ed25519", host_key=HOST_KEY) for address in addresses]
    K3sHostGpuCompute(
        stack,
        "compute",
        props=K3sHostProps(hosts=hosts, k3s_token="${var.k3s_token}", kubeconfig_path="k.yaml"),
    )
    steps = json.loads(cdktf.Testing.synth(stack))["resource"]["terraform_data"]
    resources = {}
    for name, body in steps.items():
        short = name.removeprefix("compute_").rsplit("_", 1)[0]
        if short == "agents-leave":
            (provisioner,) = body["provisioner"]
            local = provisioner["local-exec"]
            fields = " ".join(f"{key}=${key}" for key in RECORD.split())
            local["command"] = f'echo "leave {fields}" >> {log}'
            resources[name] = {
                key: body[key]
                for key in ("for_each", "input", "triggers_replace", "provisioner", "depends_on")
            }
        else:
            resources[name] = {
                "depends_on": body.get("depends_on", []),
                "provisioner": [
                    {"local-exec": {"when": "destroy", "command": f"echo 'destroy {short}' >> {log}"}}
                ],
            }
    return {"resource": {"terraform_data": resources}}


def _apply(directory: Path, config: dict[str, Any], *args: str) -> str:
    (directory / "main.tf.json").write_text(json.dumps(config))
    env = {"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1", "HOME": str(directory)}
    terraform = terraform_binary()
    for command in (["init", "-input=false"], [*args, "-auto-approve", "-input=false"]):
        result = subprocess.run(
            [terraform, *command, "-no-color"],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_only_the_host_dropped_from_the_hosts_leaves_then_all_agents_leave_before_the_k3s_steps(
    tmp_path: Path,
):
    log = tmp_path / "log"
    log.touch()
    three = ["192.168.1.100", "192.168.1.101", "192.168.1.102"]
    _apply(tmp_path, _config(three, log), "apply")
    assert log.read_text() == ""  # made, nothing ran
    # The agent in the middle is dropped: the other one keeps its instance (keyed by its address),
    # though its index changed and its k3s step is replaced.
    _apply(tmp_path, _config([three[0], three[2]], log), "apply")
    leaves = [line for line in log.read_text().splitlines() if line.startswith("leave")]
    assert leaves == [
        f"leave NODE_IP=192.168.1.101 SSH_HOST=192.168.1.100 NODE_SSH_USER=ubuntu NODE_HOST_KEY={HOST_KEY} "
        "API_GONE=fail UNINSTALL_AGENT=1"
    ]
    # A destroy of everything: the remaining agent leaves while the server's k3s step still stands.
    log.write_text("")
    _apply(tmp_path, _config([three[0], three[2]], log), "destroy")
    lines = log.read_text().splitlines()
    leave = [i for i, line in enumerate(lines) if line.startswith("leave NODE_IP=192.168.1.102 ")]
    assert len(leave) == 1
    k3s = [i for i, line in enumerate(lines) if line.endswith("-k3s")]
    assert k3s and all(leave[0] < i for i in k3s), lines


def test_a_single_host_keeps_the_leave_step_with_no_instance(tmp_path: Path):
    """The block stays with no agents, so the last agent dropped still runs its provisioner:
    Terraform runs none for a resource block removed from the configuration."""
    log = tmp_path / "log"
    log.touch()
    output = _apply(tmp_path, _config(["192.168.1.100", "192.168.1.101"], log), "apply")
    assert "agents-leave" in output
    _apply(tmp_path, _config(["192.168.1.100"], log), "apply")
    assert [line for line in log.read_text().splitlines() if line.startswith("leave")] == [
        f"leave NODE_IP=192.168.1.101 SSH_HOST=192.168.1.100 NODE_SSH_USER=ubuntu NODE_HOST_KEY={HOST_KEY} "
        "API_GONE=fail UNINSTALL_AGENT=1"
    ]
