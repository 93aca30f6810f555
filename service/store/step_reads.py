"""Values per time step as SQL: a series' total, or one function's flat or cum, per step and series.

Both come from per-profile numbers computed at ingest (``profiles.total`` and the
``function_rollup`` rows), so a week of a fleet is answered without reading a single stack.
"""

from __future__ import annotations

import duckdb

from service.store.reads import id_list

__all__ = ["step_values"]

_VALUES_TOTAL = (
    "SELECT series_id, ts, total::DOUBLE AS value FROM profiles "
    "WHERE series_id IN ({ids}) AND ts BETWEEN $start AND $end"
)
_VALUES_FUNCTION = (
    "SELECT series_id, ts, sum({col})::DOUBLE AS value FROM rollup_values "
    "WHERE series_id IN ({ids}) AND ts BETWEEN $start AND $end "
    "AND function_id IN (SELECT function_id FROM functions WHERE name = $function) GROUP BY series_id, ts"
)
_BUCKETS = """
WITH p AS (
    SELECT series_id, (ts - $start) // $step AS bucket, count(*) AS n, max(ts) AS last_ts FROM profiles
    WHERE series_id IN ({ids}) AND ts BETWEEN $start AND $end GROUP BY ALL
), v AS ({values})
SELECT p.series_id, p.bucket,
    CASE $agg
        WHEN 'sum' THEN coalesce(sum(v.value), 0)
        WHEN 'avg' THEN coalesce(sum(v.value), 0) / p.n
        ELSE coalesce(sum(v.value) FILTER (WHERE v.ts = p.last_ts), 0)
    END AS value
FROM p LEFT JOIN v ON v.series_id = p.series_id AND (v.ts - $start) // $step = p.bucket
GROUP BY p.series_id, p.bucket, p.n, p.last_ts
ORDER BY p.bucket
"""


def step_values(
    cur: duckdb.DuckDBPyConnection,
    series_ids: list[int],
    start: int,
    end: int,
    step: int,
    aggregation: str,
    *,
    function: str | None = None,
    value: str = "flat",
) -> list[tuple[int, int, float]]:
    """``(series_id, bucket, value)`` for the profiles of ``series_ids`` with ``start <= ts <= end``,
    bucket ``b`` holding ``[start + b * step, start + (b + 1) * step)``, ordered by bucket.

    A series' profiles in a bucket combine by ``aggregation``: ``sum``, ``avg`` (over its profiles
    in the bucket) or ``last`` (its latest one). The value is each profile's total, or with
    ``function`` that function's ``value`` (``flat`` or ``cum``) summed over its function ids.
    """
    ids = id_list(series_ids)
    values = (_VALUES_TOTAL if function is None else _VALUES_FUNCTION).format(
        ids=ids, col="cum" if value == "cum" else "flat"
    )
    params: dict[str, object] = {"start": start, "end": end, "step": step, "agg": aggregation}
    if function is not None:
        params["function"] = function
    rows = cur.execute(_BUCKETS.format(values=values, ids=ids), params).fetchall()
    return [(int(sid), int(bucket), float(v)) for sid, bucket, v in rows]
