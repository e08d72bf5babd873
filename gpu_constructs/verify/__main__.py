"""``python -m gpu_constructs.verify <stack>``: verify a deployed stack; exit 0 when no check fails,
1 when one does, 2 when the cluster cannot be reached or the stack is unknown."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from kubernetes import client

from gpu_constructs.errors import ConfigError
from gpu_constructs.verify import JobSettings, Unreachable, configure, for_stack, probe, report, run


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make verify STACK=<stack> VERIFY_ARGS=...", description=__doc__)
    parser.add_argument("stack", help="a stack name from main.py, e.g. single-node")
    parser.add_argument(
        "--app",
        default="main",
        help="the module whose INSTANCES list the stacks (default: main, this repository's main.py)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (for CI) instead of a table")
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: KUBECONFIG, else the stack's)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--no-job", action="store_true", help="skip the GPU Job (create nothing)")
    parser.add_argument(
        "--job-timeout",
        type=float,
        default=None,
        help="seconds the GPU Job may take (default 300, 600 where GPU nodes scale from zero)",
    )
    parser.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        if args.json:
            print(report.as_json(args.stack, [], error=message))
        else:
            print(f"verify {args.stack}: {message}", file=sys.stderr)
        return 2

    # The client's kubeconfig loader logs what went wrong (an exec plugin that failed, say) and goes
    # on without credentials; that reason belongs in the one line about the cluster.
    logged = _Collect()
    root = logging.getLogger()
    handlers, root.handlers = root.handlers, [logged]
    try:
        expected = for_stack(args.stack, app=args.app)
        configuration, source = configure(expected, args.kubeconfig, args.context)
        with client.ApiClient(configuration) as api:
            version = probe(api, expected, source)
            timeout = args.job_timeout or (600.0 if expected.scales_from_zero else 300.0)
            job = None if args.no_job else JobSettings(timeout=timeout, poll=args.poll)
            results = run(api, expected, job)
    except (Unreachable, ConfigError) as error:
        return fail(str(error) + "".join(f" [kubeconfig: {m}]" for m in logged.messages))
    finally:
        root.handlers = handlers
    if args.json:
        cluster = {
            "name": expected.cluster.name,
            "server": configuration.host,
            "kubernetes": version,
            "via": source,
        }
        print(report.as_json(args.stack, results, cluster=cluster))
    else:
        print(f"{args.stack}: cluster {expected.cluster.name!r}, Kubernetes {version}, via {source}\n")
        # Colour on a terminal only, and not when NO_COLOR is set (no-color.org).
        print(report.table(results, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    return 0 if report.ok(results) else 1


if __name__ == "__main__":
    sys.exit(main())
