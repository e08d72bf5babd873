"""Where backups go: an S3-compatible object store, its settings and their checks.

The same settings work with AWS S3, MinIO, Cloudflare R2 and Backblaze B2: an endpoint URL, a bucket,
a path inside it and a signing region. The access key pair is never a setting: it comes from
sensitive Terraform variables and is written into the cluster as a Secret (see ``database.py``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gpu_constructs import validate
from gpu_constructs.errors import ConfigError

# What CloudNativePG's Cluster CRD accepts (barman-cloud v0.5.0 pkg/api/config.go, the enums of
# WalBackupConfiguration and DataBackupConfiguration), i.e. what barman-cloud-wal-archive and
# barman-cloud-backup are given as ``--<compression>``.
WAL_COMPRESSIONS = ("bzip2", "gzip", "lz4", "snappy", "xz", "zstd")
DATA_COMPRESSIONS = ("bzip2", "gzip", "snappy")
# Server-side encryption of every object (barman-cloud ``-e``/``--encryption``); "" leaves it to the
# bucket's own policy, for stores that refuse the header (MinIO without a KMS) or always encrypt (R2).
ENCRYPTIONS = ("AES256", "aws:kms", "")

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html (general purpose buckets)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_PATH = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_REGION = re.compile(r"^[a-z0-9-]{1,32}$")


def bucket_name(field: str, value: str) -> str:
    """A bucket name S3 accepts (the strictest of the providers: R2 and B2 allow a subset of it)."""
    fix = "use 3-63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    if not _BUCKET.match(value):
        raise ConfigError(field, value, fix)
    if ".." in value or ".-" in value or "-." in value:
        raise ConfigError(field, value, "S3 refuses '..', '.-' and '-.' in a bucket name")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        raise ConfigError(field, value, "S3 refuses a bucket name shaped like an IP address")
    for prefix in _BUCKET_PREFIXES:
        if value.startswith(prefix):
            raise ConfigError(field, value, f"S3 reserves the prefix {prefix!r}: pick another name")
    for suffix in _BUCKET_SUFFIXES:
        if value.endswith(suffix):
            raise ConfigError(field, value, f"S3 reserves the suffix {suffix!r}: pick another name")
    return value


def endpoint_url(field: str, value: str) -> str:
    """An http(s) URL of the S3 API without credentials, query or fragment."""
    fix = "give the S3 API's URL such as https://s3.eu-west-1.amazonaws.com or http://minio.lan:9000"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ConfigError(field, value, fix) from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise ConfigError(field, value, fix)
    if parts.username is not None or parts.password is not None:
        raise ConfigError(field, value, "keep the keys out of the URL: they are sensitive variables")
    if port == 0 or not (_HOST.match(host) or _is_ip(host)):
        raise ConfigError(field, value, fix)
    if parts.path not in ("", "/"):
        raise ConfigError(field, value, "give the endpoint without a path; the path is its own setting")
    return value.rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def backup_schedule(field: str, value: str) -> str:
    """A five-field cron schedule, as CloudNativePG's six-field one (seconds first).

    ScheduledBackup parses with robfig/cron v3 and a seconds field (cloudnative-pg v1.29.1
    internal/controller/scheduledbackup_controller.go), whose day of week runs 0-6 (spec.go)."""
    validate.cron(field, value)
    day_of_week = value.split()[4]
    if re.search(r"(^|[,-])7($|[,/-])", day_of_week):
        raise ConfigError(field, value, "CloudNativePG's schedule parser knows no day 7: use 0 for Sunday")
    return f"0 {value}"


@dataclass(frozen=True)
class ObjectStore:
    """An S3-compatible bucket that receives the WAL stream and the base backups."""

    bucket: str
    endpoint: str = "https://s3.amazonaws.com"
    """The S3 API: ``https://s3.<region>.amazonaws.com``, ``https://<account>.r2.cloudflarestorage.com``,
    ``https://s3.<region>.backblazeb2.com`` or a MinIO URL such as ``http://minio.lan:9000``."""
    region: str = "us-east-1"
    """The signing region: the bucket's on AWS and Backblaze, ``auto`` on R2, any on MinIO."""
    path: str = "backups"
    """Folder inside the bucket; the database's backups go under ``<path>/<cluster name>/``."""
    retention_days: int = 30
    schedule: str = "0 2 * * *"
    """When the base backup runs (five-field cron, UTC); WAL is archived continuously in between."""
    wal_compression: str = "gzip"
    data_compression: str = "gzip"
    encryption: str = "AES256"
    field_prefix: str = "backup"
    """The settings' names as the stack spells them, for the error messages."""

    def __post_init__(self) -> None:
        p = self.field_prefix
        bucket_name(f"{p}_bucket", self.bucket)
        endpoint_url(f"{p}_endpoint", self.endpoint)
        if not _REGION.match(self.region):
            raise ConfigError(f"{p}_region", self.region, "give a region such as us-east-1, or auto on R2")
        if not _PATH.match(self.path) or any(part in (".", "..") for part in self.path.split("/")):
            raise ConfigError(
                f"{p}_path", self.path, "give a folder such as backups/single-node, without '/' at either end"
            )
        validate.int_range(f"{p}_retention_days", self.retention_days, 1, 3650)
        backup_schedule(f"{p}_schedule", self.schedule)
        validate.one_of(f"{p}_wal_compression", self.wal_compression, WAL_COMPRESSIONS)
        validate.one_of(f"{p}_data_compression", self.data_compression, DATA_COMPRESSIONS)
        validate.one_of(f"{p}_encryption", self.encryption, ENCRYPTIONS)

    def destination(self) -> str:
        return f"s3://{self.bucket}/{self.path}"

    @property
    def port(self) -> int:
        """The TCP port the endpoint listens on (network policies must let the database reach it)."""
        parts = urlsplit(self.endpoint)
        return parts.port or (443 if parts.scheme == "https" else 80)
