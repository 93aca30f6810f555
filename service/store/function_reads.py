"""Per-function numbers per profile as SQL, for detection: totals, the functions that matter, their
flat and cum per profile, and who calls them.

Detection never touches samples for these: ``profiles.total`` and the ``function_rollup`` rows
written at ingest hold every function's flat and cum per profile. Only the call edges read stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy.typing as npt

from service.store.reads import id_list, rollups_between, values_between
from service.types import TimeRange

__all__ = ["call_edges", "caller_paths", "function_values", "heavy_functions", "profile_totals", "tenants"]


def tenants(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """Every tenant with a stored series, sorted."""
    return [t for (t,) in cur.execute("SELECT DISTINCT tenant FROM series ORDER BY tenant").fetchall()]


def profile_totals(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], span: TimeRange
) -> dict[str, npt.NDArray[Any]]:
    """``series_id``, ``ts``, ``total``, ``duration`` (seconds) per profile time of a series in
    ``[span.start, span.end)``, ordered by ``(ts, series_id)``; two profiles of one series at one time
    are one row (their sums), as a merge sees them."""
    return cur.execute(
        "SELECT series_id, ts, sum(total)::DOUBLE AS total, sum(duration_ns)::DOUBLE / 1e9 AS duration "
        f"FROM profiles WHERE series_id IN ({id_list(series_ids)}) "
        "AND ts >= $start AND ts < $end GROUP BY series_id, ts ORDER BY ts, series_id",
        {"start": span.start, "end": span.end},
    ).fetchnumpy()


def heavy_functions(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange, min_share: float
) -> list[str]:
    """Names of the functions whose cum in ``[tr.start, tr.end)`` holds at least ``min_share`` of the total, sorted."""
    ids = id_list(series_ids)
    # Summed per function id first, then named through one row per id: a function stored twice (two
    # nodes that committed it at once, on a lake) must not count twice.
    rows = cur.execute(
        f"WITH r AS (SELECT function_id, sum(cum) AS cum FROM ({rollups_between('$start', '$end', ids)}) "
        "  GROUP BY function_id) "
        "SELECT f.name FROM r JOIN (SELECT DISTINCT function_id, name FROM functions "
        "  WHERE function_id IN (SELECT function_id FROM r)) f USING (function_id) "
        "GROUP BY f.name HAVING sum(r.cum) >= $share * (SELECT sum(total) FROM profiles "
        f"  WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end) ORDER BY f.name",
        {"start": tr.start, "end": tr.end, "share": min_share},
    ).fetchall()
    return [r[0] for r in rows]


def function_values(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], span: TimeRange, names: Sequence[str]
) -> dict[str, npt.NDArray[Any]]:
    """``row``, ``name``, ``flat``, ``cum``: each name's values (summed over its function ids) per profile
    time, ``row`` being that profile's row in :func:`profile_totals` over the same span."""
    ids = id_list(series_ids)
    return cur.execute(
        "WITH p AS (SELECT series_id, ts, row_number() OVER (ORDER BY ts, series_id) - 1 AS row "
        f"  FROM profiles WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end GROUP BY series_id, ts), "
        "fn AS (SELECT DISTINCT function_id, name FROM functions WHERE name IN (SELECT unnest($names))) "
        "SELECT p.row, fn.name, sum(r.flat)::DOUBLE AS flat, sum(r.cum)::DOUBLE AS cum "
        f"FROM ({rollups_between('$start', '$end', ids)}) r JOIN fn USING (function_id) JOIN p USING (series_id, ts) "
        "GROUP BY p.row, fn.name",
        {"start": span.start, "end": span.end, "names": list(names)},
    ).fetchnumpy()


def call_edges(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange, names: Sequence[str]
) -> list[tuple[str, str]]:
    """``(callee, caller)`` pairs on the stacks sampled in ``tr``: the direct callers of each of ``names``,
    and the direct callers of every function those callers call. Recursion (a caller of itself) is skipped.

    Stacks list frames leaf first, so a frame's caller is the next one.
    """
    pairs = (
        f"WITH st AS (SELECT DISTINCT stack_id FROM ({values_between('$start', '$end', id_list(series_ids))})), "
        "fr AS (SELECT s.stack_id, unnest(s.function_ids) AS fid, generate_subscripts(s.function_ids, 1) AS pos "
        "  FROM stacks s WHERE s.stack_id IN (SELECT stack_id FROM st)), "
        "named AS (SELECT fr.stack_id, fr.pos, f.name FROM fr JOIN functions f ON f.function_id = fr.fid), "
        "edge AS (SELECT DISTINCT a.name AS callee, b.name AS caller FROM named a "
        "  JOIN named b ON a.stack_id = b.stack_id AND b.pos = a.pos + 1 WHERE b.name <> a.name) "
        "SELECT callee, caller FROM edge WHERE caller IN "
        "  (SELECT caller FROM edge WHERE callee IN (SELECT unnest($names)))"
    )
    return [(a, b) for a, b in cur.execute(pairs, {"start": tr.start, "end": tr.end, "names": list(names)}).fetchall()]


def caller_paths(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange, name: str
) -> list[tuple[int, int, tuple[str, ...], float]]:
    """``(series_id, ts, frames, value)``: every stack sampled in ``tr`` that holds ``name``, per profile
    time, its frames named (leaf first) and its value summed over labels.

    For the few functions a run reports: where on the call tree a rise sits is what says which
    caller changed, and only the stacks through the function can say it.
    """
    rows = cur.execute(
        f"WITH v AS (SELECT series_id, ts, stack_id, sum(value) AS value FROM "
        f"  ({values_between('$start', '$end', id_list(series_ids))}) GROUP BY ALL), "
        "st AS (SELECT stack_id, any_value(function_ids) AS fids FROM stacks "
        "  WHERE stack_id IN (SELECT stack_id FROM v) GROUP BY stack_id), "
        "fid AS (SELECT list(DISTINCT function_id) AS ids FROM functions WHERE name = $name) "
        "SELECT v.series_id, v.ts, st.fids, sum(v.value)::DOUBLE FROM v JOIN st USING (stack_id), fid "
        "WHERE list_has_any(st.fids, fid.ids) GROUP BY ALL",
        {"start": tr.start, "end": tr.end, "name": name},
    ).fetchall()
    ids = sorted({f for r in rows for f in r[2]})
    names = dict(
        cur.execute(
            "SELECT function_id, any_value(name) FROM functions WHERE function_id IN (SELECT unnest($ids)) GROUP BY 1",
            {"ids": ids},
        ).fetchall()
    )
    return [(int(sid), int(ts), tuple(names.get(f, "?") for f in fids), float(v)) for sid, ts, fids, v in rows]
