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
    objects = manifests_of(releases["ffe-db-backup"])
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
    backup = releases["ffe-db-backup"]
    assert (backup["wait"], backup["atomic"]) == (False, False)
    assert by_kind(manifests_of(releases["ffe-db"]), "PersistentVolumeClaim") == []
    assert (releases["ffe-db"]["wait"], releases["ffe-db"]["atomic"]) == (True, True)
    assert any("postgres_cluster" in dep for dep in backup["depends_on"])


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
