from __future__ import annotations

import pytest

from gpu_constructs.cluster import K3S_CONTAINERD, Manager
from gpu_constructs.errors import ConfigError
from gpu_constructs.jupyterhub import JupyterHub, JupyterHubProps
from tests.conftest import make_cluster, release_values, resources
from tests.validators import validate_values


def hub_values(synth, cluster=None, **overrides):
    cluster = cluster or make_cluster(
        driver=Manager.OPERATOR, toolkit=Manager.OPERATOR, containerd=K3S_CONTAINERD, gpu_capacity=8
    )
    fields = {
        "cluster": cluster,
        "host": "jupyter.example.com",
        "home_storage_class": "nfs-client",
        "scratch_storage_class": "fast-scratch",
    }
    fields.update(overrides)
    synthesized = synth(lambda stack: JupyterHub(stack, "hub", props=JupyterHubProps(**fields)))
    (release,) = resources(synthesized, "helm_release").values()
    assert (release["chart"], release["version"]) == ("jupyterhub", "4.4.0")
    return release_values(release)


def test_profiles_with_0_1_2_4_gpus_placed_by_the_contract(synth):
    profiles = hub_values(synth)["singleuser"]["profileList"]
    assert [p["slug"] for p in profiles] == ["gpu-0", "gpu-1", "gpu-2", "gpu-4"]
    assert profiles[0]["default"] is True and "kubespawner_override" not in profiles[0]
    four = profiles[3]["kubespawner_override"]
    assert four["extra_resource_limits"] == {"nvidia.com/gpu": "4"}
    assert four["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert four["node_selector"] == {"nvidia.com/gpu": "true"}
    assert four["extra_pod_config"] == {"runtimeClassName": "nvidia"}


def test_ngc_images_nfs_home_scratch_and_culling(synth):
    values = hub_values(synth)
    choices = values["singleuser"]["profileList"][1]["profile_options"]["image"]["choices"]
    assert choices["pytorch"]["kubespawner_override"]["image"].startswith("nvcr.io/nvidia/pytorch:")
    assert choices["tensorflow"]["kubespawner_override"]["image"].startswith("nvcr.io/nvidia/tensorflow:")
    storage = values["singleuser"]["storage"]
    assert storage["dynamic"]["storageClass"] == "nfs-client"
    scratch = storage["extraVolumes"][0]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert scratch["storageClassName"] == "fast-scratch"
    assert storage["extraVolumeMounts"] == [{"name": "scratch", "mountPath": "/scratch"}]
    assert values["cull"] == {"enabled": True, "timeout": 3600, "every": 300}


def test_values_match_the_chart_schema(synth, upstream):
    validate_values(
        hub_values(synth),
        upstream / "jupyterhub" / "values.schema.yaml",
        upstream / "jupyterhub" / "values.yaml",
    )


def test_a_profile_larger_than_the_cluster_fails(synth):
    with pytest.raises(
        ConfigError, match=r"'gpu_profiles' is 1: 1 pods x 4 GPU need 4 GPU slots but cluster 'test' has 2"
    ):
        hub_values(synth, cluster=make_cluster(gpu_capacity=2))


def test_a_cpu_profile_is_required():
    with pytest.raises(ConfigError, match=r"'gpu_profiles' is \(1, 2\): keep a 0-GPU profile"):
        JupyterHubProps(
            cluster=make_cluster(),
            host="h.example.com",
            home_storage_class="a",
            scratch_storage_class="b",
            gpu_profiles=(1, 2),
        )
