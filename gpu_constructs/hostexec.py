"""Run the bundled shell scripts on hosts over SSH, as terraform_data resources.

A script step is a ``terraform_data`` whose ``triggers_replace`` holds the hash of the scripts it runs
and their non-secret settings: editing a script or a setting re-runs the step on the next apply, and
an unchanged step is left alone. The scripts themselves are idempotent, so a re-run after a partial
failure is safe too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cdktf import (
    DataResource,
    FileProvisioner,
    Fn,
    LocalExecProvisioner,
    RemoteExecProvisioner,
    SSHProvisionerConnection,
    Token,
)
from constructs import Construct

from gpu_constructs import validate
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError

HOST_KEY_IN_TEXT = (
    r"(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) ([A-Za-z0-9+/]+=*)"
)
"""Each host key in ``ssh-keyscan <address>`` output (with or without the address, comment lines
skipped): two groups, the type and the base64. RE2 and Python ``re`` read it alike."""
TERRAFORM_HOST_KEY_ORDER = (
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "ssh-ed25519",
)
"""The host key Terraform's SSH communicator negotiates, first match wins. Terraform 1.11
(internal/communicator/ssh/provisioner.go ``buildSSHClientConfig``) sets only a ``HostKeyCallback``
from one known_hosts line and no ``HostKeyAlgorithms``, so golang.org/x/crypto/ssh (v0.35.0 in
Terraform 1.11.4) offers its default order: certificate types, then ECDSA P-256/384/521, RSA
(rsa-sha2-256/512, key type ssh-rsa), Ed25519 last; the server picks the first it has a key for. Its
knownhosts callback then refuses a host key of a type the line does not hold ("If the remote host
starts using a different, unknown key type, we also interpret that as a mismatch"). A stock Ubuntu
sshd has RSA, ECDSA and Ed25519 keys, so Terraform sees the ECDSA one: the line given must be the
first of this order the host has, which is why the stack takes all of ``ssh-keyscan``'s keys and picks."""


def negotiated_host_key(keys: str) -> str | None:
    """The ``<type> <base64>`` of ``keys`` (``ssh-keyscan`` output) that Terraform will be shown."""
    found = re.findall(HOST_KEY_IN_TEXT, keys)
    for wanted in TERRAFORM_HOST_KEY_ORDER:
        for kind, data in found:
            if kind == wanted:
                return f"{kind} {data}"
    return None


def negotiated_host_key_expression(keys: str) -> str:
    """The Terraform expression of :func:`negotiated_host_key` over the expression ``keys``;
    an error at plan when it holds no key (``[0]`` of an empty list)."""
    order = ", ".join(f'"{kind}"' for kind in TERRAFORM_HOST_KEY_ORDER)
    if not Token.is_unresolved(keys) and keys.startswith("${") and keys.endswith("}"):
        # A literal "${var.x[0]}" is a whole template; inside another interpolation only its
        # expression is valid HCL. cdktf tokens resolve to a bare expression by themselves.
        keys = keys[2:-1]
    return (
        f"flatten([for t in [{order}] : "
        f'[for m in regexall("{HOST_KEY_IN_TEXT}", {keys}) : join(" ", m) if m[0] == t]])[0]'
    )


SECRETS_DIR = ".gpu-constructs"
REMOTE_DIR = SECRETS_DIR
"""Where the scripts are uploaded, relative to the SSH user's home (scp runs there): the same 0700
directory as the secrets, created before any upload. In world-writable /tmp under fixed names a
local user could pre-create the file (with fs.protected_regular, scp then fails; without it, the
user keeps write access to what ``sudo bash`` runs)."""
"""Where a step's secrets are uploaded, relative to the SSH user's home (scp runs there): a 0700
directory, so no other user can read the files; the script that reads one deletes it."""


@cache
def bundled_scripts(package: Path = Path(__file__).parent) -> dict[str, Path]:
    """Every script the package ships, by file name: ``gpu_constructs/scripts/*.sh`` and each
    platform's ``gpu_constructs/compute/<platform>/scripts/*.sh``. A name is a step's identity in
    its triggers and on the host (``~/.gpu-constructs/<name>``), so two directories shipping the same
    name is an error."""
    found: dict[str, Path] = {}
    for path in sorted(package.glob("**/scripts/*.sh")):
        if path.name in found:
            raise ValueError(f"two bundled scripts named {path.name}: {found[path.name]} and {path}")
        found[path.name] = path
    return found


def script_path(name: str) -> Path:
    """Where the bundled script ``name`` is (see :func:`bundled_scripts`)."""
    scripts = bundled_scripts()
    if name not in scripts:
        raise ValueError(f"no bundled script named {name}: the package ships {', '.join(scripts)}")
    return scripts[name]


@cache
def script_text(name: str) -> str:
    """The text of the bundled script ``name`` (see :func:`bundled_scripts`)."""
    return script_path(name).read_text(encoding="utf-8")


def template_literal(text: str) -> str:
    """``text`` escaped for a Terraform JSON string, which Terraform reads as a template: the
    script's own ``${VAR}`` and ``%{`` must not be taken for interpolations or directives."""
    return text.replace("${", "$${").replace("%{", "%%{")


def script_literal(name: str) -> str:
    """A bundled script as a Terraform JSON string: :func:`script_text` through :func:`template_literal`."""
    return template_literal(script_text(name))


def env_script_command(script: str, settings: Mapping[str, str], *args: str) -> list[str]:
    """``env NAME=value ... bash -c <script> <name> <args>``: a bundled script as a program whose
    settings are arguments of env(1), sorted, never through a shell; ``<name>`` (the script's name
    without ``.sh``) is its ``$0``. For a data source's ``program`` and, without the leading
    ``env``, an exec credential plugin's ``args`` (``command`` env): the plugin's own env map would
    do for the provider, but cdktf rewrites a nested map's keys in snake case (HOST_KEY would
    arrive as host_key)."""
    return [
        "env",
        *(f"{key}={value}" for key, value in sorted(settings.items())),
        "bash",
        "-c",
        script_literal(script),
        script.removesuffix(".sh"),
        *args,
    ]


def shell_env(env: Mapping[str, str]) -> str:
    """``K='v'`` pairs, sorted; values are validated settings or Terraform references."""
    for key, value in env.items():
        if "'" in value:
            raise ValueError(f"{key} contains a single quote, which the script step cannot pass")
    return " ".join(f"{key}='{value}'" for key, value in sorted(env.items()))


def inline(*commands: str) -> list[str]:
    """A remote-exec ``inline`` list that stops at its first failing command.

    Terraform joins an inline list into one script (hashicorp/terraform v1.11
    internal/builtin/provisioners/remote-exec generateScripts) that the SSH communicator runs with
    ``#!/bin/sh`` (internal/communicator/ssh UploadScript), and a shell script's status is its last
    command's: without ``set -e`` a failed driver install followed by a successful step is green."""
    return ["set -e", *commands]


@dataclass(frozen=True)
class SshHost:
    """A host reached over SSH. Any field may be a Terraform reference (a variable)."""

    address: str
    user: str
    private_key_path: str
    timeout: str = "15m"
    """How long a step keeps trying to connect; long enough for a reboot after a driver install."""
    host_key: str | None = None
    """The host's public SSH keys as ``ssh-keyscan <address>`` prints them (every type, one a line,
    with or without the address), or one ``<type> <base64>``; a Terraform reference to either.
    Every connection pins the one key Terraform negotiates (:data:`TERRAFORM_HOST_KEY_ORDER`).
    Terraform's SSH communicator then refuses a host that presents another key
    (internal/communicator/ssh/provisioner.go buildSSHClientConfig writes it into a known_hosts
    file); without it Terraform accepts any key (InsecureIgnoreHostKey), and so would the local
    scripts' first connection."""

    def __post_init__(self) -> None:
        if not validate.is_reference(self.address):
            validate.ipv4("address", self.address)
        key = self.host_key
        if key is not None and not validate.is_reference(key) and negotiated_host_key(key) is None:
            raise ConfigError(
                "host_key",
                key,
                "give the host's keys as 'ssh-keyscan <address>' prints them, or one '<type> <base64>'",
            )

    @property
    def pinned_host_key(self) -> str | None:
        """The one key every connection checks: the one Terraform's client negotiates."""
        key = self.host_key
        if key is None:
            return None
        if validate.is_reference(key):
            return f"${{{negotiated_host_key_expression(key)}}}"
        return negotiated_host_key(key)

    def connection(self) -> SSHProvisionerConnection:
        return SSHProvisionerConnection(
            type="ssh",
            host=self.address,
            user=self.user,
            private_key=Fn.file(self.private_key_path),
            timeout=self.timeout,
            host_key=self.pinned_host_key,
        )

    def local_ssh_env(self) -> dict[str, str]:
        """The settings a script that runs ``ssh`` on the machine that runs Terraform reads:
        SSH_USER, SSH_HOST, SSH_KEY and, with a known key, HOST_KEY (checked strictly)."""
        env = {"SSH_USER": self.user, "SSH_HOST": self.address, "SSH_KEY": self.private_key_path}
        if self.pinned_host_key is not None:
            env["HOST_KEY"] = self.pinned_host_key
        return env


@dataclass(frozen=True)
class ScriptRun:
    """One bundled script with its environment.

    ``secret_env`` never goes on a command line (sudo logs its command lines, ``ps`` shows them to
    every user) nor into the step's triggers: on a host it is uploaded as a ``NAME=value`` file into
    the SSH user's 0700 :data:`SECRETS_DIR` and the script reads and deletes the file named by
    ``SECRETS_FILE``; on the machine that runs Terraform it is passed in the process environment."""

    script: str
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)
    secrets_name: str | None = None
    """Names the secrets file (default: the script's): runs of one script that write different
    things (kube-secret.sh for several Secrets) each get a file of their own, so steps on one host
    need no order between them."""

    @property
    def secrets_path(self) -> str:
        return f"{SECRETS_DIR}/{self.secrets_name or self.script}.env"

    def secrets_file(self) -> str:
        for key, value in self.secret_env.items():
            if "\n" in value:
                raise ValueError(f"{key} contains a line break, which a secrets file cannot carry")
        return "".join(f"{key}={value}\n" for key, value in sorted(self.secret_env.items()))

    def command(self) -> str:
        env = shell_env(self.env)
        if self.secret_env:
            env = f'SECRETS_FILE="$HOME/{self.secrets_path}" {env}'.rstrip()
        return f'sudo env {env} bash "$HOME/{REMOTE_DIR}/{self.script}"'


def run_scripts(
    scope: Construct,
    id: str,
    *,
    host: SshHost,
    runs: Sequence[ScriptRun],
    depends_on: Sequence[Any] = (),
    then_local: ScriptRun | Sequence[ScriptRun] | None = None,
    extra_triggers: Mapping[str, Any] | None = None,
    cluster: GpuCluster | None = None,
    replaced_with: Sequence[str] = (),
    before_local: ScriptRun | None = None,
) -> DataResource:
    """A terraform_data that uploads ``runs``' scripts to ``host`` and runs them in order.

    ``replaced_with``: bare references (``helm_release.x`` re-runs the step on any update or
    replacement of the release, ``helm_release.x.id`` on its replacement only) the step is also
    replaced with (:meth:`GpuCluster.installed`).

    ``then_local`` runs on the machine that runs Terraform after them (one script or several, in
    order), in the same step: waiting for a host to come back from a reboot that a script started,
    for example. ``before_local`` runs there after the uploads and before ``runs``: draining the
    node before a script that may reboot it (it may call an uploaded script). A step that writes
    into ``cluster`` comes after its ``ready`` resources and is re-run when the cluster is replaced
    (:meth:`GpuCluster.installed`)."""
    after_runs = [then_local] if isinstance(then_local, ScriptRun) else list(then_local or ())
    before_runs = [before_local] if before_local else []
    digest = hashlib.sha256()
    for run in [*before_runs, *runs, *after_runs]:
        digest.update(script_text(run.script).encode())
    triggers: dict[str, Any] = {"host": host.address, "scripts": digest.hexdigest()}
    for run in runs:
        for key, value in sorted(run.env.items()):
            triggers[f"{run.script}:{key}"] = value
    triggers.update(extra_triggers or {})
    uploads: list[Any] = [
        RemoteExecProvisioner(type="remote-exec", inline=inline(f'install -d -m 0700 "$HOME/{SECRETS_DIR}"')),
        *(
            FileProvisioner(
                type="file",
                content=script_literal(name),
                destination=f"{REMOTE_DIR}/{name}",
            )
            for name in dict.fromkeys(run.script for run in runs)
        ),
    ]
    secret_runs = [run for run in runs if run.secret_env]
    if secret_runs:
        uploads.extend(
            FileProvisioner(type="file", content=run.secrets_file(), destination=run.secrets_path)
            for run in secret_runs
        )
    return DataResource(
        scope,
        id,
        triggers_replace=triggers,
        connection=host.connection(),
        provisioners=[
            *uploads,
            *(_local_exec(run) for run in before_runs),
            RemoteExecProvisioner(
                type="remote-exec",
                # scp creates files 0644; the directory already shuts others out, 0600 the file too.
                inline=inline(
                    *(f'chmod 0600 "$HOME/{run.secrets_path}"' for run in secret_runs),
                    *(run.command() for run in runs),
                ),
            ),
            *(_local_exec(run) for run in after_runs),
        ],
        **_placement(cluster, depends_on, replaced_with),
    )


def variable_of(value: str) -> str | None:
    """NAME where ``value`` is the text ``${var.NAME}``, else None (a cdktf token or a literal)."""
    literal = re.fullmatch(r"\$\{var\.([A-Za-z0-9_-]+)\}", value)
    return literal[1] if literal else None


def sha256_of(value: str) -> str:
    """A Terraform expression for the SHA-256 of ``value``, a cdktf token or ``${var.NAME}`` text
    (which ``Fn.sha256`` would hash as the literal text, escaped)."""
    name = variable_of(value)
    return f"${{sha256(var.{name})}}" if name else Fn.sha256(value)


def kube_secret_step(
    scope: Construct,
    id: str,
    *,
    host: SshHost,
    namespace: str,
    secret_name: str,
    values: Mapping[str, str],
    variables: Mapping[str, str],
    cluster: GpuCluster,
    depends_on: Sequence[Any] = (),
) -> DataResource:
    """The step that writes the Secret ``namespace/secret_name`` from ``host``, a k3s server, with
    kube-secret.sh: ``values`` (Secret key -> value, references to sensitive variables among them)
    go through the step's own uploaded secrets file and reach the API server on stdin, never a
    command line, a log or the state, which keeps only each value's hash, so a new value re-runs
    the step. ``variables`` names the Terraform variable of each key that must not be empty, for
    the script's error. A replaced cluster is empty: the step runs again into the new one."""
    unknown = sorted(set(variables) - set(values))
    if unknown:
        raise ValueError(f"variables name Secret keys {unknown} that have no value")
    return run_scripts(
        scope,
        id,
        host=host,
        runs=[
            ScriptRun(
                "kube-secret.sh",
                {
                    "NAMESPACE": namespace,
                    "SECRET_NAME": secret_name,
                    "REQUIRED": " ".join(f"{key}:{variables[key]}" for key in sorted(variables)),
                },
                secret_env=values,
                secrets_name=f"kube-secret.{namespace}.{secret_name}",
            )
        ],
        extra_triggers={f"{key}_sha256": sha256_of(value) for key, value in sorted(values.items())},
        depends_on=depends_on,
        cluster=cluster,
    )


def _placement(
    cluster: GpuCluster | None, depends_on: Sequence[Any], replaced_with: Sequence[str] = ()
) -> dict[str, Any]:
    if cluster is not None:
        return cluster.installed(depends_on, replaced_with)
    if replaced_with:
        raise ValueError("replaced_with needs the cluster the step writes into")
    return {"depends_on": list(depends_on) or None}


def _local_exec(run: ScriptRun) -> LocalExecProvisioner:
    return LocalExecProvisioner(
        type="local-exec",
        command=script_literal(run.script),
        interpreter=["bash", "-c"],
        environment={**run.env, **run.secret_env},
    )


def run_local_script(
    scope: Construct,
    id: str,
    *,
    run: ScriptRun,
    triggers: Mapping[str, Any],
    depends_on: Sequence[Any] = (),
    cluster: GpuCluster | None = None,
    expect_file: str | None = None,
) -> DataResource:
    """A terraform_data that runs a bundled script on the machine that runs Terraform; with
    ``cluster``, one that runs against that cluster (see :func:`run_scripts`).

    Every setting in ``run.env`` is a trigger too (``secret_env`` never is): a new API address or
    host key re-runs the step. ``expect_file`` is a file the step writes: a plan on a machine
    where it is missing (another operator, a CI runner, a deleted directory) fails with the
    command that runs the step again, rather than every later step failing to read it."""
    step = DataResource(
        scope,
        id,
        triggers_replace={
            **{f"{run.script}:{key}": value for key, value in sorted(run.env.items())},
            **triggers,
            "script": hashlib.sha256(script_text(run.script).encode()).hexdigest(),
        },
        provisioners=[_local_exec(run)],
        **_placement(cluster, depends_on),
    )
    if expect_file:
        # self.id is unknown while the step is being created, so the condition waits for the
        # apply (which writes the file); on a step that exists it is checked at every plan.
        step.add_override(
            "lifecycle.postcondition",
            [
                {
                    "condition": f'${{self.id != "" ? fileexists("{expect_file}") : false}}',
                    "error_message": (
                        f"{expect_file} is missing on this machine: run this step again with "
                        "terraform apply -target=ADDRESS -replace=ADDRESS, ADDRESS from "
                        f"terraform state list | grep {id}."
                    ),
                }
            ],
        )
    return step
