"""Vault on raft: the snapshot CronJob's script under a stub vault and the real AWS CLI against moto's
S3, with the environment the synthesized single-node CronJob carries; the file-to-raft migration of
a standalone server's volume under a stub vault; the snapshot settings' checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cdktf
import pytest

from environments import Instance
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import script_path
from tests.conftest import by_kind, manifests_of, moto_server, resources, unavailable

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
NOW = 1_800_000_000  # 2027-01-15T08:00:00Z

# The Vault CLI as the save step uses it: a login that answers a token only for the role and a JWT
# read from the file (jwt=@<file>), and a snapshot written only with that token in the environment.
STUB_VAULT = r"""#!/bin/sh
echo "vault $* VAULT_TOKEN=${VAULT_TOKEN:-}" >> "$STATE/vault.log"
case "$1 $2" in
  "write -field=token")
    [ "$3" = auth/kubernetes/login ] && [ "$4" = role=vault-snapshot ] || exit 2
    [ "$5" = "jwt=@$TOKEN_FILE" ] || exit 2
    echo hvs.SNAPSHOT ;;
  "operator raft")
    [ "$3 $4" = "snapshot save" ] && [ "${VAULT_TOKEN:-}" = hvs.SNAPSHOT ] || exit 2
    [ -f "$STATE/sealed" ] && { echo "Error: Vault is sealed" >&2; exit 2; }
    printf 'raft-snapshot-bytes' > "$5" ;;
  *) exit 1 ;;
esac
"""


@pytest.fixture(scope="module")
def synthesized() -> dict[str, Any]:
    """The single-node stack with its default settings."""
    stack = Instance("single-node", "single-node").build(cdktf.Testing.app())
    result: dict[str, Any] = json.loads(cdktf.Testing.synth(stack))
    return result


@pytest.fixture(scope="module")
def cronjob(synthesized) -> dict[str, Any]:
    (release,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == "vault-snapshot"]
    (found,) = by_kind(manifests_of(release), "CronJob")
    return found


def _env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _aws_dir() -> Path:
    """The AWS CLI from the project's lock (awscli), beside this Python: never one found on PATH."""
    aws = Path(sys.executable).parent / "aws"
    if not aws.exists():
        unavailable(f"{aws} is missing: awscli comes from the project's lock (make deps)")
    return aws.parent


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        unavailable(f"{server} is missing: moto[server] comes from the project's lock")
    with moto_server(server, KEYS) as url:
        yield url


def _run(tmp: Path, mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script under dash (the CronJob's images run it with /bin/sh), stubs first on PATH."""
    path = f"{tmp / 'bin'}:{_aws_dir()}:/usr/bin:/bin"
    return subprocess.run(
        ["sh", str(script_path("vault-snapshot.sh")), mode],
        env={"PATH": path, "STATE": str(tmp), "HOME": str(tmp), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _aws(url: str, *args: str) -> str:
    result = subprocess.run(
        [str(_aws_dir() / "aws"), "--endpoint-url", url, *args],
        env={**os.environ, **KEYS},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def _setup(
    tmp: Path, cronjob: dict[str, Any], url: str, bucket: str
) -> tuple[dict[str, str], dict[str, str]]:
    (tmp / "bin").mkdir()
    (tmp / "bin" / "vault").write_text(STUB_VAULT)
    (tmp / "bin" / "vault").chmod(0o755)
    (tmp / "work").mkdir()
    (tmp / "token").write_text("eyJ.service-account.jwt")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (save,) = pod["initContainers"]
    (upload,) = pod["containers"]
    save_env = {**_env_of(save), "SNAPSHOT_DIR": str(tmp / "work"), "TOKEN_FILE": str(tmp / "token")}
    upload_env = {**_env_of(upload), "SNAPSHOT_DIR": str(tmp / "work"), "ENDPOINT": url, "BUCKET": bucket}
    _aws(url, "s3", "mb", f"s3://{bucket}")
    return save_env, {**upload_env, **KEYS, "NOW": str(NOW)}


def test_a_snapshot_is_saved_uploaded_and_old_ones_deleted(tmp_path, cronjob, s3):
    save_env, upload_env = _setup(tmp_path, cronjob, s3, "snapshots-a")
    prefix = upload_env["PREFIX"]
    assert prefix == "single-node/vault" and upload_env["RETENTION_DAYS"] == "30"
    old = f"{prefix}/vault-20261001T023000Z.snap"  # 106 days before NOW
    recent = f"{prefix}/vault-20270110T023000Z.snap"  # 5 days before NOW
    foreign = f"{prefix}/notes.txt"
    for key in (old, recent, foreign):
        _aws(s3, "s3api", "put-object", "--bucket", "snapshots-a", "--key", key)

    saved = _run(tmp_path, "save", save_env)
    assert saved.returncode == 0, saved.stderr
    log = (tmp_path / "vault.log").read_text()
    # The JWT is read by the CLI from its file and the token travels in the environment only.
    assert "eyJ" not in log and "hvs.SNAPSHOT" not in log.split("VAULT_TOKEN=")[0]
    uploaded = _run(tmp_path, "upload", upload_env)
    assert uploaded.returncode == 0, uploaded.stderr

    keys = _aws(s3, "s3api", "list-objects-v2", "--bucket", "snapshots-a", "--query", "Contents[].Key")
    new = f"{prefix}/vault-20270115T080000Z.snap"
    assert sorted(json.loads(keys)) == sorted([recent, foreign, new])
    head = json.loads(_aws(s3, "s3api", "head-object", "--bucket", "snapshots-a", "--key", new))
    assert head["ServerSideEncryption"] == upload_env["ENCRYPTION"] == "AES256"
    body = tmp_path / "body"
    _aws(s3, "s3", "cp", f"s3://snapshots-a/{new}", str(body))
    assert body.read_text() == "raft-snapshot-bytes"
    assert "testing" not in uploaded.stdout + uploaded.stderr


def test_a_sealed_vault_fails_the_job_and_nothing_is_uploaded_or_deleted(tmp_path, cronjob, s3):
    save_env, upload_env = _setup(tmp_path, cronjob, s3, "snapshots-b")
    old = f"{upload_env['PREFIX']}/vault-20200101T000000Z.snap"
    _aws(s3, "s3api", "put-object", "--bucket", "snapshots-b", "--key", old)
    (tmp_path / "sealed").touch()
    assert _run(tmp_path, "save", save_env).returncode != 0
    assert not (tmp_path / "work" / "vault.snap").exists()
    uploaded = _run(tmp_path, "upload", upload_env)
    assert uploaded.returncode == 1 and "save step did not finish" in uploaded.stderr
    keys = _aws(s3, "s3api", "list-objects-v2", "--bucket", "snapshots-b", "--query", "Contents[].Key")
    assert json.loads(keys) == [old]


def test_a_retention_of_zero_is_refused_by_the_script(tmp_path, cronjob, s3):
    save_env, upload_env = _setup(tmp_path, cronjob, s3, "snapshots-c")
    assert _run(tmp_path, "save", save_env).returncode == 0
    result = _run(tmp_path, "upload", {**upload_env, "RETENTION_DAYS": "0"})
    assert result.returncode == 2 and "RETENTION_DAYS=0" in result.stderr


def test_the_cronjob_takes_the_keys_from_the_secret_and_runs_as_its_own_account(cronjob):
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "vault-snapshot"
    (upload,) = pod["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in upload["env"] if "valueFrom" in e}
    assert refs == {
        "AWS_ACCESS_KEY_ID": {"name": "vault-object-store", "key": "ACCESS_KEY_ID"},
        "AWS_SECRET_ACCESS_KEY": {"name": "vault-object-store", "key": "ACCESS_SECRET_KEY"},
        "AWS_DEFAULT_REGION": {"name": "vault-object-store", "key": "REGION"},
    }
    assert upload["image"] == "amazon/aws-cli:2.17.29"
    assert cronjob["spec"]["schedule"] == "30 2 * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_bootstrap_writes_the_snapshot_policy_and_role(synthesized):
    steps = resources(synthesized, "terraform_data")
    (bootstrap,) = [v for k, v in steps.items() if "vault_bootstrap" in k]
    assert bootstrap["triggers_replace"]["vault-bootstrap.sh:SNAPSHOT_SERVICE_ACCOUNT"] == "vault-snapshot"
    (secret_step,) = [k for k in steps if "snapshot-secret" in k]
    (postgres_secret,) = [k for k in steps if "postgres_object-store-secret" in k]
    # the same keys from the same server, each through a secrets file of its own
    files = [
        {
            p["file"]["destination"]
            for p in steps[name]["provisioner"]
            if "file" in p and p["file"]["destination"].endswith(".env")
        }
        for name in (secret_step, postgres_secret)
    ]
    assert files == [
        {".gpu-constructs/kube-secret.vault.vault-object-store.env"},
        {".gpu-constructs/kube-secret.ffe.ffe-db-object-store.env"},
    ]
    assert "var.backup_secret_access_key" not in json.dumps(steps[secret_step]["triggers_replace"]).replace(
        "sha256(var.backup_secret_access_key)", ""
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("vault_snapshot_retention_days", 0), ("vault_snapshot_schedule", "daily")],
)
def test_bad_snapshot_settings_fail_at_synth(field, value):
    from environments.single_node import SingleNodeSettings

    with pytest.raises(ConfigError, match=field):
        SingleNodeSettings(**{field: value})


# --- vault-raft-migrate.sh ---------------------------------------------------------------------------
# `vault operator migrate` reads its configuration and copies the file storage's records into a
# stand-in raft store ($DATA/vault.db); $STATE/fail makes it stop half-way.
STUB_MIGRATE = r"""#!/bin/sh
echo "vault $*" >> "$STATE/vault.log"
[ "$1 $2" = "operator migrate" ] || exit 1
config="${3#-config=}"
cp "$config" "$STATE/migrate.hcl"
src="$(sed -n '/storage_source/,/}/s/^ *path = "\(.*\)"$/\1/p' "$config")"
dst="$(sed -n '/storage_destination/,/}/s/^ *path *= "\(.*\)"$/\1/p' "$config")"
[ -d "$src/core" ] || { echo "no data in $src" >&2; exit 2; }
mkdir -p "$dst/raft"
(cd "$src" && find . -type f | sort) > "$dst/vault.db"
[ ! -f "$STATE/fail" ] || { echo "migration failed" >&2; exit 2; }
"""


def _migrate(tmp: Path, data: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "bin").mkdir(exist_ok=True)
    (tmp / "bin" / "vault").write_text(STUB_MIGRATE)
    (tmp / "bin" / "vault").chmod(0o755)
    return subprocess.run(
        ["sh", str(script_path("vault-raft-migrate.sh"))],
        env={
            "PATH": f"{tmp / 'bin'}:/usr/bin:/bin",
            "STATE": str(tmp),
            "DATA_DIR": str(data),
            "NODE_ID": "vault-0",
            "CLUSTER_ADDR": "https://vault-0.vault-internal:8201",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def _file_storage(data: Path) -> None:
    for record in ("core/_keyring", "core/_seal-config", "sys/token/_salt", "logical/abc/_key"):
        (data / record).parent.mkdir(parents=True, exist_ok=True)
        (data / record).write_text(record)
    (data / "lost+found").mkdir()


def test_file_storage_is_moved_aside_and_copied_into_raft(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _file_storage(data)
    result = _migrate(tmp_path, data)
    assert result.returncode == 0, result.stderr
    config = (tmp_path / "migrate.hcl").read_text()
    assert f'storage_source "file" {{\n  path = "{data}/file-storage"\n}}' in config
    assert (
        'node_id = "vault-0"' in config and 'cluster_addr = "https://vault-0.vault-internal:8201"' in config
    )
    assert (data / "file-storage" / "core" / "_keyring").read_text() == "core/_keyring"
    assert "./logical/abc/_key" in (data / "vault.db").read_text()
    assert sorted(p.name for p in data.iterdir()) == ["file-storage", "lost+found", "raft", "vault.db"]
    # Every later start finds raft storage and leaves it alone.
    (tmp_path / "vault.log").unlink()
    assert _migrate(tmp_path, data).returncode == 0
    assert not (tmp_path / "vault.log").exists()


def test_an_interrupted_copy_starts_again_from_the_file_storage(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _file_storage(data)
    (tmp_path / "fail").touch()
    assert _migrate(tmp_path, data).returncode != 0
    assert (data / ".raft-migration").exists() and (data / "file-storage" / "core").is_dir()
    (tmp_path / "fail").unlink()
    (data / "vault.db").write_text("half a copy")
    result = _migrate(tmp_path, data)
    assert result.returncode == 0, result.stderr
    assert "interrupted" in result.stdout
    assert "./core/_keyring" in (data / "vault.db").read_text()
    assert not (data / ".raft-migration").exists()


@pytest.mark.parametrize("content", ["empty", "raft"])
def test_a_new_or_raft_volume_is_left_alone(tmp_path, content):
    data = tmp_path / "data"
    data.mkdir()
    if content == "raft":
        (data / "vault.db").write_text("raft")
        (data / "raft").mkdir()
    assert _migrate(tmp_path, data).returncode == 0
    assert not (tmp_path / "vault.log").exists()
    assert not (data / "file-storage").exists()


def test_the_cronjob_is_one_the_backup_alerts_watch(cronjob):
    """BackupTooOld and BackupJobFailed select backup CronJobs and their Jobs by name; a snapshot
    CronJob they do not match would fail unnoticed."""
    import re

    import yaml

    from tests.conftest import ROOT

    rules = yaml.safe_load((ROOT / "gpu_constructs/monitoring/rules/platform.yaml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    (cronjob_re,) = set(re.findall(r'cronjob=~"([^"]+)"', exprs["BackupTooOld"]))
    (job_re,) = set(re.findall(r'job_name=~"([^"]+)"', exprs["BackupJobFailed"]))
    name = cronjob["metadata"]["name"]
    assert re.fullmatch(cronjob_re, name)
    assert re.fullmatch(job_re, f"{name}-29012345")  # the Jobs a CronJob makes: <name>-<minutes>


def test_the_database_is_scraped_through_a_pod_monitor_its_network_policy_admits(synthesized):
    releases = {r["name"]: r for r in resources(synthesized, "helm_release").values()}
    (monitor,) = by_kind(manifests_of(releases["ffe-db"]), "PodMonitor")
    assert monitor["spec"] == {
        "selector": {"matchLabels": {"cnpg.io/cluster": "ffe-db", "cnpg.io/podRole": "instance"}},
        "podMetricsEndpoints": [{"port": "metrics"}],
    }
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    assert "enablePodMonitor" not in json.dumps(cluster)
    monitoring = [
        k for k, r in resources(synthesized, "helm_release").items() if r["name"] == "kube-prometheus-stack"
    ]
    assert f"helm_release.{monitoring[0]}" in releases["ffe-db"]["depends_on"]
    policies = by_kind(manifests_of(releases["ffe-backend"]), "NetworkPolicy")
    (database,) = [p for p in policies if p["metadata"]["name"].endswith("-database")]
    scrape = [
        rule for rule in database["spec"]["ingress"] if {"protocol": "TCP", "port": 9187} in rule["ports"]
    ]
    assert scrape == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"protocol": "TCP", "port": 9187}],
        }
    ]


def test_the_operations_guide_says_where_the_snapshots_are_and_how_to_restore(synthesized):
    (release,) = [
        r for r in resources(synthesized, "helm_release").values() if r["name"] == "vault-operations"
    ]
    (config_map,) = by_kind(manifests_of(release), "ConfigMap")
    guide = config_map["data"]["README.md"]
    assert "s3://ffe-backups/single-node/vault/" in guide and "older than 30 days" in guide
    assert "vault operator raft snapshot restore -force /tmp/vault.snap" in guide
    assert "the AWS KMS key of the seal must still exist" in guide
