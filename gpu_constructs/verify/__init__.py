"""Verification of a deployed stack: ``python -m gpu_constructs.verify <stack>`` (``make verify``).

It reads what the stack deploys (its GPU cluster contract, node groups and Helm releases, built
in-process from ``main.py``), reaches the stack's cluster with the Kubernetes Python client, and
checks nodes, GPUs, a short GPU Job and the platform components. It changes nothing but the GPU
Job, which it creates and deletes in the ``gpu-verify`` namespace.
"""

from __future__ import annotations

from collections.abc import Callable

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from gpu_constructs.verify import checks
from gpu_constructs.verify.checks import FAIL, PASS, SKIP, JobSettings, Result
from gpu_constructs.verify.connect import REQUEST_TIMEOUT, Unreachable, configure, probe, unreachable
from gpu_constructs.verify.expect import Expectation, for_stack, from_stack

DEFAULT_JOB = JobSettings()

__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "Expectation",
    "JobSettings",
    "Result",
    "Unreachable",
    "configure",
    "for_stack",
    "from_stack",
    "probe",
    "run",
]


def run(
    api: client.ApiClient,
    expected: Expectation,
    job: JobSettings | None = DEFAULT_JOB,
) -> list[Result]:
    """Every check of ``expected`` against the cluster behind ``api``; ``job=None`` leaves out the GPU
    Job (nothing is created then)."""
    where = f"stack {expected.stack!r} (cluster {expected.cluster.name!r}) at {api.configuration.host}"
    try:
        core = client.CoreV1Api(api)
        has_gpus = any(group.gpu for group in expected.node_groups)
        job_result = Result("gpu job", SKIP, "left out (--no-job)" if has_gpus else "the stack has no GPUs")
        if has_gpus and job is not None:
            before = core.list_node(_request_timeout=REQUEST_TIMEOUT).items
            job_result = _guarded("gpu job", lambda: checks.gpu_job(api, expected, before, job))
        # Listed after the Job: a GPU node it started from zero is checked like the others.
        nodes = core.list_node(_request_timeout=REQUEST_TIMEOUT).items
        results = [checks.nodes_ready(nodes)]
        results += [checks.node_group(group, nodes) for group in expected.node_groups]
        results += checks.gpu_allocatable(expected, nodes)
        results.append(job_result)
        for name, check in checks.platform(api, expected, nodes):
            results.append(_guarded(name, check))
    except urllib3.exceptions.HTTPError as error:
        raise Unreachable(unreachable(where, error)) from None
    return results


def _guarded(name: str, check: Callable[[], Result]) -> Result:
    """An API error fails only its own check, with the API's reason."""
    try:
        return check()
    except ApiException as error:
        message = error.reason
        if error.status == 404:
            message = "not found (not installed, or its CRD is missing)"
        return Result(name, FAIL, f"API {error.status}: {message}")
    except ValueError as error:
        # The client refuses an object that lacks a field the API always sets.
        return Result(name, FAIL, f"unexpected answer from the API: {error}")
