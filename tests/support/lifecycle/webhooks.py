"""Which objects of a stack a ``failurePolicy: Fail`` admission webhook of another release must
admit, and whether the release creating them is installed after the webhook's.

The API server calls every matching webhook on each create and update; with ``failurePolicy: Fail``
(the admissionregistration.k8s.io/v1 default) a webhook whose service has no ready endpoint rejects
the request ("failed calling webhook ... no endpoints available", aws-load-balancer-controller#4140).
A release whose objects such a webhook matches must therefore be applied after the webhook's release
is ready: Terraform orders it only through ``depends_on`` or a reference, transitively.

Matching follows k8s.io/apiserver ``pkg/admission/plugin/webhook/predicates/rules`` (operations,
apiGroups, resources with ``*`` and ``*/*``, scope), ``.../predicates/namespace`` and
``.../predicates/object`` (label selectors). Best effort: a namespace's labels are those of a
rendered Namespace object, else only ``kubernetes.io/metadata.name``; apiVersions are not compared
(``matchPolicy: Equivalent``, the default, sends every version of a matching resource); resource
names come from the stack's CRDs, else from the kind (lowercase plural).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.lifecycle.graph import depends_on
from tests.support.render import Release, RenderedStack

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "IngressClass",
    "PriorityClass",
    "RuntimeClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ClusterIssuer",
    "APIService",
    "PersistentVolume",
    "NodePool",
    "EC2NodeClass",
    "DeviceClass",
    "ClusterPolicy",
}


@dataclass(frozen=True)
class Finding:
    stack: str
    release: str  # the release whose object the webhook must admit
    obj: str  # Kind/namespace/name
    webhook: str  # webhook name
    webhook_release: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.stack, self.release, self.obj, self.webhook)


def plural(kind: str, crd_plurals: dict[tuple[str, str], str], group: str) -> str:
    if (group, kind) in crd_plurals:
        return crd_plurals[(group, kind)]
    lowered = kind.lower()
    if lowered.endswith(("s", "x", "ch", "sh")):
        return lowered + "es"
    if lowered.endswith("y") and lowered[-2:-1] not in "aeiou":
        return lowered[:-1] + "ies"
    return lowered + "s"


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics; an absent selector matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _rule_matches(rule: dict[str, Any], operations: set[str], group: str, resource: str, scope: str) -> bool:
    ops = set(rule.get("operations") or [])
    if "*" not in ops and not ops & operations:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and group not in groups:
        return False
    resources = rule.get("resources") or []
    if not any(r in ("*", "*/*", resource) for r in resources):
        return False
    rule_scope = rule.get("scope", "*")
    return rule_scope in ("*", scope)


def _namespace_labels(rendered: RenderedStack) -> dict[str, dict[str, str]]:
    labels = {}
    for _, obj in rendered.objects():
        if obj.get("kind") == "Namespace":
            name = obj["metadata"]["name"]
            labels[name] = {**(obj["metadata"].get("labels") or {}), "kubernetes.io/metadata.name": name}
    return labels


def fail_webhooks(rendered: RenderedStack) -> Iterator[tuple[Release, dict[str, Any]]]:
    for release, obj in rendered.objects():
        if obj.get("kind") in WEBHOOK_KINDS:
            for webhook in obj.get("webhooks") or []:
                if webhook.get("failurePolicy", "Fail") == "Fail":
                    yield release, webhook


def findings(rendered: RenderedStack) -> list[Finding]:
    crd_plurals = {
        (obj["spec"]["group"], obj["spec"]["names"]["kind"]): obj["spec"]["names"]["plural"]
        for _, obj in rendered.objects()
        if obj.get("kind") == "CustomResourceDefinition"
    }
    namespaces = _namespace_labels(rendered)
    found = []
    for webhook_release, webhook in fail_webhooks(rendered):
        for release, obj in rendered.objects():
            if release.logical_id == webhook_release.logical_id:
                continue
            group = obj.get("apiVersion", "v1").rpartition("/")[0]
            kind = obj.get("kind", "")
            meta = obj.get("metadata") or {}
            scope = "Cluster" if kind in CLUSTER_SCOPED else "Namespaced"
            resource = plural(kind, crd_plurals, group)
            # Helm creates an object at install and updates it at upgrade
            if not any(
                _rule_matches(rule, {"CREATE", "UPDATE"}, group, resource, scope)
                for rule in webhook.get("rules") or []
            ):
                continue
            if not selector_matches(webhook.get("objectSelector"), meta.get("labels") or {}):
                continue
            if scope == "Namespaced":
                namespace = meta.get("namespace", release.namespace)
                labels = namespaces.get(namespace, {"kubernetes.io/metadata.name": namespace})
                if not selector_matches(webhook.get("namespaceSelector"), labels):
                    continue
            if depends_on(rendered.synthesized, release.address, webhook_release.address):
                continue
            found.append(
                Finding(
                    rendered.stack,
                    release.address,
                    f"{kind}/{meta.get('namespace', release.namespace) if scope == 'Namespaced' else ''}/{meta.get('name')}",
                    webhook["name"],
                    webhook_release.address,
                )
            )
    return found
