"""k3s's embedded etcd: scheduled snapshots, kept on each server and sent to an S3-compatible store.

One set of k3s settings (``etcd-snapshot-*``, ``etcd-s3-*``) for every stack that runs k3s servers.
single-node's k3s-install.sh writes them into /etc/rancher/k3s/config.yaml (mode 0600, the S3 keys
through its secrets file, never on a command line). proxmox-ha's servers boot from cloud-init user
data, which Terraform keeps in its state and Proxmox in its snippet storage and on each VM's
cloud-init drive: there the S3 target and keys live in the kube-system Secret :data:`CONFIG_SECRET`
instead (k3s' ``etcd-s3-config-secret``), written from stdin by :meth:`EtcdSnapshots.secret_step`, and
the servers' config names only the Secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cdktf import DataResource
from constructs import Construct

from gpu_constructs import validate
from gpu_constructs.backup import ObjectStore
from gpu_constructs.cluster import GpuCluster
from gpu_constructs.errors import ConfigError
from gpu_constructs.hostexec import SshHost, kube_secret_step

SECRET_FLAGS = ("etcd-s3-access-key", "etcd-s3-secret-key")
"""The settings that carry the S3 key pair (references to sensitive variables)."""
CONFIG_SECRET = "k3s-etcd-s3"
"""The kube-system Secret k3s reads the S3 settings from with ``etcd-s3-config-secret``."""


@dataclass(frozen=True)
class EtcdS3:
    """An S3-compatible target for the etcd snapshots (k3s's etcd-s3-* flags)."""

    endpoint: str
    """Host and optional port, no scheme: s3.amazonaws.com, minio.example.com:9000."""
    bucket: str
    access_key: str
    """A reference to a sensitive variable."""
    secret_key: str
    """A reference to a sensitive variable, never the key itself."""
    region: str = "us-east-1"
    folder: str = ""
    insecure: bool = False
    """Plain HTTP (a lab MinIO without TLS)."""

    @classmethod
    def from_object_store(cls, store: ObjectStore, access_key: str, secret_key: str) -> EtcdS3:
        """The bucket the other backups go to, with the snapshots under ``<store.path>/k3s``."""
        parts = urlsplit(store.endpoint)
        return cls(
            endpoint=parts.netloc,
            bucket=store.bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=store.region,
            folder=f"{store.path}/k3s",
            insecure=parts.scheme == "http",
        )

    def check(self) -> None:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?", self.endpoint):
            raise ConfigError(
                "etcd_s3.endpoint", self.endpoint, "give host[:port] without a scheme, e.g. s3.amazonaws.com"
            )
        if not validate.is_reference(self.bucket) and not re.fullmatch(
            r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket
        ):
            raise ConfigError("etcd_s3.bucket", self.bucket, "give an S3 bucket name, e.g. etcd-snapshots")
        for name, value in (("access_key", self.access_key), ("secret_key", self.secret_key)):
            if not validate.is_reference(value):
                raise ConfigError(
                    f"etcd_s3.{name}", "(hidden)", "pass a sensitive variable reference, never the key itself"
                )
        if self.folder and not re.fullmatch(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*", self.folder):
            raise ConfigError("etcd_s3.folder", self.folder, "give a relative folder such as proxmox-ha")


@dataclass(frozen=True)
class EtcdSnapshots:
    """Scheduled snapshots of the embedded etcd, kept on each server and, with ``s3``, off the node."""

    schedule_cron: str = "0 */6 * * *"
    retention: int = 28
    """Snapshots each server keeps on its disk (28 at six-hourly is a week), and per server in S3
    (:attr:`s3_retention`)."""
    s3: EtcdS3 | None = None
    servers: int = 1
    """Servers that send their snapshots to the one S3 folder; S3 keeps :attr:`s3_retention` of them."""
    in_cluster_secret: bool = False
    """Keep the S3 target and keys in the kube-system Secret :data:`CONFIG_SECRET` rather than in the
    servers' config: for servers whose config Terraform state holds (cloud-init user data)."""

    def check(self) -> None:
        validate.cron("etcd_snapshot_cron", self.schedule_cron)
        validate.int_range("etcd_snapshot_retention", self.retention, 1, 1000)
        validate.int_range("servers", self.servers, 1, 99)
        if self.s3:
            self.s3.check()

    @property
    def where(self) -> str:
        """:attr:`~gpu_constructs.compute.base.PlatformFacts.etcd_snapshots`: ``"s3"`` or ``"node"``."""
        return "s3" if self.s3 is not None else "node"

    @property
    def s3_retention(self) -> int:
        """What k3s' ``etcd-s3-retention`` must be for S3 to hold :attr:`retention` snapshots of each
        server. S3 retention is its own setting (k3s v1.33.4+k3s1 and later, default 5, docs.k3s.io
        "etcd-snapshot", S3 Retention), not ``etcd-snapshot-retention`` (k3s-io/k3s#13769: "the new
        release only looks at the etcd-s3-retention value, which defaults to 5"), and it counts every server's
        snapshots together: after each upload a server lists ``<folder>/<etcd-snapshot-name>``, which
        every server's ``etcd-snapshot-<node>-<time>`` matches, and deletes all but the newest
        (pkg/etcd/snapshot.go ``SnapshotRetention(ctx, EtcdSnapshotName)``, pkg/etcd/s3/s3.go
        ``Client.SnapshotRetention``; k3s-io/k3s#8099, "regardless of the node name")."""
        return self.retention * self.servers

    def k3s_flags(self) -> dict[str, Any]:
        flags: dict[str, Any] = {
            "etcd-snapshot-schedule-cron": self.schedule_cron,
            "etcd-snapshot-retention": self.retention,
        }
        if self.s3 and self.in_cluster_secret:
            # k3s reads the Secret only when no other etcd-s3-* setting differs from its default,
            # and warns and ignores it otherwise (pkg/etcd/s3/s3.go, Controller.GetClient):
            # the config names the Secret and nothing else of S3.
            flags.update({"etcd-s3": True, "etcd-s3-config-secret": CONFIG_SECRET})
        elif self.s3:
            flags.update(
                {
                    "etcd-s3": True,
                    "etcd-s3-endpoint": self.s3.endpoint,
                    "etcd-s3-bucket": self.s3.bucket,
                    "etcd-s3-region": self.s3.region,
                    "etcd-s3-access-key": self.s3.access_key,
                    "etcd-s3-secret-key": self.s3.secret_key,
                }
            )
            if self.s3.folder:
                flags["etcd-s3-folder"] = self.s3.folder
            if self.s3.insecure:
                flags["etcd-s3-insecure"] = True
            # With the rest of the S3 settings: k3s reads etcd-s3-retention from config.yaml, the
            # server's and `k3s etcd-snapshot`'s (k3s-io/k3s#12669, "Applying snapshot retention=3 to
            # snapshots stored in s3://"; pkg/cli/cmds/etcd_snapshot.go). A k3s older than the flag
            # logs "Unknown flag --etcd-s3-retention found in config.yaml, skipping" and starts
            # (pkg/configfilearg/parser.go).
            flags["etcd-s3-retention"] = self.s3_retention
        return flags

    def secret_data(self) -> dict[str, str]:
        """The :data:`CONFIG_SECRET` keys, as k3s reads them (pkg/etcd/s3/config_secret.go,
        getConfigFromSecret: the etcd-s3-* flag names as data keys, booleans as strings)."""
        if self.s3 is None:
            return {}
        data = {
            "etcd-s3-endpoint": self.s3.endpoint,
            "etcd-s3-bucket": self.s3.bucket,
            "etcd-s3-region": self.s3.region,
            "etcd-s3-access-key": self.s3.access_key,
            "etcd-s3-secret-key": self.s3.secret_key,
            "etcd-s3-insecure": str(self.s3.insecure).lower(),
            # Only in the Secret: in the servers' config, any etcd-s3-* setting but the Secret's
            # name could make k3s ignore the Secret (pkg/etcd/s3/s3.go, GetClient).
            "etcd-s3-retention": str(self.s3_retention),
        }
        if self.s3.folder:
            data["etcd-s3-folder"] = self.s3.folder
        return data

    def secret_step(
        self,
        scope: Construct,
        construct_id: str,
        *,
        host: SshHost,
        variables: Mapping[str, str],
        cluster: GpuCluster,
        depends_on: Sequence[Any] = (),
    ) -> DataResource:
        """The step that writes :data:`CONFIG_SECRET` on ``host`` (a server with k3s' kubectl),
        every value through the uploaded secrets file (kube-secret.sh): nothing of it is in the
        state but the keys' hashes, which re-run the step when a key changes. ``variables`` names
        the Terraform variable of each key, for the script's errors.

        Until the Secret exists (the servers start before the step), a scheduled snapshot is kept
        locally and its S3 upload skipped with a warning (pkg/etcd/snapshot.go, ErrNoConfigSecret);
        `make verify` finds no S3 snapshot then. A restore cannot read the Secret, the API server
        being down ("cannot use S3 config secret when restoring snapshot"): the runbook passes the
        S3 flags on its command line, the keys in the environment."""
        return kube_secret_step(
            scope,
            construct_id,
            host=host,
            namespace="kube-system",
            secret_name=CONFIG_SECRET,
            values=self.secret_data(),
            variables=variables,
            cluster=cluster,
            depends_on=depends_on,
        )
