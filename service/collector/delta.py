"""Client-side deltas of cumulative Go profiles: what happened between two scrapes.

Go reports ``alloc_objects``/``alloc_space`` (allocs, heap), ``contentions`` and ``delay``
(block, mutex) as totals since the process started. Stored as scraped, every profile would
repeat every stack that ever allocated (parca-dev/parca#3402) and a query over an hour would add
up the same allocations once per scrape. So the collector subtracts the previous scrape of the
same series and stores the difference, as Alloy's ``pyroscope.scrape`` does. Go's own
``?seconds=`` delta is not used: it negates the in-use snapshot columns too and holds the
request open for the whole interval (golang/go#67942); here the ``inuse_*`` columns pass through
as scraped.

Samples are matched across scrapes by content — the stack (locations by address, mapping and
lines) plus the label set — never by location id, which Go renumbers in every profile. The
first scrape of a series has nothing to subtract from, so it only sets the baseline. A counter
that goes down can only mean the process restarted (its counters began again at zero); storing
the difference would store negative allocations, so that scrape re-baselines instead.

A fleet of a thousand targets scraping memory every 15 s runs this ~70 times a second, so the
work is column-wise (one compiled hashing pass, then sorted-array joins) and a baseline holds
only a hash and the cumulative values per stack, not the profile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from service.pprof.batch import expand, rows_of
from service.pprof.hashing import content_ids, hash_fields, hash_strings, mix
from service.pprof.model import LabelSet, Profile, Samples, ValueType, offsets_of

__all__ = ["CUMULATIVE_TYPES", "DeltaResult", "Deltas", "identities"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

CUMULATIVE_TYPES = frozenset({"alloc_objects", "alloc_space", "contentions", "delay"})
"""Sample type names Go counts since process start (the rest, ``inuse_*`` etc., are snapshots)."""


@dataclass(frozen=True, slots=True)
class DeltaResult:
    profile: Profile | None  # None: nothing to store this time (a baseline was set)
    outcome: str  # "stored_as_is", "baseline", "rebaseline_restart" or "delta"
    detail: str


@dataclass(frozen=True, slots=True)
class _Baseline:
    sample_types: tuple[ValueType, ...]
    period_type: ValueType | None
    ids: U64  # identity hashes, sorted and unique
    values: I64  # (len(ids), number of cumulative types): the cumulative values of each identity
    scraped_at_ns: int


class _Series:
    """One key's baseline, with a lock so that two scrapes of one key never interleave."""

    __slots__ = ("baseline", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.baseline: _Baseline | None = None


class Deltas:
    """Baselines per series key (thread-safe; one instance per collector).

    Different keys are computed in parallel (the hashing kernel runs without the GIL); scrapes of
    one key are serialized, since each one's result depends on the previous one's baseline.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[str, _Series] = {}

    def __len__(self) -> int:
        """Number of keys with a baseline."""
        with self._lock:
            return sum(1 for s in self._series.values() if s.baseline is not None)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a baseline (its next scrape of a cumulative profile yields a delta)."""
        with self._lock:
            s = self._series.get(key) if isinstance(key, str) else None
            return s is not None and s.baseline is not None

    def apply(self, key: str, profile: Profile, scraped_at_ns: int) -> DeltaResult:
        """Turn the scrape ``profile`` of series ``key``, taken at ``scraped_at_ns``, into what is to be stored."""
        cols = np.array([i for i, t in enumerate(profile.sample_types) if t.type in CUMULATIVE_TYPES], np.int64)
        if cols.size == 0:
            types = " ".join(map(str, profile.sample_types)) or "none"
            return DeltaResult(profile, "stored_as_is", f"no cumulative sample type ({types}); stored as scraped")
        with self._lock:
            series = self._series.setdefault(key, _Series())
        with series.lock:
            return _apply(series, profile, cols, scraped_at_ns)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the baselines of every key not in ``keep`` (targets no longer scraped after a reload).

        A scrape of a dropped key that is still running finishes against its old baseline and
        its new one is discarded; the key's next scrape starts over with a baseline.
        """
        kept = set(keep)
        with self._lock:
            self._series = {k: s for k, s in self._series.items() if k in kept}


def identities(p: Profile) -> U64:
    """A content hash of each sample's stack and label set (equal across scrapes, whatever the ids)."""
    s, loc, fn, mp = p.samples, p.locations, p.functions, p.mappings

    def rows(ref_ids: U64, def_ids: U64) -> I64:
        return rows_of(np.zeros(ref_ids.size, np.int64), ref_ids, def_ids, offsets_of([def_ids.size]))

    no_labels = np.zeros(0, np.int64)
    ids = content_ids(
        hash_strings(p.strings),
        mp,
        fn,
        loc,
        location_mapping=rows(loc.mapping_id, mp.id),
        line_function=rows(loc.line_function_id, fn.id),
        offsets=s.offsets,
        sample_location=rows(s.location_ids, loc.id),
        labels=(no_labels, no_labels, no_labels, no_labels, no_labels),
    )
    # Label sets are Python tuples in the model: hash each distinct set once, then index.
    set_hash = np.array([_labelset_hash(ls) for ls in s.labelsets], np.uint64)
    return mix(ids.stack, set_hash[s.labelset_index])


def _labelset_hash(ls: LabelSet) -> int:
    if not ls:
        return 0
    # Order-independent: a label set is a set. repr() quotes strings, so fields cannot run together.
    return hash_fields(*sorted(repr((lb.key, lb.str, lb.num, lb.num_unit)) for lb in ls))


def _kind(types: tuple[ValueType, ...], period_type: ValueType | None) -> str:
    return " ".join(map(str, types)) + f" per {period_type or 'no period type'}"


def _apply(series: _Series, p: Profile, cols: I64, scraped_at_ns: int) -> DeltaResult:
    ident = identities(p)
    uniq, first, inverse = np.unique(ident, return_index=True, return_inverse=True)
    sums = np.zeros((uniq.size, len(p.sample_types)), np.int64)
    np.add.at(sums, inverse, p.samples.values)  # samples of equal identity count as one
    current = np.ascontiguousarray(sums[:, cols])
    base = series.baseline
    series.baseline = _Baseline(p.sample_types, p.period_type, uniq, current, scraped_at_ns)

    if base is None:
        return DeltaResult(None, "baseline", "first scrape sets the baseline")
    if base.sample_types != p.sample_types or base.period_type != p.period_type:
        was, now = _kind(base.sample_types, base.period_type), _kind(p.sample_types, p.period_type)
        return DeltaResult(None, "baseline", f"sample types changed from [{was}] to [{now}]; new baseline")

    before = np.zeros_like(current)
    if base.ids.size:
        pos = np.minimum(np.searchsorted(base.ids, uniq), base.ids.size - 1)
        hit = base.ids[pos] == uniq
        before[hit] = base.values[pos[hit]]
    delta = current - before

    names = [p.sample_types[c].type for c in cols.tolist()]
    down = delta < 0
    if down.any():
        which = ", ".join(names[c] for c in np.flatnonzero(down.any(axis=0)).tolist())
        stacks = int(down.any(axis=1).sum())
        return DeltaResult(
            None,
            "rebaseline_restart",
            f"{which} went down for {stacks} stack{'s' if stacks != 1 else ''}: the process restarted; new baseline",
        )
    was_total, now_total = base.values.sum(axis=0), current.sum(axis=0)
    lower = np.flatnonzero(now_total < was_total)
    if lower.size:
        c = int(lower[0])
        return DeltaResult(
            None,
            "rebaseline_restart",
            f"total {names[c]} went down from {int(was_total[c])} to {int(now_total[c])}: "
            "the process restarted; new baseline",
        )

    out = sums
    out[:, cols] = delta
    kept = np.flatnonzero(out.any(axis=1))
    kept = kept[np.argsort(first[kept])]  # in the order the scrape listed them
    rep = first[kept]  # the first sample of each identity stands for it
    s = p.samples
    depth = np.diff(s.offsets)[rep]
    samples = Samples(
        offsets_of(depth),
        s.location_ids[expand(s.offsets[rep], depth)],
        out[kept],
        s.labelset_index[rep],
        list(s.labelsets),
    )
    duration = max(scraped_at_ns - base.scraped_at_ns, 0)  # a wall clock stepped back gives no negative span
    result = replace(p, samples=samples, time_nanos=base.scraped_at_ns, duration_nanos=duration)
    detail = f"delta over {duration / 1e9:.3f} s: {kept.size} of {uniq.size} stacks changed or in use"
    return DeltaResult(result, "delta", detail)
