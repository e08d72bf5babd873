"""Gate: every remote-exec and local-exec of every stack fails when any one of its commands fails,
run the way Terraform runs it (model and upstream references in tests/support/lifecycle/provisioners.py).

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
from tests.support.lifecycle import provisioners

STACKS = [instance.stack for instance in main.INSTANCES]

# (stack, provisioner) -> issue that fixes it
KNOWN: dict[tuple[str, str], int] = {}


@cache
def _synthesized(stack: str) -> str:
    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return cdktf.Testing.synth(instance.build(cdktf.Testing.app()))


def stack_json(stack: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_synthesized(stack))
    return result


def unexpected(
    stack: str, synthesized: dict[str, Any], known: dict[tuple[str, str], int] = KNOWN
) -> tuple[dict[str, str], list[str]]:
    """Findings not in ``known``, and ``known`` entries of the stack that no longer occur."""
    found = provisioners.findings(stack, synthesized)
    new = {name: message for name, message in found.items() if (stack, name) not in known}
    gone = [name for (known_stack, name) in known if known_stack == stack and name not in found]
    return new, gone


@pytest.mark.parametrize("stack", STACKS)
def test_every_command_failure_fails_its_provisioner(stack):
    new, gone = unexpected(stack, stack_json(stack))
    assert new == {}, f"{stack}: a failing command would not fail the provisioner"
    assert gone == [], f"{stack}: fixed, remove from KNOWN in {__file__}"


# (stack, connection or provisioner) -> issue that fixes it
KNOWN_HOST_KEYS: dict[tuple[str, str], int] = {}


@pytest.mark.parametrize("stack", STACKS)
def test_every_ssh_connection_checks_the_host_key(stack):
    found = provisioners.host_key_findings(stack_json(stack))
    new = {name: message for name, message in found.items() if (stack, name) not in KNOWN_HOST_KEYS}
    gone = [name for (s, name) in KNOWN_HOST_KEYS if s == stack and name not in found]
    assert new == {}, f"{stack}: an SSH connection accepts any host key"
    assert gone == [], f"{stack}: fixed, remove from KNOWN_HOST_KEYS in {__file__}"


def test_the_host_key_gate_sees_connections_and_local_ssh():
    """Not vacuous: without the keys, proxmox-ha's upload and kubeconfig fetch are findings."""
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    secret = _resource(synthesized, "terraform_data.networking_cloudflare-secret_93FB5B4A")
    del secret["connection"]["host_key"]
    kubeconfig = _resource(synthesized, "terraform_data.vms_kubeconfig_AB78E8E5")
    del kubeconfig["provisioner"][0]["local-exec"]["environment"]["HOST_KEY"]
    assert provisioners.host_key_findings(synthesized) == {
        "terraform_data.networking_cloudflare-secret_93FB5B4A connection": "ssh connection without host_key",
        "terraform_data.vms_kubeconfig_AB78E8E5 provisioner[0] local-exec": "local ssh without HOST_KEY",
    }


# (stack, provisioner) -> issue that fixes it
KNOWN_TRIGGERS: dict[tuple[str, str], int] = {}


@pytest.mark.parametrize("stack", STACKS)
def test_every_local_step_reruns_when_its_settings_change(stack):
    found = provisioners.trigger_findings(stack_json(stack))
    new = {name: message for name, message in found.items() if (stack, name) not in KNOWN_TRIGGERS}
    gone = [name for (s, name) in KNOWN_TRIGGERS if s == stack and name not in found]
    assert new == {}, f"{stack}: a local step keeps what it did with an old setting"
    assert gone == [], f"{stack}: fixed, remove from KNOWN_TRIGGERS in {__file__}"


def test_the_trigger_gate_sees_a_setting_left_out():
    """proxmox-ha's kubeconfig step without its API address among the triggers: setting api_vip
    later would never fetch a kubeconfig that points at the VIP."""
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    step = _resource(synthesized, "terraform_data.vms_kubeconfig_AB78E8E5")
    del step["triggers_replace"]["fetch-kubeconfig.sh:API_SERVER"]
    assert provisioners.trigger_findings(synthesized) == {
        "terraform_data.vms_kubeconfig_AB78E8E5 provisioner[0] local-exec": "API_SERVER is not in triggers_replace"
    }
    # a sensitive value is left out on purpose
    synthesized["variable"]["api_address"] = {"type": "string", "sensitive": True}
    step["provisioner"][0]["local-exec"]["environment"]["API_SERVER"] = "${var.api_address}"
    assert provisioners.trigger_findings(synthesized) == {}


def _kubeconfig_fetches(synthesized: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in synthesized.get("resource", {}).get("terraform_data", {}).values()
        if any(
            "fetch-kubeconfig" in str(b.get("local-exec", {}).get("command", ""))
            for b in r.get("provisioner", [])
        )
    ]


@pytest.mark.parametrize("stack", STACKS)
def test_the_kubeconfig_step_fails_the_plan_where_its_file_is_missing(stack):
    """Every later step reads the kubeconfig file: a machine without it gets the command that
    writes it again, at plan, rather than failing releases (a postcondition on self.id, unknown
    while the step is created, is checked at every later plan)."""
    synthesized = stack_json(stack)
    read = {json.dumps(p.get("kubernetes", {}).get("config_path")) for p in synthesized["provider"]["helm"]}
    for step in _kubeconfig_fetches(synthesized):
        (out,) = {
            b["local-exec"]["environment"]["KUBECONFIG_OUT"]
            for b in step["provisioner"]
            if "local-exec" in b and "KUBECONFIG_OUT" in b["local-exec"].get("environment", {})
        }
        if json.dumps(out) not in read:
            continue  # a copy for kubectl that no provider reads (single-node derives its access)
        conditions = [p["condition"] for p in step.get("lifecycle", {}).get("postcondition", [])]
        assert any(f'fileexists("{out}")' in c and "self.id" in c for c in conditions), stack


def test_the_kubeconfig_gate_sees_the_fetches():
    assert all(len(_kubeconfig_fetches(stack_json(s))) == 1 for s in ("single-node", "proxmox-ha"))
    # proxmox-ha's providers read the file its fetch writes: the gate checks that one.
    proxmox = stack_json("proxmox-ha")
    (fetch,) = _kubeconfig_fetches(proxmox)
    (out,) = {
        b["local-exec"]["environment"]["KUBECONFIG_OUT"] for b in fetch["provisioner"] if "local-exec" in b
    }
    assert out in {p["kubernetes"].get("config_path") for p in proxmox["provider"]["helm"]}


def test_the_gate_sees_provisioners():
    """Not vacuous: the stacks have remote-exec inline lists and local-exec commands to check."""
    found = [p for stack in STACKS for p in provisioners.provisioners_of(stack, stack_json(stack))]
    assert sum(p.kind == "remote-exec" for p in found) >= 5
    assert sum(p.kind == "local-exec" for p in found) >= 4


def _resource(synthesized: dict[str, Any], address: str) -> dict[str, Any]:
    kind, logical_id = address.split(".", 1)
    found: dict[str, Any] = synthesized["resource"][kind][logical_id]
    return found


def _without_set_e(inline: list[str]) -> list[str]:
    """The inline list as it was before the steps began with `set -e`."""
    inline[:] = [command for command in inline if command != "set -e"]
    return inline


def test_a_second_inline_command_breaks_the_gate():
    """proxmox-ha's directory step gets a second command: its failure would be ignored."""
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    resource = _resource(synthesized, "terraform_data.networking_cloudflare-secret_93FB5B4A")
    inline = _without_set_e(resource["provisioner"][0]["remote-exec"]["inline"])
    inline.append('chmod 0700 "$HOME/.gpu-constructs"')
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
    k3s = "terraform_data.compute_server-k3s_CF7027BF provisioner[4] remote-exec"
    driver = "terraform_data.compute_server-gpu-driver_837B4D8C provisioner[4] remote-exec"
    k3s_inline = _without_set_e(
        _resource(synthesized, k3s.split()[0])["provisioner"][4]["remote-exec"]["inline"]
    )
    driver_inline = _without_set_e(
        _resource(synthesized, driver.split()[0])["provisioner"][4]["remote-exec"]["inline"]
    )
    assert {k3s, driver} <= set(provisioners.findings("single-node", synthesized))
    k3s_inline.insert(0, "set -e")
    driver_inline[:-1] = [command + " || exit 1" for command in driver_inline[:-1]]
    found = provisioners.findings("single-node", synthesized)
    assert k3s not in found
    assert driver not in found


def test_a_fixed_known_finding_must_leave_the_table():
    synthesized = copy.deepcopy(stack_json("proxmox-ha"))
    address = "terraform_data.networking_cloudflare-secret_93FB5B4A"
    name = f"{address} provisioner[3] remote-exec"
    known = {("proxmox-ha", name): 22}
    inline = _resource(synthesized, address)["provisioner"][3]["remote-exec"]["inline"]
    assert unexpected("proxmox-ha", synthesized, known) == ({}, [name])
    _without_set_e(inline)
    assert unexpected("proxmox-ha", synthesized, known) == ({}, [])


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


def test_a_stub_reads_its_stdin_as_the_real_command_does():
    """`printf ... | kubectl apply -f -` (eks-karpenter's CRD step): kubectl reads all of its stdin.
    A stand-in that exits without reading it lets the writer die of SIGPIPE, and under `pipefail`
    the script fails with 141 whenever the writer is slower than the stand-in. A payload larger
    than a pipe's buffer (64 KiB on Linux, pipe(7)) makes the writer block, so the race is certain."""
    command = (
        "set -euo pipefail; big=\"$(printf '%0100000d' 0)\"; printf '%s\\n' \"$big\" | kubectl apply -f -"
    )
    step = provisioners.Provisioner(
        "s", "terraform_data.x", 0, "local-exec", (command,), ("bash", "-c"), "create"
    )
    status, log = provisioners.run_against_stubs(step, fail_at=0)
    assert status == 0
    assert [line.split(" ", 1)[0] + " " + line.rsplit("/", 1)[1] for line in log] == ["1 kubectl apply -f -"]
    assert provisioners.run_against_stubs(step, fail_at=1)[0] == 1
