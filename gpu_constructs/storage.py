"""Storage: the fast-ssd, standard and backup StorageClasses on the nodes' disks, and the provisioner
that knows each class's directory.

rancher/local-path-provisioner provisions only directories listed in its own config ("config doesn't
contain path ... on node ..." otherwise; provisioner.go, getPathOnNode), and k3s rewrites its bundled
copy's config on every restart. So Storage runs its own provisioner, under its own name, with one path
map per class (``storageClassConfigs``): every class's directory is in the config by construction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import ScriptRun, SshHost, run_scripts

PROVISIONER = "gpu-constructs.io/local-path"
"""Not k3s' ``rancher.io/local-path``: the two provisioners must never both answer one claim."""
NAMESPACE = "kube-system"
NAME = "gpu-local-path-provisioner"
CONFIG_MAP = "gpu-local-path-config"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
K3S_DATA_DIR = "/var/lib/rancher/k3s"
"""k3s' data directory, which k3s-uninstall.sh deletes (install.sh create_uninstall:
``rm -rf /var/lib/rancher/k3s``): no tier may keep retained volumes under it."""


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
    node_labels: Mapping[str, str] | None = None
    """Only nodes with these labels have this tier's disk: the class's ``allowedTopologies``, which
    the scheduler matches against node labels for a WaitForFirstConsumer claim, so a pod with such a
    claim never lands where the directory would sit on another disk."""
    own_device: bool = False
    """The directory must be on another filesystem than ``/`` (checked on each host before the
    provisioner starts): a backup on the root disk is lost with it."""
    allow_volume_expansion: bool = True
    """Let claims be resized. local-path volumes are directories with no size cap, so a larger request
    is bookkeeping; the data can already grow to the disk's size."""

    def __post_init__(self) -> None:
        validate.k8s_name("storage tier name", self.name)
        if not self.node_path.startswith("/") or self.node_path.rstrip("/") == "":
            raise ConfigError(f"{self.name}.node_path", self.node_path, "give an absolute path other than /")
        # The host check passes the paths space-separated, and systemd's RequiresMountsFor= splits
        # at spaces and expands % specifiers (systemd.unit(5)).
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", self.node_path):
            raise ConfigError(
                f"{self.name}.node_path", self.node_path, "use letters, digits, '.', '_', '-' and '/' only"
            )
        validate.one_of(f"{self.name}.reclaim_policy", self.reclaim_policy, ("Retain", "Delete"))
        path = self.node_path.rstrip("/")
        if path == K3S_DATA_DIR or path.startswith(K3S_DATA_DIR + "/"):
            raise ConfigError(
                f"{self.name}.node_path",
                self.node_path,
                f"k3s-uninstall.sh deletes {K3S_DATA_DIR} with every volume in it; use a directory "
                f"outside it, e.g. /var/lib/gpu-storage/{self.name}",
            )


SEED_TIERS = (
    # The seed puts fast-ssd on the k3s data disk (NVMe) under /var/lib/rancher/k3s/storage, which
    # k3s-uninstall.sh wipes: here it is on the same disk, outside k3s' data directory. standard is
    # an HDD at /mnt/storage, backup an NFS mount or second disk at /mnt/backups. No workload of the
    # stacks binds the backup class (PostgreSQL backs up to the object store), so it is not required
    # to be a device of its own: a host without a second disk is not refused for a class nothing uses.
    StorageTier("fast-ssd", "/var/lib/gpu-storage/fast-ssd", default=True),
    StorageTier("standard", "/mnt/storage"),
    StorageTier("backup", "/mnt/backups"),
)


@dataclass(frozen=True)
class StorageProps:
    cluster: GpuCluster
    tiers: tuple[StorageTier, ...] = field(default=SEED_TIERS)
    """The classes to create. Default: the seed's fast-ssd (default class), standard and backup."""
    check_hosts: Sequence[SshHost] = ()
    """Hosts on which every tier's directory is checked before the provisioner starts (it exists,
    and is on its own filesystem for ``own_device`` tiers). Empty: no check (nodes the stack
    creates with their disks)."""
    node_services: tuple[str, ...] = ()
    """The systemd services that run the node on ``check_hosts`` (k3s, k3s-agent). The check gives
    each a drop-in ``RequiresMountsFor=`` of every tier's path, so after a reboot in which a tier's
    disk is not mounted the node does not start, rather than start its pods on empty directories
    that the provisioner's hostPath volumes (DirectoryOrCreate) create on the root disk."""
    provisioner_image: str = versions.LOCAL_PATH_PROVISIONER_IMAGE.version
    helper_image: str = versions.LOCAL_PATH_HELPER_IMAGE.version

    def __post_init__(self) -> None:
        validate.unique("tiers", (tier.name for tier in self.tiers))
        validate.unique("tiers node_path", (tier.node_path.rstrip("/") for tier in self.tiers))
        defaults = [tier.name for tier in self.tiers if tier.default]
        if len(defaults) > 1:
            raise ConfigError("tiers", defaults, "mark at most one tier as the default class")
        for service in self.node_services:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", service) or service.endswith(".service"):
                raise ConfigError(
                    "node_services", service, "give a systemd service name without .service, e.g. k3s"
                )


class Storage(Construct):
    """StorageClasses for the cluster, one per tier, and the local-path provisioner behind them."""

    def __init__(self, scope: Construct, id: str, *, props: StorageProps) -> None:
        super().__init__(scope, id)
        self.props = props
        tiers = ScriptRun(
            "storage-check.sh",
            {
                "TIERS": " ".join(f"{tier.name}={tier.node_path}" for tier in props.tiers),
                "OWN_DEVICE": " ".join(tier.name for tier in props.tiers if tier.own_device),
                "NODE_SERVICES": " ".join(props.node_services),
            },
        )
        self.checks = [
            run_scripts(self, f"check-{index}", host=host, runs=[tiers])
            for index, host in enumerate(props.check_hosts)
        ]
        self.provisioner_release = helm.manifests_release(
            self,
            "local-path-provisioner",
            cluster=props.cluster,
            name=NAME,
            namespace=NAMESPACE,
            manifests=self.provisioner(),
            depends_on=self.checks,
        )
        # Whatever uses a class depends on this release, and through it on the provisioner.
        self.release = helm.manifests_release(
            self,
            "storage-classes",
            cluster=props.cluster,
            name="storage-classes",
            namespace=NAMESPACE,
            manifests=self.storage_classes(),
            depends_on=[self.provisioner_release],
        )

    def class_name(self, tier: str) -> str:
        """The StorageClass name of ``tier``; fails if the stack has no such tier."""
        names = [t.name for t in self.props.tiers]
        if tier not in names:
            raise ConfigError("storage tier", tier, f"use one of {', '.join(names)}")
        return tier

    def provisioner_config(self) -> dict[str, Any]:
        """The provisioner's config.json: one path map per class. With ``storageClassConfigs`` the
        top-level ``nodePathMap`` must be empty (upstream README, "Configuration")."""
        return {
            "nodePathMap": [],
            "storageClassConfigs": {
                tier.name: {
                    "nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [tier.node_path]}]
                }
                for tier in self.props.tiers
            },
        }

    def storage_classes(self) -> list[dict]:
        return [self._storage_class(tier) for tier in self.props.tiers]

    @staticmethod
    def _storage_class(tier: StorageTier) -> dict[str, Any]:
        storage_class: dict[str, Any] = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": tier.name,
                "annotations": {DEFAULT_CLASS_ANNOTATION: str(tier.default).lower()},
            },
            "provisioner": PROVISIONER,
            # Checked by the provisioner against the class's path map above.
            "parameters": {"nodePath": tier.node_path},
            "reclaimPolicy": tier.reclaim_policy,
            "allowVolumeExpansion": tier.allow_volume_expansion,
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        if tier.node_labels:
            storage_class["allowedTopologies"] = [
                {
                    "matchLabelExpressions": [
                        {"key": key, "values": [value]} for key, value in sorted(tier.node_labels.items())
                    ]
                }
            ]
        return storage_class

    def provisioner(self) -> list[dict[str, Any]]:
        """rancher/local-path-provisioner as its upstream manifest deploys it
        (deploy/local-path-storage.yaml), under this construct's names and provisioner name."""
        meta = {"name": NAME, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": NAME}}
        subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
        helper_pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "helper-pod"},
            "spec": {
                "priorityClassName": "system-node-critical",
                "tolerations": [
                    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}
                ],
                "containers": [
                    {
                        "name": "helper-pod",
                        "image": self.props.helper_image,
                        "imagePullPolicy": "IfNotPresent",
                    }
                ],
            },
        }
        probe = {"httpGet": {"path": "/health", "port": "health"}, "periodSeconds": 10}
        return [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta,
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["pods"],
                        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
                    }
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                "subjects": subject,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": NAME, "labels": meta["labels"]},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
                        "verbs": ["get", "list", "watch"],
                    },
                    {
                        "apiGroups": [""],
                        "resources": ["persistentvolumes"],
                        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
                    },
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
                    {
                        "apiGroups": ["storage.k8s.io"],
                        "resources": ["storageclasses"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": NAME, "labels": meta["labels"]},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
                "subjects": subject,
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE, "labels": meta["labels"]},
                "data": {
                    "config.json": json.dumps(self.provisioner_config(), indent=2, sort_keys=True),
                    "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
                    "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
                    "helperPod.yaml": helm.to_yaml(helper_pod),
                },
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": meta,
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": meta["labels"]},
                    "template": {
                        "metadata": {"labels": meta["labels"]},
                        "spec": {
                            "serviceAccountName": NAME,
                            "containers": [
                                {
                                    "name": "local-path-provisioner",
                                    "image": self.props.provisioner_image,
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": [
                                        "local-path-provisioner",
                                        "start",
                                        "--config=/etc/config/config.json",
                                        f"--provisioner-name={PROVISIONER}",
                                        f"--configmap-name={CONFIG_MAP}",
                                        f"--service-account-name={NAME}",
                                        f"--helper-image={self.props.helper_image}",
                                    ],
                                    "env": [
                                        {
                                            "name": "POD_NAMESPACE",
                                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                                        },
                                        {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"},
                                        {"name": "HEALTH_PORT", "value": "8080"},
                                    ],
                                    "ports": [{"name": "health", "containerPort": 8080, "protocol": "TCP"}],
                                    "livenessProbe": probe,
                                    "readinessProbe": {
                                        **probe,
                                        "httpGet": {"path": "/ready", "port": "health"},
                                    },
                                    "resources": {
                                        "requests": {"cpu": "10m", "memory": "32Mi"},
                                        "limits": {"memory": "128Mi"},
                                    },
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]},
                                    },
                                    "volumeMounts": [{"name": "config", "mountPath": "/etc/config/"}],
                                }
                            ],
                            "volumes": [{"name": "config", "configMap": {"name": CONFIG_MAP}}],
                        },
                    },
                },
            },
        ]
