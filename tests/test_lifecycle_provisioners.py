"""Gate: every remote-exec and local-exec of every stack fails when any one of its commands fails,
run the way Terraform runs it (model and upstream references in tests/lifecycle/provisioners.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import cdktf
import pytest

import main
from tests.lifecycle import provisioners

STACKS = [instance.stack for instance in main.INSTANCES]

# (stack, provisioner) -> issue that fixes it
KNOWN = {
    ("single-node", "terraform_data.compute_server-gpu-driver_837B4D8C provisioner[2] remote-exec"): 20,
    ("single-node", "terraform_data.compute_server-k3s_CF7027BF provisioner[4] remote-exec"): 20,
    ("single-node", "terraform_data.networking_cloudflare-secret_93FB5B4A provisioner[3] remote-exec"): 20,
    ("proxmox-ha", "terraform_data.networking_cloudflare-secret_93FB5B4A provisioner[3] remote-exec"): 22,
}


@cache
def _synthesized(stack: str) -> str:
    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return cdktf.Testing.synth(instance.build(cdktf.Testing.app()))


def stack_json(stack: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_synthesized(stack))
    return result


def unexpected(stack: str, synthesized: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Findings not in KNOWN, and KNOWN entries of the stack that no longer occur."""
    found = provisioners.findings(stack, synthesized)
    new = {name: message for name, message in found.items() if (stack, name) not in KNOWN}
    gone = [name for (known_stack, name) in KNOWN if known_stack == stack and name not in found]
    return new, gone


@pytest.mark.parametrize("stack", STACKS)
def test_every_command_failure_fails_its_provisioner(stack):
    new, gone = unexpected(stack, stack_json(stack))
    assert new == {}, f"{stack}: a failing command would not fail the provisioner"
    assert gone == [], f"{stack}: fixed, remove from KNOWN in {__file__}"


def test_the_gate_sees_provisioners():
    """Not vacuous: the stacks have remote-exec inline lists and local-exec commands to check."""
    found = [p for stack in STACKS for p in provisioners.provisioners_of(stack, stack_json(stack))]
    assert sum(p.kind == "remote-exec" for p in found) >= 5
    assert sum(p.kind == "local-exec" for p in found) >= 4


def _resource(synthesized: dict[str, Any], address: str) -> dict[str, Any]:
    kind, logical_id = address.split(".", 1)
    found: dict[str, Any] = synthesized["resource"][kind][logical_id]
    return found


def test_a_second_inline_command_breaks_the_gate():
    """proxmox-ha's directory step gets a second command: its failure would be ignored."""
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    resource = _resource(synthesized, "terraform_data.networking_cloudflare-secret_93FB5B4A")
    resource["provisioner"][1]["remote-exec"]["inline"].append('chmod 0700 "$HOME/.gpu-constructs"')
    new, _ = unexpected("proxmox-ha", synthesized)
    (message,) = new.values()
    assert "command 1 of 2 (`install ...`) fails and the script exits 0" in message
    assert "without `set -e` first" in message


def test_a_local_exec_command_list_breaks_the_gate():
    synthesized = copy.deepcopy(stack_json("k3d-poc"))
    resource = _resource(synthesized, "terraform_data.k3d_cluster_287F46EA")
    resource["provisioner"][1]["local-exec"]["command"] = "k3d cluster delete gpu-poc; docker volume prune -f"
    new, _ = unexpected("k3d-poc", synthesized)
    assert list(new) == ["terraform_data.k3d_cluster_287F46EA provisioner[1] local-exec"]
    (message,) = new.values()
    assert "2 commands without `set -e` first" in message
    assert "command 1 of 2 (`k3d ...`) fails" in message


def test_set_e_first_satisfies_the_gate():
    """The fix the gate asks for is accepted by both checks; so is `|| exit 1` on each command."""
    synthesized = copy.deepcopy(stack_json("single-node"))
    resource = _resource(synthesized, "terraform_data.compute_server-k3s_CF7027BF")
    inline = resource["provisioner"][4]["remote-exec"]["inline"]
    inline.insert(0, "set -e")
    resource = _resource(synthesized, "terraform_data.compute_server-gpu-driver_837B4D8C")
    inline = resource["provisioner"][2]["remote-exec"]["inline"]
    inline[0] += " || exit 1"
    found = provisioners.findings("single-node", synthesized)
    assert "terraform_data.compute_server-k3s_CF7027BF provisioner[4] remote-exec" not in found
    assert "terraform_data.compute_server-gpu-driver_837B4D8C provisioner[2] remote-exec" not in found


def test_a_fixed_known_finding_must_leave_the_table():
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    resource = _resource(synthesized, "terraform_data.networking_cloudflare-secret_93FB5B4A")
    resource["provisioner"][3]["remote-exec"]["inline"].insert(0, "set -e")
    _, gone = unexpected("proxmox-ha", synthesized)
    assert gone == ["terraform_data.networking_cloudflare-secret_93FB5B4A provisioner[3] remote-exec"]


def test_the_script_is_built_as_terraform_builds_it():
    """generateScripts joins with newlines and a trailing one; UploadScript adds #!/bin/sh."""
    step = provisioners.Provisioner("s", "terraform_data.x", 0, "remote-exec", ("a", "b"), (), "create")
    assert step.script() == "#!/bin/sh\na\nb\n"
    bash = provisioners.Provisioner(
        "s", "terraform_data.x", 0, "remote-exec", ("#!/bin/bash", "a"), (), "create"
    )
    assert bash.script() == "#!/bin/bash\na\n"
    # only the last command's status counts: the stubbed run shows it
    assert provisioners.run_against_stubs(step, fail_at=1)[0] == 0
    assert provisioners.run_against_stubs(step, fail_at=2)[0] == 1
