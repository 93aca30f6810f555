"""Where a rise enters: the caller path that carries it, found among the stacks through the function.

A leaf that costs more is rarely the code that changed: ``crypto/sha256.block`` rises because a
caller now hashes three times as often. The stacks through the function say which. Cut at the
function, each stack is a caller path (the function first, then its caller, up to the root); each
frame on those paths holds some part of the function's baseline and carries some part of its
rise. A frame shared by every path holds and carries all of it; where the rise follows the paths
in proportion to what they held, nothing above the function tells them apart (the function got
slower). The frame whose paths carry much more of the rise than they held, and whose part of the
function grew in a per-profile test, is where the change entered: of several such frames (the
changed caller and its own callers up a chain), the one nearest the function.

Where the evidence cannot tell frames apart, the service's own code is named rather than the
runtime's or the standard library's: a person can act on it, and the leaf is still in the finding.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.analysis.stats import mann_whitney_greater

__all__ = ["Located", "is_library", "locate"]

F64 = npt.NDArray[np.float64]
Frames = tuple[str, ...]

# A frame leads when its paths carry this much more of the function's rise than they held of
# its baseline, and their part of the function rose in a one-sided test at this level. Frames
# within TIE of the best lead are equal evidence (a changed caller and its own callers).
LEAD = 0.2
SPLIT_P = 0.01
TIE = 0.05
TOP_PATHS = 5

# Go's standard library and runtime: an import path whose first element has no dot, other than
# ``main`` (third-party modules start with a domain). Names with a file suffix or a ``:`` are
# another language's and count as the service's.
_GO_STD = re.compile(r"^(?:[a-z][a-z0-9_]*/)*[a-z][a-z0-9_]*\.[^/:\s]+$")


def is_library(name: str) -> bool:
    """Whether ``name`` is Go runtime or standard-library code (not the service's own)."""
    return bool(_GO_STD.match(name)) and not name.startswith("main.") and ".py" not in name


@dataclass(frozen=True, slots=True)
class Located:
    """Where a rise enters (``entry``), how that was decided, and the caller paths that carry it."""

    entry: str
    how: str  # "caller": a branch's share of its fork rose; "proportional": every branch rose alike;
    # "one-path": a single caller path, nothing tells its frames apart
    share_of_rise: float  # of the function's rise, the part the entry's paths carry (above 1 when others fell)
    paths: list[dict[str, object]]

    def details(self) -> dict[str, object]:
        return {
            "entry": {"function": self.entry, "how": self.how, "share_of_rise": self.share_of_rise},
            "paths": self.paths,
        }


def locate(
    function: str,
    flat: bool,
    rows: Sequence[tuple[int, int, Frames, float]],
    totals: dict[tuple[int, int], float],
    after_ts: int,
) -> Located | None:
    """The entry of ``function``'s rise from ``rows`` (``(series_id, ts, frames leaf first, value)``,
    as :func:`service.store.function_reads.caller_paths` reads them) and each profile's total.

    Profiles before ``after_ts`` are the baseline, the rest the time since the change. ``flat``:
    only stacks where the function is the leaf (its own cost); else every stack through it, cut at
    its innermost frame. ``None`` when no stack through the function was sampled.
    """
    keys = sorted(totals)
    row_of = {k: i for i, k in enumerate(keys)}
    paths: dict[Frames, int] = {}
    cells: list[tuple[int, int, float]] = []
    for sid, ts, frames, value in rows:
        if (sid, ts) not in row_of or function not in frames or (flat and frames[0] != function):
            continue
        path = frames[frames.index(function) :]
        cells.append((row_of[(sid, ts)], paths.setdefault(path, len(paths)), value))
    if not cells:
        return None
    ts_of = np.array([k[1] for k in keys], np.int64)
    total = np.array([totals[k] for k in keys], np.float64)
    values = np.zeros((len(keys), len(paths)))
    for r, c, v in cells:
        values[r, c] += v
    share = values / np.where(total > 0, total, 1.0)[:, None]
    after = ts_of >= after_ts
    base = ~after & (total > 0)
    after &= total > 0
    if not base.any() or not after.any():
        return None
    tree = _Tree(list(paths), share, base, after)
    return tree.walk(function)


class _Tree:
    """The caller paths above one function, each a column of per-profile shares."""

    def __init__(self, paths: list[Frames], share: F64, base: npt.NDArray[np.bool_], after: npt.NDArray[np.bool_]):
        self.paths = paths
        self.share = share
        self.base = base
        self.after = after

    def rise(self, v: F64) -> tuple[float, float, float]:
        b, a = float(v[self.base].mean()), float(v[self.after].mean())
        return b, a, a - b

    def walk(self, function: str) -> Located:
        whole = self.share.sum(axis=1)
        held, _, total_rise = self.rise(whole)
        # Each frame above the function: the paths through it, and how near the function it sits.
        through: dict[str, list[int]] = defaultdict(list)
        depth: dict[str, int] = {}
        for j, p in enumerate(self.paths):
            for d, f in enumerate(p[1:], 1):
                if f != function and (not through[f] or through[f][-1] != j):
                    through[f].append(j)
                    depth[f] = min(depth.get(f, d), d)
        lead: list[tuple[float, str, float]] = []
        if total_rise > 0 and held > 0:
            for f, cols in through.items():
                b, _, r = self.rise(self.share[:, cols].sum(axis=1))
                gap = r / total_rise - b / held
                if gap >= LEAD and self._grew(self.share[:, cols].sum(axis=1), whole):
                    lead.append((gap, f, r / total_rise))
        shared = sorted((f for f, cols in through.items() if len(cols) == len(self.paths)), key=depth.__getitem__)
        if lead:
            best = max(g for g, _, _ in lead)
            ties = sorted((x for x in lead if x[0] >= best - TIE), key=lambda x: (is_library(x[1]), depth[x[1]]))
            _, entry, carried = ties[0]
            return Located(entry, "caller", float(carried), self._top(total_rise))
        # No frame leads: the function, or a frame every path shares, got slower.
        how = "one-path" if len(self.paths) == 1 else "proportional"
        chain = [function, *shared] if how == "one-path" else [function, *self._common_chain(shared, depth)]
        entry = next((f for f in chain if not is_library(f)), function)
        return Located(entry, how, 1.0, self._top(total_rise))

    @staticmethod
    def _common_chain(shared: list[str], depth: dict[str, int]) -> list[str]:
        """The shared frames directly above the function, up to the first fork (depths 1, 2, …)."""
        out = []
        for i, f in enumerate(shared, 1):
            if depth[f] != i:
                break
            out.append(f)
        return out

    def _grew(self, part: F64, whole: F64) -> bool:
        """Whether ``part``'s fraction of the function rose after the change (one-sided, per profile)."""
        has = whole > 0
        frac = np.where(has, part / np.where(has, whole, 1.0), 0.0)
        return mann_whitney_greater(frac[self.after & has], frac[self.base & has]) <= SPLIT_P

    def _top(self, total_rise: float) -> list[dict[str, object]]:
        """The caller paths carrying the most of the rise, each with its baseline and current share."""
        out = []
        for j, p in enumerate(self.paths):
            b, a, r = self.rise(self.share[:, j])
            out.append((r, p, b, a))
        out.sort(key=lambda x: -x[0])
        return [
            {
                "frames": list(p),
                "baseline": b,
                "current": a,
                "share_of_rise": r / total_rise if total_rise > 0 else 0.0,
            }
            for r, p, b, a in out[:TOP_PATHS]
        ]
