"""The stacks of main.py and helpers that build or read them, shared by several test modules."""

from __future__ import annotations

import json
from pathlib import Path

import main

INSTANCES = {instance.stack: instance for instance in main.INSTANCES}


def run_the_pages_smoke_job_command(page: str, stack: str, stack_json: dict, tmp_path: Path) -> dict:
    """The page's command that writes the smoke-test Job from cdk.tf.json, run on the stack's JSON:
    the Job it writes is the one the release installs."""
    import re
    import subprocess

    (command,) = re.findall(r"^\.venv/bin/python -c .*> smoke-test-job\.yaml$", page, re.M)
    out = tmp_path / "cdktf.out" / "stacks" / stack
    out.mkdir(parents=True)
    (out / "cdk.tf.json").write_text(json.dumps(stack_json))
    (tmp_path / ".venv").symlink_to(Path(__file__).resolve().parents[2] / ".venv")
    subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60)
    import yaml

    return yaml.safe_load((tmp_path / "smoke-test-job.yaml").read_text())
