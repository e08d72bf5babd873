"""Load the prebuilt cdktf provider packages one submodule at a time, in Python and in Node.

Each prebuilt provider package (``cdktf_cdktf_provider_aws`` and friends) loads everything it has,
twice. In Python its ``__init__`` imports every one of its submodules: 2,136 for AWS, which costs
seconds and about a gigabyte before the first resource is written. In the jsii kernel's Node process
the package's entry point, ``lib/index.js``, requires every one of its JavaScript submodules: seconds
more. Neither is needed: a Python submodule only needs the package's ``_jsii`` module (which registers
the jsii assembly with the kernel), and every package ships ``lib/lazy-index.js``, the same exports as
getters that require a submodule on first use, which its ``package.json`` does not name.

:func:`install` fixes both, before anything is synthesized:

* Python: it puts a light stand-in for each provider package into ``sys.modules``, a real package
  object with the same ``__path__`` whose attributes import submodules on first use (PEP 562). Code
  keeps writing ordinary imports (``from cdktf_cdktf_provider_helm.release import Release``); only
  the submodules a stack uses are ever imported.
* Node: it starts the jsii kernel with ``lazy_provider_index.js`` preloaded (``NODE_OPTIONS
  --require``), which resolves these packages to their lazy index. The kernel finds a class through
  the package's exports (``vpc.Vpc``), so only the JavaScript submodules in use are loaded. The
  environment is changed only while the kernel starts; child processes of the app do not inherit it.

The synthesized JSON is the same byte for byte (``tests/test_provider_imports.py`` proves it over
every stack), and the same tests fail loudly if an upgraded package stops having the layout this
relies on. ``install`` must run before the first jsii import (``gpu_constructs`` and ``main.py`` call
it first thing); if the kernel is already running, only the Python side is made lazy.

Set ``GPU_CONSTRUCTS_EAGER_IMPORTS=1`` to switch all of this off and load the packages the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import types
from pathlib import Path

PROVIDER_PACKAGES = (
    "cdktf_cdktf_provider_aws",
    "cdktf_cdktf_provider_helm",
    "cdktf_cdktf_provider_kubernetes",
    "cdktf_cdktf_provider_null",
)

EAGER_ENV = "GPU_CONSTRUCTS_EAGER_IMPORTS"
NODE_PACKAGES_ENV = "GPU_CONSTRUCTS_LAZY_NODE_PACKAGES"
NODE_HOOK = Path(__file__).with_name("lazy_provider_index.js")

_ASSEMBLY_LOAD = re.compile(r'jsii\.JSIIAssembly\.load\(\s*"([^"]+)"')


class _LazyProviderPackage(types.ModuleType):
    """A provider package whose submodules are imported only when first used."""

    def __getattr__(self, name: str) -> types.ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{self.__name__}.{name}")
        except ModuleNotFoundError as error:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from error


def _package_root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None  # not installed: an import of it fails the ordinary way
    return Path(next(iter(spec.submodule_search_locations)))


def _stand_in(package: str) -> types.ModuleType | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    module = _LazyProviderPackage(package)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = package
    return module


def npm_name(package: str) -> str | None:
    """The npm package behind a provider package, as its ``_jsii`` module loads it into the kernel."""
    root = _package_root(package)
    if root is None:
        return None
    match = _ASSEMBLY_LOAD.search((root / "_jsii" / "__init__.py").read_text())
    return match.group(1) if match else None


def _node_option(path: Path) -> str:
    quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'--require "{quoted}"'


def _start_kernel_with_lazy_entry_points() -> None:
    """Start the jsii kernel with the lazy-index preload; a no-op when the kernel already runs."""
    if "constructs" in sys.modules:
        return  # the kernel started before install(): its environment can no longer change
    names = [name for name in (npm_name(package) for package in PROVIDER_PACKAGES) if name]
    saved = {key: os.environ.get(key) for key in ("NODE_OPTIONS", NODE_PACKAGES_ENV)}
    os.environ["NODE_OPTIONS"] = " ".join(filter(None, [saved["NODE_OPTIONS"], _node_option(NODE_HOOK)]))
    os.environ[NODE_PACKAGES_ENV] = ",".join(names)
    try:
        importlib.import_module("constructs")  # loads its assembly: the kernel starts with this environment
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def install() -> None:
    """Make the provider packages load lazily in Python and in Node (idempotent)."""
    if os.environ.get(EAGER_ENV) == "1":
        return
    for package in PROVIDER_PACKAGES:
        if package in sys.modules:
            continue
        module = _stand_in(package)
        if module is not None:
            sys.modules[package] = module
    _start_kernel_with_lazy_entry_points()


def is_lazy(package: str) -> bool:
    """Whether ``package`` is currently served by a lazy stand-in."""
    return isinstance(sys.modules.get(package), _LazyProviderPackage)
