"""Per-function regressions of one run: screen every candidate, correct, then confirm the few.

A function's share of its profile (flat or cum over the profile's total) is the signal: it is
load-normalized — twice the traffic doubles every function, not the shares — and it turns a
0.1 % service slowdown into a 5 % rise of one function (FBDetect's observation). Each instance
is centered on its own baseline, so instances that differ (hardware, traffic mix) pool into one
test and small effects become visible across a fleet.

The run: (1) one-sided Mann-Whitney U of the recent window against the baseline, per function
and metric, vectorized over all functions, on the share and (where the share passed) on the rate
per second, the larger p-value counting; (2) Benjamini-Hochberg over every test of the run
(all services); (3) for those left: the change point and its 95 % interval, the went-away
filter (the rise must hold for ``persist`` up to the window's end), the cost-shift filter (a
caller's other cost fell by what this function gained: a refactor moved cost, nothing got
slower), the instances showing it and the volatile labels (``version``) that changed at the
change point. Where the rise enters on the call tree is ``paths``' (read from stacks, after).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from service.analysis.findings import Finding, Tuning
from service.analysis.panel import Panel, unit_name
from service.analysis.stats import benjamini_hochberg, change_interval, change_point, mann_whitney_greater, mean_ci
from service.types import TimeRange

__all__ = ["Screen", "Verdict", "confirm", "screen"]

F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]
METRICS = ("flat_share", "cum_share")
# The went-away filter asks whether the rise is still there in the last ``persist`` window
# alone; it is a check on a rise already established, not a new discovery, hence a plain 5 %.
WENT_AWAY_P = 0.05


@dataclass(slots=True)
class Screen:
    """One panel's first-stage tests: a p-value per (metric, function)."""

    panel: Panel
    baseline: TimeRange
    recent: TimeRange
    base: B  # profiles in the baseline window
    cur: B  # profiles in the recent window
    shares: dict[str, F64]  # metric -> (profiles, functions), shares of the profile's total
    centered: dict[str, F64]  # the same minus each instance's baseline mean
    level: dict[str, F64]  # metric -> per profile and function: its instance's baseline mean
    p: dict[str, F64]  # metric -> per function


@dataclass(frozen=True, slots=True)
class Verdict:
    """A tested rise that passed the correction, with why it is or is not reported."""

    finding: Finding | None
    panel: Panel
    function: str
    metric: str
    reason: str  # "reported", "went-away", "pending", "cost-shift", "too-small", "explained"


def screen(panel: Panel, baseline: TimeRange, recent: TimeRange, t: Tuning) -> Screen | None:
    """The rank tests of one panel; ``None`` when either window has too few profiles.

    A rise must hold twice (an intersection-union test: the larger p-value of the two is the
    test's): as a share of the profile, which is load-normalized, and as an absolute rate, value
    per second of profile (per profile where durations are missing). A function whose own cost
    did not change gains share when the rest falls; its rate stays put, so it is not reported.
    """
    ok = panel.total > 0
    base = ok & (panel.ts >= baseline.start) & (panel.ts < baseline.end)
    cur = ok & (panel.ts >= recent.start) & (panel.ts < recent.end)
    if base.sum() < t.min_profiles or cur.sum() < t.min_profiles or not panel.functions:
        return None
    safe = np.where(ok, panel.total, 1.0)[:, None]
    shares = {"flat_share": panel.flat / safe, "cum_share": panel.cum / safe}
    seconds = panel.duration if panel.duration.size == panel.total.size else np.zeros(panel.total.size)
    per = np.where(seconds > 0, seconds, 1.0)[:, None] if bool(np.all(seconds[ok] > 0)) else np.ones_like(safe)
    rates = {"flat_share": panel.flat / per, "cum_share": panel.cum / per}
    centered: dict[str, F64] = {}
    level: dict[str, F64] = {}
    p: dict[str, F64] = {}
    for m, sh in shares.items():
        level[m], centered[m], p[m] = _rank_test(panel, sh, base, cur)
        # The rate is tested only where the share passed alpha: elsewhere the larger p-value is above
        # alpha either way, and Benjamini-Hochberg rejects the same tests with the same adjusted
        # p-values whatever stands above alpha. Halves a run's CPU, nearly all of it ranking.
        cols = np.flatnonzero(p[m] <= t.alpha)
        if cols.size:
            _, _, p_rate = _rank_test(panel, rates[m][:, cols], base, cur)
            p[m][cols] = np.maximum(p[m][cols], p_rate)
    return Screen(panel, baseline, recent, base, cur, shares, centered, level, p)


def _rank_test(panel: Panel, s: F64, base: B, cur: B) -> tuple[F64, F64, F64]:
    """Each instance's baseline mean per profile, ``s`` centered on it, and the one-sided Mann-Whitney
    p-value per function of the recent window's centered values against the baseline's."""
    n_units = len(panel.units)
    # An instance with no baseline profile takes the pooled baseline mean.
    sums = np.zeros((n_units, s.shape[1]))
    np.add.at(sums, panel.unit[base], s[base])
    counts = np.bincount(panel.unit[base], minlength=n_units).astype(np.float64)[:, None]
    pooled = s[base].mean(axis=0)
    level = np.where(counts > 0, sums / np.maximum(counts, 1.0), pooled)[panel.unit]
    centered = s - level
    # A row per function, contiguous: scipy ranks along the last axis, and sorting contiguous rows
    # is faster than sorting down the columns of the (profiles, functions) layout.
    x, y = np.ascontiguousarray(centered[cur].T), np.ascontiguousarray(centered[base].T)
    flat_cols = np.all(x == x[:, :1], axis=1) & np.all(y == x[:, :1], axis=1)
    with np.errstate(all="ignore"):
        pv = sps.mannwhitneyu(x, y, alternative="greater", axis=1, method="asymptotic").pvalue
    return level, centered, np.where(flat_cols | ~np.isfinite(pv), 1.0, pv)


def confirm(screens: Sequence[Screen], t: Tuning, tenant: str) -> list[Verdict]:
    """Benjamini-Hochberg over every test of ``screens``, then the change point and the filters."""
    flat_p = [sc.p[m] for sc in screens for m in METRICS]
    if not flat_p:
        return []
    adjusted = benjamini_hochberg(np.concatenate(flat_p))
    out: list[Verdict] = []
    i = 0
    for sc in screens:
        for m in METRICS:
            n = sc.p[m].size
            adj = adjusted[i : i + n]
            for j in np.flatnonzero(adj <= t.alpha):
                out.append(_confirm_one(sc, m, int(j), float(sc.p[m][j]), float(adj[j]), t, tenant))
            i += n
    return _explained(_best(out))


def _best(verdicts: list[Verdict]) -> list[Verdict]:
    """One verdict per panel, function and metric: the same rise seen in a short and a long window
    is one finding (the reported one with the smaller adjusted p-value)."""
    best: dict[tuple[int, str, str], Verdict] = {}
    for v in verdicts:
        key = (id(v.panel), v.function, v.metric)
        old = best.get(key)
        if old is None or _rank(v) < _rank(old):
            best[key] = v
    return list(best.values())


def _rank(v: Verdict) -> tuple[int, float]:
    return (0, v.finding.p_adjusted) if v.finding is not None else (1, 0.0)


def _explained(verdicts: list[Verdict]) -> list[Verdict]:
    """Keep one finding per cause: a rise that a reported callee accounts for is not reported again.

    A function that got slower raises the cum of every caller up to the root by as much, and its
    own flat and cum together; reporting each would bury the one that matters. A finding is
    explained when a reported function below it on the stack (or the same function's flat) rose
    by at least half as much.
    """
    reported = [v for v in verdicts if v.finding is not None]
    out = []
    for v in verdicts:
        f = v.finding
        if f is None:
            out.append(v)
            continue
        callers = v.panel.callers
        below = _descendants(v.function, callers, {w.function for w in reported if w.panel is v.panel})
        explained = any(
            w is not v
            and w.panel is v.panel
            and w.finding is not None
            and (w.function in below or (w.function == v.function and w.metric == "flat_share"))
            and w.finding.details["delta_share"] >= 0.5 * f.details["delta_share"]
            for w in reported
        )
        out.append(Verdict(None, v.panel, v.function, v.metric, "explained") if explained else v)
    return out


def _descendants(name: str, callers: dict[str, list[str]], among: set[str]) -> set[str]:
    """Functions of ``among`` that ``name`` calls, directly or through others of ``among``."""
    called_by: dict[str, set[str]] = {}
    for callee, cs in callers.items():
        if callee in among:
            for c in cs:
                called_by.setdefault(c, set()).add(callee)
    seen: set[str] = set()
    todo = [name]
    while todo:
        for callee in called_by.get(todo.pop(), ()):
            if callee not in seen and callee != name:
                seen.add(callee)
                todo.append(callee)
    return seen


def _confirm_one(sc: Screen, metric: str, j: int, p: float, p_adj: float, t: Tuning, tenant: str) -> Verdict:
    panel = sc.panel
    name = panel.functions[j]
    x = sc.centered[metric][:, j]
    base_x = x[sc.base]
    # The change point: in the last four recent windows, in time order. (A small rise is found
    # only once it fills most of the recent window, so its start may lie well before it.)
    span = sc.recent.end - sc.recent.start
    near = (panel.ts >= sc.recent.end - 4 * span) & (panel.ts < sc.recent.end) & (panel.total > 0)
    order = np.flatnonzero(near)
    size = max(3, t.min_profiles // 2)
    k, _ = change_point(x[order], min_size=size, ts=panel.ts[order])
    change_ts = int(panel.ts[order[k]]) if k else int(sc.recent.start)
    k_lo, k_hi = change_interval(x[order], min_size=size, ts=panel.ts[order])
    # Without a step in the searched span, the change could lie anywhere in it.
    interval = (
        [int(panel.ts[order[k_lo]]), int(panel.ts[order[k_hi]])] if k else [int(panel.ts[order[0]]), sc.recent.end]
    )
    after = sc.cur & (panel.ts >= change_ts)
    delta = float(x[after].mean()) if after.any() else 0.0
    level = float(sc.level[metric][after, j].mean()) if after.any() else 0.0
    relative = delta / level if level > 0 else float("inf")
    if delta < t.min_delta or relative < t.min_relative:
        return Verdict(None, panel, name, metric, "too-small")
    # Went-away: the rise must have lasted ``persist`` and still be there at the end.
    if sc.recent.end - change_ts < t.persist_ns:
        return Verdict(None, panel, name, metric, "pending")
    last = sc.cur & (panel.ts >= sc.recent.end - t.persist_ns)
    if (
        last.sum() < max(3, t.min_profiles // 2)
        or float(x[last].mean()) < 0.5 * delta
        or mann_whitney_greater(x[last], base_x) > WENT_AWAY_P
    ):
        return Verdict(None, panel, name, metric, "went-away")
    shifted = _cost_shift(sc, j, after, delta, t)
    if shifted is not None:
        return Verdict(None, panel, name, metric, "cost-shift")
    raw = sc.shares[metric][:, j]
    finding = Finding(
        kind="regression",
        tenant=tenant,
        service=panel.service,
        profile_type=str(panel.profile_type),
        function=name,
        metric=metric,
        change_ts=change_ts,
        baseline=mean_ci(raw[sc.base]),
        current=mean_ci(raw[after]),
        relative=relative,
        p_value=p,
        p_adjusted=p_adj,
        instances=_instances(sc, metric, j, after, t),
        attribution=_attribution(panel, change_ts, t),
        series_ids=sorted({panel.series[i].series_id for i in np.unique(panel.series_index[after])}),
        details={
            "delta_share": delta,
            "change_interval": interval,
            "baseline_window": [sc.baseline.start, sc.baseline.end],
            "recent_window": [sc.recent.start, sc.recent.end],
            "profiles": {"baseline": int(sc.base.sum()), "current": int(after.sum())},
            "callers": panel.callers.get(name, []),
        },
    )
    return Verdict(finding, panel, name, metric, "reported")


def _cost_shift(sc: Screen, j: int, after: B, delta: float, t: Tuning) -> str | None:
    """A sibling (a function sharing a caller) or a caller's own body whose cost fell by at least
    half of this function's rise: a refactor moved cost into it, nothing got slower.

    Costs are taken relative to everything but this function (``value / (total - cum_f)``): as a
    share of the whole profile they would fall under any real regression too, only because this
    function grew. Returns the name of the function that lost the cost.
    """
    panel = sc.panel
    name = panel.functions[j]
    mine = panel.cum[:, j]
    rest_total = np.maximum(panel.total - mine, 1.0)
    callers = set(panel.callers.get(name, []))
    siblings = {f for f, cs in panel.callers.items() if f != name and f not in callers and callers & set(cs)}
    scale = float(1 - sc.shares["cum_share"][after, j].mean())
    for other, values in [(c, panel.flat) for c in sorted(callers)] + [(f, panel.cum) for f in sorted(siblings)]:
        if other not in panel.functions:
            continue
        v = values[:, panel.functions.index(other)] / rest_total
        drop = float(v[sc.base].mean() - v[after].mean()) * scale
        if drop >= 0.5 * delta and mann_whitney_greater(v[sc.base], v[after]) <= t.alpha:
            return other
    return None


def _instances(sc: Screen, metric: str, j: int, after: B, t: Tuning) -> list[str]:
    """Instances whose own rise is significant on its own (one-sided, 5 %)."""
    panel = sc.panel
    x = sc.centered[metric][:, j]
    out = []
    for u, key in enumerate(panel.units):
        mine = panel.unit == u
        cur, base = x[after & mine], x[sc.base & mine]
        if cur.size >= 3 and base.size >= 3 and cur.mean() > 0 and mann_whitney_greater(cur, base) <= 0.05:
            out.append(unit_name(key))
    return out


def _attribution(panel: Panel, change_ts: int, t: Tuning) -> dict[str, dict[str, list[str]]]:
    """Volatile labels (``version``, …) whose values differ just before and just after the change."""
    w = t.persist_ns
    before = {int(i) for i in panel.series_index[(panel.ts >= change_ts - w) & (panel.ts < change_ts)]}
    after = {int(i) for i in panel.series_index[(panel.ts >= change_ts) & (panel.ts < change_ts + w)]}
    out: dict[str, dict[str, list[str]]] = {}
    for key in t.volatile:
        old = {panel.series[i].labels[key] for i in before if key in panel.series[i].labels}
        new = {panel.series[i].labels[key] for i in after if key in panel.series[i].labels}
        if old != new and new:
            out[key] = {"from": sorted(old - new), "to": sorted(new - old)}
    return out
