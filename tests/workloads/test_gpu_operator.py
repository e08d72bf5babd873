from __future__ import annotations

import re

import pytest
import yaml

from gpu_constructs.cluster import K3S_CONTAINERD, GpuSharing, Manager, MigStrategy, k3s_containerd
from gpu_constructs.errors import ConfigError
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
from gpu_constructs.helm import ValuesLayers
from tests.conftest import ROOT, make_cluster, release_values, resources
from tests.support.validators import unknown_keys


def operator_values(synth, cluster, **props):
    synthesized = synth(
        lambda stack: GpuOperator(stack, "gpu", props=GpuOperatorProps(cluster=cluster, **props))
    )
    (release,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == "gpu-operator"]
    assert (release["chart"], release["version"]) == ("gpu-operator", "v26.7.0")
    return release_values(release)


def test_host_installed_driver_and_toolkit_are_left_alone(synth):
    values = operator_values(synth, make_cluster())
    assert values["driver"] == {"enabled": False}
    assert values["toolkit"] == {"enabled": False}
    assert values["operator"]["runtimeClass"] == "nvidia"
    assert values["daemonsets"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]


def test_operator_managed_toolkit_on_k3s_gets_k3s_containerd_paths(synth):
    cluster = make_cluster(driver=Manager.OPERATOR, toolkit=Manager.OPERATOR, containerd=K3S_CONTAINERD)
    values = operator_values(synth, cluster)
    assert values["driver"]["enabled"] is True
    assert values["toolkit"]["enabled"] is True
    assert {e["name"]: e["value"] for e in values["toolkit"]["env"]} == {
        # k3s with containerd 2 renders config-v3.toml.tmpl and ignores config.toml.tmpl.
        "CONTAINERD_CONFIG": "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl",
        "CONTAINERD_SOCKET": "/run/k3s/containerd/containerd.sock",
        "CONTAINERD_RUNTIME_CLASS": "nvidia",
        # The template starts from k3s' rendered config, not from an empty file.
        "RUNTIME_CONFIG_SOURCE": "file=/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    }


@pytest.mark.parametrize(
    ("version", "template"),
    [
        ("v1.35.5+k3s1", "config-v3.toml.tmpl"),
        ("v1.33.4+k3s1", "config-v3.toml.tmpl"),
        ("v1.32.2+k3s1", "config-v3.toml.tmpl"),
        ("v1.32.1+k3s1", "config.toml.tmpl"),
        ("v1.31.6+k3s1", "config-v3.toml.tmpl"),
        ("v1.31.5+k3s1", "config.toml.tmpl"),
        ("v1.29.0+k3s1", "config.toml.tmpl"),
    ],
)
def test_the_k3s_template_follows_the_containerd_major_version(version, template):
    assert k3s_containerd(version).config.endswith("/" + template)


def test_every_k3s_stack_points_the_toolkit_at_its_k3s_template():
    """The contract of each k3s-based compute carries the template its k3s version renders."""
    from gpu_constructs import versions

    assert k3s_containerd(versions.K3S.version) == K3S_CONTAINERD
    assert k3s_containerd(versions.K3S_PROXMOX.version) == K3S_CONTAINERD


def test_a_bad_k3s_version_fails():
    with pytest.raises(ConfigError, match=r"'k3s_version' is '1.35': give a pinned version"):
        k3s_containerd("1.35")


def test_time_slicing_and_mig_go_into_the_device_plugin_config(synth):
    cluster = make_cluster(sharing=GpuSharing(time_slicing_replicas=4, mig_strategy=MigStrategy.SINGLE))
    values = operator_values(synth, cluster)
    config = values["devicePlugin"]["config"]
    assert (config["create"], config["default"]) == (True, "default")
    assert re.fullmatch(r"gpu-sharing-[0-9a-f]{10}", config["name"]), config["name"]
    assert yaml.safe_load(config["data"]["default"]) == {
        "version": "v1",
        "flags": {"migStrategy": "single"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}},
    }
    assert values["mig"] == {"strategy": "single"}
    assert values["migManager"] == {"enabled": True}


def test_no_time_slicing_by_default(synth):
    config = operator_values(synth, make_cluster())["devicePlugin"]["config"]
    assert "sharing" not in yaml.safe_load(config["data"]["default"])


def test_monitoring_switches(synth):
    on = operator_values(synth, make_cluster(), service_monitor=True)["dcgmExporter"]
    assert on == {"enabled": True, "serviceMonitor": {"enabled": True}}
    off = operator_values(synth, make_cluster(), dcgm_exporter=False, service_monitor=True)["dcgmExporter"]
    assert off == {"enabled": False, "serviceMonitor": {"enabled": False}}


def test_values_files_layer_under_the_contract(synth, tmp_path):
    (tmp_path / "gpu-operator").mkdir()
    (tmp_path / "gpu-operator" / "base.yaml").write_text(
        "driver:\n  enabled: true\nnfd:\n  nodefeaturerules: true\n"
    )
    values = operator_values(synth, make_cluster(), values=ValuesLayers("production", tmp_path))
    assert values["driver"] == {"enabled": False}  # the contract wins: the host owns the driver
    assert values["nfd"] == {"enabled": True, "nodefeaturerules": True}


def test_every_key_exists_in_the_chart_defaults(synth, upstream):
    defaults = yaml.safe_load((upstream / "gpu-operator" / "values.yaml").read_text())
    cluster = make_cluster(
        driver=Manager.OPERATOR, toolkit=Manager.OPERATOR, sharing=GpuSharing(2, MigStrategy.MIXED)
    )
    values = operator_values(synth, cluster, values=ValuesLayers("production", ROOT / "helm-values"))
    assert unknown_keys(values, defaults) == []


def test_a_mistyped_key_is_caught(upstream):
    defaults = yaml.safe_load((upstream / "gpu-operator" / "values.yaml").read_text())
    assert unknown_keys({"devicePlugin": {"enabeld": True}}, defaults) == ["devicePlugin.enabeld"]


def _cluster_policy(synth, cluster):
    from tests.support.render import render_release

    synthesized = synth(lambda stack: GpuOperator(stack, "gpu", props=GpuOperatorProps(cluster=cluster)))
    (policy,) = [o for o in render_release(synthesized, "gpu-operator") if o["kind"] == "ClusterPolicy"]
    return policy["spec"]


@pytest.mark.parametrize(
    ("strategy", "manager"),
    [(MigStrategy.NONE, False), (MigStrategy.SINGLE, True), (MigStrategy.MIXED, True)],
)
def test_the_rendered_cluster_policy_carries_the_stacks_mig_strategy(synth, helm, strategy, manager):
    """The chart defaults to mig.strategy single with the MIG manager on: without MIG the
    ClusterPolicy must say none, or GFD and the device plugin look for MIG devices."""
    spec = _cluster_policy(synth, make_cluster(sharing=GpuSharing(mig_strategy=strategy)))
    assert spec["mig"] == {"strategy": strategy.value}
    assert spec["migManager"]["enabled"] is manager


def test_mig_profiles_are_applied_by_labelling_mig_capable_nodes(synth, upstream):
    """MIG manager partitions only as nvidia.com/mig.config says, and the operator sets only
    all-disabled there: the stack labels MIG-capable nodes with its configuration."""
    from tests.conftest import manifests_of
    from tests.support.validators import validate_manifest

    cluster = make_cluster(sharing=GpuSharing(mig_strategy=MigStrategy.SINGLE))
    synthesized = synth(
        lambda stack: GpuOperator(
            stack, "gpu", props=GpuOperatorProps(cluster=cluster, mig_config="all-1g.10gb")
        )
    )
    (labeler,) = [
        r for r in resources(synthesized, "helm_release").values() if r["name"] == "mig-config-labeler"
    ]
    objects = manifests_of(labeler)
    for obj in objects:
        validate_manifest(obj, upstream)
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == [
        "kubectl",
        "label",
        "nodes",
        "--selector",
        "nvidia.com/mig.capable=true",
        "nvidia.com/mig.config=all-1g.10gb",
        "--overwrite",
    ]
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"]}]
    none = synth(lambda stack: GpuOperator(stack, "gpu", props=GpuOperatorProps(cluster=make_cluster())))
    assert [r["name"] for r in resources(none, "helm_release").values()] == ["gpu-operator"]


def test_a_mig_config_that_is_no_label_value_fails():
    with pytest.raises(ConfigError, match=r"'mig_config' is 'all 1g': use a MIG manager configuration name"):
        GpuOperatorProps(cluster=make_cluster(), mig_config="all 1g")


def test_a_driver_the_operator_installs_is_upgraded_evicting_every_gpu_pod(synth, helm):
    """The operator evicts the GPU pods before it reloads the driver; bare pods (JupyterHub's
    servers) and pods with an emptyDir are deleted too, within 300 s, instead of leaving the node
    cordoned in upgrade-failed (tests/lifecycle/test_driver_upgrade.py)."""
    spec = _cluster_policy(synth, make_cluster(driver=Manager.OPERATOR, toolkit=Manager.OPERATOR))
    policy = spec["driver"]["upgradePolicy"]
    assert (policy["autoUpgrade"], policy["maxParallelUpgrades"]) == (True, 1)
    assert policy["podDeletion"] == {"force": True, "deleteEmptyDir": True, "timeoutSeconds": 300}
    assert policy["drain"]["enable"] is False
    host = operator_values(synth, make_cluster())["driver"]
    assert host == {"enabled": False}, "no upgrade policy where the host owns the driver"
