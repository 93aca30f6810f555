"""What one analysis finds in a tenant's data: which series, windows and tests, what is resolved. It only reads.

Every (service, profile type) pair is one panel: the series sharing a ``service_name`` label
pooled, each instance centered on its own baseline. Cumulative types (CPU, allocations,
contention) are tested for per-function regressions, gauges (in-use memory, goroutines) for
leaks. Of the types one pprof carries together, one is tested: CPU time rather than its sample
count, allocated bytes rather than objects, contention delay rather than its count; they move
together, and testing both would double every finding.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from service.analysis.detect import Screen, Verdict, confirm, screen
from service.analysis.findings import Finding, Tuning
from service.analysis.leaks import LeakTest, is_leak_type, leak_findings, leak_tests
from service.analysis.panel import Panel, callers_of, load_panel
from service.analysis.paths import locate
from service.analysis.records import Record
from service.query.source import ProfileSource
from service.store.reads import SeriesRow
from service.types import ProfileType, TimeRange

__all__ = ["KINDS", "Result", "Windows", "analyze", "regression_screens", "returned"]

KINDS = frozenset({"regression", "leak"})

# How much of the baseline, right before its end, the caller paths of a finding are read from:
# raw stacks are far more rows than the per-function rollups, and an hour tells the branches apart.
PATHS_BASELINE_NS = 3600 * 10**9

# Of the sample types one profile carries, the one tested for regressions.
_PREFERRED = {"process_cpu": "cpu", "memory": "alloc_space", "mutex": "delay", "block": "delay"}


@dataclass(frozen=True, slots=True)
class Windows:
    """The windows of one run. ``others`` holds more (recent, baseline) pairs ending at the same time:
    a small rise that has lasted hours is invisible in 30 minutes of samples but clear in two, and a
    large one that began minutes ago is diluted in 30 minutes but clear in ten."""

    recent: TimeRange
    baseline: TimeRange
    leak: TimeRange
    others: tuple[tuple[TimeRange, TimeRange], ...] = ()

    @classmethod
    def ending(
        cls,
        end: int,
        recent_ns: int,
        baseline_ns: int,
        offset_ns: int,
        leak_ns: int,
        long_ns: int = 0,
        short_ns: int = 0,
    ) -> Windows:
        """``recent`` ends at ``end``; each baseline ends ``offset`` before its recent window starts."""

        def pair(length: int) -> tuple[TimeRange, TimeRange]:
            recent = TimeRange(end - length, end)
            base_end = recent.start - offset_ns
            return recent, TimeRange(base_end - baseline_ns, base_end)

        recent, baseline = pair(recent_ns)
        others = tuple(pair(n) for n in (short_ns, long_ns) if n > 0 and n != recent_ns)
        return cls(recent, baseline, TimeRange(end - leak_ns, end), others)

    def pairs(self) -> list[tuple[TimeRange, TimeRange]]:
        return [(self.recent, self.baseline), *self.others]

    @property
    def span(self) -> TimeRange:
        """Everything the regression tests read."""
        pairs = self.pairs()
        return TimeRange(min(b.start for _, b in pairs), max(r.end for r, _ in pairs))


def regression_screens(panel: Panel, w: Windows, t: Tuning) -> list[Screen]:
    """The first-stage tests of one panel, one per (recent, baseline) pair."""
    out = []
    for recent, baseline in w.pairs():
        sc = screen(panel, baseline, recent, t)
        if sc is not None:
            out.append(sc)
    return out


@dataclass(slots=True)
class Result:
    findings: list[Finding] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    panels: dict[tuple[str, str], Panel] = field(default_factory=dict)  # (service, profile type) -> panel
    tests: int = 0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for v in self.verdicts:
            out[v.reason] += 1
        return dict(out)


def _tested(series: list[SeriesRow]) -> list[tuple[ProfileType, list[SeriesRow], bool]]:
    """(profile type, its series, is a leak type) for each pair worth testing."""
    by_type: dict[ProfileType, list[SeriesRow]] = defaultdict(list)
    for s in series:
        by_type[s.profile_type].append(s)
    names: dict[str, set[str]] = defaultdict(set)
    for pt in by_type:
        names[pt.name].add(pt.sample_type)
    out = []
    for pt, rows in sorted(by_type.items(), key=lambda kv: str(kv[0])):
        if is_leak_type(pt.name, pt.sample_type):
            out.append((pt, rows, True))
            continue
        preferred = _PREFERRED.get(pt.name)
        if preferred is not None and preferred in names[pt.name] and pt.sample_type != preferred:
            continue
        if pt.name == "goroutine":
            continue
        out.append((pt, rows, False))
    return out


def analyze(src: ProfileSource, tenant: str, w: Windows, t: Tuning, kinds: frozenset[str] = KINDS) -> Result:
    """Test every service of ``tenant`` for ``kinds`` (regression, leak); Benjamini-Hochberg runs
    over all regression tests of the run, and separately over all leak tests."""
    result = Result()
    by_service: dict[str, list[SeriesRow]] = defaultdict(list)
    for s in src.list_series(tenant):
        by_service[s.labels.get("service_name", "")].append(s)
    screens: list[Screen] = []
    leaks: list[LeakTest] = []
    for service, series in sorted(by_service.items()):
        for pt, rows, leak in _tested(series):
            if ("leak" if leak else "regression") not in kinds:
                continue
            if leak:
                active = [s for s in rows if s.last_seen >= w.leak.start and s.first_seen < w.leak.end]
                if not active:
                    continue
                panel = load_panel(src, pt, service, active, w.leak, w.leak, min_share=t.min_share, volatile=t.volatile)
                result.panels[(service, str(pt))] = panel
                leaks.extend(leak_tests(panel, w.leak, t))
                continue
            span = w.span
            active = [s for s in rows if s.last_seen >= span.start and s.first_seen < span.end]
            if not any(s.last_seen >= w.recent.start for s in active):
                continue
            panel = load_panel(src, pt, service, active, span, w.recent, min_share=t.min_share, volatile=t.volatile)
            result.panels[(service, str(pt))] = panel
            screens.extend(regression_screens(panel, w, t))
    # Callers only for what passed the screen: the cost-shift filter needs them, nothing else does.
    result.tests = sum(sc.p[m].size for sc in screens for m in sc.p) + len(leaks)
    first = confirm(screens, t, tenant)
    wanted: dict[int, set[str]] = defaultdict(set)
    for v in first:
        if v.reason == "reported":
            wanted[id(v.panel)].add(v.function)
    if wanted:
        for panel in {id(sc.panel): sc.panel for sc in screens}.values():
            names = wanted.get(id(panel))
            if names:
                panel.callers = callers_of(src, panel.series, w.recent, sorted(names))
        first = confirm(screens, t, tenant)
    result.verdicts = [_located(src, v) for v in first]
    result.findings = [v.finding for v in result.verdicts if v.finding is not None]
    result.findings += leak_findings(leaks, t, tenant)
    return result


def _located(src: ProfileSource, v: Verdict) -> Verdict:
    """A reported regression with where it enters (:mod:`service.analysis.paths`) in its details:
    the caller paths read over the last hour of its baseline and the time since its change."""
    f = v.finding
    if f is None:
        return v
    panel = v.panel
    b_start, b_end = f.details["baseline_window"]
    r_end = f.details["recent_window"][1]
    b_start = max(b_start, b_end - PATHS_BASELINE_NS)
    keep = ((panel.ts >= b_start) & (panel.ts < b_end)) | ((panel.ts >= f.change_ts) & (panel.ts < r_end))
    totals = {
        (panel.series[int(panel.series_index[i])].series_id, int(panel.ts[i])): float(panel.total[i])
        for i in np.flatnonzero(keep)
    }
    rows = src.caller_paths([s.series_id for s in panel.series], TimeRange(b_start, r_end), f.function)
    found = locate(f.function, f.metric == "flat_share", rows, totals, f.change_ts)
    if found is None:
        return v
    return dataclasses.replace(v, finding=dataclasses.replace(f, details={**f.details, **found.details()}))


def returned(records: list[Record], result: Result, w: Windows, t: Tuning) -> list[int]:
    """Open findings not found again whose value (over the last ``persist`` window) is back nearer its
    baseline than the level it rose to: below the midpoint of the two.

    (Not "inside the baseline's confidence interval": that interval is of a mean over a day of
    profiles, far narrower than the spread of ten minutes' worth, so a fixed function would
    stay open by chance half the time.)"""
    found = {f.key for f in result.findings}
    out = []
    for r in records:
        if r.finding_key in found:
            continue
        panel = result.panels.get((r.service, r.profile_type))
        if panel is None:
            continue  # no data for it in this run: nothing says it returned
        window = w.leak if r.kind == "leak" else w.recent
        tail = (panel.ts >= window.end - t.persist_ns) & (panel.ts < window.end) & (panel.total > 0)
        if not tail.any():
            continue
        if r.kind == "leak":
            value = float(panel.total[tail].mean())
        elif r.function not in panel.functions:
            value = 0.0  # below the candidate floor now
        else:
            j = panel.functions.index(r.function)
            m = panel.flat if r.metric == "flat_share" else panel.cum
            value = float((m[tail, j] / panel.total[tail]).mean())
        if value <= (r.baseline + r.current) / 2:
            out.append(r.id)
    return out
