from __future__ import annotations

import pytest

from gpu_constructs.database import Postgres, PostgresProps
from gpu_constructs.errors import ConfigError
from tests.conftest import by_kind, make_cluster, manifests_of, release_values, resources
from tests.validators import validate_manifest


def props(**overrides) -> PostgresProps:
    fields = {
        "cluster": make_cluster(),
        "namespace": "ffe",
        "storage_class": "fast-ssd",
        "backup_storage_class": "backup",
    }
    fields.update(overrides)
    return PostgresProps(**fields)


def build(synth, **overrides):
    made = {}
    synthesized = synth(
        lambda stack: made.setdefault("p", Postgres(stack, "postgres", props=props(**overrides)))
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


def test_nightly_dump_to_the_backup_class_with_retention(synth, upstream):
    releases, _ = build(synth)
    objects = manifests_of(releases["ffe-db"])
    (job,) = by_kind(objects, "CronJob")
    (claim,) = by_kind(objects, "PersistentVolumeClaim")
    assert job["spec"]["schedule"] == "0 2 * * *"
    assert claim["spec"]["storageClassName"] == "backup"
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2]
    assert "pg_dump --format=custom" in script
    assert 'find /dumps -name "*.dump" -mtime +30 -print -delete' in script
    assert "${" not in script  # would be read as a Terraform interpolation
    secret_keys = {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
    assert secret_keys == {"username", "password", "dbname"}
    for manifest in (job, claim):
        validate_manifest(manifest, upstream)


def test_helm_does_not_wait_for_the_dump_volume(synth):
    releases, _ = build(synth)
    assert releases["ffe-db"]["wait"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backup_schedule": "daily"}, r"'backup_schedule' is 'daily': give a five-field cron schedule"),
        (
            {"backup_schedule": "99 2 * * *"},
            r"'backup_schedule' is '99 2 \* \* \*': minute '99' is outside 0-59",
        ),
        ({"backup_schedule": "0 24 * * *"}, r"hour '24' is outside 0-23"),
        ({"backup_schedule": "0 2 0 * *"}, r"day of month '0' is outside 1-31"),
        ({"backup_schedule": "0 2 * 13 *"}, r"month '13' is outside 1-12"),
        ({"backup_schedule": "0 2 * * 8"}, r"day of week '8' is outside 0-7"),
        ({"backup_schedule": "0 2 * * fri-mon"}, r"day of week range 'fri-mon' runs backwards"),
        ({"backup_schedule": "*/0 2 * * *"}, r"minute step '\*/0' must be at least 1"),
        ({"backup_schedule": "0 2 * * mon+1"}, r"day of week 'mon\+1' is not a value, range or step"),
        ({"backup_retention_days": 0}, r"'backup_retention_days' is 0"),
        ({"storage_size": "20GB"}, r"'postgres_storage_size' is '20GB': give a Kubernetes quantity"),
        ({"instances": 0}, r"'postgres_instances' is 0"),
        ({"image": "ghcr.io/cloudnative-pg/postgresql:15.4"}, r"'postgres image' is"),
    ],
)
def test_bad_database_settings(overrides, message):
    with pytest.raises(ConfigError, match=message):
        props(**overrides)


@pytest.mark.parametrize(
    "schedule", ["0 2 * * *", "*/15 * * * *", "0 */6 * * *", "30 1 1-15 jan-mar mon-fri", "5,35 3 * * 0,7"]
)
def test_cron_schedules_kubernetes_accepts_pass(schedule):
    assert props(backup_schedule=schedule).backup_schedule == schedule
