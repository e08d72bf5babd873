"""Every Terraform variable of every stack is validated, or says why not; names lie in their zone."""

from __future__ import annotations

import json
from pathlib import Path

import cdktf
import pytest

from environments.variables import UNVALIDATED
from tests.conftest import plan_variables, site_instance, variables_workdir

VARIANTS = [
    # main.py's instances, and the settings that declare other variables
    ("main", None),
    (
        "single-node",
        {"letsencrypt_challenge": "http01", "vault_seal": "shamir", "verify_ssh_host_keys": False},
    ),
    (
        "proxmox-ha",
        {
            "root_auth": True,
            "jupyter_auth": "github",
            "jupyter_github_organizations": ("acme",),
            "letsencrypt_challenge": "http01",
            "etcd_s3": False,
        },
    ),
    ("lke", {"firewall": False}),
    ("lke", {"tier": "enterprise", "k8s_version": "v1.31.8+lke5"}),
    ("eks-karpenter", {"state_bucket": "acme-tf-state"}),
]


def every_variable() -> dict[tuple[str, str], dict]:
    """(stack, variable) -> the variable's block, over main.py's stacks and the variants above."""
    import main

    instances = []
    for environment, overrides in VARIANTS:
        if environment == "main":
            instances += list(main.INSTANCES)
        else:
            instances.append(site_instance(f"{environment}-{len(instances)}", environment, overrides or {}))
    found = {}
    for instance in instances:
        stack = json.loads(cdktf.Testing.synth(instance.build(cdktf.Testing.app())))
        for name, block in stack.get("variable", {}).items():
            found[(instance.stack, name)] = block
    return found


@pytest.fixture(scope="module")
def variables() -> dict[tuple[str, str], dict]:
    return every_variable()


def test_every_variable_is_validated_or_says_why_not(variables):
    assert len({name for _, name in variables}) > 40
    missing = sorted(f"{stack}: {name}" for (stack, name), b in variables.items() if not b.get("validation"))
    missing = [entry for entry in missing if entry.split(": ")[1] not in UNVALIDATED]
    assert missing == []
    # ... and UNVALIDATED lists only variables that exist and have no validation anywhere
    for name, why in UNVALIDATED.items():
        blocks = [b for (_, n), b in variables.items() if n == name]
        assert blocks, f"{name} is in UNVALIDATED but no stack declares it"
        assert not any(b.get("validation") for b in blocks), f"{name} is validated: drop it from UNVALIDATED"
        assert len(why) > 20


def test_every_validation_has_a_message_naming_its_variable(variables):
    for (stack, name), block in variables.items():
        for validation in block.get("validation", []):
            assert validation["condition"].startswith("${") and validation["condition"].endswith("}")
            assert f"var.{name}" in validation["condition"], (stack, name)
            assert name in validation["error_message"], (stack, name)


SINGLE_NODE_VARS = {
    "gpu_node_ips": '["192.168.1.100"]',
    "k3s_token": "0123456789abcdef0123456789abcdef",
    "app_domain": "api.example.com",
    "dns_zone": "example.com",
    "acme_email": "ops@example.com",
    "app_image": "ghcr.io/acme/ffe-backend:2.0.1",
    "cloudflare_api_token": "0123456789abcdefghijABCDEFGHIJ_-01234567",
    "ssh_host_keys": '["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0xHqY0n3vXbKp7nB8m0f1S7o3b5Yw6x9Zk1Q2R"]',
    "vault_kms_region": "eu-west-1",
    "vault_kms_key_id": "alias/vault-unseal",
    "vault_kms_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "vault_kms_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "backup_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "backup_secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
}


@pytest.fixture(scope="module")
def single_node_dir(tmp_path_factory) -> Path:
    stack = json.loads(
        cdktf.Testing.synth(site_instance("single-node", "single-node").build(cdktf.Testing.app()))
    )
    return variables_workdir(stack["variable"], tmp_path_factory.mktemp("zone"))


@pytest.mark.parametrize(
    ("values", "ok"),
    [
        ({}, True),
        ({"app_domain": "example.com"}, True),  # the zone's apex
        ({"app_domain": "api.eu.example.com"}, True),
        ({"app_domain": "api.example.org"}, False),
        ({"app_domain": "api.badexample.com"}, False),  # ends with the zone's text, not in the zone
        ({"dns_zone": "Example.com"}, False),
        ({"ssh_user": "Ubuntu Admin"}, False),
    ],
)
def test_app_domain_lies_in_dns_zone(single_node_dir, values, ok):
    result = plan_variables(single_node_dir, {**SINGLE_NODE_VARS, **values})
    assert (result.returncode == 0) == ok, result.stderr
    if "app_domain" in values and not ok:
        assert "app_domain must lie in dns_zone" in " ".join(result.stderr.split())


PROXMOX_VARS = {
    "proxmox_endpoint": "https://pve:8006/",
    "proxmox_api_token": "terraform@pve!cdktf=0b6f1a3e-2c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "k3s_token": "a" * 32,
    "k3s_agent_token": "b" * 32,
    "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEc2Tq0xHqY0n3vXbKp7nB8m0f1S7o3b5Yw6x9Zk1Q2R ops@lab",
    "acme_email": "ops@example.com",
    "rancher_hostname": "rancher.example.com",
    "jupyterhub_hostname": "jupyter.example.com",
    "fleet_repo_url": "https://example.com/r.git",
    "etcd_s3_bucket": "etcd",
    "etcd_s3_access_key": "a",
    "etcd_s3_secret_key": "s",
    "cloudflare_api_token": "a" * 40,
    "dns_zone": "example.com",
    "jupyterhub_admin_user": "ops-lead",
    "jupyterhub_admin_password": "Zx8!long-enough-password",
    "vm_ssh_host_keys": json.dumps([f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{n}" for n in range(7)]),
    "vm_ssh_host_private_keys": json.dumps(
        [f"-----BEGIN OPENSSH PRIVATE KEY-----\n{n}\n-----END OPENSSH PRIVATE KEY-----\n" for n in range(7)]
    ),
}


@pytest.fixture(scope="module")
def proxmox_dir(tmp_path_factory) -> Path:
    stack = json.loads(
        cdktf.Testing.synth(site_instance("proxmox-ha", "proxmox-ha").build(cdktf.Testing.app()))
    )
    variables = {k: v for k, v in stack["variable"].items() if k != "gpu_devices"}
    return variables_workdir(variables, tmp_path_factory.mktemp("proxmox-zone"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, None),
        (
            {"jupyterhub_hostname": "jupyter.example.org"},
            "rancher_hostname and jupyterhub_hostname must lie in",
        ),
        ({"jupyterhub_hostname": "rancher.example.com"}, "other than rancher_hostname"),
        ({"proxmox_api_token": "secret"}, "proxmox_api_token must be user@realm!tokenid=secret"),
        ({"proxmox_endpoint": "pve:8006"}, "proxmox_endpoint must be the API's https:// URL"),
        ({"ssh_public_key": "AAAAC3Nza"}, "ssh_public_key must be one OpenSSH public key line"),
        ({"fleet_paths": '["../secrets"]'}, "fleet_paths must list folders of the repository"),
        ({"fleet_branch": "feature..x"}, "fleet_branch must be a Git branch name"),
        ({"fleet_repo_url": "example.com/r"}, "fleet_repo_url must be a Git URL"),
        ({"etcd_s3_bucket": "My_Bucket"}, "etcd_s3_bucket must be a bucket name"),
        ({"jupyterhub_admin_user": "Ops Lead"}, "jupyterhub_admin_user must be 1-64 lower-case letters"),
        ({"jupyterhub_admin_password": "short"}, "jupyterhub_admin_password must be 16 to 72 printable"),
        ({"jupyterhub_admin_password": "x" * 73}, "jupyterhub_admin_password must be 16 to 72 printable"),
        ({"jupyterhub_admin_password": "with a space in it ok"}, "jupyterhub_admin_password must be 16"),
    ],
)
def test_proxmox_variables(proxmox_dir, values, message):
    result = plan_variables(proxmox_dir, {**PROXMOX_VARS, **values})
    if message is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0
        assert message in " ".join(result.stderr.split())
