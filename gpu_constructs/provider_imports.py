"""Load the prebuilt cdktf provider packages one submodule at a time.

Each prebuilt provider package (``cdktf_cdktf_provider_aws`` and friends) has an ``__init__`` that
imports every one of its submodules: 2,136 for AWS, which costs seconds and about a gigabyte before
the first resource is written. The submodules themselves only need the package's ``_jsii`` module
(which registers the jsii assembly with the runtime), never the package ``__init__``.

:func:`install` puts a light stand-in for each provider package into ``sys.modules``: a real package
object with the same ``__path__``, whose attributes import submodules on first use (PEP 562). Code
keeps writing ordinary imports (``from cdktf_cdktf_provider_helm.release import Release``); only the
submodules a stack uses are ever imported. The synthesized JSON is the same byte for byte
(``tests/test_provider_imports.py`` proves it), and the same test fails loudly if an upgraded
package stops having the layout this relies on.

Set ``GPU_CONSTRUCTS_EAGER_IMPORTS=1`` to switch this off and import the packages the ordinary way.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

PROVIDER_PACKAGES = (
    "cdktf_cdktf_provider_aws",
    "cdktf_cdktf_provider_helm",
    "cdktf_cdktf_provider_kubernetes",
    "cdktf_cdktf_provider_null",
)

EAGER_ENV = "GPU_CONSTRUCTS_EAGER_IMPORTS"


class _LazyProviderPackage(types.ModuleType):
    """A provider package whose submodules are imported only when first used."""

    def __getattr__(self, name: str) -> types.ModuleType:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{self.__name__}.{name}")
        except ModuleNotFoundError as error:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from error


def _stand_in(package: str) -> types.ModuleType | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None  # not installed: an import of it fails the ordinary way
    module = _LazyProviderPackage(package)
    module.__spec__ = spec
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = package
    return module


def install() -> None:
    """Put lazy stand-ins for the provider packages into ``sys.modules`` (idempotent)."""
    if os.environ.get(EAGER_ENV) == "1":
        return
    for package in PROVIDER_PACKAGES:
        if package in sys.modules:
            continue
        module = _stand_in(package)
        if module is not None:
            sys.modules[package] = module


def is_lazy(package: str) -> bool:
    """Whether ``package`` is currently served by a lazy stand-in."""
    return isinstance(sys.modules.get(package), _LazyProviderPackage)
