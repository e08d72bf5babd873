"""The engine choice: one place resolves it, and the code's cdktf names mean the chosen engine's packages."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gpu_constructs import engine
from gpu_constructs.errors import ConfigError
from tests.conftest import ROOT


def test_engine_env_chooses_and_an_unknown_one_fails_with_the_fix():
    assert engine.resolve({"GPU_CONSTRUCTS_ENGINE": "cdktf"}).core == "cdktf"
    assert engine.resolve({"GPU_CONSTRUCTS_ENGINE": "cdktn"}).provider_package("aws") == "cdktn_provider_aws"
    with pytest.raises(
        ConfigError, match=r"^'GPU_CONSTRUCTS_ENGINE' is 'terraform': set it to one of cdktf, cdktn or"
    ):
        engine.resolve({"GPU_CONSTRUCTS_ENGINE": "terraform"})


def test_without_engine_env_the_installed_engine_is_used():
    assert engine.resolve({}) == engine.ACTIVE
    # an unrelated ENGINE (a container engine's, another tool's) is not this setting
    assert engine.resolve({"ENGINE": "docker"}) == engine.ACTIVE


def test_an_engine_that_is_not_installed_fails_at_install_with_the_fix():
    missing = engine.Engine("cdktx", "cdktx_not_installed", "cdktx_provider_", "@cdktx/provider-", "cdktx")
    with pytest.raises(
        ConfigError,
        match=r"^'GPU_CONSTRUCTS_ENGINE' is 'cdktx': install cdktx_not_installed in this environment or unset",
    ):
        engine.install(missing)


def test_make_passes_its_engine_on_under_the_namespaced_name(tmp_path):
    """`ENGINE=cdktn make ...` keeps working: make hands its ENGINE to the code as GPU_CONSTRUCTS_ENGINE."""
    import os
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    probe = tmp_path / "Makefile"
    probe.write_text(f'include {ROOT}/Makefile\nprobe:\n\t@echo "$$GPU_CONSTRUCTS_ENGINE"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE", "GPU_CONSTRUCTS_ENGINE")}
    for chosen, expected in ((None, "cdktf"), ("cdktf", "cdktf"), ("cdktn", "cdktn")):
        run_env = env if chosen is None else {**env, "ENGINE": chosen}
        result = subprocess.run(
            ["make", "--no-print-directory", "-f", str(probe), "probe"],
            cwd=ROOT, env=run_env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert result.stdout.strip() == expected, chosen


def test_only_cdktn_binds_names():
    assert engine.aliases(engine.ENGINES["cdktf"]) == {}
    cdktn = engine.ENGINES["cdktn"]
    assert engine.real_name("cdktf", cdktn) == "cdktn"
    assert engine.real_name("cdktf_cdktf_provider_aws.vpc", cdktn) == "cdktn_provider_aws.vpc"
    assert engine.real_name("cdktf_extra", cdktn) == "cdktf_extra"
    assert engine.real_name("constructs", cdktn) == "constructs"


def test_the_code_names_are_the_active_engines_modules():
    """`import cdktf` is the engine's own module object, and the real modules keep their identity."""
    code = (
        "from gpu_constructs import provider_imports; provider_imports.install()\n"
        "import importlib\n"
        "import cdktf\n"
        "from cdktf_cdktf_provider_helm.release import Release\n"
        "from gpu_constructs.engine import ACTIVE\n"
        "core = importlib.import_module(ACTIVE.core)\n"
        "release = importlib.import_module(ACTIVE.provider_package('helm') + '.release')\n"
        "assert cdktf is core and Release is release.Release\n"
        "assert core.__spec__.name == ACTIVE.core and release.__spec__.name == release.__name__\n"
        "print(ACTIVE.name, core.__name__, release.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    )
    name, core, release = result.stdout.split()
    assert (name, core) == (engine.ACTIVE.name, engine.ACTIVE.core)
    assert release == f"{engine.ACTIVE.provider_prefix}helm.release"


_ENGINE_IMPORT = re.compile(r"^\s*(?:from|import) (cdktn\w*)", re.M)


def test_no_module_imports_an_engine_package_by_its_own_name():
    """The code spells one engine's names; importing cdktn's directly would tie it to that engine."""
    sources = [
        path
        for folder in ("gpu_constructs", "environments", "tests", "bench")
        for path in (ROOT / folder).rglob("*.py")
    ] + [ROOT / "main.py"]
    found = {
        str(path.relative_to(ROOT)): _ENGINE_IMPORT.findall(path.read_text(encoding="utf-8"))
        for path in sources
    }
    assert {path: names for path, names in found.items() if names} == {}
