"""GpuCompute for a local k3d cluster: a server and app, infra and GPU agents in Docker.

k3d hands every GPU to every node, so GPU use is confined by scheduling: the GPU agent is labelled
and tainted, and only pods that tolerate the taint and select the label land there. The cluster is
created and deleted by a terraform_data with local-exec; changing its definition re-creates it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from cdktf import DataResource, Fn, LocalExecProvisioner
from constructs import Construct

from gpu_constructs import validate, versions
from gpu_constructs.cluster import GpuCluster, GpuSharing, KubeAccess, Manager, Taint
from gpu_constructs.compute.base import NodeGroup, PlatformFacts, k3s_platform
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import env_script_command, script_literal
from gpu_constructs.providers.external import DataExternal

IMAGE_DIR = Path("docker") / "k3s-cuda"
"""The node image's build context, relative to the project root (Dockerfile after k3d's CUDA guide)."""
PROJECT_ROOT = Path(__file__).resolve().parents[3]
PACKAGED_IMAGE_DIR = Path(__file__).resolve().parents[2] / "k3s_cuda"
"""The same build context in an installed package (pyproject.toml maps docker/k3s-cuda there)."""


def image_dir() -> Path | None:
    """The build context relative to the project root in a source tree (where ``make`` and the
    stacks run); None in an installed package, whose copy is :data:`PACKAGED_IMAGE_DIR`."""
    return IMAGE_DIR if (PROJECT_ROOT / IMAGE_DIR / "Dockerfile").is_file() else None


def image_context() -> Path:
    """The build context's directory on this machine: the source tree's, else the installed copy."""
    relative = image_dir()
    return PROJECT_ROOT / relative if relative else PACKAGED_IMAGE_DIR


ROLES = ("app", "infra", "gpu")
NAME_MAX_LENGTH = 32
"""k3d checks a cluster name (CheckName) so that the host names it derives from it, such as
``k3d-<name>-serverlb`` and ``k3d-<name>-agent-<n>``, stay within 64 characters; releases before v5
allowed 35 (clusterNameMaxSize), and 32 keeps within that."""
TAINTED_ROLES = ("infra", "gpu")
"""Roles whose nodes only accept pods that tolerate them (the seed's scheduling model)."""


def image_build_args() -> dict[str, str]:
    """The Dockerfile's build arguments: the pinned k3s, CUDA base and NVIDIA toolkit versions."""
    return {
        "CUDA_TAG": versions.K3D_CUDA_BASE.version,
        "K3S_TAG": versions.K3D_K3S.version,
        "NVIDIA_CTK_VERSION": versions.NVIDIA_CONTAINER_TOOLKIT.version,
    }


def docker_build_args(image: str = versions.K3D_K3S_CUDA_IMAGE.version) -> list[str]:
    """``docker build`` arguments for the node image, run from the project root (make k3s-cuda-image)."""
    args: list[str] = []
    for name, value in image_build_args().items():
        args += ["--build-arg", f"{name}={value}"]
    return [*args, "-t", image, str(image_dir() or PACKAGED_IMAGE_DIR)]


def role_label(role: str) -> tuple[str, str]:
    return (f"node-role.kubernetes.io/{role}", "true")


def role_taint(role: str) -> Taint:
    return Taint(f"node-role.kubernetes.io/{role}", "true", "NoSchedule")


CLUSTER_DEFINITION_VERSION = 1
"""Part of the cluster's definition in place of k3d-cluster.sh's text: bump it when a change to that
script changes the cluster it creates (a flag, a label, a file it writes into the nodes), so that
existing clusters are created again; a change to its checks or messages leaves them."""
CREATE_TIMEOUT_SECONDS = 600
"""How long ``k3d cluster create`` may take (``--timeout``) before it rolls the cluster back and
fails the apply. Its ``--wait`` has no limit of its own: k3d waits for each node's ready log line,
through restarts, and only warns "Consider using a creation timeout to avoid waiting forever in a
Restart Loop" (k3d-io/k3d v5.9.0 cmd/cluster/clusterCreate.go, flags wait and timeout, default 0;
pkg/client/node.go NodeWaitForLogMessage), and Terraform gives a local-exec no timeout either. k3d
applies it to each phase (prepare, create, start: pkg/client/cluster.go ClusterRun)."""
NOT_DEFINING = frozenset({"SMOKE_IMAGE", "BUILD_CONTEXT", "CREATE_TIMEOUT"})
"""Environment of the create step that does not shape the cluster, so it is left out of the
definition whose change replaces the cluster (and every release in it): the smoke test's image, used
by a host preflight and loaded into the GPU agents when the cluster is created (the smoke test
itself is its own release), where the build context
is on this machine (an installed package's absolute site-packages path), and how long the create
may take."""

KUBECONFIG_UMASK = "set -euo pipefail\numask 077\n"
"""Run before the create script (with its own errexit first, as every multi-command step here):
files and directories it creates are its user's alone."""

K3S_DISABLED = ("traefik",)
"""Bundled k3s components the server runs without (``--disable``): the ingress comes from the stack."""
SERVER_TAINT = Taint("CriticalAddonsOnly", "true", "NoExecute")
"""server-0 runs only the control plane, as the seed's table has it: k3s's own taint for dedicated
server nodes (docs.k3s.io, "Dedicated control plane": --node-taint CriticalAddonsOnly=true:NoExecute),
which k3s's CoreDNS, metrics-server and local-path-provisioner tolerate and nothing else does."""


SERVICELB_LABEL = ("svccontroller.k3s.cattle.io/enablelb", "true")
"""k3s's ServiceLB runs a svclb DaemonSet for every LoadBalancer Service (the ingress's); its pods
tolerate CriticalAddonsOnly, so unconfined they land on server-0 too. Once any node has this label,
k3s gives the DaemonSet the node selector enablelb=true (k3s pkg/cloudprovider/servicelb.go,
newDaemonSet, nodeHasDaemonSetLabel), so only the app agents run it; they forward to the Service's
ClusterIP, wherever its pods run."""


@dataclass(frozen=True)
class K3dProps:
    kubeconfig_path: str
    """Where the cluster's kubeconfig is written, for kubectl; the providers read the cluster itself."""
    name: str = "gpu-poc"
    agents: tuple[str, ...] = ("app", "infra", "gpu")
    """The role of each agent, in order: agent-0 app, agent-1 infra, agent-2 gpu as the seed has it."""
    image: str = versions.K3D_K3S_CUDA_IMAGE.version
    """k3s image with the NVIDIA container toolkit (docs/k3d-poc.md, Prerequisites, for building it)."""
    api_port: int = 6550
    gpus: str = "all"
    """What `--gpus` hands to the nodes (Docker's syntax: all, or a device list)."""
    sharing: GpuSharing = field(default_factory=GpuSharing)
    build_image: bool = True
    """Build ``image`` from docker/k3s-cuda before creating the cluster (Docker's cache makes an
    unchanged build quick); False uses an image that is already there (a registry, a CI build)."""
    project_root: str = "${path.root}/../../.."
    """The project root as the stack's working directory (cdktf.out/stacks/<stack>) sees it."""
    preflight_image: str | None = None
    """A CUDA image run once on the host with ``--gpus all`` before the node image is built (the
    GPU smoke test's): its NVIDIA_REQUIRE_CUDA makes an older host driver fail there, first."""

    def __post_init__(self) -> None:
        validate.k8s_name("cluster name", self.name)
        if len(self.name) > NAME_MAX_LENGTH:
            raise ConfigError(
                "cluster name",
                self.name,
                f"use at most {NAME_MAX_LENGTH} characters (k3d derives host names such as "
                "k3d-<name>-serverlb from it)",
            )
        for role in self.agents:
            validate.one_of("agents", role, ROLES)
        validate.int_range("api_port", self.api_port, 1024, 65535)
        name, _, tag = self.image.rpartition(":")
        if not name or "/" in tag or tag in ("", "latest"):
            raise ConfigError(
                "image",
                self.image,
                f"pin the k3s CUDA image to a tag, e.g. {versions.K3D_K3S_CUDA_IMAGE.version}",
            )
        if self.gpus != "all" and not re.fullmatch(r"(device=)?\d+(,\d+)*|\d+", self.gpus):
            raise ConfigError("gpus", self.gpus, "give all, a GPU count such as 1, or device=0,1")

    def node_name(self, index: int) -> str:
        return f"k3d-{self.name}-agent-{index}"

    def create_args(self) -> list[str]:
        """The `k3d cluster create <name>` arguments: one server, the agents, taints at bootstrap."""
        args = [
            "--servers", "1",
            "--agents", str(len(self.agents)),
            "--image", self.image,
            "--gpus", self.gpus,
            # k3d publishes the API on 0.0.0.0 unless given a host address ([HOST:]HOSTPORT).
            "--api-port", f"127.0.0.1:{self.api_port}",
            "--kubeconfig-update-default=false",
            "--kubeconfig-switch-context=false",
            "--wait",
        ]  # fmt: skip
        args += ["--k3s-arg", f"--node-taint={SERVER_TAINT}@server:0"]
        # The ingress runs on the infra agent from the stack (Traefik chart); k3s's bundled Traefik
        # tolerates neither the infra taint nor the server's and would have nowhere to run.
        for component in K3S_DISABLED:
            args += ["--k3s-arg", f"--disable={component}@server:0"]
        for index, role in enumerate(self.agents):
            if role in TAINTED_ROLES:
                args += ["--k3s-arg", f"--node-taint={role_taint(role)}@agent:{index}"]
        return args

    @property
    def server_name(self) -> str:
        return f"k3d-{self.name}-server-0"

    @property
    def loadbalancer_name(self) -> str:
        """The container that publishes ``--api-port`` on the host: k3d's server load balancer."""
        return f"k3d-{self.name}-serverlb"

    def node_labels(self) -> list[str]:
        labels = [f"{self.node_name(i)}={'='.join(role_label(role))}" for i, role in enumerate(self.agents)]
        return labels + [
            f"{self.node_name(i)}={'='.join(SERVICELB_LABEL)}"
            for i, role in enumerate(self.agents)
            if role == "app"
        ]

    def node_taints(self) -> list[str]:
        return [f"{self.server_name}={SERVER_TAINT}"] + [
            f"{self.node_name(i)}={role_taint(role)}"
            for i, role in enumerate(self.agents)
            if role in TAINTED_ROLES
        ]

    def gpu_nodes(self) -> list[str]:
        return [self.node_name(i) for i, role in enumerate(self.agents) if role == "gpu"]


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
            "GPU_NODES": " ".join(props.gpu_nodes()),
            "CREATE_TIMEOUT": f"{CREATE_TIMEOUT_SECONDS}s",
        }
        if props.preflight_image:
            env["SMOKE_IMAGE"] = props.preflight_image
        dockerfile = ""
        if props.build_image:
            env["IMAGE"] = props.image
            relative = image_dir()
            env["BUILD_CONTEXT"] = (
                f"{props.project_root}/{relative.as_posix()}" if relative else PACKAGED_IMAGE_DIR.as_posix()
            )
            env["BUILD_ARGS"] = " ".join(f"--build-arg {k}={v}" for k, v in image_build_args().items())
            dockerfile = (image_context() / "Dockerfile").read_text()
        # What the cluster is: the create arguments, node labels and taints, the kubeconfig it writes,
        # the node image and its build inputs. A terraform_data is replaced only through
        # triggers_replace (its provisioners' environment is not compared), so a changed preflight
        # image or build-context path is used by the next create without replacing this one.
        defining = sorted((key, value) for key, value in env.items() if key not in NOT_DEFINING)
        definition = hashlib.sha256(
            (f"v{CLUSTER_DEFINITION_VERSION}\n" + dockerfile + repr(defining)).encode()
        ).hexdigest()
        self.bootstrap = DataResource(
            self,
            "cluster",
            # Any change to the definition replaces this resource: delete, then create again.
            triggers_replace={"definition": definition},
            input={"name": props.name, "kubeconfig": props.kubeconfig_path},
            provisioners=[
                LocalExecProvisioner(
                    type="local-exec",
                    # The script writes the cluster-admin kubeconfig with a redirection, which creates
                    # the file 0666 & ~umask (0644 under the usual 022) before its chmod 600, and a
                    # new kubeconfig/ 0755: with umask 077 both are private before any content.
                    command=KUBECONFIG_UMASK + script_literal("k3d-cluster.sh"),
                    interpreter=["bash", "-c"],
                    environment=env,
                ),
                LocalExecProvisioner(
                    type="local-exec",
                    when="destroy",
                    # The kubeconfig names a cluster that is gone; the next create writes a new one.
                    # A cluster already gone is no error ("No nodes found for cluster ..., nothing
                    # to delete", exit 0); with Docker down k3d fails, and Terraform keeps the step
                    # for the next destroy (k3d-io/k3d v5.9.0 cmd/cluster/clusterDelete.go).
                    command="k3d cluster delete ${self.input.name} && rm -f ${self.input.kubeconfig}",
                ),
            ],
        )

        # The providers reach the API with what the cluster holds now, never through the kubeconfig
        # file the create step wrote for kubectl: its admin client certificate is valid for 365 days
        # from the cluster's creation, and k3s renews its own (when it starts, within 90 days of
        # expiry) without touching that copy (docs.k3s.io/advanced, "Certificate Management"), so a
        # year on every plan would get 401 and helm v3.1.1 would drop each release from the state
        # (helm/resource_helm_release.go Read, hashicorp/terraform-provider-helm#1669).
        # k3d-access.sh reads `k3d kubeconfig get` at every run, as single-node's kube-access.sh reads
        # the server: the CA through an external data source (the provider's configuration is
        # evaluated at plan), the client certificate and key through an exec credential plugin, so
        # the key reaches neither the state nor the plan. Keyed on the cluster step, the CA's read
        # waits for the cluster on a first apply (the query is unknown at plan) and is known at every
        # later plan, before anything is refreshed; it fails the plan, with the remedy, when Docker
        # or the cluster is stopped or the certificate is about to expire.
        def access(mode: str) -> list[str]:
            settings = {
                "CLUSTER": props.name,
                "SERVER": props.server_name,
                "LOADBALANCER": props.loadbalancer_name,
            }
            return env_script_command("k3d-access.sh", settings, mode)

        self.cluster_ca = DataExternal(
            self, "cluster-ca", program=access("ca"), query={"cluster": self.bootstrap.id}
        )
        self.cluster = GpuCluster(
            name=props.name,
            access=KubeAccess(
                # Where --api-port publishes it and `k3d kubeconfig get` points (127.0.0.1 is in the
                # k3s serving certificate's names).
                host=f"https://127.0.0.1:{props.api_port}",
                cluster_ca_certificate=Fn.base64decode(self.cluster_ca.result("ca_base64")),
                exec_api_version="client.authentication.k8s.io/v1",
                exec_command="env",
                exec_args=tuple(access("credential")[1:]),
            ),
            gpu_node_selector=dict([role_label("gpu")]),
            gpu_taint=role_taint("gpu"),
            gpu_toleration_taint=role_taint("gpu"),
            runtime_class="nvidia",
            driver=Manager.HOST,
            toolkit=Manager.IMAGE,
            sharing=props.sharing,
            gpu_capacity=None,
            ready=(self.bootstrap,),
            # Replaced (any change to its definition), `k3d cluster create` makes a new, empty
            # cluster: everything installed into the old one is replaced with it.
            identity=(self.bootstrap,),
        )

    @property
    def node_groups(self) -> tuple[NodeGroup, ...]:
        """server-0 (control plane only), then the agents of each role."""
        props = self.props
        groups = [
            NodeGroup(
                "server",
                names=(props.server_name,),
                taints=(SERVER_TAINT,),
                gpus_per_node=0,
                min_nodes=1,
                max_nodes=1,
                control_plane_only=True,
            )
        ]
        for role in dict.fromkeys(props.agents):
            names = tuple(props.node_name(i) for i, r in enumerate(props.agents) if r == role)
            groups.append(
                NodeGroup(
                    f"{role} agents",
                    names=names,
                    labels=dict([role_label(role), *([SERVICELB_LABEL] if role == "app" else [])]),
                    taints=(role_taint(role),) if role in TAINTED_ROLES else (),
                    gpu=role == "gpu",
                    # k3d hands every GPU of the machine to the node: the count is the machine's.
                    gpus_per_node=None if role == "gpu" else 0,
                    min_nodes=len(names),
                    max_nodes=len(names),
                    system=role == "infra",
                )
            )
        return tuple(groups)

    @property
    def platform(self) -> PlatformFacts:
        """k3s of the node image: the release its tag names (``k3s-cuda:v1.35.5-k3s1-cuda13.1.1``),
        else versions.K3D_K3S, the rancher/k3s tag the stack builds the image from."""
        cluster = self.cluster
        tagged = re.search(r"v\d+\.\d+\.\d+-k3s\d+", self.props.image.rpartition(":")[2])
        tag = tagged.group(0) if tagged else versions.K3D_K3S.version
        version = tag.replace("-k3s", "+k3s")  # the Docker tag's k3s release, as k3s spells it
        return k3s_platform(version, K3S_DISABLED, driver=cluster.driver, toolkit=cluster.toolkit)

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
