"""The whole single-node stack: snapshot, determinism, variables under real Terraform, secrets."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import cdktf
import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from environments import Instance
from gpu_constructs.hostexec import script_text
from tests.conftest import (
    ON_ENGINE,
    by_kind,
    manifests_of,
    plan_variables,
    resources,
    synth_main,
    terraform_binary,
    variables_workdir,
)

# Everything a ${...} in the synthesized JSON may start with: Terraform references and functions.
TERRAFORM_REFERENCES = (
    "var.",
    "self.",
    "path.",
    "element(",
    "file(",
    "terraform_data.",
    "helm_release.",
    "length(",
    "alltrue(",
    "can(",
    "ip}",
    "join(",
    "sha256(",
    "flatten([for t in ",
    "substr(terraform_data.",
    "base64decode(data.external.",
    "each.key",
    "toset(",
    "zipmap(",
)


@pytest.fixture(scope="module")
def stack_json() -> dict:
    stack = Instance("single-node", "single-node").build(cdktf.Testing.app())
    return json.loads(cdktf.Testing.synth(stack))


@ON_ENGINE["cdktf"]
def test_snapshot(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


@ON_ENGINE["cdktn"]
def test_snapshot_cdktn(stack_json, snapshot):
    assert stack_json == snapshot.use_extension(JSONSnapshotExtension)


def test_every_component_is_in_the_stack(stack_json):
    releases = {r["name"] for r in resources(stack_json, "helm_release").values()}
    assert releases == {
        "traefik",
        "cert-manager",
        "cluster-issuers",
        "storage-classes",
        "gpu-local-path-provisioner",
        "gpu-operator",
        "vault",
        "vault-operations",
        "vault-snapshot",
        "cloudnative-pg",
        "ffe-db",
        "ffe-backend",
        "kube-prometheus-stack",
        "gpu-monitoring",
    }
    steps = {key.rsplit("_", 1)[0] for key in resources(stack_json, "terraform_data")}
    assert steps == {
        "compute_agents-leave",
        "compute_cluster",
        "compute_server-gpu-driver",
        "compute_server-k3s",
        "compute_kubeconfig",
        "compute_node-labels",
        "storage_check-0",
        "networking_firewall-0",
        "networking_cloudflare-secret",
        "vault_seal-secret",
        "vault_snapshot-secret",
        "postgres_object-store-secret",
        "postgres_generation",
        "vault_bootstrap",
    }
    assert set(stack_json["output"]) == {
        "kubeconfig_path",
        "dns_records",
        "cloudflare_commands",
        "vault_address",
        "vault_secret_paths",
        "app_url",
        "database_secret",
        "database_backup_server_name",
    }


def test_providers_never_read_a_file_an_earlier_apply_left(stack_json):
    """The helm provider's access is derived from the server at every run (address from the
    variables, CA from the external data source, client certificate from the exec plugin), so a plan
    works from a clean checkout and a year-old kubeconfig copy breaks nothing; every release still
    waits for the cluster."""
    kubernetes = stack_json["provider"]["helm"][0]["kubernetes"]
    assert set(kubernetes) == {"host", "cluster_ca_certificate", "exec"}
    assert kubernetes["host"] == "https://${element(var.gpu_node_ips, 0)}:6443"
    text = json.dumps(stack_json["provider"])
    assert "kubeconfig/" not in text and "file(" not in text and "fileexists(" not in text
    (ca_id,) = stack_json["data"]["external"]
    assert (
        kubernetes["cluster_ca_certificate"] == f"${{base64decode(data.external.{ca_id}.result.ca_base64)}}"
    )
    for step in resources(stack_json, "terraform_data").values():
        assert "fileexists(" not in json.dumps(step.get("lifecycle", {}))
    for release in resources(stack_json, "helm_release").values():
        assert release.get("depends_on"), release["name"]


def test_the_exec_plugin_as_terraform_renders_it_answers_client_go(stack_json, tmp_path):
    """The provider's exec command, rendered as Terraform renders the template (``$${`` is ``${``)
    with the variables' values, run against an ssh stub that serves a k3s admin kubeconfig."""
    import base64

    kubernetes = stack_json["provider"]["helm"][0]["kubernetes"]
    values = {
        "${element(var.gpu_node_ips, 0)}": "192.168.1.100",
        "${var.ssh_private_key_path}": "/k",
        "${var.ssh_user}": "ubuntu",
    }

    def rendered(arg: str) -> str:
        if arg.startswith("HOST_KEY="):
            return "HOST_KEY=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"
        for reference, value in values.items():
            arg = arg.replace(reference, value)
        assert "${" not in arg.replace("$${", ""), arg
        return arg.replace("$${", "${").replace("%%{", "%{")

    from tests.support.host import _certificate

    pem = _certificate(365)  # a real one: the script refuses a certificate about to expire
    data = base64.b64encode(pem.encode()).decode()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/bin/bash\n"
        f'echo "$*" > "{tmp_path}/ssh-args"\n'
        f"printf '  certificate-authority-data: {data}\\n    client-certificate-data: {data}\\n"
        f"    client-key-data: {data}\\n'\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    command = [kubernetes["exec"]["command"], *map(rendered, kubernetes["exec"]["args"])]
    result = subprocess.run(
        command,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    credential = json.loads(result.stdout)
    assert credential["status"] == {"clientCertificateData": pem, "clientKeyData": pem}
    assert "ubuntu@192.168.1.100" in (tmp_path / "ssh-args").read_text()


def test_no_secret_values_in_the_json(stack_json):
    variables = stack_json["variable"]
    assert variables["k3s_token"]["sensitive"] is True
    assert variables["cloudflare_api_token"]["sensitive"] is True
    assert "default" not in variables["cloudflare_api_token"]
    text = json.dumps(stack_json)
    assert not re.search(r"(password|token|secret)[\"']?\s*[:=]\s*[\"'][A-Za-z0-9+/=]{12,}", text, re.I)
    assert "BEGIN" not in text or "PRIVATE KEY" not in text


def test_every_interpolation_is_a_terraform_reference(stack_json):
    text = json.dumps(stack_json)
    found = re.findall(r"(?<!\$)\$\{([^}]*)", text)
    assert found
    bad = sorted({ref for ref in found if not ref.startswith(TERRAFORM_REFERENCES)})
    assert bad == []


def test_state_path_is_relative(stack_json):
    assert stack_json["terraform"]["backend"] == {"local": {"path": "../../../state/single-node.tfstate"}}


def test_two_synths_are_byte_identical(tmp_path):
    first = synth_main(tmp_path / "a", GPU_STACKS="single-node")
    second = synth_main(tmp_path / "b", GPU_STACKS="single-node")
    assert "stacks/single-node/cdk.tf.json" in first
    assert first == second


GOOD_VARS = {
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
def variables_dir(stack_json, tmp_path_factory) -> Path:
    return variables_workdir(stack_json["variable"], tmp_path_factory.mktemp("variables"))


def _plan(directory: Path, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    return plan_variables(directory, {**GOOD_VARS, **overrides})


def test_good_variables_pass_terraform_validation(variables_dir):
    result = _plan(variables_dir)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("gpu_node_ips", '["192.168.1.300"]', "Every gpu_node_ips entry must be an IPv4 address"),
        ("gpu_node_ips", '["192.168.1.100", "192.168.1.101"]', "gpu_node_ips must list exactly 1 address"),
        ("k3s_token", "short", "k3s_token must be at least 32 letters or digits"),
        ("app_domain", "API.example", "app_domain must be a lower-case DNS name"),
        ("acme_email", "ops.example.com", "acme_email must be an e-mail address"),
        ("app_image", "ghcr.io/acme/ffe-backend:latest", "app_image must carry a pinned tag or digest"),
        ("app_image", "ghcr.io/acme/ffe-backend", "app_image must carry a pinned tag or digest"),
        ("admin_cidrs", '["192.168.1.0/33"]', "Every admin_cidrs entry must be an IPv4 network"),
        ("public_address", "example.com", "public_address must be empty or an IPv4 address"),
        ("cloudflare_api_token", "not a token!", "cloudflare_api_token must be a Cloudflare API token"),
        ("ssh_host_keys", "[]", "ssh_host_keys must list exactly 1 key(s)"),
        (
            "ssh_host_keys",
            '["SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"]',
            "must hold the host's public keys",
        ),
        ("ssh_host_keys", None, "No value for required variable"),
        ("vault_kms_region", "Europe", "vault_kms_region must be an AWS region such as eu-west-1"),
        ("vault_kms_key_id", "my key", "vault_kms_key_id must be a KMS key id, key ARN or alias/<name>"),
        ("vault_kms_access_key_id", "akia-1", "vault_kms_access_key_id must be an AWS access key id"),
        (
            "vault_kms_secret_access_key",
            "short",
            "vault_kms_secret_access_key must be an AWS secret access key",
        ),
    ],
)
def test_bad_variables_fail_in_terraform_with_the_fix(variables_dir, name, value, message):
    result = _plan(variables_dir, **{name: value})
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def every_stack() -> dict[str, dict]:
    """Every stack main.py synthesizes, by name."""
    import main

    app = cdktf.Testing.app()
    return {
        instance.stack: json.loads(cdktf.Testing.synth(instance.build(app))) for instance in main.INSTANCES
    }


def _commands(stack: dict):
    """Every command line a step runs: remote-exec inline commands and local-exec commands."""
    for kind, found in stack.get("resource", {}).items():
        for name, body in found.items():
            for provisioner in body.get("provisioner", []):
                for command in provisioner.get("remote-exec", {}).get("inline", []):
                    yield f"{kind}.{name}", command
                if "local-exec" in provisioner:
                    yield f"{kind}.{name}", provisioner["local-exec"]["command"]


def test_no_sensitive_variable_on_any_command_line(every_stack):
    """sudo logs its command lines and `ps` shows them to every user: secrets go in files or env."""
    checked = 0
    for stack_name, stack in every_stack.items():
        sensitive = [name for name, v in stack.get("variable", {}).items() if v.get("sensitive")]
        for where, command in _commands(stack):
            checked += 1
            for name in sensitive:
                assert f"var.{name}" not in command, (
                    f"{stack_name}: {where} puts var.{name} on a command line"
                )
    assert checked


def _remote_exec_script(inline: list[str]) -> str:
    """An inline list as Terraform runs it: joined with newlines into one script
    (hashicorp/terraform v1.11 internal/builtin/provisioners/remote-exec generateScripts) that the
    SSH communicator starts with ``#!/bin/sh`` unless it has a shebang of its own."""
    script = "\n".join([*inline, ""])
    return script if script.startswith("#!") else "#!/bin/sh\n" + script


def test_every_host_step_stops_at_its_first_failing_command(every_stack, tmp_path):
    """Each command of every multi-command remote-exec fails in turn, against stub commands: the
    step fails with that command's status and runs nothing after it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counter = tmp_path / "count"
    for name in ("sudo", "chmod", "install"):
        stub = bin_dir / name
        stub.write_text(
            "#!/bin/sh\n"
            f'n=$(($(cat "{counter}") + 1)); echo "$n" > "{counter}"\n'
            '[ "$n" = "$FAIL_AT" ] && exit 7\n'
            "exit 0\n"
        )
        stub.chmod(0o755)
    checked = 0
    for stack_name, stack in every_stack.items():
        for kind, found in stack.get("resource", {}).items():
            for name, body in found.items():
                for provisioner in body.get("provisioner", []):
                    commands = provisioner.get("remote-exec", {}).get("inline", [])
                    script = tmp_path / "step.sh"
                    script.write_text(_remote_exec_script(commands))
                    script.chmod(0o755)
                    runs = [c for c in commands if c.split()[0] in ("sudo", "chmod", "install")]
                    if len(runs) < 2:
                        continue
                    for fail_at in range(1, len(runs) + 1):
                        counter.write_text("0")
                        result = subprocess.run(
                            [str(script)],
                            env={
                                "PATH": f"{bin_dir}:/usr/bin:/bin",
                                "HOME": str(tmp_path),
                                "FAIL_AT": str(fail_at),
                            },
                            capture_output=True,
                            text=True,
                            timeout=30,
                        )
                        where = f"{stack_name}: {kind}.{name} with command {fail_at} of {len(runs)} failing"
                        assert result.returncode == 7, f"{where} exits {result.returncode}"
                        assert counter.read_text().strip() == str(fail_at), f"{where} runs on after it"
                        checked += 1
    assert checked


def test_admin_ports_default_to_the_hosts_own_network(stack_json):
    (firewall,) = [v for k, v in resources(stack_json, "terraform_data").items() if "firewall" in k]
    command = [p for p in firewall["provisioner"] if "remote-exec" in p][-1]["remote-exec"]["inline"][-1]
    assert "PUBLIC_PORTS='80/tcp 443/tcp'" in command
    assert "ADMIN_PORTS='22/tcp 6443/tcp'" in command
    assert (
        'ADMIN_CIDRS=\'${join(" ", length(var.admin_cidrs) > 0 ? var.admin_cidrs : distinct('
        '[for ip in var.gpu_node_ips : cidrsubnet("${ip}/24", 0, 0)]))}\'' in command
    )


def test_admin_cidrs_expression_gives_the_hosts_network_in_terraform(tmp_path):
    """Real Terraform evaluates the default: 192.168.1.100 -> 192.168.1.0/24."""
    expression = (
        'join(" ", length(var.admin_cidrs) > 0 ? var.admin_cidrs : distinct('
        '[for ip in var.gpu_node_ips : cidrsubnet("${ip}/24", 0, 0)]))'
    )
    (tmp_path / "main.tf").write_text(
        'variable "admin_cidrs" {\n  type = list(string)\n  default = []\n}\n'
        'variable "gpu_node_ips" {\n  type = list(string)\n}\n'
        f'output "admin" {{\n  value = {expression}\n}}\n'
    )
    env = {**os.environ, "CHECKPOINT_DISABLE": "1"}
    subprocess.run(
        [terraform_binary(), "init", "-input=false"], cwd=tmp_path, check=True, capture_output=True, env=env
    )

    def admin(*args: str) -> str:
        result = subprocess.run(
            [terraform_binary(), "apply", "-auto-approve", "-input=false", "-no-color", *args],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        out = subprocess.run(
            [terraform_binary(), "output", "-raw", "admin"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0
        return out.stdout

    assert admin('-var=gpu_node_ips=["192.168.1.100","192.168.1.101"]') == "192.168.1.0/24"
    assert (
        admin('-var=gpu_node_ips=["192.168.1.100"]', '-var=admin_cidrs=["203.0.113.0/24"]')
        == "203.0.113.0/24"
    )


def test_the_cloudflare_token_reaches_the_cluster_from_a_private_file(stack_json):
    (step,) = [v for k, v in resources(stack_json, "terraform_data").items() if "cloudflare-secret" in k]
    assert step["triggers_replace"]["token_sha256"] == "${sha256(var.cloudflare_api_token)}"
    uploads = [p["file"] for p in step["provisioner"] if "file" in p]
    assert {
        "content": "CLOUDFLARE_API_TOKEN=${var.cloudflare_api_token}\n",
        "destination": ".gpu-constructs/cloudflare-secret.sh.env",
    } in uploads


@pytest.fixture(scope="module")
def http01_variables_dir(tmp_path_factory) -> Path:
    stack = Instance("single-node", "single-node", {"letsencrypt_challenge": "http01"}).build(
        cdktf.Testing.app()
    )
    variables = json.loads(cdktf.Testing.synth(stack))["variable"]
    assert "cloudflare_api_token" not in variables
    return variables_workdir(variables, tmp_path_factory.mktemp("http01"))


def _plan_http01(directory: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    return _plan(directory, cloudflare_api_token=None, **overrides)


def test_http01_with_a_private_address_fails_at_plan(http01_variables_dir):
    result = _plan_http01(http01_variables_dir)
    assert result.returncode != 0
    assert "Let's Encrypt cannot reach a private address over HTTP-01" in " ".join(result.stderr.split())
    forwarded = _plan_http01(http01_variables_dir, public_address="203.0.113.10")
    assert forwarded.returncode == 0, forwarded.stderr


def test_every_local_path_class_in_every_stack_can_provision(every_stack):
    from tests.support.workloads import all_manifests, check_every_class_is_provisionable

    checked = sum(check_every_class_is_provisionable(all_manifests(stack)) for stack in every_stack.values())
    assert checked >= 3


def test_exactly_one_default_storage_class(stack_json):
    """k3s' bundled local-path class is a default too unless its local-storage addon is disabled."""
    from tests.conftest import by_kind, manifests_of

    defaults = [
        c["metadata"]["name"]
        for release in resources(stack_json, "helm_release").values()
        if "manifests-chart" in str(release.get("chart", ""))
        for c in by_kind(manifests_of(release), "StorageClass")
        if c["metadata"].get("annotations", {}).get("storageclass.kubernetes.io/is-default-class") == "true"
    ]
    (k3s,) = [v for k, v in resources(stack_json, "terraform_data").items() if "server-k3s" in k]
    command = [p for p in k3s["provisioner"] if "remote-exec" in p][-1]["remote-exec"]["inline"][-1]
    disabled = re.search(r"DISABLE='([^']*)'", command)
    if not disabled or "local-storage" not in disabled.group(1).split():
        defaults.append("local-path (k3s)")
    assert defaults == ["fast-ssd"]


def test_every_gpu_rollout_in_every_stack_fits_its_quota(every_stack):
    """A surge pod must fit the namespace's GPU quota, or the rollout of every image change fails."""
    from tests.support.workloads import all_manifests

    checked = 0
    for name, stack in every_stack.items():
        manifests = all_manifests(stack)
        for deployment in [m for m in manifests if m["kind"] == "Deployment"]:
            containers = deployment["spec"]["template"]["spec"]["containers"]
            gpus = sum(
                int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers
            )
            if not gpus:
                continue
            namespace = deployment["metadata"]["namespace"]
            quotas = [
                int(q["spec"]["hard"]["requests.nvidia.com/gpu"])
                for q in manifests
                if q["kind"] == "ResourceQuota" and q["metadata"]["namespace"] == namespace
            ]
            autoscalers = [
                h["spec"]["maxReplicas"]
                for h in manifests
                if h["kind"] == "HorizontalPodAutoscaler"
                and h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
            ]
            most = max([deployment["spec"].get("replicas", 1), *autoscalers])
            strategy = deployment["spec"].get("strategy", {})
            surge = (
                strategy.get("rollingUpdate", {}).get("maxSurge", 0)
                if strategy.get("type") != "Recreate"
                else 0
            )
            for quota in quotas:
                assert (most + surge) * gpus <= quota, (
                    f"{name}: {deployment['metadata']['name']} cannot roll out"
                )
                checked += 1
    assert checked


def test_helm_waits_for_a_started_pod_of_every_deployment_in_every_stack(every_stack):
    """At the fewest replicas a Deployment runs, Helm's wait needs at least one ready new pod: else
    a pod that never starts leaves the apply green and atomic never rolls back."""
    from tests.support.workloads import helm_waits_for

    checked = 0
    for name, stack in every_stack.items():
        for release in resources(stack, "helm_release").values():
            if "manifests-chart" not in str(release.get("chart", "")) or not (
                release.get("wait", True) or release.get("atomic")
            ):
                continue
            manifests = manifests_of(release)
            for deployment in by_kind(manifests, "Deployment"):
                fewest = min(
                    [deployment["spec"].get("replicas", 1)]
                    + [
                        h["spec"].get("minReplicas", 1)
                        for h in by_kind(manifests, "HorizontalPodAutoscaler")
                        if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
                    ]
                )
                assert helm_waits_for(deployment, fewest) >= 1, (
                    f"{name}: {deployment['metadata']['name']} at {fewest} replica(s) needs no ready pod"
                )
                checked += 1
    assert checked


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"letsencrypt_challenge": "tls-alpn-01"},
            r"'letsencrypt_challenge' is 'tls-alpn-01': use one of http01, dns01-cloudflare",
        ),
        ({"host_network_prefix": 40}, r"'host_network_prefix' is 40: use from 8 to 32"),
        (
            {"nvidia_kernel_modules": "closed"},
            r"'nvidia_kernel_modules' is 'closed': use one of open, proprietary",
        ),
        (
            {"nvidia_driver_version": "470"},
            r"'nvidia_driver_version' is '470': NVIDIA ships open kernel modules",
        ),
        ({"vault_ha": True, "agent_count": 1}, r"'vault_replicas' is 3: .* the cluster has 2"),
        ({"backup_schedule": "nightly"}, r"'backup_schedule' is 'nightly'"),
    ],
)
def test_bad_settings_fail_at_synth_with_field_value_and_fix(overrides, message):
    from gpu_constructs.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        Instance("single-node", "single-node", overrides).build(cdktf.Testing.app())


def test_terraform_replaces_the_database_only_with_a_new_datastore(stack_json, tmp_path):
    """Real Terraform, the PostgreSQL cluster release's lifecycle on a terraform_data stand-in (the
    helm provider is not on this machine) beside the datastore resource. Adding the datastore to a
    running stack replaces nothing (a created resource has no old id to change), and a new server
    address replaces the release with it."""
    from tests.conftest import run_terraform, terraform_binary

    terraform = terraform_binary()
    releases = resources(stack_json, "helm_release")
    (database,) = [body for body in releases.values() if body["name"] == "ffe-db"]
    (datastore_id,) = [i for i in resources(stack_json, "terraform_data") if i.startswith("compute_cluster_")]
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}

    def plan(config: dict) -> str:
        (tmp_path / "main.tf.json").write_text(json.dumps({"resource": {"terraform_data": config}}))
        output: str = run_terraform(terraform, tmp_path, env, "plan", "-input=false").stdout
        return output

    (tmp_path / "main.tf.json").write_text(
        json.dumps({"resource": {"terraform_data": {"db": {"input": "r"}}}})
    )
    run_terraform(terraform, tmp_path, env, "init", "-input=false")
    run_terraform(terraform, tmp_path, env, "apply", "-auto-approve", "-input=false")
    with_datastore = {
        datastore_id: {"triggers_replace": {"server": "192.168.1.100"}},
        "db": {"input": "r", "lifecycle": database["lifecycle"]},
    }
    assert "Plan: 1 to add, 0 to change, 0 to destroy." in plan(with_datastore)
    run_terraform(terraform, tmp_path, env, "apply", "-auto-approve", "-input=false")
    with_datastore[datastore_id]["triggers_replace"] = {"server": "192.168.1.101"}
    # protect_data (the default): Terraform refuses the plan instead of dropping the database
    (tmp_path / "main.tf.json").write_text(json.dumps({"resource": {"terraform_data": with_datastore}}))
    refused = run_terraform(terraform, tmp_path, env, "plan", "-input=false", codes=(1,))
    assert "Resource terraform_data.db has lifecycle.prevent_destroy set" in " ".join(refused.stderr.split())
    # protect_data=False: replaced with the new datastore
    with_datastore["db"]["lifecycle"] = {
        k: v for k, v in database["lifecycle"].items() if k != "prevent_destroy"
    }
    assert "terraform_data.db will be replaced due to changes in replace_triggered_by" in plan(with_datastore)


def test_every_ssh_connection_checks_the_host_key_from_the_variable(stack_json):
    assert stack_json["variable"]["ssh_host_keys"]["type"] == "list(string)"
    steps = resources(stack_json, "terraform_data")
    connected = {name: step["connection"] for name, step in steps.items() if "connection" in step}
    assert len(connected) >= 4  # driver, k3s, firewall, vault bootstrap at least
    for name, connection in connected.items():
        assert connection["host_key"].startswith("${flatten([for t in ["), name
        assert "element(var.ssh_host_keys, " in connection["host_key"], name
    local_ssh = [
        # a destroy-time step reads its settings from its own input (self.input.HOST_KEY)
        step["input"] if local.get("when") == "destroy" else local["environment"]
        for step in steps.values()
        if "local-exec" in (step.get("provisioner") or [{}])[0]
        and "SSH_HOST" in (local := step["provisioner"][0]["local-exec"]).get("environment", {})
    ]
    assert len(local_ssh) >= 2 and all(
        env["HOST_KEY"] == next(iter(connected.values()))["host_key"] for env in local_ssh
    )


def _keyscan(tmp_path: Path, *kinds: str) -> str:
    """What ``ssh-keyscan <ip>`` prints for a host with these key types (fresh keys)."""
    lines = ["# 192.168.1.100:22 SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5"]
    for kind in kinds:
        path = tmp_path / f"host_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
        lines.append("192.168.1.100 " + " ".join(path.with_suffix(".pub").read_text().split()[:2]))
    return "\n".join(lines)


@pytest.mark.parametrize(
    ("kinds", "pinned"),
    [
        (("rsa", "ecdsa", "ed25519"), "ecdsa-sha2-nistp256"),  # a stock Ubuntu host
        (("ed25519",), "ssh-ed25519"),
        (("ed25519", "rsa"), "ssh-rsa"),
    ],
)
def test_the_pinned_host_key_is_the_one_terraforms_ssh_client_negotiates(stack_json, tmp_path, kinds, pinned):
    """Real Terraform evaluates the stack's selection over ``ssh-keyscan`` output: golang.org/x/crypto
    prefers ECDSA, then RSA, Ed25519 last (gpu_constructs/hostexec.py TERRAFORM_HOST_KEY_ORDER); the
    knownhosts callback refuses any other type than the line it is given."""
    from gpu_constructs.hostexec import negotiated_host_key

    keyscan = _keyscan(tmp_path, *kinds)
    steps = resources(stack_json, "terraform_data")
    connection = next(step["connection"] for step in steps.values() if "connection" in step)
    work = tmp_path / "tf"
    work.mkdir()
    (work / "main.tf.json").write_text(
        json.dumps(
            {
                "variable": {"ssh_host_keys": stack_json["variable"]["ssh_host_keys"]},
                "output": {"pinned": {"value": connection["host_key"]}},
            }
        )
    )
    env = {**os.environ, "TF_IN_AUTOMATION": "1"}
    subprocess.run(
        [terraform_binary(), "init", "-input=false"], cwd=work, check=True, capture_output=True, env=env
    )
    result = subprocess.run(
        [
            terraform_binary(),
            "apply",
            "-auto-approve",
            "-input=false",
            "-no-color",
            f"-var=ssh_host_keys={json.dumps([keyscan])}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    output = subprocess.run(
        [terraform_binary(), "output", "-json", "pinned"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    chosen = json.loads(output.stdout)
    assert chosen.split()[0] == pinned
    assert chosen in keyscan and chosen == negotiated_host_key(keyscan)


def test_host_key_check_switched_off_drops_the_variable_and_the_check():
    stack = Instance("single-node", "single-node", {"verify_ssh_host_keys": False}).build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    assert "ssh_host_keys" not in synthesized["variable"]
    steps = resources(synthesized, "terraform_data")
    assert not [name for name, step in steps.items() if "host_key" in step.get("connection", {})]


def test_the_firewall_waits_for_the_driver_steps_that_may_reboot_its_host(stack_json):
    steps = resources(stack_json, "terraform_data")
    (firewall,) = [step for name, step in steps.items() if name.startswith("networking_firewall-")]
    (driver,) = [name for name in steps if name.startswith("compute_server-gpu-driver")]
    assert f"terraform_data.{driver}" in firewall["depends_on"]


def _connection_hosts(body: dict) -> set[str]:
    found = set()
    for connection in [body.get("connection"), *[p.get("connection") for p in _provisioners(body)]]:
        if isinstance(connection, dict) and "host" in connection:
            found.add(connection["host"])
    return found


def _provisioners(body: dict) -> list[dict]:
    return [next(iter(p.values())) for p in body.get("provisioner", [])]


def _depends_transitively(steps: dict[str, dict], name: str) -> set[str]:
    """Every terraform_data a step waits for: its depends_on and the steps it references."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        body = steps[todo.pop()]
        text = json.dumps(body)
        for other in steps:
            address = f"terraform_data.{other}"
            if other not in seen and (address in body.get("depends_on", []) or f"{address}." in text):
                seen.add(other)
                todo.append(other)
    return seen


def test_no_step_on_a_host_runs_while_its_driver_step_may_reboot_it(stack_json):
    """A remote-exec whose session the reboot cuts fails the step: every step that connects to a
    host runs after that host's driver step (which waits until the host is back)."""
    steps = resources(stack_json, "terraform_data")
    reboots = {name: _connection_hosts(body) for name, body in steps.items() if "-gpu-driver" in name}
    assert reboots
    late = [
        (name, reboot)
        for name, body in steps.items()
        for reboot, hosts in reboots.items()
        if name != reboot
        and _connection_hosts(body) & hosts
        and reboot not in _depends_transitively(steps, name)
    ]
    assert late == []


def test_no_drain_of_the_stack_relies_on_evicting_its_single_instance_database():
    """The default database (postgres_instances=1) on several hosts: the node holding its primary
    must still drain."""
    import cdktf

    from environments import Instance

    built = Instance("single-node", "single-node", {"agent_count": 1}).build(cdktf.Testing.app())
    stack = json.loads(cdktf.Testing.synth(built))
    drains = [
        p["local-exec"]["environment"]
        for name, body in resources(stack, "terraform_data").items()
        if "-gpu-driver" in name
        for p in body["provisioner"]
        if "local-exec" in p and p["local-exec"]["environment"].get("MODE") == "drain"
    ]
    assert len(drains) == 2 and {env["BYPASS_PDB"] for env in drains} == {"1"}


def test_every_host_step_re_runs_when_its_host_is_reinstalled(stack_json):
    """A reinstalled host has new SSH keys, which go into ssh_host_keys: every step that connects to
    it (firewall, storage check, driver, k3s, Secrets) is keyed on its pinned key and runs again,
    so the new OS gets its firewall back; the cluster step stays keyed on the address alone (a
    key rotation must not replace the releases and the database with it)."""
    steps = resources(stack_json, "terraform_data")
    on_hosts = {name: body for name, body in steps.items() if "host_key" in body.get("connection", {})}
    assert {name.rsplit("_", 1)[0] for name in on_hosts} >= {
        "networking_firewall-0",
        "storage_check-0",
        "compute_server-gpu-driver",
        "compute_server-k3s",
    }
    for name, body in on_hosts.items():
        assert body["triggers_replace"].get("host_key") == body["connection"]["host_key"], name
    (cluster,) = [body for name, body in steps.items() if name.startswith("compute_cluster_")]
    assert "host_key" not in json.dumps(cluster)


def test_every_stack_declares_the_terraform_it_needs(every_stack):
    from environments import REQUIRED_TERRAFORM

    assert len(every_stack) == 5
    for name, stack in every_stack.items():
        assert stack["terraform"]["required_version"] == REQUIRED_TERRAFORM, name


def test_terraform_accepts_the_required_version_and_refuses_an_older_one(tmp_path):
    from environments import REQUIRED_TERRAFORM

    (tmp_path / "main.tf.json").write_text(
        json.dumps({"terraform": {"required_version": REQUIRED_TERRAFORM}})
    )
    ok = subprocess.run(
        [terraform_binary(), "init", "-backend=false", "-input=false", "-no-color"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "main.tf.json").write_text(json.dumps({"terraform": {"required_version": ">= 99.0"}}))
    old = subprocess.run(
        [terraform_binary(), "init", "-backend=false", "-input=false", "-no-color"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert "Unsupported Terraform Core version" in old.stderr


def test_vault_unseals_with_kms_by_default_and_shamir_is_an_explicit_choice(stack_json):
    from environments.single_node import SingleNodeSettings, SingleNodeStack
    from gpu_constructs.errors import ConfigError

    assert {
        "vault_kms_region",
        "vault_kms_key_id",
        "vault_kms_access_key_id",
        "vault_kms_secret_access_key",
    } <= set(stack_json["variable"])
    assert stack_json["variable"]["vault_kms_secret_access_key"]["sensitive"] is True
    shamir = json.loads(
        cdktf.Testing.synth(
            SingleNodeStack(
                cdktf.Testing.app(), "single-node", settings=SingleNodeSettings(vault_seal="shamir")
            )
        )
    )
    assert not [name for name in shamir["variable"] if name.startswith("vault_kms")]
    assert not [k for k in resources(shamir, "terraform_data") if "seal-secret" in k]
    with pytest.raises(ConfigError, match=r"'vault_seal' is 'transit': use one of awskms, shamir"):
        SingleNodeSettings(vault_seal="transit")


def test_releases_holding_data_refuse_a_destroy_or_replacement(helm, upstream):
    """A helm_release's namespace forces a new release (Helm cannot move one): app_namespace changed,
    the database's Cluster and claim would be deleted and an empty one created. Every release that
    renders a CloudNativePG Cluster or a StatefulSet with volume claims carries prevent_destroy, so
    Terraform fails such a plan; protect_data=False lifts it for a deliberate teardown."""
    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    rendered = render.rendered(instance)
    holding = {
        release.logical_id
        for release, obj in rendered.objects()
        if obj.get("kind") == "Cluster"
        or (obj.get("kind") == "StatefulSet" and obj["spec"].get("volumeClaimTemplates"))
    }
    assert holding == {"postgres_cluster_ACE3EF20", "vault_BBE00A92"}
    releases = rendered.synthesized["resource"]["helm_release"]
    for logical_id in holding:
        assert releases[logical_id]["lifecycle"]["prevent_destroy"] is True, logical_id
    assert not [
        k for k, r in releases.items() if k not in holding and r.get("lifecycle", {}).get("prevent_destroy")
    ]
    lifted = Instance("single-node", "single-node", {"protect_data": False}).build(cdktf.Testing.app())
    lifted_releases = resources(json.loads(cdktf.Testing.synth(lifted)), "helm_release")
    assert not [k for k, r in lifted_releases.items() if r.get("lifecycle", {}).get("prevent_destroy")]


def test_every_upload_goes_into_the_private_directory_made_before_it(every_stack):
    """No file provisioner of any stack writes into world-writable /tmp (or anywhere but the SSH
    user's 0700 directory), and each step makes that directory before its first upload."""
    from gpu_constructs.hostexec import SECRETS_DIR

    checked = 0
    for stack_name, stack in every_stack.items():
        for found in stack.get("resource", {}).values():
            for name, body in found.items():
                provisioners = body.get("provisioner", [])
                files = [i for i, p in enumerate(provisioners) if "file" in p]
                for index in files:
                    checked += 1
                    destination = provisioners[index]["file"]["destination"]
                    assert destination.startswith(f"{SECRETS_DIR}/"), (stack_name, name, destination)
                    made = [
                        i
                        for i, p in enumerate(provisioners[:index])
                        if f'install -d -m 0700 "$HOME/{SECRETS_DIR}"'
                        in " ".join(p.get("remote-exec", {}).get("inline", []))
                    ]
                    assert made, (stack_name, name)
    assert checked


def test_the_reinstall_recipe_names_every_release_and_the_cluster_step_as_synthesized(stack_json):
    """docs/single-node.md's recipe for a server reinstalled at its address: forget every release
    (a release left in the state would be refreshed and uninstalled against a cluster that is not
    there), then replace the step every release's replace_triggered_by names."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "single-node.md").read_text()
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", docs, re.S) if "terraform state rm" in b]
    command = block.replace("\\\n", " ")
    (state_rm,) = [line for line in command.splitlines() if line.startswith("terraform state rm ")]
    (apply,) = [line for line in command.splitlines() if line.startswith("terraform apply ")]
    releases = {f"helm_release.{name}" for name in stack_json["resource"]["helm_release"]}
    assert set(state_rm.split()[3:]) == releases
    assert command.index("terraform state rm") < command.index("terraform apply")
    triggers = {
        trigger.removesuffix(".id")
        for release in stack_json["resource"]["helm_release"].values()
        for trigger in release["lifecycle"]["replace_triggered_by"]
    }
    (cluster,) = triggers
    assert re.findall(r"-replace=(\S+)", apply) == [cluster]
    assert "-refresh=false" not in apply


def test_the_new_server_address_walk_is_what_the_stack_does(stack_json):
    """docs/single-node.md, "A new server address": the cluster step is keyed on gpu_node_ips[0]
    alone, the CA read on the cluster step and the helm provider on the new address and that CA, so
    a new address leaves the CA unknown at plan while the provider talks to the new host (helm
    v3.1.1 Read then drops every release from the state). The procedure it gives runs the reinstall
    recipe, names the agents' leave step as synthesized, and k3s' uninstall scripts by their paths."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "single-node.md").read_text()
    (section,) = re.findall(r"\*\*A new server address\.\*\*(.*?)\n\n\*\*", docs, re.S)
    data = stack_json["resource"]["terraform_data"]
    (cluster,) = {
        trigger.removesuffix(".id").removeprefix("terraform_data.")
        for release in stack_json["resource"]["helm_release"].values()
        for trigger in release["lifecycle"]["replace_triggered_by"]
    }
    server = "${element(var.gpu_node_ips, 0)}"
    assert data[cluster]["triggers_replace"] == {"server": server}
    assert "`gpu_node_ips[0]`" in section
    (name,) = stack_json["data"]["external"]
    assert stack_json["data"]["external"][name]["query"] == {"cluster": f"${{terraform_data.{cluster}.id}}"}
    (helm,) = stack_json["provider"]["helm"]
    assert helm["kubernetes"]["host"] == f"https://{server}:6443"
    assert f"data.external.{name}.result" in helm["kubernetes"]["cluster_ca_certificate"]
    assert "reinstall recipe above" in section and "`terraform state rm` of every release" in section
    (leave,) = [key for key in data if key.startswith("compute_agents-leave_")]
    assert f"`terraform_data.{leave.rsplit('_', 1)[0]}_…`" in section
    agent_uninstall = "/usr/local/bin/k3s-agent-uninstall.sh"
    assert agent_uninstall in script_text("delete-node.sh") and agent_uninstall in section
    assert "sudo /usr/local/bin/k3s-uninstall.sh" in section
