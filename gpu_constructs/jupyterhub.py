"""JupyterHub (Zero to JupyterHub) with GPU profiles placed by the GPU cluster contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster
from gpu_constructs.errors import ConfigError

NAMESPACE = "jupyterhub"


@dataclass(frozen=True)
class JupyterHubProps:
    cluster: GpuCluster
    host: str
    """Public host name of the hub (a variable reference allowed)."""
    home_storage_class: str
    """Class of the persistent home volumes (the seed: NFS)."""
    scratch_storage_class: str
    """Class of the per-session scratch volume (the seed: local NVMe)."""
    values: helm.ValuesLayers | None = None
    gpu_profiles: Sequence[int] = (0, 1, 2, 4)
    """GPUs per profile; 0 is the CPU-only profile and the default."""
    home_size: str = "50Gi"
    scratch_size: str = "200Gi"
    cull_timeout_seconds: int = 3600
    """Idle servers are stopped after this long (the seed: one hour)."""
    cluster_issuer: str = "letsencrypt-production"
    ingress_class: str = "traefik"
    pytorch_image: str = versions.NGC_PYTORCH_IMAGE.version
    tensorflow_image: str = versions.NGC_TENSORFLOW_IMAGE.version
    chart_version: str = versions.JUPYTERHUB_CHART.version
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.unique("gpu_profiles", (str(g) for g in self.gpu_profiles))
        for gpus in self.gpu_profiles:
            validate.int_range("gpu_profiles", gpus, 0, 8)
        if 0 not in self.gpu_profiles:
            raise ConfigError("gpu_profiles", tuple(self.gpu_profiles), "keep a 0-GPU profile as the default")
        validate.quantity("home_size", self.home_size)
        validate.quantity("scratch_size", self.scratch_size)
        validate.int_range("cull_timeout_seconds", self.cull_timeout_seconds, 300)


class JupyterHub(Construct):
    """The hub, with 0/1/2/4-GPU profiles, NGC images, NFS homes, NVMe scratch and idle culling."""

    def __init__(self, scope: Construct, id: str, *, props: JupyterHubProps) -> None:
        super().__init__(scope, id)
        self.props = props
        largest = max(props.gpu_profiles)
        props.cluster.check_gpu_demand("gpu_profiles", 1, largest)
        props.cluster.check_pod_fits("gpu_profiles", largest)
        layered = props.values.load("jupyterhub") if props.values else {}
        self.values = helm.deep_merge(layered, self.contract_values())
        self.release = helm.release(
            self,
            "jupyterhub",
            name="jupyterhub",
            chart="jupyterhub",
            repository=versions.REPO_JUPYTERHUB,
            version=props.chart_version,
            namespace=NAMESPACE,
            values=self.values,
            depends_on=[*props.cluster.ready, *props.depends_on],
            timeout=900,
        )

    def profile(self, gpus: int) -> dict[str, Any]:
        props = self.props
        images = {
            "pytorch": {
                "display_name": "PyTorch (NVIDIA NGC)",
                "kubespawner_override": {"image": props.pytorch_image},
            },
            "tensorflow": {
                "display_name": "TensorFlow (NVIDIA NGC)",
                "kubespawner_override": {"image": props.tensorflow_image},
            },
        }
        profile: dict[str, Any] = {
            "display_name": f"{gpus} GPU" + ("s" if gpus != 1 else "") if gpus else "CPU only",
            "slug": f"gpu-{gpus}",
            "description": f"{gpus} NVIDIA GPU(s) on a GPU worker"
            if gpus
            else "No GPU; for editing and light work",
            "profile_options": {"image": {"display_name": "Image", "choices": images}},
        }
        if gpus:
            cluster = props.cluster
            spec = cluster.gpu_pod_spec()
            override: dict[str, Any] = {
                "extra_resource_limits": {GPU_RESOURCE: str(gpus)},
                "extra_resource_guarantees": {GPU_RESOURCE: str(gpus)},
                "tolerations": spec["tolerations"],
                "node_selector": spec["nodeSelector"],
            }
            if cluster.runtime_class:
                override["extra_pod_config"] = {"runtimeClassName": cluster.runtime_class}
            profile["kubespawner_override"] = override
        else:
            profile["default"] = True
        return profile

    def contract_values(self) -> dict[str, Any]:
        props = self.props
        return {
            "singleuser": {
                "image": {
                    "name": props.pytorch_image.rsplit(":", 1)[0],
                    "tag": props.pytorch_image.rsplit(":", 1)[1],
                },
                "profileList": [self.profile(gpus) for gpus in sorted(props.gpu_profiles)],
                "storage": {
                    "type": "dynamic",
                    "capacity": props.home_size,
                    "dynamic": {"storageClass": props.home_storage_class},
                    "extraVolumes": [
                        {
                            "name": "scratch",
                            "ephemeral": {
                                "volumeClaimTemplate": {
                                    "spec": {
                                        "accessModes": ["ReadWriteOnce"],
                                        "storageClassName": props.scratch_storage_class,
                                        "resources": {"requests": {"storage": props.scratch_size}},
                                    }
                                }
                            },
                        }
                    ],
                    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                },
            },
            # The image pullers pull the profiles' NGC images onto every node they tolerate: with the
            # GPU taint tolerated they reach the GPU workers before a GPU notebook's start timeout.
            "prePuller": {"extraTolerations": [props.cluster.gpu_toleration]},
            "cull": {"enabled": True, "timeout": props.cull_timeout_seconds, "every": 300},
            "proxy": {"service": {"type": "ClusterIP"}},
            "ingress": {
                "enabled": True,
                "ingressClassName": props.ingress_class,
                "annotations": {"cert-manager.io/cluster-issuer": props.cluster_issuer},
                "hosts": [props.host],
                "tls": [{"hosts": [props.host], "secretName": "jupyterhub-tls"}],
            },
        }
