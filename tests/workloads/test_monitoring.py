"""The monitoring construct: kube-prometheus-stack placed off the GPU nodes, every monitor and rule
selected, the DCGM exporter scraped, Grafana's password generated in the cluster, dashboards whose
queries the pinned exporter answers, and settings checked at synth."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpu_constructs import monitoring
from gpu_constructs.errors import ConfigError
from gpu_constructs.monitoring import DcgmSource, Monitoring, MonitoringProps
from tests.conftest import make_cluster, site_instance
from tests.support import render
from tests.support.lifecycle import graph
from tests.support.placement import node_groups, pod_templates, why_not
from tests.support.stacks import INSTANCES

DCGM_COUNTERS = ("default-counters.csv", "dcp-metrics-included.csv")
# Metrics that come from somewhere other than the DCGM exporter: kube-state-metrics (resources
# written as nvidia_com_gpu) and Prometheus itself.
OTHER_METRICS = re.compile(r"^(kube_[a-z_]+|up)$")
METRIC = re.compile(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{|\[|\)|$|\s|/|\*|>|<|\+|-)")
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "on", "without", "group_left", "group_right", "or",
    "and", "unless", "vector", "increase", "rate", "label_values", "bool", "time", "ignoring",
}  # fmt: skip


def _stacks_with_monitoring() -> list[str]:
    stacks = []
    for name in sorted(INSTANCES):
        synthesized = render.rendered(INSTANCES[name]).synthesized
        if any(
            r.get("chart") == "kube-prometheus-stack"
            for r in synthesized.get("resource", {}).get("helm_release", {}).values()
        ):
            stacks.append(name)
    return stacks


def dcgm_metrics(upstream: Path) -> set[str]:
    """Metric names both counter lists export (the exporter's default and the GPU Operator's)."""
    exported = []
    for name in DCGM_COUNTERS:
        with (upstream / "dcgm-exporter" / name).open() as handle:
            exported.append(
                {row[0].strip() for row in csv.reader(handle) if row and not row[0].lstrip().startswith("#")}
            )
    return set.intersection(*exported)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names inside braces are skipped)."""
    without_labels = re.sub(r"\{[^}]*\}", "{}", expr)
    without_strings = re.sub(r'"[^"]*"', '""', without_labels)
    without_by = re.sub(r"\b(by|on|without|ignoring|group_left|group_right)\s*\([^)]*\)", "", without_strings)
    names = {match.group(1) for match in METRIC.finditer(without_by)}
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("$") and not n.isdigit()}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for panel in dashboard.get("panels", []) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue  # a datasource or interval variable: no PromQL
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return [q for q in queries if q]


def _label_values_metric(query: str) -> str:
    match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
    return match.group(1) if match else query


def unknown_metrics(dashboard: dict[str, Any], exported: set[str]) -> set[str]:
    unknown = set()
    for query in dashboard_queries(dashboard):
        for name in metric_names(_label_values_metric(query)):
            if name not in exported and not OTHER_METRICS.match(name):
                unknown.add(name)
    return unknown


# --- dashboards ----------------------------------------------------------------------------------


def test_the_library_dashboards_query_only_what_the_exporter_exports(upstream):
    exported = dcgm_metrics(upstream)
    assert monitoring.dashboards(), "no dashboards in gpu_constructs/monitoring/dashboards"
    for name, text in monitoring.dashboards().items():
        dashboard = json.loads(text)
        assert dashboard_queries(dashboard), name
        assert unknown_metrics(dashboard, exported) == set(), name


def test_nvidias_dashboard_queries_only_what_the_exporter_exports(upstream):
    """The dashboard provisioned from grafana.com (gnetId 12239) is NVIDIA/dcgm-exporter's own."""
    text = (upstream / "dcgm-exporter" / "dcgm-exporter-dashboard.json").read_text()
    dashboard = json.loads(text)
    assert str(monitoring.NVIDIA_DASHBOARD["gnetId"]) in text
    assert unknown_metrics(dashboard, dcgm_metrics(upstream)) == set()


def test_a_dashboard_query_on_a_metric_not_exported_fails(upstream):
    dashboard = json.loads(next(iter(monitoring.dashboards().values())))
    dashboard["panels"][0]["targets"][0]["expr"] = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0"
    assert unknown_metrics(dashboard, dcgm_metrics(upstream)) == {"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"}


# --- the rendered stacks -------------------------------------------------------------------------


def test_every_stack_runs_monitoring(helm, upstream):
    assert _stacks_with_monitoring() == sorted(INSTANCES)


def _monitoring_objects(stack: render.RenderedStack) -> list[tuple[render.Release, dict[str, Any]]]:
    return [
        (release, obj)
        for release, obj in stack.objects()
        if release.namespace == monitoring.NAMESPACE
        and release.name in (monitoring.RELEASE, "gpu-monitoring")
    ]


def test_monitoring_stays_off_the_gpu_nodes(rendered_stack):
    """Prometheus, Alertmanager, Grafana, the operator and kube-state-metrics never land on a GPU node
    where the stack has other nodes; only the exporters' DaemonSets run there."""
    stack = rendered_stack
    groups = node_groups(stack)
    if all(group.gpu for group in groups):
        pytest.skip(f"{stack.stack}: every node is a GPU node")
    monitoring_templates = [
        t
        for t in pod_templates(stack)
        if t.where.split(":")[0] in {r.address for r, _ in _monitoring_objects(stack)} and not t.daemonset
    ]
    assert {t.where.split(": ")[1].split(" ")[0] for t in monitoring_templates} >= {
        "Prometheus",
        "Alertmanager",
        "Deployment",
    }
    on_gpu = [
        f"{t.where} on {g.name}"
        for t in monitoring_templates
        for g in groups
        if g.gpu and why_not(t.spec, g) is None
    ]
    assert on_gpu == []


def test_prometheus_selects_every_monitor_and_rule(rendered_stack):
    stack = rendered_stack
    (prometheus,) = [o for _, o in _monitoring_objects(stack) if o["kind"] == "Prometheus"]
    spec = prometheus["spec"]
    for selector in ("serviceMonitorSelector", "podMonitorSelector", "ruleSelector"):
        assert spec.get(selector) == {}, f"{stack.stack}: {selector} {spec.get(selector)}"
        assert spec.get(selector.replace("Selector", "NamespaceSelector")) == {}, selector
    assert spec["retention"]
    if "storage" in spec:
        assert spec["storage"]["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]


def test_the_alert_rules_are_shipped(rendered_stack):
    stack = rendered_stack
    rules = {
        o["metadata"]["name"]: o["spec"]["groups"]
        for r, o in _monitoring_objects(stack)
        if o["kind"] == "PrometheusRule" and r.name == "gpu-monitoring"
    }
    assert rules == {f"{name}-alerts": groups for name, groups in monitoring.rule_groups().items()}


def test_the_dcgm_exporter_is_scraped(rendered_stack):
    """The ServiceMonitor selects the exporter's Service by its labels and port name: the stack's own
    Service where it runs the exporter, else the GPU Operator's (gpu-operator
    v26.7.0 assets/state-dcgm-exporter/0400_service.yaml: app=nvidia-dcgm-exporter, port gpu-metrics)."""
    stack = rendered_stack
    objects = [o for r, o in _monitoring_objects(stack) if r.name == "gpu-monitoring"]
    (monitor,) = [
        o for o in objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "dcgm-exporter"
    ]
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "dcgm-exporter"]
    operator = [r for r in stack.releases if r.chart == "gpu-operator"]
    if operator:
        assert services == []
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [operator[0].namespace]
        service = {
            "metadata": {"labels": {"app": "nvidia-dcgm-exporter"}},
            "spec": {"ports": [{"name": "gpu-metrics"}]},
        }
        assert operator[0].values()["dcgmExporter"]["enabled"] is True
        assert operator[0].values()["dcgmExporter"]["serviceMonitor"]["enabled"] is False, "scraped twice"
    else:
        (service,) = services
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
        (daemonset,) = [
            o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "dcgm-exporter"
        ]
        assert (
            service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
        )
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports


def test_the_dcgm_exporter_labels_its_series_with_the_node_name(rendered_stack):
    """The GPU alerts and the GPU dashboard read the DCGM series' Hostname label as the node name.
    dcgm-exporter takes it from NODE_NAME, else from os.Hostname(), in a pod the pod's name
    (dcgm-exporter 4.5.3-4.8.2 internal/pkg/hostname/hostname.go); the GPU Operator sets NODE_NAME
    from spec.nodeName (gpu-operator v26.7.0 assets/state-dcgm-exporter/0800_daemonset.yaml), and so
    must every exporter a stack runs itself."""
    stack = rendered_stack
    exporters = [
        (release.address, container)
        for release, obj in stack.objects()
        if obj["kind"] == "DaemonSet"
        for container in obj["spec"]["template"]["spec"]["containers"]
        if "/dcgm-exporter:" in container.get("image", "")
    ]
    operator = any(
        r.chart == "gpu-operator" and r.values()["dcgmExporter"]["enabled"] for r in stack.releases
    )
    assert exporters or operator, f"{stack.stack}: no DCGM exporter"
    for where, container in exporters:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env.get("NODE_NAME", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "spec.nodeName"}}, (
            f"{stack.stack} {where}: the exporter's Hostname label would be its pod's name"
        )


def _claim_classes(stack: render.RenderedStack) -> dict[str, str | None]:
    """The StorageClass each monitoring volume claims (None: the cluster's default)."""
    objects = [o for _, o in _monitoring_objects(stack)]
    (prometheus,) = [o for o in objects if o["kind"] == "Prometheus"]
    (alertmanager,) = [o for o in objects if o["kind"] == "Alertmanager"]
    (grafana_claim,) = [
        o for o in objects if o["kind"] == "PersistentVolumeClaim" and "grafana" in o["metadata"]["name"]
    ]
    return {
        "prometheus": prometheus["spec"]["storage"]["volumeClaimTemplate"]["spec"].get("storageClassName"),
        "alertmanager": alertmanager["spec"]["storage"]["volumeClaimTemplate"]["spec"].get(
            "storageClassName"
        ),
        "grafana": grafana_claim["spec"].get("storageClassName"),
    }


def test_monitoring_keeps_its_data_on_a_class_prometheus_supports_off_the_gpu_nodes(rendered_stack):
    """Prometheus, Alertmanager and Grafana claim volumes on every stack; never from an NFS
    provisioner (Prometheus' TSDB does not support NFS), and never from a class whose volumes exist
    only on GPU nodes (the volume's node affinity would pull the pod there)."""
    stack = rendered_stack
    facts = stack.platform
    assert facts is not None
    classes = {o["metadata"]["name"]: o for _, o in stack.objects() if o.get("kind") == "StorageClass"}
    default = [
        n
        for n, c in classes.items()
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ] or [facts.default_storage_class]
    groups = node_groups(stack)
    for volume, claimed in _claim_classes(stack).items():
        name = claimed or default[0]
        assert name is not None, f"{stack.stack}: {volume} claims the default class and there is none"
        if name not in classes:
            assert name in facts.storage_classes, f"{stack.stack}: {volume} claims unknown class {name}"
            continue
        storage_class = classes[name]
        assert "nfs" not in storage_class["provisioner"], f"{stack.stack}: {volume} on NFS class {name}"
        for term in storage_class.get("allowedTopologies", []):
            wanted = {e["key"]: set(e["values"]) for e in term["matchLabelExpressions"]}
            # A group's label is the set of values its nodes may carry (None: any value).
            hosts = [
                g
                for g in groups
                if all(
                    key in g.labels and (g.labels[key] is None or g.labels[key] & values)
                    for key, values in wanted.items()
                )
            ]
            assert hosts and not any(g.gpu for g in hosts), (
                f"{stack.stack}: {volume}'s class {name} has volumes on {[g.name for g in hosts]}"
            )


def test_grafanas_password_is_generated_in_the_cluster(rendered_stack):
    stack = rendered_stack
    (release,) = [r for r in stack.releases if r.chart == "kube-prometheus-stack"]
    grafana = release.values()["grafana"]
    assert "adminPassword" not in grafana and not grafana.get("admin", {}).get("existingSecret")
    assert "adminPassword" not in json.dumps(stack.synthesized)
    (secret,) = [
        o
        for r, o in stack.objects()
        if r is release and o["kind"] == "Secret" and "admin-password" in o.get("data", {})
    ]
    # Rendered without a cluster (no Secret to look up), the chart draws 40 random characters.
    import base64

    password = base64.b64decode(secret["data"]["admin-password"]).decode()
    assert len(password) == 40 and password.isalnum()


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retention", "15 days", "'monitoring_retention' is '15 days'"),
        ("retention", "0d", "above zero"),
        ("storage_size", "0Gi", "monitoring_storage_size"),
        ("storage_size", "20G", "Mi, Gi or Ti"),
        ("size", "huge", "monitoring_size"),
        ("scheduling", {"affinity": {}}, "nodeSelector and tolerations"),
    ],
)
def test_a_bad_setting_fails_with_the_setting_and_the_fix(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        MonitoringProps(cluster=make_cluster(), dcgm=DcgmSource.GPU_OPERATOR, **{field: value})
    assert "\n" not in str(raised.value)


def test_retention_by_size_leaves_a_tenth_of_the_volume_free(synth):
    def build(stack):
        return Monitoring(
            stack,
            "m",
            props=MonitoringProps(cluster=make_cluster(), dcgm=DcgmSource.STANDALONE, storage_size="50Gi"),
        )

    synthesized = synth(build)
    (release,) = [
        r for r in synthesized["resource"]["helm_release"].values() if r["chart"] == "kube-prometheus-stack"
    ]
    import yaml

    values = yaml.safe_load(release["values"][0])
    assert values["prometheus"]["prometheusSpec"]["retentionSize"] == "46080MB"


# --- Grafana's ingress ---------------------------------------------------------------------------

GRAFANA_HOSTS = {
    # stack -> (settings, ingress class, TLS from cert-manager, root URL scheme)
    "single-node": ({"grafana_host": "grafana.example.com"}, "traefik", True, "https"),
    "proxmox-ha": (
        {"grafana_host": "grafana.example.com", "letsencrypt_challenge": "dns01-cloudflare"},
        "traefik",
        True,
        "https",
    ),
    "eks-karpenter": ({"grafana_host": "grafana.example.com"}, "alb", False, "https"),
    "k3d-poc": ({"grafana_host": "grafana.k3d.localhost"}, "traefik", False, "http"),
}


@pytest.fixture(scope="module", params=sorted(GRAFANA_HOSTS))
def grafana_stack(request, helm) -> tuple[str, render.RenderedStack]:

    environment = request.param
    settings = GRAFANA_HOSTS[environment][0]
    return environment, render.rendered(site_instance(f"{environment}-grafana", environment, settings))


def test_grafana_host_puts_grafana_behind_the_stacks_ingress(grafana_stack):
    environment, stack = grafana_stack
    settings, ingress_class, cert_manager, scheme = GRAFANA_HOSTS[environment]
    host = settings["grafana_host"]
    (ingress,) = [o for _, o in _monitoring_objects(stack) if o["kind"] == "Ingress"]
    assert ingress["spec"]["ingressClassName"] == ingress_class
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == [host]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "kube-prometheus-stack-grafana"
    annotations = ingress["metadata"].get("annotations", {})
    if cert_manager:
        assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-production"
        assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "grafana-tls"}]
    else:
        assert "tls" not in ingress["spec"] and "cert-manager.io/cluster-issuer" not in annotations
    (release,) = [r for r in stack.releases if r.chart == "kube-prometheus-stack"]
    (deployment,) = [
        o
        for r, o in stack.objects()
        if r is release and o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-grafana")
    ]
    (grafana,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "grafana"]
    env = {e["name"]: e.get("value") for e in grafana["env"]}
    assert env["GF_SERVER_ROOT_URL"] == f"{scheme}://{host}"


def test_grafanas_ingress_passes_the_gates(grafana_stack):
    """The stack with an ingress for Grafana, through the same gates as the stacks of main.py."""
    from tests.support.gates import validator_for
    from tests.support.order import order_problems
    from tests.support.placement import placement_problems
    from tests.support.values import release_dead_keys

    _, stack = grafana_stack
    assert order_problems(stack) == []
    assert placement_problems(stack) == []
    validator = validator_for(stack)
    for _, obj in _monitoring_objects(stack):
        validator.validate(obj)
    (release,) = [r for r in stack.releases if r.chart == "kube-prometheus-stack"]
    assert release_dead_keys(release) == []


def test_grafana_on_eks_has_its_own_certificate_and_is_open_to_the_admin_networks_only(helm):
    from tests.support.eks import destroy_order_problems

    settings = GRAFANA_HOSTS["eks-karpenter"][0]
    stack = render.rendered(site_instance("eks-karpenter-grafana", "eks-karpenter", settings))

    (release,) = [r for r in stack.releases if r.chart == "kube-prometheus-stack"]
    # The synthesized values, where the certificate and the networks are still references.
    annotations = yaml.safe_load(release.raw["values"][0])["grafana"]["ingress"]["annotations"]
    certificates = stack.synthesized["resource"]["aws_acm_certificate"]
    (name,) = [n for n, c in certificates.items() if c["domain_name"] == "grafana.example.com"]
    assert certificates[name]["validation_method"] == "DNS"
    (validation,) = [
        n
        for n, v in stack.synthesized["resource"]["aws_acm_certificate_validation"].items()
        if f"aws_acm_certificate.{name}.arn" in v["certificate_arn"]
    ]
    assert annotations["alb.ingress.kubernetes.io/certificate-arn"] == (
        f"${{aws_acm_certificate_validation.{validation}.certificate_arn}}"
    )
    assert annotations["alb.ingress.kubernetes.io/inbound-cidrs"] == '${join(",", var.api_allowed_cidrs)}'
    assert annotations["alb.ingress.kubernetes.io/listen-ports"] == '[{"HTTPS": 443}]'
    # The load balancer controller outlives the Ingress whose ALB it deletes.
    assert destroy_order_problems(stack) == []


def test_no_grafana_host_no_ingress(rendered_stack):
    assert [o for _, o in _monitoring_objects(rendered_stack) if o["kind"] == "Ingress"] == []


@pytest.mark.parametrize("environment", sorted(GRAFANA_HOSTS))
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"grafana_host": "Grafana.Example.com"}, "'grafana_host' is 'Grafana.Example.com'"),
        ({"grafana_host": "https://grafana.example.com"}, "lower-case DNS name"),
        ({"grafana_host": "grafana.example.com", "monitoring": False}, "'grafana_host'"),
    ],
)
def test_a_bad_grafana_host_fails_with_the_setting_and_the_fix(environment, settings, message):

    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        site_instance(environment, environment, settings).settings()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("environment", ["single-node", "proxmox-ha"])
def test_grafana_host_must_be_inside_the_dns_zone(environment, tmp_path):
    """Terraform's own validation of dns_zone against the host, evaluated by a real plan."""
    import cdktf

    from tests.conftest import plan_variables, variables_workdir

    settings = dict(GRAFANA_HOSTS[environment][0])
    synthesized = json.loads(
        cdktf.Testing.synth(site_instance(environment, environment, settings).build(cdktf.Testing.app()))
    )
    # dns_zone's other rules read the stack's other host names: give them names in the zone.
    others = {"single-node": ("app_domain",), "proxmox-ha": ("rancher_hostname", "jupyterhub_hostname")}
    names = {name: f"{name.replace('_', '-')}.example.com" for name in others[environment]}
    variables = {name: synthesized["variable"][name] for name in ("dns_zone", *names)}
    workdir = variables_workdir(variables, tmp_path)
    for zone, valid in (("example.com", True), ("example.org", False)):
        result = plan_variables(workdir, {"dns_zone": zone, **names})
        assert (result.returncode == 0) is valid, (zone, result.stderr)
        if not valid:
            assert "grafana_host is grafana.example.com, which is not inside dns_zone" in " ".join(
                result.stderr.split()
            )


def _selects(selector: dict, labels: dict) -> bool:
    """A label selector's matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def test_cert_managers_metrics_are_scraped_without_ordering_it_after_monitoring(rendered_stack):
    """Where cert-manager runs beside monitoring, its ServiceMonitor ships in gpu-monitoring (after
    the Prometheus Operator's CRDs) and selects the metrics Services the cert-manager chart renders
    by labels, namespace and port; the chart renders none itself, and cert-manager does not come
    after the monitoring release (which comes after the ClusterIssuers, which come after it)."""
    stack = rendered_stack
    cert_manager = [r for r in stack.releases if r.chart == "cert-manager"]
    objects = [o for r, o in _monitoring_objects(stack) if r.name == "gpu-monitoring"]
    if not cert_manager:  # eks-karpenter (ACM), k3d-poc and lke run none
        assert not [o for o in objects if o["metadata"]["name"] == "cert-manager"]
        return
    (release,) = cert_manager
    (monitor,) = [
        o for o in objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "cert-manager"
    ]
    assert not [o for o in release.objects if o["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [release.namespace]
    scraped = [
        o
        for o in release.objects
        if o["kind"] == "Service"
        and _selects(monitor["spec"]["selector"], o["metadata"].get("labels") or {})
        and {p.get("name") for p in o["spec"]["ports"]} >= {monitor["spec"]["endpoints"][0]["targetPort"]}
    ]
    assert "cert-manager" in {o["metadata"]["name"] for o in scraped}
    (prometheus,) = [r.address for r in stack.releases if r.chart == "kube-prometheus-stack"]
    assert not graph.depends_on(stack.synthesized, release.address, prometheus)
