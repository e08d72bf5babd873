"""Where each stack keeps its Terraform state: a backend setting, and the local default.

Every environment's settings have ``backend``: None keeps the state on this machine, in
``state/<stack>.tfstate`` under the project root, a git-ignored directory that synth creates with
mode 0700. The state holds every secret the stack handles (tokens, keys, generated passwords), in
plain text: the directory keeps it out of git and away from other users of the machine, and a
relative path keeps the synthesized JSON the same on every machine. A team sets a remote backend
instead, e.g. ``Backend("s3", {"bucket": "acme-tf-state", "region": "eu-west-1"})``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cdktf import (
    AzurermBackend,
    ConsulBackend,
    CosBackend,
    GcsBackend,
    HttpBackend,
    LocalBackend,
    OssBackend,
    PgBackend,
    RemoteBackend,
    S3Backend,
    TerraformBackend,
    TerraformStack,
)

from gpu_constructs import validate
from gpu_constructs.errors import ConfigError, did_you_mean

PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = "state"
"""The local state's directory under the project root (git-ignored, mode 0700)."""

BACKENDS: Mapping[str, type[TerraformBackend]] = {
    "local": LocalBackend,
    "s3": S3Backend,
    "gcs": GcsBackend,
    "azurerm": AzurermBackend,
    "remote": RemoteBackend,
    "http": HttpBackend,
    "pg": PgBackend,
    "consul": ConsulBackend,
    "cos": CosBackend,
    "oss": OssBackend,
}
"""The backends Terraform 1.10 has and cdktf builds."""

OVERRIDES = {("s3", "use_lockfile")}
"""Arguments Terraform has and cdktf 0.21's classes predate: written as overrides."""

STACK_KEYS = {"s3": "key", "gcs": "prefix", "azurerm": "key", "cos": "key", "oss": "key"}
"""Where each backend takes the state's name; the stack's name goes there unless given."""

SECRET_KEYS = frozenset(
    {
        "access_key",
        "secret_key",
        "token",
        "sse_customer_key",
        "password",
        "conn_str",
        "client_secret",
        "client_certificate_password",
        "sas_token",
        "credentials",
        "access_token",
        "secret_id",
        "security_token",
    }
)
"""Backend arguments that carry a credential: in a setting they would be written into the
synthesized JSON; each backend reads them from its environment variables or credential files."""


@dataclass(frozen=True)
class Backend:
    """A Terraform backend: its type (``s3``, ``gcs``, ``azurerm``, ``remote``, ``http``, ``pg``, ...)
    and its arguments as Terraform names them."""

    type: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Refuse an unknown type or argument, and credentials (checked at synth, when the stack
        that uses it is built, so the error names that stack)."""
        try:
            validate.field_types(self)
        except ConfigError as error:
            raise ConfigError(f"backend.{error.field}", error.value, error.fix) from None
        if self.type not in BACKENDS:
            raise ConfigError(
                "backend", self.type, f"{did_you_mean(self.type, BACKENDS)}use one of {', '.join(BACKENDS)}"
            )
        for key in self.config:
            if key in SECRET_KEYS:
                raise ConfigError(
                    f"backend.{key}",
                    "(hidden)",
                    f"a credential in a setting lands in the synthesized JSON: give it to the {self.type} "
                    "backend through its environment variables or credentials file instead",
                )
        accepted = self.arguments()
        unknown = [key for key in self.config if key not in accepted and (self.type, key) not in OVERRIDES]
        if unknown:
            raise ConfigError(
                f"backend.{unknown[0]}",
                self.config[unknown[0]],
                f"not an argument of the {self.type} backend; {did_you_mean(unknown[0], accepted)}"
                f"use {', '.join(sorted(accepted))}",
            )

    def arguments(self) -> list[str]:
        """The arguments cdktf's class for this backend takes."""
        parameters = inspect.signature(BACKENDS[self.type].__init__).parameters
        return [name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def use_backend(stack: TerraformStack, backend: Backend | None, project_root: Path = PROJECT_ROOT) -> None:
    """Give ``stack`` its backend: ``backend``, or the local default in ``state/<stack>.tfstate``."""
    id = stack.node.id
    if backend is not None:
        backend.check()
    if backend is None:
        local_state(id, project_root)
        # Relative to the stack's working directory, cdktf.out/stacks/<stack>.
        LocalBackend(stack, path=f"../../../{STATE_DIR}/{id}.tfstate")
        return
    config = dict(backend.config)
    if backend.type in STACK_KEYS:
        config.setdefault(STACK_KEYS[backend.type], f"{id}/terraform.tfstate")
    if backend.type == "s3":
        config.setdefault("encrypt", True)
        # S3-native locking, a lock file next to the state (Terraform 1.10+).
        config.setdefault("use_lockfile", True)
    overrides = {key: config.pop(key) for key in list(config) if (backend.type, key) in OVERRIDES}
    parameters = inspect.signature(BACKENDS[backend.type].__init__).parameters.values()
    required = [
        p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty
    ]
    missing = [name for name in required if name not in config]
    if missing:
        raise ConfigError(
            f"backend.{missing[0]}",
            None,
            f"the {backend.type} backend needs {', '.join(missing)} in its config",
        )
    made = BACKENDS[backend.type](stack, **config)
    for key, value in overrides.items():
        made.add_override(key, value)


def local_state(stack: str, project_root: Path) -> Path:
    """The default state directory, created 0700; refuses to start over beside the state file an
    earlier default kept in the project root."""
    old = project_root / f"terraform.{stack}.tfstate"
    new = project_root / STATE_DIR / f"{stack}.tfstate"
    if old.exists() and not new.exists():
        raise ConfigError(
            "backend",
            None,
            f"{old.name} in the project root holds this stack's state, which is now kept in "
            f"{STATE_DIR}/: run mkdir -m 700 -p {STATE_DIR} && mv {old.name} {STATE_DIR}/{stack}.tfstate, "
            f"then terraform init -reconfigure in cdktf.out/stacks/{stack}",
        )
    directory = project_root / STATE_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    if directory.stat().st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory
