"""KEDA and its HTTP add-on: workloads that scale to zero when idle and back on their traffic.

The HorizontalPodAutoscaler cannot scale below one replica (``minReplicas: 0`` needs the
HPAScaleToZero alpha feature gate, which EKS does not enable), so a GPU workload behind one keeps a
GPU node running around the clock. KEDA scales a Deployment to zero and back; its HTTP add-on puts an
interceptor in front of the application's Service that counts the requests (the scaling metric) and
holds them while the first replica starts. HTTP traffic is what the inference endpoint receives, so
no queue needs to exist for it (a queue trigger would need the clients to enqueue their requests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.app_chart import HttpScaleToZero
from gpu_constructs.cluster import GpuCluster

NAMESPACE = "keda"
HTTP_ADD_ON_CHART = "keda-add-ons-http"
INTERCEPTOR_PROXY_SERVICE = f"{HTTP_ADD_ON_CHART}-interceptor-proxy"
"""``<chart name>-<interceptor.proxy.service>``: the chart's templates/interceptor/service-proxy.yaml."""
INTERCEPTOR_PROXY_PORT = 8080
INTERCEPTOR_ADMIN_PORT = 9090
"""The interceptor's /readyz and /livez are on its admin port (http-add-on v0.15.0 interceptor/admin.go)."""


@dataclass(frozen=True)
class KedaProps:
    cluster: GpuCluster
    node_selector: Mapping[str, str]
    """Where KEDA's and the add-on's pods run: the system nodes, never the GPU nodes."""
    tolerations: Sequence[Mapping[str, str]] = ()
    interceptor_replicas: int = 2
    """The interceptor is in every request's path: two keep it up while a node drains."""
    scaler_replicas: int = 2
    depends_on: Sequence[Any] = ()
    keda_version: str = versions.KEDA_CHART.version
    http_add_on_version: str = versions.KEDA_HTTP_ADD_ON_CHART.version

    def __post_init__(self) -> None:
        validate.int_range("interceptor_replicas", self.interceptor_replicas, 1, 50)
        validate.int_range("scaler_replicas", self.scaler_replicas, 1, 10)


class Keda(Construct):
    """The KEDA release and, after it, the HTTP add-on's (its ScaledObject needs KEDA's CRDs)."""

    def __init__(self, scope: Construct, id: str, *, props: KedaProps) -> None:
        super().__init__(scope, id)
        self.props = props
        placement = {
            "nodeSelector": dict(props.node_selector),
            "tolerations": [dict(t) for t in props.tolerations],
        }
        self.keda = helm.release(
            self,
            "keda",
            cluster=props.cluster,
            name="keda",
            chart="keda",
            repository=versions.REPO_KEDA,
            version=props.keda_version,
            namespace=NAMESPACE,
            values={
                # The chart's top-level nodeSelector and tolerations apply to the operator, the
                # metrics API server and the admission webhooks (keda 2.20.2 templates/*/deployment.yaml).
                **placement,
                # The admission webhook validates ScaledObjects (vscaledobject.kb.io); the chart's
                # default, Ignore, is kept on purpose: with Fail, a moment without a webhook pod
                # refuses every ScaledObject change, the HTTP add-on operator's included, and the
                # workload stays at its last replica count. Set here so a chart default change shows.
                "webhooks": {"failurePolicy": "Ignore"},
            },
            depends_on=props.depends_on,
        )
        self.http_add_on = helm.release(
            self,
            "http-add-on",
            cluster=props.cluster,
            name="http-add-on",
            chart=HTTP_ADD_ON_CHART,
            repository=versions.REPO_KEDA,
            version=props.http_add_on_version,
            namespace=NAMESPACE,
            values={
                "operator": dict(placement),
                "scaler": {**placement, "replicas": props.scaler_replicas},
                "interceptor": {
                    **placement,
                    "replicas": {
                        "min": props.interceptor_replicas,
                        "max": max(props.interceptor_replicas, 10),
                    },
                    "proxy": {"port": INTERCEPTOR_PROXY_PORT},
                    "admin": {"port": INTERCEPTOR_ADMIN_PORT},
                },
            },
            depends_on=[self.keda],
        )

    def scale_to_zero(self, **settings: Any) -> HttpScaleToZero:
        """What an AppChart needs to route through this add-on's interceptor."""
        return HttpScaleToZero(
            interceptor_namespace=NAMESPACE,
            interceptor_service=INTERCEPTOR_PROXY_SERVICE,
            interceptor_port=INTERCEPTOR_PROXY_PORT,
            **settings,
        )
