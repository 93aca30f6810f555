"""The rows of a merged export as SQL: the selected profiles, their samples aggregated per series as the
query asks, and every stack, location, function, mapping and label set they reach.

The merge happens here, in DuckDB (content-hash ids make equal stacks equal rows); the query layer
rebuilds the pprof from these tables (``service/query/export.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from service.store.reads import id_list, rounded_quotient
from service.types import TimeRange

__all__ = ["ExportRows", "export_rows"]


@dataclass(slots=True)
class ExportRows:
    """Everything needed to rebuild one merged pprof, as Arrow tables keyed by content hash."""

    headers: pa.Table  # one row per selected source profile (group)
    samples: pa.Table  # stack_id, labelset_id, sample_type, value
    stacks: pa.Table
    locations: pa.Table
    functions: pa.Table
    mappings: pa.Table
    labelsets: pa.Table


def export_rows(
    cur: duckdb.DuckDBPyConnection,
    series_ids: list[int],
    tr: TimeRange,
    *,
    latest_only: bool = False,
    averaged: frozenset[str] | None = frozenset(),
) -> ExportRows:
    """Select the profiles of ``series_ids`` in ``tr`` and every sample type stored with them.

    A pprof with several sample types was stored as one series per type sharing a ``group_id``;
    the sibling series are pulled back in so a heap export has its four types again. A group
    belongs to one series of the queried type, so it inherits that series' aggregation:
    ``latest_only`` keeps each series' latest profile (and any at the same time), and the sample
    types named in ``averaged`` (every type when None) are each series' average profile, rounded
    to whole units per stack as ``top`` rounds it; the others are summed.
    """
    params = {"start": tr.start, "end": tr.end}
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _picked AS "
        "SELECT group_id, ts, count(*) OVER (PARTITION BY series_id) AS n, max(ts) OVER (PARTITION BY series_id) AS last_ts "
        f"FROM profiles WHERE series_id IN ({id_list(series_ids)}) AND ts BETWEEN $start AND $end",
        params,
    )
    average, avg_params = (
        "list_contains($averaged, p.sample_types[p.type_index + 1])",
        {"averaged": sorted(averaged or ())},
    )
    if latest_only or averaged == frozenset():
        average, avg_params = "FALSE", {}
    elif averaged is None:
        average, avg_params = "TRUE", {}
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _groups AS "
        "SELECT p.series_id, p.ts, p.group_id, p.sample_types[p.type_index + 1] || chr(31) || p.sample_units[p.type_index + 1] AS sample_type, "
        f"k.n, {average} AS averaged "
        "FROM profiles p JOIN _picked k USING (group_id)" + (" WHERE k.ts = k.last_ts" if latest_only else ""),
        avg_params,
    )
    headers = cur.execute(
        "SELECT group_id, any_value(sample_types) AS sample_types, any_value(sample_units) AS sample_units, "
        "any_value(default_sample_type) AS default_sample_type, any_value(time_nanos) AS time_nanos, "
        "any_value(duration_ns) AS duration_ns, any_value(period) AS period, any_value(comments) AS comments, "
        "any_value(doc_url) AS doc_url, any_value(drop_frames) AS drop_frames, any_value(keep_frames) AS keep_frames, "
        "min(ts) AS ts FROM profiles WHERE group_id IN (SELECT group_id FROM _groups) GROUP BY group_id ORDER BY ts, group_id"
    ).to_arrow_table()
    # Averaged types: each series' average scrape per (stack, label set), in whole units that add up,
    # per stack, to the series' rounded average of the stack (what top sums over series): every row
    # gets its floor, and the units left go to the rows with the largest remainders.
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _x_samples AS "
        "WITH per AS ("
        "  SELECT g.series_id, s.stack_id, s.labelset_id, g.sample_type, g.n, g.averaged, sum(s.value)::HUGEINT AS v "
        "  FROM sample_values s JOIN (SELECT DISTINCT series_id, ts, sample_type, n, averaged FROM _groups) g "
        "  ON s.series_id = g.series_id AND s.ts = g.ts GROUP BY ALL), "
        "parts AS (SELECT *, (v - r) // n AS q FROM (SELECT *, ((v % n) + n) % n AS r FROM per WHERE averaged)), "
        "shares AS ("
        "  SELECT *, sum(v) OVER w AS vs, sum(q) OVER w AS qs, "
        "  row_number() OVER (PARTITION BY series_id, stack_id, sample_type ORDER BY r DESC, labelset_id) AS rank "
        "  FROM parts WINDOW w AS (PARTITION BY series_id, stack_id, sample_type)) "
        "SELECT stack_id, labelset_id, sample_type, sum(value)::BIGINT AS value FROM ("
        "  SELECT stack_id, labelset_id, sample_type, v AS value FROM per WHERE NOT averaged "
        "  UNION ALL "
        f"  SELECT stack_id, labelset_id, sample_type, q + CASE WHEN rank <= {rounded_quotient('vs', 'n')} - qs THEN 1 ELSE 0 END "
        "  FROM shares"
        ") GROUP BY ALL"
    )
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _x_stacks AS SELECT stack_id, location_ids FROM stacks "
        "WHERE stack_id IN (SELECT stack_id FROM _x_samples) QUALIFY row_number() OVER (PARTITION BY stack_id) = 1"
    )
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE _x_locations AS SELECT * FROM locations "
        "WHERE location_id IN (SELECT DISTINCT unnest(location_ids) FROM _x_stacks) "
        "QUALIFY row_number() OVER (PARTITION BY location_id) = 1"
    )
    samples = cur.execute("SELECT * FROM _x_samples").to_arrow_table()
    stacks = cur.execute("SELECT * FROM _x_stacks").to_arrow_table()
    locations = cur.execute("SELECT * FROM _x_locations").to_arrow_table()
    functions = cur.execute(
        "SELECT * FROM functions WHERE function_id IN (SELECT DISTINCT unnest(function_ids) FROM _x_locations) "
        "QUALIFY row_number() OVER (PARTITION BY function_id) = 1"
    ).to_arrow_table()
    mappings = cur.execute(
        "SELECT * FROM mappings WHERE mapping_id IN (SELECT DISTINCT mapping_id FROM _x_locations) "
        "QUALIFY row_number() OVER (PARTITION BY mapping_id) = 1"
    ).to_arrow_table()
    labelsets = cur.execute(
        "SELECT * FROM labelsets WHERE labelset_id IN (SELECT DISTINCT labelset_id FROM _x_samples) "
        "QUALIFY row_number() OVER (PARTITION BY labelset_id) = 1"
    ).to_arrow_table()
    for name in ("_picked", "_groups", "_x_samples", "_x_stacks", "_x_locations"):
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    return ExportRows(headers, samples, stacks, locations, functions, mappings, labelsets)
