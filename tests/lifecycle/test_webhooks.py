"""Gate: every object a ``failurePolicy: Fail`` webhook of another release must admit is created by
a release applied after the webhook's (model and upstream references in tests/support/lifecycle/webhooks.py).

KNOWN lists what the stacks do today that the gate rejects, with the issue that fixes it. The gate
is strict both ways: a finding not listed fails, and so does a listed one that no longer occurs.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support.lifecycle import webhooks

# (stack, release creating the object, object, webhook) -> issue that fixes it
KNOWN: dict[tuple[str, str, str, str], int] = {}


def unexpected(rendered: Any) -> tuple[dict[tuple[str, str, str, str], str], list[tuple[str, str, str, str]]]:
    found = {finding.key: finding.webhook_release for finding in webhooks.findings(rendered)}
    new = {key: release for key, release in found.items() if key not in KNOWN}
    gone = [key for key in KNOWN if key[0] == rendered.stack and key not in found]
    return new, gone


def test_fail_webhooks_are_installed_before_what_they_admit(rendered_stack):
    new, gone = unexpected(rendered_stack)
    assert new == {}, f"{rendered_stack.stack}: objects created before the webhook that must admit them"
    assert gone == [], f"{rendered_stack.stack}: fixed, remove from KNOWN in {__file__}"


def _rendered(stack: str) -> Any:
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == stack]
    return copy.deepcopy(render.rendered(instance))


def test_the_gate_sees_fail_webhooks(helm, upstream):
    """Not vacuous: cert-manager's, CloudNativePG's and the load balancer controller's webhooks."""
    names = {
        webhook["name"]
        for stack in ("single-node", "eks-karpenter")
        for _, webhook in webhooks.fail_webhooks(_rendered(stack))
    }
    assert {"webhook.cert-manager.io", "vcluster.cnpg.io", "vingress.elbv2.k8s.aws"} <= names


def test_a_cluster_applied_beside_its_operator_breaks_the_gate(helm, upstream):
    """single-node's database Cluster without its dependency on the CloudNativePG release."""
    rendered = _rendered("single-node")
    release = rendered.synthesized["resource"]["helm_release"]["postgres_cluster_ACE3EF20"]
    release["depends_on"] = [
        d for d in release["depends_on"] if d != "helm_release.postgres_operator_ADDDFA8E"
    ]
    new, _ = unexpected(rendered)
    assert set(new) == {
        ("single-node", "helm_release.postgres_cluster_ACE3EF20", obj, webhook)
        for obj, kind in (
            ("Cluster/ffe/ffe-db", "cluster"),
            ("ScheduledBackup/ffe/ffe-db-daily", "scheduledbackup"),
        )
        for webhook in (f"m{kind}.cnpg.io", f"v{kind}.cnpg.io")
    }
    assert set(new.values()) == {"helm_release.postgres_operator_ADDDFA8E"}


def _with_chart_default_service_mutator(helm: str) -> Any:
    """eks-karpenter with the load balancer controller rendered at the chart's default
    ``enableServiceMutatorWebhook: true``, which the stack turns off."""
    from dataclasses import replace

    import yaml

    from tests.support import render

    rendered = _rendered("eks-karpenter")
    index, controller = next(
        (i, r) for i, r in enumerate(rendered.releases) if r.chart == "aws-load-balancer-controller"
    )
    values = {k: v for k, v in controller.values().items() if k != "enableServiceMutatorWebhook"}
    default = replace(controller, values_documents=[yaml.safe_dump(values)], objects=[])
    objects = render.parse_objects(render.helm_template(default, rendered.kube_version, [], helm))
    rendered.releases[index] = replace(controller, objects=objects)
    return rendered


def test_the_service_mutator_races_karpenters_service_unless_ordered(helm, upstream):
    """The chart default's Service webhook admits Karpenter's and KEDA's Services, installed side
    by side (aws-load-balancer-controller#4140); ordering them after the controller clears it."""
    rendered = _with_chart_default_service_mutator(helm)
    new, _ = unexpected(rendered)
    racing = {release for (_, release, _, _) in new}
    assert {webhook for (_, _, _, webhook) in new} == {"mservice.elbv2.k8s.aws"}
    assert (
        "eks-karpenter",
        "helm_release.eks_karpenter_7C03CC45",
        "Service/karpenter/karpenter",
        "mservice.elbv2.k8s.aws",
    ) in new
    # The monitoring releases come after the controller (Grafana's Ingress may be an ALB's).
    assert racing == {
        "helm_release.eks_karpenter_7C03CC45",
        # ExternalDNS's metrics Service (port 7979).
        "helm_release.external-dns_release_90291C33",
        "helm_release.keda_F70F2F53",
        "helm_release.keda_http-add-on_909F53D7",
    }
    for address in racing:
        release = rendered.synthesized["resource"]["helm_release"][address.split(".", 1)[1]]
        release["depends_on"].append("helm_release.alb-controller_release_0735D108")
    assert unexpected(rendered) == ({}, [])


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        (None, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {"a": "x"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {}, False),
        ({"matchLabels": {"a": "x"}}, {"a": "x", "b": "y"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "y"}, False),
    ],
)
def test_label_selectors_are_kubernetes(selector, labels, matches):
    assert webhooks.selector_matches(selector, labels) is matches


def test_the_service_webhook_skips_the_controllers_own_objects(helm, upstream):
    """Its objectSelector excludes app.kubernetes.io/name=aws-load-balancer-controller."""
    rendered = _with_chart_default_service_mutator(helm)
    (service,) = [o for o in rendered.release("eks_karpenter_7C03CC45").objects if o["kind"] == "Service"]
    service["metadata"]["labels"]["app.kubernetes.io/name"] = "aws-load-balancer-controller"
    assert not [f for f in webhooks.findings(rendered) if f.release == "helm_release.eks_karpenter_7C03CC45"]


def test_pods_that_need_the_vault_agent_are_never_admitted_without_it(helm, upstream):
    """Every pod template asking for the Vault agent is covered by the injector's webhook with
    ``failurePolicy: Fail`` (a pod created while the injector is away, during a drain, is retried
    rather than started without its secrets), and that webhook leaves the injector's own pods out
    (or it could never restart)."""
    from tests.support.lifecycle.webhooks import selector_matches

    rendered = _rendered("single-node")
    (injector,) = [
        webhook
        for _, obj in rendered.objects()
        if obj.get("kind") == "MutatingWebhookConfiguration"
        for webhook in obj.get("webhooks") or []
        if webhook["name"] == "vault.hashicorp.com"
    ]
    assert injector["failurePolicy"] == "Fail"

    def covered(namespace: str, labels: dict[str, str]) -> bool:
        namespace_labels = {"kubernetes.io/metadata.name": namespace}
        return selector_matches(injector.get("namespaceSelector"), namespace_labels) and selector_matches(
            injector.get("objectSelector"), labels
        )

    injected = []
    for _, obj in rendered.objects():
        template = (obj.get("spec") or {}).get("template") or {}
        metadata = template.get("metadata") or {}
        if (metadata.get("annotations") or {}).get("vault.hashicorp.com/agent-inject") == "true":
            injected.append(obj["metadata"]["name"])
            assert covered(obj["metadata"].get("namespace", "default"), metadata.get("labels") or {}), obj[
                "metadata"
            ]
        if obj.get("kind") == "Deployment" and obj["metadata"]["name"].endswith("agent-injector"):
            namespace = obj["metadata"].get("namespace", "default")
            assert not covered(namespace, metadata.get("labels") or {}), "the injector would admit itself"
    assert injected
