"""How profiles of one series combine over a range: summed, or for gauges averaged (or the last).

Cumulative and delta types (CPU time, allocations, contentions, delay) count what happened in
each scrape's interval, so a range is their sum. Gauges (in-use memory, goroutines, threads)
are a snapshot per scrape: summing twenty scrapes would show twenty times the heap, so by
default they average the scrapes of each series.
"""

from __future__ import annotations

import enum

from service.types import ProfileType

__all__ = ["Aggregation", "aggregation_for", "averaged_sample_types", "is_gauge"]

# Sample types that are a snapshot at scrape time rather than a count over the interval.
_GAUGES = frozenset({"inuse_space", "inuse_objects", "goroutine", "goroutines", "threadcreate"})


class Aggregation(enum.StrEnum):
    """How profiles of one series combine over a range."""

    SUM = "sum"  # cumulative/delta types: the range's total
    AVG = "avg"  # gauges: the average scrape of each series, summed over series
    LAST = "last"  # gauges: each series' latest scrape in the range


_GAUGE_NAMES = frozenset({"goroutine", "threadcreate"})


def is_gauge(pt: ProfileType) -> bool:
    return pt.sample_type in _GAUGES or pt.name in _GAUGE_NAMES


def aggregation_for(pt: ProfileType, asked: Aggregation | None) -> Aggregation:
    return asked or (Aggregation.AVG if is_gauge(pt) else Aggregation.SUM)


def averaged_sample_types(pt: ProfileType, asked: Aggregation | None) -> frozenset[str] | None:
    """The sample types of an export of ``pt`` that average over each series' scrapes (None: every type).

    An export carries every sample type stored with the queried one (a heap profile has in-use
    gauges and cumulative allocations side by side). Asked for an aggregation, every type gets
    it; by default each type gets its own default, so ``-sample_index`` on the export shows what
    ``top`` shows for that type.
    """
    if asked is Aggregation.AVG:
        return None
    if asked is not None:
        return frozenset()
    if pt.name in _GAUGE_NAMES:
        return None
    return _GAUGES
