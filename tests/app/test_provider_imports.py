"""The lazy provider loading: same output as ordinary imports, and loud if a package's layout changes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import main
from gpu_constructs import provider_imports
from tests.conftest import ROOT, synth_main

REPORT_ENV = "GPU_CONSTRUCTS_NODE_MODULES_REPORT"
ENGINE = provider_imports.ENGINE
AWS_NPM = f"/{ENGINE.npm_provider_scope}aws/"


def _aws_files(report: Path) -> list[str]:
    return [file.split(AWS_NPM, 1)[1] for file in json.loads(report.read_text()) if AWS_NPM in file]


def test_lazy_and_ordinary_imports_synthesize_identical_bytes(tmp_path):
    lazy = synth_main(
        tmp_path / "lazy", **{provider_imports.EAGER_ENV: "0", REPORT_ENV: str(tmp_path / "lazy.json")}
    )
    # The ordinary way has no preload; this one only reports, redirecting nothing.
    eager = synth_main(
        tmp_path / "eager",
        **{
            provider_imports.EAGER_ENV: "1",
            REPORT_ENV: str(tmp_path / "eager.json"),
            "NODE_OPTIONS": f'--require "{provider_imports.NODE_HOOK}"',
            provider_imports.NODE_PACKAGES_ENV: "",
        },
    )
    assert lazy and lazy == eager

    # Every stack main.py lists was written by the active engine: its metadata names its version.
    version = importlib.metadata.version(ENGINE.core)
    stacks = {
        path.split("/")[1]: json.loads(body) for path, body in lazy.items() if path.endswith("cdk.tf.json")
    }
    assert sorted(stacks) == sorted(instance.stack for instance in main.INSTANCES)
    assert {stack["//"]["metadata"]["version"] for stack in stacks.values()} == {version}

    # Node side: the lazy synth loaded the lazy index and only the AWS submodules the stacks use;
    # the ordinary one loaded the eager index and with it every submodule.
    lazy_files, eager_files = _aws_files(tmp_path / "lazy.json"), _aws_files(tmp_path / "eager.json")
    assert "lib/lazy-index.js" in lazy_files and "lib/index.js" not in lazy_files
    assert {"lib/vpc/index.js", "lib/eks-cluster/index.js", "lib/provider/index.js"} <= set(lazy_files)
    assert len(lazy_files) < 60, lazy_files
    assert "lib/index.js" in eager_files and len(eager_files) > 2000


def test_only_the_submodules_in_use_are_imported():
    prefix = ENGINE.provider_prefix
    code = (
        "import os\n"
        "from gpu_constructs import provider_imports; provider_imports.install()\n"
        "import sys\n"
        "from cdktf_cdktf_provider_helm.release import Release\n"
        f"assert provider_imports.is_lazy({prefix + 'helm'!r})\n"
        f"print(sorted(m for m in sys.modules if m.startswith({prefix!r}) and not m.endswith('._private')))\n"
        "print(os.environ.get('NODE_OPTIONS'), os.environ.get(provider_imports.NODE_PACKAGES_ENV))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "NODE_OPTIONS"}
    env["NODE_OPTIONS"] = "--max-old-space-size=4000"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    modules, environment = result.stdout.strip().splitlines()
    if ENGINE.name == "cdktf":
        # the stand-ins of all four packages, and of helm only what the import needs
        expected = ["aws", "helm", "helm._jsii", "helm.release", "kubernetes", "null"]
    else:
        # cdktn's packages are lazy themselves: only the imported one, its assembly and the submodule
        expected = ["helm", "helm._jsii", "helm.release"]
    assert modules == str([prefix + name for name in expected])
    # The preload is only in the kernel's environment: the app's own child processes do not get it.
    assert environment == "--max-old-space-size=4000 None"


@pytest.mark.skipif(ENGINE.name != "cdktf", reason="cdktf's layout; cdktn's is checked by the next test")
@pytest.mark.parametrize("package", provider_imports.PROVIDER_PACKAGES)
def test_package_layout_is_what_the_lazy_loader_relies_on(package):
    """If an upgrade changes this, the lazy loader must be revisited: fail here, not in a synth."""
    root = provider_imports.package_root(package)
    assert root is not None, f"{package} is not an installed package"
    init = (root / "__init__.py").read_text()
    # The package __init__ only imports its submodules and _jsii: nothing a submodule needs from it.
    body = init.split("'''", 2)[-1]
    defined = re.findall(r"^(?:def|class) (\w+)", body, re.M)
    assert defined == ["check_type"], f"{package}/__init__.py defines {defined}"
    assert "from ._jsii import *" in body
    submodules = re.findall(r"^from \. import (\w+)$", body, re.M)
    assert submodules, f"{package}/__init__.py no longer imports its submodules one by one"
    assert (root / "_jsii" / "__init__.py").is_file()
    for name in submodules[:3] + submodules[-3:]:
        source = (root / name / "__init__.py").read_text()
        assert "from .._jsii import *" in source, f"{package}.{name} no longer loads the assembly itself"
        assert f"from {package} import" not in source and "from .. import" not in source


@pytest.mark.skipif(ENGINE.name != "cdktn", reason="cdktn's layout; cdktf's is checked by the test above")
@pytest.mark.parametrize("package", provider_imports.PROVIDER_PACKAGES)
def test_cdktn_packages_import_their_submodules_on_first_use(package):
    """The loader leaves cdktn's Python packages alone because they are lazy: fail here if that changes."""
    code = (
        "import sys\n"
        f"import {package}\n"
        f"print(sorted(m for m in sys.modules if m.startswith({package + '.'!r}) and '_private' not in m))\n"
        f"print({package}.provider.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, used = result.stdout.strip().splitlines()
    assert before == str([f"{package}._jsii"]) and used == f"{package}.provider"


# cdktf's lib/index.js: exports.vpc = require("./vpc"); cdktn's: exports.vpc = __importStar(require("./vpc/index"));
_EAGER_EXPORT = re.compile(
    r'^exports\.(\w+) = (?:__importStar\()?require\("\./([\w.-]+?)(?:/index)?"\)\)?;$', re.M
)
_LAZY_EXPORT = re.compile(
    r"^Object\.defineProperty\(exports, '(\w+)', \{ get: function \(\) \{ return require\('\./([\w.-]+)'\); \} \}\);$",
    re.M,
)


@pytest.mark.parametrize("package", provider_imports.PROVIDER_PACKAGES)
def test_npm_package_ships_a_lazy_index_with_the_same_exports(package):
    """The Node preload swaps lib/index.js for lib/lazy-index.js: both must export the same submodules."""
    name = provider_imports.npm_name(package)
    assert name and name.startswith(ENGINE.npm_provider_scope), (
        f"{package}/_jsii no longer loads its assembly by name"
    )
    root = provider_imports.package_root(package)
    assert root is not None, f"{package} is not an installed package"
    tarballs = list((root / "_jsii").glob("*.tgz"))
    assert len(tarballs) == 1, tarballs
    wanted = {"package/package.json", "package/lib/index.js", "package/lib/lazy-index.js"}
    files: dict[str, str] = {}
    with tarfile.open(tarballs[0]) as archive:
        for member in archive:
            if member.name in wanted:
                extracted = archive.extractfile(member)
                assert extracted is not None
                files[member.name] = extracted.read().decode()
    assert set(files) == wanted, f"{tarballs[0].name} lacks {wanted - set(files)}"
    manifest = json.loads(files["package/package.json"])
    assert manifest["name"] == name and manifest["main"] == "lib/index.js" and "exports" not in manifest
    eager = dict(_EAGER_EXPORT.findall(files["package/lib/index.js"]))
    lazy = dict(_LAZY_EXPORT.findall(files["package/lib/lazy-index.js"]))
    assert eager and lazy == eager
    assert "provider" in lazy


def test_warming_the_package_cache_leaves_every_assembly_indexed(tmp_path):
    """`make` warms the jsii package cache; this fails if the runtime stops indexing the way it waits for."""
    cache = tmp_path / "jsii-cache"
    code = (
        "from gpu_constructs.provider_imports import warm_package_cache\n"
        "print(warm_package_cache(timeout=180))\n"
    )
    env = {**os.environ, "JSII_RUNTIME_PACKAGE_CACHE_ROOT": str(cache)}
    env.pop(provider_imports.EAGER_ENV, None)
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == "[]", result.stdout + result.stderr
        indexed = sorted(
            str(p.parent.relative_to(cache).parent) for p in cache.rglob(".jsii.runtime.v*.json")
        )
        expected = sorted(
            f"{name}/{version}"
            for name, version in (provider_imports.assembly(p) for p in provider_imports.JSII_PACKAGES)
            if name
        )
        assert indexed == expected
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # the extracted packages are about 400 MB
