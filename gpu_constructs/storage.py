"""Storage: the fast-ssd, standard and backup StorageClasses on the node's disks."""

from __future__ import annotations

from dataclasses import dataclass, field

from constructs import Construct

from gpu_constructs import helm, validate
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError

LOCAL_PATH = "rancher.io/local-path"


@dataclass(frozen=True)
class StorageTier:
    """One StorageClass backed by a directory on the nodes."""

    name: str
    node_path: str
    """Directory on each node that holds the volumes (the disk of this tier)."""
    default: bool = False
    """Whether this is the cluster's default StorageClass."""
    reclaim_policy: str = "Retain"
    """Retain keeps the data when a claim is deleted; Delete removes it."""
    allow_volume_expansion: bool = True
    """Let claims be resized. local-path volumes are directories with no size cap, so a larger request
    is bookkeeping; the data can already grow to the disk's size."""

    def __post_init__(self) -> None:
        validate.k8s_name("storage tier name", self.name)
        if not self.node_path.startswith("/"):
            raise ConfigError(f"{self.name}.node_path", self.node_path, "give an absolute path")
        validate.one_of(f"{self.name}.reclaim_policy", self.reclaim_policy, ("Retain", "Delete"))


SEED_TIERS = (
    # The seed puts fast-ssd on the k3s data disk (/var/lib/rancher/k3s, NVMe), standard on an HDD
    # at /mnt/storage and backup on an NFS mount at /mnt/backups.
    StorageTier("fast-ssd", "/var/lib/rancher/k3s/storage", default=True),
    StorageTier("standard", "/mnt/storage"),
    StorageTier("backup", "/mnt/backups"),
)


@dataclass(frozen=True)
class StorageProps:
    cluster: GpuCluster
    tiers: tuple[StorageTier, ...] = field(default=SEED_TIERS)
    """The classes to create. Default: the seed's fast-ssd (default class), standard and backup."""
    provisioner: str = LOCAL_PATH
    """The provisioner behind every tier: k3s' bundled local-path provisioner."""

    def __post_init__(self) -> None:
        validate.unique("tiers", (tier.name for tier in self.tiers))
        defaults = [tier.name for tier in self.tiers if tier.default]
        if len(defaults) > 1:
            raise ConfigError("tiers", defaults, "mark at most one tier as the default class")


class Storage(Construct):
    """StorageClasses for the cluster, one per tier."""

    def __init__(self, scope: Construct, id: str, *, props: StorageProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.release = helm.manifests_release(
            self,
            "storage-classes",
            name="storage-classes",
            namespace="kube-system",
            manifests=self.storage_classes(),
            depends_on=props.cluster.ready,
        )

    def class_name(self, tier: str) -> str:
        """The StorageClass name of ``tier``; fails if the stack has no such tier."""
        names = [t.name for t in self.props.tiers]
        if tier not in names:
            raise ConfigError("storage tier", tier, f"use one of {', '.join(names)}")
        return tier

    def storage_classes(self) -> list[dict]:
        return [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": tier.name,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": str(tier.default).lower()},
                },
                "provisioner": self.props.provisioner,
                "parameters": {"nodePath": tier.node_path},
                "reclaimPolicy": tier.reclaim_policy,
                "allowVolumeExpansion": tier.allow_volume_expansion,
                "volumeBindingMode": "WaitForFirstConsumer",
            }
            for tier in self.props.tiers
        ]
