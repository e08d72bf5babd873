"""Every object Helm renders for every stack, held to what the API server would accept.

Built-in kinds strictly (an unknown field fails) for the stack's Kubernetes version; custom
resources against their CRD's schema and its CEL rules (``x-kubernetes-validations``), with the CRDs
the stack's charts install, else ../shared/upstream (tests/support/validators.py).
"""

from __future__ import annotations

import copy
import re

import pytest

from tests.support import render
from tests.support.gates import validator_for
from tests.support.stacks import INSTANCES
from tests.support.validators import UPSTREAM_CRDS, ObjectInvalid, ObjectValidator, evaluate_cel


def test_every_rendered_object_is_accepted(rendered_stack):
    stack = rendered_stack
    validator = validator_for(stack)
    problems = []
    for release, obj in stack.objects():
        try:
            validator.validate(obj)
        except ObjectInvalid as error:
            problems.append(f"{release.address}: {error}")
    assert problems == []


def test_custom_resources_are_checked_by_their_crds(helm, upstream):
    """Not vacuous: the stacks render custom resources, and each goes through a CRD with CEL rules."""
    checked = set()
    for name in sorted(INSTANCES):
        stack = render.rendered(INSTANCES[name])
        validator = validator_for(stack)
        for _, obj in stack.objects():
            if (obj["apiVersion"], obj["kind"]) in validator.schemas:
                validator.validate(obj)
                checked.add(obj["kind"])
    assert {"NodePool", "EC2NodeClass", "ClusterIssuer", "GitRepo", "ClusterPolicy", "Cluster"} <= checked


def _rendered(stack_name: str, kind: str) -> tuple[ObjectValidator, dict]:
    stack = render.rendered(INSTANCES[stack_name])
    obj = next(o for _, o in stack.objects() if o["kind"] == kind)
    return validator_for(stack), copy.deepcopy(obj)


def test_an_unknown_field_in_a_built_in_kind_fails(helm, upstream):
    validator, deployment = _rendered("single-node", "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(ObjectInvalid, match="imagePullPolcy"):
        validator.validate(deployment)


def test_a_restricted_tag_on_an_ec2_node_class_fails_by_the_crds_cel_rule(helm, upstream):
    validator, node_class = _rendered("eks-karpenter", "EC2NodeClass")
    node_class["spec"]["tags"]["kubernetes.io/cluster/gpu"] = "owned"
    with pytest.raises(
        ObjectInvalid, match=re.escape("tag contains a restricted tag matching kubernetes.io/cluster/")
    ):
        validator.validate(node_class)


def test_a_node_pool_breaking_a_cel_rule_fails(helm, upstream):
    validator, node_pool = _rendered("eks-karpenter", "NodePool")
    node_pool["spec"]["template"]["spec"]["requirements"].append(
        {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["x"]}
    )
    with pytest.raises(ObjectInvalid, match=re.escape('label "karpenter.sh/nodepool" is restricted')):
        validator.validate(node_pool)


def test_an_unknown_custom_field_fails(helm, upstream):
    validator, issuer = _rendered("single-node", "ClusterIssuer")
    issuer["spec"]["acme"]["emial"] = "x@example.com"
    with pytest.raises(ObjectInvalid, match="emial: unknown field"):
        validator.validate(issuer)


def test_a_kind_no_crd_defines_fails(helm, upstream):
    validator, _ = _rendered("single-node", "ClusterIssuer")
    with pytest.raises(ObjectInvalid, match="no CRD defines it"):
        validator.validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


def test_the_cel_evaluator_on_real_crd_rules(upstream):
    import yaml

    rules = []

    def collect(node):
        if isinstance(node, dict):
            rules.extend(node.get("x-kubernetes-validations", []))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    for relative in UPSTREAM_CRDS:
        collect(yaml.safe_load((upstream / relative).read_text()))
    texts = {rule["rule"] for rule in rules}
    # Kubernetes library functions the real rules use: find, split, isURL, duration, matches
    for function in (".find(", ".split(", "duration("):
        assert any(function in rule for rule in texts), function
    assert evaluate_cel("self.find('[0-9]+') == '42'", "ab42c") == True  # noqa: E712 (a CEL bool)
    assert evaluate_cel("self.split('/')[1] == 'b'", "a/b/c") == True  # noqa: E712
    assert evaluate_cel("isURL(self)", "https://acme-v02.api.letsencrypt.org/directory") == True  # noqa: E712
    assert evaluate_cel("isURL(self)", "not a url") == False  # noqa: E712
    assert evaluate_cel("duration(self) > duration('1m')", "5m") == True  # noqa: E712
    # The restricted-tag rule of the real EC2NodeClass CRD, both ways
    (tag_rule,) = [r for r in texts if "startsWith('kubernetes.io/cluster')" in r]
    assert evaluate_cel(tag_rule, {"Name": "x"}) == True  # noqa: E712
    assert evaluate_cel(tag_rule, {"kubernetes.io/cluster/x": "owned"}) == False  # noqa: E712


def test_an_unknown_cel_function_fails_loudly():
    with pytest.raises(Exception, match="noSuchFunction"):
        evaluate_cel("self.noSuchFunction()", "x")


def test_transition_rules_are_skipped_and_message_expressions_used():
    validator = ObjectValidator("1.35", [], render.UPSTREAM)
    validator._add(
        {
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {
                                            "size": {"type": "integer", "default": 3},
                                            "items": {
                                                "type": "array",
                                                "items": {
                                                    "type": "string",
                                                    "x-kubernetes-validations": [
                                                        {"rule": "self != 'bad'", "message": "no bad item"}
                                                    ],
                                                },
                                            },
                                        },
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "immutable"},
                                            {
                                                "rule": "self.size < 3",
                                                "messageExpression": "'size ' + string(self.size) + ' is too big'",
                                            },
                                        ],
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
        "test",
    )
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ObjectInvalid, match="size 3 is too big"):  # the schema default applies first
        validator.validate({**widget, "spec": {}})
    with pytest.raises(ObjectInvalid, match=r"\.spec\.items\[1\]: Invalid value: no bad item"):
        validator.validate({**widget, "spec": {"size": 1, "items": ["ok", "bad"]}})
    assert validator.validate({**widget, "spec": {"size": 1}}) == "test"
