from __future__ import annotations

import pytest

from gpu_constructs.errors import ConfigError
from gpu_constructs.storage import Storage, StorageProps, StorageTier
from tests.conftest import make_cluster, manifests_of, resources
from tests.validators import validate_manifest


def test_seed_storage_classes_on_their_paths(synth, upstream):
    synthesized = synth(lambda stack: Storage(stack, "storage", props=StorageProps(cluster=make_cluster())))
    (release,) = resources(synthesized, "helm_release").values()
    classes = manifests_of(release)
    assert [(c["metadata"]["name"], c["parameters"]["nodePath"]) for c in classes] == [
        ("fast-ssd", "/var/lib/rancher/k3s/storage"),
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
        (lambda: StorageTier("fast", "/x", reclaim_policy="Recycle"), r"'fast.reclaim_policy' is 'Recycle'"),
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
