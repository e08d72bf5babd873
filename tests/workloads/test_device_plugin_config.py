"""Gate: on every stack, a change of the GPU sharing settings reaches the running device plugins.

No device plugin re-reads its configuration while it runs: k8s-device-plugin v0.20.0 restarts its
plugins on SIGHUP or when the kubelet's socket is re-created (cmd/nvidia-device-plugin/main.go), and
the config-manager sidecar the GPU Operator runs beside it signals it only when the node's
``nvidia.com/device-plugin.config`` label changes, never when the files of the ConfigMap do
(cmd/config-manager/main.go, continuouslySyncConfigChanges). Until its pod is replaced, a plugin keeps
advertising the old number of ``nvidia.com/gpu`` per GPU. So a change must change the pod template:

- the standalone chart (nvidia-device-plugin 0.20.0) puts ``checksum/config``, a hash of its
  ConfigMap, on the pod template (templates/_helpers.tpl);
- the GPU Operator rewrites its DaemonSets only from the ClusterPolicy and watches no ConfigMap
  (gpu-operator v26.7.0 controllers/clusterpolicy_controller.go SetupWithManager: ClusterPolicy,
  nodes, its DaemonSets); the ConfigMap's name is what reaches the pod template, as the volume of the
  plugin's and GFD's pods (controllers/object_controls.go handleDevicePluginConfig).
"""

from __future__ import annotations

import json
from typing import Any

import cdktf
import pytest
import yaml

from tests.conftest import site_instance
from tests.support import render

STACKS = ("single-node", "proxmox-ha", "k3d-poc", "eks-karpenter", "lke")
PLUGIN_CHARTS = ("gpu-operator", "nvidia-device-plugin")


def _plugin(stack: str, replicas: int) -> tuple[str, dict[str, Any], str]:
    """(chart, what its controller rolls the plugin pods on, the config the plugin reads) of the
    stack built with ``time_slicing_replicas``."""
    instance = site_instance(stack, stack, {"time_slicing_replicas": replicas})
    synthesized = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    releases = [
        body for body in synthesized["resource"]["helm_release"].values() if body["chart"] in PLUGIN_CHARTS
    ]
    assert len(releases) == 1, f"{stack}: {[r['chart'] for r in releases]}"
    (release,) = releases
    objects = render.render_release(synthesized, release["name"])
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    if release["chart"] == "gpu-operator":
        (policy,) = [o for o in objects if o["kind"] == "ClusterPolicy"]
        config = policy["spec"]["devicePlugin"]["config"]
        data = config_maps[config["name"]][config["default"]]
        return release["chart"], {"devicePlugin.config.name": config["name"]}, data
    (daemonset,) = [
        o
        for o in objects
        if o["kind"] == "DaemonSet"
        and any(c["name"] == "nvidia-device-plugin-ctr" for c in o["spec"]["template"]["spec"]["containers"])
    ]
    (data,) = [d["default"] for d in config_maps.values() if "default" in d]
    return release["chart"], daemonset["spec"]["template"], data


@pytest.mark.parametrize("stack", STACKS)
def test_a_time_slicing_change_replaces_the_device_plugin_pods(helm, upstream, stack):
    chart, before, config_before = _plugin(stack, 1)
    _, after, config_after = _plugin(stack, 2)
    sharing = yaml.safe_load(config_after)["sharing"]["timeSlicing"]["resources"]
    assert sharing == [{"name": "nvidia.com/gpu", "replicas": 2}], config_after
    assert "sharing" not in yaml.safe_load(config_before)
    assert before != after, (
        f"{stack} ({chart}): the new time-slicing config is written, but nothing the controller "
        "rolls the device plugin pods on changes: the running plugins keep the old one"
    )
