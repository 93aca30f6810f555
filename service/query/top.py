"""Top functions (``go tool pprof -top``) and the per-function diff of two windows.

flat is the value of stacks whose leaf frame is the function; cum the value of stacks that
contain it anywhere, counted once per stack (recursion does not double it). Percentages are of
the total of all stacks, as pprof's; pprof prints them with two decimals, and so do we.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.query.stacks import StackSet
from service.types import I64

__all__ = ["DiffRow", "FunctionTotals", "TopRow", "diff", "function_totals", "top"]


@dataclass(frozen=True, slots=True)
class FunctionTotals:
    names: list[str]
    flat: I64  # per name
    cum: I64
    total: int
    inline: list[
        str | None
    ]  # per name: "inline" when only ever inlined into its callers, "partial-inline" when sometimes


@dataclass(frozen=True, slots=True)
class TopRow:
    name: str
    inline: str | None  # pprof's "(inline)" / "(partial-inline)" after the name in -top
    flat: int
    flat_percent: float
    sum_percent: float
    cum: int
    cum_percent: float


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One function in both windows; the two kinds of change carry their unit in their name, so a
    reader never has to know whether the diff was normalized to read them."""

    name: str
    base: int
    current: int
    base_percent: float  # of the base window's total, two decimals as in top
    current_percent: float
    change: int  # current - base, in the profile's sample unit, whatever normalize says
    change_points: float  # current_percent - base_percent from the unrounded shares, in percentage points
    relative: float | None  # of what is compared (shares when normalized, values when not): current / base - 1


def function_totals(s: StackSet) -> FunctionTotals:
    n = len(s.names)
    depth = s.depth
    has = depth > 0
    flat = np.bincount(s.frames[s.offsets[:-1][has]], weights=s.values[has], minlength=n)
    # cum: each (stack, name) pair once.
    owner = s.owners()
    pairs = np.unique(owner * max(n, 1) + s.frames)
    cum = np.bincount(pairs % max(n, 1), weights=s.values[pairs // max(n, 1)], minlength=n)
    return FunctionTotals(s.names, np.rint(flat).astype(np.int64), np.rint(cum).astype(np.int64), s.total, _inline(s))


def _inline(s: StackSet) -> list[str | None]:
    """pprof marks a node whose incoming call edges all come from the location it was inlined into.

    The edge into frame i comes from frame i + 1 of the same stack (its caller), unless both
    have the same name; it is an inline edge when frame i is not its location's outermost line.
    """
    n = len(s.names)
    f = s.frames
    if f.size < 2:
        return [None] * n
    owner = s.owners()
    callee = np.flatnonzero((owner[:-1] == owner[1:]) & (f[:-1] != f[1:]))
    inl = ~s.outermost()[callee]
    inline_in = np.bincount(f[callee], weights=inl, minlength=n) > 0
    plain_in = np.bincount(f[callee], weights=~inl, minlength=n) > 0
    return [
        ("partial-inline" if p else "inline") if i else None
        for i, p in zip(inline_in.tolist(), plain_in.tolist(), strict=True)
    ]


def _pct(v: int | float, total: int) -> float:
    return round(100.0 * float(v) / total, 2) if total else 0.0


def top(
    s: StackSet, order: str = "flat", limit: int | None = None, total: int | None = None
) -> tuple[list[TopRow], int, int]:
    """Rows sorted as pprof sorts them (by ``order``, then the other, then name), the total, and how
    many functions there are (flat or cum not zero) before ``limit`` cuts the rows.

    Percentages are of ``total`` when given: pprof's are of the profile before focus, ignore and hide.
    """
    ft = function_totals(s)
    if total is not None:
        ft = FunctionTotals(ft.names, ft.flat, ft.cum, total, ft.inline)
    used = np.flatnonzero((ft.flat != 0) | (ft.cum != 0))
    a, b = (ft.flat, ft.cum) if order == "flat" else (ft.cum, ft.flat)
    names = np.array(ft.names, dtype=object)
    ranked = used[np.lexsort((names[used], -b[used], -a[used]))] if used.size else used
    if limit is not None:
        ranked = ranked[:limit]
    rows, running = [], 0
    for i in ranked.tolist():
        running += int(ft.flat[i])
        rows.append(
            TopRow(
                ft.names[i],
                ft.inline[i],
                int(ft.flat[i]),
                _pct(ft.flat[i], ft.total),
                _pct(running, ft.total),
                int(ft.cum[i]),
                _pct(ft.cum[i], ft.total),
            )
        )
    return rows, ft.total, int(used.size)


def diff(
    base: StackSet, current: StackSet, *, normalize: bool = True, by: str = "flat", limit: int | None = None
) -> tuple[list[DiffRow], int, int]:
    """Per function, base vs current ``by`` (flat or cum), largest absolute change first.

    Normalized (the default), shares of each window's total are compared (``change_points`` orders
    the rows and ``relative`` is of shares), so a window with more load does not look like a
    regression everywhere; otherwise the values (``change``).
    """
    fb, fc = function_totals(base), function_totals(current)
    vb = dict(zip(fb.names, (fb.flat if by == "flat" else fb.cum).tolist(), strict=True))
    vc = dict(zip(fc.names, (fc.flat if by == "flat" else fc.cum).tolist(), strict=True))
    rows = []
    for name in {k for k, v in vb.items() if v} | {k for k, v in vc.items() if v}:
        b, c = vb.get(name, 0), vc.get(name, 0)
        sb = b / fb.total if fb.total else 0.0
        sc = c / fc.total if fc.total else 0.0
        compared = (sc - sb, sb) if normalize else (float(c - b), float(b))
        rows.append(
            (
                abs(compared[0]),
                DiffRow(
                    name,
                    b,
                    c,
                    round(100.0 * sb, 2),
                    round(100.0 * sc, 2),
                    c - b,
                    round(100.0 * (sc - sb), 2),
                    compared[0] / compared[1] if compared[1] else None,
                ),
            )
        )
    rows.sort(key=lambda r: (-r[0], r[1].name))
    out = [r for _, r in rows]
    return (out[:limit] if limit is not None else out), fb.total, fc.total
