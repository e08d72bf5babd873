from __future__ import annotations

from pathlib import Path

import pytest

from gpu_constructs.app_chart import UNSET, AppChart, AppChartProps, HttpScaleToZero
from gpu_constructs.database import Postgres
from gpu_constructs.errors import ConfigError
from gpu_constructs.helm import ValuesLayers
from gpu_constructs.hostexec import SshHost
from gpu_constructs.vault import Vault, VaultProps
from tests.conftest import ROOT, by_kind, make_cluster, manifests_of, resources
from tests.support.validators import validate_manifest
from tests.support.workloads import helm_waits_for, postgres_props

INGRESS = {
    "ingress_class": "traefik",
    "ingress_namespace": "traefik",
    "cluster_issuer": "letsencrypt-production",
}
"""What a stack with Traefik and cert-manager's Let's Encrypt issuer gives (single-node's)."""


def build(
    synth,
    values_dir: Path = ROOT / "helm-values",
    overlay="production",
    cluster=None,
    with_deps=True,
    vault_database=False,
    **overrides,
):
    cluster = cluster or make_cluster()
    made = {}

    def go(stack):
        extra = {}
        if with_deps:
            extra["database"] = Postgres(
                stack,
                "db",
                props=postgres_props(cluster=cluster, storage_class="x"),
            )
            connected = (
                {"database": extra["database"], "bootstrap_host": SshHost("10.0.0.5", "ubuntu", "~/.ssh/k")}
                if vault_database
                else {}
            )
            extra["vault"] = Vault(
                stack,
                "vault",
                props=VaultProps(cluster=cluster, environment=overlay, storage_class="x", **connected),
            )
        fields = {
            "cluster": cluster,
            "name": "ffe-backend",
            "namespace": "ffe",
            "image": "ghcr.io/acme/ffe-backend:2.0.1",
            "host": "api.example.com",
            "values": ValuesLayers(overlay, values_dir),
            **INGRESS,
            **extra,
        }
        fields.update(overrides)
        made["app"] = AppChart(stack, "app", props=AppChartProps(**fields))

    synthesized = synth(go)
    (release,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == "ffe-backend"]
    return manifests_of(release), made["app"]


def pod_spec(objects):
    (deployment,) = by_kind(objects, "Deployment")
    return deployment["spec"]["template"]["spec"]


def test_gpu_request_placement_and_runtime_class_come_from_the_contract(synth):
    objects, _ = build(synth)
    spec = pod_spec(objects)
    container = spec["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert spec["nodeSelector"] == {"nvidia.com/gpu": "true"}
    assert spec["runtimeClassName"] == "nvidia"
    assert "nodeAffinity" in spec["affinity"]


def test_seed_resources_probes_rollout_and_security(synth):
    objects, _ = build(synth)
    spec = pod_spec(objects)
    container = spec["containers"][0]
    assert (
        container["resources"]["requests"]["cpu"] == "4"
        and container["resources"]["limits"]["memory"] == "8Gi"
    )
    assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container)
    assert spec["securityContext"]["runAsUser"] == 1000 and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "ffe-backend"


def test_vault_injection_and_database_url(synth):
    objects, _ = build(synth)
    (deployment,) = by_kind(objects, "Deployment")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject"] == "true"
    assert annotations["vault.hashicorp.com/role"] == "ffe-backend"
    assert annotations["vault.hashicorp.com/agent-inject-secret-app"] == "secret/data/production/app"
    env = {e["name"]: e for e in pod_spec(objects)["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "ffe-db-app", "key": "uri"}


def test_vault_database_credentials_are_injected_when_vault_connects_the_database(synth):
    objects, _ = build(synth)
    annotations = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert "vault.hashicorp.com/agent-inject-secret-database" not in annotations
    database_policy = next(
        p["spec"]
        for p in by_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"] == "ffe-backend-database"
    )
    assert len(database_policy["ingress"]) == 2

    objects, _ = build(synth, vault_database=True)
    # Vault's short-lived credentials only: never the owner's static password from the operator's Secret.
    env = {e["name"]: e for e in pod_spec(objects)["containers"][0]["env"]}
    assert "DATABASE_URL" not in env and "ffe-db-app" not in str(pod_spec(objects))
    assert env["DATABASE_URL_FILE"] == {"name": "DATABASE_URL_FILE", "value": "/vault/secrets/database"}
    annotations = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["vault.hashicorp.com/agent-inject-secret-database"] == "database/production/creds/ffe"
    template = annotations["vault.hashicorp.com/agent-inject-template-database"]
    assert template.startswith('{{- with secret "database/production/creds/ffe" -}}postgresql://')
    assert "@ffe-db-rw.ffe.svc:5432/ffe?sslmode=require" in template
    database_policy = next(
        p["spec"]
        for p in by_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"] == "ffe-backend-database"
    )
    # Vault's database engine reaches PostgreSQL from its own namespace.
    assert {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
        "ports": [{"protocol": "TCP", "port": 5432}],
    } in database_policy["ingress"]


def test_tls_ingress_hpa_pdb_quota_and_limits(synth):
    objects, _ = build(synth)
    (ingress,) = by_kind(objects, "Ingress")
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt-production"}
    assert ingress["spec"]["tls"] == [{"hosts": ["api.example.com"], "secretName": "ffe-backend-tls"}]
    (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)
    assert by_kind(objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 0
    quota = by_kind(objects, "ResourceQuota")[0]["spec"]["hard"]
    assert quota["requests.nvidia.com/gpu"] == "1"
    assert "max" not in by_kind(objects, "LimitRange")[0]["spec"]["limits"][0]


def test_network_policies_allow_only_the_needed_paths(synth):
    objects, _ = build(synth)
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {
        "ffe-backend-default-deny",
        "ffe-backend-from-ingress",
        "ffe-backend-acme-http01-solver",
        "ffe-backend-database",
        "ffe-backend-app-egress",
    }
    assert policies["ffe-backend-default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    source = policies["ffe-backend-from-ingress"]["ingress"][0]["from"][0]
    assert source == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "traefik"}}}
    egress_ports = [rule.get("ports") for rule in policies["ffe-backend-app-egress"]["egress"]]
    assert [{"protocol": "TCP", "port": 8200}] in egress_ports and [
        {"protocol": "TCP", "port": 5432}
    ] in egress_ports


def _admitted(policies: list[dict], namespace: str, labels: dict, source_namespace: str, port: int) -> bool:
    """Kubernetes NetworkPolicy ingress semantics for rules written as namespace selectors on
    kubernetes.io/metadata.name: a pod no Ingress policy selects takes everything; a selected pod
    takes only what one of the selecting policies' rules admits."""

    def selects(selector: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

    selecting = [
        p["spec"]
        for p in policies
        if p["metadata"]["namespace"] == namespace
        and "Ingress" in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"])
    ]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get("ingress", []):
            sources = [
                peer["namespaceSelector"]["matchLabels"].get("kubernetes.io/metadata.name")
                for peer in rule.get("from", [])
                if "namespaceSelector" in peer and "podSelector" not in peer
            ]
            ports = [p["port"] for p in rule.get("ports", []) if p.get("protocol", "TCP") == "TCP"]
            if source_namespace in sources and (not rule.get("ports") or port in ports):
                return True
    return False


def test_the_ingress_controller_reaches_cert_managers_http01_solver_behind_the_default_deny(synth):
    objects, _ = build(synth)
    policies = by_kind(objects, "NetworkPolicy")
    # The labels cert-manager v1.21.1 gives a solver pod (pkg/issuer/acme/http/pod.go podLabels),
    # in the Certificate's namespace, listening on 8089.
    solver = {
        "acme.cert-manager.io/http-domain": "1234",
        "acme.cert-manager.io/http-token": "5678",
        "acme.cert-manager.io/http01-solver": "true",
    }
    assert _admitted(policies, "ffe", solver, "traefik", 8089)
    assert not _admitted(policies, "ffe", solver, "default", 8089)
    assert not _admitted(policies, "ffe", solver, "traefik", 8000)


def test_network_policies_can_be_switched_off(synth):
    objects, _ = build(synth, network_policies=False)
    assert by_kind(objects, "NetworkPolicy") == []


def test_every_object_is_valid_kubernetes(synth, upstream):
    objects, _ = build(synth)
    assert len(objects) == 13
    for manifest in objects:
        validate_manifest(manifest, upstream)


def test_cpu_only_app_asks_for_no_gpu(synth):
    objects, _ = build(synth, gpus=0, cluster=make_cluster(gpu_capacity=0))
    spec = pod_spec(objects)
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["requests"]
    assert "tolerations" not in spec and "runtimeClassName" not in spec


def test_overlay_values_override_base(synth, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text("replicas: 1\nenv:\n  A: base\n  B: base\n")
    (tmp_path / "app" / "dev.yaml").write_text("env:\n  B: dev\nautoscaling:\n  enabled: false\n")
    objects, _ = build(synth, values_dir=tmp_path, overlay="dev")
    env = {e["name"]: e.get("value") for e in pod_spec(objects)["containers"][0]["env"]}
    assert (env["A"], env["B"]) == ("base", "dev")
    assert by_kind(objects, "HorizontalPodAutoscaler") == []


def test_a_values_file_cannot_drop_the_gpu_placement(synth, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text("resources:\n  limits:\n    nvidia.com/gpu: 0\n")
    objects, _ = build(synth, values_dir=tmp_path)
    assert pod_spec(objects)["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def _values(tmp_path: Path, text: str) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replica: 2\n", r"'helm-values/app' is \['replica'\]: unknown keys"),
        ("replicas: 0\n", r"'replicas' is 0: use from 1 to 100"),
        (
            "autoscaling:\n  enabled: true\n  minReplicas: 1\n  maxReplicas: 4\n",
            r"'autoscaling.maxReplicas' is 4: 4 pods x 1 GPU need 4 GPU slots but cluster 'test' has 1",
        ),
        (
            "autoscaling:\n  enabled: true\n  minReplicas: 3\n  maxReplicas: 2\n",
            r"'autoscaling.maxReplicas' is 2: use from 3 to 100; maxReplicas cannot be below minReplicas",
        ),
        ("quota:\n  gpus: 0\n", r"'quota.gpus' is 0: use at least 1; the quota must admit 1 pods x 1 GPU"),
        (
            "replicas: 2\nautoscaling:\n  enabled: false\npodDisruptionBudget:\n  minAvailable: 2\nquota:\n  gpus: 2\n",
            r"'podDisruptionBudget.minAvailable' is 2: keep it below the replica count",
        ),
    ],
)
def test_bad_values_fail_at_synth(synth, tmp_path, text, message):
    cluster = make_cluster(gpu_capacity=4)
    if "maxReplicas: 4" in text:
        cluster = make_cluster(gpu_capacity=1)
    with pytest.raises(ConfigError, match=message):
        build(synth, values_dir=_values(tmp_path, text), cluster=cluster, with_deps=False)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"image": "ghcr.io/acme/ffe-backend:latest"},
            r"'app image' is 'ghcr.io/acme/ffe-backend:latest': pin",
        ),
        ({"image": "ghcr.io/acme/ffe-backend"}, r"'app image' is 'ghcr.io/acme/ffe-backend': pin"),
        ({"host": "API.example.com"}, r"'host' is 'API.example.com': give a lower-case DNS name"),
        ({"gpus": 9}, r"'gpus' is 9: use from 0 to 8"),
    ],
)
def test_bad_props(synth, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build(synth, with_deps=False, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"ingress_class": UNSET},
            r"^'ingress_class' is unset: give the IngressClass of the cluster's ingress controller, "
            r"e.g. ingress_class='traefik'",
        ),
        ({"ingress_namespace": UNSET}, r"^'ingress_namespace' is unset: give the namespace of the ingress"),
        ({"cluster_issuer": UNSET}, r"^'cluster_issuer' is unset: give the cert-manager ClusterIssuer"),
        (
            {"ingress_class": None},
            r"^'ingress_class' is None: an app with a host \(api.example.com\) needs an Ingress: give the "
            r"IngressClass of the cluster's ingress controller \('traefik', 'nginx', 'alb'\), or host=None",
        ),
        (
            {"ingress_namespace": None},
            r"^'ingress_namespace' is None: the NetworkPolicies admit the ingress controller's pods by "
            r"their namespace: give it, or network_policies=False$",
        ),
        ({"ingress_namespace": "Traefik"}, r"^'ingress_namespace' is 'Traefik': use a lower-case DNS label"),
        ({"ingress_class": "Traefik"}, r"^'ingress_class' is 'Traefik': give a lower-case DNS name"),
        (
            {"host": None, "cluster_issuer": None},
            r"^'ingress_class' is 'traefik': an app without a host has no Ingress; give None$",
        ),
        (
            {
                "host": None,
                **dict.fromkeys(INGRESS),
                "scale_to_zero": HttpScaleToZero("keda", "keda-add-ons-http-interceptor-proxy", 8080),
            },
            r"^'host' is None: scale to zero routes the host's requests through its interceptor",
        ),
    ],
)
def test_the_ingress_the_app_assumes_is_given_or_synth_names_what_to_add(synth, overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        build(synth, with_deps=False, **overrides)
    assert "\n" not in str(caught.value)


APP_POD = {"app.kubernetes.io/name": "ffe-backend", "app.kubernetes.io/part-of": "ffe-backend"}


def test_another_ingress_controller_and_its_namespace(synth):
    objects, _ = build(synth, ingress_class="nginx", ingress_namespace="ingress-nginx")
    (ingress,) = by_kind(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    policies = by_kind(objects, "NetworkPolicy")
    assert _admitted(policies, "ffe", APP_POD, "ingress-nginx", 8000)
    assert not _admitted(policies, "ffe", APP_POD, "traefik", 8000)


def test_without_an_issuer_the_ingress_asks_cert_manager_for_nothing(synth):
    objects, _ = build(synth, cluster_issuer=None)
    (ingress,) = by_kind(objects, "Ingress")
    assert "annotations" not in ingress["metadata"]
    assert ingress["spec"]["tls"] == [{"hosts": ["api.example.com"]}]
    names = {p["metadata"]["name"] for p in by_kind(objects, "NetworkPolicy")}
    assert "ffe-backend-acme-http01-solver" not in names and "ffe-backend-from-ingress" in names


def test_an_app_without_a_host_has_no_ingress_and_admits_no_controller(synth):
    objects, _ = build(synth, host=None, ingress_class=None, ingress_namespace=None, cluster_issuer=None)
    assert by_kind(objects, "Ingress") == []
    names = {p["metadata"]["name"] for p in by_kind(objects, "NetworkPolicy")}
    assert names == {"ffe-backend-default-deny", "ffe-backend-database", "ffe-backend-app-egress"}
    policies = by_kind(objects, "NetworkPolicy")
    assert not _admitted(policies, "ffe", APP_POD, "traefik", 8000)


def _strategy(objects) -> dict:
    (deployment,) = by_kind(objects, "Deployment")
    return deployment["spec"]["strategy"]


def test_one_gpu_and_a_full_quota_recreate_the_pod_so_helm_waits_for_it(synth):
    """The seed's one GPU: a surge pod would need a second GPU the quota (and node) do not have, and
    with maxUnavailable 1 Helm would wait for no pod at all."""
    objects, _ = build(synth)
    (deployment,) = by_kind(objects, "Deployment")
    assert _strategy(objects) == {"type": "Recreate"}
    assert helm_waits_for(deployment, 1) == 1


def test_an_autoscaler_that_may_scale_to_one_recreates_too(synth, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text(
        "replicas: 2\nautoscaling:\n  minReplicas: 1\n  maxReplicas: 2\nquota:\n  gpus: 2\n"
    )
    objects, _ = build(synth, values_dir=tmp_path, cluster=make_cluster(gpu_capacity=2))
    (deployment,) = by_kind(objects, "Deployment")
    assert helm_waits_for(deployment, 1) == 1


def test_zero_downtime_rollout_where_the_gpus_have_room(synth, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text("quota:\n  gpus: 4\n")
    objects, _ = build(synth, values_dir=tmp_path, cluster=make_cluster(gpu_capacity=4))
    assert _strategy(objects) == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_room_on_the_nodes_but_not_in_the_quota_does_not_surge(synth, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "base.yaml").write_text(
        "replicas: 2\nautoscaling:\n  minReplicas: 2\n  maxReplicas: 2\nquota:\n  gpus: 2\n"
    )
    objects, _ = build(synth, values_dir=tmp_path, cluster=make_cluster(gpu_capacity=8))
    assert _strategy(objects)["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    (deployment,) = by_kind(objects, "Deployment")
    assert helm_waits_for(deployment, 2) == 1


def test_cpu_only_app_keeps_zero_downtime(synth):
    objects, _ = build(synth, gpus=0)
    assert _strategy(objects)["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
