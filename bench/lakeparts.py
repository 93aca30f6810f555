"""Real parts of a lake, for the tests and the cluster benchmark: a throwaway PostgreSQL cluster (the
DuckLake catalog) and a moto S3 server (the data files).

PostgreSQL refuses to run as root, and CI runs as root: the cluster then belongs to the
``postgres`` user (``runuser``), in a directory under ``/tmp`` that user owns (pytest's own
temporary directories are private to root). Debian keeps ``initdb`` and ``pg_ctl`` off PATH, in its
versioned PostgreSQL folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import yaml

from service.config import StorageSettings

__all__ = ["S3", "Postgres", "as_owner", "free_port", "pg_bin", "postgres_server", "s3_server", "storage_yaml"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return found[-1].parent


def as_owner(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Postgres:
    """One PostgreSQL cluster on a Unix socket (no TCP), user ``lake`` trusted."""

    root: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def _ctl(self, *args: str) -> None:
        log = str(self.root / "server.log")
        cmd = [str(pg_bin() / "pg_ctl"), "-D", str(self.root / "data"), "-l", log, *args]
        subprocess.run(as_owner(cmd), check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-w", "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=''", "start")

    def stop(self) -> None:
        self._ctl("-w", "-m", "fast", "stop")

    def database(self) -> str:
        """A new, empty database; its libpq connection string (what ``storage.catalog`` takes)."""
        name = f"lake_{uuid.uuid4().hex[:12]}"
        cmd = [str(pg_bin() / "createdb"), "-h", str(self.socket_dir), "-p", str(self.port), "-U", "lake", name]
        subprocess.run(as_owner(cmd), check=True, capture_output=True, timeout=60)
        return f"dbname={name} host={self.socket_dir} port={self.port} user=lake"


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster, removed afterwards."""
    # Under /tmp itself as root: a TMPDIR of root's own may be closed to the postgres user.
    root = Path(tempfile.mkdtemp(prefix="profstore-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    try:
        (root / "sock").mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(root / "sock", "postgres")
        initdb = [str(pg_bin() / "initdb"), "-D", str(root / "data"), "-U", "lake", "--auth=trust", "-E", "UTF8"]
        subprocess.run(as_owner(initdb), check=True, capture_output=True, timeout=120)
        pg = Postgres(root, free_port())
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3:
    """A moto S3 server on loopback and one bucket in it."""

    port: int
    bucket: str

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3", endpoint_url=f"http://{self.endpoint}", region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip

    def secret_sql(self) -> str:
        return (
            f"CREATE OR REPLACE SECRET lake_s3 (TYPE s3, KEY_ID 'test', SECRET 'test', REGION 'us-east-1', "
            f"ENDPOINT '{self.endpoint}', URL_STYLE 'path', USE_SSL false)"
        )


@contextlib.contextmanager
def s3_server(log: Path) -> Iterator[S3]:
    """A moto S3 server (its output in ``log``) with the bucket ``profstore-lake``; stopped afterwards."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        server = S3(port, "profstore-lake")
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(30)


def storage_yaml(storage: StorageSettings) -> str:
    """The ``storage:`` block of a node's config file for ``storage`` (empty for the DuckDB file)."""
    if storage.backend == "duckdb":
        return ""
    return yaml.safe_dump({"storage": storage.model_dump(exclude_none=True)}, sort_keys=False)
