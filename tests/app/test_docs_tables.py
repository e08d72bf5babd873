"""The settings and variables tables of the environment pages (docs/<stack>.md) against the code:
each page's generated part is what tools/docs_tables.py builds from the settings dataclass and the
stack main.py synthesizes, so a new setting, a changed default or description fails here until the
page is regenerated (`.venv/bin/python tools/docs_tables.py`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from typing import Any

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "tools" / "docs_tables.py")
assert _spec is not None and _spec.loader is not None
docs_tables = importlib.util.module_from_spec(_spec)
sys.modules["docs_tables"] = docs_tables
_spec.loader.exec_module(docs_tables)


def _instances() -> list[Any]:
    import main

    return list(main.INSTANCES)


@pytest.mark.parametrize("instance", _instances(), ids=lambda i: i.stack)
def test_each_environment_page_has_the_tables_of_its_code(instance):
    page = docs_tables.page(instance.stack)
    found = docs_tables.page_block(page.read_text())
    assert found is not None, (
        f"{page.name} has no tables: run .venv/bin/python tools/docs_tables.py --insert {instance.stack}"
    )
    assert found == docs_tables.expected(instance), (
        f"{page.name}: its settings/variables tables differ from the code; run .venv/bin/python tools/docs_tables.py"
    )


def test_a_changed_default_or_a_new_setting_is_drift():
    """The gate sees a settings class that moved on from its page: a changed default, a new field."""
    from environments.lke import LkeSettings

    instance = next(i for i in _instances() if i.stack == "lke")
    page_block = docs_tables.page_block(docs_tables.page("lke").read_text())
    variables = docs_tables.stack_variables(instance)
    assert docs_tables.block(instance, LkeSettings, variables) == page_block

    @dataclasses.dataclass(frozen=True)
    class Drifted(LkeSettings):
        gpu_max_nodes: int = 6
        spare_pool: bool = False
        """A setting the page does not list."""

    drifted = docs_tables.block(instance, Drifted, variables)
    assert drifted != page_block
    assert "| `gpu_max_nodes` | `int` | `6` |" in drifted
    assert "| `spare_pool` | `bool` | `False` | A setting the page does not list. |" in drifted
    changed = {**variables, "runner_cidrs": {**variables["runner_cidrs"], "description": "changed"}}
    assert docs_tables.block(instance, LkeSettings, changed) != page_block


def test_cells_are_escaped_for_markdown():
    assert docs_tables._prose("a | b\n  <prefix>-x") == "a \\| b &lt;prefix&gt;-x"
    rows = docs_tables.variables_table({"v": {"type": "string", "sensitive": True, "default": "x"}})
    assert rows.splitlines()[-1] == '| `v` | `string` | `"x"` | yes |  |'


def test_the_tool_inserts_a_section_once_and_then_replaces_it(tmp_path):
    text = "# Page\n\nbody\n"
    first = docs_tables.with_block(text, "BLOCK-1", insert=True)
    assert first == f"# Page\n\nbody\n\n{docs_tables.SECTION}\n\nBLOCK-1\n"
    assert docs_tables.with_block(text, "BLOCK-1", insert=False) is None
    marked = text + f"\n{docs_tables.BEGIN}\nold\n{docs_tables.END}\n"
    assert docs_tables.with_block(marked, "NEW", insert=False) == text + "\nNEW\n"


def test_every_settings_field_has_a_row():
    """No field is left out of a table: one row per dataclass field, in order."""
    for instance in _instances():
        cls = instance.settings_class()
        table = docs_tables.settings_table(cls)
        names = [line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]]
        assert names == [f.name for f in dataclasses.fields(cls)], instance.stack


def test_the_tables_read_the_same_on_every_machine():
    """A default that is a folder of the checkout is written relative to it, never as this machine's
    absolute path (a clone elsewhere would see its page differ from its code)."""
    for instance in _instances():
        text = docs_tables.expected(instance)
        assert str(ROOT) not in text and "PosixPath(" not in text, instance.stack
