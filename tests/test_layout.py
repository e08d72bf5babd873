"""The layout of tests/: test modules (and the benchmarks in bench/) import shared code from
tests/support and tests.conftest, never from a test module; every module that is not a test
module, a conftest or a package's __init__ lives in tests/support.

Importing from a test module runs its import-time work in the importer and ties the importer to
that module's tests, and a fixture or test function imported that way belongs to the importer too
(pytest collects it there as well); shared fixtures belong in the nearest conftest.py, shared
helpers in tests/support."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_test_module(dotted: str) -> bool:
    return any(part.startswith("test_") for part in dotted.split("."))


def imported_test_modules(source: str, package: str) -> list[str]:
    """The test modules ``source`` imports (``package``: the dotted package it lives in, for
    relative imports), each as ``line: module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: {a.name}" for a in node.names if _is_test_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            if _is_test_module(base):
                found.append(f"{node.lineno}: {base}")
            else:
                found += [f"{node.lineno}: {base}.{a.name}" for a in node.names if a.name.startswith("test_")]
    return found


def _python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__snapshots__" not in p.parts)


def _importers() -> list[Path]:
    """Every module under tests/, and the benchmarks that run the tests' models."""
    return [*_python_files(), *sorted((TESTS.parent / "bench").glob("*.py"))]


def test_no_test_support_or_bench_module_imports_a_test_module():
    problems = []
    for path in _importers():
        package = ".".join(path.relative_to(TESTS.parent).parent.parts)
        problems += [
            f"{path.relative_to(TESTS.parent)}:{f}" for f in imported_test_modules(path.read_text(), package)
        ]
    assert problems == [], "move what is shared into tests/support (fixtures: the nearest conftest.py)"


def test_support_code_lives_in_tests_support():
    stray = [
        str(path.relative_to(TESTS.parent))
        for path in _python_files()
        if not path.name.startswith("test_")
        and path.name not in ("conftest.py", "__init__.py")
        and "support" not in path.relative_to(TESTS).parts[:1]
    ]
    assert stray == []


def test_the_import_gate_sees_each_form_of_a_test_module_import():
    violating = {
        "from tests.test_render import INSTANCES": "tests.test_render",
        "import tests.compute.test_eks": "tests.compute.test_eks",
        "from tests.gates import test_placement": "tests.gates.test_placement",
        "def f():\n    from tests.test_scripts import Host": "tests.test_scripts",
        "from .test_order import order_problems": "tests.gates.test_order",
        "from . import test_values": "tests.gates.test_values",
        "from ..compute.test_eks import PLAN_VARS": "tests.compute.test_eks",
    }
    for source, module in violating.items():
        (found,) = imported_test_modules(source, "tests.gates")
        assert found.split(": ")[1].startswith(module), source
    allowed = (
        "from tests.support.stacks import INSTANCES\nfrom tests.conftest import ROOT\n"
        "from tests.support import render\nimport pytest\nfrom . import conftest"
    )
    assert imported_test_modules(allowed, "tests.gates") == []
