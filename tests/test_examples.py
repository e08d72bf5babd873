"""The example apps in examples/ run outside the repository with the library alone on the path, import
nothing but the package's public API, and synthesize what they say; the AWS one passes
``terraform validate`` with the providers this machine can install offline."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, aws_provider_mirror, terraform_binary

EXAMPLES = ROOT / "examples"
NAMES = sorted(path.parent.name for path in EXAMPLES.glob("*/main.py"))
PUBLIC = ("gpu_constructs", "gpu_constructs.compute")
"""The modules an example may import from the library: the package and its compute exports."""
ENGINE = ("cdktf", "constructs", "cdktf_cdktf_provider_")
PROVIDER_IMPORTS = "gpu_constructs.provider_imports"

PROBE = """
import json, runpy, sys
runpy.run_path("main.py", run_name="__main__")
import gpu_constructs
with open("probe.json", "w") as out:
    json.dump({"file": gpu_constructs.__file__, "modules": sorted(sys.modules)}, out)
"""


def _imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def run_example(
    python: str | Path, name: str, work: Path, env: dict[str, str]
) -> tuple[dict[str, Any], Path]:
    """Copy example ``name`` into ``work`` (outside the repository) and run its main.py there with
    ``python``; (what the run imported, the stack's synthesized directory)."""
    app = work / name
    shutil.copytree(EXAMPLES / name, app)
    assert not app.resolve().is_relative_to(ROOT.resolve())
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run_env.update(env, CDKTF_OUTDIR=str(app / "out"), JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    result = subprocess.run(
        [str(python), "-W", "error::RuntimeWarning", "-c", PROBE],
        cwd=app, env=run_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    (stack_dir,) = (app / "out" / "stacks").iterdir()
    return json.loads((app / "probe.json").read_text()), stack_dir


def check_synthesized(name: str, stack_dir: Path) -> dict[str, Any]:
    """What each example says it builds, read from its synthesized stack."""
    stack: dict[str, Any] = json.loads((stack_dir / "cdk.tf.json").read_text())
    releases = {r["name"]: r for r in stack["resource"]["helm_release"].values()}
    if name == "own-cluster":
        assert sorted(releases) == ["gpu-operator", "inference"]
        assert stack["provider"]["helm"][0]["kubernetes"] == {
            "config_path": "~/.kube/config",
            "config_context": "team-gpu",
        }
        # an existing cluster: nothing of the stack's to wait for or to be replaced with
        assert "lifecycle" not in releases["gpu-operator"] and "depends_on" not in releases["gpu-operator"]
        manifests = "\n".join(releases["inference"]["values"])
        assert (
            "ingressClassName: nginx" in manifests and "kubernetes.azure.com/accelerator: nvidia" in manifests
        )
    elif name == "k3s-host":
        assert sorted(releases) == ["gpu-operator"]
        # the datastore, the driver, k3s, the kubeconfig copy and the node labels steps
        assert len(stack["resource"]["terraform_data"]) == 5
        # the provider reads its access from the host at every run, not from the kubeconfig copy
        assert set(stack["provider"]["helm"][0]["kubernetes"]) == {"host", "cluster_ca_certificate", "exec"}
        assert len(stack["data"]["external"]) == 1
    elif name == "eks":
        assert sorted(releases) == [
            "karpenter",
            "karpenter-crd",
            "karpenter-node-pools",
            "nvidia-device-plugin",
        ]
        assert len(stack["resource"]["aws_eks_cluster"]) == 1
    else:
        raise AssertionError(f"examples/{name} has no check here: add one")
    return stack


def test_every_example_has_a_cdktf_project_and_imports_only_the_public_api():
    assert NAMES == ["eks", "k3s-host", "own-cluster"]
    for name in NAMES:
        project = json.loads((EXAMPLES / name / "cdktf.json").read_text())
        assert project["language"] == "python" and project["app"] == "python main.py"
        imported = _imports((EXAMPLES / name / "main.py").read_text())
        library = [i for i in imported if i.split(".")[0] == "gpu_constructs" and i != PROVIDER_IMPORTS]
        assert [i for i in library if i.rpartition(".")[0] not in PUBLIC] == [], name
        for entry in library:
            module, _, attribute = entry.rpartition(".")
            assert attribute in __import__(module, fromlist=["__all__"]).__all__, (name, entry)
        others = [i for i in imported if i.split(".")[0] != "gpu_constructs"]
        assert [i for i in others if not i.startswith(ENGINE) and i.split(".")[0] not in ("pathlib",)] == []


@pytest.fixture(scope="module")
def package_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only the library (a link to the checkout's gpu_constructs)."""
    path = tmp_path_factory.mktemp("package")
    (path / "gpu_constructs").symlink_to(ROOT / "gpu_constructs", target_is_directory=True)
    return path


@pytest.fixture(scope="module")
def synthesized(package_only: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("examples")
    stacks = {}
    for name in NAMES:
        probe, stack_dir = run_example(sys.executable, name, work, {"PYTHONPATH": str(package_only)})
        assert Path(probe["file"]).parent.parent == package_only
        # with the checkout off the path, the repository's own stacks and tests cannot be imported
        assert [m for m in probe["modules"] if m.split(".")[0] in ("environments", "tests", "main")] == []
        stacks[name] = stack_dir
    return stacks


@pytest.mark.parametrize("name", NAMES)
def test_the_example_synthesizes_outside_the_repository_with_the_package_alone(synthesized, name):
    check_synthesized(name, synthesized[name])


def validate_offline(stack_dir: Path, tmp_path: Path) -> None:
    """``terraform validate`` of the stack with every provider this machine installs offline
    (hashicorp/aws from the filesystem mirror); the Helm layer is left out."""
    from tests.test_wheel import offline_part

    terraform = terraform_binary()
    mirror = aws_provider_mirror()
    if mirror is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the hashicorp/aws filesystem mirror is required under CI")
        pytest.skip("no local hashicorp/aws filesystem mirror: nothing of the AWS stack validates offline")
    config = json.loads((stack_dir / "cdk.tf.json").read_text())
    part, missing = offline_part(config, {"hashicorp/aws"})
    assert missing == ["helm"] and part["resource"].get("aws_eks_cluster")
    (tmp_path / "main.tf.json").write_text(json.dumps(part))
    cli = tmp_path / "cli.tfrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{ path = "{mirror}" }}\n}}\n')
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for command in (["init", "-backend=false", "-input=false"], ["validate"]):
        result = subprocess.run(
            [terraform, *command, "-no-color"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]


def test_the_eks_example_passes_terraform_validate(synthesized, tmp_path):
    validate_offline(synthesized["eks"], tmp_path)
