"""A real restore: PostgreSQL archives WAL and takes a base backup with the real barman-cloud tools
into moto's S3, with the settings the synthesized single-node Cluster carries, and both a point in
time before a delete and the end of the archive are restored into fresh data directories.

The barman-cloud command lines are built from the Cluster's ``spec.backup`` the way CloudNativePG
v1.29.1 builds them (its barman-cloud library v0.5.0: pkg/archiver/command.go for
barman-cloud-wal-archive, pkg/backup/backup.go for barman-cloud-backup, pkg/command/commandbuilder.go
for barman-cloud-wal-restore, pkg/command/backupdelete.go and pkg/utils/barman.go for the retention),
so a compression, encryption or retention the tools refuse fails here. Only the endpoint is moto's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cdktf
import pytest

from environments import Instance
from tests.conftest import by_kind, free_port, manifests_of, moto_server, resources, unavailable

PG_BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's postgresql package
BARMAN_TOOLS = (
    "barman-cloud-wal-archive",
    "barman-cloud-backup",
    "barman-cloud-backup-list",
    "barman-cloud-backup-delete",
    "barman-cloud-restore",
    "barman-cloud-wal-restore",
)
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
# The object names barman-cloud-wal-archive gives each compression (barman/cloud.py, barman/compression.py).
SUFFIXES = {"gzip": ".gz", "bzip2": ".bz2", "snappy": ".snappy", "lz4": ".lz4", "xz": ".xz", "zstd": ".zst"}
DEADLINE = 120  # seconds for any one wait below


def tools_dir() -> Path:
    """The barman-cloud tools of the project's environment (``barman[cloud]`` in the Pipfile's
    dev-packages, so ``.venv/bin`` beside pytest); ``BARMAN_CLOUD_BIN`` points elsewhere."""
    directory = Path(os.environ.get("BARMAN_CLOUD_BIN") or Path(sys.executable).parent)
    missing = [tool for tool in BARMAN_TOOLS if not (directory / tool).exists()]
    if missing:
        unavailable(f"{', '.join(missing)} missing in {directory}: barman[cloud] is not installed")
    return directory


def _stop(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster_backup() -> dict[str, Any]:
    """``spec.backup`` of the Cluster the single-node stack synthesizes with its default settings."""
    stack = Instance("single-node", "single-node").build(cdktf.Testing.app())
    synthesized = json.loads(cdktf.Testing.synth(stack))
    releases = {r["name"]: r for r in resources(synthesized, "helm_release").values()}
    (cluster,) = by_kind(manifests_of(releases["ffe-db"]), "Cluster")
    backup: dict[str, Any] = cluster["spec"]["backup"]
    backup["serverName"] = cluster["metadata"]["name"]  # barman's server name: the Cluster's
    return backup


@pytest.fixture(scope="module")
def s3(cluster_backup) -> Iterator[str]:
    """moto_server on 127.0.0.1 with the Cluster's bucket; stopped by PID."""
    server = tools_dir() / "moto_server"
    if not server.exists():
        server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        unavailable(f"{server} is missing: moto[server] comes from the project's lock")
    with moto_server(server, KEYS) as url:
        bucket = cluster_backup["barmanObjectStore"]["destinationPath"].removeprefix("s3://").split("/")[0]
        # barman-cloud 3.16+ creates no bucket (CloudNativePG docs, appendixes/backup_barmanobjectstore.md)
        request = urllib.request.Request(f"{url}/{bucket}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        yield url


class Barman:
    """The barman-cloud command lines CloudNativePG runs for ``spec.backup``, against ``endpoint``."""

    def __init__(self, backup: dict[str, Any], endpoint: str, tools: Path) -> None:
        self.store = backup["barmanObjectStore"]
        self.retention: str = backup["retentionPolicy"]
        self.server: str = backup["serverName"]
        self.endpoint = endpoint
        self.tools = tools
        assert set(self.store["s3Credentials"]) >= {"accessKeyId", "secretAccessKey"}

    def _common(self) -> list[str]:
        return ["--endpoint-url", self.endpoint, "--cloud-provider", "aws-s3"]

    def _target(self) -> list[str]:
        return [self.store["destinationPath"], self.server]

    def wal_archive(self) -> list[str]:
        wal = self.store.get("wal", {})
        options = [f"--{wal['compression']}"] if wal.get("compression") else []
        options += ["-e", wal["encryption"]] if wal.get("encryption") else []
        return [str(self.tools / "barman-cloud-wal-archive"), *options, *self._common(), *self._target()]

    def backup(self, name: str) -> list[str]:
        data = self.store.get("data", {})
        options = [f"--{data['compression']}"] if data.get("compression") else []
        options += ["--encryption", data["encryption"]] if data.get("encryption") else []
        options += ["--jobs", str(data["jobs"])] if data.get("jobs") else []
        options += ["--user", "postgres", "--name", name]
        return [str(self.tools / "barman-cloud-backup"), *options, *self._common(), *self._target()]

    def backup_list(self) -> list[str]:
        tool = str(self.tools / "barman-cloud-backup-list")
        return [tool, "--format", "json", *self._common(), *self._target()]

    def retention_delete(self) -> list[str]:
        number, unit = self.retention[:-1], {"d": "DAYS", "w": "WEEKS", "m": "MONTHS"}[self.retention[-1]]
        policy = f"RECOVERY WINDOW OF {number} {unit}"
        tool = str(self.tools / "barman-cloud-backup-delete")
        return [tool, *self._common(), "--retention-policy", policy, "--dry-run", *self._target()]

    def restore(self, backup_id: str, directory: Path) -> list[str]:
        tool = str(self.tools / "barman-cloud-restore")
        return [tool, *self._common(), *self._target(), backup_id, str(directory)]

    def wal_restore(self) -> list[str]:
        return [str(self.tools / "barman-cloud-wal-restore"), *self._common(), *self._target()]


def _as_server(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, its server commands run in a user namespace as a
    plain uid there, which is still root to the files outside (so it reads the tools' interpreter
    wherever it lives)."""
    if os.geteuid() != 0:
        return args
    return ["unshare", "--user", "--map-user=1000", "--map-group=1000", *args]


def _quote(args: list[str]) -> str:
    return " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)


class Postgres:
    """A PostgreSQL 15 in its own data directory, on a unix socket only; stopped by PID."""

    def __init__(self, data: Path, socket_dir: Path) -> None:
        self.data = data
        self.socket_dir = socket_dir
        self.port = free_port()
        self.pid: int | None = None

    def initdb(self) -> None:
        _run(_as_server([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]))

    def configure(self, settings: dict[str, str]) -> None:
        lines = "".join(
            f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items()
        )
        with (self.data / "postgresql.auto.conf").open("a", encoding="utf-8") as conf:
            conf.write(lines)

    def start(self, wait_for_primary: bool = True) -> None:
        self.configure(
            {"listen_addresses": "", "unix_socket_directories": str(self.socket_dir), "port": str(self.port)}
        )
        _run(
            _as_server(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            env={**os.environ, **KEYS},
        )
        self.pid = int((self.data / "postmaster.pid").read_text().splitlines()[0])
        if wait_for_primary:
            self.wait_for(lambda: self.sql("SELECT pg_is_in_recovery()") == "f", "the end of recovery")

    def stop(self) -> None:
        if self.pid is not None:
            _stop(self.pid, signal.SIGINT)  # fast shutdown
            self.pid = None

    @property
    def connection(self) -> list[str]:
        return [str(PG_BIN / "psql"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]

    @property
    def log_path(self) -> Path:
        return self.data / "server.log"

    def sql(self, query: str) -> str:
        result = subprocess.run(
            [*self.connection, "-d", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query],
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"psql {query!r}: {result.stderr}\n{self.log()}")
        return result.stdout.strip()

    def wait_for(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if condition():
                    return
            except AssertionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL did not reach {what} within {DEADLINE}s\n{self.log()}")
            time.sleep(0.5)

    def archive_current_segment(self) -> str:
        """Close the current WAL segment and wait until archive_command has archived it; the first
        failure fails at once, with barman-cloud-wal-archive's message from the server log."""
        segment = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        self.sql("SELECT pg_switch_wal()")

        def archived() -> bool:
            if self.sql("SELECT failed_count FROM pg_stat_archiver") != "0":
                raise RuntimeError(f"barman-cloud-wal-archive failed:\n{self.log()}")
            return self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= segment

        self.wait_for(archived, f"the archive of {segment}")
        return segment

    def log(self) -> str:
        path = self.data / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _run(args: list[str], env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=DEADLINE, check=False, env=env or {**os.environ, **KEYS}
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr}{result.stdout}"
        )
    return result.stdout


@pytest.fixture
def workdir() -> Iterator[Path]:
    if not (PG_BIN / "postgres").exists():
        unavailable(f"{PG_BIN} is missing: the restore test needs Debian's postgresql-15")
    if os.geteuid() == 0 and shutil.which("unshare") is None:
        unavailable("PostgreSQL refuses to run as root and util-linux' unshare is missing")
    # A short path: a unix socket's path is limited to 107 bytes.
    directory = Path(tempfile.mkdtemp(prefix="pgbr-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_point_in_time_before_a_delete_is_restored_from_the_object_store(cluster_backup, s3, workdir):
    barman = Barman(cluster_backup, s3, tools_dir())
    primary = Postgres(workdir / "primary", workdir)
    servers = [primary]
    try:
        primary.initdb()
        primary.configure(
            {
                "wal_level": "replica",
                "archive_mode": "on",
                "archive_command": f"{_quote(barman.wal_archive())} %p",
                "archive_timeout": "60",
            }
        )
        primary.start()
        primary.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        primary.sql("INSERT INTO orders SELECT g, 'before the base backup' FROM generate_series(1, 100) g")

        # The archive works with these settings before a backup waits on it
        primary.archive_current_segment()
        env = {**os.environ, **KEYS, "PGHOST": str(workdir), "PGPORT": str(primary.port)}
        _run(barman.backup("daily-1"), env=env)
        (backup,) = json.loads(_run(barman.backup_list()))["backups_list"]

        primary.sql("INSERT INTO orders SELECT g, 'after the base backup' FROM generate_series(101, 150) g")
        time.sleep(1.1)  # the target time lies strictly between the two commits
        before_delete = primary.sql("SELECT clock_timestamp()")
        time.sleep(1.1)
        primary.sql("DELETE FROM orders WHERE id <= 100")
        segment = primary.archive_current_segment()
        primary.stop()

        # What the synthesized compression and encryption did to the objects in the bucket
        _check_objects(cluster_backup, s3, segment)
        # The retention the Cluster carries, as the operator hands it to barman-cloud-backup-delete
        _run(barman.retention_delete())

        def restore(name: str, target: dict[str, str]) -> Postgres:
            server = Postgres(workdir / name, workdir)
            servers.append(server)
            _run(barman.restore(backup["backup_id"], server.data))
            server.data.chmod(0o700)
            server.configure(
                {"restore_command": f"{_quote(barman.wal_restore())} %f %p", "archive_mode": "off", **target}
            )
            (server.data / "recovery.signal").touch()
            server.start()
            return server

        in_time = restore(
            "before-delete", {"recovery_target_time": before_delete, "recovery_target_action": "promote"}
        )
        assert in_time.sql("SELECT count(*) FROM orders") == "150"  # the deleted rows are back
        assert in_time.sql("SELECT count(*) FROM orders WHERE id > 100") == "50"  # written after the backup
        in_time.stop()

        latest = restore("latest", {})
        assert latest.sql("SELECT count(*), min(id) FROM orders") == "50|101"  # the delete replayed too
    finally:
        for server in servers:
            server.stop()


def _check_objects(cluster_backup: dict[str, Any], endpoint: str, segment: str) -> None:
    import boto3

    store = cluster_backup["barmanObjectStore"]
    bucket, _, prefix = store["destinationPath"].removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, **_boto_keys())
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{cluster_backup['serverName']}/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    wals = [k for k in keys if "/wals/" in k and segment in k]
    assert wals, keys
    compression = store["wal"].get("compression")
    assert wals[0].endswith(SUFFIXES[compression] if compression else segment), wals
    data = [
        k
        for k in keys
        if "/base/" in k
        and k.endswith(
            ".tar" + {"gzip": ".gz", "bzip2": ".bz2"}.get(store["data"].get("compression", ""), "")
        )
    ]
    assert data, keys
    for key in (wals[0], data[0]):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head.get("ServerSideEncryption") == (store["wal"].get("encryption") or None), (key, head)


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": KEYS["AWS_SECRET_ACCESS_KEY"],
        "region_name": KEYS["AWS_DEFAULT_REGION"],
    }
