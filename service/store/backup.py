"""Backups: the whole database as Parquet files plus the SQL to rebuild it (DuckDB's EXPORT/IMPORT DATABASE).

``export`` runs on one read cursor, so it is one transaction: a consistent snapshot while the
server keeps writing. It writes into a sibling temporary directory and renames it into place
last, so a directory named like a backup is always a whole one. A manifest records the row
count of every table; ``restore`` checks the imported file against it before it takes the
place of the database, so a damaged backup is refused instead of half-restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import duckdb

from service import __version__
from service.errors import InvalidRequest, StoreError
from service.store import migrate
from service.store.usage import table_names

__all__ = ["MANIFEST", "export", "restore"]

MANIFEST = "profstore-backup.json"


def _counts(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {n: int(cur.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in table_names(cur)}  # type: ignore[index]


def export(cur: duckdb.DuckDBPyConnection, target: Path) -> dict[str, int]:
    """Write a backup of everything ``cur`` sees to ``target`` (which must not exist); returns rows per table."""
    if not target.is_absolute():
        raise InvalidRequest(f"backup directory must be an absolute path, got {str(target)!r}")
    if target.exists():
        raise InvalidRequest(f"backup directory {target} exists already; name a new one")
    if not target.parent.is_dir():
        raise InvalidRequest(f"backup directory's parent {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        cur.execute("BEGIN TRANSACTION")  # the counts and the export see the same snapshot
        counts = _counts(cur)
        cur.execute(f"EXPORT DATABASE '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd)")
        cur.execute("COMMIT")
        manifest = {"profstore": __version__, "created": time.time(), "tables": counts}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        tmp.rename(target)
    except duckdb.Error as exc:
        raise StoreError(f"backup to {target} failed: {exc}") from exc
    except OSError as exc:
        raise StoreError(f"backup to {target} failed: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.execute("ROLLBACK")
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def restore(source: Path, db_file: Path) -> dict[str, int]:
    """Rebuild ``db_file`` (which must not exist: restore never overwrites data) from a backup."""
    manifest_path = source / MANIFEST
    if not manifest_path.is_file():
        raise InvalidRequest(f"{source} is not a profstore backup (no {MANIFEST})")
    if db_file.exists():
        raise InvalidRequest(f"{db_file} exists; restore into an empty data directory")
    want: dict[str, int] = json.loads(manifest_path.read_text())["tables"]
    db_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_file.with_name(db_file.name + ".restoring")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute(f"IMPORT DATABASE '{_sql_path(source)}'")
            got = _counts(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
    except duckdb.Error as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"restore from {source} failed: {exc}") from exc
    if got != want:
        tmp.unlink(missing_ok=True)
        diff = {t: (want.get(t), got.get(t)) for t in set(want) | set(got) if want.get(t) != got.get(t)}
        raise StoreError(f"restore from {source} is incomplete (table: (backup, restored) rows): {diff}")
    tmp.rename(db_file)
    migrate.upgrade(db_file)  # a backup of an older schema is brought to this version's
    return got


def _sql_path(p: Path) -> str:
    return str(p).replace("'", "''")
