"""A DuckLake as the store: DuckDB in memory with the lake attached and in use.

The DuckLake, postgres and httpfs extensions come from their PyPI wheels (``duckdb-extension-*``,
pinned with DuckDB in ``pyproject.toml``): installed once from the wheels' files into the node's
own extension directory, then loaded by name, so a node never reaches for DuckDB's extension
host (which may be out of reach) and loads exactly the build that matches its DuckDB. Loading the
postgres file by its path fails (its entry point is named ``postgres_scanner``); by name it works.

A cursor is a new DuckDB connection and does not inherit ``USE``: every cursor this module hands
out has the lake in use, so the store's SQL names tables as it does on the DuckDB file.
DuckLake's own commit retry is off (``ducklake_max_retry_count = 0``): it re-commits the same
rows without re-running the statements that chose them, which duplicated rows when two writers
met; a conflict is the writer's to retry.
"""

from __future__ import annotations

import importlib.resources
import os
import socket
from pathlib import Path
from typing import Any

import duckdb

from service.config import StorageSettings
from service.errors import StoreError

__all__ = [
    "EXTENSIONS", "LakeInUse", "attach", "claim", "config", "connect", "cursor", "extension_file",
    "holder_name", "load_extensions", "release_lease", "take_lease",
]  # fmt: skip

EXTENSIONS = ("ducklake", "postgres", "httpfs")
ALIAS = "lake"


def extension_file(name: str) -> Path:
    """The extension a ``duckdb-extension-<name>`` wheel ships for the DuckDB that runs."""
    folder = importlib.resources.files(f"duckdb_extension_{name}") / "extensions" / f"v{duckdb.__version__}"
    path = Path(str(folder / f"{name}.duckdb_extension"))
    if not path.is_file():
        raise StoreError(
            f"{path} is missing: duckdb-extension-{name} must be the version of duckdb ({duckdb.__version__})"
        )
    return path


def config(extension_dir: Path) -> dict[str, str | bool | int | float | list[str]]:
    """DuckDB's settings for a lake node: extensions from our own directory, never downloaded."""
    return {
        "extension_directory": str(extension_dir),
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "false",
    }


def connect(storage: StorageSettings, extension_dir: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the lake of ``storage`` attached and in use."""
    con = duckdb.connect(config=config(extension_dir))
    try:
        attach(con, storage)
    except StoreError:
        con.close()
        raise
    return con


def load_extensions(con: Any) -> None:
    """The three extensions, installed from the wheels' files on first use and loaded by name."""
    for name in EXTENSIONS:
        try:
            con.execute(f"LOAD {name}")
        except duckdb.Error:
            con.execute(f"INSTALL '{extension_file(name)}'")
            con.execute(f"LOAD {name}")


def attach(con: Any, storage: StorageSettings) -> None:
    """Load the extensions into ``con`` (a DuckDB connection, or SQLAlchemy's wrapper of one for
    Alembic), attach the lake and use it; a :class:`StoreError` that names the catalog when it
    cannot be reached."""
    try:
        load_extensions(con)
        if (storage.data_path or "").startswith("s3://"):
            con.execute(_secret(storage))
        con.execute(
            f"ATTACH IF NOT EXISTS {_literal('ducklake:postgres:' + (storage.catalog or ''))} AS {ALIAS} "
            f"(DATA_PATH {_literal(storage.data_path or '')})"
        )
        con.execute("SET ducklake_max_retry_count = 0")
        con.execute(f"USE {ALIAS}")
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the DuckLake (catalog {_safe(storage.catalog)}): {exc}") from exc


def cursor(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    cur = con.cursor()
    cur.execute(f"USE {ALIAS}")
    return cur


def _secret(storage: StorageSettings) -> str:
    s3 = storage.s3
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    parts = {
        "TYPE": "s3",
        "REGION": _literal(region),
        "URL_STYLE": _literal(s3.url_style),
        "USE_SSL": "true" if s3.use_ssl else "false",
    }
    key_id, secret = (
        s3.key_id or os.environ.get("AWS_ACCESS_KEY_ID"),
        s3.secret or os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    if key_id and secret:  # else anonymous (the credential chain needs DuckDB's aws extension, not shipped)
        parts |= {"KEY_ID": _literal(key_id), "SECRET": _literal(secret)}
    if s3.endpoint:
        parts["ENDPOINT"] = _literal(s3.endpoint)
    return "CREATE OR REPLACE SECRET profstore_lake (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"


def _literal(text: str) -> str:
    """A SQL string literal (ATTACH and CREATE SECRET take no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _safe(catalog: str | None) -> str:
    """The catalog's connection string without its password, for messages and logs."""
    return " ".join(p for p in (catalog or "").split() if not p.lower().startswith("password="))


# One node writes to a lake until several are supported (issue 19): the writer's per-batch update of
# ``series`` conflicts between writers, and retention and compaction must run on one node. The
# lease is a row in the catalog's own PostgreSQL database, taken by one atomic upsert (an advisory
# lock would belong to whichever pooled connection the postgres extension used).
LEASE_S = 30.0
_LEASE_DDL = (
    "CREATE TABLE IF NOT EXISTS profstore_writer_lease "
    "(lake TEXT PRIMARY KEY, holder TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL)"
)


class LakeInUse(StoreError):
    """Another node holds this lake's writer lease."""


def holder_name(data_dir: Path) -> str:
    """A node's name in the lease: the same node restarting (same host and data directory, so the
    same journal) takes its own lease back at once, before it expires."""
    return f"{socket.gethostname()}:{data_dir.resolve()}"


def claim(con: duckdb.DuckDBPyConnection, holder: str) -> None:
    """Take the writer lease or stop with who holds it."""
    try:
        got = take_lease(con, holder)
    except duckdb.Error as exc:
        raise StoreError(f"cannot take the lake's writer lease: {exc}") from exc
    if got != holder:
        raise LakeInUse(
            f"another node writes to this lake ({got}; its lease is renewed every {LEASE_S / 3:g} s and lapses "
            f"{LEASE_S:g} s after it stops): one node per lake until several are supported"
        )


def take_lease(con: duckdb.DuckDBPyConnection, holder: str, seconds: float = LEASE_S) -> str:
    """Take or renew the lake's writer lease for ``holder``; the holder afterwards (``holder`` when
    taken; another node's name when it holds an unexpired lease)."""
    _catalog_db(con)
    upsert = (
        f"INSERT INTO profstore_writer_lease VALUES ('lake', {_literal(holder)}, now() + interval '{float(seconds)} s') "
        "ON CONFLICT (lake) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires "
        "WHERE profstore_writer_lease.holder = EXCLUDED.holder OR profstore_writer_lease.expires < now()"
    )
    con.execute(f"CALL postgres_execute('{_PG}', {_literal(upsert)})")
    query = "SELECT holder FROM profstore_writer_lease"
    row = con.execute(f"SELECT holder FROM postgres_query('{_PG}', {_literal(query)})").fetchone()
    return str(row[0]) if row else ""


def release_lease(con: duckdb.DuckDBPyConnection, holder: str) -> None:
    _catalog_db(con)
    delete = f"DELETE FROM profstore_writer_lease WHERE holder = {_literal(holder)}"
    con.execute(f"CALL postgres_execute('{_PG}', {_literal(delete)})")


_PG = "profstore_catalog"


def _catalog_db(con: duckdb.DuckDBPyConnection) -> None:
    """The catalog's PostgreSQL database, attached beside the lake (once per instance)."""
    attached = con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = $n", {"n": _PG}).fetchone()
    if not attached or not attached[0]:
        catalog = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = $n", {"n": ALIAS}).fetchone()
        con.execute(f"ATTACH {_literal(_pg_dsn(catalog[0] if catalog else ''))} AS {_PG} (TYPE postgres)")
        con.execute(f"CALL postgres_execute('{_PG}', {_literal(_LEASE_DDL)})")


def _pg_dsn(path: str) -> str:
    return path.removeprefix("ducklake:").removeprefix("postgres:")
