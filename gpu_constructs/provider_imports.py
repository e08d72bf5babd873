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

The synthesized JSON is the same byte for byte (``tests/app/test_provider_imports.py`` proves it over
every stack), and the same tests fail loudly if an upgraded package stops having the layout this
relies on.

Importing ``gpu_constructs`` does none of this. The app's entry point calls :func:`install` before
its first cdktf, constructs or provider import (``main.py`` and ``tests/conftest.py`` do, first
thing); an app that uses the library does the same::

    from gpu_constructs import provider_imports

    provider_imports.install()

    from cdktf import App, TerraformStack
    from gpu_constructs import GpuOperator

Where it cannot do its work, it says so with a :class:`RuntimeWarning` and the packages load the
plain way (same output, slower): a provider package imported before it (no stand-in for it), a jsii
kernel already running (Node loads every submodule), an installation without
``lazy_provider_index.js``. An app that never calls it gets the plain imports, without a warning.

Set ``GPU_CONSTRUCTS_EAGER_IMPORTS=1`` to switch all of this off and load the packages the ordinary way.

The engine (:mod:`gpu_constructs.engine`) decides which packages these are: cdktf's
(``cdktf_cdktf_provider_*``, npm ``@cdktf/provider-*``) or CDK Terrain's (``cdktn_provider_*``, npm
``@cdktn/provider-*``). CDK Terrain's Python packages already import their submodules on first use
(their ``__init__`` has a PEP 562 ``__getattr__``), so for them only the Node side is changed.

The jsii runtime keeps each package extracted in its package cache (``~/.cache/aws/jsii/package-cache``
or ``JSII_RUNTIME_PACKAGE_CACHE_ROOT``) with an index that lets it parse only the types a run uses.
It builds that index in the background of a load and abandons it when the process exits, which a
synth does within seconds: until some longer process finishes it, every synth parses the AWS
provider's whole 120 MB type description (about 1 GB more and seconds slower). :func:`main` (run by
``make`` after installing) loads every package and waits until the runtime has written its indexes.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import time
import types
import warnings
from pathlib import Path

from gpu_constructs import engine

ENGINE = engine.ACTIVE
PROVIDER_PACKAGES = ENGINE.provider_packages
"""The active engine's prebuilt provider packages (Python names)."""
PYTHON_LAZY = ENGINE.name == "cdktn"
"""Whether the engine's provider packages are lazy in Python by themselves."""

EAGER_ENV = "GPU_CONSTRUCTS_EAGER_IMPORTS"
NODE_PACKAGES_ENV = "GPU_CONSTRUCTS_LAZY_NODE_PACKAGES"
NODE_HOOK = Path(__file__).with_name("lazy_provider_index.js")

_ASSEMBLY_LOAD = re.compile(r'jsii\.JSIIAssembly\.load\(\s*"([^"]+)",\s*"([^"]+)"')
JSII_PACKAGES = ("constructs", ENGINE.core, *PROVIDER_PACKAGES)
"""Everything a synth loads into the jsii runtime, for :func:`warm_package_cache`."""


class _LazyProviderPackage(types.ModuleType):
    """A provider package whose submodules are imported only when first used."""

    def __getattr__(self, name: str) -> types.ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{self.__name__}.{name}")
        except ModuleNotFoundError as error:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from error


def _package_spec(package: str) -> importlib.machinery.ModuleSpec | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None  # not installed: an import of it fails the ordinary way
    return spec


def package_root(package: str) -> Path | None:
    """The directory of an installed package; None when it is not installed."""
    spec = _package_spec(package)
    return Path(next(iter(spec.submodule_search_locations or ()))) if spec else None


def _stand_in(package: str) -> types.ModuleType | None:
    spec = _package_spec(package)
    if spec is None:
        return None
    module = _LazyProviderPackage(package)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations or ())
    module.__package__ = package
    return module


def assembly(package: str) -> tuple[str, str] | None:
    """The npm package and version behind a jsii package, as its ``_jsii`` module loads them."""
    root = package_root(package)
    if root is None:
        return None
    match = _ASSEMBLY_LOAD.search((root / "_jsii" / "__init__.py").read_text())
    return (match.group(1), match.group(2)) if match else None


def npm_name(package: str) -> str | None:
    """The npm package behind a provider package, as its ``_jsii`` module loads it into the kernel."""
    found = assembly(package)
    return found[0] if found else None


def _node_option(path: Path) -> str:
    quoted = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return f'--require "{quoted}"'


def _degraded(what: str) -> None:
    warnings.warn(
        f"gpu_constructs.provider_imports.install(): {what}; call it before the app's first cdktf, "
        "constructs or provider import (same output, only slower)",
        RuntimeWarning,
        stacklevel=3,
    )


def _start_kernel_with_lazy_entry_points() -> None:
    """Start the jsii kernel with the lazy-index preload; a no-op when the kernel already runs."""
    if "constructs" in sys.modules:
        # the kernel started before install(): its environment can no longer change
        _degraded("the jsii kernel already runs, so Node loads every provider submodule")
        return
    if not NODE_HOOK.is_file():
        _degraded(f"{NODE_HOOK} is missing from this installation, so Node loads every provider submodule")
        return
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


_installed = False


def install() -> None:
    """Bind the engine's names; make the provider packages load lazily in Python and Node.

    Idempotent: only the first call of a process does the work (and warns where it cannot).
    """
    global _installed
    engine.install(ENGINE)
    if _installed or os.environ.get(EAGER_ENV) == "1":
        return
    _installed = True
    if not PYTHON_LAZY:
        early = [package for package in PROVIDER_PACKAGES if package in sys.modules]
        if early:
            _degraded(f"{', '.join(early)} imported before it, with every submodule")
        for package in PROVIDER_PACKAGES:
            if package in early:
                continue
            module = _stand_in(package)
            if module is not None:
                sys.modules[package] = module
    _start_kernel_with_lazy_entry_points()


def is_lazy(package: str) -> bool:
    """Whether ``package`` is imported and imports submodules on first use (a stand-in, or cdktn's own)."""
    module = sys.modules.get(package)
    if PYTHON_LAZY:
        return callable(getattr(module, "__getattr__", None))
    return isinstance(module, _LazyProviderPackage)


def package_cache_root() -> Path | None:
    """The jsii runtime's package cache, where it puts it on Linux and macOS; None when disabled."""
    if os.environ.get("JSII_RUNTIME_PACKAGE_CACHE", "enabled").lower() != "enabled":
        return None
    configured = os.environ.get("JSII_RUNTIME_PACKAGE_CACHE_ROOT")
    if configured:
        return Path(configured)
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "com.amazonaws.jsii" / "package-cache"
    return Path.home() / ".cache" / "aws" / "jsii" / "package-cache"


def _unindexed(root: Path, assemblies: list[tuple[str, str]]) -> list[str]:
    """The assemblies whose cache entry has no finished runtime index yet."""
    missing = []
    for name, version in assemblies:
        entries = [entry for entry in (root / name / version).glob("*") if entry.is_dir()]
        finished = [
            entry
            for entry in entries
            if list(entry.glob(".jsii.runtime.v*.json")) and not list(entry.glob(".jsii.runtime*.tmp"))
        ]
        if not finished:
            missing.append(f"{name}@{version}")
    return missing


def warm_package_cache(timeout: float = 120.0) -> list[str]:
    """Load every jsii package a synth uses and wait until the runtime has indexed each of them.

    Returns the assemblies still without an index (empty when all are ready). Best effort: the
    index is the jsii runtime's private format; a runtime that lays its cache out differently is
    reported at once, one that never finishes an index after ``timeout`` seconds.
    """
    root = package_cache_root()
    if root is None:
        return []
    install()
    assemblies = []
    for package in JSII_PACKAGES:
        if package_root(package) is None:
            continue
        importlib.import_module(f"{package}._jsii")  # extracts it and starts indexing if needed
        found = assembly(package)
        if found is not None:
            assemblies.append(found)
    if not any((root / name / version).is_dir() for name, version in assemblies):
        return [f"{name}@{version}" for name, version in assemblies]  # not the cache layout known here
    deadline = time.monotonic() + timeout
    while (missing := _unindexed(root, assemblies)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return missing


def main() -> None:
    """Warm the jsii package cache and say how it went (``make`` runs this after installing)."""
    started = time.monotonic()
    not_ready = warm_package_cache()
    if not_ready:
        print(f"jsii package cache: no runtime index for {', '.join(not_ready)}; synth works, only slower")
    else:
        print(f"jsii package cache ready in {time.monotonic() - started:.1f} s")
