"""Stack rollups per minute and per hour, so a merge over days reads buckets instead of profiles.

A bucket is rolled up once it ended ``lag`` ago (profiles still being scraped land first):
minute buckets from the raw samples, hour buckets from the minute buckets. Profiles that arrive
later for a rolled-up bucket mark it dirty (the writer does, in the profile's transaction); the
next run recomputes those buckets from the raw samples. Everything runs in the writer thread
(:meth:`Writer.call`), one transaction per run, so a rollup is never half-written and never
races an insert.
"""

from __future__ import annotations

import duckdb

from service.store.reads import values_between
from service.store.transaction import transaction

__all__ = ["RESOLUTIONS", "compact", "floor_to"]

RESOLUTIONS = (60, 3600)  # seconds, finest first
NS = 1_000_000_000


def floor_to(ts: int, seconds: int) -> int:
    step = seconds * NS
    return ts - ts % step


def _bucket(col: str, seconds: int) -> str:
    step = seconds * NS
    return f"({col} - (({col} % {step}) + {step}) % {step})"


def compact(con: duckdb.DuckDBPyConnection, now_ns: int, lag_s: int = 60) -> dict[int, int]:
    """Recompute dirty buckets, roll up the newly complete ones; returns each resolution's new ``done_until``."""
    with transaction(con):
        done = dict(con.execute("SELECT resolution, done_until FROM rollup_state").fetchall())
        for r in RESOLUTIONS:
            step = r * NS
            # 1. Buckets that received profiles after they were rolled up: recompute from raw samples.
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _dirty AS SELECT DISTINCT series_id, bucket FROM rollup_dirty "
                "WHERE resolution = $r",
                {"r": r},
            )
            con.execute(
                "DELETE FROM stack_rollup WHERE resolution = $r AND EXISTS (SELECT 1 FROM _dirty d "
                "WHERE d.series_id = stack_rollup.series_id AND d.bucket = stack_rollup.bucket)",
                {"r": r},
            )
            span = con.execute("SELECT min(bucket), max(bucket) FROM _dirty").fetchone()
            if span is not None and span[0] is not None:
                raw = values_between("$lo", "$hi", "SELECT series_id FROM _dirty")
                con.execute(
                    f"INSERT INTO stack_rollup SELECT $r, v.series_id, {_bucket('v.ts', r)} AS bucket, v.stack_id, "
                    f"sum(v.value)::BIGINT FROM ({raw}) v JOIN _dirty d ON v.series_id = d.series_id "
                    "AND v.ts >= d.bucket AND v.ts < d.bucket + $step GROUP BY ALL ORDER BY bucket, series_id",
                    {"r": r, "step": step, "lo": span[0], "hi": span[1] + step},
                )
            con.execute("DELETE FROM rollup_dirty WHERE resolution = $r", {"r": r})
            # 2. Buckets complete since the last run.
            lo = done[r]
            hi = floor_to(now_ns - lag_s * NS, r)
            if r != RESOLUTIONS[0]:
                hi = min(hi, floor_to(done[RESOLUTIONS[0]], r))  # hours are built from complete minutes
            if hi <= lo:
                continue
            if r == RESOLUTIONS[0]:
                source = (
                    f"SELECT series_id, {_bucket('ts', r)} AS bucket, stack_id, sum(value)::BIGINT "
                    f"FROM ({values_between('$lo', '$hi')}) GROUP BY ALL"
                )
                params = {"lo": lo, "hi": hi}
            else:
                source = (
                    f"SELECT series_id, {_bucket('bucket', r)} AS b, stack_id, sum(value)::BIGINT FROM stack_rollup "
                    "WHERE resolution = $fine AND bucket >= $lo AND bucket < $hi GROUP BY ALL"
                )
                params = {"lo": lo, "hi": hi, "fine": RESOLUTIONS[0]}
            # In bucket order, so the min/max of each row group lets a query skip all but its range.
            con.execute(f"INSERT INTO stack_rollup SELECT {r}, * FROM ({source}) ORDER BY 3, 2", params)
            con.execute("UPDATE rollup_state SET done_until = $hi WHERE resolution = $r", {"hi": hi, "r": r})
            done[r] = hi
        con.execute("DROP TABLE IF EXISTS _dirty")
    return done
