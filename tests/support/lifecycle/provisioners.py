"""What Terraform runs for a ``remote-exec`` or ``local-exec`` provisioner, and whether a failing
command fails it.

remote-exec (terraform v1.11 ``internal/builtin/provisioners/remote-exec/resource_provisioner.go``):
``generateScripts`` joins the ``inline`` list with ``"\\n"`` (plus a trailing newline) into ONE
script; ``script``/``scripts`` files are each one script. The SSH communicator's ``UploadScript``
(``internal/communicator/ssh/communicator.go``) prepends ``#!/bin/sh`` unless the script starts with
``#!``, makes it executable and runs it; ``runScripts`` fails the provisioner only on that script's
exit status. Nothing adds ``set -e``: a failing command in the middle of an inline list is ignored and
only the last command's status counts.

local-exec (``internal/builtin/provisioners/local-exec/resource_provisioner.go``): ``command`` is
the last argument of ``interpreter`` when given, else of ``/bin/sh -c``; again only the exit status
of the whole invocation counts.

The rule: a provisioner with more than one command makes every command's failure fail the whole
script (``set -e`` before the second command, ``|| exit`` on every command but the last, or one
command). It is checked statically from the text, and dynamically for inline lists and one-line
commands: the script runs under ``/bin/sh`` with every command it calls stubbed, once with each
invocation in turn exiting 1, and must exit non-zero every time. A multi-line local-exec command is
checked statically only; its behaviour is tested against stubs in tests/scripts/test_scripts.py.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.render import resolve_template

# Terraform's default shebang for a script that has none (communicator/ssh DefaultShebang)
DEFAULT_SHEBANG = "#!/bin/sh\n"
# shell builtins and keywords: never stubbed, they are not looked up on PATH
BUILTINS = {"set", "cd", "export", "exit", ":", "true", "false", "test", "[", ".", "umask", "if", "for"}
ERREXIT = re.compile(r"^\s*set\s+(-[a-zA-Z]*e[a-zA-Z]*\b|-o\s+errexit\b)")
OR_EXIT = re.compile(r"\|\|\s*exit(\s+\d+)?\s*$")


@dataclass(frozen=True)
class Provisioner:
    """One provisioner block of a resource, with what Terraform would run for it."""

    stack: str
    address: str  # e.g. terraform_data.compute_server-k3s_CF7027BF
    index: int  # position in the resource's provisioner list
    kind: str  # remote-exec | local-exec
    commands: tuple[str, ...]  # the inline list, or the local-exec command as one entry
    interpreter: tuple[str, ...]  # local-exec only
    when: str  # "create" or "destroy"

    @property
    def name(self) -> str:
        return f"{self.address} provisioner[{self.index}] {self.kind}"

    def script(self) -> str:
        """The script text Terraform hands to the shell (remote-exec) or the command (local-exec)."""
        if self.kind == "local-exec":
            return self.commands[0]
        joined = "\n".join([*self.commands, ""])
        return joined if joined.startswith("#!") else DEFAULT_SHEBANG + joined


def provisioners_of(stack: str, synthesized: dict[str, Any]) -> list[Provisioner]:
    """Every remote-exec and local-exec of a synthesized stack, Terraform references replaced by
    placeholders and ``$${`` escapes undone (tests/support/render.py)."""
    variables = synthesized.get("variable", {})
    found = []
    for kind_name, resources in sorted(synthesized.get("resource", {}).items()):
        for logical_id, resource in sorted(resources.items()):
            for index, block in enumerate(resource.get("provisioner", [])):
                for kind, body in block.items():
                    if kind == "remote-exec":
                        if "inline" in body:
                            commands = list(body["inline"])
                        else:
                            # script/scripts name local files, each run as its own script
                            paths = body.get("scripts") or [body["script"]]
                            commands = [Path(path).read_text() for path in paths]
                        interpreter: list[str] = []
                    elif kind == "local-exec":
                        commands = [body["command"]]
                        interpreter = list(body.get("interpreter") or ["/bin/sh", "-c"])
                    else:
                        continue
                    found.append(
                        Provisioner(
                            stack=stack,
                            address=f"{kind_name}.{logical_id}",
                            index=index,
                            kind=kind,
                            commands=tuple(resolve_template(c, variables) for c in commands),
                            interpreter=tuple(interpreter),
                            when=body.get("when", "create"),
                        )
                    )
    return found


def _logical_lines(text: str) -> list[str]:
    """Non-blank, non-comment lines, backslash continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = (pending + raw).strip()
        pending = ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def static_finding(provisioner: Provisioner) -> str | None:
    """Why a failing command would not fail this provisioner, read from its text; None when it does."""
    if provisioner.kind == "remote-exec":
        lines = _logical_lines("\n".join(provisioner.commands))
    else:
        lines = _logical_lines(provisioner.commands[0])
    # commands split at line ends and at `;` (quoting is not parsed: a `;` inside quotes counts too)
    commands = [part.strip() for line in lines for part in line.split(";") if part.strip()]
    if len(commands) <= 1:
        return None
    if ERREXIT.match(commands[0]):
        return None
    # a remote-exec script is executed as a file, so its own shebang's options apply (#!/bin/sh -e)
    if provisioner.kind == "remote-exec" and re.match(r"#!\S+(\s+\S+)*\s+-[a-z]*e", provisioner.script()):
        return None
    if all(OR_EXIT.search(command) for command in commands[:-1]):
        return None
    return (
        f"{len(commands)} commands without `set -e` first: Terraform runs them as one script and only "
        "the last command's exit status counts"
    )


def _first_words(commands: tuple[str, ...]) -> set[str]:
    """The command names the script's lines start with (after VAR=value assignments)."""
    names = set()
    for line in _logical_lines("\n".join(commands)):
        for part in re.split(r"\|\||&&|[;|]", line):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)]
            if words and words[0] not in BUILTINS and "/" not in words[0]:
                names.add(words[0])
    return names


# A stand-in reads its stdin to the end, as the commands it stands for do (`kubectl apply -f -`,
# `tee`, `sh -s`): one that exits unread kills the writer of a pipe into it with SIGPIPE, which
# `pipefail` turns into a failure whenever the writer is slower than the stand-in.
STUB = """#!/bin/sh
while IFS= read -r _ || [ -n "$_" ]; do :; done
read -r n <"$STUB_STATE/count"
n=$((n + 1))
echo "$n" >"$STUB_STATE/count"
echo "$n $0 $*" >>"$STUB_STATE/log"
[ "$n" = "$STUB_FAIL_AT" ] && exit 1
exit 0
"""


def run_against_stubs(provisioner: Provisioner, fail_at: int) -> tuple[int, list[str]]:
    """Run the provisioner's script the way Terraform would, every command it calls stubbed, the
    ``fail_at``-th invocation (1-based; 0 = none) exiting 1. Returns the exit status and the log."""
    with tempfile.TemporaryDirectory(prefix="provisioner-") as workdir:
        work = Path(workdir)
        stubs, state, home = work / "bin", work / "state", work / "home"
        for directory in (stubs, state, home):
            directory.mkdir()
        for name in _first_words(provisioner.commands):
            path = stubs / name
            path.write_text(STUB)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        (state / "count").write_text("0\n")
        env = {
            "PATH": str(stubs),
            "HOME": str(home),
            "STUB_STATE": str(state),
            "STUB_FAIL_AT": str(fail_at),
        }
        script = provisioner.script()
        if provisioner.kind == "remote-exec":
            path = work / "terraform_script.sh"
            path.write_text(script)
            command = ["/bin/sh", str(path)]
        else:
            interpreter = list(provisioner.interpreter)
            command = [os.path.join("/bin", interpreter[0]) if "/" not in interpreter[0] else interpreter[0]]
            command += [*interpreter[1:], script]
        result = subprocess.run(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        log = (state / "log").read_text().splitlines() if (state / "log").exists() else []
    return result.returncode, log


def dynamic_finding(provisioner: Provisioner) -> str | None:
    """Run the script with each command in turn failing; a run that still exits 0 is a finding.
    None for a multi-line local-exec script (static check only)."""
    if provisioner.kind == "local-exec" and len(_logical_lines(provisioner.commands[0])) > 1:
        return None
    status, log = run_against_stubs(provisioner, fail_at=0)
    if status != 0:
        return f"does not run against stubs (exit {status}): the model cannot check it"
    for fail_at in range(1, len(log) + 1):
        status, _ = run_against_stubs(provisioner, fail_at)
        if status == 0:
            called = Path(log[fail_at - 1].split(" ", 2)[1]).name
            return f"command {fail_at} of {len(log)} (`{called} ...`) fails and the script exits 0"
    return None


def findings(stack: str, synthesized: dict[str, Any]) -> dict[str, str]:
    """Every provisioner of a stack whose failing command would not fail it, by name."""
    found = {}
    for provisioner in provisioners_of(stack, synthesized):
        messages = [m for m in (static_finding(provisioner), dynamic_finding(provisioner)) if m]
        if messages:
            found[provisioner.name] = "; ".join(messages)
    return found


def host_key_findings(synthesized: dict[str, Any]) -> dict[str, str]:
    """SSH connections that would accept any host key, by resource address.

    Terraform's SSH communicator checks the host only with ``host_key`` (hashicorp/terraform
    internal/communicator/ssh/provisioner.go buildSSHClientConfig: without it the callback is
    ssh.InsecureIgnoreHostKey), and a local script that runs ``ssh`` checks it only with the key
    given as HOST_KEY (gpu_constructs/scripts: StrictHostKeyChecking=yes against it). Such a
    connection hands whoever answers at the address what the step carries: a token on the way
    in, a kubeconfig Terraform then trusts on the way out."""
    found = {}
    for kind_name, resources in sorted(synthesized.get("resource", {}).items()):
        for logical_id, resource in sorted(resources.items()):
            address = f"{kind_name}.{logical_id}"
            connection = resource.get("connection") or {}
            if connection.get("type", "ssh") == "ssh" and connection and not connection.get("host_key"):
                found[f"{address} connection"] = "ssh connection without host_key"
            for index, block in enumerate(resource.get("provisioner", [])):
                body = block.get("local-exec")
                if body is None:
                    continue
                environment = body.get("environment") or {}
                if "SSH_HOST" in environment and not environment.get("HOST_KEY"):
                    found[f"{address} provisioner[{index}] local-exec"] = "local ssh without HOST_KEY"
    return found


def _sensitive_variables(synthesized: dict[str, Any]) -> set[str]:
    return {name for name, body in synthesized.get("variable", {}).items() if body.get("sensitive")}


def trigger_findings(synthesized: dict[str, Any]) -> dict[str, str]:
    """Settings of a create-time local-exec that do not re-run it when they change, by provisioner.

    A ``terraform_data`` runs its provisioners only when it is created or replaced, and
    ``triggers_replace`` is what replaces it (developer.hashicorp.com/terraform/language/resources/
    terraform-data): an environment value that is not among its triggers can change (a new API
    address, another host key) while the step keeps what it did with the old one. Values that
    hold a sensitive variable stay out of the triggers on purpose (they would be in the plan).
    Only steps that run on this machine alone are checked: a host step's trailing local wait
    (wait-for-reboot.sh after a driver install) follows the host step's own triggers."""
    sensitive = _sensitive_variables(synthesized)
    found = {}
    for logical_id, resource in sorted(synthesized.get("resource", {}).get("terraform_data", {}).items()):
        triggers_replace = resource.get("triggers_replace", {})
        if isinstance(triggers_replace, dict) and re.fullmatch(
            r"[0-9a-f]{64}", str(triggers_replace.get("definition", ""))
        ):
            # k3d's cluster step: a digest of its script, image and whole environment
            # (gpu_constructs/compute/k3d/__init__.py), so any change replaces it.
            continue
        if any("remote-exec" in block or "file" in block for block in resource.get("provisioner", [])):
            continue
        for index, block in enumerate(resource.get("provisioner", [])):
            body = block.get("local-exec")
            if body is None or body.get("when", "create") != "create":
                continue
            for key, value in sorted((body.get("environment") or {}).items()):
                if any(f"var.{name}" in str(value) for name in sensitive):
                    continue
                named = {
                    trigger: given
                    for trigger, given in triggers_replace.items()
                    if trigger == key or trigger.endswith(f":{key}")
                }
                if value not in named.values():
                    name = f"terraform_data.{logical_id} provisioner[{index}] local-exec"
                    found.setdefault(name, f"{key} is not in triggers_replace")
    return found
