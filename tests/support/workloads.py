"""Helpers over the workload constructs shared by several test modules: a database's props as
single-node makes them, what Helm waits for in a rollout, the local-path classes and provisioners."""

from __future__ import annotations

from gpu_constructs.backup import ObjectStore
from gpu_constructs.database import ObjectStoreAccess, PostgresProps
from gpu_constructs.hostexec import SshHost
from tests.conftest import by_kind, make_cluster, manifests_of, resources


def postgres_props(**overrides) -> PostgresProps:
    """Props of a database as single-node makes them, the keys from sensitive variables."""
    fields = {
        "cluster": make_cluster(),
        "namespace": "ffe",
        "storage_class": "fast-ssd",
        "object_store": STORE,
        "object_store_access": ObjectStoreAccess(
            access_key_id="${var.backup_access_key_id}",
            secret_access_key="${var.backup_secret_access_key}",
            secret_host=SshHost("10.0.0.5", "ubuntu", "~/.ssh/k"),
        ),
    }
    fields.update(overrides)
    return PostgresProps(**fields)


STORE = ObjectStore(bucket="ffe-backups", path="single-node")


def helm_waits_for(deployment: dict, replicas: int) -> int:
    """How many ready pods of the new ReplicaSet Helm waits for at ``replicas``: ``replicas -
    maxUnavailable`` (helm v3.18 pkg/kube/ready.go deploymentReady), maxUnavailable being 0 for
    Recreate and rounded down from a percentage (25% when unset), as Kubernetes' deployment util."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return replicas
    unavailable = strategy.get("rollingUpdate", {}).get("maxUnavailable", "25%")
    if isinstance(unavailable, str):
        unavailable = replicas * int(unavailable.rstrip("%")) // 100
    return replicas - unavailable


def all_manifests(synthesized: dict) -> list[dict]:
    """The Kubernetes objects of every manifests-chart release of a stack."""
    return [
        manifest
        for release in resources(synthesized, "helm_release").values()
        if "manifests-chart" in str(release.get("chart", ""))
        for manifest in manifests_of(release)
    ]


def provisioner_of(manifests: list[dict], name: str = "gpu-constructs.io/local-path") -> tuple[dict, dict]:
    """The config.json and the container flags of the provisioner called ``name``."""
    import json

    found = []
    for deployment in by_kind(manifests, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            flags = dict(a.removeprefix("--").split("=", 1) for a in container.get("command", []) if "=" in a)
            if flags.get("provisioner-name") == name:
                found.append(flags)
    (flags,) = found
    (config_map,) = [
        c for c in by_kind(manifests, "ConfigMap") if c["metadata"]["name"] == flags["configmap-name"]
    ]
    return json.loads(config_map["data"]["config.json"]), flags


def check_every_class_is_provisionable(manifests: list[dict]) -> int:
    """Each local-path StorageClass has a provisioner of its name whose config lists its path
    (local-path-provisioner refuses other paths: "config doesn't contain path ... on node ...")."""
    checked = 0
    for storage_class in by_kind(manifests, "StorageClass"):
        if not storage_class["provisioner"].endswith("local-path"):
            continue
        config, _ = provisioner_of(manifests, storage_class["provisioner"])
        assert config["nodePathMap"] == []
        name = storage_class["metadata"]["name"]
        paths = [p for entry in config["storageClassConfigs"][name]["nodePathMap"] for p in entry["paths"]]
        assert storage_class["parameters"]["nodePath"] in paths, name
        checked += 1
    return checked
