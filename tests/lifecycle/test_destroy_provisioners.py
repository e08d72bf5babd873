"""Gate: every destroy-time provisioner of every stack references only its own resource (``self``,
``count.index``, ``each.key``, ``path``, ``terraform``), and so does the resource's ``connection``
it is evaluated with; model and Terraform references in tests/support/lifecycle/destroy_provisioners.py.

A destroy runs from the state: Terraform refuses any other reference at validate ("Invalid reference
from destroy provisioner"), and the stacks' Helm, AWS and Linode providers cannot be installed here to
run ``terraform validate``, so the gate reads the synthesized JSON and is checked against real
Terraform on terraform_data configurations, which need no provider.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import terraform_binary
from tests.support.lifecycle import destroy_provisioners


def _stack_names() -> list[str]:
    import main

    return sorted(instance.stack for instance in main.INSTANCES)


@functools.cache
def _synthesized(stack: str) -> str:
    import cdktf

    import main

    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return cdktf.Testing.synth(instance.build(cdktf.Testing.app()))


def synthesized(stack: str) -> dict[str, Any]:
    return json.loads(_synthesized(stack))


@pytest.mark.parametrize("stack", _stack_names())
def test_destroy_time_provisioners_reference_only_their_resource(stack: str):
    assert destroy_provisioners.findings(synthesized(stack)) == []


def _leave_step(stack: dict[str, Any]) -> dict[str, Any]:
    (step,) = [body for name, body in stack["resource"]["terraform_data"].items() if "agents-leave" in name]
    return step


def test_the_gate_sees_the_destroy_time_steps():
    """Not vacuous: the stacks that remove nodes at destroy have such steps, and the gate reads them."""
    single = synthesized("single-node")
    assert [a for a in destroy_provisioners.destroy_time_steps(single) if "agents-leave" in a]
    environment = _leave_step(single)["provisioner"][0]["local-exec"]["environment"]
    assert destroy_provisioners.references(environment) == {"self.input"}
    proxmox = destroy_provisioners.destroy_time_steps(synthesized("proxmox-ha"))
    assert proxmox and all(a.startswith("proxmox_virtual_environment_vm.") for a in proxmox)


def test_a_reference_to_a_variable_breaks_the_gate():
    """single-node's leave step reading the agents' addresses from the variable, as its create-time
    steps do: the destroy would fail at validate."""
    stack = copy.deepcopy(synthesized("single-node"))
    step = _leave_step(stack)
    step["provisioner"][0]["local-exec"]["environment"]["NODE_IP"] = "${element(var.gpu_node_ips, 1)}"
    (finding,) = destroy_provisioners.findings(stack)
    assert finding.reference == "var.gpu_node_ips" and finding.where == "provisioner[0].local-exec"


def test_a_reference_to_another_resource_or_each_value_breaks_the_gate():
    stack = copy.deepcopy(synthesized("proxmox-ha"))
    (address, *_) = destroy_provisioners.destroy_time_steps(stack)
    kind, name = address.split(".", 1)
    body = stack["resource"][kind][name]
    (local,) = [
        p["local-exec"] for p in body["provisioner"] if p.get("local-exec", {}).get("when") == "destroy"
    ]
    local["environment"]["KUBECONFIG"] = "${terraform_data.kubeconfig.output} ${each.value}"
    found = {f.reference for f in destroy_provisioners.findings(stack)}
    assert found == {"terraform_data.kubeconfig", "each.value"}


def test_a_resource_connection_a_destroy_time_provisioner_uses_breaks_the_gate():
    """The resource's own connection is evaluated with its destroy-time provisioners, in the same scope."""
    stack = copy.deepcopy(synthesized("single-node"))
    _leave_step(stack)["connection"] = {"type": "ssh", "host": "${var.gpu_node_ips[0]}", "user": "ubuntu"}
    (finding,) = destroy_provisioners.findings(stack)
    assert (finding.where, finding.reference) == ("connection", "var.gpu_node_ips")


CASES = {
    "${self.input.a}": True,
    "${each.key}": True,
    "${count.index}": True,
    "${path.module}/x": True,
    "${terraform.workspace}": True,
    "${upper(self.input.a)} $${HOME}": True,
    "${[for k in [self.input.a] : k][0]}": True,
    "${each.value}": False,
    "${var.v}": False,
    "${terraform_data.other.id}": False,
    "${local.l}": False,
}


def _validate(directory: Path, command: str, *, with_for_each: bool, connection: str | None = None) -> bool:
    import subprocess

    directory.mkdir()
    step: dict[str, Any] = {
        "input": {"a": "x"},
        "provisioner": [{"local-exec": {"when": "destroy", "command": command}}],
    }
    if with_for_each:
        step["for_each"] = '${toset(["k"])}'
    else:
        step["count"] = 1
    if connection:
        step["connection"] = {"type": "ssh", "host": connection}
    config = {
        "variable": {"v": {"default": "x"}},
        "locals": {"l": "x"},
        "resource": {"terraform_data": {"step": step, "other": {}}},
    }
    (directory / "main.tf.json").write_text(json.dumps(config))
    env = {
        "PATH": "/usr/bin:/bin",
        "CHECKPOINT_DISABLE": "1",
        "HOME": str(directory),
        "TF_IN_AUTOMATION": "1",
    }
    terraform = terraform_binary()
    # init reads the configuration too, and refuses it with the same error
    for command_args in (["init", "-input=false"], ["validate"]):
        result = subprocess.run(
            [terraform, *command_args, "-no-color"],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            break
    if result.returncode != 0:
        assert "Invalid reference from destroy provisioner" in result.stdout + result.stderr, result.stderr
    return result.returncode == 0


def test_the_model_agrees_with_terraform(tmp_path: Path):
    """Real Terraform 1.11 validates each reference the way the gate judges it."""
    for index, (command, expected) in enumerate(CASES.items()):
        stack = {
            "resource": {
                "terraform_data": {
                    "step": {"provisioner": [{"local-exec": {"when": "destroy", "command": command}}]}
                }
            }
        }
        assert (destroy_provisioners.findings(stack) == []) is expected, command
        with_for_each = "count.index" not in command
        assert _validate(tmp_path / str(index), command, with_for_each=with_for_each) is expected, command
    stack = {
        "resource": {
            "terraform_data": {
                "step": {
                    "connection": {"type": "ssh", "host": "${var.v}"},
                    "provisioner": [{"local-exec": {"when": "destroy", "command": "true"}}],
                }
            }
        }
    }
    assert [f.where for f in destroy_provisioners.findings(stack)] == ["connection"]
    assert not _validate(tmp_path / "connection", "true", with_for_each=True, connection="${var.v}")
