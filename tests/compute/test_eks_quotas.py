"""eks-karpenter: the GPU pools' EC2 vCPU quotas are read at plan and a too-small one stops it."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from gpu_constructs.compute.eks import GPU_POOL, SEED_NODE_POOLS
from gpu_constructs.compute.eks.quotas import GPU_VCPUS, QUOTAS
from tests.conftest import NEEDS_AWS_5, run_terraform
from tests.support.eks import eks_stack


def quotas(synthesized) -> dict[str, dict]:
    return {q["quota_code"]: q for q in synthesized["data"]["aws_servicequotas_service_quota"].values()}


def required(quota) -> int:
    (condition,) = quota["lifecycle"]["postcondition"]
    match = re.fullmatch(r"\$\{self\.value >= ([0-9]+)\}", condition["condition"])
    assert match, condition["condition"]
    return int(match.group(1))


def gpu_pool():
    return next(p for p in SEED_NODE_POOLS if p.name == GPU_POOL)


def test_the_seed_gpu_pool_reads_the_g_quotas_it_launches_under(synth):
    """g4dn, spot and on-demand, up to 2xlarge: both G quotas must hold one g4dn.2xlarge."""
    found = quotas(eks_stack(synth))
    assert set(found) == {"L-DB2E81BA", "L-3819A6DF"}
    for code, quota in found.items():
        assert quota["service_code"] == "ec2"
        assert required(quota) == GPU_VCPUS["g4dn"]["2xlarge"] == 8
        (condition,) = quota["lifecycle"]["postcondition"]
        name = next(n for (c, n) in QUOTAS.values() if c == code)
        # The message names the quota, its code, the region and what to request.
        for part in (name, code, "eu-west-1", "Request at least 8", "Service Quotas console"):
            assert part in condition["error_message"]


def test_a_spot_only_p_pool_reads_the_p_spot_quota_for_its_largest_instance(synth):
    pools = tuple(
        replace(p, families=("p3",), sizes=("2xlarge", "8xlarge"), capacity_types=("spot",))
        if p.name == GPU_POOL
        else p
        for p in SEED_NODE_POOLS
    )
    found = quotas(eks_stack(synth, node_pools=pools))
    assert set(found) == {"L-7212CCBC"}
    assert required(found["L-7212CCBC"]) == 32


def test_an_on_demand_gpu_pool_reads_no_spot_quota_and_cpu_pools_none(synth):
    pools = tuple(
        replace(p, capacity_types=("on-demand",)) if p.name == GPU_POOL else p for p in SEED_NODE_POOLS
    )
    found = quotas(eks_stack(synth, node_pools=pools))
    assert set(found) == {"L-DB2E81BA"}
    assert "node pool gpu-inference" in found["L-DB2E81BA"]["lifecycle"]["postcondition"][0]["error_message"]


TEST_FILE = """
mock_provider "aws" {}

run "quota_covers_the_pool" {
  command = plan
  override_data {
    target = data.aws_servicequotas_service_quota.%(name)s
    values = { value = %(enough)s }
  }
}

run "quota_too_small" {
  command = plan
  override_data {
    target = data.aws_servicequotas_service_quota.%(name)s
    values = { value = %(short)s }
  }
  expect_failures = [data.aws_servicequotas_service_quota.%(name)s]
}
"""


@NEEDS_AWS_5
@pytest.mark.parametrize("code", ["L-DB2E81BA", "L-3819A6DF"])
def test_terraform_refuses_the_plan_while_the_quota_is_too_small(synth, tmp_path, aws_terraform, code):
    """Terraform itself evaluates the synthesized data source and its postcondition (``terraform
    test`` with a mocked AWS provider answering the quota): 8 vCPUs pass, 4 stop the plan."""
    terraform, env = aws_terraform
    synthesized = eks_stack(synth)
    (name,) = [n for n, q in synthesized["data"]["aws_servicequotas_service_quota"].items() if code in n]
    config = {
        "terraform": {"required_providers": {"aws": synthesized["terraform"]["required_providers"]["aws"]}},
        # This quota alone: the mocked provider answers every other one with 0.
        "data": {
            "aws_servicequotas_service_quota": {
                name: synthesized["data"]["aws_servicequotas_service_quota"][name]
            }
        },
    }
    (tmp_path / "main.tf.json").write_text(json.dumps(config))
    (tmp_path / "quota.tftest.hcl").write_text(TEST_FILE % {"name": name, "enough": 8, "short": 4})
    run_terraform(terraform, tmp_path, env, "init", "-input=false")
    result = run_terraform(terraform, tmp_path, env, "test", codes=(0, 1))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 0 failed" in result.stdout

    # Without expect_failures the short quota fails with the message the operator reads.
    (tmp_path / "quota.tftest.hcl").write_text(
        TEST_FILE.split('run "quota_too_small"')[0] % {"name": name, "enough": 4}
    )
    failed = run_terraform(terraform, tmp_path, env, "test", codes=(1,))
    message = " ".join((failed.stdout + failed.stderr).split())
    assert "is 4 vCPUs" in message and "Request at least 8 in the Service Quotas console" in message
