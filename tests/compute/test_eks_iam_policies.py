"""The controllers' IAM policies are data (gpu_constructs/compute/eks/policies/*.json): each file is a valid policy
document whose placeholders the constructs fill, all of them, and each is what a stack ships."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import cdktf
import pytest

import main
from gpu_constructs.compute.eks import iam
from tests.conftest import release_values, resources

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


# --- The files against upstream, through docs/eks-karpenter.md ------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "eks-karpenter.md"
ACTION = re.compile(r"`([a-z0-9-]+:[A-Za-z*]+)`")


def _actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _table(heading_row: str) -> list[list[str]]:
    """The rows of the table of docs/eks-karpenter.md whose header row is ``heading_row``, as cells."""
    lines = DOC.read_text().splitlines()
    start = lines.index(heading_row) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _file(policy: str) -> list[dict]:
    statements: list[dict] = json.loads((iam.POLICIES / f"{policy}.json").read_text())["Statement"]
    return statements


def test_the_documented_actions_are_the_files_statement_by_statement():
    """docs/eks-karpenter.md lists every statement's actions; each file grants exactly those, in order."""
    documented: dict[str, list[tuple[str, list[str]]]] = {}
    for policy, statement, actions in _table("| policy | statement | actions |"):
        documented.setdefault(policy.strip("`"), []).append((statement, ACTION.findall(actions)))
    assert sorted(documented) == [path.stem for path in FILES]
    for policy, rows in documented.items():
        in_file = [(s.get("Sid", str(n)), _actions(s)) for n, s in enumerate(_file(policy), 1)]
        assert rows == in_file, f"policies/{policy}.json and docs/eks-karpenter.md list different actions"


DIFFERENCES = "| policy | action or condition | difference | why |"


def _differences(kind: str) -> list[tuple[str, list[str]]]:
    return [
        (policy.strip("`"), ACTION.findall(what))
        for policy, what, difference, _why in _table(DIFFERENCES)
        if difference == kind
    ]


def _matching(policy: str, pattern: str) -> list[dict]:
    return [s for s in _file(policy) if any(fnmatch.fnmatchcase(a, pattern) for a in _actions(s))]


def _region_scoped(statement: dict) -> bool:
    return "aws:RequestedRegion" in json.dumps(statement.get("Condition", {}))


def test_each_documented_difference_is_what_the_files_do():
    """The table of differences from upstream: what it says is not granted is not, and the statements
    it says carry (or do not carry) the region condition do (or do not)."""
    assert {row[2] for row in _table(DIFFERENCES)} <= {
        "region condition",
        "no region condition",
        "not granted",
        "one statement",
        "one inline policy",
        "`ec2.amazonaws.com` only",
    }
    for policy, actions in _differences("not granted"):
        assert actions
        granted = {a for s in _file(policy) for a in _actions(s)}
        assert not granted & set(actions), f"{policy} grants {granted & set(actions)}"
    for policy, patterns in _differences("region condition"):
        for pattern in patterns:
            assert _matching(policy, pattern), pattern
            assert all(_region_scoped(s) for s in _matching(policy, pattern)), pattern
    for policy, actions in _differences("no region condition"):
        for action in actions:
            assert _matching(policy, action), action
            assert not any(_region_scoped(s) for s in _matching(policy, action)), action


def test_what_the_not_granted_actions_serve_is_not_used():
    """WAF Classic only serves an Ingress annotated waf-acl-id or web-acl-id, zonal-shift reads only
    Karpenter's enableZonalShift: the stack has neither."""
    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    synthesized = cdktf.Testing.synth(instance.build(cdktf.Testing.app()))
    assert "waf-acl-id" not in synthesized and "web-acl-id" not in synthesized
    (karpenter,) = [
        r for r in resources(json.loads(synthesized), "helm_release").values() if r["name"] == "karpenter"
    ]
    assert not release_values(karpenter)["settings"].get("enableZonalShift", False)


# Services with a single endpoint in us-east-1, whose requests carry aws:RequestedRegion us-east-1
# wherever the caller runs: the IAM User Guide ("AWS: Denies access to AWS based on the requested
# Region": CloudFront, IAM, Route 53, Support, budgets, globalaccelerator, importexport,
# organizations, waf), and Shield (the AWS SDKs' endpoint rules send every aws-partition call to
# shield.us-east-1.amazonaws.com).
GLOBAL_SERVICES = {
    "budgets",
    "cloudfront",
    "globalaccelerator",
    "iam",
    "importexport",
    "organizations",
    "route53",
    "shield",
    "support",
    "waf",
}


def _role_policies() -> dict[str, dict]:
    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    eks = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    return {name: json.loads(body["policy"]) for name, body in resources(eks, "aws_iam_role_policy").items()}


def test_no_region_condition_holds_a_global_service():
    """A statement limited to the stack's region (aws:RequestedRegion) would deny a global
    service's calls outside us-east-1: no role policy of the stack puts one under it."""
    problems = [
        f"{name}: {action}"
        for name, policy in _role_policies().items()
        for statement in policy["Statement"]
        if _region_scoped(statement)
        for action in _actions(statement)
        if action.split(":")[0] in GLOBAL_SERVICES
    ]
    assert not problems


def test_no_role_policy_grants_a_wildcard_action():
    """Every role policy names its actions, as upstream's do (`ec2:Describe*` would grant the
    Describe calls EC2 adds later too)."""
    wildcards = [
        f"{name}: {action}"
        for name, policy in _role_policies().items()
        for statement in policy["Statement"]
        for action in _actions(statement)
        if "*" in action
    ]
    assert not wildcards


NODE_POLICIES = {
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
}
"""Karpenter v1.14.1's getting-started CloudFormation (KarpenterNodeRole ManagedPolicyArns) and the EKS
user guide's node IAM role: image pulls with PullOnly, not ReadOnly."""


def test_every_node_role_has_the_managed_policies_upstream_gives_nodes():
    (instance,) = [i for i in main.INSTANCES if i.stack == "eks-karpenter"]
    eks = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
    node_roles = {
        f"${{aws_iam_role.{name}.name}}"
        for name, role in resources(eks, "aws_iam_role").items()
        if "ec2.amazonaws.com" in role["assume_role_policy"]
    }
    assert len(node_roles) == 2  # the system node group's and Karpenter's
    for role in node_roles:
        attached = {
            a["policy_arn"].removeprefix("arn:aws:iam::aws:policy/")
            for a in resources(eks, "aws_iam_role_policy_attachment").values()
            if a["role"] == role
        }
        assert attached == NODE_POLICIES, role
