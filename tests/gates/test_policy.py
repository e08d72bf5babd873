"""The synth-time policy: the real stack passes it, and each rule fails a deliberately broken input."""

from __future__ import annotations

import json

import cdktf
import pytest
from cdktf import Aspects, TerraformStack, TerraformVariable
from cdktf_cdktf_provider_helm.provider import HelmProvider

from gpu_constructs import helm
from gpu_constructs.policy import aws_problems, node_class_problems, problems, secret_problems
from tests.conftest import make_cluster

GPU_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "trainer"},
    "spec": {
        "selector": {"matchLabels": {"app": "trainer"}},
        "template": {
            "metadata": {"labels": {"app": "trainer"}},
            "spec": {
                "containers": [
                    {
                        "name": "t",
                        "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }
                ]
            },
        },
    },
}


def synth_with_policy(build) -> str:
    from gpu_constructs.policy import StackPolicy

    stack = TerraformStack(cdktf.Testing.app(), "policy")
    HelmProvider(stack, "helm", kubernetes={"config_path": "/k"})
    Aspects.of(stack).add(StackPolicy(make_cluster()))
    build(stack)
    return cdktf.Testing.synth(stack)


def test_gpu_workload_without_toleration_fails_synth_with_the_path():
    with pytest.raises(
        RuntimeError,
        match=r"policy: policy/trainer: Deployment trainer requests nvidia.com/gpu but does not tolerate nvidia.com/gpu=true:NoSchedule",
    ):
        synth_with_policy(
            lambda s: helm.manifests_release(
                s, "trainer", cluster=make_cluster(), name="t", namespace="ml", manifests=[GPU_DEPLOYMENT]
            )
        )


def test_gpu_workload_placed_by_the_contract_passes():
    pod = GPU_DEPLOYMENT["spec"]["template"]["spec"]
    placed = json.loads(json.dumps(GPU_DEPLOYMENT))
    placed["spec"]["template"]["spec"] = {**pod, **make_cluster().gpu_pod_spec()}
    synth_with_policy(
        lambda s: helm.manifests_release(
            s, "trainer", cluster=make_cluster(), name="t", namespace="ml", manifests=[placed]
        )
    )


def test_unpinned_chart_fails():
    with pytest.raises(
        RuntimeError,
        match=r"policy: policy/floating: chart 'traefik' has version None: pin an exact chart version",
    ):
        synth_with_policy(
            lambda s: helm.release(
                s,
                "floating",
                cluster=make_cluster(),
                name="t",
                chart="traefik",
                repository="https://traefik.github.io/charts",
                namespace="x",
                values={},
            )
        )


def test_chart_version_range_fails():
    assert problems("helm_release", {"chart": "x", "repository": "https://r", "version": "~> 1.2"}, None)


def test_latest_image_fails():
    latest = json.loads(json.dumps(GPU_DEPLOYMENT))
    latest["spec"]["template"]["spec"]["containers"][0]["image"] = "nvcr.io/nvidia/pytorch:latest"
    config = {"values": [helm.to_yaml({"manifests": [latest]})]}
    assert any("pin the image" in p for p in problems("helm_release", config, None))
    assert problems(
        "helm_release", {"values": [helm.to_yaml({"image": {"repository": "x", "tag": "latest"}})]}, None
    )


def test_literal_password_fails():
    with pytest.raises(
        RuntimeError,
        match=r"policy: policy/db_password: variable db_password looks secret: declare it with sensitive = true",
    ):
        synth_with_policy(
            lambda s: TerraformVariable(s, "db_password", type="string", default="hunter2hunter2")
        )
    assert secret_problems({"env": [{"name": "DB_PASSWORD", "value": "hunter2hunter2"}]})
    assert secret_problems({"command": "psql postgresql://app:password=s3cr3tvalue@db"})
    assert secret_problems({"key": "-----BEGIN RSA PRIVATE KEY-----\nMII..."})
    assert secret_problems({"admin_password": "${var.admin_password}"}) == []
    # a setting that names a Secret is not one; the same text with a value is
    assert secret_problems({"data": "etcd-s3: true\netcd-s3-config-secret: k3s-etcd-s3\n"}) == []
    assert secret_problems({"data": "etcd-s3-secret: k3s-etcd-s3-key\n"})
    assert (
        secret_problems(
            {
                "env": [
                    {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
                ]
            }
        )
        == []
    )
    # vault-helm's extraSecretEnvironmentVars name a Secret's key; a literal secret next to it is found.
    reference = {
        "envName": "AWS_SECRET_ACCESS_KEY",
        "secretName": "vault-seal",
        "secretKey": "AWS_SECRET_ACCESS_KEY",
    }
    assert secret_problems({"server": {"extraSecretEnvironmentVars": [reference]}}) == []
    assert secret_problems({"server": {"secretKey": "wJalrXUtnFEMI"}})


def test_unencrypted_storage_and_imdsv1_fail():
    assert aws_problems("aws_db_instance", {"storage_encrypted": False}) == [
        "aws_db_instance is not encrypted: set storage_encrypted = true"
    ]
    assert aws_problems("aws_ebs_volume", {}) == ["aws_ebs_volume is not encrypted: set encrypted = true"]
    template = {
        "metadata_options": {"http_tokens": "optional"},
        "block_device_mappings": [{"ebs": {"encrypted": "true"}}],
    }
    assert aws_problems("aws_launch_template", template) == [
        "aws_launch_template does not require IMDSv2: set metadata_options.http_tokens = required"
    ]
    good = {
        "metadata_options": {"http_tokens": "required"},
        "block_device_mappings": [{"ebs": {"encrypted": True}}],
    }
    assert aws_problems("aws_launch_template", good) == []


def test_node_class_without_imdsv2_or_encryption_fails():
    node_class = {
        "kind": "EC2NodeClass",
        "metadata": {"name": "gpu"},
        "spec": {
            "metadataOptions": {"httpTokens": "optional"},
            "blockDeviceMappings": [{"ebs": {"encrypted": False}}],
        },
    }
    assert node_class_problems(node_class) == [
        "EC2NodeClass gpu does not require IMDSv2: set metadataOptions.httpTokens: required",
        "EC2NodeClass gpu has an unencrypted volume: set ebs.encrypted: true",
    ]
