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

import duckdb

from service.query.aggregation import Aggregation
from service.store.reads import id_list, values_between
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

    def union_sql(self, series_ids: list[int]) -> tuple[str, dict[str, object]]:
        """``SELECT series_id, stack_id, value`` of ``series_ids`` over every span, and its parameters."""
        ids = id_list(series_ids)
        parts: list[str] = []
        params: dict[str, object] = {}
        for r, spans in sorted(self.spans.items()):
            for i, (lo, hi) in enumerate(spans):
                a, b = f"lo_{r}_{i}", f"hi_{r}_{i}"
                params[a], params[b] = lo, hi
                if r == 0:
                    raw = values_between(f"${a}", f"${b}", ids)
                    parts.append(f"SELECT series_id, stack_id, value FROM ({raw})")
                else:
                    parts.append(
                        f"SELECT series_id, stack_id, value FROM stack_rollup WHERE resolution = {r} AND series_id IN "
                        f"({ids}) AND bucket >= ${a} AND bucket < ${b}"
                    )
        if not parts:
            parts.append("SELECT series_id, stack_id, value FROM samples WHERE false")
        return " UNION ALL ".join(parts), params


def _ceil(ts: int, step: int) -> int:
    return -((-ts) // step) * step


def plan(
    cur: duckdb.DuckDBPyConnection,
    series_ids: list[int],
    tr: TimeRange,
    aggregation: Aggregation,
    *,
    raw: bool = False,
) -> Plan:
    lo, hi = tr.start, tr.end + 1
    if raw or aggregation is Aggregation.LAST or not series_ids:
        return Plan({0: [(lo, hi)]})
    done = dict(cur.execute("SELECT resolution, done_until FROM rollup_state").fetchall())
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
    if any(spans.get(r) for r in RESOLUTIONS) and _dirty(cur, series_ids, spans):
        return Plan({0: [(lo, hi)]})
    return Plan(spans)


def _dirty(cur: duckdb.DuckDBPyConnection, series_ids: list[int], spans: dict[int, list[tuple[int, int]]]) -> bool:
    conds: list[str] = []
    params: dict[str, object] = {}
    for r in RESOLUTIONS:
        for i, (a, b) in enumerate(spans.get(r, [])):
            conds.append(f"(resolution = {r} AND bucket >= $a{r}_{i} AND bucket < $b{r}_{i})")
            params[f"a{r}_{i}"], params[f"b{r}_{i}"] = a, b
    sql = (
        f"SELECT count(*) FROM rollup_dirty WHERE series_id IN ({id_list(series_ids)}) AND (" + " OR ".join(conds) + ")"
    )
    return bool(cur.execute(sql, params).fetchone()[0])  # type: ignore[index]
