"""Leaks: in-use memory and goroutine counts that keep growing, and the sites that grow.

These profile types are gauges (what is live at the scrape), so the question is a trend, not
a shift: per instance, Mann-Kendall over the leak window says whether the total keeps rising,
Theil-Sen says how fast (robust to the garbage collector's sawtooth), and a slope floor per
minute plus a growth floor relative to the level keep a warming-up cache from being called a
leak. The sites are the functions whose own values rise with it: allocation sites by flat for
memory; for goroutines, where every parked stack ends in the scheduler, the most specific
function whose cum carries at least half of the growth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.analysis.findings import Finding, Tuning
from service.analysis.panel import Panel, unit_name
from service.analysis.stats import Trend, benjamini_hochberg, hinge_point, mann_kendall, mean_ci
from service.types import TimeRange

__all__ = ["LEAK_TYPES", "LeakTest", "is_leak_type", "leak_findings", "leak_tests"]

F64 = npt.NDArray[np.float64]
MINUTE = 60 * 10**9

# (profile name, sample type) pairs that are gauges of something that can leak.
LEAK_TYPES = {
    ("memory", "inuse_space"),
    ("memory", "inuse_objects"),
    ("goroutine", "goroutine"),
    ("goroutine", "goroutines"),
}


def is_leak_type(name: str, sample_type: str) -> bool:
    return (name, sample_type) in LEAK_TYPES


@dataclass(slots=True)
class LeakTest:
    panel: Panel
    window: TimeRange
    unit: int
    trend: Trend  # of the total, slope per minute
    mask: npt.NDArray[np.bool_]  # this instance's profiles in the window


def leak_tests(panel: Panel, window: TimeRange, t: Tuning) -> list[LeakTest]:
    """One trend test per instance with enough profiles in ``window``."""
    out = []
    inside = (panel.ts >= window.start) & (panel.ts < window.end)
    for u in range(len(panel.units)):
        mask = inside & (panel.unit == u)
        if mask.sum() < t.min_profiles:
            continue
        minutes = (panel.ts[mask] - window.start) / MINUTE
        out.append(LeakTest(panel, window, u, mann_kendall(minutes, panel.total[mask]), mask))
    return out


def leak_findings(tests: Sequence[LeakTest], t: Tuning, tenant: str) -> list[Finding]:
    """Instances whose trend survives Benjamini-Hochberg and both floors, one finding per panel."""
    if not tests:
        return []
    adjusted = benjamini_hochberg(np.array([x.trend.p_value for x in tests]))
    leaking: dict[int, list[tuple[LeakTest, float]]] = {}
    for x, adj in zip(tests, adjusted, strict=True):
        if adj > t.alpha or x.trend.tau <= 0 or x.trend.slope_lo <= 0:
            continue
        floor = t.leak_min_bytes_per_min if x.panel.profile_type.sample_unit == "bytes" else t.leak_min_count_per_min
        y = x.panel.total[x.mask]
        minutes = (x.window.end - x.window.start) / MINUTE
        start_level = float(np.median(y[: max(3, y.size // 5)]))
        if x.trend.slope < floor or x.trend.slope * minutes < t.leak_min_growth * max(start_level, 1.0):
            continue
        leaking.setdefault(id(x.panel), []).append((x, float(adj)))
    return [_finding(group, t, tenant) for group in leaking.values()]


def _finding(group: list[tuple[LeakTest, float]], t: Tuning, tenant: str) -> Finding:
    panel = group[0][0].panel
    window = group[0][0].window
    worst, worst_adj = max(group, key=lambda g: g[0].trend.slope)
    ts, y = panel.ts[worst.mask].astype(np.float64), panel.total[worst.mask]
    k = hinge_point(ts, y)
    change_ts = int(ts[k])
    # The rate since growth began: over the whole window a leak younger than it looks slower.
    since = mann_kendall((ts[k:] - ts[k]) / MINUTE, y[k:]) if y.size - k >= 3 else worst.trend
    mask = np.zeros(len(panel), bool)
    for x, _ in group:
        mask |= x.mask
    sites = _sites(panel, mask, window, sum(x.trend.slope for x, _ in group))
    names = {x.unit: unit_name(panel.units[x.unit]) for x, _ in group}
    before = y[:k] if k else y[:3]
    # The level now over the window's last fifth, as the start level is read over its first: three
    # scrapes of a garbage collector's sawtooth can sit below the level before the leak began.
    baseline, current = mean_ci(before), mean_ci(y[-max(3, y.size // 5) :])
    return Finding(
        kind="leak",
        tenant=tenant,
        service=panel.service,
        profile_type=str(panel.profile_type),
        function=str(sites[0]["function"]) if sites else "",
        metric="total",
        change_ts=change_ts,
        baseline=baseline,
        current=current,
        relative=current.mean / baseline.mean - 1 if baseline.mean > 0 else float("inf"),
        p_value=worst.trend.p_value,
        p_adjusted=worst_adj,
        instances=sorted(names.values()),
        attribution={},
        series_ids=sorted({panel.series[i].series_id for i in np.unique(panel.series_index[mask])}),
        details={
            "per_minute": since.slope,
            "per_minute_ci": [since.slope_lo, since.slope_hi],
            "tau": worst.trend.tau,
            "unit": panel.profile_type.sample_unit,
            "per_instance": {names[x.unit]: x.trend.slope for x, _ in group},
            "sites": sites,
            "window": [window.start, window.end],
        },
    )


def _sites(panel: Panel, mask: npt.NDArray[np.bool_], window: TimeRange, total_slope: float) -> list[dict[str, object]]:
    """Functions growing with the total: slope per minute summed over the leaking instances."""
    if not panel.functions:
        return []
    goroutines = panel.profile_type.name == "goroutine"
    values = panel.cum if goroutines else panel.flat
    slopes = np.zeros(len(panel.functions))
    for u in np.unique(panel.unit[mask]):
        m = mask & (panel.unit == u)
        minutes = (panel.ts[m] - window.start) / MINUTE
        for j in range(len(panel.functions)):
            slopes[j] += mann_kendall(minutes, values[m, j]).slope
    order = np.argsort(-slopes)
    if goroutines:
        # Every ancestor of the leaking goroutines grows as much; name the most specific one.
        carry = [j for j in order if slopes[j] >= 0.5 * total_slope]
        mean_cum = values[mask].mean(axis=0)
        order = np.array(sorted(carry, key=lambda j: (mean_cum[j], panel.functions[j])) or order, np.int64)
    out = []
    for j in order[:5]:
        if slopes[j] <= 0:
            break
        out.append(
            {
                "function": panel.functions[j],
                "per_minute": float(slopes[j]),
                "share_of_growth": float(slopes[j] / total_slope) if total_slope > 0 else 0.0,
            }
        )
    return out
