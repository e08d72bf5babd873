"""The GPU smoke test: one Job that runs ``nvidia-smi`` on one GPU of any cluster, placed through the
:class:`~gpu_constructs.cluster.GpuCluster` contract, so a stack's apply fails when no GPU pod can
start."""

from __future__ import annotations

from gpu_constructs import helm
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster

SMOKE_TEST_DEADLINE_SECONDS = 300
"""How long the smoke test Job may run, image pull included; below its release's Helm timeout."""


def smoke_test_job(
    cluster: GpuCluster, image: str, namespace: str, deadline: int = SMOKE_TEST_DEADLINE_SECONDS
) -> dict[str, object]:
    """The seed's GPU smoke test as a Job: nvidia-smi on one GPU, placed by the contract.

    Helm (wait_for_jobs) fails a Job only once ``status.failed > backoffLimit`` and does not read
    its conditions (helm/helm v3.18, pkg/kube/ready.go, jobReady), so a backoffLimit of 0 fails the
    apply on the first failed pod: nvidia-smi exiting non-zero, or the pod the Job controller ends
    at activeDeadlineSeconds. A Job's pod template is immutable, so the name carries a hash of the
    spec: a changed smoke test is a new Job that Helm creates, deleting the old one.
    """
    spec = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": deadline,
        "ttlSecondsAfterFinished": 86400,
        "template": {
            "spec": {
                **cluster.gpu_pod_spec(),
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "cuda",
                        "image": image,
                        "command": ["nvidia-smi"],
                        "resources": {"limits": {GPU_RESOURCE: 1}},
                    }
                ],
            }
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"gpu-smoke-test-{helm.content_digest(spec)}", "namespace": namespace},
        "spec": spec,
    }
