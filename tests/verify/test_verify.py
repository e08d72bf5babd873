"""`make verify`: the checks against a fake API server on 127.0.0.1 (tests/support/fake_kube.py).

Each stack's expectation is built from main.py, as `make verify` builds it; the fake serves a cluster
with what the stack deploys, and each failure test breaks one thing in it.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

import main
from environments import Instance
from gpu_constructs import verify
from gpu_constructs.engine import ACTIVE
from gpu_constructs.verify import FAIL, PASS, SKIP, JobSettings, Result, checks, report
from gpu_constructs.verify.__main__ import main as verify_main
from tests.conftest import free_port
from tests.support import fake_kube
from tests.support.fake_kube import FakeKube
from tests.support.validators import validate_manifest

ROOT = Path(__file__).resolve().parents[2]
STACKS = [instance.stack for instance in main.INSTANCES]
FAST_JOB = JobSettings(timeout=5, poll=0.01)
_EXPECTED: dict[str, verify.Expectation] = {}


def expected_for(stack: str) -> verify.Expectation:
    if stack not in _EXPECTED:
        _EXPECTED[stack] = verify.for_stack(stack)
    return _EXPECTED[stack]


@pytest.fixture
def serve() -> Iterator[Callable[[FakeKube], client.ApiClient]]:
    """Start a fake API server; it is shut down when the test ends."""
    started: list[tuple[FakeKube, client.ApiClient]] = []

    def start(fake: FakeKube) -> client.ApiClient:
        fake.start()
        configuration = client.Configuration()
        config.load_kube_config_from_dict(fake.kubeconfig(), client_configuration=configuration)
        configuration.retries = 0
        api = client.ApiClient(configuration)
        started.append((fake, api))
        return api

    yield start
    for fake, api in started:
        api.close()
        fake.stop()


def by_check(results: list[Result]) -> dict[str, Result]:
    return {r.check: r for r in results}


def failed(results: list[Result]) -> list[Result]:
    return [r for r in results if r.result == FAIL]


# --- a healthy cluster, every stack ---------------------------------------------------------------------
@pytest.mark.parametrize("stack", STACKS)
def test_a_healthy_cluster_passes_and_only_the_job_is_created_and_deleted(stack, serve):
    expected = expected_for(stack)
    fake = fake_kube.healthy(expected)
    results = verify.run(serve(fake), expected, FAST_JOB)

    assert failed(results) == []
    assert by_check(results)["gpu job"].result == PASS
    assert "GPU 0: NVIDIA A100-SXM4-40GB" in by_check(results)["gpu job"].evidence
    changes = [(m, p) for m, p in fake.requests if m != "GET"]
    job_path = "/apis/batch/v1/namespaces/gpu-verify/jobs"
    assert changes[0] == ("POST", "/api/v1/namespaces")  # its own namespace, once
    assert changes[1] == ("POST", job_path)
    assert changes[2][0] == "DELETE" and changes[2][1].startswith(job_path + "/gpu-verify-")
    assert len(changes) == 3
    assert not any(p.startswith(job_path + "/") for p in fake.objects)


def test_every_platform_component_of_a_stack_is_checked(serve):
    """What each stack installs is what gets checked: one row per component."""
    checked = {
        s: set(by_check(verify.run(serve(fake_kube.healthy(expected_for(s))), expected_for(s), FAST_JOB)))
        for s in STACKS
    }
    assert {
        "gpu operator pods",
        "dcgm metrics",
        "certificates",
        "vault unsealed",
        "postgresql ffe/ffe-db",
        "postgresql backup ffe/ffe-db",
        "backup vault/vault-backup",
        "k3s etcd snapshots",
        "storageclass fast-ssd",
        "storageclass backup",
        "deployment ffe/ffe-backend",
    } <= checked["single-node"]
    assert {
        "device plugin pods",
        "nodepool general",
        "nodepool critical",
        "nodepool gpu-inference",
        "deployment inference/tinyllama-inference",
        "karpenter pods",
        "ec2nodeclass gpu",
    } <= checked["eks-karpenter"]
    assert {
        "gpu operator pods",
        "certificates",
        "jupyterhub hub",
        "gitrepo fleet-local/cluster-maintenance",
    } <= checked["proxmox-ha"]
    assert {"device plugin pods", "node group gpu agents", "gpu runtime nvidia"} <= checked["k3d-poc"]
    assert "cloud firewall kube-system/primary" in checked["lke"]
    assert "gpu runtime nvidia" in checked["lke"] and "gpu runtime nvidia" not in checked["eks-karpenter"]
    assert any(check.startswith("job gpu-smoke-test/gpu-smoke-test-") for check in checked["k3d-poc"])
    assert "vault unsealed" not in checked["lke"] and "gpu operator pods" in checked["lke"]
    for stack in STACKS:
        assert {"prometheus dcgm targets", "prometheus alerts"} <= checked[stack], stack


def test_the_gpu_job_is_placed_by_the_contract_and_is_a_valid_job(upstream):
    for stack in ("k3d-poc", "eks-karpenter"):
        expected = expected_for(stack)
        job = checks.gpu_job_manifest(expected, "gpu-verify-test", FAST_JOB)
        validate_manifest(job, upstream)
        spec = job["spec"]["template"]["spec"]
        for key, value in expected.cluster.gpu_pod_spec().items():
            assert spec[key] == value
        assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    k3d = checks.gpu_job_manifest(expected_for("k3d-poc"), "x", FAST_JOB)["spec"]["template"]["spec"]
    assert k3d["runtimeClassName"] == "nvidia"
    assert k3d["nodeSelector"] == {"node-role.kubernetes.io/gpu": "true"}


# --- one failure at a time -------------------------------------------------------------------------------
def _first_gpu_node(fake: FakeKube) -> dict[str, Any]:
    return next(
        o
        for p, o in fake.objects.items()
        if p.startswith("/api/v1/nodes/") and "nvidia.com/gpu" in o["status"]["allocatable"]
    )


def gpu_not_allocatable(fake: FakeKube) -> None:
    del _first_gpu_node(fake)["status"]["allocatable"]["nvidia.com/gpu"]


def vault_sealed(fake: FakeKube) -> None:
    path = "/api/v1/namespaces/vault/pods/vault-0:8200/proxy/v1/sys/seal-status"
    fake.raw[path] = (200, json.dumps({"initialized": True, "sealed": True, "t": 1, "n": 1, "progress": 0}))


def certificate_not_ready(fake: FakeKube) -> None:
    cert = fake.objects["/apis/cert-manager.io/v1/namespaces/ffe/certificates/app-tls"]
    cert["status"] = fake_kube.ready("False", "Issuing certificate as Secret does not exist")


def postgres_degraded(fake: FakeKube) -> None:
    fake.objects["/apis/postgresql.cnpg.io/v1/namespaces/ffe/clusters/ffe-db"]["status"].update(
        phase="Waiting for the instances to become active", readyInstances=0
    )


def _db_status(fake: FakeKube) -> dict:
    status: dict = fake.objects["/apis/postgresql.cnpg.io/v1/namespaces/ffe/clusters/ffe-db"]["status"]
    return status


def _ago(hours: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=hours)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def backup_too_old(fake: FakeKube) -> None:
    _db_status(fake)["lastSuccessfulBackup"] = _ago(30)


def backup_failed(fake: FakeKube) -> None:
    _db_status(fake).update(lastSuccessfulBackup=_ago(25), lastFailedBackup=_ago(1))


def archiving_failed(fake: FakeKube) -> None:
    _db_status(fake)["conditions"] = [
        {
            "type": "ContinuousArchiving",
            "status": "False",
            "reason": "ContinuousArchivingFailing",
            "message": "unexpected failure invoking barman-cloud-wal-archive: exit status 1",
        }
    ]


def never_backed_up(fake: FakeKube) -> None:
    del _db_status(fake)["lastSuccessfulBackup"]


def dcgm_silent(fake: FakeKube) -> None:
    fake.raw["/api/v1/namespaces/gpu-operator/services/nvidia-dcgm-exporter:9400/proxy/metrics"] = (
        200,
        "# no samples\n",
    )


def _prometheus(fake: FakeKube, path: str) -> dict[str, Any]:
    base = fake_kube.PROMETHEUS_PROXY.format(namespace="monitoring")
    return json.loads(fake.raw[f"{base}/api/v1/{path}"][1])


def _serve(fake: FakeKube, targets: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> None:
    fake_kube.serve_prometheus(fake, "monitoring", targets, alerts)


def dcgm_target_down(fake: FakeKube) -> None:
    targets = _prometheus(fake, "targets")["data"]["activeTargets"]
    down = next(
        t for t in targets if t["labels"]["node"] == "wk-gpu2" and t["labels"]["job"] == "dcgm-exporter"
    )
    down["health"] = "down"
    down["lastError"] = (
        'Get "http://10.42.1.17:9400/metrics": dial tcp 10.42.1.17:9400: connect: connection refused'
    )
    _serve(fake, targets, fake_kube.WATCHDOG)


def dcgm_target_missing(fake: FakeKube) -> None:
    targets = _prometheus(fake, "targets")["data"]["activeTargets"]
    # The other job's target on the node does not count.
    kept = [
        t
        for t in targets
        if not (t["labels"]["node"] == "group0-node0" and t["labels"]["job"] == "dcgm-exporter")
    ]
    _serve(fake, kept, fake_kube.WATCHDOG)


def alert_firing(fake: FakeKube) -> None:
    targets = _prometheus(fake, "targets")["data"]["activeTargets"]
    hot = {
        "labels": {"alertname": "GpuTemperatureHigh", "severity": "warning", "node": "wk-gpu1", "gpu": "0"},
        "annotations": {"summary": "GPU 0 on wk-gpu1 is at 91 C"},
        "state": "firing",
        "activeAt": "2026-12-02T11:40:00.000000000Z",
        "value": "9.1e+01",
    }
    pending = {**hot, "labels": {**hot["labels"], "node": "wk-gpu3"}, "state": "pending"}
    _serve(fake, targets, [*fake_kube.WATCHDOG, hot, pending])


def watchdog_silent(fake: FakeKube) -> None:
    _serve(fake, _prometheus(fake, "targets")["data"]["activeTargets"], [])


def operator_pod_crashing(fake: FakeKube) -> None:
    pod = fake.objects["/api/v1/namespaces/gpu-operator/pods/gpu-operator-0"]
    pod["status"]["conditions"][1]["status"] = "False"
    pod["status"]["containerStatuses"] = [
        {
            "name": "main",
            "image": "x",
            "imageID": "",
            "ready": False,
            "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        }
    ]


def gpu_taint_missing(fake: FakeKube) -> None:
    fake.objects["/api/v1/nodes/k3d-gpu-poc-agent-2"]["spec"] = {}


def gpu_label_wrong(fake: FakeKube) -> None:
    fake.objects["/api/v1/nodes/wk-gpu3"]["metadata"]["labels"]["nvidia.com/gpu"] = "false"


def worker_missing(fake: FakeKube) -> None:
    del fake.objects["/api/v1/nodes/wk-gpu4"]


def node_not_ready(fake: FakeKube) -> None:
    fake.objects["/api/v1/nodes/cp2"]["status"]["conditions"] = [
        {
            "type": "Ready",
            "status": "Unknown",
            "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
        }
    ]


def nodepool_not_ready(fake: FakeKube) -> None:
    fake.objects["/apis/karpenter.sh/v1/nodepools/gpu-inference"]["status"] = fake_kube.ready(
        "False", "NodeClassReady=False"
    )


def gitrepo_not_ready(fake: FakeKube) -> None:
    path = "/apis/fleet.cattle.io/v1alpha1/namespaces/fleet-local/gitrepos/cluster-maintenance"
    fake.objects[path]["status"] = fake_kube.ready("False", "failed to clone repo")


def hub_not_ready(fake: FakeKube) -> None:
    fake.objects["/apis/apps/v1/namespaces/jupyterhub/deployments/hub"]["status"]["readyReplicas"] = 0


def app_off_gpu(fake: FakeKube) -> None:
    fake.objects["/api/v1/namespaces/ffe/pods/ffe-backend-0"]["spec"]["nodeName"] = "somewhere-else"


def smoke_test_failed(fake: FakeKube) -> None:
    (job,) = [
        path for path in fake.objects if path.startswith("/apis/batch/v1/namespaces/gpu-smoke-test/jobs/")
    ]
    fake.objects[job]["status"] = {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    }


def no_gpu_in_log(fake: FakeKube) -> None:
    run = fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"]

    def without_gpu(job: dict[str, Any]) -> None:
        run(job)
        fake.raw[f"/api/v1/namespaces/gpu-verify/pods/{job['metadata']['name']}-x1/log"] = (
            200,
            "No devices were found\n",
        )

    fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"] = without_gpu


def storage_class_missing(fake: FakeKube) -> None:
    del fake.objects["/apis/storage.k8s.io/v1/storageclasses/fast-scratch"]


def nfs_class_missing(fake: FakeKube) -> None:
    del fake.objects["/apis/storage.k8s.io/v1/storageclasses/nfs-client"]


def ec2nodeclass_not_ready(fake: FakeKube) -> None:
    path = "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/gpu"
    fake.objects[path]["status"] = fake_kube.ready("False", "AMISelector did not match any AMIs")


def karpenter_pending(fake: FakeKube) -> None:
    fake.objects["/api/v1/namespaces/karpenter/pods/karpenter-1"]["status"]["phase"] = "Pending"


def plugin_without_runtime_class(fake: FakeKube) -> None:
    """The device plugin runs, but not through the nvidia handler: nothing proves containerd has it."""
    for path, obj in fake.objects.items():
        if "/pods/nvidia-device-plugin-" in path:
            obj["spec"].pop("runtimeClassName", None)


def node_outside_the_firewall(fake: FakeKube) -> None:
    """A node the controller never attached (say the autoscaler added it after the token expired)."""
    (path,) = [p for p in fake.objects if p.endswith("/cloudfirewalls/primary")]
    fake.objects[path]["status"]["nodes"].pop()


ETCD_SNAPSHOT = "/apis/k3s.cattle.io/v1/etcdsnapshotfiles/s3-etcd-snapshot-server-1764640800-1a2b3c"


def etcd_snapshot_too_old(fake: FakeKube) -> None:
    fake.objects[ETCD_SNAPSHOT]["status"]["creationTime"] = _ago(30)


def etcd_snapshot_failed_since(fake: FakeKube) -> None:
    fake.put(
        "/apis/k3s.cattle.io/v1/etcdsnapshotfiles/s3-etcd-snapshot-server-1764648000-4d5e6f",
        {
            "spec": {"snapshotName": "etcd-snapshot-server-1764648000", "s3": {"bucket": "ffe-backups"}},
            "status": {
                "readyToUse": False,
                "creationTime": _ago(1),
                "error": {"time": _ago(1), "message": "Access Denied"},
            },
        },
    )


def etcd_snapshot_only_local(fake: FakeKube) -> None:
    del fake.objects[ETCD_SNAPSHOT]["spec"]["s3"]


def vault_snapshot_too_old(fake: FakeKube) -> None:
    job = fake.objects["/apis/batch/v1/namespaces/vault/jobs/vault-backup-29400000"]
    job["status"]["completionTime"] = _ago(30)


def vault_snapshot_failed(fake: FakeKube) -> None:
    fake.put(
        "/apis/batch/v1/namespaces/vault/jobs/vault-backup-29401440",
        {
            "metadata": {
                "namespace": "vault",
                "creationTimestamp": _ago(0.5),
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "CronJob", "name": "vault-backup", "uid": "u1"}
                ],
            },
            "spec": {"template": {"spec": {"containers": [{"name": "upload"}]}}},
            "status": {
                "failed": 3,
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "sealed",
                    }
                ],
            },
        },
    )


FAILURES = [
    ("lke", node_outside_the_firewall, "cloud firewall kube-system/primary", "not in firewall 123456: "),
    (
        "k3d-poc",
        plugin_without_runtime_class,
        "gpu runtime nvidia",
        "k3d-gpu-poc-agent-2: no pod with runtimeClassName nvidia runs there",
    ),
    (
        "lke",
        plugin_without_runtime_class,
        "gpu runtime nvidia",
        "no pod with runtimeClassName nvidia runs there",
    ),
    ("single-node", etcd_snapshot_too_old, "k3s etcd snapshots", "newest snapshot on S3 30h00m ago"),
    ("single-node", etcd_snapshot_failed_since, "k3s etcd snapshots", "a later one failed: Access Denied"),
    ("single-node", etcd_snapshot_only_local, "k3s etcd snapshots", "no usable snapshot on S3"),
    ("single-node", vault_snapshot_too_old, "backup vault/vault-backup", "last good run 30h00m ago"),
    ("single-node", vault_snapshot_failed, "backup vault/vault-backup", "last good run 2h00m ago"),
    ("single-node", gpu_not_allocatable, "gpu allocatable", "nvidia.com/gpu=0, expected 1"),
    ("single-node", vault_sealed, "vault unsealed", "vault-0: sealed (0/1 keys): unseal with unseal.sh"),
    (
        "single-node",
        certificate_not_ready,
        "certificates",
        "ffe/app-tls: Test Issuing certificate as Secret does not exist",
    ),
    (
        "single-node",
        postgres_degraded,
        "postgresql ffe/ffe-db",
        "Waiting for the instances to become active, 0/1",
    ),
    ("single-node", backup_too_old, "postgresql backup ffe/ffe-db", "last base backup 30h00m ago"),
    ("single-node", backup_failed, "postgresql backup ffe/ffe-db", "failed"),
    ("single-node", archiving_failed, "postgresql backup ffe/ffe-db", "WAL archiving failing: unexpected"),
    ("single-node", never_backed_up, "postgresql backup ffe/ffe-db", "no successful base backup"),
    ("single-node", dcgm_silent, "dcgm metrics", "no DCGM_FI_DEV_GPU_UTIL sample"),
    ("single-node", operator_pod_crashing, "gpu operator pods", "gpu-operator-0: CrashLoopBackOff"),
    (
        "single-node",
        app_off_gpu,
        "deployment ffe/ffe-backend",
        "not on a GPU node: ffe-backend-0 on somewhere-else",
    ),
    ("single-node", no_gpu_in_log, "gpu job", "nvidia-smi saw no GPU on group0-node0: No devices were found"),
    (
        "k3d-poc",
        gpu_taint_missing,
        "node group gpu agents",
        "k3d-gpu-poc-agent-2 lacks taint node-role.kubernetes.io/gpu=true:NoSchedule",
    ),
    ("k3d-poc", smoke_test_failed, "job gpu-smoke-test/gpu-smoke-test-", "not completed"),
    ("proxmox-ha", gpu_label_wrong, "node group gpu workers", "wk-gpu3 lacks label nvidia.com/gpu=true"),
    ("proxmox-ha", worker_missing, "node group gpu workers", "missing wk-gpu4; 3 nodes, expected 4"),
    (
        "proxmox-ha",
        node_not_ready,
        "nodes ready",
        "cp2: NodeStatusUnknown Kubelet stopped posting node status.",
    ),
    ("proxmox-ha", gitrepo_not_ready, "gitrepo fleet-local/cluster-maintenance", "failed to clone repo"),
    ("proxmox-ha", hub_not_ready, "jupyterhub hub", "0/1 replicas ready"),
    ("proxmox-ha", storage_class_missing, "storageclass fast-scratch", "API 404: not found"),
    ("proxmox-ha", nfs_class_missing, "storageclass nfs-client", "API 404: not found"),
    ("eks-karpenter", ec2nodeclass_not_ready, "ec2nodeclass gpu", "AMISelector did not match any AMIs"),
    ("eks-karpenter", karpenter_pending, "karpenter pods", "karpenter-1: Pending"),
    ("eks-karpenter", nodepool_not_ready, "nodepool gpu-inference", "NodeClassReady=False"),
    (
        "proxmox-ha",
        dcgm_target_down,
        "prometheus dcgm targets",
        "wk-gpu2: http://10.42.1.17:9400/metrics down: Get",
    ),
    ("proxmox-ha", dcgm_target_down, "prometheus dcgm targets", "(runbook: kubectl -n gpu-operator get pods"),
    (
        "single-node",
        dcgm_target_missing,
        "prometheus dcgm targets",
        "no DCGM exporter target on group0-node0",
    ),
    ("single-node", dcgm_target_missing, "prometheus dcgm targets", "(runbook: Check that the DCGM exporter"),
    (
        "proxmox-ha",
        alert_firing,
        "prometheus alerts",
        "GpuTemperatureHigh{node=wk-gpu1}: GPU 0 on wk-gpu1 is at 91 C (runbook: Check the host's fans",
    ),
    ("lke", watchdog_silent, "prometheus alerts", "Watchdog is not firing"),
]


@pytest.mark.parametrize(
    ("stack", "breaks", "check", "evidence"),
    FAILURES,
    ids=[f"{f[1].__name__}-{i}" for i, f in enumerate(FAILURES)],
)
def test_one_broken_thing_fails_its_check_and_only_it(stack, breaks, check, evidence, serve):
    expected = expected_for(stack)
    fake = fake_kube.healthy(expected)
    breaks(fake)
    results = verify.run(serve(fake), expected, FAST_JOB)

    bad = failed(results)
    assert len(bad) == 1 and bad[0].check.startswith(check), bad
    assert evidence in bad[0].evidence
    assert not report.ok(results)


def test_allocatable_gpus_are_the_contracts_gpus_times_time_slicing_replicas(serve):
    sliced = verify.for_stack(
        "single-node",
        [Instance("single-node", "single-node", {"time_slicing_replicas": 4, "gpus_per_node": 2})],
    )
    assert sliced.gpu_slots_per_node == 8
    fake = fake_kube.healthy(sliced)
    assert by_check(verify.run(serve(fake), sliced, FAST_JOB))["gpu allocatable group0-node0"].result == PASS
    _first_gpu_node(fake)["status"]["allocatable"]["nvidia.com/gpu"] = "2"  # sharing config not applied
    result = by_check(verify.run(serve(fake), sliced, FAST_JOB))["gpu allocatable group0-node0"]
    assert result.result == FAIL
    assert result.evidence == (
        "nvidia.com/gpu=2, expected 8 (the stack's GPUs per node): sharing config differs"
    )


def test_a_pending_gpu_job_shows_the_schedulers_and_karpenters_reasons_and_is_deleted(serve):
    expected = expected_for("eks-karpenter")
    fake = fake_kube.healthy(expected)
    fake_kube.gpu_job_pending(
        fake,
        [
            (
                "default-scheduler",
                "FailedScheduling",
                "0/2 nodes are available: 2 node(s) had untolerated taint {CriticalAddonsOnly: true}.",
            ),
            (
                "karpenter",
                "FailedScheduling",
                'Failed to schedule pod, all available instance types exceed limits for nodepool: "gpu-inference"',
            ),
        ],
    )
    results = by_check(verify.run(serve(fake), expected, JobSettings(timeout=0.2, poll=0.05)))

    job = results["gpu job"]
    assert job.result == FAIL
    assert job.evidence.startswith("Pending after 0.2 s: scheduler: 0/2 nodes are available")
    assert "default-scheduler: FailedScheduling: 0/2 nodes are available" in job.evidence
    assert (
        'karpenter: FailedScheduling: Failed to schedule pod, all available instance types exceed limits for nodepool: "gpu-inference"'
        in job.evidence
    )
    assert [m for m, p in fake.requests if p.startswith("/apis/batch/v1/namespaces/gpu-verify/jobs/")][
        -1
    ] == "DELETE"
    # No GPU node came up: the GPU pool and the device plugin say so instead of failing.
    assert results["gpu allocatable"].result == SKIP
    assert results["node group nodepool gpu-inference"].result == SKIP


def test_scale_from_zero_reports_how_long_the_gpu_node_took(serve):
    expected = expected_for("eks-karpenter")
    assert expected.scales_from_zero
    results = by_check(verify.run(serve(fake_kube.healthy(expected)), expected, FAST_JOB))
    # The fake's Job was created at 01:00:00 and its pod scheduled at 01:01:12 on a new node.
    assert results["gpu job"].evidence.endswith(
        "on group3-gpu-from-zero; GPU node started from zero, pod scheduled 72 s after the Job was created"
    )
    assert results["gpu allocatable group3-gpu-from-zero"].evidence == (
        "nvidia.com/gpu=1 (karpenter.k8s.aws/instance-gpu-count=1)"
    )


def test_no_job_creates_nothing(serve):
    expected = expected_for("k3d-poc")
    fake = fake_kube.healthy(expected)
    results = by_check(verify.run(serve(fake), expected, None))
    assert results["gpu job"] == Result("gpu job", SKIP, "left out (--no-job)")
    assert [m for m, _ in fake.requests] == ["GET"] * len(fake.requests)


# --- the command --------------------------------------------------------------------------------------------
def _write_kubeconfig(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    path.chmod(0o600)
    return path


def test_the_command_prints_an_aligned_table_without_colour_off_a_terminal(
    serve, tmp_path, monkeypatch, capsys
):
    fake = fake_kube.healthy(expected_for("k3d-poc"))
    serve(fake)
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path, fake.kubeconfig())))
    code = verify_main(["k3d-poc", "--job-timeout", "5", "--poll", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"k3d-poc: cluster 'gpu-poc', Kubernetes v1.35.0, via {tmp_path / 'kubeconfig.yaml'}"
    header = lines[2]
    assert header.split() == ["CHECK", "RESULT", "EVIDENCE"]
    rows = lines[3:-2]
    assert all(row[header.index("RESULT") :].split()[0] in ("pass", "skip") for row in rows)
    assert "\033[" not in out
    assert lines[-1] == f"{len(rows)} checks, none failed"


def test_the_table_is_coloured_on_a_terminal_only():
    results = [Result("a", PASS, "x"), Result("longer check", FAIL, "y")]
    assert report.table(results, colour=True).splitlines()[2] == "longer check  \033[31mfail  \033[0m  y"
    assert report.table(results).splitlines()[1] == "a             pass    x"


def test_the_command_prints_json_and_exits_1_on_a_failure(serve, tmp_path, monkeypatch, capsys):
    fake = fake_kube.healthy(expected_for("k3d-poc"))
    gpu_taint_missing(fake)
    serve(fake)
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path, fake.kubeconfig())))
    code = verify_main(["k3d-poc", "--json", "--no-job"])
    document = json.loads(capsys.readouterr().out)
    assert code == 1
    assert document["ok"] is False and document["error"] is None and document["stack"] == "k3d-poc"
    assert document["cluster"] == {
        "name": "gpu-poc",
        "server": fake.url,
        "kubernetes": "v1.35.0",
        "via": str(tmp_path / "kubeconfig.yaml"),
    }
    assert {
        "check": "node group gpu agents",
        "result": "fail",
        "evidence": "k3d-gpu-poc-agent-2 lacks taint node-role.kubernetes.io/gpu=true:NoSchedule",
    } in document["checks"]


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "gpu_constructs.verify", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unreachable_cluster_is_one_line_naming_the_cluster_and_the_fix(tmp_path):
    port = free_port()  # nothing listens there
    kubeconfig = FakeKube()
    kubeconfig.url = f"http://127.0.0.1:{port}"
    path = _write_kubeconfig(tmp_path, kubeconfig.kubeconfig())
    done = _run_cli("lke", env={"KUBECONFIG": str(path)})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"verify lke: stack 'lke' (cluster 'lke') at http://127.0.0.1:{port} (from {path}) is unreachable ("
    )
    assert lines[0].endswith(
        "check that the cluster is running and that this machine reaches its API (VPN, API allowlist), or point KUBECONFIG at it"
    )


def test_rejected_credentials_and_a_missing_kubeconfig_are_one_line_each(
    serve, tmp_path, monkeypatch, capsys
):
    fake = FakeKube()
    fake.errors["*"] = 401
    serve(fake)
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path, fake.kubeconfig())))
    assert verify_main(["proxmox-ha"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "stack 'proxmox-ha' (cluster 'vms') at http://127.0.0.1:" in err
    assert "rejected the credentials (401 Unauthorized): refresh them" in err

    assert verify_main(["proxmox-ha", "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False and document["checks"] == []
    assert "rejected the credentials (401 Unauthorized)" in document["error"]

    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.chdir(tmp_path)
    # k3d-poc's providers read the cluster itself; kubectl's copy is where its create step writes it.
    expected = verify.for_stack("k3d-poc")
    missing = expected.kubeconfig
    assert missing == tmp_path / "kubeconfig" / "k3d-poc.yaml"
    with pytest.raises(
        verify.Unreachable, match=r"^stack 'k3d-poc' \(cluster 'gpu-poc'\): no kubeconfig at "
    ):
        verify.configure(verify.expect.Expectation(**{**expected.__dict__, "kubeconfig": missing}))


def test_an_unknown_stack_is_one_line(capsys):
    assert verify_main(["nope", "--no-job"]) == 2
    assert (
        capsys.readouterr().err
        == f"verify nope: 'STACK' is 'nope': use a stack from main: {', '.join(STACKS)}\n"
    )


def test_another_apps_stacks_are_verified_through_its_own_module(capsys, tmp_path, monkeypatch):
    """``--app`` names the module that lists the stacks, for an app that is not this repository's."""
    (tmp_path / "team_app.py").write_text(
        "from environments import Instance\nINSTANCES = [Instance('team-gpu', 'k3d-poc')]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # the app's own directory holds its cdktf.out and kubeconfigs, wherever the library is installed
    monkeypatch.chdir(tmp_path)
    expected = verify.for_stack("team-gpu", app="team_app")
    assert expected.stack == "team-gpu"
    assert expected.kubeconfig is not None and expected.kubeconfig.is_relative_to(tmp_path)
    assert verify_main(["k3d-poc", "--app", "team_app", "--no-job"]) == 2
    assert (
        capsys.readouterr().err
        == "verify k3d-poc: 'STACK' is 'k3d-poc': use a stack from team_app: team-gpu\n"
    )
    assert verify_main(["k3d-poc", "--app", "no_such_app"]) == 2
    assert capsys.readouterr().err == (
        "verify k3d-poc: '--app' is 'no_such_app': name the module of your app that lists INSTANCES\n"
    )
    (tmp_path / "bare_app.py").write_text("")
    assert verify_main(["k3d-poc", "--app", "bare_app"]) == 2
    assert "the module has no INSTANCES" in capsys.readouterr().err


def test_make_verify_runs_the_module_for_the_stack():
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "verify", "STACK=k3d-poc", "VERIFY_ARGS=--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    venv = ".venv" if ACTIVE.name == "cdktf" else f"engines/{ACTIVE.name}/.venv"  # the Makefile's VENV
    assert done.stdout.splitlines()[-1] == f"{venv}/bin/python -m gpu_constructs.verify k3d-poc --json"


def test_every_library_package_is_in_the_distribution():
    """Other teams' apps import the library (and gpu_constructs.verify) from the installed package."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "packages"
    ]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gpu_constructs").rglob("__init__.py")
    }
    assert on_disk - set(packages) == set()


# --- EKS: the cloud's own login, against moto's EKS API ----------------------------------------------------
@pytest.fixture
def moto_server() -> Iterator[str]:
    """moto's AWS API emulator on 127.0.0.1, stopped by its PID."""
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None:
                pytest.fail("moto_server exited")
            time.sleep(0.1)
        else:
            pytest.fail("moto_server did not listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_eks_is_reached_with_the_clouds_login(moto_server, tmp_path, monkeypatch):
    import boto3

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"
    aws.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/aws-args\n'
        'echo \'{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1",'
        '"status":{"token":"k8s-aws-v1.from-get-token","expirationTimestamp":"2099-01-01T00:00:00Z"}}\'\n'
    )
    aws.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    for key, value in {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    expected = expected_for("eks-karpenter")
    assert expected.eks == ("gpu-dev-euw1-eks", "eu-west-1")

    with pytest.raises(
        verify.Unreachable,
        match=r"^cluster 'gpu-dev-euw1-eks' \(eu-west-1\): the EKS API refused to describe it \(.*ResourceNotFoundException.*\): log in",
    ):
        verify.configure(expected)

    eks = boto3.client("eks", region_name="eu-west-1")
    eks.create_cluster(
        name="gpu-dev-euw1-eks",
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]},
    )
    endpoint = eks.describe_cluster(name="gpu-dev-euw1-eks")["cluster"]["endpoint"]
    configuration, source = verify.configure(expected)
    assert configuration.host == endpoint.rstrip("/")
    assert source == "aws eks (gpu-dev-euw1-eks, eu-west-1)"
    assert configuration.api_key["authorization"] == "Bearer k8s-aws-v1.from-get-token"
    assert (tmp_path / "aws-args").read_text().split() == [
        "eks",
        "get-token",
        "--cluster-name",
        "gpu-dev-euw1-eks",
        "--region",
        "eu-west-1",
    ]

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(verify.Unreachable, match="the AWS CLI is not on PATH"):
        verify.configure(expected)


# --- the names verify looks for are the ones the real charts create with each stack's values -------------
def _render(upstream: Path, release: verify.expect.Release, tmp_path: Path) -> list[dict[str, Any]]:
    (chart,) = [
        d for d in (upstream / "charts").iterdir() if re.fullmatch(rf"{release.chart}-v?\d[\d.]*", d.name)
    ]
    values = tmp_path / f"{release.name}.yaml"
    values.write_text(yaml.safe_dump(dict(release.values)), encoding="utf-8")
    done = subprocess.run(
        [
            str(ROOT / "tools" / "helm" / "bin" / "helm"),
            "template",
            release.name,
            str(chart),
            "--namespace",
            release.namespace,
            "--values",
            str(values),
            "--kube-version",
            "1.35.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _selects(selector: str, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))


@pytest.mark.parametrize(
    ("stack", "chart", "kind", "selector"),
    [
        ("single-node", "vault", "StatefulSet", checks.VAULT_SERVER_PODS),
        ("eks-karpenter", "nvidia-device-plugin", "DaemonSet", checks.DEVICE_PLUGIN_PODS),
        ("eks-karpenter", "karpenter", "Deployment", checks.KARPENTER_PODS),
    ],
)
def test_pod_selectors_match_the_charts_pods(stack, chart, kind, selector, upstream, tmp_path):
    release = expected_for(stack).release(chart)
    assert release is not None
    workloads = [d for d in _render(upstream, release, tmp_path) if d["kind"] == kind]
    assert workloads
    assert all(_selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w in workloads)


@pytest.mark.parametrize("stack", STACKS)
def test_the_prometheus_service_is_the_one_verify_reads(stack, upstream, tmp_path):
    release = expected_for(stack).release("kube-prometheus-stack")
    assert release is not None
    name, port = checks.prometheus_service(release).split(":")
    services = [d for d in _render(upstream, release, tmp_path) if d["kind"] == "Service"]
    (service,) = [s for s in services if s["metadata"]["name"] == name]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert f"/services/{name}:{port}/proxy" in fake_kube.PROMETHEUS_PROXY


@pytest.mark.parametrize("stack", STACKS)
def test_dcgm_targets_are_read_from_the_stacks_servicemonitor(stack):
    """The operator names a ServiceMonitor's scrape pool serviceMonitor/<namespace>/<name>/<endpoint
    index> (prometheus-operator pkg/prometheus/promcfg.go), and the check reads the node from the
    label the ServiceMonitor's relabeling writes."""
    expected = expected_for(stack)
    (monitor,) = [
        m
        for _, m in expected.objects("monitoring.coreos.com/v1", "ServiceMonitor")
        if m["metadata"]["name"] == "dcgm-exporter"
    ]
    pool = f"serviceMonitor/{monitor['metadata']['namespace']}/{monitor['metadata']['name']}/"
    assert pool == checks.DCGM_SCRAPE_POOL
    (endpoint,) = monitor["spec"]["endpoints"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in endpoint[
        "relabelings"
    ]


def test_the_jupyterhub_hub_deployment_has_the_name_verify_reads(upstream, tmp_path):
    release = expected_for("proxmox-ha").release("jupyterhub")
    assert release is not None
    deployments = {
        d["metadata"]["name"] for d in _render(upstream, release, tmp_path) if d["kind"] == "Deployment"
    }
    assert checks.HUB_DEPLOYMENT in deployments


def test_a_job_already_removed_by_its_ttl_still_reports_its_result(serve):
    expected = expected_for("k3d-poc")
    fake = fake_kube.healthy(expected)
    run = fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"]

    def finished_then_removed(job: dict[str, Any]) -> None:
        run(job)
        # The Job is readable once more, then gone before verification deletes it.
        path = f"/apis/batch/v1/namespaces/gpu-verify/jobs/{job['metadata']['name']}"
        fake.raw_once[path] = json.dumps(job)
        fake.objects.pop(path)

    fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"] = finished_then_removed
    results = by_check(verify.run(serve(fake), expected, FAST_JOB))
    assert results["gpu job"].result == PASS
    assert ("DELETE", next(p for m, p in fake.requests if m == "DELETE")) in fake.requests


def test_an_object_the_client_cannot_read_fails_its_check_only(serve):
    expected = expected_for("proxmox-ha")
    fake = fake_kube.healthy(expected)
    del fake.objects["/apis/apps/v1/namespaces/jupyterhub/deployments/hub"]["spec"]["selector"]
    results = failed(verify.run(serve(fake), expected, FAST_JOB))
    assert results == [
        Result(
            "jupyterhub hub",
            FAIL,
            "unexpected answer from the API: Invalid value for `selector`, must not be `None`",
        )
    ]


def test_colour_follows_the_terminal_and_no_color(serve, tmp_path, monkeypatch, capsys):
    fake = fake_kube.healthy(expected_for("lke"))
    serve(fake)
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path, fake.kubeconfig())))
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert verify_main(["lke", "--no-job"]) == 0
    assert "\033[32mpass" in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert verify_main(["lke", "--no-job"]) == 0
    assert "\033[" not in capsys.readouterr().out


def test_a_job_failed_by_its_deadline_before_its_pod_ran_still_shows_why_it_was_pending(serve):
    expected = expected_for("lke")
    fake = fake_kube.healthy(expected)
    fake_kube.gpu_job_pending(
        fake,
        [
            (
                "default-scheduler",
                "FailedScheduling",
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            )
        ],
    )
    pending = fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"]

    def deadline_exceeded(job: dict[str, Any]) -> None:
        pending(job)
        job["status"] = {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ],
        }
        name = job["metadata"]["name"]
        # A pod that never started has no log: the API answers 400.
        fake.raw[f"/api/v1/namespaces/gpu-verify/pods/{name}-x1/log"] = (400, "container is waiting to start")

    fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"] = deadline_exceeded
    job = by_check(verify.run(serve(fake), expected, FAST_JOB))["gpu job"]
    assert job == Result(
        "gpu job",
        FAIL,
        (
            "Job DeadlineExceeded: Job was active longer than specified deadline; the pod never ran: "
            "scheduler: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.; "
            "default-scheduler: FailedScheduling: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        ),
    )


def test_lke_gpus_per_node_come_from_the_plan():
    four = verify.for_stack(
        "lke", [Instance("lke", "lke", {"gpu_plan": "g2-gpu-rtx4000a4-m", "time_slicing_replicas": 2})]
    )
    assert four.gpu_slots_per_node == 8
    assert expected_for("lke").gpu_slots_per_node == 1


KINDS = {
    "nodes": ("v1", "Node"),
    "pods": ("v1", "Pod"),
    "events": ("v1", "Event"),
    "jobs": ("batch/v1", "Job"),
    "deployments": ("apps/v1", "Deployment"),
    "storageclasses": ("storage.k8s.io/v1", "StorageClass"),
    "nodepools": ("karpenter.sh/v1", "NodePool"),
    "ec2nodeclasses": ("karpenter.k8s.aws/v1", "EC2NodeClass"),
    "gitrepos": ("fleet.cattle.io/v1alpha1", "GitRepo"),
    "certificates": ("cert-manager.io/v1", "Certificate"),
    "clusters": ("postgresql.cnpg.io/v1", "Cluster"),
    "cloudfirewalls": ("networking.linode.com/alpha1v1", "CloudFirewall"),
    "etcdsnapshotfiles": ("k3s.cattle.io/v1", "ETCDSnapshotFile"),
}


@pytest.mark.parametrize("stack", STACKS)
def test_the_fake_serves_objects_the_real_schemas_accept(stack, upstream):
    """The fake's objects are what an API server could return: Kubernetes 1.35's schemas for core
    kinds (status included), the upstream CRDs for custom ones."""
    fake = fake_kube.healthy(expected_for(stack))
    fake_kube.gpu_job_pending(fake, [("default-scheduler", "FailedScheduling", "0/1 nodes are available")])
    fake.handle(
        "POST",
        "/apis/batch/v1/namespaces/gpu-verify/jobs",
        json.dumps(checks.gpu_job_manifest(expected_for(stack), "gpu-verify-schema", FAST_JOB)).encode(),
    )
    # ../shared/upstream has no cert-manager, CNPG or k3s CRD for them
    no_schema_here = {"Certificate", "Cluster", "ETCDSnapshotFile"}
    checked = 0
    for path, obj in fake.objects.items():
        api_version, kind = KINDS[path.rsplit("/", 2)[1]]
        if kind not in no_schema_here:
            validate_manifest({"apiVersion": api_version, "kind": kind, **obj}, upstream)
            checked += 1
    assert checked > 5


def test_a_failing_credential_plugin_is_part_of_the_one_line(serve, tmp_path, monkeypatch, capsys):
    fake = FakeKube()
    fake.errors["*"] = 401
    serve(fake)
    document = fake.kubeconfig()
    document["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": ["eks", "get-token", "--cluster-name", "x"],
        }
    }
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path, document)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert verify_main(["lke", "--no-job"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.rstrip().endswith(
        "rejected the credentials (401 Unauthorized): refresh them (a new kubeconfig from "
        "the stack, or the cloud login) or point KUBECONFIG at valid ones "
        "[kubeconfig: [Errno 2] No such file or directory: 'aws']"
    )


def test_a_job_that_makes_no_pod_shows_the_jobs_events(serve):
    expected = expected_for("single-node")
    fake = fake_kube.healthy(expected)

    def refused(job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        job["status"] = {}
        fake.put(
            f"/api/v1/namespaces/gpu-verify/events/{name}.1",
            {
                "metadata": {"name": f"{name}.1", "namespace": "gpu-verify"},
                "involvedObject": {"kind": "Job", "name": name, "namespace": "gpu-verify"},
                "reason": "FailedCreate",
                "type": "Warning",
                "source": {"component": "job-controller"},
                "message": f'Error creating: pods "{name}-x1" is forbidden: violates PodSecurity "restricted:latest"',
            },
        )

    fake.on_create["/apis/batch/v1/namespaces/gpu-verify/jobs"] = refused
    job = by_check(verify.run(serve(fake), expected, JobSettings(timeout=0.1, poll=0.02)))["gpu job"]
    assert job.result == FAIL
    assert job.evidence.startswith(
        "not created after 0.1 s: no pod created; job-controller: FailedCreate: Error creating: pods"
    )
    assert job.evidence.endswith('is forbidden: violates PodSecurity "restricted:latest"')


@pytest.mark.parametrize("stack", ["k3d-poc", "lke"])
def test_a_gpu_node_without_the_nvidia_handler_fails_the_runtime_check_with_the_sandbox_error(stack, serve):
    """containerd without the handler fails every pod that names it at sandbox creation; the check
    shows that event. On lke the GPU Operator's operands ask for RuntimeClass nvidia although the
    node image brings the toolkit."""
    expected = expected_for(stack)
    fake = fake_kube.healthy(expected)
    message = 'failed to get sandbox runtime: no runtime for "nvidia" is configured'
    for path, obj in list(fake.objects.items()):
        if "/pods/nvidia-device-plugin-" in path:
            obj["status"]["phase"] = "Pending"
            meta = obj["metadata"]
            fake.put(
                f"/api/v1/namespaces/{meta['namespace']}/events/{meta['name']}.sandbox",
                {
                    "metadata": {"namespace": meta["namespace"]},
                    "involvedObject": {"kind": "Pod", "name": meta["name"], "namespace": meta["namespace"]},
                    "type": "Warning",
                    "reason": "FailedCreatePodSandBox",
                    "message": message,
                },
            )
    results = by_check(verify.run(serve(fake), expected, FAST_JOB))
    runtime = results["gpu runtime nvidia"]
    assert runtime.result == "fail" and f"FailedCreatePodSandBox: {message}" in runtime.evidence
