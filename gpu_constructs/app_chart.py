"""AppChart: a GPU application with everything production needs around it.

The application's settings come from ``helm-values/<chart>/base.yaml`` and the environment's overlay;
AppChart renders them into Kubernetes objects (Deployment, Service, Ingress, HPA, PDB,
ServiceAccount, ResourceQuota, LimitRange, NetworkPolicies) and installs them as one Helm release.
GPU placement comes from the cluster contract and is applied last, so no values file can drop it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constructs import Construct

from gpu_constructs import helm, validate
from gpu_constructs.cluster import GPU_RESOURCE, GpuCluster
from gpu_constructs.database import METRICS_PORT, OPERATOR_NAMESPACE, Postgres
from gpu_constructs.errors import ConfigError
from gpu_constructs.vault import Vault

ACME_HTTP01_SOLVER_LABEL = "acme.cert-manager.io/http01-solver"
ACME_HTTP01_SOLVER_PORT = 8089
STARTUP_PROBE_PERIOD = 10
STARTUP_PROBE_FAILURES = 60
"""Model loading can take minutes: the startup probe allows 10 (60 x 10 s), then liveness takes over."""
START_ALLOWANCE = 600
"""Seconds for pulling a multi-GB CUDA image and the Vault agent's init before the probe starts."""
RELEASE_TIMEOUT = STARTUP_PROBE_PERIOD * STARTUP_PROBE_FAILURES + START_ALLOWANCE
"""Helm waits this long for the app's pod: a start the probe would still allow never fails the
apply (and with atomic, never rolls a healthy but slow upgrade back)."""
VAULT_SECRETS_DIR = "/vault/secrets"
"""Where the Vault agent writes what it renders (vault.hashicorp.com/agent-inject-secret-<name>)."""


class _Unset:
    def __repr__(self) -> str:
        return "unset"


UNSET: Any = _Unset()
"""The default of a prop the stack must give: AppChart knows nothing about the cluster's ingress."""

DEFAULT_VALUES: dict[str, Any] = {
    "replicas": 1,
    "port": 8000,
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
    "env": {},
    "probes": {"liveness": "/health", "readiness": "/ready", "startup": "/health"},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 1,
        "targetCPUUtilizationPercentage": 70,
    },
    "podDisruptionBudget": {"minAvailable": 1},
    "quota": {"cpu": "16", "memory": "64Gi", "gpus": 1, "pods": 30},
    "podAnnotations": {},
}


@dataclass(frozen=True)
class HttpScaleToZero:
    """Scale the Deployment between zero and ``autoscaling.maxReplicas`` on its HTTP traffic, through
    KEDA's HTTP add-on: the Ingress sends requests to the add-on's interceptor, which holds them
    while the Deployment scales up from zero and forwards them to the application's Service; an
    HTTPScaledObject (keda-add-ons-http 0.15.0, http.keda.sh/v1alpha1) names the host, the
    Deployment and the Service, and the add-on turns it into a KEDA ScaledObject."""

    interceptor_namespace: str
    """Namespace of the interceptor's proxy Service; the Ingress lives there, next to it."""
    interceptor_service: str
    interceptor_port: int
    scaledown_period_s: int = 300
    """Idle seconds before the last replica goes."""
    cold_start_timeout_s: int = 900
    """How long the interceptor holds a request while the Deployment has no ready replica."""
    initial_cooldown_s: int = 0
    """Seconds after the HTTPScaledObject is created before KEDA may scale to zero: long enough for
    the first pod to start, so the release's wait sees it ready."""
    target_concurrency: int = 4
    """Concurrent requests per replica before KEDA adds one."""

    def __post_init__(self) -> None:
        validate.k8s_name("interceptor_namespace", self.interceptor_namespace)
        validate.int_range("interceptor_port", self.interceptor_port, 1, 65535)
        validate.int_range("scaledown_period_s", self.scaledown_period_s, 30, 86400)
        validate.int_range("cold_start_timeout_s", self.cold_start_timeout_s, 1, 3600)
        validate.int_range("initial_cooldown_s", self.initial_cooldown_s, 0, 86400)
        validate.int_range("target_concurrency", self.target_concurrency, 1, 10000)


@dataclass(frozen=True)
class AppChartProps:
    cluster: GpuCluster
    name: str
    """Name of the release, Deployment, Service and ServiceAccount."""
    namespace: str
    image: str
    """Container image with a pinned tag or digest (a variable reference allowed)."""
    host: str | None
    """Public host name of the Ingress; None: no Ingress, the application is reached only from
    inside the cluster."""
    values: helm.ValuesLayers
    """Where the application's values files are; the chart folder is ``values_chart``."""
    values_chart: str = "app"
    gpus: int = 1
    """GPUs per pod (request and limit). 0 runs the application without a GPU."""
    ingress_class: str | None = field(default=UNSET, kw_only=True)
    """IngressClass of the cluster's ingress controller (``traefik``, ``nginx``, ``alb``): required,
    None only with ``host=None`` (no Ingress)."""
    ingress_namespace: str | None = field(default=UNSET, kw_only=True)
    """Namespace of the ingress controller's pods, which the NetworkPolicies admit to the
    application: required, None where no controller reaches the application (no Ingress, or
    ``network_policies=False``)."""
    cluster_issuer: str | None = field(default=UNSET, kw_only=True)
    """cert-manager ClusterIssuer of the Ingress's certificate: required, None where nothing issues
    one here (the load balancer terminates TLS itself, an ALB with an ACM certificate set through
    ``ingress_annotations``, or no Ingress)."""
    ingress_annotations: Mapping[str, str] = field(default_factory=dict)
    """Extra annotations of the Ingress, e.g. the ALB scheme and certificate."""
    vault: Vault | None = None
    """Vault whose agent injects the app secret into ``/vault/secrets/app``; None: no injection."""
    database: Postgres | None = None
    """The database whose URI becomes DATABASE_URL; None when the application has none."""
    network_policies: bool = True
    """Deny all traffic to and from the namespace except the paths the application needs."""
    scale_to_zero: HttpScaleToZero | None = None
    """Scale to zero when idle through KEDA's HTTP add-on, instead of the HorizontalPodAutoscaler
    (which cannot go below one replica without the HPAScaleToZero alpha feature gate)."""
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.k8s_name("app name", self.name)
        validate.k8s_name("app namespace", self.namespace)
        validate.int_range("gpus", self.gpus, 0, 8)
        if not validate.is_reference(self.image):
            _check_pinned_image("app image", self.image)
        if self.host is not None and not validate.is_reference(self.host):
            validate.dns_name("host", self.host)
        self._check_ingress()

    def _check_ingress(self) -> None:
        """Each of the ingress's three props given, and consistent with the host: one line naming
        what to add."""
        fixes = {
            "ingress_class": "give the IngressClass of the cluster's ingress controller, e.g. "
            "ingress_class='traefik' (or 'nginx', 'alb'); None only with host=None",
            "ingress_namespace": "give the namespace of the ingress controller's pods, e.g. "
            "ingress_namespace='traefik', which the NetworkPolicies admit; None where no controller "
            "reaches the app",
            "cluster_issuer": "give the cert-manager ClusterIssuer of the Ingress's certificate, e.g. "
            "cluster_issuer='letsencrypt-production'; None where the load balancer terminates TLS "
            "or there is no Ingress",
        }
        for name, fix in fixes.items():
            if getattr(self, name) is UNSET:
                raise ConfigError(name, UNSET, fix)
        # IngressClass and ClusterIssuer names are DNS subdomains, namespaces DNS labels
        for name in ("ingress_class", "cluster_issuer"):
            if getattr(self, name) is not None:
                validate.dns_name(name, getattr(self, name))
        if self.ingress_namespace is not None:
            validate.k8s_name("ingress_namespace", self.ingress_namespace)
        if self.host is None:
            for name in ("ingress_class", "cluster_issuer"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        name, getattr(self, name), "an app without a host has no Ingress; give None"
                    )
            if self.scale_to_zero is not None:
                raise ConfigError(
                    "host",
                    None,
                    "scale to zero routes the host's requests through its interceptor; give a host",
                )
            return
        if self.ingress_class is None:
            raise ConfigError(
                "ingress_class",
                None,
                f"an app with a host{'' if validate.is_reference(self.host) else f' ({self.host})'} "
                "needs an Ingress: give the IngressClass of the "
                "cluster's ingress controller ('traefik', 'nginx', 'alb'), or host=None for no Ingress",
            )
        if self.network_policies and self.ingress_namespace is None:
            raise ConfigError(
                "ingress_namespace",
                None,
                "the NetworkPolicies admit the ingress controller's pods by their namespace: give it, "
                "or network_policies=False",
            )


def _check_pinned_image(field: str, image: str) -> None:
    name, _, tag = image.rpartition(":")
    if "@sha256:" not in image and (not name or "/" in tag or tag in ("", "latest")):
        raise ConfigError(field, image, "pin the image to a version tag or digest, never 'latest'")


class AppChart(Construct):
    """The application release, rendered from layered values and the GPU cluster contract."""

    def __init__(self, scope: Construct, id: str, *, props: AppChartProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.settings = helm.deep_merge(DEFAULT_VALUES, props.values.load(props.values_chart))
        self._check_settings()
        self.release = helm.manifests_release(
            self,
            "release",
            cluster=props.cluster,
            name=props.name,
            namespace=props.namespace,
            manifests=self.manifests(),
            depends_on=props.depends_on,
            timeout=RELEASE_TIMEOUT,
        )

    # --- settings -----------------------------------------------------------------------------------
    def _check_settings(self) -> None:
        unknown = sorted(set(self.settings) - set(DEFAULT_VALUES))
        if unknown:
            raise ConfigError(
                f"helm-values/{self.props.values_chart}",
                unknown,
                f"unknown keys; the application values take {', '.join(sorted(DEFAULT_VALUES))}",
            )
        s = self.settings
        validate.int_range("replicas", s["replicas"], 1, 100)
        validate.int_range("port", s["port"], 1, 65535)
        scaling = s["autoscaling"]
        validate.int_range("autoscaling.minReplicas", scaling["minReplicas"], 1, 100)
        validate.int_range(
            "autoscaling.maxReplicas",
            scaling["maxReplicas"],
            scaling["minReplicas"],
            100,
            why="maxReplicas cannot be below minReplicas",
        )
        validate.int_range(
            "podDisruptionBudget.minAvailable", s["podDisruptionBudget"]["minAvailable"], 0, 100
        )
        if self.props.scale_to_zero is not None and not scaling["enabled"]:
            raise ConfigError(
                "autoscaling.enabled",
                scaling["enabled"],
                "scale to zero runs between 0 and autoscaling.maxReplicas replicas; set it to true",
            )
        most = max(s["replicas"], scaling["maxReplicas"] if scaling["enabled"] else 0)
        if self.props.gpus:
            self.props.cluster.check_gpu_demand(
                "autoscaling.maxReplicas" if scaling["enabled"] else "replicas", most, self.props.gpus
            )
            validate.int_range(
                "quota.gpus",
                s["quota"]["gpus"],
                most * self.props.gpus,
                why=f"the quota must admit {most} pods x {self.props.gpus} GPU",
            )
        if s["podDisruptionBudget"]["minAvailable"] >= max(s["replicas"], scaling["minReplicas"]) > 1:
            raise ConfigError(
                "podDisruptionBudget.minAvailable",
                s["podDisruptionBudget"]["minAvailable"],
                "keep it below the replica count, or no node can ever be drained",
            )

    @property
    def labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": self.props.name, "app.kubernetes.io/part-of": self.props.name}

    def _meta(self, name: str | None = None) -> dict[str, Any]:
        return {"name": name or self.props.name, "namespace": self.props.namespace, "labels": self.labels}

    # --- manifests ----------------------------------------------------------------------------------
    def manifests(self) -> list[dict[str, Any]]:
        objects = [
            self.service_account(),
            self.deployment(),
            self.service(),
            *([self.ingress()] if self.props.host is not None else []),
            self.pod_disruption_budget(),
            self.resource_quota(),
            self.limit_range(),
        ]
        if self.props.scale_to_zero is not None:
            objects.append(self.http_scaled_object(self.props.scale_to_zero))
        elif self.settings["autoscaling"]["enabled"]:
            objects.append(self.autoscaler())
        if self.props.network_policies:
            objects.extend(self.network_policies())
        return objects

    def service_account(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": self._meta(),
            # Only the Vault agent needs the token, to log in with Kubernetes auth.
            "automountServiceAccountToken": self.props.vault is not None,
        }

    def pod_annotations(self) -> dict[str, str]:
        annotations = dict(self.settings["podAnnotations"])
        vault = self.props.vault
        if vault is not None:
            annotations.update(
                {
                    "vault.hashicorp.com/agent-inject": "true",
                    "vault.hashicorp.com/role": vault.policy_name,
                    "vault.hashicorp.com/agent-inject-secret-app": vault.secret_paths["app"],
                    "vault.hashicorp.com/agent-pre-populate": "true",
                }
            )
            template = vault.database_uri_template()
            if template is not None:
                # Short-lived credentials from the database engine, renewed by the agent sidecar.
                annotations["vault.hashicorp.com/agent-inject-secret-database"] = vault.secret_paths[
                    "database"
                ]
                annotations["vault.hashicorp.com/agent-inject-template-database"] = template
        return dict(sorted(annotations.items()))

    def container(self) -> dict[str, Any]:
        s = self.settings
        resources = helm.deep_merge(s["resources"], {})
        if self.props.gpus:
            resources.setdefault("requests", {})[GPU_RESOURCE] = self.props.gpus
            resources.setdefault("limits", {})[GPU_RESOURCE] = self.props.gpus
        env = [{"name": key, "value": str(value)} for key, value in sorted(s["env"].items())]
        vault = self.props.vault
        if vault is not None and vault.database_uri_template() is not None:
            # Only Vault's short-lived credentials: the operator's Secret holds the database owner's
            # static password, which would outlive every lease and every revocation.
            env.append({"name": "DATABASE_URL_FILE", "value": f"{VAULT_SECRETS_DIR}/database"})
        elif self.props.database is not None:
            env.append(
                {
                    "name": "DATABASE_URL",
                    "valueFrom": {
                        "secretKeyRef": {"name": self.props.database.credentials_secret, "key": "uri"}
                    },
                }
            )

        def probe(path: str, period: int, failures: int) -> dict[str, Any]:
            return {
                "httpGet": {"path": path, "port": "http"},
                "periodSeconds": period,
                "failureThreshold": failures,
                "timeoutSeconds": 5,
            }

        return {
            "name": "app",
            "image": self.props.image,
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": s["port"], "protocol": "TCP"}],
            "env": env,
            "resources": resources,
            "startupProbe": probe(s["probes"]["startup"], STARTUP_PROBE_PERIOD, STARTUP_PROBE_FAILURES),
            "livenessProbe": probe(s["probes"]["liveness"], 20, 3),
            "readinessProbe": probe(s["probes"]["readiness"], 10, 3),
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            },
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        }

    def deployment(self) -> dict[str, Any]:
        pod_spec: dict[str, Any] = {
            "serviceAccountName": self.props.name,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [self.container()],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }
        if self.props.gpus:
            pod_spec.update(self.props.cluster.gpu_pod_spec())
            pod_spec["affinity"] = self.props.cluster.gpu_node_affinity()
        template_meta: dict[str, Any] = {"labels": self.labels}
        annotations = self.pod_annotations()
        if annotations:
            template_meta["annotations"] = annotations
        spec: dict[str, Any] = {
            "selector": {"matchLabels": self.labels},
            "strategy": self.rollout_strategy(),
            "template": {"metadata": template_meta, "spec": pod_spec},
        }
        if not self.scaled:
            spec = {"replicas": self.settings["replicas"], **spec}
        # A Deployment an autoscaler manages carries no spec.replicas: Helm would set it back to the
        # chart's count on every upgrade (its three-way merge patches a field the chart sets), which
        # undoes the autoscaler's decision, and from zero launches a GPU node for nothing. Without
        # the field the API server starts it at one replica on install and leaves it to the scaler.
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": self._meta(), "spec": spec}

    @property
    def scaled(self) -> bool:
        """An autoscaler (KEDA's or the HPA) owns the replica count."""
        return self.props.scale_to_zero is not None or bool(self.settings["autoscaling"]["enabled"])

    def rollout_strategy(self) -> dict[str, Any]:
        """Zero-downtime (one extra pod first) where the GPUs have room for it; otherwise one old
        pod goes before its replacement starts. A surge pod that needs a GPU the quota or the nodes
        do not have is refused or stays Pending, the rollout never finishes and an atomic Helm
        release rolls every image change back.

        Without that room, a Deployment that can run one replica is recreated: Helm counts a
        Deployment ready when its new ReplicaSet has ``replicas - maxUnavailable`` ready pods (helm
        v3.18 pkg/kube/ready.go deploymentReady; maxUnavailable is 0 for Recreate), so at one
        replica with ``maxUnavailable: 1`` it waits for no pod at all, and a pod that never starts
        leaves the apply green. A rolling update of one pod is down for the pod's start anyway;
        where the autoscaler has scaled up, a rollout takes every pod down (``minReplicas: 2``, or
        replicas 2, keeps a rolling update that Helm waits for)."""
        s = self.settings
        most = max(s["replicas"], s["autoscaling"]["maxReplicas"] if s["autoscaling"]["enabled"] else 0)
        fewest = min(
            s["replicas"], s["autoscaling"]["minReplicas"] if s["autoscaling"]["enabled"] else s["replicas"]
        )
        if self.props.gpus:
            room = min(
                s["quota"]["gpus"],
                self.props.cluster.gpu_capacity
                if self.props.cluster.gpu_capacity is not None
                else s["quota"]["gpus"],
            )
            if (most + 1) * self.props.gpus > room:
                if fewest <= 1:
                    return {"type": "Recreate"}
                return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}

    def service(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._meta(),
            "spec": {
                "selector": self.labels,
                "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            },
        }

    def ingress(self) -> dict[str, Any]:
        props = self.props
        meta = self._meta()
        annotations = dict(props.ingress_annotations)
        tls: dict[str, Any] = {"hosts": [props.host]}
        if props.cluster_issuer is not None:
            annotations["cert-manager.io/cluster-issuer"] = props.cluster_issuer
            tls["secretName"] = f"{props.name}-tls"
        if annotations:
            meta["annotations"] = dict(sorted(annotations.items()))
        backend: dict[str, Any] = {"service": {"name": props.name, "port": {"name": "http"}}}
        scale = props.scale_to_zero
        if scale is not None:
            # Requests go through the interceptor, which counts them (the scaler's metric) and holds
            # them while the Deployment is at zero; an Ingress reaches only Services of its own
            # namespace, so it lives next to the interceptor's.
            meta["namespace"] = scale.interceptor_namespace
            backend = {
                "service": {"name": scale.interceptor_service, "port": {"number": scale.interceptor_port}}
            }
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": meta,
            "spec": {
                "ingressClassName": props.ingress_class,
                "tls": [tls],
                "rules": [
                    {
                        "host": props.host,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": backend,
                                }
                            ]
                        },
                    }
                ],
            },
        }

    def autoscaler(self) -> dict[str, Any]:
        scaling = self.settings["autoscaling"]
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": self._meta(),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.props.name},
                "minReplicas": scaling["minReplicas"],
                "maxReplicas": scaling["maxReplicas"],
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {
                                "type": "Utilization",
                                "averageUtilization": scaling["targetCPUUtilizationPercentage"],
                            },
                        },
                    }
                ],
            },
        }

    def http_scaled_object(self, scale: HttpScaleToZero) -> dict[str, Any]:
        scaling = self.settings["autoscaling"]
        return {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": self._meta(),
            "spec": {
                "hosts": [self.props.host],
                "scaleTargetRef": {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": self.props.name,
                    "service": self.props.name,
                    "port": 80,
                },
                "replicas": {"min": 0, "max": scaling["maxReplicas"]},
                "scaledownPeriod": scale.scaledown_period_s,
                "initialCooldownPeriod": scale.initial_cooldown_s,
                "scalingMetric": {"concurrency": {"targetValue": scale.target_concurrency}},
                "timeouts": {
                    "conditionWait": f"{scale.cold_start_timeout_s}s",
                    # The add-on's default (interceptor KEDA_HTTP_RESPONSE_HEADER_TIMEOUT, 300s).
                    "responseHeader": "300s",
                },
            },
        }

    def pod_disruption_budget(self) -> dict[str, Any]:
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": self._meta(),
            "spec": {
                "minAvailable": self.settings["podDisruptionBudget"]["minAvailable"],
                "selector": {"matchLabels": self.labels},
            },
        }

    def resource_quota(self) -> dict[str, Any]:
        quota = self.settings["quota"]
        return {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": self._meta(f"{self.props.name}-quota"),
            "spec": {
                "hard": {
                    "requests.cpu": str(quota["cpu"]),
                    "requests.memory": str(quota["memory"]),
                    "limits.memory": str(quota["memory"]),
                    f"requests.{GPU_RESOURCE}": str(quota["gpus"]),
                    "pods": str(quota["pods"]),
                }
            },
        }

    def limit_range(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": self._meta(f"{self.props.name}-limits"),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                        "default": {"memory": "512Mi"},
                        # No GPU here: the API server turns a ``max`` into the default limit of
                        # every container (SetDefaults_LimitRangeItem) and refuses a container
                        # without one, so the injected Vault agent and the database's pods would
                        # each be given a GPU or refused. The ResourceQuota caps the namespace.
                    }
                ]
            },
        }

    def network_policies(self) -> list[dict[str, Any]]:
        props = self.props
        app = {"matchLabels": self.labels}

        def namespace(name: str) -> dict[str, Any]:
            return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

        def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
            return {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": self._meta(f"{props.name}-{name}"),
                "spec": spec,
            }

        dns = {
            "to": [namespace("kube-system")],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
        app_egress: list[dict[str, Any]] = [dns]
        if props.vault is not None:
            app_egress.append(
                {"to": [namespace(props.vault.namespace)], "ports": [{"protocol": "TCP", "port": 8200}]}
            )
        policies = [policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})]
        ingress_namespace = props.ingress_namespace
        if ingress_namespace is not None:
            policies.append(
                policy(
                    "from-ingress",
                    {
                        "podSelector": app,
                        "policyTypes": ["Ingress"],
                        "ingress": [
                            {
                                "from": [namespace(ingress_namespace)],
                                "ports": [{"protocol": "TCP", "port": self.settings["port"]}],
                            }
                        ],
                    },
                )
            )
        # cert-manager's HTTP-01 solver pods run in the namespace of the Ingress's Certificate, behind
        # the default deny: Let's Encrypt's request (and cert-manager's own self-check) reaches them
        # through the ingress controller on the solver's port. cert-manager v1.21.1 labels them
        # acme.cert-manager.io/http01-solver=true and listens on 8089 (pkg/issuer/acme/http/pod.go
        # podLabels, http.go acmeSolverListenPort). With DNS-01, or no issuer, there are no solver pods.
        if ingress_namespace is not None and props.cluster_issuer is not None and props.host is not None:
            policies.append(
                policy(
                    "acme-http01-solver",
                    {
                        "podSelector": {"matchLabels": {ACME_HTTP01_SOLVER_LABEL: "true"}},
                        "policyTypes": ["Ingress"],
                        "ingress": [
                            {
                                "from": [namespace(ingress_namespace)],
                                "ports": [{"protocol": "TCP", "port": ACME_HTTP01_SOLVER_PORT}],
                            }
                        ],
                    },
                )
            )
        database = props.database
        if database is not None:
            db = {"podSelector": {"matchLabels": database.pod_labels}}
            app_egress.append({"to": [db], "ports": [{"protocol": "TCP", "port": 5432}]})
            api_server = {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}
            # Vault's database engine creates and drops the short-lived users.
            vault_clients = (
                [{"from": [namespace(props.vault.namespace)], "ports": [{"protocol": "TCP", "port": 5432}]}]
                if props.vault is not None
                and props.vault.connects_database
                and props.vault.database is database
                else []
            )
            # Prometheus scrapes the instances' exporter through the database's PodMonitor.
            scrapers = (
                [
                    {
                        "from": [namespace(database.monitoring_namespace)],
                        "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
                    }
                ]
                if database.monitoring_namespace
                else []
            )
            policies.append(
                policy(
                    "database",
                    {
                        "podSelector": db["podSelector"],
                        "policyTypes": ["Ingress", "Egress"],
                        # Clients in the namespace (the app) query it; the operator manages it on
                        # 8000; the instances replicate to each other, report to the API server and
                        # archive to the object store (443, or the endpoint's own port).
                        "ingress": [
                            {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 5432}]},
                            {
                                "from": [namespace(OPERATOR_NAMESPACE)],
                                "ports": [{"protocol": "TCP", "port": 8000}],
                            },
                            *vault_clients,
                            *scrapers,
                        ],
                        "egress": [dns, {"to": [db]}, api_server, *database.backup_egress],
                    },
                )
            )
        policies.append(
            policy("app-egress", {"podSelector": app, "policyTypes": ["Egress"], "egress": app_egress})
        )
        return policies
