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

import numpy as np
import numpy.typing as npt

from service.query.source import ProfileSource
from service.store.reads import SeriesRow
from service.types import I64, ProfileType, TimeRange

__all__ = ["Panel", "callers_of", "load_panel", "unit_key", "unit_name"]

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
    # Per profile, seconds of profile duration (0 where the profile did not say): what turns a
    # function's value into an absolute rate, the second test a rise of its share must pass.
    duration: F64 = field(default_factory=lambda: np.zeros(0))
    callers: dict[str, list[str]] = field(default_factory=dict)  # immediate callers of candidate functions

    def __len__(self) -> int:
        return int(self.ts.size)


def load_panel(
    src: ProfileSource,
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
    ids = [s.series_id for s in series]
    prof = src.profile_totals(ids, span)
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
        functions = src.heavy_functions(ids, recent, min_share)
    names = list(functions)
    flat = np.zeros((ts.size, len(names)), np.float64)
    cum = np.zeros((ts.size, len(names)), np.float64)
    if names and ts.size:
        # Row numbers in the order of the profiles read above, so values land by fancy indexing.
        vals = src.function_values(ids, span, names)
        col_of = {n: j for j, n in enumerate(names)}
        r = np.asarray(vals["row"], np.int64)
        c = np.fromiter((col_of[n] for n in vals["name"].tolist()), np.int64, len(vals["name"]))
        flat[r, c] = np.asarray(vals["flat"], np.float64)
        cum[r, c] = np.asarray(vals["cum"], np.float64)
    duration = np.asarray(prof["duration"], np.float64)
    return Panel(profile_type, service, series, units, ts, series_index, unit, total, names, flat, cum, duration)


def callers_of(
    src: ProfileSource, series: list[SeriesRow], tr: TimeRange, names: Sequence[str]
) -> dict[str, list[str]]:
    """Who calls whom around ``names`` in the stacks sampled in ``tr``: the direct callers of each
    name, and the direct callers of every function those callers call (the names' siblings).

    Stacks list frames leaf first, so a frame's caller is the next one; recursion is skipped.
    Read only for the few functions that passed the tests: the cost-shift filter needs them.
    """
    if not names or not series:
        return {}
    rows = src.call_edges([s.series_id for s in series], tr, names)
    out: dict[str, list[str]] = defaultdict(list)
    for callee, caller in rows:
        out[callee].append(caller)
    return {k: sorted(v) for k, v in out.items()}
