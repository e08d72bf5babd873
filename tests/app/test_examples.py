"""The example apps in examples/ run outside the repository with the library alone on the path, import
nothing but the package's public API, and synthesize what they say; the AWS one passes
``terraform validate`` with the providers this machine can install offline."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.examples import EXAMPLES, NAMES, check_synthesized, run_example, validate_offline

PUBLIC = ("gpu_constructs", "gpu_constructs.compute")
"""The modules an example may import from the library: the package and its compute exports."""
ENGINE = ("cdktf", "constructs", "cdktf_cdktf_provider_")
PROVIDER_IMPORTS = "gpu_constructs.provider_imports"


def _imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


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


def test_the_eks_example_passes_terraform_validate(synthesized, tmp_path):
    validate_offline(synthesized["eks"], tmp_path)
