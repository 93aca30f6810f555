"""Values over time: a series' total per step, or one function's flat or cum per step.

Both come from per-profile numbers computed at ingest (``profiles.total`` and the
``function_rollup`` rows), so a week of a fleet is answered without reading a single stack.
Within a step, profiles of one series combine by the query's :class:`Aggregation` (sum for
cumulative types; the average scrape, or the last, for gauges); series are then summed per
``group_by`` group. Steps without any profile of a series have no point for it.

Steps are labelled by their end, as Pyroscope's ``SelectSeries`` labels them (Grafana draws what
it gets, so the REST API and the Connect API must agree): points sit at ``start + k * step``
(k >= 0) and each holds the profiles of ``(t - step, t]``. The first point, at ``start``, holds the
step before it, as Pyroscope reads one step before ``start``; a profile after the last whole step
lands on the next label, past ``end``, rather than being dropped.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from dataclasses import dataclass

from service.errors import InvalidRequest
from service.query.aggregation import Aggregation
from service.query.source import ProfileSource
from service.store.reads import SeriesRow
from service.types import TimeRange

__all__ = ["Point", "Series", "check_function", "timeseries"]


@dataclass(frozen=True, slots=True)
class Point:
    ts: int  # end of the step, unix nanoseconds: the point holds the profiles of (ts - step, ts]
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    points: list[Point]


def timeseries(
    src: ProfileSource,
    series: list[SeriesRow],
    tr: TimeRange,
    step_ns: int,
    aggregation: Aggregation,
    *,
    group_by: list[str] | None = None,
    function: str | None = None,
    value: str = "flat",
) -> list[Series]:
    """One line per series, or per distinct value of the ``group_by`` labels (missing labels are "").

    Points are labelled by the end of their step (see the module docstring): the profiles read are
    those of ``(tr.start - step, tr.end]``.
    """
    if not series:
        return []
    if function is not None:
        check_function(src, series, tr, function)
    # The stored buckets are [lo + b * step, lo + (b + 1) * step): with lo one step minus 1 ns before the
    # start, bucket b is (start + (b - 1) * step, start + b * step], labelled start + b * step.
    lo = tr.start - step_ns + 1
    rows = src.step_values(
        [s.series_id for s in series], lo, tr.end, step_ns, aggregation.value, function=function, value=value
    )
    by_id = {s.series_id: s for s in series}

    def key(s: SeriesRow) -> tuple[tuple[str, str], ...]:
        if group_by is None:
            return tuple(sorted(s.labels.items()))
        return tuple((k, s.labels.get(k, "")) for k in group_by)

    lines: dict[tuple[tuple[str, str], ...], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for sid, bucket, v in rows:
        lines[key(by_id[sid])][bucket] += v
    return [
        Series(dict(k), [Point(tr.start + b * step_ns, pts[b]) for b in sorted(pts)])
        for k, pts in sorted(lines.items())
    ]


def check_function(src: ProfileSource, series: list[SeriesRow], tr: TimeRange, function: str) -> None:
    """InvalidRequest when no stored function has the name ``function``, with the names meant.

    Names are exact (``crypto/sha256.block``), so a short one (``sha256.block``) matched nothing
    and answered zeros — a flat line that looks like a real measurement. A name that exists but
    is not on these stacks in the range still answers zeros: the function did not run.
    Suggestions are the functions of the matching series in the range whose name ends in the
    given one after a ``/`` or ``.``, else the closest spellings.
    """
    if src.function_exists(function):
        return
    names = src.function_names([s.series_id for s in series], tr)
    meant = [n for n in names if n.endswith(("/" + function, "." + function))][:3]
    meant = meant or difflib.get_close_matches(function, names, n=3, cutoff=0.6)
    hint = ""
    if meant:
        quoted = [f'"{n}"' for n in meant]
        hint = (
            "; did you mean " + (quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]) + "?"
        )
    raise InvalidRequest(f'no function named "{function}" in the matching series{hint}')
