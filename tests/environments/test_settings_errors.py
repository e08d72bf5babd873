"""Bad settings: one line naming the instance, the setting as typed, the value and the fix."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import cdktf
import pytest

from environments import ENVIRONMENTS
from gpu_constructs import validate
from gpu_constructs.errors import ConfigError
from tests.conftest import site_instance

ROOT = Path(__file__).resolve().parents[2]


def settings_fields() -> list[tuple[str, str, Any]]:
    """(environment, field, annotation) of every field of every environment's settings."""
    found = []
    for environment in ENVIRONMENTS:
        settings_class = site_instance("x", environment).settings_class()
        hints = typing.get_type_hints(settings_class)
        found += [(environment, f.name, hints[f.name]) for f in dataclasses.fields(settings_class)]
    return found


def wrongly_typed(hint: Any, default: Any) -> Any:
    """A value a user could plausibly type that is not of type ``hint``."""
    if validate.matches_type(True, hint) and not validate.matches_type(1, hint):
        return "false"  # a bool given as a string
    if validate.matches_type(1, hint):
        return "1" if not validate.matches_type("1", hint) else 1.5
    if isinstance(default, tuple):
        return list(default)  # a list for a tuple
    if validate.matches_type("x", hint):
        return 1
    return "x"


@pytest.mark.parametrize(("environment", "name", "hint"), settings_fields())
def test_every_setting_refuses_a_wrongly_typed_value(environment, name, hint):
    default = getattr(site_instance("x", environment).settings(), name)
    value = wrongly_typed(hint, default)
    assert not validate.matches_type(value, hint)
    with pytest.raises(ConfigError) as caught:
        site_instance("x", environment, {name: value}).settings()
    text = str(caught.value)
    assert text.startswith(f"x: {name!r} is "), text
    assert ": give " in text and "\n" not in text


def test_the_type_check_knows_tuples_of_tuples_bools_and_optionals():
    assert validate.matches_type((("local-lvm", 100),), tuple[tuple[str, int], ...])
    assert not validate.matches_type((("local-lvm", "100"),), tuple[tuple[str, int], ...])
    assert not validate.matches_type(True, int)
    assert not validate.matches_type(0, bool)
    assert validate.matches_type(None, bool | None)
    assert not validate.matches_type(["a"], tuple[str, ...])


CASES = [
    (
        "single-node",
        {"nvidia_driver_version": "545.29"},
        "single-node: 'nvidia_driver_version' is '545.29': give a pinned version such as 580",
    ),
    (
        "single-node",
        {"nvidia_driver_version": "510"},
        "single-node: 'nvidia_driver_version' is '510': NVIDIA ships open kernel modules from branch 515; "
        "use a newer branch or nvidia_kernel_modules='proprietary'",
    ),
    (
        "single-node",
        {"gpu_enabled": "false"},
        "single-node: 'gpu_enabled' is 'false': give True or False (a bool, not a string)",
    ),
    (
        "single-node",
        {"mig_strategy": "mixd"},
        "single-node: 'mig_strategy' is 'mixd': did you mean 'mixed'? use one of none, single, mixed",
    ),
    (
        "single-node",
        {"taint_gpu_nodes": True},
        "single-node: 'taint_gpu_nodes' is True: every host of single-node is a GPU node, so the taint "
        "leaves no node for Vault, PostgreSQL and the ingress (they would stay Pending); set "
        "taint_gpu_nodes=False",
    ),
    (
        "single-node",
        {"postgres_storage_size": "0Gi"},
        "single-node: 'postgres_storage_size' is '0Gi': give a size above zero in Mi, Gi or Ti, e.g. 20Gi",
    ),
    (
        "single-node",
        {"app_gpus": 9},
        "single-node: 'app_gpus' is 9: use from 0 to 8",
    ),
    (
        "eks-karpenter",
        {"region": "eu-wst-1", "availability_zones": ("eu-wst-1a", "eu-wst-1b")},
        "eks-karpenter: 'region' is 'eu-wst-1': did you mean 'eu-west-1'? use an AWS region where EKS runs: ",
    ),
    (
        "eks-karpenter",
        {"cluster_name": "gpu-" + "x" * 33},
        f"eks-karpenter: 'cluster_name' is 'gpu-{'x' * 33}': use at most 36 characters: IAM role and "
        "EventBridge rule names derived from it (<name>-karpenter-spot-interruption) may have 64",
    ),
    (
        "eks-karpenter",
        {"availability_zones": ["eu-west-1a", "eu-west-1b"]},
        "eks-karpenter: 'availability_zones' is ['eu-west-1a', 'eu-west-1b']: give a tuple such as "
        "('a',), each item a string",
    ),
    (
        "eks-karpenter",
        {"rds_instance_class": "t4g.medium"},
        "eks-karpenter: 'rds_instance_class' is 't4g.medium': ",
    ),
    (
        "eks-karpenter",
        {"ami_alias": "al2023@latest"},
        "eks-karpenter: 'ami_alias' is 'al2023@latest': use family@release with a family of al2023, "
        "bottlerocket (EKS publishes no AL2 AMIs for Kubernetes 1.33 and later) and a pinned release "
        "such as al2023@v20260304 or bottlerocket@v1.50.0 (latest would roll every node on each AMI "
        "release)",
    ),
    (
        "proxmox-ha",
        {"environment": "prod"},
        "proxmox-ha: 'environment' is 'prod': use one of dev, staging, production",
    ),
    (
        "proxmox-ha",
        {"nfs_server": "10.0.0.21"},
        "proxmox-ha: 'nfs_server' is '10.0.0.21': worker_ips[0] already has this address; give the NFS "
        "server and each VM their own address",
    ),
    (
        "proxmox-ha",
        {"api_vip": "10.0.0.30"},
        "proxmox-ha: 'api_vip' is '10.0.0.30': nfs_server already has this address; give the NFS "
        "server and each VM their own address",
    ),
    (
        "proxmox-ha",
        {"dns_servers": ("10.0.0.11",)},
        "proxmox-ha: 'dns_servers[0]' is '10.0.0.11': control_plane_ips[0] already has this address; a VM "
        "cannot be its own DNS server; give the gateway or a resolver",
    ),
    (
        "proxmox-ha",
        {"jupyter_gpu_profiles": (1, 2)},
        "proxmox-ha: 'jupyter_gpu_profiles' is (1, 2): keep a 0-GPU profile as the default",
    ),
    (
        "proxmox-ha",
        {"jupyter_admin_users": ("admin",)},
        "proxmox-ha: 'jupyter_admin_users' is ('admin',): with jupyter_auth='native' the admin is the "
        "jupyterhub_admin_user variable, whose account the hub creates with jupyterhub_admin_password; "
        "leave it empty and make more admins on the hub's admin page",
    ),
    (
        "k3d-poc",
        {"cluster_name": "k" * 33},
        f"k3d-poc: 'cluster_name' is '{'k' * 33}': use at most 32 characters (k3d derives host names "
        "such as k3d-<name>-serverlb from it)",
    ),
    (
        "lke",
        {"gpu_max_nodes": "5"},
        "lke: 'gpu_max_nodes' is '5': give a whole number (an int, not a string)",
    ),
    (
        "single-node",
        {"gpu_enabeld": False},
        "single-node: 'gpu_enabeld' is False: not a setting of single-node; did you mean 'gpu_enabled'? "
        "the settings are ",
    ),
]


@pytest.mark.parametrize(("environment", "overrides", "message"), CASES)
def test_a_bad_setting_is_one_line_naming_the_instance_the_setting_and_the_fix(
    environment, overrides, message
):
    with pytest.raises(ConfigError) as caught:
        site_instance(environment, environment, overrides).build(cdktf.Testing.app())
    text = str(caught.value)
    assert "\n" not in text
    if message.endswith(": ") or message.endswith("are ") or message.endswith("runs: "):
        assert text.startswith(message), text
    else:
        assert text == message


def test_a_misspelt_values_overlay_fails(tmp_path):
    from gpu_constructs.helm import ValuesLayers

    (tmp_path / "app").mkdir()
    for name in ("base", "dev", "production"):
        (tmp_path / "app" / f"{name}.yaml").write_text("{}\n")
    assert ValuesLayers("dev", tmp_path).load("app") == {}
    with pytest.raises(ConfigError, match=r"'values overlay' is 'prodution': no <chart>/prodution.yaml in "):
        ValuesLayers("prodution", tmp_path)
    with pytest.raises(ConfigError, match=r"did you mean 'production'\?"):
        ValuesLayers("prodution", tmp_path)
    with pytest.raises(ConfigError, match=r"'values_dir' is "):
        ValuesLayers("dev", tmp_path / "missing")


def test_an_instance_with_a_missing_values_dir_names_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"^single-node: 'values_dir' is "):
        site_instance("single-node", "single-node", {"values_dir": tmp_path / "nothing"}).build(
            cdktf.Testing.app()
        )


def run_app(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CHECKPOINT_DISABLE": "1",
        "PYTHONWARNINGS": "ignore",
        **env,
    }
    environment.pop("GPU_CONSTRUCTS_DEBUG", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, *code.split()] if code == "main.py" else [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_entry_point_prints_one_line_and_exits_2(tmp_path):
    done = run_app("main.py", GPU_STACKS="singl-node", CDKTF_OUTDIR=str(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "error: 'GPU_STACKS' is 'singl-node': did you mean 'single-node'? use stack names from main.py: "
        "single-node, proxmox-ha, eks-karpenter, k3d-poc, lke\n"
    )


BAD_APP = (
    "import sys; from gpu_constructs import provider_imports; provider_imports.install(); "
    "from environments import Instance, main; "
    "sys.exit(main([Instance('lab', 'single-node', {'gpu_enabled': 'false'})]))"
)


def test_a_bad_setting_through_the_entry_point_is_one_line_without_a_traceback(tmp_path):
    done = run_app(BAD_APP, CDKTF_OUTDIR=str(tmp_path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "error: lab: 'gpu_enabled' is 'false': give True or False (a bool, not a string)"
    ]
    assert not (tmp_path / "manifest.json").exists()


def test_the_traceback_on_request(tmp_path):
    done = run_app(BAD_APP, CDKTF_OUTDIR=str(tmp_path), GPU_CONSTRUCTS_DEBUG="1")
    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert done.stderr.rstrip().endswith(
        "ConfigError: lab: 'gpu_enabled' is 'false': give True or False (a bool, not a string)"
    )
