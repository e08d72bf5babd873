import pytest

from gpu_constructs.cluster import GpuSharing, KubeAccess, Taint
from gpu_constructs.errors import ConfigError
from tests.conftest import make_cluster


def test_gpu_pod_spec_carries_selector_toleration_and_runtime_class():
    spec = make_cluster(node_pool_labels={"nodepool": "gpu-inference"}).gpu_pod_spec()
    assert spec == {
        "nodeSelector": {"nodepool": "gpu-inference", "nvidia.com/gpu": "true"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
        ],
        "runtimeClassName": "nvidia",
    }


def test_no_runtime_class_where_nvidia_is_the_default_runtime():
    assert "runtimeClassName" not in make_cluster(runtime_class=None).gpu_pod_spec()


def test_node_affinity_requires_every_gpu_label():
    affinity = make_cluster().gpu_node_affinity()
    terms = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu", "operator": "In", "values": ["true"]}]}]


def test_gpu_demand_beyond_capacity_names_the_field_and_the_fix():
    with pytest.raises(
        ConfigError, match=r"'replicas' is 3: 3 pods x 1 GPU need 3 GPU slots but cluster 'test' has 1"
    ):
        make_cluster(gpu_capacity=1).check_gpu_demand("replicas", 3, 1)


def test_gpu_demand_unchecked_where_capacity_is_unknown():
    make_cluster(gpu_capacity=None).check_gpu_demand("replicas", 100, 4)


def test_taint_effect_is_checked():
    with pytest.raises(ConfigError, match=r"'taint.effect' is 'NoSchedul': use NoSchedule"):
        Taint("nvidia.com/gpu", "true", "NoSchedul")


def test_time_slicing_replicas_bounds():
    with pytest.raises(ConfigError, match=r"'time_slicing_replicas' is 0"):
        GpuSharing(time_slicing_replicas=0)


def test_kube_access_needs_exactly_one_way_in():
    with pytest.raises(ConfigError, match="give either config_path"):
        KubeAccess()
    with pytest.raises(ConfigError, match="give either config_path"):
        KubeAccess(config_path="/k", host="https://x")


def test_kube_access_helm_block_for_an_api_endpoint():
    access = KubeAccess(
        host="https://eks",
        cluster_ca_certificate="CA",
        exec_api_version="v1",
        exec_command="aws",
        exec_args=("eks",),
    )
    assert access.helm_kubernetes() == {
        "host": "https://eks",
        "cluster_ca_certificate": "CA",
        "exec": {"api_version": "v1", "command": "aws", "args": ["eks"]},
    }
