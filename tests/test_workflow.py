"""The GitHub workflow is valid workflow YAML (schema vendored by check-jsonschema, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CHECK = Path(sys.executable).parent / "check-jsonschema"


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK), "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True
    )


def test_workflows_are_valid():
    assert WORKFLOWS
    for workflow in WORKFLOWS:
        result = _check(workflow)
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_workflow_is_caught(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-24.04\n    step:\n      - run: make test\n"
    )
    assert _check(broken).returncode != 0


def test_workflow_runs_make_test_and_validates_every_stack():
    workflow = yaml.safe_load(WORKFLOWS[0].read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert "make test" in runs
    assert any(
        "for dir in cdktf.out/stacks/*/" in run and "terraform -chdir" in run and "validate" in run
        for run in runs
    )


def test_workflow_tests_and_validates_both_engines():
    """make test, make synth and terraform validate run once per engine, the engine passed to make."""
    workflow = yaml.safe_load(WORKFLOWS[0].read_text())
    for name in ("test", "terraform"):
        assert workflow["jobs"][name]["strategy"]["matrix"]["engine"] == ["cdktf", "cdktn"], name
    steps = {step.get("run"): step for step in workflow["jobs"]["test"]["steps"] if "run" in step}
    for command in ("make test", "make synth"):
        assert steps[command]["env"]["ENGINE"] == "${{ matrix.engine }}", command
    uploads = [
        step for step in workflow["jobs"]["test"]["steps"] if "upload-artifact" in step.get("uses", "")
    ]
    downloads = [
        step for step in workflow["jobs"]["terraform"]["steps"] if "download-artifact" in step.get("uses", "")
    ]
    assert [step["with"]["name"] for step in uploads + downloads] == ["stacks-${{ matrix.engine }}"] * 2
