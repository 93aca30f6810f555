"""Apply Alembic migrations to a DuckDB file (``profstore migrate``; ``serve`` does it at start)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import duckdb
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.exc import DBAPIError

from service.config import StorageSettings
from service.errors import StoreError
from service.store import cluster, lake

__all__ = ["MIGRATIONS", "DataDirInUse", "in_use", "prepare", "upgrade", "upgrade_lake", "upgrade_shared"]

# DuckDB's IOException when another process holds the file: "... Conflicting lock is held in <exe> (PID 1234) ..."
_LOCK = re.compile(r"Conflicting lock is held in (?P<exe>.*?) \(PID (?P<pid>\d+)\)")


class DataDirInUse(StoreError):
    """The DuckDB file is locked by another process: a file admits one process, so a second ``serve`` or a
    ``migrate`` beside a running server must stop here with who holds it, not with DuckDB's stack of errors."""

    def __init__(self, path: Path, pid: int, exe: str) -> None:
        super().__init__(
            f"{path} is in use by another process (PID {pid}, {Path(exe).name}): profstore is probably already "
            "running on this data directory; stop it or use another --data-dir"
        )
        self.path, self.pid, self.exe = path, pid, exe


def in_use(path: Path, exc: BaseException) -> DataDirInUse | None:
    """``exc`` (DuckDB's, or SQLAlchemy's wrapping it) as :class:`DataDirInUse` when it is the lock conflict."""
    m = _LOCK.search(str(exc))
    return DataDirInUse(path, int(m["pid"]), m["exe"]) if m else None


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
MIGRATE_WAIT_S = 300.0  # a migration of a large lake may rewrite tables; a lease lapses after this


def prepare(db_file: Path, extension_dir: Path, storage: StorageSettings) -> None:
    """Bring the store of a node to this version's schema before it serves: the DuckDB file
    ``db_file``, or the lake (one node at a time, under the lake's ``migrate`` lease)."""
    db_file.parent.mkdir(parents=True, exist_ok=True)
    if storage.backend == "duckdb":
        upgrade(db_file)
        return
    con = lake.connect(storage, extension_dir, attach_lake=False)
    try:
        upgrade_shared(con, storage, extension_dir, lake.node_name(db_file.parent))
    finally:
        con.close()


def upgrade_shared(con: duckdb.DuckDBPyConnection, storage: StorageSettings, extension_dir: Path, node: str) -> None:
    """Attach and migrate the lake under its ``migrate`` lease: nodes starting together attach and
    migrate one after the other (the later ones find nothing to do), never two DDL transactions
    racing on one catalog. ``con`` is ready to attach (:func:`lake.connect` with ``attach_lake`` False)
    and has the lake attached and in use afterwards."""
    cluster.ensure_tables(con, storage.catalog or "")
    deadline = time.monotonic() + MIGRATE_WAIT_S
    while (holder := cluster.take_lease(con, "migrate", node, MIGRATE_WAIT_S)) != node:
        if time.monotonic() > deadline:
            raise StoreError(f"node {holder} has been migrating the lake for over {MIGRATE_WAIT_S:g} s; try again")
        time.sleep(0.5)
    try:
        lake.attach_only(con, storage)
        upgrade_lake(storage, extension_dir)
    finally:
        cluster.release_lease(con, "migrate", node)


def upgrade_lake(storage: StorageSettings, extension_dir: Path, revision: str = "head") -> None:
    """The same migrations on a DuckLake. It has no PRIMARY KEY (the migrations leave theirs out
    when ``lake`` is set, and so does Alembic's own version table) and no ``RETURNING`` (which
    SQLAlchemy would add to the version table's insert)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["lake"] = True
    engine = create_engine("duckdb:///:memory:", connect_args={"config": lake.config(extension_dir)})
    engine.dialect.insert_returning = False
    event.listen(engine, "connect", lambda dbapi_con, _record: lake.attach(dbapi_con, storage))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


def upgrade(db_path: Path, revision: str = "head") -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"duckdb:///{db_path}")
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except DBAPIError as exc:
        locked = in_use(db_path, exc)
        if locked is not None:
            raise locked from exc
        raise
    finally:
        engine.dispose()
