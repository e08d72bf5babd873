"""Tables and checks shared by the gates over every stack: the charts the upstream-validity gate
(tests/gates/test_gates.py) does not check, and the API-server validator of a rendered stack
(tests/gates/test_rendered_objects.py)."""

from __future__ import annotations

from tests.support import render
from tests.support.validators import ObjectValidator

# charts with no values data of their own in ../shared (beside the whole chart), and why that is
# acceptable: tests/gates/test_render.py renders them with their chart and its values schema, and
# tests/gates/test_values.py checks every key against the chart's defaults, schema and templates
RENDERED = "rendered with the whole chart from ../shared/upstream/charts (test_render, test_values)"
UNCHECKED_CHARTS = {
    "karpenter-crd": RENDERED,
    "traefik": RENDERED,
    "cloudnative-pg": RENDERED,
    "rancher": RENDERED,
    "nfs-subdir-external-provisioner": RENDERED,
    "aws-load-balancer-controller": RENDERED,
    "cloud-firewall-crd": RENDERED,
    "cloud-firewall-controller": RENDERED,
    "argo-cd": RENDERED,
    "kube-prometheus-stack": RENDERED,
}


_VALIDATORS: dict[str, ObjectValidator] = {}


def validator_for(stack: render.RenderedStack) -> ObjectValidator:
    if stack.stack not in _VALIDATORS:
        crds = [obj for _, obj in stack.objects() if obj.get("kind") == "CustomResourceDefinition"]
        _VALIDATORS[stack.stack] = ObjectValidator(stack.kube_version, crds, render.UPSTREAM)
    return _VALIDATORS[stack.stack]
