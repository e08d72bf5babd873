"""The README and the pages under docs/: the library example of docs/library.md (run from the
installed wheel by tests/app/test_wheel.py), the README's extras table and prerequisites against
pyproject.toml and the workflow, the README's length, every relative link of the pages, and that
the code sends readers to the docs pages rather than the README."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.conftest import ROOT
from tests.support.examples import library_example

README_MAX_LINES = 260
"""The README is the front page: the commands, prerequisites, the stacks and links; the rest is in docs/."""


def readme() -> str:
    return (ROOT / "README.md").read_text()


def _imported(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module or ""] if isinstance(node, ast.ImportFrom) else []


def test_the_example_sets_the_process_up_before_its_first_engine_import():
    statements = ast.parse(library_example()).body
    install = [i for i, node in enumerate(statements) if ast.unparse(node) == "provider_imports.install()"]
    engine_imports = [
        i
        for i, node in enumerate(statements)
        if any(re.match(r"(cdktf|cdktn|constructs|jsii)(_|\.|$)", name) for name in _imported(node))
    ]
    assert len(install) == 1 and engine_imports and install[0] < min(engine_imports)


def test_the_extras_table_lists_every_extra_with_its_pins():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    rows = dict(re.findall(r"^\| `\[(\w+)\]` \| (.*?) \|", readme(), re.M))
    assert sorted(rows) == sorted(extras)
    for extra, requirements in extras.items():
        for requirement in requirements:
            assert f"`{requirement}`" in rows[extra], (extra, requirement)


def test_the_prerequisites_name_the_terraform_the_workflow_runs():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    versions = {
        step["with"]["terraform_version"]
        for job in workflow["jobs"].values()
        for step in job["steps"]
        if step.get("uses", "").startswith("hashicorp/setup-terraform")
    }
    (version,) = versions
    (intro,) = re.findall(r"Both work on a fresh machine with (.*?)\): `make`", readme(), re.S)
    assert f"Terraform {version} on `PATH`" in intro


def pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> Iterator[str]:
    """The lines outside fenced code blocks (a `# ` line in a bash block is a comment, a link in a
    block is an example)."""
    fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence:
            yield line


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but `-` and `_` dropped,
    spaces as `-`, a repeated heading numbered from `-1`."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose(text):
        heading = re.match(r"^#{1,6} (.*)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> Iterator[str]:
    """The targets of the Markdown links outside code (fenced blocks and inline code spans)."""
    for line in _prose(text):
        yield from re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line))


def test_the_readme_is_a_front_page():
    assert len(readme().splitlines()) <= README_MAX_LINES


def test_every_relative_link_reaches_a_file_and_its_heading():
    broken = []
    for page in pages():
        for target in links(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_links_every_page():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(readme())}
    pages_ = [ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    # docs/<page>.changes.md are additions to <page>.md, which the README links
    unlinked = [p.relative_to(ROOT).as_posix() for p in pages_ if not p.name.endswith(".changes.md")]
    assert sorted(p for p in unlinked if (ROOT / p).resolve() not in linked) == []


def test_the_link_check_sees_headings_and_links_as_github_does():
    page = "# Deploy `k3d-poc`\n```bash\n# a comment\n[x](nowhere.md)\n```\n## Moving to CDK Terrain (cdktn)\n## A\n## A\n"
    assert anchors(page) == {"deploy-k3d-poc", "moving-to-cdk-terrain-cdktn", "a", "a-1"}
    assert list(links(page + "see [a](b.md#c), not `[d](e)`\n")) == ["b.md#c"]


STALE_README_POINTERS: dict[str, int] = {}
"""Files that still send the reader to the README for what is on a docs page, with how many times.
Strict both ways."""


def readme_pointers(text: str) -> int:
    """Mentions of this repository's README that are not a link to it: another project's README
    ("upstream README", "its README") and the ConfigMap key ``README.md`` do not count."""
    return len(re.findall(r"(?<!upstream )(?<!its )\bREADME\b(?!\.md)", text))


def test_the_code_points_at_the_docs_pages_not_the_readme():
    found = {}
    for path in sorted(
        [*(ROOT / "gpu_constructs").rglob("*"), *(ROOT / "environments").rglob("*.py"), ROOT / "main.py"]
    ):
        if (
            path.is_file()
            and path.suffix in (".py", ".sh", ".js")
            and (count := readme_pointers(path.read_text()))
        ):
            found[path.relative_to(ROOT).as_posix()] = count
    assert found == STALE_README_POINTERS


def test_the_pointer_check_sees_a_readme_reference():
    assert readme_pointers('description="rights in the README."') == 1
    assert readme_pointers("(upstream README, \"Configuration\"); its README names; data['README.md']") == 0
