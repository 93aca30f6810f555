"""Which stored resolution answers which part of a range: hour and minute rollups inside, raw samples at the edges.

A range ``[from, until]`` is cut into at most five spans: the whole hours inside it (from the
hour rollups), the whole minutes around those (minute rollups), and the raw samples of the
partial minutes at both ends. Only buckets that compaction has completed are used; if a bucket
that would be used is dirty (a late profile arrived for it), or the aggregation needs single
profiles (``last``), the whole range is read raw. Either way the answer is the same as the raw
one; only the work differs. :attr:`Plan.resolution` says what was used (a response header).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.query.aggregation import Aggregation
from service.query.source import Part, ProfileSource
from service.store.stack_rollups import NS, RESOLUTIONS
from service.types import TimeRange

__all__ = ["Plan", "plan"]

_NAMES = {60: "1m", 3600: "1h"}


@dataclass(frozen=True, slots=True)
class Plan:
    """Half-open spans ``[start, end)`` in unix ns, per source: 0 for raw samples, else a rollup resolution."""

    spans: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def resolution(self) -> str:
        used = [r for r in sorted(self.spans, reverse=True) if self.spans[r]]
        return "+".join(_NAMES.get(r, "raw") for r in used) or "raw"

    def parts(self) -> list[Part]:
        """Every span as ``(resolution, lo, hi)``, resolution 0 (raw) first: what the source reads."""
        return [(r, lo, hi) for r, spans in sorted(self.spans.items()) for lo, hi in spans]


def _ceil(ts: int, step: int) -> int:
    return -((-ts) // step) * step


def plan(
    src: ProfileSource,
    series_ids: list[int],
    tr: TimeRange,
    aggregation: Aggregation,
    *,
    raw: bool = False,
) -> Plan:
    lo, hi = tr.start, tr.end + 1
    if raw or aggregation is Aggregation.LAST or not series_ids:
        return Plan({0: [(lo, hi)]})
    done = src.rollup_done()
    spans: dict[int, list[tuple[int, int]]] = {}
    edges = [(lo, hi)]
    for r in sorted(RESOLUTIONS, reverse=True):  # coarsest first
        step = r * NS
        pieces = []
        rest = []
        for a, b in edges:
            s, e = _ceil(a, step), min(b - b % step, done.get(r, 0) - done.get(r, 0) % step)
            if e - s >= step:
                pieces.append((s, e))
                rest += [(a, s), (e, b)]
            else:
                rest.append((a, b))
        if pieces:
            spans[r] = pieces
        edges = [(a, b) for a, b in rest if b > a]
    spans[0] = edges
    rollups = [(r, a, b) for r in RESOLUTIONS for a, b in spans.get(r, [])]
    if rollups and src.rollups_dirty(series_ids, rollups):
        return Plan({0: [(lo, hi)]})
    return Plan(spans)
