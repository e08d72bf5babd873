from __future__ import annotations

import re

import pytest

from gpu_constructs.errors import ConfigError
from gpu_constructs.storage import NAME, SEED_TIERS, Storage, StorageProps, StorageTier
from tests.conftest import by_kind, make_cluster, resources
from tests.support.validators import validate_manifest
from tests.support.workloads import all_manifests, check_every_class_is_provisionable, provisioner_of


def test_seed_storage_classes_on_their_paths(synth, upstream):
    synthesized = synth(lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster())))
    classes = by_kind(all_manifests(synthesized), "StorageClass")
    assert [(c["metadata"]["name"], c["parameters"]["nodePath"]) for c in classes] == [
        ("fast-ssd", "/var/lib/gpu-storage/fast-ssd"),
        ("standard", "/mnt/storage"),
        ("backup", "/mnt/backups"),
    ]
    for storage_class in classes:
        assert storage_class["reclaimPolicy"] == "Retain"
        assert storage_class["allowVolumeExpansion"] is True
        assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
        validate_manifest(storage_class, upstream)
    defaults = [c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] for c in classes]
    assert defaults == ["true", "false", "false"]


def test_class_name_of_an_unknown_tier_fails(synth):
    made = {}
    synth(
        lambda stack: made.setdefault(
            "s", Storage(stack, "storage", props=StorageProps(cluster=make_cluster()))
        )
    )
    with pytest.raises(ConfigError, match=r"'storage tier' is 'nvme': use one of fast-ssd, standard, backup"):
        made["s"].class_name("nvme")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: StorageTier("Fast", "/x"), r"'storage tier name' is 'Fast'"),
        (lambda: StorageTier("fast", "mnt/x"), r"'fast.node_path' is 'mnt/x': give an absolute path"),
        (lambda: StorageTier("fast", "/"), r"'fast.node_path' is '/': give an absolute path other than /"),
        (lambda: StorageTier("fast", "/x", reclaim_policy="Recycle"), r"'fast.reclaim_policy' is 'Recycle'"),
        (lambda: StorageTier("fast", "/mnt/my disk"), r"'fast.node_path' is '/mnt/my disk': use letters"),
        (lambda: StorageTier("fast", "/mnt/%H"), r"'fast.node_path' is '/mnt/%H': use letters"),
        (
            lambda: StorageProps(cluster=make_cluster(), node_services=("k3s.service",)),
            r"'node_services' is 'k3s.service': give a systemd service name without .service",
        ),
        (
            lambda: StorageProps(
                cluster=make_cluster(), tiers=(StorageTier("a", "/a"), StorageTier("a", "/b"))
            ),
            r"'tiers' is 'a': each entry must appear once",
        ),
        (
            lambda: StorageProps(
                cluster=make_cluster(),
                tiers=(StorageTier("a", "/a", default=True), StorageTier("b", "/b", default=True)),
            ),
            r"'tiers' is \['a', 'b'\]: mark at most one tier as the default",
        ),
    ],
)
def test_bad_storage_settings(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_every_class_path_is_in_its_provisioners_config(synth, upstream):
    synthesized = synth(lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster())))
    manifests = all_manifests(synthesized)
    assert check_every_class_is_provisionable(manifests) == 3
    for manifest in manifests:
        validate_manifest(manifest, upstream)


def test_own_provisioner_name_never_k3s_bundled_one(synth):
    synthesized = synth(lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster())))
    manifests = all_manifests(synthesized)
    _, flags = provisioner_of(manifests)
    assert flags["provisioner-name"] != "rancher.io/local-path"
    assert {c["provisioner"] for c in by_kind(manifests, "StorageClass")} == {flags["provisioner-name"]}


def test_the_classes_release_waits_for_the_provisioner(synth):
    synthesized = synth(lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster())))
    found = {r["name"]: (k, r) for k, r in resources(synthesized, "helm_release").items()}
    provisioner_id, _ = found["gpu-local-path-provisioner"]
    assert found["storage-classes"][1]["depends_on"] == [f"helm_release.{provisioner_id}"]


def test_two_tiers_on_one_directory_are_refused():
    with pytest.raises(ConfigError, match=r"'tiers node_path' is '/a': each entry must appear once"):
        StorageProps(cluster=make_cluster(), tiers=(StorageTier("a", "/a"), StorageTier("b", "/a/")))


@pytest.mark.parametrize("path", ["/var/lib/rancher/k3s/storage", "/var/lib/rancher/k3s/"])
def test_no_tier_under_the_k3s_data_directory_that_uninstall_deletes(path):
    with pytest.raises(ConfigError, match=r"'fast-ssd.node_path' is '.*': k3s-uninstall.sh deletes"):
        StorageTier("fast-ssd", path)


def test_every_host_checks_the_tier_directories_before_the_provisioner_starts(synth):
    from gpu_constructs.hostexec import SshHost

    hosts = [SshHost("192.168.1.100", "ubuntu", "~/.ssh/id"), SshHost("192.168.1.101", "ubuntu", "~/.ssh/id")]
    synthesized = synth(
        lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster(), check_hosts=hosts))
    )
    checks = resources(synthesized, "terraform_data")
    assert len(checks) == 2
    for check in checks.values():
        command = [p for p in check["provisioner"] if "remote-exec" in p][-1]["remote-exec"]["inline"][-1]
        assert (
            "TIERS='fast-ssd=/var/lib/gpu-storage/fast-ssd standard=/mnt/storage backup=/mnt/backups'"
            in command
        )
        assert "OWN_DEVICE=" not in command or "OWN_DEVICE=''" in command
    (provisioner,) = [r for r in resources(synthesized, "helm_release").values() if r["name"] == NAME]
    assert {f"terraform_data.{name}" for name in checks} <= set(provisioner["depends_on"])


def test_a_tier_that_must_be_its_own_device_is_one_something_uses(helm, upstream):
    """own_device refuses a host whose tier directory is on /: only worth it for a class a workload
    binds. Every own_device tier of single-node is the storageClass of some rendered claim, claim
    template or custom resource's storage."""
    import json

    import main
    from tests.support import render

    (instance,) = [i for i in main.INSTANCES if i.stack == "single-node"]
    rendered = render.rendered(instance)
    used = set(
        re.findall(r'"storageClass(?:Name)?": "([a-z0-9-]+)"', json.dumps([o for _, o in rendered.objects()]))
    )
    assert "fast-ssd" in used
    own = {tier.name for tier in SEED_TIERS if tier.own_device}
    assert own <= used, f"own_device tiers nothing binds: {sorted(own - used)}"


def test_the_host_check_gives_the_node_services_the_tier_mounts(synth):
    """The services named in node_services reach every host's check, which makes them require the
    tiers' mounts (storage-check.sh); without them, no drop-in is written."""
    from gpu_constructs.hostexec import SshHost

    hosts = [SshHost("192.168.1.100", "ubuntu", "~/.ssh/id")]

    def check_env(**overrides) -> dict[str, str]:
        synthesized = synth(
            lambda stack: Storage(
                stack, "storage", props=StorageProps(cluster=make_cluster(), check_hosts=hosts, **overrides)
            )
        )
        (check,) = resources(synthesized, "terraform_data").values()
        return {
            k.split(":", 1)[1]: v
            for k, v in check["triggers_replace"].items()
            if k.startswith("storage-check.sh:")
        }

    assert check_env(node_services=("k3s", "k3s-agent"))["NODE_SERVICES"] == "k3s k3s-agent"
    assert check_env()["NODE_SERVICES"] == ""
