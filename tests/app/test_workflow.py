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


def test_workflow_fetches_the_upstream_test_data_for_make_test():
    """A runner has no ../shared/upstream: the test job restores a cache keyed on tools/upstream.json,
    fetches and saves it on a miss (after make deps, whose Helm the script uses) and hands UPSTREAM_DIR
    to make test."""
    job = yaml.safe_load(WORKFLOWS[0].read_text())["jobs"]["test"]
    steps = job["steps"]
    names = [step.get("run") or step.get("uses") for step in steps]
    deps, fetch, test = (
        names.index(command) for command in ("make deps", "tools/fetch-upstream", "make test")
    )
    cache = names.index("actions/cache/restore@v4")
    save = names.index("actions/cache/save@v4")
    assert deps < cache < fetch < save < test
    assert steps[save]["with"] == {
        "path": "${{ env.UPSTREAM_DIR }}",
        "key": f"${{{{ steps.{steps[cache]['id']}.outputs.cache-primary-key }}}}",
    }
    assert steps[save]["if"] == steps[fetch]["if"]
    assert steps[deps]["env"]["ENGINE"] == "${{ matrix.engine }}"
    assert "tools/upstream.json" in steps[cache]["with"]["key"]
    assert steps[cache]["with"]["key"].startswith("upstream-${{ hashFiles(")
    assert steps[fetch]["if"] == f"steps.{steps[cache]['id']}.outputs.cache-hit != 'true'"
    upstream_dir = job["env"]["UPSTREAM_DIR"]
    assert steps[cache]["with"]["path"] == "${{ env.UPSTREAM_DIR }}"
    for step in (steps[fetch], steps[test]):
        assert step.get("env", {}).get("UPSTREAM_DIR", upstream_dir) == upstream_dir
    assert steps[test]["env"]["CI"] == "true"
    assert (ROOT / upstream_dir).relative_to(ROOT).parts[0] == ".cache"
    assert ".cache/" in (ROOT / ".gitignore").read_text().splitlines()
