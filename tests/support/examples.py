"""The example apps of examples/ and the library example of docs/library.md, run outside the
repository (tests/app/test_examples.py) and from the installed wheel (tests/app/test_wheel.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, aws_provider_mirror, terraform_binary

EXAMPLES = ROOT / "examples"
NAMES = sorted(path.parent.name for path in EXAMPLES.glob("*/main.py"))
PROBE = """
import json, runpy, sys
runpy.run_path("main.py", run_name="__main__")
import gpu_constructs
with open("probe.json", "w") as out:
    json.dump({"file": gpu_constructs.__file__, "modules": sorted(sys.modules)}, out)
"""


def run_example(
    python: str | Path, name: str, work: Path, env: dict[str, str]
) -> tuple[dict[str, Any], Path]:
    """Copy example ``name`` into ``work`` (outside the repository) and run its main.py there with
    ``python``; (what the run imported, the stack's synthesized directory)."""
    app = work / name
    shutil.copytree(EXAMPLES / name, app)
    assert not app.resolve().is_relative_to(ROOT.resolve())
    run_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    run_env.update(env, CDKTF_OUTDIR=str(app / "out"), JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20")
    result = subprocess.run(
        [str(python), "-W", "error::RuntimeWarning", "-c", PROBE],
        cwd=app, env=run_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    (stack_dir,) = (app / "out" / "stacks").iterdir()
    return json.loads((app / "probe.json").read_text()), stack_dir


def check_synthesized(name: str, stack_dir: Path) -> dict[str, Any]:
    """What each example says it builds, read from its synthesized stack."""
    stack: dict[str, Any] = json.loads((stack_dir / "cdk.tf.json").read_text())
    releases = {r["name"]: r for r in stack["resource"]["helm_release"].values()}
    if name == "own-cluster":
        assert sorted(releases) == ["gpu-operator", "inference"]
        assert stack["provider"]["helm"][0]["kubernetes"] == {
            "config_path": "~/.kube/config",
            "config_context": "team-gpu",
        }
        # an existing cluster: nothing of the stack's to wait for or to be replaced with
        assert "lifecycle" not in releases["gpu-operator"] and "depends_on" not in releases["gpu-operator"]
        manifests = "\n".join(releases["inference"]["values"])
        assert (
            "ingressClassName: nginx" in manifests and "kubernetes.azure.com/accelerator: nvidia" in manifests
        )
    elif name == "k3s-host":
        assert sorted(releases) == ["gpu-operator"]
        assert_one_host_steps(stack)
        # the provider reads its access from the host at every run, not from the kubeconfig copy
        assert set(stack["provider"]["helm"][0]["kubernetes"]) == {"host", "cluster_ca_certificate", "exec"}
        assert len(stack["data"]["external"]) == 1
    elif name == "eks":
        assert sorted(releases) == [
            "karpenter",
            "karpenter-crd",
            "karpenter-node-pools",
            "nvidia-device-plugin",
        ]
        assert len(stack["resource"]["aws_eks_cluster"]) == 1
    else:
        raise AssertionError(f"examples/{name} has no check here: add one")
    return stack


def validate_offline(stack_dir: Path, tmp_path: Path) -> None:
    """``terraform validate`` of the stack with every provider this machine installs offline
    (hashicorp/aws from the filesystem mirror); the Helm layer is left out."""
    from tests.support.examples import offline_part

    terraform = terraform_binary()
    mirror = aws_provider_mirror()
    if mirror is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the hashicorp/aws filesystem mirror is required under CI")
        pytest.skip("no local hashicorp/aws filesystem mirror: nothing of the AWS stack validates offline")
    config = json.loads((stack_dir / "cdk.tf.json").read_text())
    part, missing = offline_part(config, {"hashicorp/aws"})
    assert missing == ["helm"] and part["resource"].get("aws_eks_cluster")
    (tmp_path / "main.tf.json").write_text(json.dumps(part))
    cli = tmp_path / "cli.tfrc"
    cli.write_text(f'provider_installation {{\n  filesystem_mirror {{ path = "{mirror}" }}\n}}\n')
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    for command in (["init", "-backend=false", "-input=false"], ["validate"]):
        result = subprocess.run(
            [terraform, *command, "-no-color"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]


def offline_part(config: dict[str, Any], available: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The configuration without the providers that cannot be installed here (and their resources);
    returns it with the providers left out. Fails if what stays refers to what was left out."""
    part = json.loads(json.dumps(config))
    terraform = part["terraform"]
    missing = [
        local
        for local, requirement in terraform.get("required_providers", {}).items()
        if _source(local, requirement) not in available
    ]
    dropped: list[str] = []
    for section in ("resource", "data"):
        for kind in list(part.get(section, {})):
            if kind.split("_")[0] in missing:
                prefix = "data." if section == "data" else ""
                dropped += [f"{prefix}{kind}.{name}" for name in part[section].pop(kind)]
    for local in missing:
        terraform["required_providers"].pop(local)
        part.get("provider", {}).pop(local, None)
    for section in ("provider", "resource", "data"):
        if section in part and not part[section]:
            del part[section]  # Terraform rejects an empty block
    for section in ("resource", "data"):
        for bodies in part.get(section, {}).values():
            for body in bodies.values():
                if "depends_on" in body:
                    body["depends_on"] = [d for d in body["depends_on"] if d not in dropped]
    text = json.dumps(part)
    assert [address for address in dropped if f"{address}." in text or f'"{address}"' in text] == []
    return part, missing


def _source(local: str, requirement: dict[str, Any]) -> str:
    source = str(requirement.get("source", local))
    return source if "/" in source else f"hashicorp/{source}"


def library_example() -> str:
    """docs/library.md's one Python block that builds a stack with the library."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S)
    (example,) = [block for block in blocks if "K3sHostGpuCompute(" in block]
    return example


def assert_one_host_steps(stack: dict[str, Any]) -> None:
    """A K3sHostGpuCompute on one host: the datastore, the driver, k3s, the kubeconfig copy and the
    node labels steps, and the agents' leave step (one instance per agent: none on one host)."""
    steps = stack["resource"]["terraform_data"]
    assert len(steps) == 6
    (leave,) = [step for name, step in steps.items() if "agents-leave" in name]
    assert leave["for_each"] == "${toset([])}"
