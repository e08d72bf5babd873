"""k3d-poc: a local k3d cluster with app, infra and GPU agents, the device plugin and a GPU smoke test."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from cdktf import TerraformOutput, TerraformStack
from constructs import Construct

from environments import use_cluster
from environments.state import Backend, use_backend
from environments.variables import kubeconfig_path as kubeconfig_path_of
from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuSharing
from gpu_constructs.compute.k3d import ROLES, K3dGpuCompute, K3dProps
from gpu_constructs.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginProps
from gpu_constructs.errors import ConfigError
from gpu_constructs.monitoring import DcgmSource, GrafanaIngress, Monitoring, MonitoringProps
from gpu_constructs.networking import TRAEFIK_PROVIDERS
from gpu_constructs.smoke_test import smoke_test_job

SMOKE_TEST_NAMESPACE = "gpu-smoke-test"


@dataclass(frozen=True)
class K3dPocSettings:
    """Structural settings of a k3d-poc instance; defaults are the seed's topology."""

    cluster_name: str = "gpu-poc"
    agents: tuple[str, ...] = K3dProps.agents
    """Agent roles in order (app, infra, gpu); the seed has one of each."""
    image: str = versions.K3D_K3S_CUDA_IMAGE.version
    """k3s image with the NVIDIA container toolkit, built from docker/k3s-cuda (docs/k3d-poc.md)."""
    build_image: bool = K3dProps.build_image
    """Build ``image`` from docker/k3s-cuda on apply; False uses an image already on the host."""
    api_port: int = K3dProps.api_port
    """The host port of the Kubernetes API, on 127.0.0.1: a second instance on the same machine needs
    its own (Docker publishes a port once)."""
    time_slicing_replicas: int = 1
    smoke_test: bool = True
    """Run the seed's nvidia-smi Job on the GPU agent after the device plugin."""
    smoke_test_image: str = versions.CUDA_SMOKE_TEST_IMAGE.version
    argocd: bool = False
    """Argo CD on the infra agent (the seed's future extension), off by default."""
    monitoring: bool | None = None
    """Prometheus and Grafana with GPU metrics on the infra agent (the seed's), sized for a laptop;
    None runs them when there is an infra agent."""
    monitoring_retention: str = "3d"
    backend: Backend | None = None
    """Where Terraform keeps this stack's state: None for state/<stack>.tfstate on this machine
    (git-ignored, mode 0700), or a remote backend such as ``Backend("s3", {"bucket": "acme-tf-state",
    "region": "eu-west-1"})`` (docs/settings.md)."""

    PROPS_SETTINGS: ClassVar[Mapping[str, str]] = {"cluster name": "cluster_name"}
    """The settings that the constructs' props fields come from, where their names differ."""

    grafana_host: str = ""
    """Grafana at http://<grafana_host> through the infra agent's Traefik, plain HTTP: the cluster
    has no cert-manager, and Let's Encrypt cannot reach a laptop. The name must resolve to a
    node's address on the Docker network (k3d maps no host port to Traefik). Empty: no ingress
    (kubectl port-forward)."""

    def __post_init__(self) -> None:
        validate.field_types(self)
        for role in self.agents:
            validate.one_of("agents", role, ROLES)
        if "infra" in self.agents and "app" not in self.agents:
            # Traefik's LoadBalancer Service gets k3s ServiceLB pods, confined to the app agents by
            # their enablelb label; without one k3s runs them on every untainted node, and they
            # tolerate server-0's taint (k3s pkg/cloudprovider/servicelb.go, newDaemonSet).
            raise ConfigError(
                "agents",
                self.agents,
                "an infra agent brings Traefik, whose ServiceLB pods run on the app agent (else on "
                "server-0): add 'app'",
            )
        gpu_agents = self.agents.count("gpu")
        if self.smoke_test and gpu_agents == 0:
            raise ConfigError(
                "smoke_test",
                True,
                "the GPU smoke test needs a 'gpu' agent: add 'gpu' to agents or set smoke_test=False",
            )
        if self.monitoring is True and "infra" not in self.agents:
            raise ConfigError("monitoring", True, "monitoring runs on the infra agent; add an 'infra' agent")
        if self.grafana_host:
            validate.dns_name("grafana_host", self.grafana_host)
            if self.monitoring is False or "infra" not in self.agents:
                raise ConfigError(
                    "grafana_host",
                    self.grafana_host,
                    "Grafana and Traefik run on the infra agent: add an 'infra' agent and keep "
                    "monitoring on, or leave grafana_host empty",
                )
        if self.argocd and "infra" not in self.agents:
            raise ConfigError("argocd", True, "Argo CD runs on the infra agent; add an 'infra' agent")
        validate.int_range("time_slicing_replicas", self.time_slicing_replicas, 1, 48)
        validate.k8s_name("cluster_name", self.cluster_name)
        if not self.agents:
            raise ConfigError("agents", (), "give at least one agent role (app, infra, gpu)")
        if ":" not in self.smoke_test_image or self.smoke_test_image.endswith(":latest"):
            raise ConfigError(
                "smoke_test_image", self.smoke_test_image, "pin the image to a tag, never :latest"
            )


class K3dPocStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, settings: K3dPocSettings) -> None:
        super().__init__(scope, id)
        s = settings
        use_backend(self, s.backend)
        kubeconfig_path = kubeconfig_path_of(id)
        compute = K3dGpuCompute(
            self,
            "k3d",
            props=K3dProps(
                kubeconfig_path=kubeconfig_path,
                name=s.cluster_name,
                agents=s.agents,
                image=s.image,
                build_image=s.build_image,
                api_port=s.api_port,
                sharing=GpuSharing(time_slicing_replicas=s.time_slicing_replicas),
                preflight_image=s.smoke_test_image if s.smoke_test and "gpu" in s.agents else None,
            ),
        )
        cluster = use_cluster(self, compute.cluster)
        smoke_test_logs = ""

        if "gpu" in s.agents:
            plugin = NvidiaDevicePlugin(
                self, "nvidia-device-plugin", props=NvidiaDevicePluginProps(cluster=cluster)
            )
            if s.smoke_test:
                job = smoke_test_job(cluster, s.smoke_test_image, SMOKE_TEST_NAMESPACE)
                smoke_test = helm.manifests_release(
                    self,
                    "gpu-smoke-test",
                    cluster=cluster,
                    name="gpu-smoke-test",
                    namespace=SMOKE_TEST_NAMESPACE,
                    manifests=[job],
                    depends_on=[plugin.release],
                )
                # The apply waits for the Job to succeed and fails with it (atomic rolls back).
                smoke_test.wait_for_jobs = True
                smoke_test_logs = (
                    f"kubectl --kubeconfig kubeconfig/{id}.yaml logs -n {SMOKE_TEST_NAMESPACE} "
                    f"job/{job['metadata']['name']}"  # type: ignore[index]
                )
        if "infra" in s.agents:
            # The seed's ingress on the infra agent; k3s's bundled Traefik is disabled (K3dProps).
            infra = compute.scheduling_for("infra")
            traefik = helm.release(
                self,
                "traefik",
                name="traefik",
                chart="traefik",
                repository=versions.REPO_TRAEFIK,
                version=versions.TRAEFIK_CHART.version,
                namespace="traefik",
                values={
                    "nodeSelector": infra["nodeSelector"],
                    "tolerations": infra["tolerations"],
                    "providers": TRAEFIK_PROVIDERS,
                    "ingressClass": {"enabled": True, "isDefaultClass": True, "name": "traefik"},
                },
                cluster=cluster,
            )
        if s.monitoring or (s.monitoring is None and "infra" in s.agents):
            Monitoring(
                self,
                "monitoring",
                props=MonitoringProps(
                    cluster=cluster,
                    # No GPU Operator here: the exporter runs beside the device plugin.
                    dcgm=DcgmSource.STANDALONE,
                    scheduling=compute.scheduling_for("infra"),
                    retention=s.monitoring_retention,
                    storage_size="5Gi",
                    size="small",
                    # Grafana downloads nothing: a local cluster may have no way out.
                    nvidia_dashboard=False,
                    # k3d nodes are Docker containers whose / is not a shared mount, which
                    # node-exporter's HostToContainer mount of the host's / needs.
                    host_root_fs=False,
                    grafana_ingress=(
                        GrafanaIngress(s.grafana_host, ingress_class="traefik", tls=False)
                        if s.grafana_host
                        else None
                    ),
                    depends_on=[traefik] if s.grafana_host else (),
                ),
            )
        if s.argocd:
            infra = compute.scheduling_for("infra")
            helm.release(
                self,
                "argocd",
                cluster=cluster,
                name="argo-cd",
                chart="argo-cd",
                repository=versions.REPO_ARGO,
                version=versions.ARGO_CD_CHART.version,
                namespace="argocd",
                values={
                    "global": {"nodeSelector": infra["nodeSelector"], "tolerations": infra["tolerations"]}
                },
            )

        TerraformOutput(self, "kubeconfig_path", value=kubeconfig_path)
        if smoke_test_logs:
            TerraformOutput(self, "smoke_test_logs", value=smoke_test_logs)


def check_instances(instances: Iterable[Any]) -> None:
    """Refuse two k3d-poc instances of one app with the same cluster name or API port. Their stacks
    run k3d on the machine that applies them, one Docker daemon: a second cluster of the same name
    would be the first one (``k3d cluster create`` fails, and the second stack's destroy deletes the
    first's cluster), and Docker publishes a host port once."""
    seen: dict[tuple[str, Any], str] = {}
    for instance in instances:
        if instance.environment != "k3d-poc":
            continue
        settings = instance.settings()
        for name in ("cluster_name", "api_port"):
            value = getattr(settings, name)
            other = seen.setdefault((name, value), instance.stack)
            if other != instance.stack:
                raise ConfigError(
                    name,
                    value,
                    f"the k3d-poc instance {other!r} in main.py has it too, and k3d clusters on one "
                    f"Docker host share names and host ports; give {instance.stack!r} its own",
                    instance=instance.stack,
                )
