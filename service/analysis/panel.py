"""One service's per-function numbers, per profile, as dense arrays: what detection reads.

Detection never touches stacks or samples: ``profiles.total`` and the ``function_rollup`` rows
written at ingest give every function's flat and cum per profile, so a day of a service costs
one aggregation over the rollups. Only functions that hold a visible share of the recent window
become columns; a function missing from a profile is a 0 there (it was not sampled), not a gap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np
import numpy.typing as npt

from service.store.reads import SeriesRow, id_list, rollups_between, values_between
from service.types import ProfileType, TimeRange

__all__ = ["Panel", "callers_of", "load_panel", "unit_key", "unit_name"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def unit_key(labels: dict[str, str], volatile: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """What stays the same for one running instance when it is redeployed: its labels without
    the ``volatile`` ones (``version``, …), which are what attribution reports."""
    return tuple(sorted((k, v) for k, v in labels.items() if k not in volatile))


def unit_name(key: tuple[tuple[str, str], ...]) -> str:
    """How findings name an instance: its ``instance`` label, else all of its labels."""
    labels = dict(key)
    return labels.get("instance") or ",".join(f"{k}={v}" for k, v in key)


@dataclass(slots=True)
class Panel:
    """Profiles of one service and profile type, oldest first, and the candidate functions."""

    profile_type: ProfileType
    service: str
    series: list[SeriesRow]
    units: list[tuple[tuple[str, str], ...]]  # instance keys (labels without the volatile ones)
    ts: I64  # per profile
    series_index: I64  # per profile: index into ``series``
    unit: I64  # per profile: index into ``units``
    total: F64  # per profile
    functions: list[str]
    flat: F64  # (profiles, functions)
    cum: F64
    callers: dict[str, list[str]] = field(default_factory=dict)  # immediate callers of candidate functions

    def __len__(self) -> int:
        return int(self.ts.size)


def load_panel(
    cur: duckdb.DuckDBPyConnection,
    profile_type: ProfileType,
    service: str,
    series: list[SeriesRow],
    span: TimeRange,
    recent: TimeRange,
    *,
    min_share: float,
    volatile: Sequence[str],
    functions: Sequence[str] | None = None,
) -> Panel:
    """Profiles of ``series`` inside ``span``; columns for functions whose cum holds at least
    ``min_share`` of the ``recent`` window's total (or exactly ``functions`` when given).

    A name's flat and cum sum its function ids, as the time series endpoint does; two profiles
    of one series at one time are one row (their sum), as a merge would see them.
    """
    ids = id_list(s.series_id for s in series)
    bounds = {"start": span.start, "end": span.end}
    prof = cur.execute(
        f"SELECT series_id, ts, sum(total)::DOUBLE AS total FROM profiles WHERE series_id IN ({ids}) "
        "AND ts >= $start AND ts < $end GROUP BY series_id, ts ORDER BY ts, series_id",
        bounds,
    ).fetchnumpy()
    by_id = {s.series_id: i for i, s in enumerate(series)}
    units: list[tuple[tuple[str, str], ...]] = []
    unit_of: dict[tuple[tuple[str, str], ...], int] = {}
    series_unit = []
    for s in series:
        key = unit_key(s.labels, volatile)
        series_unit.append(unit_of.setdefault(key, len(units)))
        if len(units) < len(unit_of):
            units.append(key)
    sid = np.asarray(prof["series_id"], np.uint64)
    ts = np.asarray(prof["ts"], np.int64)
    uniq, inverse = np.unique(sid, return_inverse=True)  # a Python lookup per series, not per profile
    series_index = np.array([by_id[int(u)] for u in uniq], np.int64)[inverse].reshape(-1)
    unit = np.asarray(series_unit, np.int64)[series_index] if sid.size else np.zeros(0, np.int64)
    total = np.asarray(prof["total"], np.float64)

    if functions is None:
        rows = cur.execute(
            f"SELECT f.name FROM ({rollups_between('$start', '$end', ids)}) r JOIN functions f USING (function_id) "
            "GROUP BY f.name HAVING sum(r.cum) >= $share * (SELECT sum(total) FROM profiles "
            f"  WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end) ORDER BY f.name",
            {"start": recent.start, "end": recent.end, "share": min_share},
        ).fetchall()
        functions = [r[0] for r in rows]
    names = list(functions)
    flat = np.zeros((ts.size, len(names)), np.float64)
    cum = np.zeros((ts.size, len(names)), np.float64)
    if names and ts.size:
        # Row numbers in the order of the profiles read above, so values land by fancy indexing.
        vals = cur.execute(
            "WITH p AS (SELECT series_id, ts, row_number() OVER (ORDER BY ts, series_id) - 1 AS row "
            f"  FROM profiles WHERE series_id IN ({ids}) AND ts >= $start AND ts < $end GROUP BY series_id, ts), "
            "fn AS (SELECT function_id, name FROM functions WHERE name IN (SELECT unnest($names))) "
            "SELECT p.row, fn.name, sum(r.flat)::DOUBLE AS flat, sum(r.cum)::DOUBLE AS cum "
            f"FROM ({rollups_between('$start', '$end', ids)}) r JOIN fn USING (function_id) JOIN p USING (series_id, ts) "
            "GROUP BY p.row, fn.name",
            {**bounds, "names": names},
        ).fetchnumpy()
        col_of = {n: j for j, n in enumerate(names)}
        r = np.asarray(vals["row"], np.int64)
        c = np.fromiter((col_of[n] for n in vals["name"].tolist()), np.int64, len(vals["name"]))
        flat[r, c] = np.asarray(vals["flat"], np.float64)
        cum[r, c] = np.asarray(vals["cum"], np.float64)
    return Panel(profile_type, service, series, units, ts, series_index, unit, total, names, flat, cum)


def callers_of(
    cur: duckdb.DuckDBPyConnection, series: list[SeriesRow], tr: TimeRange, names: Sequence[str]
) -> dict[str, list[str]]:
    """Who calls whom around ``names`` in the stacks sampled in ``tr``: the direct callers of each
    name, and the direct callers of every function those callers call (the names' siblings).

    Stacks list frames leaf first, so a frame's caller is the next one; recursion is skipped.
    Read only for the few functions that passed the tests: the cost-shift filter needs them.
    """
    if not names or not series:
        return {}
    pairs = (
        f"WITH st AS (SELECT DISTINCT stack_id FROM ({values_between('$start', '$end', id_list(s.series_id for s in series))})), "
        "fr AS (SELECT s.stack_id, unnest(s.function_ids) AS fid, generate_subscripts(s.function_ids, 1) AS pos "
        "  FROM stacks s WHERE s.stack_id IN (SELECT stack_id FROM st)), "
        "named AS (SELECT fr.stack_id, fr.pos, f.name FROM fr JOIN functions f ON f.function_id = fr.fid), "
        "edge AS (SELECT DISTINCT a.name AS callee, b.name AS caller FROM named a "
        "  JOIN named b ON a.stack_id = b.stack_id AND b.pos = a.pos + 1 WHERE b.name <> a.name) "
        "SELECT callee, caller FROM edge WHERE caller IN "
        "  (SELECT caller FROM edge WHERE callee IN (SELECT unnest($names)))"
    )
    rows = cur.execute(pairs, {"start": tr.start, "end": tr.end, "names": list(names)}).fetchall()
    out: dict[str, list[str]] = defaultdict(list)
    for callee, caller in rows:
        out[callee].append(caller)
    return {k: sorted(v) for k, v in out.items()}
