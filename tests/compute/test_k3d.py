"""k3d-poc: the generated k3d command line, node roles, the Kubernetes layer, bad input, the script."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cdktf
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

import environments
from environments import Instance
from environments.k3d_poc import check_instances
from gpu_constructs.compute.k3d import K3dProps
from gpu_constructs.errors import ConfigError
from tests.conftest import ON_ENGINE, by_kind, manifests_of, release_values, resources
from tests.support import render
from tests.support.host import Host
from tests.support.stacks import run_the_pages_smoke_job_command
from tests.support.validators import validate_manifest

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


@ON_ENGINE["cdktf"]
def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


@ON_ENGINE["cdktn"]
def test_snapshot_cdktn(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_k3d_command_line_creates_server_and_three_agents_with_taints_at_bootstrap():
    assert K3dProps(kubeconfig_path="k").create_args() == [
        "--servers", "1", "--agents", "3", "--image", "k3s-cuda:v1.35.5-k3s1-cuda13.1.1", "--gpus", "all",
        "--api-port", "127.0.0.1:6550", "--kubeconfig-update-default=false", "--kubeconfig-switch-context=false",
        "--wait",
        "--k3s-arg", "--node-taint=CriticalAddonsOnly=true:NoExecute@server:0",
        "--k3s-arg", "--disable=traefik@server:0",
        "--k3s-arg", "--node-taint=node-role.kubernetes.io/infra=true:NoSchedule@agent:1",
        "--k3s-arg", "--node-taint=node-role.kubernetes.io/gpu=true:NoSchedule@agent:2",
    ]  # fmt: skip


def test_every_agent_gets_its_role_label_and_infra_and_gpu_their_taints():
    props = K3dProps(kubeconfig_path="k")
    assert props.node_labels() == [
        "k3d-gpu-poc-agent-0=node-role.kubernetes.io/app=true",
        "k3d-gpu-poc-agent-1=node-role.kubernetes.io/infra=true",
        "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true",
        # k3s's ServiceLB pods only on the app agent (tests/gates/test_placement.py models them)
        "k3d-gpu-poc-agent-0=svccontroller.k3s.cattle.io/enablelb=true",
    ]
    assert props.node_taints() == [
        "k3d-gpu-poc-server-0=CriticalAddonsOnly=true:NoExecute",
        "k3d-gpu-poc-agent-1=node-role.kubernetes.io/infra=true:NoSchedule",
        "k3d-gpu-poc-agent-2=node-role.kubernetes.io/gpu=true:NoSchedule",
    ]


def test_cluster_is_created_and_deleted_by_terraform_data(stack_json):
    (cluster,) = resources(stack_json, "terraform_data").values()
    create, destroy = cluster["provisioner"]
    assert create["local-exec"]["environment"]["CLUSTER"] == "gpu-poc"
    assert "k3d cluster create" in create["local-exec"]["command"]
    assert destroy["local-exec"] == {
        "command": "k3d cluster delete ${self.input.name} && rm -f ${self.input.kubeconfig}",
        "when": "destroy",
    }
    assert cluster["input"]["kubeconfig"] == "${path.root}/../../../kubeconfig/k3d-poc.yaml"
    assert create["local-exec"]["environment"]["GPU_NODES"] == "k3d-gpu-poc-agent-2"
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


def rendered_variant(stack: str, **overrides) -> render.RenderedStack:
    """A k3d-poc variant rendered by real Helm like the stacks in main.py."""
    instance = Instance(stack, "k3d-poc", overrides)
    helm = render.helm_binary()
    assert helm is not None
    return render.render_built(stack, instance.build(cdktf.Testing.app()), helm)


def test_the_optional_argocd_passes_every_gate(helm, upstream):
    """argocd=True: the pinned argo-cd chart is in ../shared/upstream/charts, so the release renders
    and goes through the same gates as every stack's releases."""
    from tests.support.gates import UNCHECKED_CHARTS, validator_for
    from tests.support.order import order_problems
    from tests.support.placement import node_groups, placement_problems, pod_templates, why_not
    from tests.support.validators import ObjectInvalid
    from tests.support.values import release_dead_keys

    stack = rendered_variant("k3d-poc-argocd", argocd=True)
    (argocd,) = [r for r in stack.releases if r.chart == "argo-cd"]
    assert argocd.version == "10.1.1" and argocd.chart_dir.is_dir()
    assert len([o for o in argocd.objects if o["kind"] == "Deployment"]) >= 4
    assert "argo-cd" in UNCHECKED_CHARTS
    validator = validator_for(stack)
    invalid = []
    for _, obj in stack.objects():
        try:
            validator.validate(obj)
        except ObjectInvalid as error:
            invalid.append(str(error))
    assert invalid == []
    assert placement_problems(stack) == []
    assert order_problems(stack) == []
    # A node selector is a free-form label map; the chart's default (kubernetes.io/os: linux) is not
    # empty, so the dead-key walk descends into it and lists the infra label: not a dead key.
    dead = release_dead_keys(argocd)
    assert [key for key in dead if not key.startswith("global.nodeSelector.")] == [], dead
    # every Argo CD pod fits the infra agent and nothing else
    groups = node_groups(stack)
    for template in pod_templates(stack):
        if template.where.startswith(argocd.address):
            fits = [g.name for g in groups if why_not(template.spec, g) is None]
            assert fits == ["infra agents"], template.where


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agents": ("app", "storage")}, r"'agents' is 'storage': use one of app, infra, gpu"),
        (
            {"agents": ("infra", "gpu")},
            r"'agents' is \('infra', 'gpu'\): an infra agent brings Traefik, whose ServiceLB pods run on "
            r"the app agent \(else on server-0\): add 'app'$",
        ),
        (
            {"agents": ("app", "infra")},
            r"'smoke_test' is True: the GPU smoke test needs a 'gpu' agent: add 'gpu' to agents",
        ),
        ({"agents": ("app", "gpu"), "argocd": True}, r"'argocd' is True: Argo CD runs on the infra agent"),
        ({"image": "k3s-cuda:latest"}, r"'image' is 'k3s-cuda:latest': pin the k3s CUDA image"),
        ({"api_port": 443}, r"'api_port' is 443: "),
        ({"image": "registry:5000/k3s-cuda"}, r"'image' is 'registry:5000/k3s-cuda': pin the k3s CUDA image"),
        ({"cluster_name": "GPU_poc"}, r"'cluster_name' is 'GPU_poc': use a lower-case DNS label"),
        ({"agents": (), "smoke_test": False}, r"'agents' is \(\): give at least one agent role"),
        (
            {"smoke_test_image": "nvcr.io/nvidia/cuda"},
            r"'smoke_test_image' is 'nvcr.io/nvidia/cuda': pin the image",
        ),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        synth(**overrides)


def test_bad_props():
    with pytest.raises(ConfigError, match=r"'gpus' is 'two': give all, a GPU count such as 1, or device=0,1"):
        K3dProps(kubeconfig_path="k", gpus="two")
    with pytest.raises(ConfigError, match=r"'api_port' is 80: use from 1024 to 65535"):
        K3dProps(kubeconfig_path="k", api_port=80)
    assert K3dProps(kubeconfig_path="k", gpus="device=0,1").gpus == "device=0,1"


def test_cpu_only_cluster_without_smoke_test_is_allowed():
    cpu_only = synth(agents=("app", "infra"), smoke_test=False)
    assert "nvidia-device-plugin" not in releases(cpu_only)


# --- k3d-cluster.sh with stubbed docker, k3d, kubectl, nvidia-smi ------------------------------------
# What `docker exec <node> cat .../containerd/config.toml` shows for the nvidia runtime. k3s v1.35
# (containerd 2.x) renders its config from ContainerdConfigTemplateV3 (pkg/agent/templates), whose
# extra runtimes are `[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'{{ $k }}']` with a
# `.options` table holding BinaryName; k3s's version 2 template quoted the key with double quotes,
# and nvidia-ctk writes it bare. The same TOML key in each spelling.
V3_NVIDIA = """
[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia'.options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
  SystemdCgroup = true
"""
NVIDIA_RUNTIME_SPELLINGS = {
    "k3s-v3-template": V3_NVIDIA,
    "k3s-v2-template": V3_NVIDIA.replace("'nvidia'", '"nvidia"'),
    "nvidia-ctk": V3_NVIDIA.replace("'nvidia'", "nvidia"),
}
RUNC_ONLY = V3_NVIDIA.replace("'nvidia'", "'runc'").replace("/usr/bin/nvidia-container-runtime", "runc")


def k3d_host(
    tmp_path: Path, *, docker_gpu: bool = True, node_runtime: bool = True, config_text: str = V3_NVIDIA
) -> Host:
    host = Host(tmp_path)
    runtimes = '{"nvidia":{},"runc":{}}' if docker_gpu else '{"runc":{}}'
    config = tmp_path / "containerd-config.toml"
    config.write_text(config_text if node_runtime else RUNC_ONLY)
    host.stub(
        "docker",
        f'if [ "$1" = exec ]; then [ "$2" = k3d-gpu-poc-agent-2 ] && cat {config}; exit 0; fi\n'
        f"echo '{runtimes}'",
    )
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
    "GPU_NODES": "k3d-gpu-poc-agent-2",
    "CREATE_TIMEOUT": "600s",
}


def test_script_creates_labels_and_verifies(tmp_path):
    host = k3d_host(tmp_path)
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "kube.yaml"), **ENV)
    assert result.returncode == 0, result.stderr
    assert "k3d cluster create gpu-poc --timeout 600s --servers 1 --agents 1" in host.calls("k3d")
    assert (
        "kubectl label node k3d-gpu-poc-agent-2 node-role.kubernetes.io/gpu=true --overwrite"
        in host.calls("kubectl")
    )
    assert "verified" in result.stdout


def test_the_create_is_bounded_and_a_rolled_back_create_fails_the_step(tmp_path, stack_json, monkeypatch):
    """k3d's --wait waits for each node's ready log line without a limit (through a node's restart
    loop); only --timeout makes it roll back and exit (k3d v5 cmd/cluster/clusterCreate.go). The
    synthesized step gives it one, and the definition does not include it: changing it replaces no
    cluster."""
    (cluster,) = resources(stack_json, "terraform_data").values()
    env = cluster["provisioner"][0]["local-exec"]["environment"]
    timeout = env["CREATE_TIMEOUT"]
    assert timeout == "600s"
    host = k3d_host(tmp_path)
    step = {k: v for k, v in env.items() if k not in ("BUILD_CONTEXT", "SMOKE_IMAGE")}
    step.update(
        NODE_LABELS=ENV["NODE_LABELS"], NODE_TAINTS=ENV["NODE_TAINTS"], KUBECONFIG_OUT=str(tmp_path / "k")
    )
    assert host.run("k3d-cluster.sh", **step).returncode == 0
    (create,) = host.calls("k3d cluster create")
    assert create.startswith(f"k3d cluster create gpu-poc --timeout {timeout} --servers 1 ")
    assert "--wait" in create.split()

    # k3d past its deadline: "Cluster creation FAILED, all changes have been rolled back!", exit 1
    (tmp_path / "late").mkdir()
    late = k3d_host(tmp_path / "late")
    late.stub(
        "k3d",
        '[ "$1 $2" = "cluster list" ] && exit 1\n'
        '[ "$1 $2" = "cluster create" ] && { echo "FATA Cluster creation FAILED, all changes have been rolled back!" >&2; exit 1; }\n'
        "exit 0",
    )
    result = late.run("k3d-cluster.sh", **step)
    assert result.returncode == 1
    assert f"did not finish within {timeout}" in result.stderr
    assert late.calls("kubectl") == []

    from gpu_constructs.compute import k3d

    monkeypatch.setattr(k3d, "CREATE_TIMEOUT_SECONDS", 1200)
    longer = synth()
    (other,) = resources(longer, "terraform_data").values()
    assert other["provisioner"][0]["local-exec"]["environment"]["CREATE_TIMEOUT"] == "1200s"
    assert _definition(longer) == _definition(stack_json)


def test_terraform_runs_a_failed_create_again_over_what_it_left_and_destroys_a_gone_cluster(
    stack_json, tmp_path
):
    """Real Terraform with the synthesized cluster step (the k3d, docker and kubectl stubs): a
    create that fails and leaves a cluster behind (k3d's rollback failed too) taints the step, the
    next apply runs it again, and the script deletes the leftover before creating (k3d refuses a
    name in use: cmd/cluster/clusterCreate.go, "a cluster with that name already exists"). The
    destroy step on its own (the stack's plan stops at the access check first when the cluster is
    gone): one k3d cannot run (Docker down) fails and keeps the step in the state, for the next
    try; one whose cluster is already gone succeeds, as `k3d cluster delete` of a missing cluster
    logs "nothing to delete" and exits 0 (k3d-io/k3d v5.9.0 cmd/cluster/clusterDelete.go)."""
    import copy

    from tests.conftest import run_terraform, terraform_binary

    terraform = terraform_binary()
    ((cluster_id, cluster),) = copy.deepcopy(resources(stack_json, "terraform_data")).items()
    kubeconfig = tmp_path / "kubeconfig" / "k3d-poc.yaml"
    cluster["input"]["kubeconfig"] = str(kubeconfig)
    env = cluster["provisioner"][0]["local-exec"]["environment"]
    env.update(KUBECONFIG_OUT=str(kubeconfig), NODE_LABELS=ENV["NODE_LABELS"], NODE_TAINTS=ENV["NODE_TAINTS"])
    work = tmp_path / "stack"
    work.mkdir()
    (work / "main.tf.json").write_text(json.dumps({"resource": {"terraform_data": {cluster_id: cluster}}}))
    host = k3d_host(tmp_path)
    host.stub(
        "k3d",
        'cluster="$STATE/cluster"\n'
        'case "$1 $2" in\n'
        '  "cluster list") [ -e "$cluster" ] ;;\n'
        '  "cluster create") [ -e "$cluster" ] && { echo "FATA a cluster with that name already exists" >&2; exit 1; }\n'
        '    touch "$cluster"; [ -e "$STATE/fail" ] && { echo "FATA also FAILED to rollback changes!" >&2; exit 1; }; exit 0 ;;\n'
        '  "cluster delete") [ -e "$STATE/docker-down" ] && { echo "FATA Cannot connect to the Docker daemon" >&2; exit 1; }\n'
        '    rm -f "$cluster" ;;\n'
        '  "kubeconfig get") echo "apiVersion: v1" ;;\n'
        "esac",
    )
    tf_env = {**host.environment(), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    run_terraform(terraform, work, tf_env, "init", "-input=false")
    (host.state / "fail").touch()
    failed = run_terraform(terraform, work, tf_env, "apply", "-auto-approve", "-input=false", codes=(1,))
    assert "did not finish within 600s" in failed.stderr
    assert (host.state / "cluster").exists()  # what the failed create left
    (host.state / "fail").unlink()
    plan = run_terraform(terraform, work, tf_env, "plan", "-input=false")
    assert f"terraform_data.{cluster_id} is tainted, so must be replaced" in plan.stdout
    host.log.write_text("")
    run_terraform(terraform, work, tf_env, "apply", "-auto-approve", "-input=false")
    creates = host.calls("k3d cluster")
    assert creates[-3:-1] == ["k3d cluster list gpu-poc", "k3d cluster delete gpu-poc"], creates
    assert creates[-1].startswith("k3d cluster create gpu-poc --timeout 600s ")
    assert kubeconfig.exists()

    # destroy with Docker down: fails, the step stays in the state
    (host.state / "docker-down").touch()
    run_terraform(terraform, work, tf_env, "destroy", "-auto-approve", "-input=false", codes=(1,))
    listed = run_terraform(terraform, work, tf_env, "state", "list")
    assert f"terraform_data.{cluster_id}" in listed.stdout.split()
    # the cluster deleted by hand, Docker back: the destroy succeeds and removes the kubeconfig
    (host.state / "docker-down").unlink()
    (host.state / "cluster").unlink()
    run_terraform(terraform, work, tf_env, "destroy", "-auto-approve", "-input=false")
    assert not kubeconfig.exists()
    assert run_terraform(terraform, work, tf_env, "state", "list").stdout.strip() == ""


@pytest.mark.parametrize("spelling", sorted(NVIDIA_RUNTIME_SPELLINGS))
def test_script_accepts_the_nvidia_runtime_in_every_toml_spelling(tmp_path, spelling):
    host = k3d_host(tmp_path, config_text=NVIDIA_RUNTIME_SPELLINGS[spelling])
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "kube.yaml"), **ENV)
    assert result.returncode == 0, result.stderr


def test_script_fails_when_the_gpu_agents_containerd_has_no_nvidia_runtime(tmp_path):
    """k3s registers RuntimeClass nvidia on every node; only the agent's containerd config shows
    that k3s found nvidia-container-runtime there."""
    host = k3d_host(tmp_path, node_runtime=False)
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "kube.yaml"), **ENV)
    assert result.returncode == 1
    assert "containerd on k3d-gpu-poc-agent-2 has no nvidia runtime" in result.stderr
    assert "docker exec k3d-gpu-poc-agent-2 cat /var/lib/rancher/k3s/agent/etc/containerd/config.toml" in (
        host.calls("docker")
    )


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


REQUIREMENT_ERROR = (
    "docker: Error response from daemon: failed to create task for container: ... nvidia-container-cli: "
    "requirement error: unsatisfied condition: cuda>=13.1, please update your driver to a newer version"
)


def test_script_runs_the_smoke_test_image_first_and_explains_an_old_driver(tmp_path, stack_json):
    """The smoke test's CUDA image needs a driver for its CUDA version (NVIDIA_REQUIRE_CUDA): the
    script runs it with --gpus all before building anything and names the driver when it fails."""
    (cluster,) = resources(stack_json, "terraform_data").values()
    image = cluster["provisioner"][0]["local-exec"]["environment"]["SMOKE_IMAGE"]
    assert image == "nvcr.io/nvidia/cuda:13.1.1-base-ubuntu24.04"
    host = k3d_host(tmp_path)
    host.stub(
        "docker",
        f'if [ "$1" = run ]; then echo "{REQUIREMENT_ERROR}" >&2; exit 125; fi\necho \'{{"nvidia":{{}}}}\'',
    )
    result = host.run(
        "k3d-cluster.sh",
        KUBECONFIG_OUT=str(tmp_path / "k"),
        SMOKE_IMAGE=image,
        IMAGE="k3s-cuda:x",
        BUILD_CONTEXT="/ctx",
        **ENV,
    )
    assert result.returncode == 2
    assert "requirement error: unsatisfied condition: cuda>=13.1" in result.stderr
    assert f"older than the CUDA version {image} requires" in result.stderr
    assert f"docker run --rm --gpus all {image} nvidia-smi -L" in host.calls("docker")
    assert host.calls("docker build") == [] and host.calls("k3d cluster create") == []
    # a driver that meets the requirement passes the preflight
    (tmp_path / "ok").mkdir()
    ok = k3d_host(tmp_path / "ok")
    assert (
        ok.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), SMOKE_IMAGE=image, **ENV).returncode == 0
    )
    assert f"docker run --rm --gpus all {image} nvidia-smi -L" in ok.calls("docker")
    # without a smoke test there is no image to check
    (cpu,) = resources(synth(agents=("app", "infra"), smoke_test=False), "terraform_data").values()
    assert "SMOKE_IMAGE" not in cpu["provisioner"][0]["local-exec"]["environment"]


def test_the_smoke_test_image_the_preflight_ran_is_loaded_into_the_gpu_agents(tmp_path, stack_json):
    """The smoke Job's activeDeadlineSeconds counts its image pull, and on a new cluster the device
    plugin's pull and start too (its release does not wait): the host has the image from the
    preflight, and the script streams it into each GPU agent's containerd (`ctr image import`, as
    k3d image import does), so the Job does not pull it. A failed load only warns."""
    (cluster,) = resources(stack_json, "terraform_data").values()
    image = cluster["provisioner"][0]["local-exec"]["environment"]["SMOKE_IMAGE"]
    host = k3d_host(tmp_path)
    loaded = tmp_path / "loaded.tar"
    host.stub(
        "docker",
        f'case "$1 $2" in\n'
        f'  "save {image}") echo "image tarball of {image}" ;;\n'
        f'  "exec -i") [ "$3 $4 $5 $6 $7 $8 $9" = "k3d-gpu-poc-agent-2 ctr -n k8s.io image import -" ] && cat > {loaded} ;;\n'
        f"  exec*) cat {tmp_path / 'containerd-config.toml'} ;;\n"
        "  *) echo '{\"nvidia\":{}}' ;;\n"
        "esac",
    )
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), SMOKE_IMAGE=image, **ENV)
    assert result.returncode == 0, result.stderr
    assert loaded.read_text() == f"image tarball of {image}\n"
    calls = host.calls("docker")
    assert calls.index(f"docker save {image}") > calls.index(
        "docker exec k3d-gpu-poc-agent-2 cat /var/lib/rancher/k3s/agent/etc/containerd/config.toml"
    )
    assert "WARNING" not in result.stderr
    # a load that fails leaves the pull to the Job
    (tmp_path / "fails").mkdir()
    failing = k3d_host(tmp_path / "fails")
    failing.stub(
        "docker",
        'case "$1 $2" in\n'
        '  "exec -i") cat >/dev/null; echo "ctr: content digest not found" >&2; exit 1 ;;\n'
        f"  exec*) cat {tmp_path / 'fails' / 'containerd-config.toml'} ;;\n"
        "  *) echo '{\"nvidia\":{}}' ;;\n"
        "esac",
    )
    result = failing.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), SMOKE_IMAGE=image, **ENV)
    assert result.returncode == 0, result.stderr
    assert f"loading {image} into k3d-gpu-poc-agent-2 failed; the smoke test Job pulls it" in result.stderr
    # no smoke test, no image to load
    (tmp_path / "none").mkdir()
    none = k3d_host(tmp_path / "none")
    assert none.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), **ENV).returncode == 0
    assert none.calls("docker save") == []


def test_script_stops_without_docker_gpu_support(tmp_path):
    host = k3d_host(tmp_path, docker_gpu=False)
    result = host.run("k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), **ENV)
    assert result.returncode == 2
    assert "Docker has no 'nvidia' runtime" in result.stderr
    assert host.calls("k3d cluster create") == []


# --- the k3s CUDA node image -----------------------------------------------------------------------
DOCKERFILE = Path(__file__).resolve().parents[2] / "docker" / "k3s-cuda" / "Dockerfile"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def test_node_image_is_built_from_the_whole_k3s_filesystem_as_k3d_guides():
    """k3d's CUDA guide: the k3s image's filesystem on a CUDA base with the toolkit, its volumes,
    /bin/aux on PATH and k3s as the entrypoint (copying only /bin leaves out /etc and /lib). One COPY
    per k3s top-level directory, since Ubuntu's /bin, /lib and /var/run are symlinks (the build
    itself: tests/lifecycle/test_images.py)."""
    instructions = dockerfile_instructions()
    from_lines = [args for keyword, args in instructions if keyword == "FROM"]
    assert from_lines == ["rancher/k3s:${K3S_TAG} AS k3s", "nvcr.io/nvidia/cuda:${CUDA_TAG}"]
    copies = [args for keyword, args in instructions if keyword == "COPY"]
    assert copies == [
        "--from=k3s /bin /bin",
        "--from=k3s /etc /etc",
        "--from=k3s /lib /lib",
        "--from=k3s /usr/share/zoneinfo /usr/share/zoneinfo",
    ]
    volumes = {args for keyword, args in instructions if keyword == "VOLUME"}
    assert volumes == {"/var/lib/kubelet", "/var/lib/rancher/k3s", "/var/lib/cni", "/var/log"}
    assert ("ENV", 'PATH="$PATH:/bin/aux"') in instructions
    assert instructions[-2:] == [("ENTRYPOINT", '["/bin/k3s"]'), ("CMD", '["agent"]')]
    # no frontend image to pull from a registry, and nothing only a labs frontend parses
    lines = DOCKERFILE.read_text().splitlines()
    assert not any(line.replace(" ", "").lower().startswith("#syntax=") for line in lines)
    assert not any("--exclude" in args for _, args in instructions)


def test_node_image_versions_are_the_pins():
    from gpu_constructs import versions
    from gpu_constructs.compute.k3d import docker_build_args, image_build_args

    defaults = dict(
        args.split("=", 1) for keyword, args in dockerfile_instructions() if keyword == "ARG" and "=" in args
    )
    assert defaults == image_build_args()
    assert defaults["NVIDIA_CTK_VERSION"] == versions.NVIDIA_CONTAINER_TOOLKIT.version
    (run,) = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    for package in (
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    ):
        assert f'"{package}=${{NVIDIA_CTK_VERSION}}-1"' in run
    assert "latest" not in DOCKERFILE.read_text()
    assert docker_build_args()[-3:] == ["-t", versions.K3D_K3S_CUDA_IMAGE.version, "docker/k3s-cuda"]


def test_make_builds_the_node_image(tmp_path):
    """`make k3s-cuda-image` runs docker build with the pinned versions (a stub docker records it)."""
    import os
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "docker").write_text(f'#!/bin/bash\necho "$*" > {tmp_path}/docker.args\n')
    (stub / "docker").chmod(0o755)
    root = DOCKERFILE.parent.parent.parent
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["make", "--no-print-directory", "k3s-cuda-image"], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker.args").read_text().split() == [
        "build",
        "--build-arg", "CUDA_TAG=13.1.1-base-ubuntu24.04",
        "--build-arg", "K3S_TAG=v1.35.5-k3s1",
        "--build-arg", "NVIDIA_CTK_VERSION=1.20.0",
        "-t", "k3s-cuda:v1.35.5-k3s1-cuda13.1.1",
        "docker/k3s-cuda",
    ]  # fmt: skip


def test_the_stack_builds_the_node_image_before_the_cluster(stack_json, tmp_path):
    (bootstrap,) = resources(stack_json, "terraform_data").values()
    env = bootstrap["provisioner"][0]["local-exec"]["environment"]
    assert env["IMAGE"] == "k3s-cuda:v1.35.5-k3s1-cuda13.1.1"
    assert env["BUILD_CONTEXT"] == "${path.root}/../../../docker/k3s-cuda"
    host = k3d_host(tmp_path)
    result = host.run(
        "k3d-cluster.sh",
        KUBECONFIG_OUT=str(tmp_path / "kube.yaml"),
        **{**ENV, **{k: env[k] for k in ("IMAGE", "BUILD_CONTEXT", "BUILD_ARGS")}},
    )
    assert result.returncode == 0, result.stderr
    calls = host.calls()
    build = calls.index(
        "docker build --build-arg CUDA_TAG=13.1.1-base-ubuntu24.04 --build-arg K3S_TAG=v1.35.5-k3s1 "
        "--build-arg NVIDIA_CTK_VERSION=1.20.0 -t k3s-cuda:v1.35.5-k3s1-cuda13.1.1 "
        "${path.root}/../../../docker/k3s-cuda"
    )
    assert build < calls.index("k3d cluster create gpu-poc --timeout 600s --servers 1 --agents 1")
    (prebuilt,) = resources(synth(build_image=False), "terraform_data").values()
    assert "BUILD_CONTEXT" not in prebuilt["provisioner"][0]["local-exec"]["environment"]


def test_a_failed_image_build_stops_before_the_cluster(tmp_path):
    host = k3d_host(tmp_path)
    host.stub("docker", '[ "$1" = build ] && exit 1; echo \'{"nvidia":{}}\'')
    result = host.run(
        "k3d-cluster.sh", KUBECONFIG_OUT=str(tmp_path / "k"), IMAGE="k3s-cuda:x", BUILD_CONTEXT="/ctx", **ENV
    )
    assert result.returncode == 1 and "building k3s-cuda:x failed" in result.stderr
    assert host.calls("k3d cluster create") == []


@pytest.mark.parametrize("overrides", [{}, {"argocd": True}])
def test_every_in_cluster_resource_is_replaced_with_the_cluster(overrides):
    """depends_on only orders; a replaced cluster is empty unless its releases are replaced with it."""
    synthesized = synth(**overrides)
    (cluster_id,) = resources(synthesized, "terraform_data")
    in_cluster = {
        f"{kind}.{name}": body
        for kind, bodies in synthesized["resource"].items()
        if kind.startswith(("helm_", "kubernetes_", "kubectl_"))
        for name, body in bodies.items()
    }
    assert len(in_cluster) == len(releases(synthesized)) >= 2
    for address, body in in_cluster.items():
        assert f"terraform_data.{cluster_id}.id" in body.get("lifecycle", {}).get(
            "replace_triggered_by", []
        ), address


def test_terraform_replaces_a_release_when_the_cluster_is_replaced(stack_json, tmp_path):
    """Real Terraform: the release's lifecycle block on a stand-in, the cluster's definition changed."""
    from tests.conftest import run_terraform, terraform_binary

    terraform = terraform_binary()
    ((cluster_id, cluster),) = resources(stack_json, "terraform_data").items()
    release = releases(stack_json)["gpu-smoke-test"]

    def write(definition: str) -> None:
        config = {
            cluster_id: {"triggers_replace": {"definition": definition}},
            "release": {"input": "r", "lifecycle": release["lifecycle"]},
        }
        (tmp_path / "main.tf.json").write_text(json.dumps({"resource": {"terraform_data": config}}))

    write(cluster["triggers_replace"]["definition"])
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    run_terraform(terraform, tmp_path, env, "init", "-input=false")
    run_terraform(terraform, tmp_path, env, "apply", "-auto-approve", "-input=false")
    write("changed")
    plan = run_terraform(terraform, tmp_path, env, "plan", "-input=false")
    assert "terraform_data.release will be replaced due to changes in replace_triggered_by" in plan.stdout


def test_apply_waits_for_the_smoke_test_and_fails_with_it_within_the_timeout(helm, upstream):
    """Rendered by real Helm: the Job Helm waits for (wait_for_jobs) fails on its first failed pod
    (Helm fails a Job at status.failed > backoffLimit) and is ended before the release's timeout."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.environment == "k3d-poc"]
    stack = render.rendered(instance)
    (release,) = [r for r in stack.releases if r.name == "gpu-smoke-test"]
    assert release.raw["wait_for_jobs"] is True and release.raw["wait"] is True
    assert release.raw["atomic"] is True
    (job,) = [o for o in release.objects if o["kind"] == "Job"]
    assert job["spec"]["backoffLimit"] == 0
    assert 0 < job["spec"]["activeDeadlineSeconds"] < release.raw["timeout"]
    assert job["metadata"]["name"] in stack.synthesized["output"]["smoke_test_logs"]["value"]


def test_a_changed_smoke_test_is_a_new_job_not_an_update_of_the_immutable_template(stack_json):
    def job_name(synthesized):
        (job,) = by_kind(manifests_of(releases(synthesized)["gpu-smoke-test"]), "Job")
        return job["metadata"]["name"]

    name = job_name(stack_json)
    assert name.startswith("gpu-smoke-test-") and name == job_name(synth())
    changed = job_name(synth(smoke_test_image="nvcr.io/nvidia/cuda:13.0.0-base-ubuntu24.04"))
    assert changed != name and changed.startswith("gpu-smoke-test-")
    assert job_name(synth(time_slicing_replicas=4)) == name  # the Job itself did not change


def test_the_ingress_runs_on_the_infra_agent(helm, upstream):
    """The seed's table: ingress on the infra agent. k3s's own Traefik is disabled (it tolerates
    neither the infra nor the server taint); the stack's Traefik selects and tolerates infra."""
    from tests.support.placement import node_groups, pod_templates, why_not
    from tests.support.stacks import INSTANCES

    assert "--disable=traefik@server:0" in K3dProps(kubeconfig_path="k").create_args()
    stack = render.rendered(INSTANCES["k3d-poc"])
    (traefik,) = [r for r in stack.releases if r.chart == "traefik"]
    assert traefik.version == "39.0.3"
    groups = node_groups(stack)
    templates = [
        t for t in pod_templates(stack) if t.where.startswith(traefik.address) and "ServiceLB" not in t.where
    ]
    assert templates
    for template in templates:
        assert [g.name for g in groups if why_not(template.spec, g) is None] == ["infra agents"]
    assert [o for o in traefik.objects if o["kind"] == "IngressClass"]


def _definition(stack: dict) -> str:
    (cluster,) = resources(stack, "terraform_data").values()
    return cluster["triggers_replace"]["definition"]


# A changed value for every setting of K3dPocSettings (backend: another state location).
CHANGED_SETTINGS = {
    "cluster_name": "gpu-poc-b",
    "agents": ("app", "infra", "gpu", "gpu"),
    "image": "k3s-cuda:v1.35.5-k3s1-cuda13.1.1-b",
    "build_image": False,
    "api_port": 6551,
    "time_slicing_replicas": 2,
    "smoke_test": False,
    "smoke_test_image": "nvcr.io/nvidia/cuda:12.8.1-base-ubuntu24.04",
    "argocd": True,
    "monitoring": False,
    "monitoring_retention": "1d",
    "grafana_host": "grafana.k3d.test",
}
CLUSTER_SHAPING = {"cluster_name", "agents", "image", "build_image", "api_port"}
"""What `k3d cluster create` is given or builds its nodes from: only these replace the cluster."""


def test_only_cluster_shaping_settings_replace_the_cluster(stack_json):
    """Every release has replace_triggered_by the cluster step, whose destroy runs k3d cluster
    delete: a setting in its triggers re-creates the whole cluster (its data with it). Turning the
    smoke test off or bumping its image changes only the smoke-test release."""
    import dataclasses

    from environments.k3d_poc import K3dPocSettings

    fields = {f.name for f in dataclasses.fields(K3dPocSettings)} - {"backend"}
    assert set(CHANGED_SETTINGS) == fields, "give every new setting a changed value here"
    default = _definition(stack_json)
    replacing = {
        name for name, value in CHANGED_SETTINGS.items() if _definition(synth(**{name: value})) != default
    }
    assert replacing == CLUSTER_SHAPING


def test_the_page_names_each_setting_that_replaces_the_cluster_and_each_that_does_not():
    """docs/k3d-poc.md, "Plan a change": the settings named before "Everything else" are those
    whose change replaces the cluster (CLUSTER_SHAPING, which the test above derives from synth),
    the rest after it; a setting missing from either list is a change the page does not explain."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "k3d-poc.md").read_text()
    section = page.split("## Plan a change", 1)[1].split("\n## ", 1)[0]
    replacing, rest = section.split("Everything else", 1)
    named = {name: (f"`{name}`" in replacing, f"`{name}`" in rest) for name in CHANGED_SETTINGS}
    assert {name for name, (before, _) in named.items() if before} == CLUSTER_SHAPING
    assert {name for name, (_, after) in named.items() if after} == set(CHANGED_SETTINGS) - CLUSTER_SHAPING


def test_an_installed_package_in_another_place_keeps_the_cluster(monkeypatch, tmp_path):
    """In an installed package the build context is an absolute site-packages path: another
    virtualenv or Python version must not replace the cluster."""
    import shutil

    from gpu_constructs.compute import k3d

    definitions = set()
    for place in ("venv-a", "venv-b"):
        context = tmp_path / place / "k3s_cuda"
        shutil.copytree(k3d.PROJECT_ROOT / k3d.IMAGE_DIR, context)
        monkeypatch.setattr(k3d, "image_dir", lambda: None)
        monkeypatch.setattr(k3d, "PACKAGED_IMAGE_DIR", context)
        stack = synth()
        (cluster,) = resources(stack, "terraform_data").values()
        assert cluster["provisioner"][0]["local-exec"]["environment"]["BUILD_CONTEXT"] == context.as_posix()
        definitions.add(_definition(stack))
    assert len(definitions) == 1


def test_the_page_tells_how_to_recover_from_the_helm_providers_state_loss():
    from gpu_constructs import versions

    page = " ".join((Path(__file__).resolve().parents[2] / "docs" / "k3d-poc.md").read_text().split())
    assert "hashicorp/terraform-provider-helm#1669" in page
    assert f"helm provider ({versions.TERRAFORM_PROVIDER_HELM.version})" in page
    assert "k3d cluster start gpu-poc" in page and "get --raw /readyz" in page


def test_the_create_step_writes_the_kubeconfig_private_before_any_content(stack_json, tmp_path):
    """The synthesized command (not only the script) under the usual umask 022: the kubeconfig
    holds the cluster-admin key, so the file (0600) and a new kubeconfig/ (0700) are private when
    the first byte is written, not only after the script's chmod."""
    import subprocess

    (cluster,) = resources(stack_json, "terraform_data").values()
    create = cluster["provisioner"][0]["local-exec"]
    command = create["command"].replace("$${", "${").replace("%%{", "%{")
    host = k3d_host(tmp_path)
    modes = tmp_path / "modes"
    host.stub(
        "k3d",
        '[ "$1 $2" = "cluster list" ] && exit 1\n'
        'if [ "$1 $2" = "kubeconfig get" ]; then\n'
        f'  stat -c %a "$KUBECONFIG_OUT" "$(dirname "$KUBECONFIG_OUT")" > {modes}; echo "apiVersion: v1"\n'
        "fi\nexit 0",
    )
    out = tmp_path / "fresh" / "k3d-poc.yaml"
    result = subprocess.run(
        ["bash", "-c", 'umask 022; exec bash -c "$0"', command],
        env=host.environment(**{**ENV, "KUBECONFIG_OUT": str(out)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert modes.read_text().split() == ["600", "700"]


def test_every_agent_list_the_settings_accept_keeps_server_0_to_the_control_plane(helm, upstream):
    """The placement gate over k3d variants the settings accept, not only main.py's default: an agent
    list without 'app' (svclb-traefik would run on server-0) is refused at synth instead."""
    from tests.support.placement import placement_problems

    for agents in (("infra", "app", "gpu"), ("app", "gpu"), ("gpu", "app", "infra", "app")):
        assert placement_problems(rendered_variant("k3d-var", agents=agents)) == []
    with pytest.raises(ConfigError, match="'agents'"):
        rendered_variant("k3d-var", agents=("infra", "gpu"))


def test_a_second_instance_publishes_the_api_on_its_own_port():
    """Docker publishes 127.0.0.1:<port> once: a second k3d-poc on the same machine takes api_port."""
    app = cdktf.Testing.app()
    first = Instance("k3d-poc", "k3d-poc").build(app)
    second = Instance("k3d-poc-b", "k3d-poc", {"cluster_name": "gpu-poc-b", "api_port": 6551}).build(app)
    ports = []
    for stack in (first, second):
        (cluster,) = resources(json.loads(cdktf.Testing.synth(stack)), "terraform_data").values()
        args = cluster["provisioner"][0]["local-exec"]["environment"]["CREATE_ARGS"].split()
        ports.append(args[args.index("--api-port") + 1])
    assert ports == ["127.0.0.1:6550", "127.0.0.1:6551"]


def test_the_page_shows_a_failed_smoke_test_that_its_atomic_release_removed(stack_json, tmp_path):
    """An atomic release uninstalls its failed Job with its logs (helm v3.18 install.go failRelease):
    the release stays atomic, and the page gives the watch and the same Job by hand."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "k3d-poc.md").read_text()
    release = releases(stack_json)["gpu-smoke-test"]
    assert release["atomic"] is True
    job = run_the_pages_smoke_job_command(page, "k3d-poc", stack_json, tmp_path)
    assert job == release_values(release)["manifests"][0] and job["kind"] == "Job"
    assert "get events -n gpu-smoke-test -w" in " ".join(page.split())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"api_port": 6551},
            r"^k3d-b: 'cluster_name' is 'gpu-poc': the k3d-poc instance 'k3d-a' in main.py has it too, and "
            r"k3d clusters on one Docker host share names and host ports; give 'k3d-b' its own$",
        ),
        ({"cluster_name": "other"}, r"^k3d-b: 'api_port' is 6550: the k3d-poc instance 'k3d-a' in main.py"),
    ],
)
def test_two_k3d_instances_with_one_cluster_name_or_api_port_fail_at_synth(monkeypatch, overrides, message):
    """Checked over every instance of the app, also when only one stack is selected."""
    monkeypatch.setenv(environments.STACKS_ENV, "k3d-a")
    instances = [
        Instance("k3d-a", "k3d-poc"),
        Instance("lke", "lke"),
        Instance("k3d-b", "k3d-poc", overrides),
    ]
    with pytest.raises(ConfigError, match=message):
        environments.synth(instances, cdktf.Testing.app())
    check_instances(
        [
            Instance("k3d-a", "k3d-poc"),
            Instance("k3d-b", "k3d-poc", {"cluster_name": "other", "api_port": 6551}),
        ]
    )


# --- k3d-access.sh: the providers' access, read from the cluster at every run ------------------------
ACCESS_CA = (
    "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAj\n-----END CERTIFICATE-----\n"
)
ACCESS_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIEtleUtleUtleUtleQ==\n-----END EC PRIVATE KEY-----\n"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def k3d_kubeconfig(certificate: str) -> str:
    """What `k3d kubeconfig get gpu-poc` prints (k3d v5 KubeconfigGet: k3s's output, renamed)."""
    return f"""apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {_b64(ACCESS_CA)}
    server: https://127.0.0.1:6550
  name: k3d-gpu-poc
contexts:
- context:
    cluster: k3d-gpu-poc
    user: admin@k3d-gpu-poc
  name: k3d-gpu-poc
current-context: k3d-gpu-poc
kind: Config
preferences: {{}}
users:
- name: admin@k3d-gpu-poc
  user:
    client-certificate-data: {_b64(certificate)}
    client-key-data: {_b64(ACCESS_KEY)}
"""


def access_host(tmp_path: Path, certificate: str, *, running: str = "true") -> Host:
    """docker and k3d as they answer for a created cluster: the server container's state and the
    kubeconfig k3s holds now ($STATE/kubeconfig.yaml)."""
    host = Host(tmp_path)
    (host.state / "kubeconfig.yaml").write_text(k3d_kubeconfig(certificate))
    (host.state / "running").write_text(running)
    host.stub(
        "docker",
        'case "$1" in\n'
        '  inspect) [ -e "$STATE/running-$4" ] && { [ -s "$STATE/running-$4" ] || exit 1; cat "$STATE/running-$4"; exit 0; }\n'
        '           [ -s "$STATE/running" ] || { echo "Error: No such object: $4" >&2; exit 1; }\n'
        '           cat "$STATE/running" ;;\n'
        '  info) [ -e "$STATE/docker-down" ] && exit 1; exit 0 ;;\n'
        "esac",
    )
    host.stub("k3d", '[ "$1 $2 $3" = "kubeconfig get gpu-poc" ] && cat "$STATE/kubeconfig.yaml"')
    return host


def helm_access(stack_json: dict) -> dict:
    (provider,) = stack_json["provider"]["helm"]
    return provider["kubernetes"]


def run_access(host: Host, command: list[str], stdin: str = "", **env: str):
    """A synthesized program or exec plugin as Terraform and client-go run it: Terraform's template
    escapes resolved, the command with its arguments, no shell."""
    import subprocess

    argv = [arg.replace("$${", "${").replace("%%{", "%{") for arg in command]
    return subprocess.run(
        argv, input=stdin, env=host.environment(**env), capture_output=True, text=True, timeout=60
    )


def exec_plugin(stack_json: dict) -> list[str]:
    execution = helm_access(stack_json)["exec"]
    return [execution["command"], *execution["args"]]


def ca_program(stack_json: dict) -> list[str]:
    (ca,) = stack_json["data"]["external"].values()
    return ca["program"]


def test_the_providers_never_read_the_kubeconfig_file_the_create_step_wrote(stack_json):
    """That file keeps the admin client certificate k3s issued at creation (365 days; k3s renews its
    own when it starts, not the copy): the helm provider reaches the API at the published port with
    the CA from a data source keyed on the cluster step and the credential from an exec plugin."""
    from gpu_constructs.hostexec import script_literal

    (cluster_id,) = resources(stack_json, "terraform_data")
    access = helm_access(stack_json)
    assert "config_path" not in access
    assert access["host"] == "https://127.0.0.1:6550"
    (ca_id, ca) = next(iter(stack_json["data"]["external"].items()))
    assert access["cluster_ca_certificate"] == f"${{base64decode(data.external.{ca_id}.result.ca_base64)}}"
    assert ca["query"] == {"cluster": f"${{terraform_data.{cluster_id}.id}}"}
    assert stack_json["terraform"]["required_providers"]["external"]["source"] == "hashicorp/external"
    settings = ["CLUSTER=gpu-poc", "LOADBALANCER=k3d-gpu-poc-serverlb", "SERVER=k3d-gpu-poc-server-0"]
    script = ["bash", "-c", script_literal("k3d-access.sh"), "k3d-access"]
    assert ca_program(stack_json) == ["env", *settings, *script, "ca"]
    assert access["exec"]["api_version"] == "client.authentication.k8s.io/v1"
    assert exec_plugin(stack_json) == ["env", *settings, *script, "credential"]
    written = next(iter(resources(stack_json, "terraform_data").values()))["provisioner"][0]["local-exec"]
    assert written["environment"]["KUBECONFIG_OUT"] not in json.dumps(stack_json["provider"])
    assert helm_access(synth(api_port=6551))["host"] == "https://127.0.0.1:6551"


def test_a_certificate_k3s_renewed_reaches_the_providers_at_the_next_run(stack_json, tmp_path):
    """The synthesized plugin and program against a cluster whose k3s restarted and renewed its admin
    certificate: both runs read what the cluster holds then, and the key goes to stdout only."""
    from tests.support.host import _certificate

    first, renewed = _certificate(30), _certificate(365, "system:admin renewed")
    host = access_host(tmp_path, first)
    before = run_access(host, exec_plugin(stack_json))
    assert before.returncode == 0, before.stderr
    (host.state / "kubeconfig.yaml").write_text(k3d_kubeconfig(renewed))
    after = run_access(host, exec_plugin(stack_json))
    assert after.returncode == 0, after.stderr
    credential = json.loads(after.stdout)
    assert (credential["apiVersion"], credential["kind"]) == (
        "client.authentication.k8s.io/v1",
        "ExecCredential",
    )
    assert json.loads(before.stdout)["status"]["clientCertificateData"] == first
    assert credential["status"] == {"clientCertificateData": renewed, "clientKeyData": ACCESS_KEY}
    assert ACCESS_KEY.splitlines()[1] not in after.stderr
    # The external data source writes its query to stdin and reads one JSON object of strings.
    ca = run_access(host, ca_program(stack_json), stdin='{"cluster": "1234"}')
    assert ca.returncode == 0, ca.stderr
    assert json.loads(ca.stdout) == {"ca_base64": _b64(ACCESS_CA)}
    assert "k3d kubeconfig get gpu-poc" in host.calls("k3d")


@pytest.mark.parametrize("mode", ["ca", "credential"])
@pytest.mark.parametrize(("days", "refused"), [(-1, True), (3, True), (30, False)])
def test_an_admin_certificate_about_to_expire_fails_the_plan_with_the_restart(
    stack_json, tmp_path, mode, days, refused
):
    """A cluster that has not restarted for a year hands out an expired certificate: the data source
    (read before helm refreshes a release) fails the plan rather than let a 401 drop the releases."""
    from tests.support.host import _certificate

    host = access_host(tmp_path, _certificate(days))
    program = ca_program(stack_json) if mode == "ca" else exec_plugin(stack_json)
    result = run_access(host, program, stdin="{}")
    assert (result.returncode == 1) is refused, result.stderr
    if refused:
        assert result.stdout == ""
        assert "expires within 7 days or has expired" in result.stderr
        assert "k3d cluster stop gpu-poc && k3d cluster start gpu-poc" in result.stderr


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("stopped", "the k3d cluster gpu-poc is stopped (k3d-gpu-poc-server-0 is not running): 'k3d cluster start gpu-poc'"),
        ("gone", "the k3d cluster gpu-poc is not on this machine (no container k3d-gpu-poc-server-0;"),
        ("docker-down", "Docker is not running, or this user may not use it"),
        # the server runs, but the container that publishes 127.0.0.1:<api_port> does not
        ("lb-stopped", "k3d-gpu-poc-serverlb, which publishes the API of the k3d cluster gpu-poc on this machine, is not running: 'k3d cluster start gpu-poc'"),
        ("lb-gone", "k3d-gpu-poc-serverlb, which publishes the API of the k3d cluster gpu-poc on this machine, is not running"),
    ],
)  # fmt: skip
def test_a_cluster_that_cannot_answer_fails_the_plan_before_anything_is_refreshed(
    stack_json, tmp_path, state, message
):
    """A stopped cluster still hands out its kubeconfig (docker copies from a stopped container):
    the data source checks that the server runs, and names what to do."""
    from tests.support.host import _certificate

    running = {"stopped": "false", "lb-stopped": "true", "lb-gone": "true"}.get(state, "")
    host = access_host(tmp_path, _certificate(365), running=running)
    if state == "docker-down":
        (host.state / "docker-down").touch()
    if state.startswith("lb-"):
        (host.state / "running-k3d-gpu-poc-serverlb").write_text("false" if state == "lb-stopped" else "")
    result = run_access(host, ca_program(stack_json), stdin="{}")
    assert result.returncode == 1 and result.stdout == ""
    assert message in " ".join(result.stderr.split())
    assert host.calls("k3d") == []


def test_a_kubeconfig_without_a_ca_fails_instead_of_trusting_the_system_roots(stack_json, tmp_path):
    """An empty CA would reach the provider as "" (an unrelated x509 error at every release)."""
    from tests.support.host import _certificate

    host = access_host(tmp_path, _certificate(365))
    (host.state / "kubeconfig.yaml").write_text("apiVersion: v1\n")
    result = run_access(host, ca_program(stack_json), stdin="{}")
    assert result.returncode == 1 and result.stdout == ""
    assert "has no certificate-authority-data" in result.stderr


def test_the_access_script_passes_key_material_through_pipes_only():
    """bash before 5.1 writes every here-string and here-document to a file in $TMPDIR."""
    from gpu_constructs.hostexec import script_path

    code = [
        line
        for line in script_path("k3d-access.sh").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    assert not [line for line in code if "<<" in line]
