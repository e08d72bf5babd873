"""k3d-poc: the generated k3d command line, node roles, the Kubernetes layer, bad input, the script."""

from __future__ import annotations

import json
from pathlib import Path

import cdktf
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from environments import Instance
from gpu_constructs.compute.k3d import K3dProps
from gpu_constructs.errors import ConfigError
from tests.conftest import by_kind, manifests_of, release_values, resources
from tests.test_scripts import Host
from tests.validators import validate_manifest

GPU_TOLERATION = {
    "key": "node-role.kubernetes.io/gpu",
    "operator": "Equal",
    "value": "true",
    "effect": "NoSchedule",
}


def synth(**overrides) -> dict:
    stack = Instance("k3d-poc", "k3d-poc", overrides).build(cdktf.Testing.app())
    return json.loads(cdktf.Testing.synth(stack))


@pytest.fixture(scope="module")
def stack_json() -> dict:
    return synth()


def releases(stack_json):
    return {r["name"]: r for r in resources(stack_json, "helm_release").values()}


def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_k3d_command_line_creates_server_and_three_agents_with_taints_at_bootstrap():
    assert K3dProps(kubeconfig_path="k").create_args() == [
        "--servers", "1", "--agents", "3", "--image", "k3s-cuda:v1.35.5-k3s1", "--gpus", "all",
        "--api-port", "6550", "--kubeconfig-update-default=false", "--kubeconfig-switch-context=false", "--wait",
        "--k3s-arg", "--node-taint=node-role.kubernetes.io/infra=true:NoSchedule@agent:1",
        "--k3s-arg", "--node-taint=node-role.kubernetes.io/gpu=true:NoSchedule@agent:2",
    ]  # fmt: skip


def test_every_agent_gets_its_role_label_and_infra_and_gpu_their_taints():
    props = K3dProps(kubeconfig_path="k")
    assert props.node_labels() == [
        "k3d-gpu-poc-agent-0=node-role.kubernetes.io/app=true",
        "k3d-gpu-poc-agent-1=node-role.kubernetes.io/infra=true",
        "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true",
    ]
    assert props.node_taints() == [
        "k3d-gpu-poc-agent-1=node-role.kubernetes.io/infra=true:NoSchedule",
        "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true:NoSchedule",
    ]


def test_cluster_is_created_and_deleted_by_terraform_data(stack_json):
    (cluster,) = resources(stack_json, "terraform_data").values()
    create, destroy = cluster["provisioner"]
    assert create["local-exec"]["environment"]["CLUSTER"] == "gpu-poc"
    assert "k3d cluster create" in create["local-exec"]["command"]
    assert destroy["local-exec"] == {"command": "k3d cluster delete ${self.input.name}", "when": "destroy"}
    assert set(cluster["triggers_replace"]) == {"definition"}
    changed = synth(agents=("app", "gpu", "gpu"))
    (other,) = resources(changed, "terraform_data").values()
    assert other["triggers_replace"] != cluster["triggers_replace"]


def test_device_plugin_runs_with_the_nvidia_runtime_on_the_gpu_agent(stack_json):
    values = release_values(releases(stack_json)["nvidia-device-plugin"])
    assert values["runtimeClassName"] == "nvidia"
    assert values["tolerations"] == [GPU_TOLERATION]
    assert values["nodeSelector"] == {"node-role.kubernetes.io/gpu": "true"}


def test_smoke_test_job_requests_one_gpu_through_the_contract(stack_json, upstream):
    release = releases(stack_json)["gpu-smoke-test"]
    (job,) = by_kind(manifests_of(release), "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert pod["containers"][0]["command"] == ["nvidia-smi"]
    assert pod["tolerations"] == [GPU_TOLERATION] and pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/gpu": "true"}
    assert any("nvidia-device-plugin" in dep for dep in release["depends_on"])
    validate_manifest(job, upstream)


def test_no_argocd_by_default_and_on_the_infra_agent_when_asked(stack_json):
    assert "argo-cd" not in releases(stack_json)
    values = release_values(releases(synth(argocd=True))["argo-cd"])
    assert values["global"]["nodeSelector"] == {"node-role.kubernetes.io/infra": "true"}
    assert values["global"]["tolerations"][0]["key"] == "node-role.kubernetes.io/infra"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agents": ("app", "storage")}, r"'agents' is 'storage': use one of app, infra, gpu"),
        ({"agents": ("app", "infra")}, r"'gpu agents' is 0: the GPU smoke test needs a 'gpu' agent"),
        ({"agents": ("app", "gpu"), "argocd": True}, r"'argocd' is True: Argo CD runs on the infra agent"),
        ({"image": "k3s-cuda:latest"}, r"'image' is 'k3s-cuda:latest': pin the k3s CUDA image"),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        synth(**overrides)


def test_cpu_only_cluster_without_smoke_test_is_allowed():
    cpu_only = synth(agents=("app", "infra"), smoke_test=False)
    assert "nvidia-device-plugin" not in releases(cpu_only)


# --- k3d-cluster.sh with stubbed docker, k3d, kubectl, nvidia-smi ------------------------------------
def k3d_host(tmp_path: Path, *, docker_gpu: bool = True) -> Host:
    host = Host(tmp_path)
    runtimes = '{"nvidia":{},"runc":{}}' if docker_gpu else '{"runc":{}}'
    host.stub("docker", f"echo '{runtimes}'")
    host.stub("nvidia-smi", "true")
    host.stub(
        "k3d",
        '[ "$1 $2" = "cluster list" ] && exit 1; [ "$1 $2" = "kubeconfig get" ] && echo "apiVersion: v1"; exit 0',
    )
    host.stub(
        "kubectl",
        'case "$*" in\n'
        '  "get nodes -l node-role.kubernetes.io/gpu=true -o name") echo node/k3d-gpu-poc-agent-2 ;;\n'
        "  get\\ node\\ k3d-gpu-poc-agent-2*) printf 'node-role.kubernetes.io/gpu=true:NoSchedule\\n' ;;\n"
        "esac",
    )
    return host


ENV = {
    "CLUSTER": "gpu-poc",
    "CREATE_ARGS": "--servers 1 --agents 1",
    "NODE_LABELS": "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true",
    "NODE_TAINTS": "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true:NoSchedule",
}


def test_script_creates_labels_and_verifies(tmp_path):
    host = k3d_host(tmp_path)
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "kube.yaml"), **ENV)
    assert result.returncode == 0, result.stderr
    assert "k3d cluster create gpu-poc --servers 1 --agents 1" in host.calls("k3d")
    assert (
        "kubectl label node k3d-gpu-poc-agent-2 node-role.kubernetes.io/gpu=true --overwrite"
        in host.calls("kubectl")
    )
    assert "verified" in result.stdout


def test_script_names_each_missing_prerequisite(tmp_path):
    host = Host(tmp_path)
    shell = tmp_path / "shell"
    shell.mkdir()
    (shell / "bash").symlink_to("/bin/bash")
    # Only bash on PATH: none of the tools (this machine has a docker client, for one).
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), PATH=str(shell), **ENV)
    assert result.returncode == 2
    for tool in (
        "'docker' is not installed",
        "'k3d' is not installed",
        "'kubectl' is not installed",
        "'nvidia-smi' is not installed",
    ):
        assert tool in result.stderr


def test_script_stops_without_docker_gpu_support(tmp_path):
    host = k3d_host(tmp_path, docker_gpu=False)
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), **ENV)
    assert result.returncode == 2
    assert "Docker has no 'nvidia' runtime" in result.stderr
    assert host.calls("k3d cluster create") == []
