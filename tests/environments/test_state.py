"""Each stack's Terraform state: a backend setting, and a local default outside git."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import cdktf
import pytest

from environments import ENVIRONMENTS
from environments.state import STATE_DIR, Backend, local_state
from gpu_constructs.errors import ConfigError
from tests.conftest import site_instance

ROOT = Path(__file__).resolve().parents[2]


def backend_of(environment: str, overrides: dict | None = None, stack: str = "") -> dict:
    instance = site_instance(stack or environment, environment, overrides or {})
    return json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))["terraform"]["backend"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_default_state_is_local_in_a_git_ignored_directory_of_its_own(environment):
    backend = backend_of(environment)
    assert list(backend) == ["local"]
    path = backend["local"]["path"]
    # cdktf runs Terraform in cdktf.out/stacks/<stack>: the path resolves from there.
    state = (ROOT / "cdktf.out" / "stacks" / environment / path).resolve()
    assert state == ROOT / STATE_DIR / f"{environment}.tfstate"
    assert state.parent != ROOT
    ignored = subprocess.run(["git", "check-ignore", "-q", str(state)], cwd=ROOT)
    assert ignored.returncode == 0, f"{state} is not git-ignored"
    assert stat.S_IMODE((ROOT / STATE_DIR).stat().st_mode) == 0o700


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_stack_takes_a_remote_backend(environment):
    s3 = backend_of(
        environment, {"backend": Backend("s3", {"bucket": "acme-tf-state", "region": "eu-west-1"})}
    )
    assert s3 == {
        "s3": {
            "bucket": "acme-tf-state",
            "region": "eu-west-1",
            "key": f"{environment}/terraform.tfstate",
            "encrypt": True,
            "use_lockfile": True,
        }
    }
    gcs = backend_of(environment, {"backend": Backend("gcs", {"bucket": "acme-tf-state"})}, stack="team-a")
    assert gcs == {"gcs": {"bucket": "acme-tf-state", "prefix": "team-a/terraform.tfstate"}}


def test_eks_state_bucket_is_the_s3_shorthand_and_excludes_backend():
    assert backend_of("eks-karpenter", {"state_bucket": "acme-tf-state", "state_locking": False}) == {
        "s3": {
            "bucket": "acme-tf-state",
            "region": "eu-west-1",
            "key": "eks-karpenter/terraform.tfstate",
            "encrypt": True,
            "use_lockfile": False,
        }
    }
    with pytest.raises(
        ConfigError, match=r"^eks-karpenter: 'state_bucket' is 'acme-tf-state': backend is set"
    ):
        backend_of(
            "eks-karpenter", {"state_bucket": "acme-tf-state", "backend": Backend("gcs", {"bucket": "b"})}
        )


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        (
            Backend("s3", {"bucket": "b", "region": "eu-west-1", "secret_key": "wJalrXUtnFEMI"}),
            r"^lke: 'backend.secret_key' is '\(hidden\)': a credential in a setting lands in the synthesized "
            r"JSON: give it to the s3 backend through its environment variables or credentials file instead$",
        ),
        (
            Backend("s3", {"bukket": "b"}),
            r"^lke: 'backend.bukket' is 'b': not an argument of the s3 backend; did you ",
        ),
        (
            Backend("s3", {"region": "eu-west-1"}),
            r"^lke: 'backend.bucket' is None: the s3 backend needs bucket in",
        ),
        (Backend("gsc", {}), r"^lke: 'backend' is 'gsc': did you mean 'gcs'\? use one of local, s3, gcs"),
        (
            Backend("s3", [("bucket", "b")]),
            r"^lke: 'backend.config' is \[\('bucket', 'b'\)\]: give a Mapping",
        ),  # type: ignore[arg-type]
    ],
)
def test_a_bad_backend_fails_at_synth_naming_the_stack(backend, message):
    with pytest.raises(ConfigError, match=message) as caught:
        backend_of("lke", {"backend": backend})
    assert "wJalrXUtnFEMI" not in str(caught.value)


def test_the_state_directory_is_created_private(tmp_path):
    os.umask(0o022)
    directory = local_state("lab", tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.chmod(0o755)
    local_state("lab", tmp_path)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_state_left_in_the_project_root_by_the_earlier_default_is_not_started_over(tmp_path):
    (tmp_path / "terraform.lab.tfstate").write_text("{}")
    with pytest.raises(
        ConfigError,
        match=r"'backend' is None: terraform.lab.tfstate in the project root holds this stack's state, which "
        r"is now kept in state/: run mkdir -m 700 -p state && mv terraform.lab.tfstate state/lab.tfstate, then "
        r"terraform init -reconfigure in cdktf.out/stacks/lab$",
    ):
        local_state("lab", tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "terraform.lab.tfstate").rename(tmp_path / "state" / "lab.tfstate")
    assert local_state("lab", tmp_path) == tmp_path / "state"
