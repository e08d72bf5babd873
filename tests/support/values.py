"""The dead-values model of tests/gates/test_values.py: the keys a release sets that its chart
neither has in its default values, nor declares in its schema, nor reads in a template."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tests.support import render


@cache
def chart_defaults(chart_dir: Path) -> dict[str, Any]:
    """The chart's default values with each subchart's under its name or alias."""
    path = chart_dir / "values.yaml"  # a CRD-only chart (cloud-firewall-crd) has none
    defaults: dict[str, Any] = (
        yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    ) or {}
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text(encoding="utf-8"))
    for dependency in meta.get("dependencies") or []:
        sub = chart_dir / "charts" / dependency["name"]
        if (sub / "values.yaml").exists():
            key = dependency.get("alias") or dependency["name"]
            defaults[key] = {**chart_defaults(sub), **(defaults.get(key) or {})}
    defaults.setdefault("global", {})
    return defaults


@cache
def template_paths(chart_dir: Path, prefix: str = "") -> frozenset[str]:
    """Every ``.Values.a.b`` path the chart's templates (and its subcharts', under their key) read."""
    import re

    found = set()
    for path in (chart_dir / "templates").rglob("*"):
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            found |= {prefix + match for match in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text)}
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text(encoding="utf-8"))
    for dependency in meta.get("dependencies") or []:
        sub = chart_dir / "charts" / dependency["name"]
        if sub.is_dir():
            found |= template_paths(sub, f"{prefix}{dependency.get('alias') or dependency['name']}.")
    return frozenset(found)


@cache
def chart_schema(chart_dir: Path) -> dict[str, Any]:
    path = chart_dir / "values.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return schema


def _schema_child(schema: dict[str, Any] | None, key: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether the schema allows ``key``, the schema below it)."""
    if not schema:
        return False, None
    if key in schema.get("properties", {}):
        return True, schema["properties"][key]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return True, extra
    if schema.get("patternProperties") or extra is True:
        return True, None
    return False, None


def _open(schema: dict[str, Any] | None) -> bool:
    """A schema node that lets any key through (or says nothing)."""
    if not schema:
        return True
    return not schema.get("properties") and schema.get("additionalProperties", True) is not False


def dead_keys(
    values: Any,
    defaults: Any,
    schema: dict[str, Any] | None,
    path: str = "",
    read: frozenset[str] = frozenset(),
) -> list[str]:
    if not isinstance(values, dict):
        return []
    default_map = defaults if isinstance(defaults, dict) else None
    if (default_map is None or not default_map) and _open(schema):
        return []  # free-form map
    found: list[str] = []
    for key, value in values.items():
        where = f"{path}.{key}" if path else str(key)
        in_defaults = default_map is not None and key in default_map
        in_schema, sub_schema = _schema_child(schema, key)
        if not in_defaults and not in_schema:
            if where not in read and not any(r.startswith(f"{where}.") for r in read):
                found.append(where)
            continue
        child_default = default_map.get(key) if in_defaults and default_map else None
        found += dead_keys(value, child_default, sub_schema, where, read)
    return found


def set_paths(release: render.Release) -> dict[str, Any]:
    """The keys ``set``/``set_list``/``set_sensitive`` reach, as a values map (list indexes dropped)."""
    result: dict[str, Any] = {}
    for block in ("set", "set_list", "set_sensitive"):
        for entry in release.raw.get(block, []):
            node = result
            parts = [p.split("[", 1)[0] for p in entry["name"].split(".")]
            if any("[" in p for p in entry["name"].split(".")[:1]):
                continue  # into a list: not descended, like list values
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = None
    return result


def release_dead_keys(release: render.Release) -> list[str]:
    from gpu_constructs.helm import deep_merge

    values = deep_merge(release.values(), set_paths(release))
    chart = release.chart_dir
    return dead_keys(values, chart_defaults(chart), chart_schema(chart), read=template_paths(chart))
