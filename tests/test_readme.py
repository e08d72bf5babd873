"""The README's library section: its example (run from the installed wheel by tests/test_wheel.py),
its extras table and its prerequisites match pyproject.toml and the workflow."""

from __future__ import annotations

import ast
import re
import tomllib

import yaml

from tests.conftest import ROOT


def readme() -> str:
    return (ROOT / "README.md").read_text()


def library_example() -> str:
    """The README's one Python block that builds a stack with the library."""
    blocks = re.findall(r"```python\n(.*?)```", readme(), re.S)
    (example,) = [block for block in blocks if "K3sHostGpuCompute(" in block]
    return example


def _imported(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""] if isinstance(node, ast.ImportFrom) else []


def test_the_example_sets_the_process_up_before_its_first_engine_import():
    statements = ast.parse(library_example()).body
    install = [i for i, node in enumerate(statements) if ast.unparse(node) == "provider_imports.install()"]
    engine_imports = [
        i
        for i, node in enumerate(statements)
        if any(re.match(r"(cdktf|cdktn|constructs|jsii)(_|\.|$)", name) for name in _imported(node))
    ]
    assert len(install) == 1 and engine_imports and install[0] < min(engine_imports)


def test_the_extras_table_lists_every_extra_with_its_pins():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    rows = dict(re.findall(r"^\| `\[(\w+)\]` \| (.*?) \|", readme(), re.M))
    assert sorted(rows) == sorted(extras)
    for extra, requirements in extras.items():
        for requirement in requirements:
            assert f"`{requirement}`" in rows[extra], (extra, requirement)


def test_the_prerequisites_name_the_terraform_the_workflow_runs():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    versions = {
        step["with"]["terraform_version"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("hashicorp/setup-terraform")
    }
    (version,) = versions
    (intro,) = re.findall(r"Both work on a fresh machine with (.*?)\): `make`", readme(), re.S)
    assert f"Terraform {version} on `PATH`" in intro
