"""eks-karpenter's AWS part applied for real: ``terraform apply`` with hashicorp/aws 5.100.0 against
moto in server mode, then a second plan that must be empty, then a destroy.

What moto does not implement is excluded through UNSUPPORTED (with the resources that depend on it);
where moto answers differently from AWS, exactly the attributes in MOTO_ARTEFACTS are ignored. Any
other error fails the test. What moto accepts without checking (block device mappings, AMI aliases,
instance types, Performance Insights per instance class) is asserted at synth level in test_eks.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NEEDS_AWS_5, moto_server, run_terraform
from tests.support.eks import PLAN_VARS, aws_part

# Resource types moto 5.2.5 has no API for, and references to attributes it leaves empty: each entry
# removes the resources of that type or naming that reference, and everything depending on them.
UNSUPPORTED: dict[str, str] = {
    "aws_eks_addon": "moto's EKS has no add-on API (CreateAddon is not implemented)",
    "aws_eks_access_entry": "moto's EKS has no access entry API (CreateAccessEntry is not implemented)",
    "aws_eks_access_policy_association": "moto's EKS has no AssociateAccessPolicy",
    "aws_eks_pod_identity_association": "moto's EKS has no Pod Identity API",
    "vpc_config[0].cluster_security_group_id": (
        "moto's CreateCluster makes no cluster security group, so the attribute stays empty"
    ),
}

# Data sources moto 5.2.5 cannot answer, and what the apply does instead.
UNSUPPORTED_DATA: dict[str, str] = {
    "aws_eks_addon_version": "moto's EKS has no DescribeAddonVersions; only the add-ons read it, "
    "and they are excluded",
    "aws_servicequotas_service_quota": "moto's Service Quotas answers only service code vpc "
    "(moto/servicequotas/models.py get_service_quota raises NoSuchResource for ec2); the GPU quota "
    "postconditions are evaluated by Terraform against a mocked provider in test_eks_quotas.py",
    "aws_ssm_parameter": "moto's SSM has no /aws/service/eks/ parameters and refuses to create "
    "names under /aws; the node group gets the release version below, and the Karpenter AMI "
    "parameters (only the Helm layer, left out here, depends on them) are checked against the "
    "pinned alias and Kubernetes version in test_eks.py",
}
# An EKS-optimized AL2023 release version as the parameter answers (Kubernetes version, AMI date).
MOTO_AMI_RELEASE = "1.34.2-20251120"


def replace_unsupported_data(config: dict[str, Any]) -> None:
    """Drop the data sources moto cannot answer; the AMI release parameter's readers get a fixed value."""
    data = config.get("data", {})
    for name in data.get("aws_ssm_parameter", {}):
        text = json.dumps(config["resource"])
        text = text.replace(f"${{nonsensitive(data.aws_ssm_parameter.{name}.value)}}", MOTO_AMI_RELEASE)
        config["resource"] = json.loads(text)
    for kind in UNSUPPORTED_DATA:
        data.pop(kind, None)
    if not data:
        config.pop("data", None)
    # terraform_data resources are no data sources: only a reference starting with "data." counts.
    assert not re.search(r"(?<![\w])data\.", json.dumps(config["resource"])), (
        "a resource still reads a dropped data source"
    )


# Every service the AWS part calls, pointed at moto (the provider's ``endpoints`` keys).
SERVICES = ("acm", "events", "logs", "ec2", "eks", "iam", "kms", "rds", "route53", "sqs", "sts")

# resource type -> attributes where moto's answer differs from what the configuration asked for,
# with the evidence; they are ignored in the second plan only.
MOTO_ARTEFACTS: dict[str, dict[str, str]] = {
    "aws_eks_cluster": {
        "access_config": "moto/eks/models.py keeps no accessConfig: DescribeCluster returns none, and "
        "bootstrap_cluster_creator_admin_permissions would force a replacement",
        "upgrade_policy": "moto/eks/models.py and responses.py know no upgradePolicy: CreateCluster "
        "drops it and DescribeCluster returns none",
    },
    "aws_eks_node_group": {
        "remote_access": "moto/eks/models.py fills DEFAULT_REMOTE_ACCESS (ec2SshKey eksKeypair) into a "
        "node group created without one",
    },
    "aws_launch_template": {
        "tag_specifications": "moto/ec2/models/launch_templates.py returns the template's own tags "
        "(the launch-template tag specification) inside LaunchTemplateData; EC2 does not",
    },
    "aws_db_instance": {
        "performance_insights_enabled": "moto/rds ignores EnablePerformanceInsights: DescribeDBInstances "
        "answers without PerformanceInsightsEnabled, which the provider reads as false",
        "performance_insights_kms_key_id": "as performance_insights_enabled",
    },
    "aws_db_parameter_group": {
        "parameter": "moto's DescribeDBParameters ignores the Source filter and answers without each "
        "parameter's Source; the provider's read keeps none of them (the second plan adds all three again)",
    },
}

MOTO_ENV = {
    # AWS-managed policies (AmazonEKSClusterPolicy, ...) exist only when moto loads them.
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
    # ACM issues a DNS-validated certificate at once instead of after 60 s.
    "MOTO_ACM_VALIDATION_WAIT": "0",
}


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """moto_server on 127.0.0.1 and a free port, from the project's own environment; stopped by PID."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{server} is missing: moto[server] comes from the project's lock")
        pytest.skip("moto[server] is not installed in this environment")
    with moto_server(server, MOTO_ENV) as url:
        yield url


def _references(body: Any) -> set[str]:
    """``type.name`` of every resource a resource body refers to (interpolations and depends_on)."""
    text = json.dumps(body)
    found = set(re.findall(r"\b(aws_[a-z0-9_]+\.[A-Za-z0-9_-]+)", text))
    return found


def exclude_unsupported(config: dict[str, Any]) -> dict[str, int]:
    """Remove what moto cannot create and everything depending on it; return counts by reason."""
    removed: dict[str, str] = {}
    for kind, bodies in config["resource"].items():
        for name, body in bodies.items():
            text = json.dumps(body)
            for what, _ in UNSUPPORTED.items():
                if kind == what or f".{what}" in text:
                    removed[f"{kind}.{name}"] = what
                    break
    changed = True
    while changed:
        changed = False
        for kind, bodies in config["resource"].items():
            for name, body in bodies.items():
                address = f"{kind}.{name}"
                if address in removed:
                    continue
                depends = _references(body) & set(removed)
                if depends:
                    removed[address] = f"depends on {sorted(depends)[0]}"
                    changed = True
    for address in removed:
        kind, name = address.split(".", 1)
        del config["resource"][kind][name]
        if not config["resource"][kind]:
            del config["resource"][kind]
    for name, output in list(config.get("output", {}).items()):
        if _references(output) & set(removed):
            del config["output"][name]
    counts: dict[str, int] = {}
    for reason in removed.values():
        key = reason if reason in UNSUPPORTED else "dependents"
        counts[key] = counts.get(key, 0) + 1
    return counts


@NEEDS_AWS_5
def test_apply_against_moto_then_an_empty_plan_then_destroy(tmp_path, moto, aws_terraform):
    import boto3
    import cdktf

    from environments import Instance

    terraform, tf_env = aws_terraform

    stack = Instance("eks-karpenter", "eks-karpenter").build(cdktf.Testing.app())
    config = aws_part(json.loads(cdktf.Testing.synth(stack)))
    counts = exclude_unsupported(config)
    replace_unsupported_data(config)
    applied = sum(len(v) for v in config["resource"].values())
    print(f"\napplying {applied} resources; excluded: {json.dumps(counts, sort_keys=True)}")

    (aws,) = config["provider"]["aws"]
    aws.update(
        skip_region_validation=True,
        endpoints=[dict.fromkeys(SERVICES, moto)],
    )
    for kind, attributes in MOTO_ARTEFACTS.items():
        for body in config["resource"].get(kind, {}).values():
            body.setdefault("lifecycle", {})["ignore_changes"] = sorted(attributes)

    # The hosted zone the certificate is validated in exists before the stack, as in a real account.
    def client(service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=moto,
            region_name=aws["region"],
            aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
            aws_secret_access_key="moto",
        )

    route53 = client("route53")
    zone = route53.create_hosted_zone(Name="example.com", CallerReference="apply-test")
    variables = {**PLAN_VARS, "route53_zone_id": zone["HostedZone"]["Id"].split("/")[-1]}
    var_args = [f"-var={k}={v}" for k, v in variables.items()]

    (tmp_path / "main.tf.json").write_text(json.dumps(config, indent=1))
    env = {**tf_env, "AWS_ENDPOINT_URL": moto}

    def run(*args: str, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = run_terraform(terraform, tmp_path, env, *args, codes=codes)
        return result

    run("init", "-input=false")
    run("apply", "-input=false", "-auto-approve", "-lock=false", *var_args)
    in_state = run("state", "list").stdout.split()
    assert len(in_state) == applied

    second = run("plan", "-input=false", "-lock=false", "-detailed-exitcode", *var_args, codes=(0, 2))
    assert second.returncode == 0, "a second plan is not empty:\n" + second.stdout[-6000:]

    # An operator lifts the database's deletion protection first, then destroys (the state was just
    # read by the second plan).
    assert [a for a in in_state if a.startswith("aws_db_instance.")], "the database was applied"
    (rds_key_id,) = [
        k["TargetKeyId"]
        for k in client("kms").list_aliases()["Aliases"]
        if k["AliasName"] == "alias/gpu-dev-euw1-eks-db-rds"
    ]
    rds = client("rds")
    for instance in rds.describe_db_instances()["DBInstances"]:
        rds.modify_db_instance(
            DBInstanceIdentifier=instance["DBInstanceIdentifier"],
            DeletionProtection=False,
            ApplyImmediately=True,
        )
    # The database's key is kept (prevent_destroy): it leaves the state, and AWS keeps it.
    (rds_key,) = [a for a in in_state if a.startswith("aws_kms_key.rds_")]
    run("state", "rm", rds_key)
    run("destroy", "-input=false", "-auto-approve", "-lock=false", "-refresh=false", *var_args)
    assert run("state", "list").stdout.split() == []
    assert client("kms").describe_key(KeyId=rds_key_id)["KeyMetadata"]["KeyState"] == "Enabled"
