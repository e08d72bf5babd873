"""The installable library: the wheel carries every file the code reads, importing it changes nothing
in the process, and the library example of docs/library.md runs from the wheel in a fresh virtualenv outside
the repository, then passes ``terraform validate`` as far as the providers here allow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, aws_provider_mirror, terraform_binary, unavailable
from tests.support.examples import assert_one_host_steps, library_example, offline_part

ENGINE_MODULES = ("cdktf", "cdktn", "constructs", "jsii")


def _files(*paths: str) -> list[str]:
    """The files under ``paths`` in the checkout, relative to it, without Python's caches."""
    found = []
    for path in paths:
        top = ROOT / path
        for file in [top] if top.is_file() else sorted(top.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                found.append(file.relative_to(ROOT).as_posix())
    return found


PACKAGE_DIRS: dict[str, str] = {
    package.replace(".", "/"): directory
    for package, directory in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ].items()
}
"""pyproject.toml's package-dir: packages whose files live elsewhere in the checkout (the image build
contexts under docker/), as installed path -> checkout path."""
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "gpu_constructs", *PACKAGE_DIRS.values())
"""What the build reads from the checkout (pyproject.toml's packages, package-dir and readme); the
pages under docs/ are not in the wheel."""
NOT_SHIPPED = ("gpu_constructs/monitoring/rules/tests/",)
"""Source files the library never reads: promtool's unit tests of the alert rules."""
PACKAGED = {
    path: installed + path.removeprefix(directory)
    for installed, directory in PACKAGE_DIRS.items()
    for path in _files(directory)
}
"""Files pyproject.toml maps into the package from elsewhere in the checkout."""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    python: Path
    """The fresh virtualenv's interpreter."""
    venv: Path
    work: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel, built once from a copy of the checkout (an in-tree build leaves build/ behind,
    whose stale files a later build would ship), installed into a fresh virtualenv."""
    import importlib.util

    if importlib.util.find_spec("setuptools") is None:
        # the build backend pyproject.toml names; virtualenv seeds it into Python 3.11 environments
        unavailable("setuptools is not in this environment: the wheel cannot be built offline")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in _files(*BUILD_INPUTS):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # the environment's own setuptools and no index: nothing is downloaded
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(work / "dist"), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (work / "dist").glob("gpu_constructs-*.whl")

    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # The heavy dependencies (cdktf, jsii, the provider bindings) come from this environment, after
    # the virtualenv's own packages: a .pth line appends its site-packages, which holds no
    # gpu_constructs (the project runs from its checkout, it is not installed there).
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "project-dependencies.pth").write_text("".join(f"{path}\n" for path in sorted(here)))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return Installed(wheel, python, venv, work)


def test_the_wheel_carries_every_file_the_library_reads(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    expected = {
        PACKAGED.get(path, path)
        for path in _files("gpu_constructs", *PACKAGE_DIRS.values())
        if not path.startswith(NOT_SHIPPED)
    }
    assert sorted(expected - names) == []
    assert "gpu_constructs/py.typed" in names and "gpu_constructs/lazy_provider_index.js" in names
    (license_file,) = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert wheel.read(license_file) == (ROOT / "LICENSE").read_bytes()
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License: Apache-2.0" in metadata
    assert {"Provides-Extra: aws", "Provides-Extra: kubernetes", "Provides-Extra: verify"} <= set(
        metadata.splitlines()
    )


PROBE = """
import json, os, runpy, sys
environ, meta_path, modules = dict(os.environ), list(sys.meta_path), set(sys.modules)
import gpu_constructs, gpu_constructs.compute
probe = {
    "file": gpu_constructs.__file__,
    "path": sys.path,
    "loaded_on_import": sorted({m.split(".")[0] for m in set(sys.modules) - modules}),
    "changed_on_import": {"environ": dict(os.environ) != environ, "meta_path": list(sys.meta_path) != meta_path},
}
runpy.run_path("app.py", run_name="__main__")
# after the example: these import the engine, which the example's first call sets up
from gpu_constructs.compute import k3d
probe["k3d_context"] = str(k3d.image_context())
probe["k3d_dockerfile"] = (k3d.image_context() / "Dockerfile").read_text()
probe["compute_exports"] = sorted(n for n in gpu_constructs.compute.__all__ if getattr(gpu_constructs.compute, n))
with open("probe.json", "w") as out:
    json.dump(probe, out)
"""


@pytest.fixture(scope="module")
def example(installed: Installed) -> tuple[dict[str, Any], Path]:
    """docs/library.md's example run by the virtualenv's Python from a directory outside the repository,
    with no PYTHONPATH and an unrelated ENGINE; (what the probe saw, the stack's output directory)."""
    app = installed.work / "app"
    app.mkdir()
    assert not app.resolve().is_relative_to(ROOT.resolve())
    (app / "app.py").write_text(library_example())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        ENGINE="docker", CDKTF_OUTDIR=str(app / "out"), JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20"
    )
    # -W error: install() warns where it cannot load the providers lazily (a missing hook file)
    result = subprocess.run(
        [str(installed.python), "-W", "error::RuntimeWarning", "-c", PROBE],
        cwd=app, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads((app / "probe.json").read_text()), app / "out" / "stacks" / "gpu-lab"


def test_the_example_runs_from_the_installed_package_outside_the_repository(installed, example):
    probe, stack_dir = example
    assert Path(probe["file"]).is_relative_to(installed.venv), probe["file"]
    # nothing on the path offers another gpu_constructs (the checkout's is not there)
    offering = [
        entry
        for entry in probe["path"]
        if (Path(entry or installed.work / "app") / "gpu_constructs").exists()
    ]
    assert [Path(entry).resolve() for entry in offering] == [Path(probe["file"]).resolve().parent.parent]
    # importing the library loads no engine and changes neither the environment nor the import system
    assert [name for name in probe["loaded_on_import"] if name in ENGINE_MODULES] == []
    assert probe["changed_on_import"] == {"environ": False, "meta_path": False}
    # the k3d node image's build context is the installed copy
    assert Path(probe["k3d_context"]).is_relative_to(installed.venv)
    assert probe["k3d_dockerfile"] == (ROOT / "docker" / "k3s-cuda" / "Dockerfile").read_text()
    assert "K3dGpuCompute" in probe["compute_exports"] and "EksGpuCompute" in probe["compute_exports"]

    stack = json.loads((stack_dir / "cdk.tf.json").read_text())
    assert {r["name"] for r in stack["resource"]["helm_release"].values()} == {"gpu-operator"}
    assert_one_host_steps(stack)


@pytest.fixture(scope="module")
def installed_examples(installed: Installed) -> dict[str, tuple[dict[str, Any], Path]]:
    """Each app of examples/ run by the virtualenv's Python outside the repository, no PYTHONPATH."""
    from tests.support.examples import NAMES, run_example

    work = installed.work / "examples"
    work.mkdir()
    return {name: run_example(installed.python, name, work, {"ENGINE": "docker"}) for name in NAMES}


def test_the_examples_synthesize_from_the_installed_package(installed, installed_examples):
    from tests.support.examples import check_synthesized

    for name, (probe, stack_dir) in installed_examples.items():
        assert Path(probe["file"]).is_relative_to(installed.venv), (name, probe["file"])
        check_synthesized(name, stack_dir)


def test_the_installed_eks_example_passes_terraform_validate(installed_examples, tmp_path):
    from tests.support.examples import validate_offline

    validate_offline(installed_examples["eks"][1], tmp_path)


def test_the_example_passes_terraform_validate_as_far_as_the_providers_here_allow(example, tmp_path):
    """Every provider this machine can install offline stays in (hashicorp/aws from the filesystem
    mirror, Terraform's built-in terraform_data); the example's Helm layer is left out, its schema
    needs the helm provider, which the GitHub workflow's validate of the stacks installs."""
    terraform = terraform_binary()
    _, stack_dir = example
    config = json.loads((stack_dir / "cdk.tf.json").read_text())
    mirror = aws_provider_mirror()
    available = {"hashicorp/aws"} if mirror else set()
    part, missing = offline_part(config, available)
    assert part["resource"].get("terraform_data"), missing  # the part validated is not empty

    (tmp_path / "main.tf.json").write_text(json.dumps(part))
    cli = tmp_path / "cli.tfrc"
    cli.write_text(
        f'provider_installation {{\n  filesystem_mirror {{ path = "{mirror or tmp_path / "no-providers"}" }}\n}}\n'
    )
    # validate reads the SSH key the example names (file("~/.ssh/id_ed25519")): a stand-in one
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("not a key: terraform validate only reads the file\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "TF_CLI_CONFIG_FILE": str(cli),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
    }
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


def test_k3d_builds_from_the_installed_copy_outside_a_source_tree(synth, monkeypatch, tmp_path):
    """Where the package has no checkout around it, the node image's build context and the Dockerfile
    in the cluster's definition are the installed copy's (compute/k3d resolves the source tree first)."""
    from gpu_constructs.compute import k3d

    packaged = tmp_path / "site-packages" / "gpu_constructs" / "k3s_cuda"
    packaged.mkdir(parents=True)
    (packaged / "Dockerfile").write_text("FROM scratch\n")
    monkeypatch.setattr(k3d, "PROJECT_ROOT", tmp_path / "site-packages")
    monkeypatch.setattr(k3d, "PACKAGED_IMAGE_DIR", packaged)

    def cluster(stack):
        k3d.K3dGpuCompute(stack, "k3d", props=k3d.K3dProps(kubeconfig_path="/tmp/k"))

    (body,) = synth(cluster)["resource"]["terraform_data"].values()
    environment = body["provisioner"][0]["local-exec"]["environment"]
    assert environment["BUILD_CONTEXT"] == packaged.as_posix()
    assert k3d.docker_build_args()[-1] == str(packaged)
    definition = body["triggers_replace"]["definition"]
    (packaged / "Dockerfile").write_text("FROM scratch\nRUN true\n")
    (changed,) = synth(cluster)["resource"]["terraform_data"].values()
    assert changed["triggers_replace"]["definition"] != definition  # the installed Dockerfile counts


INSTALL_AFTER = """
import warnings
{before}
from gpu_constructs import provider_imports
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    {patch}
    provider_imports.install()
from cdktf_cdktf_provider_helm.release import Release
print("\\n".join(str(w.message) for w in caught if w.category is RuntimeWarning))
"""


@pytest.mark.parametrize(
    ("before", "patch", "expected"),
    [
        ("", "pass", []),
        (
            "import cdktf_cdktf_provider_helm",
            "pass",
            ["cdktf_cdktf_provider_helm imported before it", "the jsii kernel already runs"],
        ),
        (
            "",
            "provider_imports.NODE_HOOK = provider_imports.Path('/nonexistent/hook.js')",
            ["/nonexistent/hook.js is missing"],
        ),
    ],
    ids=["first", "after-provider-import", "no-hook"],
)
def test_install_warns_where_it_cannot_load_lazily_and_the_imports_still_work(before, patch, expected):
    from gpu_constructs import provider_imports

    if before and provider_imports.PYTHON_LAZY:
        pytest.skip("cdktn's provider packages are lazy by themselves: there is no stand-in to miss")
    code = INSTALL_AFTER.format(before=before, patch=patch)
    env = {k: v for k, v in os.environ.items() if k != provider_imports.EAGER_ENV}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    messages = [line for line in result.stdout.splitlines() if line]
    assert len(messages) == len(expected), messages
    for message, fragment in zip(messages, expected, strict=True):
        assert fragment in message and "call it before the app's first cdktf" in message
