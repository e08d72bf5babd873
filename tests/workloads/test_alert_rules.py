"""The alert rules in gpu_constructs/monitoring/rules: valid for promtool, each alert unit-tested firing
and quiet, DCGM metric names the pinned exporter exports, and docs/monitoring.md's table of them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, unavailable

RULES = ROOT / "gpu_constructs" / "monitoring" / "rules"
RULE_FILES = sorted(RULES.glob("*.yaml"))
TEST_FILES = sorted((RULES / "tests").glob("*.yaml"))
DCGM_COUNTERS = ("default-counters.csv", "dcp-metrics-included.csv")
SEVERITIES = {"critical", "warning", "info"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def alerts(path: Path) -> Iterator[dict[str, Any]]:
    for group in load(path)["groups"]:
        yield from (rule for rule in group["rules"] if "alert" in rule)


ALERTS = {rule["alert"]: rule for path in RULE_FILES for rule in alerts(path)}


@pytest.fixture(scope="module")
def promtool() -> str:
    """promtool (Debian's `prometheus` package, in the Makefile's APT_PACKAGES): skipped without it,
    failed under CI=true."""
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not on PATH (Debian's prometheus package; `make deps` installs it)")
    return found


def test_rule_files_exist():
    assert RULE_FILES, f"no rule files in {RULES}"
    assert TEST_FILES, f"no promtool test files in {RULES / 'tests'}"


def test_alert_names_are_unique():
    names = [rule["alert"] for path in RULE_FILES for rule in alerts(path)]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool, path):
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def without_annotations(path: Path, tmp: Path) -> Path:
    doc = load(path)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    out = tmp / path.name
    out.write_text(yaml.safe_dump(doc))
    return out


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(promtool, path, tmp_path):
    """promtool compares annotations verbatim; the cases pin expressions, `for` and labels, so they run
    against the rules without annotations (whose templates `promtool check rules` parses)."""
    doc = load(path)
    doc["rule_files"] = [str(without_annotations(path.parent / name, tmp_path)) for name in doc["rule_files"]]
    test_file = tmp_path / f"test_{path.name}"
    test_file.write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def cases() -> dict[str, dict[str, int]]:
    """Per alert name: how many promtool cases expect it firing and how many expect it quiet."""
    seen: dict[str, dict[str, int]] = {}
    for path in TEST_FILES:
        for test in load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "quiet"
                counts = seen.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
                counts[kind] += 1
    return seen


def test_every_alert_fires_and_stays_quiet_in_a_case():
    seen = cases()
    assert sorted(set(seen) - set(ALERTS)) == [], "cases for alerts no rule file defines"
    missing = {
        name: [kind for kind in ("firing", "quiet") if not seen.get(name, {}).get(kind)] for name in ALERTS
    }
    assert {name: kinds for name, kinds in missing.items() if kinds} == {}


def test_every_rule_file_has_a_test_file():
    tested = {(path.parent / name).resolve() for path in TEST_FILES for name in load(path)["rule_files"]}
    assert sorted(p.name for p in RULE_FILES if p.resolve() not in tested) == []


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_severity_summary_description_runbook(name):
    rule = ALERTS[name]
    assert rule.get("labels", {}).get("severity") in SEVERITIES
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook"):
        assert str(annotations.get(key, "")).strip(), f"{name}: annotation {key!r} is empty"
    assert "\n" not in annotations["runbook"].strip(), f"{name}: the runbook is one line"


def dcgm_file(upstream: Path, name: str) -> Path:
    """A file of the dcgm-exporter copy, at its top or under the repository's etc/ and grafana/."""
    (path,) = sorted((upstream / "dcgm-exporter").rglob(name))
    return path


def counters(upstream: Path, name: str) -> set[str]:
    with dcgm_file(upstream, name).open() as f:
        rows = csv.reader(line for line in f if line.strip() and not line.lstrip().startswith("#"))
        return {row[0].strip() for row in rows}


def exported(upstream: Path) -> set[str]:
    """The DCGM fields both the exporter's default list and the GPU Operator's list enable."""
    first, second = (counters(upstream, name) for name in DCGM_COUNTERS)
    return first & second


def test_counters_files_parse(upstream):
    assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_XID_ERRORS"} <= exported(upstream)
    # commented out upstream: not exported by default
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" not in exported(upstream)


def test_rules_use_only_exported_dcgm_metrics(upstream):
    used = {m for rule in ALERTS.values() for m in re.findall(r"\bDCGM_[A-Z0-9_]+", rule["expr"])}
    assert used, "the GPU rules query no DCGM metric"
    assert sorted(used - exported(upstream)) == []


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
PROMQL_WORDS |= {"and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a Grafana target: label matchers, variables and function names removed;
    label_values(metric, label) keeps the metric."""
    expr = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    names = set(re.findall(r"\b([A-Za-z_:][\w:]*)\b(?!\s*\()", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS and not re.fullmatch(r"\d.*|e\d+", n)}


def dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        datasource_query = node.get("type") == "query" and "query" in node
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "query" and datasource_query:
                yield value["query"] if isinstance(value, dict) else value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def test_metric_names_of_a_query():
    assert metric_names('sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance"}) by (gpu) * 1000') == {
        "DCGM_FI_DEV_POWER_USAGE"
    }
    assert metric_names("label_values(DCGM_FI_DEV_GPU_TEMP, gpu)") == {"DCGM_FI_DEV_GPU_TEMP"}
    assert metric_names("rate(node_cpu_seconds_total[5m])") == {"node_cpu_seconds_total"}


def test_dcgm_dashboard_queries_only_exported_metrics(upstream):
    """The monitoring construct provisions NVIDIA's dashboard; a panel on a field neither counters
    list enables would stay empty."""
    dashboard = json.loads(dcgm_file(upstream, "dcgm-exporter-dashboard.json").read_text())
    queries = list(dashboard_queries(dashboard))
    used = set().union(*(metric_names(q) for q in queries))
    assert len(queries) >= 8 and "DCGM_FI_DEV_GPU_TEMP" in used
    assert sorted(used - exported(upstream)) == []


def documented_alert_table() -> dict[str, list[str]]:
    page = (ROOT / "docs" / "monitoring.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    return {
        cells[0].strip("`"): cells[1:]
        for cells in ([c.strip() for c in row.strip("|").split(" | ")] for row in rows)
    }


def test_monitoring_page_lists_every_alert_with_severity_and_runbook():
    table = documented_alert_table()
    assert sorted(table) == sorted(ALERTS)
    for name, (severity, _meaning, runbook) in table.items():
        assert severity == ALERTS[name]["labels"]["severity"], name
        assert runbook == ALERTS[name]["annotations"]["runbook"], name


def test_rule_files_are_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["gpu_constructs"]
    package = ROOT / "gpu_constructs"
    shipped = {path for pattern in globs for path in package.glob(pattern)}
    assert sorted(p.name for p in RULE_FILES if p not in shipped) == []
