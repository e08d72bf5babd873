from __future__ import annotations

import json

import pytest

from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost, script_path
from gpu_constructs.vault import Vault, VaultProps
from tests.conftest import make_cluster, manifests_of, release_values, resources
from tests.support.validators import validate_manifest, validate_values

HOST = SshHost("192.168.1.100", "ubuntu", "~/.ssh/id_ed25519")


def build(synth, **overrides):
    fields = {"cluster": make_cluster(), "environment": "staging", "storage_class": "fast-ssd"}
    fields.update(overrides)
    made = {}
    synthesized = synth(lambda stack: made.setdefault("v", Vault(stack, "vault", props=VaultProps(**fields))))
    return synthesized, made["v"]


def vault_values(synthesized):
    (release,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == "vault"]
    assert (release["chart"], release["version"]) == ("vault", "0.34.1")
    return release_values(release)


def test_standalone_by_default_on_fast_storage(synth, upstream):
    synthesized, _ = build(synth)
    values = vault_values(synthesized)
    assert values["server"]["standalone"]["enabled"] is True
    assert values["server"]["ha"] == {"enabled": False}
    assert values["server"]["dataStorage"]["storageClass"] == "fast-ssd"
    assert values["injector"]["enabled"] is True
    validate_values(values, upstream / "vault-helm" / "values.schema.json")


def test_ha_uses_raft_with_the_replica_count(synth, upstream):
    synthesized, vault = build(synth, ha=True, replicas=5)
    values = vault_values(synthesized)
    config = values["server"]["ha"]["raft"].pop("config")
    assert values["server"]["ha"] == {
        "enabled": True,
        "replicas": 5,
        "raft": {"enabled": True, "setNodeId": True},
    }
    assert 'storage "raft"' in config and 'service_registration "kubernetes"' in config
    assert vault.pod_names == ["vault-0", "vault-1", "vault-2", "vault-3", "vault-4"]
    validate_values(values, upstream / "vault-helm" / "values.schema.json")


def test_seed_secret_paths_for_the_environment(synth):
    _, vault = build(synth)
    assert vault.secret_paths == {
        "app": "secret/data/staging/app",
        "database": "database/staging/creds/ffe",
        "pki": "pki/issue/ffe",
        "transit_encrypt": "transit/encrypt/ffe",
        "transit_decrypt": "transit/decrypt/ffe",
    }


def test_bootstrap_runs_on_the_server_after_the_release(synth):
    synthesized, _ = build(synth, bootstrap_host=HOST)
    (step,) = resources(synthesized, "terraform_data").values()
    command = [p["remote-exec"]["inline"][-1] for p in step["provisioner"] if "remote-exec" in p][-1]
    assert "ENVIRONMENT='staging'" in command and "VAULT_PODS='vault-0'" in command
    assert "APP_SERVICE_ACCOUNT='ffe-backend'" in command
    assert step["depends_on"] == ["helm_release.vault_BBE00A92"]


def _with_database(stack, **overrides):
    from gpu_constructs.database import Postgres
    from tests.support.workloads import postgres_props

    cluster = make_cluster()
    database = Postgres(
        stack,
        "postgres",
        props=postgres_props(cluster=cluster),
    )
    props = VaultProps(
        cluster=cluster, environment="staging", storage_class="fast-ssd", database=database, **overrides
    )
    return Vault(stack, "vault", props=props)


def test_bootstrap_connects_the_database_engine_after_the_database(synth):
    made = {}
    synthesized = synth(lambda stack: made.setdefault("v", _with_database(stack, bootstrap_host=HOST)))
    (step,) = [v for k, v in resources(synthesized, "terraform_data").items() if "vault" in k]
    command = [p["remote-exec"]["inline"][-1] for p in step["provisioner"] if "remote-exec" in p][-1]
    for expected in (
        "DB_CLUSTER='ffe-db'",
        "DB_NAMESPACE='ffe'",
        "DB_NAME='ffe'",
        "DB_OWNER='ffe'",
        "DB_ROLE='ffe'",
    ):
        assert expected in command
    assert len(step["depends_on"]) == 2 and any("postgres" in d for d in step["depends_on"])
    vault = made["v"]
    assert vault.connects_database
    assert vault.database_uri_template() == (
        '{{- with secret "database/staging/creds/ffe" -}}'
        "postgresql://{{ .Data.username }}:{{ .Data.password }}@ffe-db-rw.ffe.svc:5432/ffe?sslmode=require"
        "{{- end -}}"
    )


def test_without_a_bootstrap_the_database_connection_is_left_to_the_operator(synth):
    made = {}
    synth(lambda stack: made.setdefault("v", _with_database(stack)))
    assert not made["v"].connects_database and made["v"].database_uri_template() is None


def test_database_role_must_be_a_name():
    with pytest.raises(ConfigError, match=r"'database_role' is 'ffe db'"):
        VaultProps(cluster=make_cluster(), environment="dev", storage_class="x", database_role="ffe db")


def test_no_bootstrap_without_a_host(synth):
    synthesized, vault = build(synth)
    assert resources(synthesized, "terraform_data") == {} and vault.bootstrap is None


@pytest.mark.parametrize("replicas", [2, 1, 4])
def test_raft_needs_an_odd_quorum(replicas):
    with pytest.raises(ConfigError, match=rf"'vault_replicas' is {replicas}: Vault raft needs an odd count"):
        VaultProps(cluster=make_cluster(), environment="dev", storage_class="x", ha=True, replicas=replicas)


def test_unknown_environment():
    with pytest.raises(ConfigError, match=r"'environment' is 'prod': use one of dev, staging, production"):
        VaultProps(cluster=make_cluster(), environment="prod", storage_class="x")


def operations(synthesized):
    (release,) = [
        r for r in resources(synthesized, "helm_release").values() if r["name"] == "vault-operations"
    ]
    assert release["namespace"] == "vault" and release["depends_on"] == ["helm_release.vault_BBE00A92"]
    (config_map,) = manifests_of(release)
    return config_map


def test_operations_config_map_carries_the_guide_and_scripts(synth, upstream):
    synthesized, _ = build(synth, ha=True, replicas=3, bootstrap_host=HOST)
    config_map = operations(synthesized)
    validate_manifest(config_map, upstream)
    data = config_map["data"]
    assert set(data) == {"README.md", "init.sh", "unseal.sh"}
    for key, script in (("init.sh", "vault-init.sh"), ("unseal.sh", "vault-unseal.sh")):
        # Terraform turns "$${" back into "${" when it writes the values.
        assert data[key].replace("$${", "${") == (script_path(script)).read_text()
    guide = data["README.md"]
    assert "vault-0, vault-1, vault-2 in namespace vault" in guide
    assert "/root/vault-init.json" in guide and "init.sh" not in guide
    assert "jsonpath='{.data.unseal\\.sh}' > unseal.sh && bash unseal.sh" in guide


def test_operations_guide_without_a_bootstrap_says_how_to_initialize(synth):
    synthesized, _ = build(synth)
    guide = operations(synthesized)["data"]["README.md"]
    assert "Vault is not initialized by the stack" in guide
    assert "jsonpath='{.data.init\\.sh}' > init.sh && KEY_SHARES=5 KEY_THRESHOLD=3 bash init.sh" in guide
    assert "/root/vault-init.json" not in guide


def test_ha_with_more_replicas_than_nodes_is_refused():
    with pytest.raises(
        ConfigError, match=r"'vault_replicas' is 3: the chart places one Vault server per node"
    ):
        VaultProps(cluster=make_cluster(), environment="dev", storage_class="x", ha=True, node_count=1)
    assert VaultProps(cluster=make_cluster(), environment="dev", storage_class="x", ha=True, node_count=3)


def test_single_node_stack_refuses_vault_ha_on_one_host():
    from cdktf import Testing

    from environments.single_node import SingleNodeSettings, SingleNodeStack

    with pytest.raises(ConfigError, match=r"'vault_replicas' is 3: .* the cluster has 1"):
        SingleNodeStack(Testing.app(), "single-node", settings=SingleNodeSettings(vault_ha=True))


def _kms_seal(stack):
    from cdktf import TerraformVariable

    from gpu_constructs.vault import AwsKmsSeal

    def variable(name, sensitive=False):
        return TerraformVariable(stack, name, type="string", sensitive=sensitive).string_value

    return AwsKmsSeal(
        region="eu-west-1",
        kms_key_id="alias/vault-unseal",
        access_key_id=variable("vault_kms_access_key_id", sensitive=True),
        secret_access_key=variable("vault_kms_secret_access_key", sensitive=True),
    )


def _build_sealed(synth, **overrides):
    made = {}

    def go(stack):
        props = VaultProps(
            cluster=make_cluster(),
            environment="staging",
            storage_class="fast-ssd",
            bootstrap_host=HOST,
            seal=_kms_seal(stack),
            **overrides,
        )
        made["v"] = Vault(stack, "vault", props=props)

    return synth(go), made["v"]


@pytest.mark.parametrize(
    ("ha", "storage"),
    [
        (False, 'storage "raft" {\n  path    = "/vault/data"\n  node_id = "vault-0"\n}'),
        (True, 'storage "raft"'),
    ],
)
def test_rendered_servers_unseal_themselves_with_the_kms_key_after_any_restart(
    synth, helm, upstream, ha, storage
):
    """What makes a reboot harmless: the servers' own configuration carries the awskms seal and their
    environment the credentials from the Secret, so a restarted server unseals without anyone."""
    from tests.support.render import render_release

    synthesized, _ = _build_sealed(synth, ha=ha, **({"node_count": 3} if ha else {}))
    validate_values(vault_values(synthesized), upstream / "vault-helm" / "values.schema.json")
    objects = render_release(synthesized, "vault")
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vault-config"
    ]
    config = config_map["data"]["extraconfig-from-values.hcl"]
    assert 'seal "awskms" {\n  region     = "eu-west-1"\n  kms_key_id = "alias/vault-unseal"\n}' in config
    assert storage in config and 'address         = "[::]:8200"' in config
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    (server,) = statefulset["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in server["env"]}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "vault-seal", "key": name}}


def test_kms_credentials_reach_the_cluster_only_through_the_seal_secret_step(synth):
    synthesized, _ = _build_sealed(synth)
    steps = resources(synthesized, "terraform_data")
    (seal_id,) = [k for k in steps if "seal-secret" in k]
    seal = steps[seal_id]
    hashes = {"AWS_ACCESS_KEY_ID_sha256", "AWS_SECRET_ACCESS_KEY_sha256"}
    assert set(seal["triggers_replace"]) >= hashes
    # Only a hash of the keys is kept in the state.
    assert all(seal["triggers_replace"][k].startswith("${sha256(") for k in hashes)
    others = {k: v for k, v in seal["triggers_replace"].items() if k not in hashes}
    assert "var." not in json.dumps(others)
    (release,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == "vault"]
    assert f"terraform_data.{seal_id}" in release["depends_on"]
    assert "vault_kms" not in json.dumps(release["values"])
    (bootstrap,) = [v for k, v in steps.items() if "bootstrap" in k]
    command = [p["remote-exec"]["inline"][-1] for p in bootstrap["provisioner"] if "remote-exec" in p][-1]
    assert "SEAL='awskms'" in command


def test_without_a_seal_the_servers_use_shamir_keys(synth):
    synthesized, _ = build(synth, bootstrap_host=HOST)
    values = vault_values(synthesized)
    assert "seal " not in values["server"]["standalone"]["config"]
    assert "extraSecretEnvironmentVars" not in values["server"]
    (step,) = resources(synthesized, "terraform_data").values()
    command = [p["remote-exec"]["inline"][-1] for p in step["provisioner"] if "remote-exec" in p][-1]
    assert "SEAL='shamir'" in command


def test_kms_keys_as_literals_are_refused():
    from gpu_constructs.vault import AwsKmsSeal

    with pytest.raises(ConfigError, match=r"'vault_kms_secret_access_key' is '<literal>': pass a reference"):
        AwsKmsSeal("eu-west-1", "alias/v", "${var.k}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")


def test_operations_guide_with_the_kms_seal_says_restarts_need_nothing(synth):
    synthesized, _ = _build_sealed(synth)
    guide = operations(synthesized)["data"]["README.md"]
    assert "Nothing to do: the servers unseal themselves with the AWS KMS key" in guide
    assert "recovery key" in guide and "unseal.sh" not in guide


@pytest.mark.parametrize("sealed", [False, True])
def test_rendered_standalone_server_runs_on_raft_after_migrating_file_storage(synth, helm, upstream, sealed):
    """Standalone Vault on integrated storage through the real chart: the server's configuration has a
    raft stanza with the node id the migration writes, and an init container on the same data
    volume copies an earlier file storage into raft before the server starts."""
    from tests.support.render import render_release

    if sealed:
        synthesized, _ = _build_sealed(synth)
    else:
        synthesized, _ = build(synth, bootstrap_host=HOST)
    validate_values(vault_values(synthesized), upstream / "vault-helm" / "values.schema.json")
    objects = render_release(synthesized, "vault")
    (config_map,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "vault-config"
    ]
    config = config_map["data"]["extraconfig-from-values.hcl"]
    assert 'storage "raft" {\n  path    = "/vault/data"\n  node_id = "vault-0"\n}' in config
    assert 'storage "file"' not in config
    assert ('seal "awskms"' in config) is sealed
    (statefulset,) = [o for o in objects if o["kind"] == "StatefulSet"]
    spec = statefulset["spec"]["template"]["spec"]
    (server,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["VAULT_CLUSTER_ADDR"] == "https://$(HOSTNAME).vault-internal:8201"
    (migrate,) = spec["initContainers"]
    assert migrate["image"] == server["image"]
    assert {"name": "data", "mountPath": "/vault/data"} in migrate["volumeMounts"]
    assert "vault operator migrate" in migrate["command"][2]
    migrate_env = {e["name"]: e["value"] for e in migrate["env"]}
    assert migrate_env["CLUSTER_ADDR"] == "https://vault-0.vault-internal:8201"
    assert migrate_env["NODE_ID"] == "vault-0"
    assert [t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]] == ["data", "audit"]


def test_snapshot_retention_must_be_positive():
    from gpu_constructs.backup import ObjectStore
    from gpu_constructs.database import ObjectStoreAccess
    from gpu_constructs.vault import VaultSnapshots

    access = ObjectStoreAccess("${var.a}", "${var.b}", HOST)
    with pytest.raises(ConfigError, match="vault_snapshot_retention_days"):
        VaultSnapshots(ObjectStore(bucket="ffe-backups"), access, retention_days=0)


def test_metrics_are_readable_without_a_token_and_scraped_on_request(synth):
    """vault_core_unsealed for the VaultSealed alert: the telemetry stanza, unauthenticated metrics
    on the listener, and the chart's ServiceMonitor only when a Prometheus Operator is there."""
    synthesized, _ = build(synth)
    values = vault_values(synthesized)
    config = values["server"]["standalone"]["config"]
    assert "unauthenticated_metrics_access = true" in config and 'prometheus_retention_time = "24h"' in config
    assert "serverTelemetry" not in values
    synthesized, _ = build(synth, service_monitor=True)
    assert vault_values(synthesized)["serverTelemetry"] == {"serviceMonitor": {"enabled": True}}


def test_bootstrap_runs_again_after_a_vault_change_or_a_new_database(synth):
    """depends_on only orders: the bootstrap re-creates the database's "vault" role and unseals or
    migrates a rolled server only when replace_triggered_by names both releases (the Vault release
    whole, any update; the database's id, a replacement)."""
    synthesized = synth(lambda stack: _with_database(stack, bootstrap_host=HOST))
    (step,) = [v for k, v in resources(synthesized, "terraform_data").items() if "vault" in k]
    triggers = step["lifecycle"]["replace_triggered_by"]
    assert "helm_release.vault_BBE00A92" in triggers
    assert any(t.startswith("helm_release.postgres") and t.endswith(".id") for t in triggers)


def test_a_release_change_reaches_the_running_servers(synth):
    """vault-helm 0.34.1 defaults to OnDelete; RollingUpdate with the config checksum annotation
    replaces the pods on a new image, seal or configuration."""
    synthesized, _ = build(synth)
    server = vault_values(synthesized)["server"]
    assert server["updateStrategyType"] == "RollingUpdate" and server["includeConfigAnnotation"] is True
