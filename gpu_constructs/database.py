"""PostgreSQL: the CloudNativePG operator, a PostgreSQL 16 cluster and its backups.

CloudNativePG generates the database credentials into a Kubernetes Secret (``<name>-app``), so no
password passes through Terraform at all.

Backups are CloudNativePG's own physical backups with Barman Cloud into an S3-compatible object
store: every WAL segment is archived as soon as PostgreSQL closes it (at the latest after
``archive_timeout``, 5 minutes by default), a ScheduledBackup takes a base backup daily, and the
operator deletes what the retention no longer needs. Any moment inside the retention can be
restored into a new Cluster (docs/single-node.md, "PostgreSQL: backup and restore").

The in-tree ``spec.backup.barmanObjectStore`` is used, not the Barman Cloud plugin that CloudNativePG
recommends since 1.26 (docs/src/backup.md at v1.29.1): the plugin release (v0.14.0) ships no Helm
chart, only a ``manifest.yaml`` with its Deployment, CRD and cert-manager Certificates, which this
project could neither install as a pinned, rendered and checked release nor upgrade or remove with
the stack; and with a plugin the Cluster status fields ``lastSuccessfulBackup`` and
``firstRecoverabilityPoint`` and the ``cnpg_collector_*backup*`` metrics are not set (v1.29.1
api/v1/cluster_types.go: "the field is not set for backup plugins"), which the backup check and
alerts read. The in-tree support is deprecated and scheduled for removal in a later minor
(1.29.2 release notes: 1.31.0); the plugin's migration guide maps ``barmanObjectStore`` one to one
onto an ObjectStore and reads the same backups, so moving is a single Cluster change once a chart
for it can be pinned. The image must then carry the barman-cloud tools: the pinned
``ghcr.io/cloudnative-pg/postgresql:16.x`` tags are the ``system`` images, which do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cdktf import DataResource, Fn
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.backup import ObjectStore, backup_schedule
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost, kube_secret_step

OPERATOR_NAMESPACE = "cnpg-system"
METRICS_PORT = 9187
"""The instances' exporter, container port ``metrics``."""
ACCESS_KEY_ID = "ACCESS_KEY_ID"
SECRET_ACCESS_KEY = "ACCESS_SECRET_KEY"
REGION_KEY = "REGION"


@dataclass(frozen=True)
class ObjectStoreAccess:
    """The object store's key pair: references to sensitive Terraform variables, and the k3s server
    that writes them into the database's namespace as a Secret (over SSH, never on a command line)."""

    access_key_id: str
    secret_access_key: str
    secret_host: SshHost

    def __post_init__(self) -> None:
        for field, value in (
            ("backup_access_key_id", self.access_key_id),
            ("backup_secret_access_key", self.secret_access_key),
        ):
            if not validate.is_reference(value):
                raise ConfigError(field, "<literal>", "pass a reference to a sensitive Terraform variable")

    def secret_step(
        self,
        scope: Construct,
        construct_id: str,
        *,
        namespace: str,
        secret_name: str,
        region: str,
        cluster: GpuCluster,
        depends_on: Sequence[Any] = (),
    ) -> DataResource:
        """The step that writes the key pair and ``region`` into ``namespace`` as Secret
        ``secret_name``, with Barman Cloud's key names (kube-secret.sh, keys on stdin); new keys
        re-run it, only their hash is in the state."""
        return kube_secret_step(
            scope,
            construct_id,
            host=self.secret_host,
            namespace=namespace,
            secret_name=secret_name,
            values={
                ACCESS_KEY_ID: self.access_key_id,
                SECRET_ACCESS_KEY: self.secret_access_key,
                REGION_KEY: region,
            },
            variables={ACCESS_KEY_ID: "backup_access_key_id", SECRET_ACCESS_KEY: "backup_secret_access_key"},
            cluster=cluster,
            depends_on=depends_on,
        )


@dataclass(frozen=True)
class PostgresProps:
    cluster: GpuCluster
    namespace: str
    """Namespace of the database: the application's, so it can read the generated credentials."""
    storage_class: str
    """StorageClass of the data volumes (the seed: fast-ssd)."""
    object_store: ObjectStore
    """Where the WAL archive and the base backups go."""
    object_store_access: ObjectStoreAccess
    name: str = "ffe-db"
    database: str = "ffe"
    owner: str = "ffe"
    instances: int = 1
    """PostgreSQL instances: 1 on a single host; 3 for a primary with two standbys."""
    storage_size: str = "20Gi"
    image: str = versions.POSTGRES_IMAGE.version
    operator_chart_version: str = versions.CLOUDNATIVE_PG_CHART.version
    monitoring_namespace: str | None = None
    """Namespace of the Prometheus that scrapes the instances' exporter through a PodMonitor (the
    Prometheus Operator's CRD must exist: add its release to ``depends_on``); None: no PodMonitor."""
    depends_on: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate.k8s_name("postgres name", self.name)
        validate.k8s_name("postgres namespace", self.namespace)
        validate.int_range("postgres_instances", self.instances, 1, 9)
        validate.storage_size("postgres_storage_size", self.storage_size)
        validate.version(
            "postgres image", self.image, r".+:16(\.\d+)?(-.+)?", "ghcr.io/cloudnative-pg/postgresql:16.10"
        )
        if "-minimal" in self.image or "-standard" in self.image:
            raise ConfigError(
                "postgres image",
                self.image,
                "minimal and standard images carry no barman-cloud for the backups: use a system "
                "image such as ghcr.io/cloudnative-pg/postgresql:16.10",
            )


class Postgres(Construct):
    """A CloudNativePG PostgreSQL 16 cluster with WAL archiving and daily base backups."""

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
        access = props.object_store_access
        # The Secret exists before the Cluster: its first WAL segment is archived with these keys.
        # A new cluster has no Secret: the step is replaced with it.
        self.object_store_secret = access.secret_step(
            self,
            "object-store-secret",
            namespace=props.namespace,
            secret_name=self.object_store_secret_name,
            region=props.object_store.region,
            cluster=props.cluster,
        )
        # CloudNativePG archives a new Cluster only into an empty WAL archive ("Expected empty
        # archive", docs/src/recovery.md): a new id for every cluster the stack builds (created again
        # with it, so after a destroy and a deploy too) goes into the server name, and each Cluster
        # writes under its own prefix; earlier ones stay readable for a restore.
        self.generation = DataResource(self, "generation", **props.cluster.installed())
        # Helm cannot observe the Cluster's readiness (a custom resource is ready to Helm at once):
        # the Vault bootstrap waits for its Ready condition before using it.
        self.release = helm.manifests_release(
            self,
            "cluster",
            cluster=props.cluster,
            name=props.name,
            namespace=props.namespace,
            manifests=[
                self.cluster_manifest(),
                self.scheduled_backup(),
                *([self.pod_monitor()] if props.monitoring_namespace else []),
            ],
            depends_on=[self.operator, self.object_store_secret, *props.depends_on],
        )

    @property
    def name(self) -> str:
        """The CloudNativePG Cluster's name."""
        return self.props.name

    @property
    def namespace(self) -> str:
        return self.props.namespace

    @property
    def database(self) -> str:
        """The application database the Cluster bootstraps."""
        return self.props.database

    @property
    def owner(self) -> str:
        """The role that owns :attr:`database`."""
        return self.props.owner

    @property
    def monitoring_namespace(self) -> str | None:
        """The namespace of the Prometheus that scrapes the instances, or None."""
        return self.props.monitoring_namespace

    @property
    def backup_server_name(self) -> str:
        """The Barman server name the Cluster archives under: ``<name>-<8 hex of its generation>``."""
        return f"{self.props.name}-{Fn.substr(self.generation.id, 0, 8)}"

    @property
    def object_store_secret_name(self) -> str:
        """Secret with the object store's ``ACCESS_KEY_ID``, ``ACCESS_SECRET_KEY`` and ``REGION``."""
        return f"{self.props.name}-object-store"

    @property
    def backup_egress(self) -> list[dict[str, Any]]:
        """Egress the instances need to archive to the object store (on top of the API server's)."""
        port = self.props.object_store.port
        if port in (443, 6443):
            return []
        return [{"ports": [{"protocol": "TCP", "port": port}]}]

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
                "backup": self.backup_spec(),
            },
        }

    def pod_monitor(self) -> dict[str, Any]:
        """The PodMonitor that scrapes every instance's exporter (port ``metrics``, 9187): the backup
        and WAL archiving metrics the backup alerts read. Created here, not by the Cluster's
        ``spec.monitoring.enablePodMonitor``, which the pinned operator deprecates ("you can create a
        PodMonitor manually": the Cluster CRD of cloudnative-pg chart 0.28.2); the selector is the
        one the operator used, the instances' ``cnpg.io/cluster`` and ``cnpg.io/podRole`` labels."""
        props = self.props
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": props.name, "namespace": props.namespace},
            "spec": {
                "selector": {"matchLabels": {**self.pod_labels, "cnpg.io/podRole": "instance"}},
                "podMetricsEndpoints": [{"port": "metrics"}],
            },
        }

    def backup_spec(self) -> dict[str, Any]:
        """``spec.backup``: Barman Cloud to the object store, with the retention in days.

        The operator turns it into barman-cloud command lines (barman-cloud v0.5.0, the library
        cloudnative-pg v1.29.1 pins: pkg/archiver/command.go, pkg/backup/backup.go): compression as
        ``--<name>``, encryption as ``-e``/``--encryption``, ``--endpoint-url``, ``--cloud-provider
        aws-s3``, then the destination and the server name (:attr:`backup_server_name`)."""
        store = self.props.object_store
        secret = self.object_store_secret_name

        def key(name: str) -> dict[str, str]:
            return {"name": secret, "key": name}

        def encryption() -> dict[str, str]:
            return {"encryption": store.encryption} if store.encryption else {}

        return {
            "retentionPolicy": f"{store.retention_days}d",
            "barmanObjectStore": {
                "destinationPath": store.destination(),
                "serverName": self.backup_server_name,
                "endpointURL": store.endpoint.rstrip("/"),
                "s3Credentials": {
                    "accessKeyId": key(ACCESS_KEY_ID),
                    "secretAccessKey": key(SECRET_ACCESS_KEY),
                    "region": key(REGION_KEY),
                },
                "wal": {"compression": store.wal_compression, **encryption(), "maxParallel": 2},
                "data": {"compression": store.data_compression, **encryption(), "jobs": 2},
            },
        }

    def scheduled_backup(self) -> dict[str, Any]:
        """The daily base backup; ``immediate`` takes the first one as soon as the Cluster exists,
        so a point in time is recoverable from the first day on. The Backup objects it creates are
        owned by the ScheduledBackup (``self``) and go with it on a destroy; the object store keeps
        the backups themselves."""
        props = self.props
        store = props.object_store
        return {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "ScheduledBackup",
            "metadata": {"name": f"{props.name}-daily", "namespace": props.namespace},
            "spec": {
                "schedule": backup_schedule(f"{store.field_prefix}_schedule", store.schedule),
                "cluster": {"name": props.name},
                "method": "barmanObjectStore",
                "immediate": True,
                "backupOwnerReference": "self",
            },
        }
