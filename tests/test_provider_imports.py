"""The lazy provider loading: same output as ordinary imports, and loud if a package's layout changes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_constructs import provider_imports
from tests.conftest import ROOT, synth_main


def test_lazy_and_ordinary_imports_synthesize_identical_bytes(tmp_path):
    lazy = synth_main(tmp_path / "lazy", **{provider_imports.EAGER_ENV: "0"})
    eager = synth_main(tmp_path / "eager", **{provider_imports.EAGER_ENV: "1"})
    assert lazy and lazy == eager


def test_only_the_submodules_in_use_are_imported():
    code = (
        "from gpu_constructs import provider_imports; provider_imports.install()\n"
        "import sys\n"
        "from cdktf_cdktf_provider_helm.release import Release\n"
        "assert provider_imports.is_lazy('cdktf_cdktf_provider_helm')\n"
        "print(sorted(m for m in sys.modules if m.startswith('cdktf_cdktf_provider_') and not m.endswith('._private')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == (
        "['cdktf_cdktf_provider_aws', 'cdktf_cdktf_provider_helm', 'cdktf_cdktf_provider_helm._jsii', "
        "'cdktf_cdktf_provider_helm.release', 'cdktf_cdktf_provider_kubernetes', 'cdktf_cdktf_provider_null']"
    )


@pytest.mark.parametrize("package", provider_imports.PROVIDER_PACKAGES)
def test_package_layout_is_what_the_lazy_loader_relies_on(package):
    """If an upgrade changes this, the lazy loader must be revisited: fail here, not in a synth."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not an installed package"
    root = Path(next(iter(spec.submodule_search_locations)))
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
