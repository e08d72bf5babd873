"""The README's library example runs as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_library_example_synthesizes(tmp_path):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (example,) = [block for block in blocks if "K3sHostGpuCompute(" in block]
    env = {**os.environ, "CDKTF_OUTDIR": str(tmp_path / "out"), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300
    )
    stack = json.loads((tmp_path / "out" / "stacks" / "gpu-lab" / "cdk.tf.json").read_text())
    assert {r["name"] for r in stack["resource"]["helm_release"].values()} == {"gpu-operator"}
    steps = {logical_id.rsplit("_", 1)[0] for logical_id in stack["resource"]["terraform_data"]}
    assert steps == {
        "compute_cluster",
        "compute_server-gpu-driver",
        "compute_server-k3s",
        "compute_kubeconfig",
    }
