"""Which CDK engine synthesizes the stacks: cdktf (the default) or CDK Terrain (cdktn).

cdktf was archived on 2025-12-10; CDK Terrain is its maintained fork with the same API under other
package names (PyPI ``cdktn`` and ``cdktn-provider-*``, npm ``cdktn-cli`` and ``@cdktn/provider-*``).
The library, the app and the tests are written once, against the cdktf names::

    from cdktf import Fn, TerraformStack
    from cdktf_cdktf_provider_aws.vpc import Vpc

and this module is the one place that decides which engine those names mean:

* ``GPU_CONSTRUCTS_ENGINE=cdktf`` or ``GPU_CONSTRUCTS_ENGINE=cdktn`` chooses; anything else is a
  :class:`ConfigError`. The name is namespaced so that an unrelated ``ENGINE`` in the shell (a
  container engine, another tool's setting) means nothing here.
* Without it, the engine installed in this environment is used, cdktf when both are.

With cdktn, :func:`install` binds each cdktf name to the cdktn package that replaces it (``cdktf`` to
``cdktn``, ``cdktf_cdktf_provider_aws[.vpc]`` to ``cdktn_provider_aws[.vpc]``) with an import finder,
so ``import cdktf`` returns the very module ``import cdktn`` does: an app that imports cdktn directly
and this library share one set of classes. With cdktf nothing is bound and nothing is installed.

Importing this module (or ``gpu_constructs``) binds nothing: the app's entry point calls
:func:`install`, usually through :func:`gpu_constructs.provider_imports.install`, before its first
engine import (``main.py`` and ``tests/conftest.py`` do). An app that never calls it gets the plain
imports: fine on cdktf, and ``import cdktf`` fails where only cdktn is installed.

``make`` maps its own ``ENGINE`` to ``GPU_CONSTRUCTS_ENGINE``: ``ENGINE=cdktn make synth|test`` runs
the same work in the cdktn environment (``engines/cdktn``); see docs/library.md, "Moving to CDK Terrain
(cdktn)".
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gpu_constructs.errors import ConfigError

ENV = "GPU_CONSTRUCTS_ENGINE"
DEFAULT = "cdktf"
PROVIDERS = ("aws", "helm", "kubernetes", "null")
"""The prebuilt provider packages the library uses, by provider name."""


@dataclass(frozen=True)
class Engine:
    name: str
    core: str
    """The Python package of the core library (``App``, ``TerraformStack``, ``Fn``...)."""
    provider_prefix: str
    """Prefix of a prebuilt provider's Python package, before the provider name."""
    npm_provider_scope: str
    """Prefix of a prebuilt provider's npm package (its jsii assembly), before the provider name."""
    cli: str
    """The npm CLI's command."""

    def provider_package(self, provider: str) -> str:
        return f"{self.provider_prefix}{provider}"

    @property
    def provider_packages(self) -> tuple[str, ...]:
        return tuple(self.provider_package(provider) for provider in PROVIDERS)


ENGINES = {
    "cdktf": Engine("cdktf", "cdktf", "cdktf_cdktf_provider_", "@cdktf/provider-", "cdktf"),
    "cdktn": Engine("cdktn", "cdktn", "cdktn_provider_", "@cdktn/provider-", "cdktn"),
}
CODE_NAMES = ENGINES["cdktf"]
"""The names the code imports, whatever the engine."""


def resolve(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine ``GPU_CONSTRUCTS_ENGINE`` names, or the one installed here (cdktf first) when it is
    not set."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(ENV, "")
    if chosen:
        if chosen not in ENGINES:
            raise ConfigError(ENV, chosen, f"set it to one of {', '.join(ENGINES)} or leave it unset")
        return ENGINES[chosen]
    for engine in ENGINES.values():
        # sys.path only: the name binding below makes `cdktf` findable where only cdktn is installed
        if importlib.machinery.PathFinder.find_spec(engine.core) is not None:
            return engine
    return ENGINES[DEFAULT]


def aliases(engine: Engine) -> dict[str, str]:
    """Code name -> the engine's package, for every top-level package that differs."""
    if engine == CODE_NAMES:
        return {}
    names = {CODE_NAMES.core: engine.core}
    names.update(zip(CODE_NAMES.provider_packages, engine.provider_packages, strict=True))
    return names


def real_name(name: str, engine: Engine) -> str:
    """The module the engine imports for the code's module ``name`` (itself when not an engine name)."""
    top, dot, rest = name.partition(".")
    target = aliases(engine).get(top)
    return f"{target}{dot}{rest}" if target else name


class _AliasLoader(importlib.abc.Loader):
    """Serves an already imported module under a second name, leaving the module as it is."""

    def __init__(self, module: types.ModuleType) -> None:
        self.module = module
        self.spec = module.__spec__

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return self.module

    def exec_module(self, module: types.ModuleType) -> None:
        module.__spec__ = self.spec  # the import system set the alias's spec on it: put its own back


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tops = frozenset(aliases(engine))

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.tops:
            return None
        module = importlib.import_module(real_name(fullname, self.engine))
        return importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(module), is_package=hasattr(module, "__path__")
        )


def install(engine: Engine | None = None) -> Engine:
    """Bind the code's engine names to ``engine``'s packages (idempotent); returns the engine."""
    engine = engine or resolve()
    if aliases(engine) and importlib.machinery.PathFinder.find_spec(engine.core) is None:
        raise ConfigError(ENV, engine.name, f"install {engine.core} in this environment or unset it")
    if aliases(engine) and not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(engine))
    return engine


ACTIVE = resolve()
"""The engine of this process (resolving it reads the environment and binds nothing)."""
