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

On a lake, where the live nodes share the targets out, a target that moves to another node (its
owner died, or a node joined) starts over there with a baseline, as after a restart: the previous
baseline is in the old owner's process. What the target allocated between the old owner's last
scrape and the new owner's first is in no stored profile (one or two intervals, once per move), and
nothing is ever counted twice. A node that gets a target back drops the baseline it kept from before.

A fleet of a thousand targets scraping memory every 15 s runs this ~70 times a second, so the
work is column-wise on the decoded profile (one compiled hashing pass, then sorted-array joins),
the delta is a selection of its columns (never a profile encoded to be parsed again), and a
baseline holds only a hash and the cumulative values per stack, not the profile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from service.pprof.decode import Envelope, check, content_ids_of, derived
from service.pprof.hashing import mix
from service.pprof.model import ValueType
from service.types import I64, U64

__all__ = ["CUMULATIVE_TYPES", "DeltaResult", "Deltas", "identities"]


CUMULATIVE_TYPES = frozenset({"alloc_objects", "alloc_space", "contentions", "delay"})
"""Sample type names Go counts since process start (the rest, ``inuse_*`` etc., are snapshots)."""


@dataclass(frozen=True, slots=True)
class DeltaResult:
    envelope: Envelope | None  # None: nothing to store this time (a baseline was set)
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

    def apply(self, key: str, env: Envelope, scraped_at_ns: int) -> DeltaResult:
        """Turn the scrape ``env`` of series ``key``, taken at ``scraped_at_ns``, into what is to be stored.

        Raises pprof's error when the profile is not valid (a baseline must be one).
        """
        types = env.header.sample_types
        cols = np.array([i for i, t in enumerate(types) if t.type in CUMULATIVE_TYPES], np.int64)
        if cols.size == 0:
            names = " ".join(map(str, types)) or "none"
            return DeltaResult(env, "stored_as_is", f"no cumulative sample type ({names}); stored as scraped")
        check(env)
        with self._lock:
            series = self._series.setdefault(key, _Series())
        with series.lock:
            return _apply(series, env, cols, scraped_at_ns)

    def drop(self, key: str) -> None:
        """Drop ``key``'s baseline: its next scrape sets a new one (another node scraped it meanwhile).

        A scrape of ``key`` being computed now sets its baseline on the dropped series, which is gone.
        """
        with self._lock:
            self._series.pop(key, None)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the baselines of every key not in ``keep`` (targets no longer scraped after a reload).

        A scrape of a dropped key that is still running finishes against its old baseline and
        its new one is discarded; the key's next scrape starts over with a baseline.
        """
        kept = set(keep)
        with self._lock:
            self._series = {k: s for k, s in self._series.items() if k in kept}


def identities(env: Envelope) -> U64:
    """A content hash of each sample's stack and label set (equal across scrapes, whatever the ids)."""
    ids = content_ids_of(env)
    return mix(ids.stack, ids.labelset)


def _kind(types: tuple[ValueType, ...], period_type: ValueType | None) -> str:
    return " ".join(map(str, types)) + f" per {period_type or 'no period type'}"


def _apply(series: _Series, env: Envelope, cols: I64, scraped_at_ns: int) -> DeltaResult:
    h, c = env.header, env.columns
    ident = identities(env)
    uniq, first, inverse = np.unique(ident, return_index=True, return_inverse=True)
    sums = np.zeros((uniq.size, len(h.sample_types)), np.int64)
    np.add.at(sums, inverse.reshape(-1), c.values.reshape(ident.size, -1))  # samples of equal identity count as one
    current = np.ascontiguousarray(sums[:, cols])
    base = series.baseline
    series.baseline = _Baseline(h.sample_types, h.period_type, uniq, current, scraped_at_ns)

    if base is None:
        return DeltaResult(None, "baseline", "first scrape sets the baseline")
    if base.sample_types != h.sample_types or base.period_type != h.period_type:
        was, now = _kind(base.sample_types, base.period_type), _kind(h.sample_types, h.period_type)
        return DeltaResult(None, "baseline", f"sample types changed from [{was}] to [{now}]; new baseline")

    before = np.zeros_like(current)
    if base.ids.size:
        pos = np.minimum(np.searchsorted(base.ids, uniq), base.ids.size - 1)
        hit = base.ids[pos] == uniq
        before[hit] = base.values[pos[hit]]
    delta = current - before

    names = [h.sample_types[c].type for c in cols.tolist()]
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
        k = int(lower[0])
        return DeltaResult(
            None,
            "rebaseline_restart",
            f"total {names[k]} went down from {int(was_total[k])} to {int(now_total[k])}: "
            "the process restarted; new baseline",
        )

    out = sums
    out[:, cols] = delta
    kept = np.flatnonzero(out.any(axis=1))
    kept = kept[np.argsort(first[kept])]  # in the order the scrape listed them
    rep = first[kept]  # the first sample of each identity stands for it
    duration = max(scraped_at_ns - base.scraped_at_ns, 0)  # a wall clock stepped back gives no negative span
    header = replace(h, time_nanos=base.scraped_at_ns, duration_nanos=duration)
    result = derived(env, c.select(rep, out[kept]), header=header, salt=("delta", base.scraped_at_ns))
    detail = f"delta over {duration / 1e9:.3f} s: {kept.size} of {uniq.size} stacks changed or in use"
    return DeltaResult(result, "delta", detail)
