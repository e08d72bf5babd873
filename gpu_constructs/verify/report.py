"""The verification report: an aligned table for people (colour on a terminal only) or JSON for CI."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from gpu_constructs.verify.checks import FAIL, PASS, Result

COLOURS = {PASS: "\033[32m", FAIL: "\033[31m", "skip": "\033[33m"}
RESET = "\033[0m"


def ok(results: Sequence[Result]) -> bool:
    return all(r.result != FAIL for r in results)


def table(results: Sequence[Result], colour: bool = False) -> str:
    rows = [("CHECK", "RESULT", "EVIDENCE"), *((r.check, r.result, r.evidence) for r in results)]
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = []
    for index, (check, result, evidence) in enumerate(rows):
        shown = result.ljust(width[1])
        if colour and index > 0:
            shown = f"{COLOURS.get(result, '')}{shown}{RESET}"
        lines.append(f"{check.ljust(width[0])}  {shown}  {evidence}".rstrip())
    failed = sum(1 for r in results if r.result == FAIL)
    lines.append("")
    lines.append(
        f"{len(results)} checks, {failed} failed" if failed else f"{len(results)} checks, none failed"
    )
    return "\n".join(lines)


def as_json(
    stack: str,
    results: Sequence[Result],
    error: str | None = None,
    cluster: Mapping[str, str] | None = None,
) -> str:
    """``cluster`` says which cluster answered: its name, API server, Kubernetes version, kubeconfig."""
    document = {
        "stack": stack,
        "cluster": dict(cluster or {}),
        "ok": error is None and ok(results),
        "error": error,
        "checks": [{"check": r.check, "result": r.result, "evidence": r.evidence} for r in results],
    }
    return json.dumps(document, indent=2)
