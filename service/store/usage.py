"""What the database holds: rows and bytes per table, and the data of each tenant (``/api/v1/storage``)."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

__all__ = ["TableUsage", "TenantUsage", "table_names", "tables", "tenants"]


@dataclass(frozen=True, slots=True)
class TableUsage:
    name: str
    rows: int
    bytes: int  # blocks of the table in the file (as of the last checkpoint), or a lake's files of it


@dataclass(frozen=True, slots=True)
class TenantUsage:
    tenant: str
    series: int
    profiles: int  # rows of ``profiles``: one per series and time
    oldest: int | None  # ns
    newest: int | None
    oldest_raw: int | None  # the oldest time that still has samples (older ones have rollups only)


def table_names(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """The database's own tables (not temporary ones, not attached databases'), by name."""
    rows = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary "
        "ORDER BY table_name"
    ).fetchall()
    return [r[0] for r in rows]


def tables(cur: duckdb.DuckDBPyConnection) -> list[TableUsage]:
    kind = cur.execute("SELECT type FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
    if kind is not None and kind[0] == "ducklake":
        return _lake_tables(cur)
    block = int(cur.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0])  # type: ignore[index]
    out = []
    for name in table_names(cur):
        rows = int(cur.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # type: ignore[index]
        blocks = cur.execute(
            "SELECT count(DISTINCT block_id) FROM pragma_storage_info($t) WHERE persistent AND block_id >= 0",
            {"t": name},
        ).fetchone()
        out.append(TableUsage(name, rows, int(blocks[0] if blocks else 0) * block))
    return out


def _lake_tables(cur: duckdb.DuckDBPyConnection) -> list[TableUsage]:
    """A DuckLake's tables: their data files and delete files, as its catalog counts them (rows
    inlined in the catalog have no file yet)."""
    sizes = dict(
        cur.execute(
            "SELECT table_name, file_size_bytes + delete_file_size_bytes FROM ducklake_table_info(current_database())"
        ).fetchall()
    )
    out = []
    for name in table_names(cur):
        rows = int(cur.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])  # type: ignore[index]
        out.append(TableUsage(name, rows, int(sizes.get(name) or 0)))
    return out


def tenants(cur: duckdb.DuckDBPyConnection) -> list[TenantUsage]:
    rows = cur.execute(
        """
        SELECT s.tenant, count(DISTINCT s.series_id), count(p.ts), min(p.ts), max(p.ts),
               (SELECT min(x.ts) FROM samples x JOIN series y USING (series_id) WHERE y.tenant = s.tenant)
        FROM (SELECT DISTINCT series_id, tenant FROM series) s LEFT JOIN profiles p USING (series_id)  -- a lake may hold a series row twice until maintenance
        GROUP BY s.tenant ORDER BY s.tenant
        """
    ).fetchall()
    return [TenantUsage(t, int(n), int(p), lo, hi, raw) for t, n, p, lo, hi, raw in rows]
