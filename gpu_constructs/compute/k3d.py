"""GpuCompute for a local k3d cluster: a server and app, infra and GPU agents in Docker.

k3d hands every GPU to every node, so GPU use is confined by scheduling: the GPU agent is labelled
and tainted, and only pods that tolerate the taint and select the label land there. The cluster is
created and deleted by a terraform_data with local-exec; changing its definition re-creates it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cdktf import DataResource, LocalExecProvisioner
from constructs import Construct

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GpuCluster, GpuSharing, KubeAccess, Manager, Taint
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import script_literal, script_text

ROLES = ("app", "infra", "gpu")
TAINTED_ROLES = ("infra", "gpu")
"""Roles whose nodes only accept pods that tolerate them (the seed's scheduling model)."""


def role_label(role: str) -> tuple[str, str]:
    return (f"node-role.kubernetes.io/{role}", "true")


def role_taint(role: str) -> Taint:
    return Taint(f"node-role.kubernetes.io/{role}", "true", "NoSchedule")


@dataclass(frozen=True)
class K3dProps:
    kubeconfig_path: str
    """Where the cluster's kubeconfig is written."""
    name: str = "gpu-poc"
    agents: tuple[str, ...] = ("app", "infra", "gpu")
    """The role of each agent, in order: agent-0 app, agent-1 infra, agent-2 gpu as the seed has it."""
    image: str = versions.K3D_K3S_CUDA_IMAGE.version
    """k3s image with the NVIDIA container toolkit (see the README for building it)."""
    api_port: int = 6550
    gpus: str = "all"
    """What `--gpus` hands to the nodes (Docker's syntax: all, or a device list)."""
    sharing: GpuSharing = field(default_factory=GpuSharing)

    def __post_init__(self) -> None:
        validate.k8s_name("cluster name", self.name)
        for role in self.agents:
            validate.one_of("agents", role, ROLES)
        validate.int_range("api_port", self.api_port, 1024, 65535)
        name, _, tag = self.image.rpartition(":")
        if not name or tag in ("", "latest"):
            raise ConfigError(
                "image", self.image, "pin the k3s CUDA image to a tag, e.g. k3s-cuda:v1.35.5-k3s1"
            )

    def node_name(self, index: int) -> str:
        return f"k3d-{self.name}-agent-{index}"

    def create_args(self) -> list[str]:
        """The `k3d cluster create <name>` arguments: one server, the agents, taints at bootstrap."""
        args = [
            "--servers", "1",
            "--agents", str(len(self.agents)),
            "--image", self.image,
            "--gpus", self.gpus,
            "--api-port", str(self.api_port),
            "--kubeconfig-update-default=false",
            "--kubeconfig-switch-context=false",
            "--wait",
        ]  # fmt: skip
        for index, role in enumerate(self.agents):
            if role in TAINTED_ROLES:
                args += ["--k3s-arg", f"--node-taint={role_taint(role)}@agent:{index}"]
        return args

    def node_labels(self) -> list[str]:
        return [f"{self.node_name(i)}={'='.join(role_label(role))}" for i, role in enumerate(self.agents)]

    def node_taints(self) -> list[str]:
        return [
            f"{self.node_name(i)}={role_taint(role)}"
            for i, role in enumerate(self.agents)
            if role in TAINTED_ROLES
        ]


class K3dGpuCompute(Construct):
    """A local k3d cluster whose GPU agent is the only place GPU pods schedule."""

    def __init__(self, scope: Construct, id: str, *, props: K3dProps) -> None:
        super().__init__(scope, id)
        self.props = props
        env = {
            "CLUSTER": props.name,
            "CREATE_ARGS": " ".join(props.create_args()),
            "NODE_LABELS": " ".join(props.node_labels()),
            "NODE_TAINTS": " ".join(props.node_taints()),
            "KUBECONFIG_OUT": props.kubeconfig_path,
            "REQUIRE_GPU": "1",
        }
        definition = hashlib.sha256(
            (script_text("k3d-cluster.sh") + repr(sorted(env.items()))).encode()
        ).hexdigest()
        self.bootstrap = DataResource(
            self,
            "cluster",
            # Any change to the definition replaces this resource: delete, then create again.
            triggers_replace={"definition": definition},
            input={"name": props.name},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    command=script_literal("k3d-cluster.sh"),
                    interpreter=["bash", "-c"],
                    environment=env,
                ),
                LocalExecProvisioner(
                    type="local-exec",
                    when="destroy",
                    command="k3d cluster delete ${self.input.name}",
                ),
            ],
        )
        self.cluster = GpuCluster(
            name=props.name,
            access=KubeAccess(config_path=props.kubeconfig_path),
            gpu_node_selector=dict([role_label("gpu")]),
            gpu_taint=role_taint("gpu"),
            gpu_toleration_taint=role_taint("gpu"),
            runtime_class="nvidia",
            driver=Manager.HOST,
            toolkit=Manager.IMAGE,
            sharing=props.sharing,
            gpu_capacity=None,
            ready=(self.bootstrap,),
        )

    def scheduling_for(self, role: str) -> dict[str, object]:
        """Pod-spec fields that place a pod on the agents of ``role`` (e.g. infra for Argo CD)."""
        if role not in self.props.agents:
            raise ConfigError(
                "role", role, f"this cluster has agents for {', '.join(sorted(set(self.props.agents)))}"
            )
        spec: dict[str, object] = {"nodeSelector": dict([role_label(role)])}
        if role in TAINTED_ROLES:
            spec["tolerations"] = [role_taint(role).toleration()]
        return spec


def smoke_test_job(cluster: GpuCluster, image: str, namespace: str) -> dict[str, object]:
    """The seed's GPU smoke test as a Job: nvidia-smi on one GPU, placed by the contract."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "gpu-smoke-test", "namespace": namespace},
        "spec": {
            "backoffLimit": 2,
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
                            "resources": {"limits": {"nvidia.com/gpu": 1}},
                        }
                    ],
                }
            },
        },
    }
