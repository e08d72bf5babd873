"""Each default is written once: an environment setting that stands for a construct's props field
of the same name and the same default takes it from the props class (``region: str =
LkeProps.region``) rather than repeating the literal, so the two cannot drift apart. A setting whose
default differs on purpose (proxmox-ha's api_vip, the seed's VIP) is its own default."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect

import pytest

from environments import ENVIRONMENTS

KNOWN: dict[str, set[str]] = {}
"""Repeated literals not yet taken from their props class, by environment. Strict both ways."""


def repeated_literals(module_name: str, settings_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    settings = getattr(module, settings_name)
    props = [
        value
        for name, value in vars(module).items()
        if isinstance(value, type) and name.endswith("Props") and dataclasses.is_dataclass(value)
    ]
    literal = {
        node.target.id
        for node in ast.walk(ast.parse(inspect.getsource(settings)))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.value is not None
        and not isinstance(node.value, ast.Attribute | ast.Call | ast.Name)
    }
    found = set()
    for setting in dataclasses.fields(settings):
        if setting.default is dataclasses.MISSING or setting.name not in literal:
            continue
        for cls in props:
            field = {f.name: f for f in dataclasses.fields(cls)}.get(setting.name)
            if (
                field is not None
                and field.default is not dataclasses.MISSING
                and field.default == setting.default
            ):
                found.add(setting.name)
    return found


@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
def test_no_setting_repeats_its_props_default(environment):
    module_name, _, settings_name = ENVIRONMENTS[environment]
    assert repeated_literals(module_name, settings_name) == KNOWN.get(environment, set())


def test_the_gate_sees_a_repeated_literal(tmp_path, monkeypatch):
    """A settings class that writes its props' default again is flagged."""
    (tmp_path / "repeating_env.py").write_text(
        "from dataclasses import dataclass\n\n"
        "@dataclass(frozen=True)\nclass DemoProps:\n    region: str = 'us-ord'\n    size: int = 3\n\n"
        "@dataclass(frozen=True)\nclass DemoSettings:\n    region: str = 'us-ord'\n"
        "    size: int = DemoProps.size\n    other: int = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert repeated_literals("repeating_env", "DemoSettings") == {"region"}
