"""Measure synth speed and memory on this machine, against a baseline measured in the same run.

Each command runs once; wall time and the peak of the summed RSS of its whole process tree (Python
and the jsii Node process) are sampled from /proc every 20 ms. The baseline imports the four prebuilt
provider packages the ordinary way. Prints a table and the ratios to the baseline.

    .venv/bin/python bench/synth_bench.py            # all measurements
    .venv/bin/python bench/synth_bench.py --quick    # without `make test`

With the CDK Terrain environment installed (``ENGINE=cdktn make deps``), the synth rows are measured
on that engine too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
CDKTN = ROOT / "engines" / "cdktn"
CDKTN_PYTHON = str(CDKTN / ".venv" / "bin" / "python")
BASELINE = (
    "import cdktf_cdktf_provider_aws, cdktf_cdktf_provider_kubernetes, "
    "cdktf_cdktf_provider_helm, cdktf_cdktf_provider_null"
)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _tree_rss_kib(root: int) -> int:
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        stack.extend(_children(pid))
    return total


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak MiB of the process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        errors = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{' '.join(command)} failed:\n{errors}")
    return wall, peak / 1024


def main() -> None:
    quick = "--quick" in sys.argv
    out = tempfile.mkdtemp(prefix="bench-")
    env = {
        **os.environ,
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CHECKPOINT_DISABLE": "1",
        "CDKTF_OUTDIR": out,
    }
    one_stack = {**env, "GPU_STACKS": "single-node"}
    runs: list[tuple[str, list[str], dict[str, str]]] = [
        ("baseline: import 4 provider packages", [PYTHON, "-c", BASELINE], env),
        ("python main.py (all stacks)", [PYTHON, "main.py"], env),
        ("python main.py (GPU_STACKS=single-node)", [PYTHON, "main.py"], one_stack),
        ("npx cdktf synth", ["npx", "cdktf", "synth", "--output", out], env),
    ]
    if Path(CDKTN_PYTHON).exists() and (CDKTN / "node_modules" / ".bin" / "cdktn").exists():
        cdktn_env = {**env, "ENGINE": "cdktn", "PATH": f"{CDKTN / 'node_modules' / '.bin'}:{env['PATH']}"}
        cli = [str(CDKTN / "node_modules" / ".bin" / "cdktn"), "synth", "--app", f"{CDKTN_PYTHON} main.py"]
        runs += [
            ("cdktn: python main.py (all stacks)", [CDKTN_PYTHON, "main.py"], cdktn_env),
            ("cdktn: cdktn synth", [*cli, "--output", out], cdktn_env),
        ]
    if not quick:
        runs.append(("make test", ["make", "test"], env))
    results = [(name, *measure(command, run_env)) for name, command, run_env in runs]
    base_wall, base_mem = results[0][1], results[0][2]
    print(f"{'command':45} {'wall s':>8} {'peak MiB':>9} {'time/base':>10} {'mem/base':>9}")
    for name, wall, mem in results:
        print(f"{name:45} {wall:8.1f} {mem:9.0f} {wall / base_wall:10.2f} {mem / base_mem:9.2f}")


if __name__ == "__main__":
    main()
