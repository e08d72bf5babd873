"""The single-node cluster CA read on a first apply, against real Terraform 1.11: the read
(``data.external.compute_cluster-ca_*``) depends on the cluster step alone, so it runs beside the
driver and k3s steps. When the driver step fails, Terraform's walk skips only what depends on it
(internal/dag/walk.go) and lets the read run out its wait: kube-access.sh must then stop by itself
(its idle bound, tests/scripts/test_scripts.py). terraform_data stand-ins, no provider needed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import terraform_binary


def test_a_failed_step_does_not_stop_an_independent_one_that_is_running(tmp_path: Path):
    done = tmp_path / "read-finished"
    config = {
        "resource": {
            "terraform_data": {
                "cluster": {},
                "driver": {"provisioner": [{"local-exec": {"command": "sleep 1; exit 1"}}]},
                "k3s": {"depends_on": ["terraform_data.driver"]},
                # stands for the CA read: made after the cluster step only, it waits a while
                "ca_read": {
                    "depends_on": ["terraform_data.cluster"],
                    "provisioner": [{"local-exec": {"command": f"sleep 6; touch {done}"}}],
                },
            }
        }
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    env = {"PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1", "HOME": str(tmp_path)}
    terraform = terraform_binary()
    subprocess.run(
        [terraform, "init", "-input=false"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    started = time.monotonic()
    result = subprocess.run(
        [terraform, "apply", "-auto-approve", "-input=false", "-no-color"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "terraform_data.driver" in result.stderr
    # the apply ended only once the independent read had run its whole time; k3s never started
    assert done.exists() and time.monotonic() - started >= 6
    assert "terraform_data.k3s: Creating" not in result.stdout
