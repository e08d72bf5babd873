from __future__ import annotations

import base64
import json

import pytest
import yaml
from cdktf import TerraformVariable

from gpu_constructs.backup import ObjectStore
from gpu_constructs.database import ObjectStoreAccess, Postgres
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost
from tests.conftest import by_kind, manifests_of, release_values, resources
from tests.support.host import Host
from tests.support.workloads import postgres_props

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+="


def build(synth, **overrides):
    made = {}
    synthesized = synth(
        lambda stack: made.setdefault("p", Postgres(stack, "postgres", props=postgres_props(**overrides)))
    )
    releases = {r["name"]: r for r in resources(synthesized, "helm_release").values()}
    return releases, made["p"]


def test_operator_chart_installs_its_crds(synth):
    releases, _ = build(synth)
    operator = releases["cloudnative-pg"]
    assert (operator["version"], operator["namespace"]) == ("0.28.2", "cnpg-system")
    assert release_values(operator) == {"crds": {"create": True}}


def test_postgres_16_cluster_on_fast_ssd_without_superuser(synth):
    releases, postgres = build(synth)
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    spec = cluster["spec"]
    assert spec["imageName"].endswith(":16.10")
    assert spec["storage"] == {"size": "20Gi", "storageClass": "fast-ssd"}
    assert spec["enableSuperuserAccess"] is False
    assert spec["bootstrap"] == {"initdb": {"database": "ffe", "owner": "ffe"}}
    assert postgres.credentials_secret == "ffe-db-app"
    assert any("operator" in dep for dep in releases["ffe-db"]["depends_on"])


def test_wal_archive_and_base_backups_go_to_the_object_store(synth):
    releases, postgres = build(synth)
    objects = manifests_of(releases["ffe-db"])
    (cluster,) = by_kind(objects, "Cluster")
    backup = cluster["spec"]["backup"]
    assert backup["retentionPolicy"] == "30d"
    store = backup["barmanObjectStore"]
    assert store["destinationPath"] == "s3://ffe-backups/single-node"
    assert store["endpointURL"] == "https://s3.amazonaws.com"
    assert store["wal"] == {"compression": "gzip", "encryption": "AES256", "maxParallel": 2}
    assert store["data"] == {"compression": "gzip", "encryption": "AES256", "jobs": 2}
    secret = postgres.object_store_secret_name
    assert store["s3Credentials"] == {
        "accessKeyId": {"name": secret, "key": "ACCESS_KEY_ID"},
        "secretAccessKey": {"name": secret, "key": "ACCESS_SECRET_KEY"},
        "region": {"name": secret, "key": "REGION"},
    }
    (scheduled,) = by_kind(objects, "ScheduledBackup")
    assert scheduled["spec"] == {
        "schedule": "0 0 2 * * *",  # CloudNativePG's schedule has seconds first
        "cluster": {"name": "ffe-db"},
        "method": "barmanObjectStore",
        "immediate": True,
        "backupOwnerReference": "self",
    }
    # No dump volume any more: nothing in a waited release waits for a claim to bind.
    assert set(releases) == {"cloudnative-pg", "ffe-db"}
    assert by_kind(objects, "PersistentVolumeClaim") == []


def test_no_encryption_leaves_it_to_the_bucket(synth):
    releases, _ = build(synth, object_store=ObjectStore(bucket="b-1", encryption=""))
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert "encryption" not in store["wal"] and "encryption" not in store["data"]


def test_the_keys_reach_the_cluster_only_through_the_secret_step(synth):
    def make(stack):
        def variable(name):
            return TerraformVariable(stack, name, type="string", sensitive=True).string_value

        access = ObjectStoreAccess(
            variable("backup_access_key_id"),
            variable("backup_secret_access_key"),
            SshHost("10.0.0.5", "ubuntu", "~/.ssh/k"),
        )
        return Postgres(stack, "postgres", props=postgres_props(object_store_access=access))

    synthesized = synth(make)
    step = _secret_step(synthesized)
    uploads = [p["file"] for p in step["provisioner"] if "file" in p]
    assert {
        "content": "ACCESS_KEY_ID=${var.backup_access_key_id}\n"
        "ACCESS_SECRET_KEY=${var.backup_secret_access_key}\nREGION=us-east-1\n",
        "destination": ".gpu-constructs/kube-secret.ffe.ffe-db-object-store.env",
    } in uploads
    commands = [c for p in step["provisioner"] if "remote-exec" in p for c in p["remote-exec"]["inline"]]
    assert not [c for c in commands if "var.backup" in c]
    triggers = step["triggers_replace"]
    assert triggers["ACCESS_KEY_ID_sha256"] == "${sha256(var.backup_access_key_id)}"
    assert triggers["ACCESS_SECRET_KEY_sha256"] == "${sha256(var.backup_secret_access_key)}"
    releases = {r["name"]: r for r in resources(synthesized, "helm_release").values()}
    assert "var.backup" not in json.dumps(releases)
    assert any("object-store-secret" in dep for dep in releases["ffe-db"]["depends_on"])


def _secret_step(synthesized: dict) -> dict:
    (step,) = [v for k, v in resources(synthesized, "terraform_data").items() if "object-store-secret" in k]
    return step


def _run_secret_step(synth, host: Host, values: dict[str, str]):
    step = _secret_step(synth(lambda stack: Postgres(stack, "postgres", props=postgres_props())))
    return host.run_step(step, values)


def test_the_secret_step_writes_both_keys_and_leaves_no_trace(synth, tmp_path):
    host = Host(tmp_path)
    host.stub(
        "k3s", '[ "$2" = apply ] && cat >> "$STATE/applied.yaml" && echo --- >> "$STATE/applied.yaml"; true'
    )
    result, secrets = _run_secret_step(
        synth, host, {"backup_access_key_id": KEY_ID, "backup_secret_access_key": SECRET_KEY}
    )
    assert result.returncode == 0, result.stderr
    applied = [d for d in yaml.safe_load_all((host.state / "applied.yaml").read_text()) if d]
    (secret,) = [d for d in applied if d["kind"] == "Secret"]
    assert secret["metadata"] == {"name": "ffe-db-object-store", "namespace": "ffe"}
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    # the key names CloudNativePG's Barman Cloud reads (barmanObjectStore.s3Credentials)
    assert decoded == {"ACCESS_KEY_ID": KEY_ID, "ACCESS_SECRET_KEY": SECRET_KEY, "REGION": "us-east-1"}
    assert not secrets.exists()
    assert SECRET_KEY not in host.log.read_text() + result.stdout + result.stderr


def test_the_secret_step_refuses_missing_keys(synth, tmp_path):
    host = Host(tmp_path)
    host.stub("k3s", "true")
    result, secrets = _run_secret_step(
        synth, host, {"backup_access_key_id": KEY_ID, "backup_secret_access_key": ""}
    )
    assert result.returncode == 2
    assert (
        "ACCESS_SECRET_KEY of ffe/ffe-db-object-store is empty or missing: "
        "set the Terraform variable backup_secret_access_key." in result.stderr
    )
    assert host.calls("k3s") == [] and not secrets.exists()


def test_literal_keys_are_refused():
    with pytest.raises(ConfigError, match=r"'backup_secret_access_key' is '<literal>': pass a reference"):
        ObjectStoreAccess("${var.a}", SECRET_KEY, SshHost("10.0.0.5", "ubuntu", "~/.ssh/k"))


def store(**overrides) -> ObjectStore:
    return ObjectStore(**{"bucket": "ffe-backups", **overrides})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bucket": "FFE_Backups"}, r"^'backup_bucket' is 'FFE_Backups': use 3-63 lower-case letters"),
        ({"bucket": "ab"}, r"^'backup_bucket' is 'ab': use 3-63"),
        ({"bucket": "a" * 64}, r"'backup_bucket' is 'a{64}': use 3-63"),
        ({"bucket": "ffe..backups"}, r"'backup_bucket' is 'ffe..backups': S3 refuses '..'"),
        ({"bucket": "192.168.1.10"}, r"shaped like an IP address"),
        ({"bucket": "xn--ffe"}, r"reserves the prefix 'xn--'"),
        ({"bucket": "ffe-s3alias"}, r"reserves the suffix '-s3alias'"),
        ({"bucket": "-ffe"}, r"'backup_bucket' is '-ffe'"),
        (
            {"endpoint": "s3.amazonaws.com"},
            r"^'backup_endpoint' is 's3.amazonaws.com': give the S3 API's URL",
        ),
        ({"endpoint": "ftp://minio.lan"}, r"'backup_endpoint' is 'ftp://minio.lan': give the S3 API's URL"),
        ({"endpoint": "https://"}, r"'backup_endpoint' is 'https://'"),
        ({"endpoint": "http://minio.lan:99999"}, r"'backup_endpoint' is 'http://minio.lan:99999'"),
        ({"endpoint": "https://k:s@minio.lan"}, r"keep the keys out of the URL"),
        ({"endpoint": "https://minio.lan/ffe"}, r"without a path; the path is its own setting"),
        ({"endpoint": "https://min io.lan"}, r"'backup_endpoint' is 'https://min io.lan'"),
        ({"retention_days": 0}, r"^'backup_retention_days' is 0: use from 1 to 3650"),
        ({"path": "/single-node"}, r"^'backup_path' is '/single-node': give a folder"),
        ({"path": "a/../b"}, r"'backup_path' is 'a/../b'"),
        ({"region": "EU West"}, r"'backup_region' is 'EU West'"),
        ({"wal_compression": "brotli"}, r"^'backup_wal_compression' is 'brotli': use one of bzip2, gzip"),
        (
            {"data_compression": "zstd"},
            r"^'backup_data_compression' is 'zstd': use one of bzip2, gzip, snappy",
        ),
        ({"encryption": "aes256"}, r"^'backup_encryption' is 'aes256': use one of AES256, aws:kms"),
        ({"schedule": "daily"}, r"'backup_schedule' is 'daily': give a five-field cron schedule"),
        ({"schedule": "0 2 * * 7"}, r"'backup_schedule' is '0 2 \* \* 7': .*no day 7: use 0 for Sunday"),
        ({"schedule": "0 2 * * 5-7"}, r"no day 7"),
    ],
)
def test_bad_backup_settings_fail_with_the_setting_the_value_and_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message):
        store(**overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"endpoint": "https://0123456789abcdef.r2.cloudflarestorage.com", "region": "auto"},
        {"endpoint": "https://s3.eu-central-003.backblazeb2.com", "region": "eu-central-003"},
        {"endpoint": "http://10.0.0.20:9000", "encryption": ""},
        {"endpoint": "https://s3.eu-west-1.amazonaws.com/", "region": "eu-west-1", "encryption": "aws:kms"},
        {"bucket": "ffe.backups-2026", "path": "prod/single-node"},
    ],
)
def test_the_object_stores_of_each_provider_pass(overrides):
    assert store(**overrides).destination().startswith("s3://")


def test_the_endpoint_loses_a_trailing_slash_only_in_the_manifest(synth):
    releases, _ = build(synth, object_store=store(endpoint="https://s3.eu-west-1.amazonaws.com/"))
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    assert (
        cluster["spec"]["backup"]["barmanObjectStore"]["endpointURL"] == "https://s3.eu-west-1.amazonaws.com"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"storage_size": "20GB"},
            r"'postgres_storage_size' is '20GB': give a size above zero in Mi, Gi or Ti",
        ),
        ({"instances": 0}, r"'postgres_instances' is 0"),
        ({"image": "ghcr.io/cloudnative-pg/postgresql:15.4"}, r"'postgres image' is"),
        (
            {"image": "ghcr.io/cloudnative-pg/postgresql:16.10-minimal-trixie"},
            r"minimal and standard images carry no barman-cloud",
        ),
    ],
)
def test_bad_database_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        postgres_props(**overrides)


@pytest.mark.parametrize(
    "schedule", ["0 2 * * *", "*/15 * * * *", "0 */6 * * *", "30 1 1-15 jan-mar mon-fri", "5,35 3 * * 0,6"]
)
def test_cron_schedules_cloudnative_pg_accepts_pass(schedule):
    assert store(schedule=schedule).schedule == schedule


# --- Helm's wait on a first apply ------------------------------------------------------------------
# The helm provider hands `atomic` and `wait` to Helm's install and upgrade actions, and Helm waits
# whenever either is set (helm v3.18 pkg/action/install.go and upgrade.go: `Wait = Wait || Atomic`).
# A PersistentVolumeClaim is ready only once Bound (pkg/kube/ready.go, isPersistentVolumeClaimReady),
# and a claim of a WaitForFirstConsumer class binds only when a pod that mounts it is scheduled. A
# CronJob makes no pod until its schedule: a release holding such a claim with no other consumer
# times out, and atomic then uninstalls it.
POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _storage_classes(stack) -> dict[str, str]:
    """volumeBindingMode by StorageClass name, as the stack's releases and resources create them."""
    found = {
        obj["metadata"]["name"]: obj.get("volumeBindingMode", "Immediate")
        for _, obj in stack.objects()
        if obj.get("kind") == "StorageClass"
    }
    for kind in ("kubernetes_storage_class", "kubernetes_storage_class_v1"):
        for resource in stack.synthesized.get("resource", {}).get(kind, {}).values():
            (metadata,) = (
                resource["metadata"] if isinstance(resource["metadata"], list) else [resource["metadata"]]
            )
            found[metadata["name"]] = resource.get("volume_binding_mode", "Immediate")
    return found


def _claims_mounted_at_install(stack) -> set[tuple[str, str]]:
    """(namespace, claim) of every claim a pod the stack's releases create at install mounts."""
    mounted = set()
    for release, obj in stack.objects():
        kind = obj.get("kind")
        if kind == "Pod":
            spec = obj.get("spec", {})
        elif kind in POD_TEMPLATE_KINDS:
            spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        else:
            continue
        namespace = obj.get("metadata", {}).get("namespace") or release.namespace
        for volume in spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                mounted.add((namespace, volume["persistentVolumeClaim"]["claimName"]))
    return mounted


def unbindable_waits(stack) -> list[str]:
    """Claims in a release Helm waits for that cannot bind during that wait."""
    classes = _storage_classes(stack)
    mounted = _claims_mounted_at_install(stack)
    problems = []
    for release, obj in stack.objects():
        if obj.get("kind") != "PersistentVolumeClaim":
            continue
        if not (release.raw.get("wait", True) or release.raw.get("atomic", False)):
            continue
        namespace = obj["metadata"].get("namespace") or release.namespace
        class_name = obj.get("spec", {}).get("storageClassName")
        mode = classes.get(class_name, "WaitForFirstConsumer")  # CSI classes are, as a rule
        if mode == "WaitForFirstConsumer" and (namespace, obj["metadata"]["name"]) not in mounted:
            problems.append(
                f"{stack.stack}: {release.address} waits for claim {namespace}/{obj['metadata']['name']} "
                f"of {mode} class {class_name!r}, which no pod mounts at install"
            )
    return problems


def test_every_waited_release_can_become_ready_on_a_first_apply(rendered_stack):
    assert unbindable_waits(rendered_stack) == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"backup_bucket": "My_Backups"}, r"^'backup_bucket' is 'My_Backups': use 3-63 lower-case"),
        ({"backup_retention_days": 0}, r"^'backup_retention_days' is 0: use from 1 to 3650"),
        ({"backup_endpoint": "minio:9000"}, r"^'backup_endpoint' is 'minio:9000': give the S3 API's URL"),
    ],
)
def test_the_stack_settings_are_checked_at_synth(settings, message):
    from environments.single_node import SingleNodeSettings

    with pytest.raises(ConfigError, match=message):
        SingleNodeSettings(**settings)


def test_each_cluster_generation_archives_under_its_own_server_name(synth):
    """A new Cluster (after a destroy and a deploy, or a rebuilt cluster) must not meet the earlier
    one's WAL archive, which CloudNativePG refuses ("Expected empty archive"): the server name
    carries the id of a terraform_data created again with every cluster."""
    synthesized = synth(lambda stack: Postgres(stack, "postgres", props=postgres_props()))
    releases = {r["name"]: r for r in resources(synthesized, "helm_release").values()}
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    server = cluster["spec"]["backup"]["barmanObjectStore"]["serverName"]
    (generation,) = [k for k in resources(synthesized, "terraform_data") if "generation" in k]
    assert server == f"ffe-db-${{substr(terraform_data.{generation}.id, 0, 8)}}"
    import json

    import cdktf

    from environments import Instance

    stack = json.loads(cdktf.Testing.synth(Instance("single-node", "single-node").build(cdktf.Testing.app())))
    (step,) = [v for k, v in resources(stack, "terraform_data").items() if "generation" in k]
    assert step["lifecycle"]["replace_triggered_by"] == ["terraform_data.compute_cluster_E15A6318.id"]
