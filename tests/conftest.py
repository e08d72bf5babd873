"""Shared fixtures: synthesizing stacks and constructs, and the upstream schemas in ../shared."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

from gpu_constructs import provider_imports

# What main.py does first: the engine's names and lazy provider loading, before any engine import.
provider_imports.install()

from cdktf import TerraformStack, Testing  # noqa: E402
from cdktf_cdktf_provider_helm.provider import HelmProvider  # noqa: E402

from gpu_constructs.cluster import (  # noqa: E402
    K3S_CONTAINERD,
    GpuCluster,
    GpuSharing,
    KubeAccess,
    Manager,
    Taint,
)
from tests.support import render  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = render.UPSTREAM
"""The upstream test data (tests/support/render.py ``upstream_root``: ``UPSTREAM_DIR`` or ../shared/upstream)."""

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
ENGINE = provider_imports.ENGINE


NEEDS_AWS_5 = pytest.mark.skipif(
    ENGINE.name != "cdktf",
    reason=f"{ENGINE.name}'s prebuilt bindings pin hashicorp/aws 6.x and the only AWS provider binary "
    "here is 5.100.0 (the offline filesystem mirror): Terraform would not install it for this stack",
)
"""For tests that run Terraform with the real AWS provider offline: they run on cdktf only."""


ON_ENGINE = {
    name: pytest.mark.skipif(
        ENGINE.name != name,
        reason=f"{name}'s stack snapshot; the engines' output differs in provider versions and metadata",
    )
    for name in ("cdktf", "cdktn")
}
"""Each stack has a snapshot per engine: ``test_snapshot`` (cdktf) and ``test_snapshot_cdktn``, each
skipped on the other engine (so neither's file counts as unused there)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def moto_server(server: Path, env: Mapping[str, str]) -> Iterator[str]:
    """moto_server on 127.0.0.1 and a free port, its URL once it answers (60 s at most); stopped
    by PID afterwards (SIGTERM, then SIGKILL after 20 s)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer on {url}") from None
                time.sleep(0.5)
        yield url
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def unavailable(message: str) -> NoReturn:
    """A tool or data set a test needs is missing: the test skips saying why, and fails under
    CI=true, where everything the project installs must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must have it)")
    pytest.skip(message)


@pytest.fixture
def upstream() -> Path:
    """The upstream test data (``UPSTREAM_DIR`` or ../shared/upstream), with the schemas the
    synthesized output is checked against."""
    if not UPSTREAM.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(
                f"{UPSTREAM} is missing; CI needs ../shared beside the checkout or UPSTREAM_DIR filled by "
                "tools/fetch-upstream"
            )
        pytest.skip(
            f"{UPSTREAM} is not here (no ../shared beside the checkout and no UPSTREAM_DIR; "
            "tools/fetch-upstream fetches it): upstream schema checks skipped"
        )
    return UPSTREAM


def make_cluster(**overrides: Any) -> GpuCluster:
    """A k3s-like GPU cluster contract for construct tests."""
    fields: dict[str, Any] = {
        "name": "test",
        "access": KubeAccess(config_path="/tmp/kubeconfig.yaml"),
        "gpu_node_selector": {"nvidia.com/gpu": "true"},
        "gpu_taint": None,
        "gpu_toleration_taint": Taint("nvidia.com/gpu", "true"),
        "runtime_class": "nvidia",
        "driver": Manager.HOST,
        "toolkit": Manager.HOST,
        "containerd": K3S_CONTAINERD,
        "sharing": GpuSharing(),
        "gpu_capacity": 1,
    }
    fields.update(overrides)
    return GpuCluster(**fields)


@pytest.fixture
def cluster() -> GpuCluster:
    return make_cluster()


@pytest.fixture
def synth() -> Callable[[Callable[[TerraformStack], Any]], dict[str, Any]]:
    """Build constructs into a fresh stack with ``build(stack)`` and return the synthesized JSON."""

    def run(build: Callable[[TerraformStack], Any]) -> dict[str, Any]:
        stack = TerraformStack(Testing.app(), "test")
        HelmProvider(stack, "helm", kubernetes={"config_path": "/tmp/kubeconfig.yaml"})
        build(stack)
        result: dict[str, Any] = json.loads(Testing.synth(stack))
        return result

    return run


def resources(synthesized: dict[str, Any], kind: str) -> dict[str, Any]:
    """The resources of one type, by logical id."""
    found: dict[str, Any] = synthesized.get("resource", {}).get(kind, {})
    return found


def release_values(release: dict[str, Any]) -> Any:
    """The parsed values document of a synthesized helm_release."""
    import yaml

    (document,) = release["values"]
    return yaml.safe_load(document)


def manifests_of(release: dict[str, Any]) -> list[dict[str, Any]]:
    """The Kubernetes objects of a manifests-chart release."""
    return list(release_values(release)["manifests"])


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def synth_main(outdir: Path, **env: str) -> dict[str, bytes]:
    """Run ``python main.py`` (the cdktf app) into ``outdir``; return every file it wrote, by path."""
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if k not in env}
    full_env.update(env, CDKTF_OUTDIR=str(outdir))
    subprocess.run(
        [sys.executable, "main.py"], cwd=ROOT, env=full_env, check=True, capture_output=True, timeout=600
    )
    return {
        str(path.relative_to(outdir)): path.read_bytes()
        for path in sorted((outdir / "stacks").rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def helm() -> str:
    """Helm 3 for the render tests (tests/support/render.py): skipped without one, failed under CI=true."""
    from tests.support import render

    found = render.helm_binary()
    if found is None:
        unavailable("no Helm 3 on PATH or in tools/helm/bin (run `make deps`)")
    return found


def site_instance(stack: str, environment: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """An instance of ``environment`` with the site settings main.py gives its instance of the same
    name (proxmox-ha's datastore capacities and notebook registry, which it has no defaults for)
    under ``overrides``."""
    import main
    from environments import Instance

    site = {i.stack: i.overrides for i in main.INSTANCES}.get(environment, {})
    return Instance(stack, environment, {**site, **(overrides or {})})


def _stack_names() -> list[str]:
    import main

    return sorted(instance.stack for instance in main.INSTANCES)


@pytest.fixture(params=_stack_names())
def rendered_stack(request: pytest.FixtureRequest, helm: str, upstream: Path) -> Any:
    """Each stack in main.py with every release rendered by Helm (once per session)."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == request.param]
    return render.rendered(instance)


def aws_provider_mirror() -> Path | None:
    """The machine's Terraform filesystem mirror that holds hashicorp/aws (found, never hard-coded)."""
    for candidate in [
        *Path("/").glob("*/registry.terraform.io"),
        *Path("/").glob("*/*/registry.terraform.io"),
    ]:
        if (candidate / "hashicorp" / "aws").is_dir():
            return candidate.parent
    return None


@pytest.fixture
def aws_terraform(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """terraform, and an environment whose CLI configuration installs hashicorp/aws from the
    filesystem mirror only: skipped where either is missing, failed under CI=true."""
    import shutil

    terraform, mirror = shutil.which("terraform"), aws_provider_mirror()
    if terraform is None or mirror is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"terraform ({terraform}) and the provider mirror ({mirror}) are required under CI")
        pytest.skip("terraform or the local hashicorp/aws filesystem mirror is not on this machine")
    cli = tmp_path / "cli.tfrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{ path = "{mirror}" }}\n}}\n')
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    return terraform, env


def terraform_binary() -> str:
    """terraform on PATH: skipped without it, failed under CI=true."""
    import shutil

    found = shutil.which("terraform")
    if found is None:
        unavailable("terraform is not on PATH")
    return found


def variables_workdir(variables: dict[str, Any], directory: Path) -> Path:
    """A Terraform working directory with a stack's variable blocks alone: real Terraform evaluates
    their validations at plan, no provider needed."""
    import subprocess

    (directory / "main.tf.json").write_text(json.dumps({"variable": variables}))
    subprocess.run(
        [terraform_binary(), "init", "-backend=false", "-input=false"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    return directory


def plan_variables(directory: Path, values: dict[str, str | None]) -> Any:
    """``terraform plan`` of a variables_workdir with ``-var`` for each value that is not None."""
    import subprocess

    args = [f"-var={name}={value}" for name, value in values.items() if value is not None]
    return subprocess.run(
        [terraform_binary(), "plan", "-input=false", "-no-color", *args],
        cwd=directory,
        capture_output=True,
        text=True,
    )


def run_terraform(
    terraform: str, directory: Path, env: dict[str, str], *args: str, codes: tuple[int, ...] = (0,)
) -> Any:
    """One terraform command in ``directory``; fails the test with its output on an unexpected exit
    code, prints how long it took (the AWS tests' minutes go here)."""
    import subprocess
    import time

    started = time.monotonic()
    result = subprocess.run(
        [terraform, *args, "-no-color"], cwd=directory, env=env, capture_output=True, text=True, timeout=900
    )
    print(f"terraform {args[0]}: {time.monotonic() - started:.0f} s")
    assert result.returncode in codes, result.stdout[-6000:] + result.stderr[-6000:]
    return result
