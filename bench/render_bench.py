"""Measure the render-and-validate pass over every stack in main.py, as the tests run it.

Synthesizes each stack in memory, renders every helm_release with Helm 3 and its pinned chart, then
runs the five checks (render, object validation with CRD schemas and CEL, placement, order, dead
values). Prints the wall time of each phase and the total; run it on an otherwise idle machine.

    .venv/bin/python bench/render_bench.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CHECKPOINT_DISABLE", "1")


def main() -> None:
    import main as app
    from tests.support import gates, order, placement, render, values

    timings: dict[str, float] = {}

    def phase(name: str, start: float) -> float:
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - start
        return now

    begin = time.perf_counter()
    objects = 0
    for instance in app.INSTANCES:
        start = time.perf_counter()
        stack = render.rendered(instance)
        start = phase("synth and helm template", start)
        validator = gates.validator_for(stack)
        for _, obj in stack.objects():
            validator.validate(obj)
            objects += 1
        start = phase("object validation (schemas, CEL)", start)
        assert placement.placement_problems(stack) == []
        start = phase("placement", start)
        assert order.order_problems(stack) == []
        start = phase("order", start)
        assert all(values.release_dead_keys(release) == [] for release in stack.releases)
        phase("dead values", start)
    total = time.perf_counter() - begin
    releases = sum(len(render.rendered(i).releases) for i in app.INSTANCES)
    print(f"{len(app.INSTANCES)} stacks, {releases} releases, {objects} objects")
    for name, seconds in timings.items():
        print(f"  {name:<36} {seconds:6.1f} s")
    print(f"  {'total':<36} {total:6.1f} s")


if __name__ == "__main__":
    main()
