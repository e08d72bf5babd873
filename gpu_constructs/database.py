"""PostgreSQL: the CloudNativePG operator, a PostgreSQL 16 cluster and its nightly backup.

CloudNativePG generates the database credentials into a Kubernetes Secret (``<name>-app``), so no
password passes through Terraform at all. The backup is a CronJob that dumps the database with
pg_dump onto a volume of the backup StorageClass and deletes dumps older than the retention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.cluster import GpuCluster

OPERATOR_NAMESPACE = "cnpg-system"


@dataclass(frozen=True)
class PostgresProps:
    cluster: GpuCluster
    namespace: str
    """Namespace of the database: the application's, so it can read the generated credentials."""
    storage_class: str
    """StorageClass of the data volumes (the seed: fast-ssd)."""
    backup_storage_class: str
    """StorageClass of the dump volume (the seed: backup)."""
    name: str = "ffe-db"
    database: str = "ffe"
    owner: str = "ffe"
    instances: int = 1
    """PostgreSQL instances: 1 on a single host; 3 for a primary with two standbys."""
    storage_size: str = "20Gi"
    backup_size: str = "50Gi"
    backup_schedule: str = "0 2 * * *"
    """When the dump runs (cron, cluster time zone): the seed's daily 02:00."""
    backup_retention_days: int = 30
    image: str = versions.POSTGRES_IMAGE.version
    backup_image: str = versions.POSTGRES_CLIENT_IMAGE.version
    operator_chart_version: str = versions.CLOUDNATIVE_PG_CHART.version
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.k8s_name("postgres name", self.name)
        validate.k8s_name("postgres namespace", self.namespace)
        validate.int_range("postgres_instances", self.instances, 1, 9)
        validate.quantity("postgres_storage_size", self.storage_size)
        validate.quantity("backup_size", self.backup_size)
        validate.cron("backup_schedule", self.backup_schedule)
        validate.int_range("backup_retention_days", self.backup_retention_days, 1, 3650)
        validate.version(
            "postgres image", self.image, r".+:16(\.\d+)?(-.+)?", "ghcr.io/cloudnative-pg/postgresql:16.10"
        )


class Postgres(Construct):
    """A CloudNativePG PostgreSQL 16 cluster with a nightly pg_dump backup."""

    def __init__(self, scope: Construct, id: str, *, props: PostgresProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.operator = helm.release(
            self,
            "operator",
            cluster=props.cluster,
            name="cloudnative-pg",
            chart="cloudnative-pg",
            repository=versions.REPO_CNPG,
            version=props.operator_chart_version,
            namespace=OPERATOR_NAMESPACE,
            values={"crds": {"create": True}},
            depends_on=props.depends_on,
        )
        self.release = helm.manifests_release(
            self,
            "cluster",
            cluster=props.cluster,
            name=props.name,
            namespace=props.namespace,
            manifests=[self.cluster_manifest()],
            depends_on=[self.operator, *props.depends_on],
        )
        # The dump volume is its own release, neither atomic nor waited for. Its class binds a
        # claim when the first pod mounting it is scheduled (WaitForFirstConsumer: local-path
        # provisions on the selected node), and that pod is the first nightly dump; Helm counts a
        # claim ready only once Bound (helm v3.18 pkg/kube/ready.go) and waits whenever atomic is
        # set (pkg/action/install.go), so in a waited release the install times out and atomic
        # uninstalls the database with it. Helm cannot observe the Cluster's readiness either (a
        # custom resource is ready to Helm at once): the Vault bootstrap waits for its Ready
        # condition before using it.
        self.backup = helm.manifests_release(
            self,
            "backup",
            cluster=props.cluster,
            name=f"{props.name}-backup",
            namespace=props.namespace,
            manifests=[self.backup_claim(), self.backup_job()],
            depends_on=[self.release],
            wait=False,
            atomic=False,
        )

    @property
    def credentials_secret(self) -> str:
        """Secret with ``username``, ``password``, ``host``, ``port``, ``dbname`` and ``uri``."""
        return f"{self.props.name}-app"

    @property
    def service(self) -> str:
        """The read-write service of the primary."""
        return f"{self.props.name}-rw"

    @property
    def pod_labels(self) -> dict[str, str]:
        return {"cnpg.io/cluster": self.props.name}

    @property
    def backup_pod_labels(self) -> dict[str, str]:
        return {"app.kubernetes.io/name": f"{self.props.name}-backup"}

    def cluster_manifest(self) -> dict[str, Any]:
        props = self.props
        return {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": props.name, "namespace": props.namespace},
            "spec": {
                "instances": props.instances,
                "imageName": props.image,
                "enableSuperuserAccess": False,
                "bootstrap": {"initdb": {"database": props.database, "owner": props.owner}},
                "storage": {"size": props.storage_size, "storageClass": props.storage_class},
                "resources": {
                    "requests": {"cpu": "500m", "memory": "1Gi"},
                    "limits": {"memory": "4Gi"},
                },
            },
        }

    def backup_claim(self) -> dict[str, Any]:
        props = self.props
        return {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": f"{props.name}-dumps", "namespace": props.namespace},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": props.backup_storage_class,
                "resources": {"requests": {"storage": props.backup_size}},
            },
        }

    def backup_job(self) -> dict[str, Any]:
        props = self.props
        # $VAR, not ${VAR}: this text passes through Terraform, where ${ starts an interpolation.
        script = (
            "set -eu\n"
            'out="/dumps/$PGDATABASE-$(date -u +%Y%m%dT%H%M%SZ).dump"\n'
            'pg_dump --format=custom --file="$out.tmp"\n'
            'mv "$out.tmp" "$out"\n'
            f'find /dumps -name "*.dump" -mtime +{props.backup_retention_days} -print -delete\n'
        )

        def secret_env(name: str, key: str) -> dict[str, Any]:
            return {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": self.credentials_secret, "key": key}},
            }

        return {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": f"{props.name}-backup", "namespace": props.namespace},
            "spec": {
                "schedule": props.backup_schedule,
                "concurrencyPolicy": "Forbid",
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "spec": {
                        "backoffLimit": 2,
                        "template": {
                            "metadata": {"labels": self.backup_pod_labels},
                            "spec": {
                                "restartPolicy": "OnFailure",
                                "securityContext": {
                                    "runAsNonRoot": True,
                                    "runAsUser": 70,
                                    "fsGroup": 70,
                                    "seccompProfile": {"type": "RuntimeDefault"},
                                },
                                "containers": [
                                    {
                                        "name": "pg-dump",
                                        "image": props.backup_image,
                                        "command": ["/bin/sh", "-c", script],
                                        "env": [
                                            {"name": "PGHOST", "value": self.service},
                                            secret_env("PGUSER", "username"),
                                            secret_env("PGPASSWORD", "password"),
                                            secret_env("PGDATABASE", "dbname"),
                                        ],
                                        "securityContext": {
                                            "allowPrivilegeEscalation": False,
                                            "capabilities": {"drop": ["ALL"]},
                                        },
                                        "volumeMounts": [{"name": "dumps", "mountPath": "/dumps"}],
                                    }
                                ],
                                "volumes": [
                                    {
                                        "name": "dumps",
                                        "persistentVolumeClaim": {"claimName": f"{props.name}-dumps"},
                                    }
                                ],
                            },
                        },
                    }
                },
            },
        }
