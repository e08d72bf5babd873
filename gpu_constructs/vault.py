"""Vault: the Helm release (standalone or HA raft), and its bootstrap from the k3s server.

Unsealing survives restarts by Vault's own auto-unseal with an AWS KMS key (``AwsKmsSeal``), not by
an unseal step in the cluster: any in-cluster unsealer needs the unseal key inside the cluster or on
its host, next to the data it protects, so the seal would protect nothing; with a KMS seal the key
that wraps Vault's root key never leaves KMS, and a server that restarts (a reboot, an eviction, an
upgrade) unseals itself as soon as KMS answers. Without a seal the servers use Shamir keys, held by
people, and stay sealed after every restart until enough holders unseal them (unseal.sh).

The bootstrap initializes and unseals Vault and configures Kubernetes auth, the secret engines, the
application's policy and role. With a PostgreSQL database it also connects the database engine to
it, so the application can get short-lived credentials from Vault. It runs on the k3s server over
SSH, so the unseal key, the root token and the database password Vault uses land in a root-only file
on that host or only in Vault, and never in Terraform state or the synthesized JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdktf import DataResource
from constructs import Construct

from gpu_constructs import helm, validate, versions
from gpu_constructs.backup import ObjectStore
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.database import ObjectStoreAccess, Postgres
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import ScriptRun, SshHost, kube_secret_step, run_scripts, script_literal

NAMESPACE = "vault"
OPERATIONS_CONFIG_MAP = "vault-operations"
SEAL_SECRET = "vault-seal"
"""Secret with the AWS credentials of the KMS seal (written by kube-secret.sh)."""
SNAPSHOT_NAME = "vault-snapshot"
"""The raft snapshot CronJob, its ServiceAccount, Vault policy and Kubernetes auth role."""
SNAPSHOT_CRONJOB = "vault-backup"
"""The CronJob: named ``<name>-backup``, so the backup alerts (BackupTooOld, BackupJobFailed in
monitoring/rules/platform.yaml, from kube-state-metrics' kube_cronjob_* and kube_job_*) watch it."""
SNAPSHOT_SECRET = "vault-object-store"
"""Secret with the object store's keys in Vault's namespace (written by kube-secret.sh)."""
STANDALONE_NODE_ID = "vault-0"
"""Raft node id of the standalone server (its pod's name, as the HA servers' ids are theirs)."""


def secret_paths(environment: str, database_role: str) -> dict[str, str]:
    """The seed's paths as the endpoints the application's policy grants (vault-bootstrap.sh)."""
    return {
        "app": f"secret/data/{environment}/app",
        "database": f"database/{environment}/creds/{database_role}",
        "pki": "pki/issue/ffe",
        "transit_encrypt": "transit/encrypt/ffe",
        "transit_decrypt": "transit/decrypt/ffe",
    }


@dataclass(frozen=True)
class AwsKmsSeal:
    """Vault's auto-unseal with an AWS KMS key (the ``awskms`` seal): reachable from any host with
    outbound HTTPS, so it fits a machine outside AWS. The key id and region go into the server's
    configuration; the access keys are references to sensitive variables, written into the Secret
    ``vault-seal`` over SSH and read by the servers as environment variables, never into values.
    The IAM user needs kms:Encrypt, kms:Decrypt and kms:DescribeKey on the key."""

    region: str
    kms_key_id: str
    """Key id, ARN or alias (``alias/vault-unseal``)."""
    access_key_id: str
    secret_access_key: str

    def __post_init__(self) -> None:
        for name, value in (
            ("vault_kms_access_key_id", self.access_key_id),
            ("vault_kms_secret_access_key", self.secret_access_key),
        ):
            if not validate.is_reference(value):
                raise ConfigError(
                    name, "<literal>", "pass a reference to a sensitive variable, never the key itself"
                )

    def stanza(self) -> str:
        return f'seal "awskms" {{\n  region     = "{self.region}"\n  kms_key_id = "{self.kms_key_id}"\n}}\n'


@dataclass(frozen=True)
class VaultSnapshots:
    """Scheduled raft snapshots (``vault operator raft snapshot save``) to the object store that holds
    the database's backups, under ``<object_store.path>/vault/``."""

    object_store: ObjectStore
    access: ObjectStoreAccess
    """The object store's keys; written into Vault's namespace as the Secret ``vault-object-store``."""
    schedule: str = "30 2 * * *"
    """Five-field cron, UTC."""
    retention_days: int = 30
    """Snapshots older than this are deleted after each new one is uploaded."""
    after: tuple[Any, ...] = ()
    """Steps the Secret's step waits for. Each Secret's step has a secrets file of its own
    (:func:`~gpu_constructs.hostexec.kube_secret_step`), so one that writes the same keys from the
    same host needs no order."""

    def __post_init__(self) -> None:
        validate.cron("vault_snapshot_schedule", self.schedule)
        validate.int_range("vault_snapshot_retention_days", self.retention_days, 1, 3650)

    @property
    def prefix(self) -> str:
        return f"{self.object_store.path}/vault"


@dataclass(frozen=True)
class VaultProps:
    cluster: GpuCluster
    environment: str
    """dev, staging or production: the ``<env>`` of the secret paths."""
    storage_class: str
    """StorageClass of Vault's data volumes."""
    ha: bool = False
    """Three raft replicas instead of one standalone server."""
    replicas: int = 3
    """Raft replicas when ``ha`` is on: an odd number, at least 3."""
    storage_size: str = "10Gi"
    node_count: int | None = None
    """Nodes the Vault servers can run on. The chart's required pod anti-affinity (server.affinity,
    topologyKey kubernetes.io/hostname) allows one server per node, so ``replicas`` above this stay
    Pending. None where the node count is not known at synth (autoscaled node groups)."""
    bootstrap_host: SshHost | None = None
    """Host with ``k3s kubectl`` that runs the bootstrap; None leaves init and unseal to an operator."""
    seal: AwsKmsSeal | None = None
    """Auto-unseal; None: Shamir keys, and a restarted server stays sealed until unsealed by hand."""
    secret_host: SshHost | None = None
    """Host with ``k3s kubectl`` that writes the seal's credentials Secret (default ``bootstrap_host``);
    without either, an operator creates the Secret ``vault/vault-seal`` before Vault starts."""
    app_namespace: str = "ffe"
    app_service_account: str = "ffe-backend"
    policy_name: str = "ffe-backend"
    database: Postgres | None = None
    """PostgreSQL that the bootstrap connects the database engine to (role ``database_role``);
    without a ``bootstrap_host`` that is left to an operator, like init and unseal."""
    database_role: str = "ffe"
    """The database engine's connection and role: credentials at ``database/<env>/creds/<role>``."""
    snapshots: VaultSnapshots | None = None
    """Scheduled raft snapshots to an object store; None takes none."""
    chart_version: str = versions.VAULT_CHART.version
    vault_version: str = versions.VAULT.version
    aws_cli_image: str = versions.AWS_CLI_IMAGE.version
    depends_on: tuple[Any, ...] = ()
    service_monitor: bool = False
    """A ServiceMonitor for Vault's metrics (``vault_core_unsealed`` for the VaultSealed alert); needs
    the Prometheus Operator's CRDs, so the release must come after the monitoring release."""
    """What the release waits for besides the cluster, e.g. the release that creates ``storage_class``."""

    def __post_init__(self) -> None:
        validate.one_of("environment", self.environment, ("dev", "staging", "production"))
        if self.ha and (self.replicas < 3 or self.replicas % 2 == 0):
            raise ConfigError(
                "vault_replicas",
                self.replicas,
                "Vault raft needs an odd count of at least 3 (3 or 5) to keep a quorum",
            )
        if self.ha and self.node_count is not None and self.replicas > self.node_count:
            raise ConfigError(
                "vault_replicas",
                self.replicas,
                f"the chart places one Vault server per node and the cluster has {self.node_count}; "
                "add nodes or set vault_ha=False (standalone Vault on one node)",
            )
        validate.storage_size("vault storage_size", self.storage_size)
        validate.k8s_name("app_namespace", self.app_namespace)
        validate.k8s_name("database_role", self.database_role)


class Vault(Construct):
    """HashiCorp Vault with the agent injector, and its one-time bootstrap."""

    namespace = NAMESPACE

    def __init__(self, scope: Construct, id: str, *, props: VaultProps) -> None:
        super().__init__(scope, id)
        self.props = props
        self.seal_secret = None
        seal_host = props.secret_host or props.bootstrap_host
        if props.seal is not None and seal_host is not None:
            seal = props.seal
            self.seal_secret = kube_secret_step(
                self,
                "seal-secret",
                host=seal_host,
                namespace=NAMESPACE,
                secret_name=SEAL_SECRET,
                values={
                    "AWS_ACCESS_KEY_ID": seal.access_key_id,
                    "AWS_SECRET_ACCESS_KEY": seal.secret_access_key,
                },
                variables={
                    "AWS_ACCESS_KEY_ID": "vault_kms_access_key_id",
                    "AWS_SECRET_ACCESS_KEY": "vault_kms_secret_access_key",
                },
                cluster=props.cluster,
            )
        self.release = helm.release(
            self,
            "vault",
            cluster=props.cluster,
            name="vault",
            chart="vault",
            repository=versions.REPO_HASHICORP,
            version=props.chart_version,
            namespace=NAMESPACE,
            values=self.values(),
            depends_on=[*props.depends_on, *([self.seal_secret] if self.seal_secret is not None else [])],
            # A new Vault is sealed and not Ready until the bootstrap unseals it.
            wait=False,
        )
        # The operators' guide and scripts, where whoever holds the keys finds them: in the cluster.
        self.operations = helm.manifests_release(
            self,
            "operations",
            cluster=props.cluster,
            name=OPERATIONS_CONFIG_MAP,
            namespace=NAMESPACE,
            manifests=[self.operations_config_map()],
            depends_on=[self.release],
        )
        self.bootstrap = None
        if props.bootstrap_host is not None:
            self.bootstrap = run_scripts(
                self,
                "bootstrap",
                host=props.bootstrap_host,
                runs=[
                    ScriptRun(
                        "vault-bootstrap.sh",
                        {
                            "VAULT_NAMESPACE": NAMESPACE,
                            "VAULT_PODS": " ".join(self.pod_names),
                            "ENVIRONMENT": props.environment,
                            "APP_NAMESPACE": props.app_namespace,
                            "APP_SERVICE_ACCOUNT": props.app_service_account,
                            "POLICY_NAME": props.policy_name,
                            "DB_ROLE": props.database_role,
                            "SEAL": "awskms" if props.seal is not None else "shamir",
                            **({"SNAPSHOT_SERVICE_ACCOUNT": SNAPSHOT_NAME} if props.snapshots else {}),
                            **self._database_env(),
                        },
                    )
                ],
                cluster=props.cluster,
                depends_on=[self.release, *([props.database.release] if props.database else [])],
                # Again after every change of the Vault release (a new image or seal restarts the
                # server, which may need unsealing or a seal migration) and whenever the database
                # release is re-created (a new Cluster has no "vault" role).
                replaced_with=[
                    f"helm_release.{self.release.friendly_unique_id}",
                    *(
                        [f"helm_release.{props.database.release.friendly_unique_id}.id"]
                        if props.database
                        else []
                    ),
                ],
            )

        self.snapshot_secret: DataResource | None = None
        self.snapshot_release: helm.Release | None = None
        if props.snapshots is not None:
            self._snapshots(props.snapshots)

    def _snapshots(self, snapshots: VaultSnapshots) -> None:
        access = snapshots.access
        self.snapshot_secret = access.secret_step(
            self,
            "snapshot-secret",
            namespace=NAMESPACE,
            secret_name=SNAPSHOT_SECRET,
            region=snapshots.object_store.region,
            cluster=self.props.cluster,
            depends_on=list(snapshots.after),
        )
        self.snapshot_release = helm.manifests_release(
            self,
            "snapshots",
            cluster=self.props.cluster,
            name=SNAPSHOT_NAME,
            namespace=NAMESPACE,
            manifests=self.snapshot_manifests(snapshots),
            # The policy and role the CronJob logs in with are written by the bootstrap.
            depends_on=[self.release, self.snapshot_secret, *([self.bootstrap] if self.bootstrap else [])],
        )

    def snapshot_manifests(self, snapshots: VaultSnapshots) -> list[dict[str, Any]]:
        """ServiceAccount ``vault-snapshot`` and CronJob ``vault-backup``: a raft snapshot saved by the
        Vault CLI into an emptyDir, then uploaded and pruned by the AWS CLI (vault-snapshot.sh)."""
        store = snapshots.object_store
        labels = {"app.kubernetes.io/name": "vault", "app.kubernetes.io/component": "snapshot"}
        script = script_literal("vault-snapshot.sh")
        work = [{"name": "work", "mountPath": "/work"}, {"name": "tmp", "mountPath": "/tmp"}]
        security = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        resources = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
        common_env = [{"name": "SNAPSHOT_DIR", "value": "/work"}, {"name": "HOME", "value": "/tmp"}]
        save = {
            "name": "save",
            "image": f"hashicorp/vault:{self.props.vault_version}",
            "command": ["/bin/sh", "-ec", script, "vault-snapshot", "save"],
            "env": [
                *common_env,
                # With raft HA, the chart's vault-active Service selects the leader only.
                {
                    "name": "VAULT_ADDR",
                    "value": f"http://vault-active.{NAMESPACE}.svc:8200" if self.props.ha else self.address,
                },
                {"name": "ROLE", "value": SNAPSHOT_NAME},
            ],
            "volumeMounts": work,
            "securityContext": security,
            "resources": resources,
        }
        secret_env = [
            {"name": name, "valueFrom": {"secretKeyRef": {"name": SNAPSHOT_SECRET, "key": key}}}
            for name, key in (
                ("AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID"),
                ("AWS_SECRET_ACCESS_KEY", "ACCESS_SECRET_KEY"),
                ("AWS_DEFAULT_REGION", "REGION"),
            )
        ]
        upload = {
            "name": "upload",
            "image": self.props.aws_cli_image,
            "command": ["/bin/sh", "-ec", script, "vault-snapshot", "upload"],
            "env": [
                *common_env,
                {"name": "BUCKET", "value": store.bucket},
                {"name": "PREFIX", "value": snapshots.prefix},
                {"name": "ENDPOINT", "value": store.endpoint},
                {"name": "ENCRYPTION", "value": store.encryption},
                {"name": "RETENTION_DAYS", "value": str(snapshots.retention_days)},
                *secret_env,
            ],
            "volumeMounts": work,
            "securityContext": security,
            "resources": resources,
        }
        pod = {
            "metadata": {"labels": labels},
            "spec": {
                "serviceAccountName": SNAPSHOT_NAME,
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 100,
                    "runAsGroup": 1000,
                    "fsGroup": 1000,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "initContainers": [save],
                "containers": [upload],
                "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
            },
        }
        return [
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": SNAPSHOT_NAME, "namespace": NAMESPACE, "labels": labels},
            },
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": SNAPSHOT_CRONJOB, "namespace": NAMESPACE, "labels": labels},
                "spec": {
                    "schedule": snapshots.schedule,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Forbid",
                    "startingDeadlineSeconds": 3600,
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {
                        "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 1800, "template": pod}
                    },
                },
            },
        ]

    def _database_env(self) -> dict[str, str]:
        database = self.props.database
        if database is None:
            return {}
        return {
            "DB_NAMESPACE": database.namespace,
            "DB_CLUSTER": database.name,
            "DB_NAME": database.database,
            "DB_OWNER": database.owner,
        }

    @property
    def policy_name(self) -> str:
        """The Vault policy and Kubernetes auth role the application logs in with."""
        return self.props.policy_name

    @property
    def database(self) -> Postgres | None:
        """The PostgreSQL whose credentials Vault issues, where it has one."""
        return self.props.database

    @property
    def pod_names(self) -> list[str]:
        count = self.props.replicas if self.props.ha else 1
        return [f"vault-{index}" for index in range(count)]

    @property
    def address(self) -> str:
        return f"http://vault.{NAMESPACE}.svc:8200"

    @property
    def secret_paths(self) -> dict[str, str]:
        return secret_paths(self.props.environment, self.props.database_role)

    @property
    def connects_database(self) -> bool:
        """Whether the bootstrap connects the database engine to ``props.database``."""
        return self.props.database is not None and self.props.bootstrap_host is not None

    def database_uri_template(self) -> str | None:
        """A Vault agent template rendering fresh database credentials as a connection URI."""
        database = self.props.database
        if database is None or not self.connects_database:
            return None
        host = f"{database.service}.{database.namespace}.svc"
        return (
            f'{{{{- with secret "{self.secret_paths["database"]}" -}}}}'
            f"postgresql://{{{{ .Data.username }}}}:{{{{ .Data.password }}}}@{host}:5432/"
            f"{database.database}?sslmode=require"
            "{{- end -}}"
        )

    def operations_config_map(self) -> dict[str, Any]:
        """ConfigMap ``vault-operations``: the init/unseal guide and the scripts it refers to."""
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": OPERATIONS_CONFIG_MAP,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": "vault", "app.kubernetes.io/component": "operations"},
            },
            "data": {
                "README.md": self.operations_guide(),
                # Terraform would read "${" in a script as its own interpolation.
                "init.sh": script_literal("vault-init.sh"),
                "unseal.sh": script_literal("vault-unseal.sh"),
            },
        }

    def _unseal_guide(self, get: str) -> str:
        if self.props.seal is not None:
            return (
                'Nothing to do: the servers unseal themselves with the AWS KMS key (seal "awskms" in\n'
                f"their configuration, credentials from the Secret {NAMESPACE}/{SEAL_SECRET}) as soon as\n"
                "they start, after a reboot too. A server that stays sealed cannot reach KMS: check\n"
                "the key, the IAM user's kms:Encrypt, kms:Decrypt and kms:DescribeKey, the Secret and\n"
                f"`kubectl logs -n {NAMESPACE} <pod>`. New credentials reach a server when it restarts\n"
                f"(`kubectl delete pod -n {NAMESPACE} <pod>`, one at a time)."
            )
        return (
            "A restarted Vault pod is sealed until enough key holders unseal it. Each holder runs\n"
            "this from a terminal that reaches the cluster and types one key at Vault's hidden prompt:\n\n"
            f"    {get}='{{.data.unseal\\.sh}}' > unseal.sh && bash unseal.sh\n\n"
            'On the k3s server itself: `KUBECTL="sudo k3s kubectl" bash unseal.sh`.'
        )

    def operations_guide(self) -> str:
        props = self.props
        get = f"kubectl get configmap -n {NAMESPACE} {OPERATIONS_CONFIG_MAP} -o jsonpath"
        if props.bootstrap_host is not None and props.seal is not None:
            init = (
                "The stack's bootstrap initialized Vault with the AWS KMS seal and one recovery key\n"
                "share, and wrote the recovery key and the root token to /root/vault-init.json on the\n"
                "k3s server (mode 0600), nowhere else. A recovery key cannot decrypt anything; it\n"
                "authorizes rekeys and root-token generation. For production: re-key the recovery\n"
                "keys (`vault operator rekey -target=recovery -init -key-shares=5 -key-threshold=3`),\n"
                "hand them to their holders, revoke the root token and delete the file."
            )
        elif props.bootstrap_host is not None:
            init = (
                "The stack's bootstrap initialized Vault with one key share and wrote the key and the\n"
                "root token to /root/vault-init.json on the k3s server (mode 0600), nowhere else.\n"
                "For production: re-key with more shares (`vault operator rekey -init -key-shares=5\n"
                "-key-threshold=3`), hand the keys to their holders, revoke the root token\n"
                "(`vault token revoke <token>`) and delete the file."
            )
        else:
            init = (
                "Vault is not initialized by the stack. Initialize it once, from a terminal that\n"
                "reaches the cluster; the keys and root token are printed there only:\n\n"
                f"    {get}='{{.data.init\\.sh}}' > init.sh && KEY_SHARES=5 KEY_THRESHOLD=3 bash init.sh"
            )
        return (
            f"# Vault operations ({props.environment})\n\n"
            f"Server pods: {', '.join(self.pod_names)} in namespace {NAMESPACE}.\n\n"
            f"## Initialize\n\n{init}\n\n"
            f"## Unseal after a restart\n\n{self._unseal_guide(get)}\n\n"
            f"{self._snapshot_guide()}"
            "## Check\n\n"
            f"    kubectl exec -n {NAMESPACE} {self.pod_names[0]} -- vault status\n"
        )

    def _snapshot_guide(self) -> str:
        snapshots = self.props.snapshots
        if snapshots is None:
            return ""
        store = snapshots.object_store
        seal = (
            "the AWS KMS key of the seal must still exist: without it no snapshot can be read"
            if self.props.seal is not None
            else "unseal with the keys of the Vault that took the snapshot"
        )
        return (
            "## Snapshots and restore\n\n"
            f"The CronJob {SNAPSHOT_CRONJOB} saves a raft snapshot at '{snapshots.schedule}' (UTC) to\n"
            f"s3://{store.bucket}/{snapshots.prefix}/ and deletes those older than "
            f"{snapshots.retention_days} days. Take one now:\n\n"
            f"    kubectl -n {NAMESPACE} create job --from=cronjob/{SNAPSHOT_CRONJOB} "
            f"{SNAPSHOT_CRONJOB}-now\n\n"
            "Restore into a running, unsealed Vault (a rebuilt one initialized first), as root:\n\n"
            f"    kubectl cp vault.snap {NAMESPACE}/{self.pod_names[0]}:/tmp/vault.snap\n"
            f"    kubectl exec -n {NAMESPACE} {self.pod_names[0]} -- sh -c 'VAULT_TOKEN=<root token> "
            "vault operator raft snapshot restore -force /tmp/vault.snap'\n\n"
            f"Afterwards the snapshot's tokens and keys apply: {seal}.\n\n"
        )

    def _config(self, storage: str) -> str:
        # Telemetry (developer.hashicorp.com/vault/docs/configuration/telemetry): Prometheus metrics at
        # /v1/sys/metrics?format=prometheus, readable without a token on this listener, so the
        # ServiceMonitor (vault-helm 0.34.1 serverTelemetry) scrapes vault_core_unsealed.
        listener = (
            'listener "tcp" {\n  tls_disable     = 1\n  address         = "[::]:8200"\n'
            '  cluster_address = "[::]:8201"\n'
            "  telemetry {\n    unauthenticated_metrics_access = true\n  }\n}\n"
        )
        telemetry = (
            'telemetry {\n  prometheus_retention_time = "24h"\n  disable_hostname          = true\n}\n'
        )
        seal = self.props.seal.stanza() if self.props.seal is not None else ""
        return f"ui = true\n\n{listener}\n{storage}\n{telemetry}\n{seal}"

    def _raft_migration(self, image: dict[str, str]) -> dict[str, Any]:
        """The init container that copies an earlier standalone server's file storage into raft
        storage before the server starts (vault-raft-migrate.sh); a no-op once the volume holds raft."""
        return {
            "name": "raft-migrate",
            "image": f"{image['repository']}:{image['tag']}",
            "command": ["/bin/sh", "-ec", script_literal("vault-raft-migrate.sh"), "vault-raft-migrate"],
            "env": [
                {"name": "DATA_DIR", "value": "/vault/data"},
                {"name": "NODE_ID", "value": STANDALONE_NODE_ID},
                {"name": "CLUSTER_ADDR", "value": f"https://{STANDALONE_NODE_ID}.vault-internal:8201"},
            ],
            "volumeMounts": [{"name": "data", "mountPath": "/vault/data"}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        }

    def values(self) -> dict[str, Any]:
        props = self.props
        image = {"repository": "hashicorp/vault", "tag": props.vault_version}
        server: dict[str, Any] = {
            "image": image,
            "dataStorage": {"enabled": True, "size": props.storage_size, "storageClass": props.storage_class},
            # The audit log goes to stdout (vault-bootstrap.sh), where the kubelet rotates it. The
            # audit volume stays: a StatefulSet's volumeClaimTemplates cannot change, so removing it
            # would fail the upgrade of every Vault installed with it; it keeps an earlier file log.
            "auditStorage": {"enabled": True, "size": "5Gi", "storageClass": props.storage_class},
            "resources": {
                "requests": {"cpu": "250m", "memory": "256Mi"},
                "limits": {"memory": "512Mi"},
            },
            # vault-helm 0.34.1 defaults to OnDelete (values.yaml updateStrategyType), with which a new
            # image, seal or configuration is installed and never runs until someone deletes the pod.
            # RollingUpdate replaces the pods one at a time, highest ordinal first, each only after
            # the one before is Ready (the chart's readiness probe: unsealed); the config checksum
            # annotation makes a configuration change a pod template change.
            "updateStrategyType": "RollingUpdate",
            "includeConfigAnnotation": True,
        }
        if props.ha:
            server["standalone"] = {"enabled": False}
            server["ha"] = {
                "enabled": True,
                "replicas": props.replicas,
                "raft": {"enabled": True, "setNodeId": True},
            }
            # The chart's own configuration (values.yaml of vault-helm 0.34.1: the tcp listener,
            # the storage, and for raft the Kubernetes service registration) with telemetry and the
            # seal added; the chart takes the configuration whole, as one string.
            server["ha"]["raft"]["config"] = self._config(
                'storage "raft" {\n  path = "/vault/data"\n}\n\nservice_registration "kubernetes" {}\n'
            )
        else:
            # One server on integrated (raft) storage: the chart's standalone mode (one replica, the
            # data volume at /vault/data) with a raft stanza instead of its default 'storage "file"'.
            # vault-helm 0.34.1 takes server.standalone.config whole (_helpers.tpl "vault.config") and
            # sets VAULT_CLUSTER_ADDR in every mode (server-statefulset.yaml), which raft needs. The
            # node id is fixed: it names the only voter of the raft configuration, also the one
            # vault-raft-migrate.sh writes for a server that ran on file storage before.
            server["standalone"] = {
                "enabled": True,
                "config": self._config(
                    f'storage "raft" {{\n  path    = "/vault/data"\n  node_id = "{STANDALONE_NODE_ID}"\n}}\n'
                ),
            }
            server["ha"] = {"enabled": False}
            server["extraInitContainers"] = [self._raft_migration(image)]
        if props.seal is not None:
            server["extraSecretEnvironmentVars"] = [
                {"envName": name, "secretName": SEAL_SECRET, "secretKey": name}
                for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ]
        values: dict[str, Any] = {
            "global": {"enabled": True},
            # The application's pods need their Vault agent: with the chart's `failurePolicy:
            # Ignore` (vault-helm 0.34.1 values.yaml, injector.webhook) a pod created while the
            # injector is away (a drain deletes both) is admitted without it and never repaired.
            # `Fail` makes its ReplicaSet retry until the injector is back; scoped to the
            # application's namespace, it never blocks another namespace, nor the injector's own
            # pods in Vault's (the chart's objectSelector also leaves them out).
            "injector": {
                "enabled": True,
                "agentImage": image,
                "webhook": {
                    "failurePolicy": "Fail",
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": props.app_namespace}
                    },
                },
            },
            "server": server,
            "ui": {"enabled": True},
        }
        if props.service_monitor:
            values["serverTelemetry"] = {"serviceMonitor": {"enabled": True}}
        return values
