"""tools/fetch-upstream and its data file tools/upstream.json: the list covers the upstream test data
the tests read and every chart the stacks pin; the upstream root honours UPSTREAM_DIR. No network."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gpu_constructs import versions
from tests.conftest import ROOT, UPSTREAM
from tests.support import render

SCRIPT = ROOT / "tools" / "fetch-upstream"
DATA = ROOT / "tools" / "upstream.json"
ENTRIES: list[dict[str, Any]] = json.loads(DATA.read_text())["entries"]

# Chart pins named other than *_CHART (the first charts the project pinned).
CHART_PINS_WITHOUT_SUFFIX = {"GPU_OPERATOR", "CERT_MANAGER"}


def _script() -> ModuleType:
    loader = SourceFileLoader("fetch_upstream", str(SCRIPT))
    spec = spec_from_loader("fetch_upstream", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


def _print(env: dict[str, str]) -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--print"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return [shlex.split(line) for line in result.stdout.splitlines()]


def test_the_list_names_every_directory_and_file_of_the_upstream_data(upstream: Path):
    dests = {entry["dest"] for entry in ENTRIES}
    assert len(dests) == len(ENTRIES), "two entries write the same path"
    charts = {path.name for path in (upstream / "charts").iterdir() if path.is_dir()}
    assert charts == {dest.removeprefix("charts/") for dest in dests if dest.startswith("charts/")}
    files = {
        str(path.relative_to(upstream))
        for path in upstream.rglob("*")
        if path.is_file() and path.name != "README.md" and path.relative_to(upstream).parts[0] != "charts"
    }
    assert files == {dest for dest in dests if not dest.startswith("charts/")}
    folders = {str(path.relative_to(upstream)) for path in upstream.rglob("*") if path.is_dir()}
    covered = {str(parent) for dest in dests for parent in Path(dest).parents} | dests
    top = {folder for folder in folders if not folder.startswith("charts/")} | {
        folder for folder in folders if folder.count("/") == 1 and folder.startswith("charts/")
    }
    assert top <= covered, sorted(top - covered)


def test_the_list_names_every_chart_the_stacks_pin():
    pins = versions.all_pins()
    chart_pins = {name for name in pins if name.endswith("_CHART")} | CHART_PINS_WITHOUT_SUFFIX
    charts = [entry for entry in ENTRIES if entry["kind"] == "chart"]
    assert {entry["pin"] for entry in charts if "pin" in entry} == chart_pins
    repositories = {value for name, value in vars(versions).items() if name.startswith("REPO_")}
    for entry in charts:
        assert entry["dest"] == f"charts/{entry['name']}-{entry['version']}", entry
        assert entry["source"] in repositories, (
            f"{entry['name']}: {entry['source']} is no REPO_* of versions.py"
        )
        if "pin" in entry:
            assert pins[entry["pin"]].version == entry["version"], entry["pin"]


def test_every_file_comes_from_its_tag():
    for entry in ENTRIES:
        if entry["kind"] == "chart":
            continue
        assert entry["kind"] in {"file", "document"}, entry
        assert entry["source"].startswith("https://"), entry
        assert f"/{entry['version']}/" in entry["source"], f"{entry['source']} is not at {entry['version']}"


def test_print_lists_a_helm_pull_per_chart_and_a_curl_per_file(tmp_path):
    steps = _print({"UPSTREAM_DIR": str(tmp_path / "cache"), "HELM": "/opt/helm"})
    pulls = [step for step in steps if step[:2] == ["/opt/helm", "pull"]]
    curls = [step for step in steps if step[0] == "curl"]
    charts = [entry for entry in ENTRIES if entry["kind"] == "chart"]
    assert len(pulls) == len(charts)
    assert len(curls) == len(ENTRIES) - len(charts)
    karpenter = next(step for step in pulls if "oci://public.ecr.aws/karpenter/karpenter" in step)
    assert karpenter[karpenter.index("--version") + 1] == "1.14.1"
    traefik = next(step for step in pulls if "traefik" in step)
    assert traefik[2:5] == ["traefik", "--repo", "https://traefik.github.io/charts"]
    assert "--untar" in traefik
    moves = {step[2] for step in steps if step[0] == "mv"}
    assert str(tmp_path / "cache" / "charts" / "traefik-39.0.3") in moves
    for curl in curls:
        assert "--fail" in curl
        assert curl[curl.index("--output") + 1].startswith(str(tmp_path / "cache"))
    assert next(step[:2] for step in steps if step[0] == "select") == ["select", "gitrepos.fleet.cattle.io"]


def test_print_runs_nothing(tmp_path):
    _print({"UPSTREAM_DIR": str(tmp_path / "cache"), "HELM": str(tmp_path / "no-helm")})
    assert not (tmp_path / "cache").exists()


def test_the_cache_defaults_to_dot_cache_upstream():
    steps = _print({"UPSTREAM_DIR": ""})
    curl = next(step for step in steps if step[0] == "curl")
    assert curl[curl.index("--output") + 1].startswith(str(ROOT / ".cache" / "upstream") + "/")


def test_select_takes_the_named_document_only(tmp_path):
    source = tmp_path / "crds.yaml"
    source.write_text(
        "apiVersion: v1\nkind: A\nmetadata:\n  name: a.example\n---\n"
        "apiVersion: v1\nkind: B\nmetadata:\n  name: b.example\nspec:\n  x: 1\n"
    )
    _script().select_document("b.example", source, tmp_path / "out" / "b.yaml")
    assert (
        tmp_path / "out" / "b.yaml"
    ).read_text() == "apiVersion: v1\nkind: B\nmetadata:\n  name: b.example\nspec:\n  x: 1\n"
    with pytest.raises(SystemExit, match=r"0 documents named c\.example"):
        _script().select_document("c.example", source, tmp_path / "c.yaml")


def test_upstream_root_honours_upstream_dir(tmp_path):
    assert render.upstream_root({}) == ROOT.parent / "shared" / "upstream"
    assert render.upstream_root({"UPSTREAM_DIR": ""}) == ROOT.parent / "shared" / "upstream"
    assert render.upstream_root({"UPSTREAM_DIR": str(tmp_path)}) == tmp_path
    assert render.upstream_root({"UPSTREAM_DIR": ".cache/upstream"}) == ROOT / ".cache" / "upstream"
    assert render.upstream_root({"UPSTREAM_DIR": ".cache/upstream"}) == _script().target_dir(
        {"UPSTREAM_DIR": ".cache/upstream"}
    )


def test_the_tests_read_upstream_data_from_one_place(tmp_path):
    """conftest and render agree, and both take UPSTREAM_DIR when the modules load."""
    assert UPSTREAM is render.UPSTREAM
    assert render.CHARTS == render.UPSTREAM / "charts"
    code = "from tests import conftest; from tests.support import render; print(conftest.UPSTREAM); print(render.CHARTS)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "UPSTREAM_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [str(tmp_path), str(tmp_path / "charts")]
    hard_coded = [
        path.name
        for path in (ROOT / "tests").rglob("*.py")
        if '"shared" / "upstream"' in path.read_text() and path.name not in {"render.py", Path(__file__).name}
    ]
    assert hard_coded == []


STUB_HELM = """#!/bin/sh
# helm pull <chart> --repo <url> | oci://.../<chart>, then --version V --untar --untardir DIR
chart=$(basename "$2"); dir=
while [ $# -gt 0 ]; do [ "$1" = --untardir ] && dir=$2; shift; done
mkdir -p "$dir/$chart" && printf 'name: %s\\n' "$chart" > "$dir/$chart/Chart.yaml"
"""
STUB_CURL = """#!/bin/sh
# curl ... --output FILE URL: FILE gets the URL (a CRD list for Fleet's crds.yaml)
out=; for arg; do [ "$prev" = --output ] && out=$arg; prev=$arg; url=$arg; done
case "$url" in *FAIL*) exit 22 ;; esac
mkdir -p "$(dirname "$out")"
case "$url" in
  */crds.yaml) printf 'metadata:\\n  name: other\\n---\\nmetadata:\\n  name: gitrepos.fleet.cattle.io\\n' > "$out" ;;
  *) printf '%s\\n' "$url" > "$out" ;;
esac
"""


def _stubs(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("helm", STUB_HELM), ("curl", STUB_CURL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HELM": str(bin_dir / "helm")}


def _fetch(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env={**os.environ, **env}, capture_output=True, text=True
    )


def test_a_fetch_writes_the_layout_and_replaces_an_old_cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "stale").mkdir(parents=True)
    result = _fetch({**_stubs(tmp_path), "UPSTREAM_DIR": str(cache)})
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bin", "cache"]
    assert not (cache / "stale").exists() and not (cache / ".pull").exists()
    for entry in ENTRIES:
        path = cache / entry["dest"]
        if entry["kind"] == "chart":
            assert (path / "Chart.yaml").read_text() == f"name: {entry['name']}\n"
        elif entry["kind"] == "file":
            assert path.read_text() == entry["source"] + "\n"
    fleet = cache / "fleet" / "fleet.cattle.io_gitrepos.yaml"
    assert fleet.read_text() == "metadata:\n  name: gitrepos.fleet.cattle.io\n"


def test_a_failed_fetch_keeps_the_old_cache_and_leaves_nothing_behind(tmp_path):
    cache = tmp_path / "cache"
    (cache / "old").mkdir(parents=True)
    data = json.loads(DATA.read_text())
    data["entries"].append(
        {"kind": "file", "name": "x", "version": "v1", "source": "https://x/v1/FAIL", "dest": "x"}
    )
    script = tmp_path / "tools" / "fetch-upstream"
    script.parent.mkdir()
    script.write_text(SCRIPT.read_text())
    (tmp_path / "tools" / "upstream.json").write_text(json.dumps(data))
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, **_stubs(tmp_path), "UPSTREAM_DIR": str(cache)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "https://x/v1/FAIL" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bin", "cache", "tools"]
    assert [path.name for path in cache.iterdir()] == ["old"]
