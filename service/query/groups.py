"""Merged stacks per group of series and per window: what top, the flame graph and diff read, and
what Pyroscope's Connect API selects (a span's samples, the stacks below a call site).

The API layer parses a request and picks the series; everything after that (splitting them by
``group_by`` labels, planning each group's reads, merging, naming, pprof's filters, span and
call-site selection, and running a diff's base window beside its current one) happens here, so a
second front end (the web UI, or another protocol) asks the same questions without HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from service.query.aggregation import Aggregation
from service.query.plan import plan
from service.query.source import ProfileSource, Sources
from service.query.stacks import StackNames, StackSet, load_stacks, merge_stacks
from service.store.reads import SeriesRow
from service.types import TimeRange

__all__ = ["Group", "PprofFilters", "grouped_stacks", "members", "selected_stacks", "two_windows"]

# focus, ignore, hide: pprof's regexes (None where not given)
PprofFilters = tuple[str | None, str | None, str | None]

# A diff's base window merges here, on its own cursor, while the request's thread merges and
# names the current window: DuckDB runs both at once on two cores.
_BASE_WINDOWS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="profstore-diff-base")


def members(series: Sequence[SeriesRow], keys: Sequence[str]) -> dict[tuple[str, ...], list[int]]:
    """The series ids of each group: one per distinct value of the ``keys`` labels (a missing label is "")."""
    out: dict[tuple[str, ...], list[int]] = {}
    for s in series:
        out.setdefault(tuple(s.labels.get(k, "") for k in keys), []).append(s.series_id)
    return out


@dataclass(frozen=True, slots=True)
class Group:
    labels: dict[str, str]
    stacks: StackSet  # after filters
    before: int  # total before filters: what pprof's percentages are of


def grouped_stacks(
    src: ProfileSource,
    names: StackNames,
    series: Sequence[SeriesRow],
    keys: Sequence[str],
    tr: TimeRange,
    aggregation: Aggregation,
    filters: PprofFilters,
    *,
    raw: bool = False,
) -> tuple[list[Group], list[str]]:
    """The merged stacks of each group after ``filters`` (one group when ``keys`` is empty), and the
    resolutions read (raw, minute, hour rollups), each once in order of first use."""
    resolutions: list[str] = []
    groups: list[Group] = []
    # No series: one empty group (its label values "", as for a series without them).
    for key, ids in sorted(members(series, keys).items()) or [(("",) * len(keys), [])]:
        p = plan(src, ids, tr, aggregation, raw=raw)
        stacks = load_stacks(src, ids, tr, aggregation, p, names)
        groups.append(Group(dict(zip(keys, key, strict=True)), stacks.filter(*filters), stacks.total))
        if p.resolution not in resolutions:
            resolutions.append(p.resolution)
    return groups, resolutions


def two_windows(
    sources: Sources,
    names: StackNames,
    src: ProfileSource,
    current: tuple[list[int], TimeRange],
    base: tuple[list[int], TimeRange],
    aggregation: Aggregation,
    *,
    raw: bool = False,
) -> tuple[StackSet, StackSet, str]:
    """Both windows' stacks: the base window plans and merges on a source of its own (opened from
    ``sources``) while ``src`` merges and names the current window; the base's stacks are then mostly
    named already."""
    (ids, tr), (base_ids, base_tr) = current, base

    def merge_base() -> tuple[pa.Table, str]:
        with sources.read() as base_src:
            base_p = plan(base_src, base_ids, base_tr, aggregation, raw=raw)
            return merge_stacks(base_src, base_ids, base_tr, aggregation, base_p), base_p.resolution

    pending = _BASE_WINDOWS.submit(merge_base)
    p = plan(src, ids, tr, aggregation, raw=raw)
    now = names.name(src, merge_stacks(src, ids, tr, aggregation, p))
    base_merged, base_resolution = pending.result()
    return now, names.name(src, base_merged), f"{p.resolution}, {base_resolution}"


def selected_stacks(
    src: ProfileSource,
    names: StackNames,
    series_ids: list[int],
    tr: TimeRange,
    aggregation: Aggregation,
    *,
    spans: Sequence[str] = (),
    call_site: Sequence[str] = (),
) -> StackSet:
    """The merged, named stacks of ``series_ids`` in ``tr``, narrowed as Pyroscope's selectors narrow them.

    With ``spans``, only the samples labelled with one of those ``span_id`` values, summed (a
    span's samples are its own, whatever the type); otherwise merged by ``aggregation`` as planned.
    With ``call_site`` (frames root first), only the stacks below that call path.
    """
    if spans:
        stacks = names.name(src, src.span_stacks(series_ids, tr, list(spans)))
    else:
        stacks = load_stacks(src, series_ids, tr, aggregation, plan(src, series_ids, tr, aggregation), names)
    return stacks.under_call_site(list(call_site)) if call_site else stacks
