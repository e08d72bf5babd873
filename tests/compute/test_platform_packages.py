"""The library's import graph: each platform is one package under ``gpu_constructs/compute/`` that
no other platform and no workload imports, and the workloads consume only the contract.

A workload that imports a platform package (``from gpu_constructs.compute.eks import ...``) works
only where that platform is deployed and drags its provider into every app; a platform that
imports a workload ties the two together so that neither can change alone. Names re-exported by
``gpu_constructs`` and ``gpu_constructs.compute`` count as imports of the module that defines them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import gpu_constructs
from gpu_constructs import compute, hostexec

PACKAGE = Path(gpu_constructs.__file__).resolve().parent
PLATFORMS = tuple(sorted(p.name for p in (PACKAGE / "compute").iterdir() if (p / "__init__.py").is_file()))
SHARED_PLATFORM_PACKAGES = {"k3s": ("k3s_host", "proxmox")}
"""A package under compute/ that several platforms build on, and which ones may import it."""
WORKLOADS = frozenset(
    {
        "app_chart",
        "autoscaling",
        "database",
        "device_plugin",
        "gpu_operator",
        "jupyterhub",
        "monitoring",
        "networking",
        "smoke_test",
        "storage",
        "vault",
    }
)
"""The constructs that run on a cluster and take it as a GpuCluster."""
SHARED = frozenset(
    {
        "backup",
        "charts",
        "cluster",
        "engine",
        "errors",
        "existing",
        "helm",
        "hostexec",
        "policy",
        "provider_imports",
        "providers",
        "validate",
        "verify",
        "versions",
    }
)
"""What platforms and workloads both build on: the contract, its checks, the release and script
helpers, the shared provider bindings, and verification (which reads platforms only through
GpuCompute)."""
INDEXES = ("gpu_constructs", "gpu_constructs.compute")
"""The packages whose lazy export tables name the module behind each name."""


def module_sources() -> dict[str, str]:
    """Every module of the package, by dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path.read_text(encoding="utf-8")
    return found


def _exported(package: str, name: str) -> str | None:
    """The module that defines ``name``, where ``package`` re-exports it lazily."""
    table = {"gpu_constructs": gpu_constructs._EXPORTS, "gpu_constructs.compute": compute._EXPORTS}
    target = table[package].get(name)
    if target is None:
        return None
    return target if target.startswith("gpu_constructs") else f"{package}.{target}"


def imported_modules(module: str, source: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """``(line, module)`` for each gpu_constructs module that ``source`` imports, at any depth
    (function bodies and TYPE_CHECKING blocks too)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if not base.startswith("gpu_constructs"):
                continue
            for alias in node.names:
                target = _exported(base, alias.name) if base in INDEXES else None
                yield node.lineno, target or f"{base}.{alias.name}"


def owner(module: str) -> tuple[str, str]:
    """What a dotted module belongs to: ("platform", <name>), ("workload", <name>), ("shared",
    <name>), ("index", <name>) for the lazy export tables, or ("compute", "base")."""
    parts = module.split(".")
    if module in INDEXES:
        return "index", module
    if parts[1] == "compute":
        if parts[2] in PLATFORMS:
            return "platform", parts[2]
        return "compute", parts[2]
    kind = "workload" if parts[1] in WORKLOADS else "shared" if parts[1] in SHARED else "unclassified"
    return kind, parts[1]


def resolve(name: str, modules: Mapping[str, str]) -> str | None:
    """``name`` as a module of ``modules``: itself, or its longest prefix that is one (``from m
    import f`` names m.f)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_problems(modules: Mapping[str, str]) -> list[str]:
    """Each import that crosses a boundary, as ``<module>:<line>: imports <module>: <rule>``."""
    problems = []
    packages = {m.rpartition(".")[0] for m in modules}
    for module, source in sorted(modules.items()):
        kind, name = owner(module)
        if kind == "unclassified":
            problems.append(f"{module}: neither a workload nor shared: add {name} to WORKLOADS or SHARED")
            continue
        if kind == "index":
            continue
        for line, imported in imported_modules(module, source, module in packages):
            target = resolve(imported, modules)
            if target is None:
                continue
            target_kind, target_name = owner(target)
            where = f"{module}:{line}: imports {target}"
            if target_kind == "platform" and target_name != name:
                if kind == "platform" and name in SHARED_PLATFORM_PACKAGES.get(target_name, ()):
                    continue
                problems.append(f"{where}: only the {target_name} package itself uses it")
            elif kind == "platform" and target_kind == "workload":
                problems.append(f"{where}: a platform package builds the cluster, not what runs on it")
    return problems


def test_platforms_and_workloads_meet_only_in_the_contract():
    modules = module_sources()
    assert {"eks", "k3d", "k3s", "k3s_host", "lke", "proxmox"} <= set(PLATFORMS)
    assert import_problems(modules) == []


def _with(modules: Mapping[str, str], module: str, line: str) -> dict[str, str]:
    return {**modules, module: f"{modules[module]}\n{line}\n"}


def test_the_gate_fails_a_workload_or_platform_that_crosses_the_boundary():
    modules = module_sources()
    cases = {
        # a workload reaching into a platform, directly, through the index and in a function
        ("gpu_constructs.gpu_operator", "from gpu_constructs.compute.eks.karpenter import NodePoolSpec"): (
            "imports gpu_constructs.compute.eks.karpenter: only the eks package itself uses it"
        ),
        ("gpu_constructs.jupyterhub", "from gpu_constructs.compute import ProxmoxProps"): (
            "imports gpu_constructs.compute.proxmox: only the proxmox package itself uses it"
        ),
        ("gpu_constructs.vault", "def f():\n    import gpu_constructs.compute.k3s_host"): (
            "imports gpu_constructs.compute.k3s_host: only the k3s_host package itself uses it"
        ),
        # one platform using another's code, or a workload
        ("gpu_constructs.compute.lke", "from gpu_constructs.compute.k3d import ROLES"): (
            "imports gpu_constructs.compute.k3d: only the k3d package itself uses it"
        ),
        ("gpu_constructs.compute.eks", "from gpu_constructs.compute.k3s.etcd import EtcdS3"): (
            "imports gpu_constructs.compute.k3s.etcd: only the k3s package itself uses it"
        ),
        ("gpu_constructs.compute.proxmox", "from gpu_constructs.jupyterhub import NAMESPACE"): (
            "imports gpu_constructs.jupyterhub: a platform package builds the cluster, not what runs on it"
        ),
        ("gpu_constructs.compute.eks.services", "from .. import lke"): (
            "imports gpu_constructs.compute.lke: only the lke package itself uses it"
        ),
    }
    for (module, line), message in cases.items():
        problems = import_problems(_with(modules, module, line))
        assert len(problems) == 1 and problems[0].endswith(message), (module, line, problems)
    # the shared k3s package is for the two k3s platforms
    assert import_problems(_with(modules, "gpu_constructs.compute.proxmox", "from ..k3s import etcd")) == []
    unclassified = import_problems({**modules, "gpu_constructs.gke_helpers": ""})
    assert unclassified == [
        "gpu_constructs.gke_helpers: neither a workload nor shared: add gke_helpers to WORKLOADS or SHARED"
    ]


def _code_strings(source: str) -> Iterator[tuple[int, str]]:
    """String constants of ``source`` that are not docstrings or bare string statements."""
    tree = ast.parse(source)
    prose = {
        id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            yield node.lineno, node.value


def gpu_literals(modules: Mapping[str, str]) -> list[str]:
    """Where a module spells NVIDIA's GPU resource, label or taint (``nvidia.com/gpu``, alone or
    with a value) instead of using GPU_RESOURCE, GPU_LABEL and GPU_TAINT."""
    return [
        f"{module}:{line}: {value!r}"
        for module, source in sorted(modules.items())
        if module != "gpu_constructs.cluster"
        for line, value in _code_strings(source)
        if value == "nvidia.com/gpu" or value.startswith(("nvidia.com/gpu=", "nvidia.com/gpu:"))
    ]


def test_the_gpu_resource_label_and_taint_are_defined_once():
    modules = module_sources()
    assert "GPU_RESOURCE = " in modules["gpu_constructs.cluster"]
    assert gpu_literals(modules) == []
    broken = _with(modules, "gpu_constructs.compute.lke", 'LABEL = "nvidia.com/gpu=true"')
    assert [p.split(": ", 1)[1] for p in gpu_literals(broken)] == ["'nvidia.com/gpu=true'"]


def test_each_platform_ships_its_scripts_and_a_script_name_is_one_file(tmp_path):
    scripts = hostexec.bundled_scripts()
    assert scripts["k3d-cluster.sh"].parent == PACKAGE / "compute" / "k3d" / "scripts"
    assert scripts["k3s-install.sh"].parent == PACKAGE / "compute" / "k3s" / "scripts"
    assert scripts["vault-init.sh"].parent == PACKAGE / "scripts"
    assert (
        hostexec.script_text("nvidia-driver.sh")
        == (PACKAGE / "compute" / "k3s_host" / "scripts" / "nvidia-driver.sh").read_text()
    )
    with pytest.raises(ValueError, match=r"^no bundled script named k3s-instal\.sh: the package ships "):
        hostexec.script_path("k3s-instal.sh")
    for folder in ("scripts", "compute/gke/scripts"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "install.sh").write_text("#!/bin/sh\n")
    with pytest.raises(ValueError, match=r"^two bundled scripts named install\.sh: "):
        hostexec.bundled_scripts(tmp_path)


def test_the_readmes_architecture_names_every_platform_package():
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Architecture\n", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    listed = layout.split("compute/<platform>/", 1)[1].split("gpu_operator.py", 1)[0]
    assert [name for name in PLATFORMS if name not in listed] == []


def foreign_props_reads(source: str) -> list[str]:
    """``<expr>.props`` where ``<expr>`` is not ``self``: one construct reading another's props,
    which are its inputs, not its API (a construct says what others may read as attributes)."""
    return [
        f"{node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr == "props"
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]


def test_no_construct_reads_another_constructs_props():
    sources = {
        **{path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))},
        **{path: path.read_text() for path in sorted((PACKAGE.parent / "environments").glob("*.py"))},
    }
    found = {str(path): hits for path, source in sources.items() if (hits := foreign_props_reads(source))}
    assert found == {}
    assert foreign_props_reads("host = f'{database.props.namespace}.svc'\nn = self.props.name\n") == [
        "1: database.props"
    ]
