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
    "EXTENSIONS",
    "attach",
    "attach_only",
    "config",
    "connect",
    "cursor",
    "extension_file",
    "load_extensions",
    "node_name",
    "prepare",
]

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


def connect(storage: StorageSettings, extension_dir: Path, *, attach_lake: bool = True) -> duckdb.DuckDBPyConnection:
    """DuckDB with the lake of ``storage`` attached and in use; with ``attach_lake`` False, only ready
    to attach it (extensions, S3 secret): a node's first start attaches under the ``migrate`` lease,
    since the first ATTACH of a new lake creates DuckLake's catalog tables, and two nodes creating
    them at once collide."""
    con = duckdb.connect(config=config(extension_dir))
    try:
        prepare(con, storage)
        if attach_lake:
            attach_only(con, storage)
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
    prepare(con, storage)
    attach_only(con, storage)


def prepare(con: Any, storage: StorageSettings) -> None:
    """The extensions and, for S3, the secret: what attaching the lake needs."""
    try:
        load_extensions(con)
        if (storage.data_path or "").startswith("s3://"):
            con.execute(_secret(storage))
    except duckdb.Error as exc:
        raise StoreError(f"cannot open the DuckLake (catalog {_safe(storage.catalog)}): {exc}") from exc


def attach_only(con: Any, storage: StorageSettings) -> None:
    try:
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


def node_name(data_dir: Path) -> str:
    """A node's name among the lake's nodes: the same node restarting (same host and data directory,
    so the same journal) is the same member, and takes its own leases back before they lapse."""
    return f"{socket.gethostname()}:{data_dir.resolve()}"
