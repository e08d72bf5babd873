"""An existing cluster's contract: each platform's GPU node facts, what must be given where the
platform fixes nothing, and releases into a cluster the stack does not create."""

from __future__ import annotations

import pytest

from gpu_constructs.cluster import GPU_TAINT, K3S_CONTAINERD, Manager, Taint
from gpu_constructs.errors import ConfigError
from gpu_constructs.existing import existing_cluster
from gpu_constructs.gpu_operator import GpuOperator, GpuOperatorProps
from tests.conftest import release_values, resources

KUBECONFIG = "~/.kube/config"


def cluster(platform: str, **fields):
    return existing_cluster(name="team", kubeconfig=KUBECONFIG, context="prod", platform=platform, **fields)


@pytest.mark.parametrize(
    ("platform", "fields", "selector", "taint", "toleration", "runtime_class", "driver"),
    [
        (
            "eks",
            {"gpu_node_selector": {"eks.amazonaws.com/nodegroup": "gpu"}},
            {"eks.amazonaws.com/nodegroup": "gpu"},
            None,
            GPU_TAINT,
            None,
            Manager.IMAGE,
        ),
        (
            "gke",
            {"accelerator": "nvidia-l4"},
            {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            Taint("nvidia.com/gpu", "present"),
            Taint("nvidia.com/gpu", "present"),
            None,
            Manager.IMAGE,
        ),
        (
            "aks",
            {},
            {"kubernetes.azure.com/accelerator": "nvidia"},
            Taint("sku", "gpu"),
            Taint("sku", "gpu"),
            None,
            Manager.IMAGE,
        ),
        ("k3s", {}, {"nvidia.com/gpu": "true"}, None, GPU_TAINT, "nvidia", Manager.HOST),
        (
            "generic",
            {"gpu_node_selector": {"gpu": "yes"}, "driver": Manager.OPERATOR, "toolkit": Manager.OPERATOR},
            {"gpu": "yes"},
            None,
            GPU_TAINT,
            None,
            Manager.OPERATOR,
        ),
    ],
)
def test_each_platform_gives_its_gpu_node_facts(
    platform, fields, selector, taint, toleration, runtime_class, driver
):
    made = cluster(platform, **fields)
    assert dict(made.gpu_node_selector) == selector
    assert made.gpu_taint == taint and made.gpu_toleration_taint == toleration
    assert made.runtime_class == runtime_class
    assert made.driver is driver and made.toolkit is driver
    assert made.containerd == (K3S_CONTAINERD if platform == "k3s" else None)
    assert made.access.helm_kubernetes() == {"config_path": KUBECONFIG, "config_context": "prod"}
    assert (made.ready, made.identity, made.gpu_capacity) == ((), (), None)


def test_every_default_can_be_overridden():
    made = cluster(
        "aks",
        gpu_taint=None,
        driver=Manager.OPERATOR,
        toolkit=Manager.OPERATOR,
        gpus_per_node=2,
        gpu_nodes=3,
    )
    assert made.gpu_taint is None and made.gpu_toleration_taint == GPU_TAINT
    assert (made.driver, made.toolkit) == (Manager.OPERATOR, Manager.OPERATOR)
    assert (made.gpu_capacity, made.gpus_per_node) == (6, 2)


def test_without_a_context_the_kubeconfig_current_one_is_used():
    made = existing_cluster(name="team", kubeconfig="/etc/kube/config", platform="k3s")
    assert made.access.helm_kubernetes() == {"config_path": "/etc/kube/config"}


@pytest.mark.parametrize(
    ("platform", "fields", "message"),
    [
        ("ek", {}, r"^'platform' is 'ek': did you mean 'eks'\? use one of eks, gke, aks, k3s, generic$"),
        (
            "eks",
            {},
            r"^'gpu_node_selector' is None: eks puts no label on GPU nodes .* give "
            r"gpu_node_selector=\{'eks.amazonaws.com/nodegroup': '<the GPU node group>'\}$",
        ),
        ("gke", {}, r"^'gpu_node_selector' is None: gke .* or accelerator='nvidia-l4'$"),
        ("aks", {"accelerator": "nvidia-l4"}, r"^'accelerator' is 'nvidia-l4': it selects GKE nodes"),
        (
            "generic",
            {"gpu_node_selector": {"gpu": "yes"}},
            r"^'driver' is None: a generic cluster says nothing about who installs the NVIDIA driver; "
            r"give driver=Manager.HOST",
        ),
        (
            "generic",
            {"gpu_node_selector": {"gpu": "yes"}, "driver": Manager.IMAGE},
            r"^'toolkit' is None: .*NVIDIA toolkit",
        ),
        ("k3s", {"driver": Manager.STACK}, r"^'driver' is <Manager.STACK: 'stack'>: STACK is for the device"),
        ("k3s", {"driver": "operator"}, r"^'driver' is 'operator': give a Manager"),
        ("k3s", {"gpus_per_node": 0}, r"^'gpus_per_node' is 0: use from 1 to 1000$"),
        (
            "generic",
            {"gpu_node_selector": {"nvidia.com/gpu present": "true"}},
            r"^'gpu_node_selector' is \{'nvidia.com/gpu present': 'true'\}: give label keys as",
        ),
        (
            "generic",
            {"gpu_node_selector": {"gpu": "yes please"}},
            r"^\"gpu_node_selector\['gpu'\]\" is 'yes please': a label value is at most 63",
        ),
        (
            "aks",
            {"gpu_toleration_taint": GPU_TAINT},
            r"^'gpu_toleration_taint' is 'nvidia.com/gpu=true:NoSchedule': GPU pods must tolerate the "
            r"nodes' taint sku=gpu:NoSchedule",
        ),
    ],
)
def test_a_fact_that_cannot_work_fails_in_one_line(platform, fields, message):
    with pytest.raises(ConfigError, match=message) as caught:
        cluster(platform, **fields)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("kubeconfig", "fix"),
    [("kube.yaml", "give an absolute path or one under ~"), ("", "give the kubeconfig file's path")],
)
def test_a_kubeconfig_the_providers_cannot_find_fails(kubeconfig, fix):
    with pytest.raises(ConfigError, match=rf"^'kubeconfig' is '{kubeconfig}': {fix}"):
        existing_cluster(name="team", kubeconfig=kubeconfig, platform="k3s")


def test_a_release_into_an_existing_cluster_depends_on_nothing_and_is_never_replaced(synth):
    made = cluster("gke", accelerator="nvidia-l4")

    synthesized = synth(
        lambda stack: GpuOperator(stack, "gpu-operator", props=GpuOperatorProps(cluster=made))
    )
    (release,) = resources(synthesized, "helm_release").values()
    assert "depends_on" not in release and "lifecycle" not in release
    values = release_values(release)
    # Google's driver and containerd setup stay; the operator's daemonsets tolerate GKE's taint
    assert values["driver"]["enabled"] is False and values["toolkit"]["enabled"] is False
    assert values["daemonsets"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    ]


def _cell(value, given: str = "give it") -> str:
    if value is None:
        return given
    if isinstance(value, Manager):
        return f"`{value.name}`"
    if isinstance(value, Taint):
        return f"`{value}`"
    if isinstance(value, dict):
        return ", ".join(f"`{k}={v}`" for k, v in sorted(value.items()))
    return f"`{value}`"


def test_the_platform_table_of_the_documentation_is_the_code():
    import re

    from gpu_constructs.existing import PLATFORMS
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "own-cluster.md").read_text()
    rows = {
        name: [cell.strip() for cell in cells.split("|")]
        for name, cells in re.findall(r"^\| `(\w+)` +\|(.*)\|$", text, re.M)
        if name in PLATFORMS
    }
    assert sorted(rows) == sorted(PLATFORMS)
    for name, defaults in PLATFORMS.items():
        selector = _cell(defaults.gpu_node_selector)
        if name == "gke":
            selector = "give it (or `accelerator`)"
        expected = [
            selector,
            _cell(defaults.gpu_taint, "none"),
            _cell(defaults.driver),
            _cell(defaults.toolkit),
            _cell(defaults.runtime_class, "none"),
        ]
        assert rows[name] == expected, name
