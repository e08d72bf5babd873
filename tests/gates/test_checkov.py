"""checkov over every synthesized stack: zero failed checks, with skips only from .checkov.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, synth_main

CHECKOV = Path(sys.executable).parent / "checkov"
CONFIG = ROOT / ".checkov.yaml"


def run_checkov(directory: Path) -> dict:
    result = subprocess.run(
        [
            str(CHECKOV),
            "--config-file",
            str(CONFIG),
            "--directory",
            str(directory),
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode in (0, 1), result.stderr
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    return {
        "failed": sum(r.get("summary", r).get("failed", 0) for r in reports),
        "parsing_errors": sum(r.get("summary", r).get("parsing_errors", 0) for r in reports),
        "failed_checks": [
            c["check_id"] for r in reports for c in r.get("results", {}).get("failed_checks", [])
        ],
    }


@pytest.fixture(scope="module")
def stacks_dir(tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("synth")
    synth_main(outdir)
    return outdir / "stacks"


def without_required_version(stack_dir: Path, out: Path) -> Path:
    """A copy of the stack without ``terraform.required_version``: checkov 3.3's terraform_json
    parser fails the whole file on any plain value in the ``terraform`` block ("this method receives
    only dicts", a parsing error, no check run). The constraint has nothing for checkov to check."""
    out.mkdir(parents=True)
    stack = json.loads((stack_dir / "cdk.tf.json").read_text())
    stack.get("terraform", {}).pop("required_version", None)
    (out / "cdk.tf.json").write_text(json.dumps(stack))
    return out


def test_every_stack_passes_checkov(stacks_dir, tmp_path):
    stacks = sorted(p.name for p in stacks_dir.iterdir() if p.is_dir())
    assert stacks
    for stack in stacks:
        summary = run_checkov(without_required_version(stacks_dir / stack, tmp_path / stack))
        assert summary["parsing_errors"] == 0, stack
        assert summary["failed"] == 0, f"{stack}: {summary['failed_checks']}"


def test_checkov_fails_an_unencrypted_database(tmp_path):
    (tmp_path / "cdk.tf.json").write_text(
        json.dumps(
            {
                "resource": {
                    "aws_db_instance": {
                        "db": {
                            "engine": "postgres",
                            "instance_class": "db.t3.micro",
                            "storage_encrypted": False,
                        }
                    }
                }
            }
        )
    )
    summary = run_checkov(tmp_path)
    assert "CKV_AWS_16" in summary["failed_checks"]  # RDS storage encryption


def test_every_skip_has_a_reason():
    lines = CONFIG.read_text().splitlines()
    skips = [line for line in lines if re.match(r"\s*-\s*CKV", line)]
    assert all("#" in line and line.split("#", 1)[1].strip() for line in skips)
