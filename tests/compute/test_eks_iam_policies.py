"""The controllers' IAM policies are data (gpu_constructs/compute/eks/policies/*.json): each file is a valid policy
document whose placeholders the constructs fill, all of them, and each is what a stack ships."""

from __future__ import annotations

import json

import cdktf
import pytest

import main
from gpu_constructs.compute.eks import iam
from tests.conftest import resources

FILES = sorted(iam.POLICIES.glob("*.json"))


def test_there_are_policy_files():
    assert [path.stem for path in FILES] == ["aws-load-balancer-controller", "karpenter-controller"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_each_file_is_a_policy_document(path):
    document = json.loads(path.read_text())
    assert document["Version"] == "2012-10-17"
    for statement in document["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny")
        assert {"Action", "Resource"} <= statement.keys()
        assert set(statement) <= {"Sid", "Effect", "Action", "Resource", "Condition"}


def test_a_placeholder_without_a_value_or_a_value_without_a_placeholder_is_refused():
    with pytest.raises(ValueError, match=r"no value for \{\{region\}\}"):
        iam.policy_file("aws-load-balancer-controller")
    with pytest.raises(ValueError, match=r"has no placeholder for zone"):
        iam.policy_file("aws-load-balancer-controller", region="eu-west-1", zone="a")
    filled = iam.policy_file("aws-load-balancer-controller", region="eu-west-1")
    assert "{{" not in filled and '"aws:RequestedRegion": "eu-west-1"' in filled


def test_the_eks_stack_ships_every_policy_file_filled():
    """Each file reaches an aws_iam_role_policy of eks-karpenter with no placeholder left."""
    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    eks = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    policies = [body["policy"] for body in resources(eks, "aws_iam_role_policy").values()]
    assert not [p for p in policies if "{{" in p]
    for path in FILES:
        sids = {s.get("Sid") for s in json.loads(path.read_text())["Statement"]} - {None}
        actions = {json.dumps(s["Action"]) for s in json.loads(path.read_text())["Statement"]}
        shipped = [
            p for p in policies if actions <= {json.dumps(s["Action"]) for s in json.loads(p)["Statement"]}
        ]
        assert shipped, f"{path.name} is in no aws_iam_role_policy"
        assert sids <= {s.get("Sid") for s in json.loads(shipped[0])["Statement"]}
