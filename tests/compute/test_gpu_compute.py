"""The GpuCompute interface: every stack's compute implements it, and a platform's facts come from
its compute alone.

A sixth platform is stood in for by a compute defined here and nowhere else (a GKE-like cluster
with a system pool and an L4 GPU pool): verification's expectation, placement and release order
read it through the interface, with no other module told about it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator
from typing import Any

import cdktf
import pytest
from cdktf import TerraformStack
from cdktf_cdktf_provider_helm.provider import HelmProvider
from constructs import Construct
from kubernetes import client, config

import main
from gpu_constructs import helm as helm_releases
from gpu_constructs import verify
from gpu_constructs.cluster import GPU_TAINT, GpuCluster, KubeAccess, Manager, Taint
from gpu_constructs.compute.base import GpuCompute, NodeGroup, PlatformFacts, compute_of
from gpu_constructs.verify import FAIL, PASS, JobSettings, expect
from tests.support import fake_kube, order, placement, render

POOL = "cloud.google.com/gke-nodepool"
ACCELERATOR = ("cloud.google.com/gke-accelerator", "nvidia-l4")


class FakeCloudGpuCompute(Construct):
    """A platform no module of the library knows: only the interface ties it to the readers."""

    def __init__(self, scope: Construct, id: str, *, gpu_taints: tuple[Taint, ...] = (GPU_TAINT,)) -> None:
        super().__init__(scope, id)
        self._gpu_taints = gpu_taints
        self._cluster = GpuCluster(
            name=id,
            access=KubeAccess(config_path="${path.root}/kubeconfig.yaml"),
            gpu_node_selector=dict([ACCELERATOR]),
            gpu_taint=GPU_TAINT,
            gpu_toleration_taint=GPU_TAINT,
            runtime_class=None,
            driver=Manager.IMAGE,
            toolkit=Manager.IMAGE,
        )

    @property
    def cluster(self) -> GpuCluster:
        return self._cluster

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        return (
            NodeGroup(
                "system pool",
                members={POOL: "system"},
                instance_types=("e2-standard-4",),
                gpus_per_node=0,
                min_nodes=1,
                max_nodes=3,
                system=True,
            ),
            NodeGroup(
                "gpu pool",
                members={POOL: "gpu"},
                labels=dict([ACCELERATOR]),
                taints=self._gpu_taints,
                instance_types=("g2-standard-24",),
                gpu=True,
                gpus_per_node=2,
                gpu_model="NVIDIA L4",
                min_nodes=1,
                max_nodes=4,
            ),
        )

    @property
    def platform(self) -> PlatformFacts:
        return PlatformFacts(
            kubernetes_version="1.35",
            driver=self.cluster.driver,
            toolkit=self.cluster.toolkit,
            device_plugin=Manager.STACK,
            storage_classes=frozenset({"standard", "standard-rwo"}),
            default_storage_class="standard-rwo",
        )


def fake_cloud_stack(**compute: Any) -> TerraformStack:
    """A stack on the fake platform: a GPU Job placed by the contract and a claim on the default class."""
    stack = TerraformStack(cdktf.Testing.app(), "fake-cloud")
    made = FakeCloudGpuCompute(stack, "compute", **compute)
    HelmProvider(stack, "helm", kubernetes=made.cluster.access.helm_kubernetes())
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "smoke", "namespace": "default"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    **made.cluster.gpu_pod_spec(),
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "cuda",
                            "image": "nvcr.io/nvidia/cuda:13.1.1-base-ubuntu24.04",
                            "command": ["nvidia-smi"],
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ],
                }
            },
        },
    }
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    helm_releases.manifests_release(
        stack, "smoke", cluster=made.cluster, name="smoke", namespace="default", manifests=[job, claim]
    )
    return stack


def test_every_stack_has_a_gpu_compute_with_consistent_facts():
    for instance in main.INSTANCES:
        compute = compute_of(instance.build(cdktf.Testing.app()))
        assert isinstance(compute, GpuCompute), instance.stack
        groups = compute.node_groups
        assert len({g.name for g in groups}) == len(groups), instance.stack
        assert any(g.gpu for g in groups), instance.stack
        for group in groups:
            assert group.gpu == (group.gpus_per_node != 0), (instance.stack, group.name)
            assert group.max_nodes is None or group.min_nodes <= group.max_nodes
            assert group.scales_to_zero <= (group.min_nodes == 0), (instance.stack, group.name)
        gpu_labels = {**compute.cluster.gpu_node_selector, **compute.cluster.node_pool_labels}
        for group in (g for g in groups if g.gpu):
            # a GPU pod of the contract lands on every GPU group
            assert {**group.members, **group.labels}.items() >= gpu_labels.items(), group.name
            assert compute.cluster.gpu_taint is None or compute.cluster.gpu_taint in group.taints
        facts = compute.platform
        assert (facts.driver, facts.toolkit) == (compute.cluster.driver, compute.cluster.toolkit)
        with pytest.raises(dataclasses.FrozenInstanceError):
            facts.kubernetes_version = "1.0"  # type: ignore[misc]


def test_a_new_platforms_expectation_comes_from_its_compute():
    expected = expect.from_stack(fake_cloud_stack())
    assert [g.name for g in expected.node_groups] == ["system pool", "gpu pool"]
    assert expected.gpu_slots_per_node == 2
    assert not expected.scales_from_zero
    assert [(r.name, r.chart) for r in expected.releases] == [("smoke", "manifests")]


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[tuple[fake_kube.FakeKube, client.ApiClient]] = []

    def start(fake: fake_kube.FakeKube) -> client.ApiClient:
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


def test_a_new_platform_is_verified_through_its_compute(serve):
    expected = expect.from_stack(fake_cloud_stack())
    results = {
        r.check: r for r in verify.run(serve(fake_kube.healthy(expected)), expected, JobSettings(5, 0.01))
    }
    assert [r for r in results.values() if r.result == FAIL] == []
    assert results["node group gpu pool"].result == PASS
    assert "nvidia.com/gpu=true:NoSchedule" in results["node group gpu pool"].evidence
    assert results["gpu job"].result == PASS


def test_a_new_platform_is_placed_and_ordered_through_its_compute(helm, upstream):
    stack = render.render_built("fake-cloud", fake_cloud_stack(), helm)
    assert stack.kube_version == "1.35"
    assert placement.placement_problems(stack) == []
    assert order.order_problems(stack) == []
    # the claim without a class relies on the platform's default, which the compute states
    without_default = dataclasses.replace(
        stack, platform=dataclasses.replace(stack.platform, default_storage_class=None)
    )
    assert any(
        "PersistentVolumeClaim data needs storage_class None" in p
        for p in order.order_problems(without_default)
    )
    # a GPU pool tainted beyond what the contract tolerates leaves the Job nowhere to run
    dedicated = render.render_built(
        "fake-cloud", fake_cloud_stack(gpu_taints=(GPU_TAINT, Taint("dedicated", "x"))), helm
    )
    assert any("Job smoke fits no node group" in p for p in placement.placement_problems(dedicated))


def test_the_readers_name_no_platform():
    """Verification, rendering, placement and release order know platforms only through GpuCompute."""
    from gpu_constructs import compute

    platforms = [n for n in compute.__all__ if n.endswith(("GpuCompute", "Props")) and n != "GpuCompute"]
    assert "LkeGpuCompute" in platforms
    readers = [
        inspect.getsource(expect),
        inspect.getsource(render),
        *(inspect.getsource(f) for f in (placement.node_groups, placement.from_compute)),
        *(inspect.getsource(f) for f in (order.platform_of, order.order_problems)),
    ]
    for source in readers:
        assert [name for name in platforms if name in source] == []
        assert ".props" not in source
