"""Merged stacks as SQL: a plan's parts (raw samples and rollup buckets) summed or averaged per stack,
and the stacks, locations, functions and mappings that name a merge's frames.

The query layer decides which rollup answers which part of a range (``query/plan.py``) and hands
that decision over as data, ``(resolution, lo, hi)`` parts; the SQL that reads them is here, next
to the schema it knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from service.store.reads import id_list, rounded_quotient, values_between
from service.types import TimeRange

__all__ = ["Part", "StackRows", "merged_stacks", "rollup_done", "rollups_dirty", "stack_rows"]

# One part of a planned range: a resolution (0 for raw samples, else a rollup's seconds) and the
# half-open span ``[lo, hi)`` in unix ns that it answers.
Part = tuple[int, int, int]


def rollup_done(cur: duckdb.DuckDBPyConnection) -> dict[int, int]:
    """Per rollup resolution (seconds), the time before which its buckets are complete."""
    return dict(cur.execute("SELECT resolution, done_until FROM rollup_state").fetchall())


def rollups_dirty(cur: duckdb.DuckDBPyConnection, series_ids: list[int], parts: Sequence[Part]) -> bool:
    """Whether a late profile of ``series_ids`` marked any rollup bucket of ``parts`` (rollup parts only) dirty."""
    conds: list[str] = []
    params: dict[str, object] = {}
    for i, (r, a, b) in enumerate(parts):
        conds.append(f"(resolution = {int(r)} AND bucket >= $a{i} AND bucket < $b{i})")
        params[f"a{i}"], params[f"b{i}"] = a, b
    if not conds:
        return False
    sql = (
        f"SELECT count(*) FROM rollup_dirty WHERE series_id IN ({id_list(series_ids)}) AND (" + " OR ".join(conds) + ")"
    )
    return bool(cur.execute(sql, params).fetchone()[0])  # type: ignore[index]


def _union(series_ids: list[int], parts: Sequence[Part]) -> tuple[str, dict[str, object]]:
    """``SELECT series_id, stack_id, value`` of ``series_ids`` over every part, and its parameters."""
    ids = id_list(series_ids)
    sql: list[str] = []
    params: dict[str, object] = {}
    for i, (r, lo, hi) in enumerate(parts):
        a, b = f"lo_{i}", f"hi_{i}"
        params[a], params[b] = lo, hi
        if r == 0:
            raw = values_between(f"${a}", f"${b}", ids)
            sql.append(f"SELECT series_id, stack_id, value FROM ({raw})")
        else:
            sql.append(
                f"SELECT series_id, stack_id, value FROM stack_rollup WHERE resolution = {int(r)} AND series_id IN "
                f"({ids}) AND bucket >= ${a} AND bucket < ${b}"
            )
    if not sql:
        sql.append("SELECT series_id, stack_id, value FROM samples WHERE false")
    return " UNION ALL ".join(sql), params


_LAST = (
    "WITH l AS (SELECT series_id, max(ts) AS ts FROM profiles "
    "  WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end GROUP BY series_id) "
    "SELECT v.stack_id, sum(v.value)::DOUBLE AS value FROM sample_values v JOIN l USING (series_id, ts) "
    "GROUP BY v.stack_id"
)
# Each series' average scrape of a stack, rounded exactly to whole units, summed over series: the
# export rounds the same way, so top and `go tool pprof` on the export agree to the unit.
_AVG = (
    "WITH n AS (SELECT series_id, count(*) AS n FROM profiles "
    "  WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end GROUP BY series_id), "
    "per AS (SELECT u.stack_id, u.series_id, sum(u.value)::HUGEINT AS v FROM ({union}) u GROUP BY ALL) "
    f"SELECT per.stack_id, sum({rounded_quotient('per.v', 'n.n')})::DOUBLE AS value "
    "FROM per JOIN n USING (series_id) GROUP BY per.stack_id"
)
_SUM = "SELECT stack_id, sum(value)::DOUBLE AS value FROM ({union}) GROUP BY stack_id"
_AGGREGATIONS = ("sum", "avg", "last")


def merged_stacks(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange, aggregation: str, parts: Sequence[Part]
) -> pa.Table:
    """``stack_id, value``: the stacks of ``series_ids`` in ``tr``, read from ``parts``, combined per stack.

    ``aggregation``: ``sum`` adds everything; ``avg`` is each series' average profile (the sum over
    its profiles in ``tr`` divided by how many, rounded half to even), summed over series; ``last``
    is each series' latest profile in ``tr``, read raw (``parts`` are not used).
    """
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(_AGGREGATIONS)}")
    if not series_ids:
        return pa.table({"stack_id": pa.array([], pa.binary()), "value": pa.array([], pa.float64())})
    ids = id_list(series_ids)
    params: dict[str, object] = {}
    if aggregation == "last":
        sql = _LAST.format(ids=ids)
    else:
        union, params = _union(series_ids, parts)
        sql = (_AVG if aggregation == "avg" else _SUM).format(union=union, ids=ids)
    if aggregation != "sum":  # counts or picks profiles over the whole range
        params.update({"start": tr.start, "end": tr.end + 1})
    return cur.execute(sql, params).to_arrow_table()


@dataclass(frozen=True, slots=True)
class StackRows:
    """What names the frames of some stacks, one row per id (Arrow tables keyed by content hash)."""

    stacks: pa.Table  # stack_id, location_ids (leaf first)
    locations: pa.Table  # location_id, mapping_id, function_ids (innermost line first)
    functions: pa.Table  # function_id, name, filename
    mappings: pa.Table  # mapping_id, filename


def stack_rows(cur: duckdb.DuckDBPyConnection, stack_ids: pa.Array | pa.ChunkedArray) -> StackRows:
    """The stacks ``stack_ids`` and the locations, functions and mappings they reach."""
    tag = "_q"  # temp tables belong to the request's cursor
    cur.register(f"{tag}_merged", pa.table({"stack_id": stack_ids}))
    try:
        cur.execute(f"CREATE OR REPLACE TEMP TABLE {tag}_m AS SELECT stack_id FROM {tag}_merged")
    finally:
        cur.unregister(f"{tag}_merged")
    try:
        stacks = cur.execute(
            f"SELECT stack_id, location_ids FROM stacks WHERE stack_id IN (SELECT stack_id FROM {tag}_m) "
            "QUALIFY row_number() OVER (PARTITION BY stack_id) = 1"
        ).to_arrow_table()
        cur.execute(
            f"CREATE OR REPLACE TEMP TABLE {tag}_l AS SELECT location_id, mapping_id, function_ids FROM locations "
            f"WHERE location_id IN (SELECT DISTINCT unnest(location_ids) FROM stacks "
            f"  WHERE stack_id IN (SELECT stack_id FROM {tag}_m)) "
            "QUALIFY row_number() OVER (PARTITION BY location_id) = 1"
        )
        locations = cur.execute(f"SELECT * FROM {tag}_l").to_arrow_table()
        functions = cur.execute(
            f"SELECT function_id, name, filename FROM functions WHERE function_id IN "
            f"(SELECT DISTINCT unnest(function_ids) FROM {tag}_l) "
            "QUALIFY row_number() OVER (PARTITION BY function_id) = 1"
        ).to_arrow_table()
        mappings = cur.execute(
            f"SELECT mapping_id, filename FROM mappings WHERE mapping_id IN (SELECT DISTINCT mapping_id FROM {tag}_l) "
            "QUALIFY row_number() OVER (PARTITION BY mapping_id) = 1"
        ).to_arrow_table()
    finally:
        cur.execute(f"DROP TABLE IF EXISTS {tag}_m")
        cur.execute(f"DROP TABLE IF EXISTS {tag}_l")
    return StackRows(stacks, locations, functions, mappings)
