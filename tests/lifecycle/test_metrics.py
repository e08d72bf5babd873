"""Gate: the series the stack's alert rules read are scraped. For each metric family in the rule
files whose exporter the stack installs, a ServiceMonitor or PodMonitor of the stack must select
that exporter's Service or pods on a named port, in its namespace (Prometheus Operator
ServiceMonitor semantics: ``selector`` over Service labels, ``namespaceSelector.matchNames``, and
``endpoints[].port`` a port name of the Service, or ``targetPort`` one it forwards to). An alert whose expression selects no series never
fires: the rule passes promtool on synthetic series and stays silent on the cluster.

The Prometheus of these stacks selects every monitor in every namespace
(``*SelectorNilUsesHelmValues: false``, gpu_constructs/monitoring), so labels on the monitor do not
matter here.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from gpu_constructs.monitoring import RULES_DIR
from tests.support.lifecycle.webhooks import selector_matches

# metric family -> the chart that exports it
METRIC_SOURCES = {"vault_": "vault", "certmanager_": "cert-manager"}


def _used_families() -> set[str]:
    text = "\n".join(path.read_text() for path in RULES_DIR.glob("*.yaml"))
    return {prefix for prefix in METRIC_SOURCES if re.search(rf"\b{prefix}[a-z_]+", text)}


def unscraped(rendered: Any) -> list[str]:
    if not any(obj.get("kind") == "Prometheus" for _, obj in rendered.objects()):
        return []
    monitors = [obj for _, obj in rendered.objects() if obj.get("kind") in ("ServiceMonitor", "PodMonitor")]
    missing = []
    for prefix in sorted(_used_families()):
        releases = [r for r in rendered.releases if r.chart == METRIC_SOURCES[prefix]]
        for release in releases:
            services = [o for o in release.objects if o.get("kind") == "Service"]
            if not any(
                _selects(monitor, service, release.namespace) for monitor in monitors for service in services
            ):
                missing.append(f"{prefix}* from {release.address}")
    return missing


def _selects(monitor: dict[str, Any], service: dict[str, Any], namespace: str) -> bool:
    if monitor["kind"] != "ServiceMonitor":
        return False
    spec = monitor.get("spec") or {}
    names = (spec.get("namespaceSelector") or {}).get("matchNames")
    service_namespace = service["metadata"].get("namespace", namespace)
    monitor_namespace = monitor["metadata"].get("namespace", namespace)
    if names is not None and service_namespace not in names:
        return False
    if (
        names is None
        and not (spec.get("namespaceSelector") or {}).get("any")
        and service_namespace != monitor_namespace
    ):
        return False
    if not selector_matches(spec.get("selector") or {}, service["metadata"].get("labels") or {}):
        return False
    ports = (service.get("spec") or {}).get("ports") or []
    names = {p.get("name") for p in ports}
    targets = {p.get("targetPort", p.get("port")) for p in ports}
    return any(
        endpoint.get("port") in names or ("targetPort" in endpoint and endpoint["targetPort"] in targets)
        for endpoint in spec.get("endpoints") or []
    )


def test_every_alerted_metric_family_is_scraped(rendered_stack):
    assert unscraped(rendered_stack) == []


@pytest.fixture
def single_node(helm, upstream):
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    return copy.deepcopy(render.rendered(instance))


def test_the_gate_sees_vault_and_cert_manager_without_their_monitors(single_node):
    assert _used_families() == {"vault_", "certmanager_"}
    for release in single_node.releases:
        release.objects = [o for o in release.objects if o.get("kind") != "ServiceMonitor"]
    assert unscraped(single_node) == [
        "certmanager_* from helm_release.networking_cert-manager_7666BAB7",
        "vault_* from helm_release.vault_BBE00A92",
    ]


def test_vault_answers_the_scrape_without_a_token(single_node):
    """/v1/sys/metrics needs a token unless the listener allows unauthenticated metrics access."""
    (config_map,) = [
        o
        for _, o in single_node.objects()
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == "vault-config"
    ]
    config = next(iter(config_map["data"].values()))
    assert re.search(r'listener "tcp" \{[^}]*telemetry \{\s*unauthenticated_metrics_access = true', config)
    assert re.search(r"^telemetry \{", config, re.M)
