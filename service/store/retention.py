"""Retention: delete what is older than its keep time, then every symbol and stack nothing uses.

Raw samples go after ``retention.days`` (or the first matching rule of their tenant and profile
type). What long-range answers need — per-function and stack rollups, the ``profiles`` rows that
hold totals and scales, and the symbols those reference — stays for ``rollup_days``. Interned
rows (stacks, label sets, locations, functions, mappings) are shared by every series and tenant,
so they are deleted only once no kept row references them. The label index of a deleted series
(:mod:`service.store.series_index`) goes with it, in the same transaction.

It runs in the writer thread (:meth:`Writer.call`) as one transaction: no batch interleaves, and
a crash leaves all or nothing. Afterwards the writer's ``KnownIds`` is cleared — ids it remembers
as committed may just have been deleted — and a checkpoint returns the freed blocks to the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from service.config import RetentionSettings
from service.store import series_index
from service.store.ids import KnownIds
from service.store.transaction import registered, transaction

__all__ = ["Expired", "expire"]

DAY_NS = 86400 * 10**9

# (table, predicate against the per-series cutoffs in _cut as c); raw first, then what rollups need.
_EXPIRE = (
    ("samples", "samples.series_id = c.series_id AND samples.ts < c.raw"),
    ("rollup_dirty", "rollup_dirty.series_id = c.series_id AND rollup_dirty.bucket < c.raw"),
    ("profiles", "profiles.series_id = c.series_id AND profiles.ts < c.rollup"),
    ("function_rollup", "function_rollup.series_id = c.series_id AND function_rollup.ts < c.rollup"),
    ("stack_rollup", "stack_rollup.series_id = c.series_id AND stack_rollup.bucket < c.rollup"),
    ("series", "series.series_id = c.series_id AND series.last_seen < c.rollup"),
)

# Interned rows no kept row references, leaves of the reference graph first.
_UNREFERENCED = (
    ("labelsets", "labelset_id NOT IN (SELECT labelset_id FROM samples)"),
    ("stacks", "stack_id NOT IN (SELECT stack_id FROM samples UNION SELECT stack_id FROM stack_rollup)"),
    ("locations", "location_id NOT IN (SELECT unnest(location_ids) FROM stacks)"),
    (
        "functions",
        "function_id NOT IN (SELECT unnest(function_ids) FROM stacks UNION SELECT unnest(function_ids) "
        "FROM locations UNION SELECT function_id FROM function_rollup)",
    ),
    ("mappings", "mapping_id NOT IN (SELECT mapping_id FROM locations)"),
)


@dataclass(slots=True)
class Expired:
    """Rows deleted per table by one run."""

    deleted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def expire(
    con: duckdb.DuckDBPyConnection, settings: RetentionSettings, now: int, known: KnownIds, *, checkpoint: bool = True
) -> Expired:
    """Delete what is past retention; ``checkpoint`` False on a lake, where CHECKPOINT is the lake's
    whole file maintenance (:mod:`service.store.maintenance` runs its parts by name)."""
    t0 = time.monotonic()
    out = Expired()
    rows = con.execute("SELECT series_id, tenant, profile_type FROM series").fetchall()
    if not rows:
        return out
    raw, rollup = [], []
    for _, tenant, profile_type in rows:
        days = settings.raw_days(tenant, profile_type)
        raw.append(now - int(days * DAY_NS))
        rollup.append(now - int(max(days, settings.rollup_days) * DAY_NS))
    cut = pa.table(
        {
            "series_id": pa.array([r[0] for r in rows], pa.uint64()),
            "raw": pa.array(raw, pa.int64()),
            "rollup": pa.array(rollup, pa.int64()),
        }
    )
    with registered(con, "_cut", cut), transaction(con):
        for table, predicate in _EXPIRE:
            out.deleted[table] = _count(con.execute(f"DELETE FROM {table} USING _cut c WHERE {predicate}"))
        if out.deleted["series"]:  # the label index follows its series
            for table, sql in series_index.EXPIRE:
                out.deleted[table] = _count(con.execute(sql))
        if any(out.deleted.values()):
            for table, predicate in _UNREFERENCED:
                out.deleted[table] = _count(con.execute(f"DELETE FROM {table} WHERE {predicate}"))
    if any(out.deleted.values()):
        known.clear()
        if checkpoint:
            con.execute("CHECKPOINT")
    out.seconds = time.monotonic() - t0
    return out


def _count(cur: duckdb.DuckDBPyConnection) -> int:
    row = cur.fetchone()
    return int(row[0]) if row else 0
