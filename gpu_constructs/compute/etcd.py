"""k3s's embedded etcd: scheduled snapshots, kept on each server and sent to an S3-compatible store.

One set of k3s settings (``etcd-snapshot-*``, ``etcd-s3-*``) for every stack that runs k3s servers:
proxmox-ha writes them into each server's cloud-init config.yaml, single-node's k3s-install.sh into
/etc/rancher/k3s/config.yaml (mode 0600, the S3 keys through its secrets file, never on a command line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gpu_constructs import validate
from gpu_constructs.backup import ObjectStore
from gpu_constructs.errors import ConfigError

SECRET_FLAGS = ("etcd-s3-access-key", "etcd-s3-secret-key")
"""The settings that carry the S3 key pair (references to sensitive variables)."""


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
    """Snapshots kept per server (and in S3): 28 at six-hourly is a week."""
    s3: EtcdS3 | None = None

    def check(self) -> None:
        validate.cron("etcd_snapshot_cron", self.schedule_cron)
        validate.int_range("etcd_snapshot_retention", self.retention, 1, 1000)
        if self.s3:
            self.s3.check()

    def k3s_flags(self) -> dict[str, Any]:
        flags: dict[str, Any] = {
            "etcd-snapshot-schedule-cron": self.schedule_cron,
            "etcd-snapshot-retention": self.retention,
        }
        if self.s3:
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
        return flags
