"""`make bench-regressions`: how well detection finds real regressions and leaks, and how often it cries wolf.

Streams are drawn from real profiles (bench/synthetic.py): CPU scrapes every 15 s from the six
back-to-back profiles of one Go program, heap and goroutine scrapes from real Go profiles. The
detector is the service's own (``regression_screens`` / ``confirm`` / ``leak_tests`` with the
default settings: 10 min, 30 min and 2 h recent windows, 24 h baseline, 5 min persistence, FDR 0.01 %
per run), run on the same schedule as the service (every 5 min; leaks every minute as well) over
panels shaped as ``load_panel`` shapes them (only functions with 0.5 % of the recent window).

Reported, each as a Markdown table:
- regressions: for a slowdown of +1 … +50 % of one function's own cost at a known time, on one
  instance and pooled over 8, at 1,500 and 6,000 CPU samples per scrape (about 1 and 4 busy
  cores): the share of streams that found it within 30 min and within 2 h, the median time to
  detect, the median change-point error, the separation (the rise in standard errors of the mean
  share that sampling and the workload's own drift leave to any test), and beside them an
  oracle on the same streams: a one-sided Welch t of the slowed function's share that knows the
  function and the change time, at the detector's false-alarm budget (≤ 1 per service-week);
- detection rate against separation, pooled over every row's streams;
- share artifacts: one function's own cost falls (the largest, -30 % and -50 %) and nothing else
  changes; every function's absolute cost is the same, so any finding is an artifact of shares;
- false positives: distinct findings on unchanged streams, per service-week;
- leaks: time to detect a 1 MB/min heap leak and a 10 goroutines/min leak, and the site named;
- the real Go program (tests/gotarget) with one function made 2x and 3x slower at a known
  moment, through a real DuckDB store and the service's own run (``analyze``), and its control;
- ``gopair``: the real Go program twice side by side for ``--gopair-minutes``, one slowed
  partway, scraped as the collector would and analyzed on the service's schedule.

Streams are independent, so they run as tasks on ``--jobs`` processes; each task's generator is
seeded from ``--seed`` and the task's own coordinates, so results do not depend on ``--jobs``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from bench.gotarget import build, running
from bench.synthetic import StackModel, cpu_model, draw_many, gauge_model, panel_of
from service.analysis.analyze import Windows, analyze, regression_screens
from service.analysis.detect import confirm
from service.analysis.findings import Finding, Tuning
from service.analysis.leaks import leak_findings, leak_tests
from service.analysis.panel import Panel
from service.collector.delta import Deltas
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.source import DuckDBSource
from service.types import DEFAULT_TENANT, ProfileType, TimeRange

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"  # the repository's own
S = 15 * 10**9
MIN = 60 * 10**9
HOUR = 60 * MIN
WEEK = 7 * 24 * HOUR
RECENT = 30 * MIN
SHORT = 10 * MIN
LONG = 2 * HOUR
BASELINE = 24 * HOUR
EVERY = 5 * MIN
HORIZON = 2 * HOUR
T = Tuning()
# The oracle's per-run level: Bonferroni over the runs of a service-week (one every 5 min, 2016),
# so it raises at most one false alarm a week in expectation, the detector's own target.
ORACLE_ALPHA = EVERY / WEEK
SEPARATION_EDGES = (2.0, 4.0, 6.0, 8.0, 12.0)


# --- streams ---------------------------------------------------------------------------------


@functools.cache
def cpu() -> StackModel:
    """The CPU stream model, built once per process: tasks carry only their coordinates, never the model."""
    return cpu_model(CORPUS)


@functools.cache
def gauge(kind: str) -> StackModel:
    return (
        gauge_model(CORPUS / "go119__heap.pb.gz", 3)
        if kind == "heap"
        else gauge_model(CORPUS / "go119__goroutine.pb.gz", 0)
    )


def targets(model: StackModel) -> list[int]:
    """The functions slowed: the real ones nearest to 5 % and to 1.3 % of CPU."""
    shares = model.flat_shares()
    return [int(np.argmin(np.abs(shares - s))) for s in (0.05, 0.013)]


def rng_for(seed: int, *key: int) -> np.random.Generator:
    """A task's own generator: the same stream whichever process runs it, and in whatever order."""
    return np.random.default_rng([seed, *key])


def layout(steps: int, units: int) -> tuple[I64, I64]:
    """Scrape times and instances, by scrape then instance; instances are spread over the interval."""
    i = np.repeat(np.arange(steps, dtype=np.int64), units)
    u = np.tile(np.arange(units, dtype=np.int64), steps)
    return i * S + u * (S // units), u


def cpu_stream(
    rng: np.random.Generator, units: int, n: int, before: int, after: int, slow: dict[int, float] | None
) -> tuple[Panel, int]:
    """``before`` scrape intervals unchanged, then ``after`` with ``slow`` applied; the panel and the change time."""
    model = cpu()
    counts = draw_many(model, rng, before * units, n)
    if after:
        counts = np.concatenate([counts, draw_many(model, rng, after * units, n, slow)])
    ts, unit = layout(before + after, units)
    return panel_of(model, counts, ts, unit), before * S


def run_times(change: int, horizon: int = HORIZON) -> range:
    """The service's runs after ``change``: every 5 min, up to ``horizon``."""
    return range(change + EVERY, change + horizon + 1, EVERY)


# --- the detector and the oracle -------------------------------------------------------------


def window_panel(full: Panel, end: int) -> tuple[Panel, Windows]:
    """The rows a run at ``end`` reads, and the columns ``load_panel`` would keep."""
    w = Windows.ending(end, RECENT, BASELINE, 0, RECENT, LONG, SHORT)
    lo, hi = np.searchsorted(full.ts, [w.span.start, end])
    r = slice(int(lo), int(hi))
    rec = full.ts[r] >= w.recent.start
    share = full.cum[r][rec].sum(axis=0) / max(full.total[r][rec].sum(), 1.0)
    cols = np.flatnonzero(share >= T.min_share)
    p = Panel(
        full.profile_type, full.service, full.series, full.units, full.ts[r], full.series_index[r], full.unit[r],
        full.total[r], [full.functions[j] for j in cols], full.flat[r][:, cols], full.cum[r][:, cols],
        full.duration[r],
    )  # fmt: skip
    p.callers = full.callers
    return p, w


def detect(full: Panel, end: int) -> list[Finding]:
    """The service's regression run at ``end`` on this panel (screens, correction, filters)."""
    p, w = window_panel(full, end)
    return [v.finding for v in confirm(regression_screens(p, w, T), T, "bench") if v.finding is not None]


def oracle_p(full: Panel, j: int, change: int, end: int) -> float:
    """One-sided Welch t p-value of "function ``j``'s flat share rose": the scrapes since ``change``
    against the 24 h before it, each instance centered on its own baseline mean as the detector does.

    It is told what the detector must find out (which function, and when), so it has no search to
    pay for: its delay is a reference for what a test of shares at the same false-alarm level can
    see in these samples. Scrapes are independent draws in this model, so the t statistic's null
    distribution holds (the control streams check it).
    """
    lo, mid, hi = (int(v) for v in np.searchsorted(full.ts, [change - BASELINE, change, end]))
    total = full.total[lo:hi]
    ok = total > 0
    share = full.flat[lo:hi, j] / np.where(ok, total, 1.0)
    unit = full.unit[lo:hi]
    base = (np.arange(hi - lo) < mid - lo) & ok
    n_units = len(full.units)
    means = np.bincount(unit[base], share[base], n_units) / np.maximum(np.bincount(unit[base], minlength=n_units), 1)
    x = share - means[unit]
    cur = ~base & ok
    if cur.sum() < 2 or base.sum() < 2:
        return 1.0
    p = sps.ttest_ind(x[cur], x[base], equal_var=False, alternative="greater").pvalue
    return float(p) if np.isfinite(p) else 1.0


class Timer:
    """CPU seconds spent in the detector, and calls, per task: where a run's time goes."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0

    def detect(self, full: Panel, end: int) -> list[Finding]:
        t = time.process_time()
        try:
            return detect(full, end)
        finally:
            self.calls += 1
            self.seconds += time.process_time() - t


# --- tasks: each one stream, run in a worker process ------------------------------------------


@dataclass(frozen=True, slots=True)
class Cost:
    """What a task spent: CPU seconds in all, and the detector's calls and CPU seconds (on ``units`` instances)."""

    cpu_s: float
    detect_calls: int
    detect_s: float
    units: int = 1


@dataclass(frozen=True, slots=True)
class RowStream:
    """One slowdown stream: when the detector found the function (minutes, change-point error in
    scrape intervals) and when the oracle did (minutes); ``None`` is not within the horizon."""

    f: int
    x: float
    units: int
    n: int
    detector: tuple[float, float] | None
    oracle: float | None
    cost: Cost


def regression_stream(seed: int, key: tuple[int, ...], f: int, x: float, units: int, n: int) -> RowStream:
    """Function ``f`` slowed by ``x`` after 26 h; the detector and the oracle at every run for 2 h.

    Each stops at its first hit; the detector's runs are the expensive part, the oracle's a
    single column.
    """
    t0 = time.process_time()
    timer = Timer()
    full, change = cpu_stream(rng_for(seed, *key), units, n, int((BASELINE + LONG) / S), int(HORIZON / S), {f: x})
    name = cpu().names[f]
    found: tuple[float, float] | None = None
    oracle: float | None = None
    for end in run_times(change):
        minutes = (end - change) / MIN
        if oracle is None and oracle_p(full, f, change, end) <= ORACLE_ALPHA:
            oracle = minutes
        if found is None:
            mine = [v for v in timer.detect(full, end) if v.function == name]
            if mine:
                found = (minutes, abs(mine[0].change_ts - change) / S)
        if found is not None and oracle is not None:
            break
    return RowStream(f, x, units, n, found, oracle, Cost(time.process_time() - t0, timer.calls, timer.seconds, units))


@dataclass(frozen=True, slots=True)
class Episodes:
    """Distinct findings over consecutive runs (a key found in consecutive runs is one), by function."""

    count: int = 0
    functions: dict[str, int] = field(default_factory=dict)


def episodes(runs: Iterable[list[Finding]]) -> Episodes:
    count, last_seen, functions = 0, dict[int, int](), dict[str, int]()
    for k, found in enumerate(runs):
        for f in found:
            if last_seen.get(f.key, -9) < k - 1:
                count += 1
                functions[f.function] = functions.get(f.function, 0) + 1
            last_seen[f.key] = k
    return Episodes(count, functions)


@dataclass(frozen=True, slots=True)
class ControlStream:
    """One stream where one function's own cost fell: the findings of 2 h of runs after the fall."""

    f: int
    x: float
    units: int
    n: int
    found: Episodes
    cost: Cost


def control_stream(seed: int, key: tuple[int, ...], f: int, x: float, units: int, n: int) -> ControlStream:
    """Function ``f``'s own cost changes by ``x`` < 0; no other function's absolute cost changes.

    The profile's total falls with it (fewer samples for the same wall time, as a real CPU
    profile would), so every other function's *share* rises by ``1 / (1 + share_f * x) - 1``.
    """
    t0 = time.process_time()
    timer = Timer()
    full, change = cpu_stream(rng_for(seed, *key), units, n, int((BASELINE + LONG) / S), int(HORIZON / S), {f: x})
    found = episodes(timer.detect(full, end) for end in run_times(change))
    return ControlStream(f, x, units, n, found, Cost(time.process_time() - t0, timer.calls, timer.seconds, units))


@dataclass(frozen=True, slots=True)
class QuietStream:
    """An unchanged stream: the detector's findings, and the oracle's alarms in its calibration runs."""

    units: int
    n: int
    days: float
    found: Episodes
    oracle_alarms: int
    oracle_runs: int
    cost: Cost


def quiet_stream(seed: int, key: tuple[int, ...], units: int, n: int, days: float) -> QuietStream:
    """``days`` of runs every 5 min on a stream where nothing changes (after a day to fill the baseline).

    The oracle is checked on the same stream: a pretended change every 2 h, for each target
    function, and its runs for 2 h after each, so its per-run false-alarm rate can be set against
    the level it was given.
    """
    t0 = time.process_time()
    timer = Timer()
    before = int((BASELINE + LONG) / S)
    full, stop = cpu_stream(rng_for(seed, *key), units, n, before + int(days * 24 * HOUR / S), 0, None)
    start = before * S
    found = episodes(timer.detect(full, end) for end in range(start, stop + 1, EVERY))
    alarms = runs = 0
    fs = targets(cpu())
    for change in range(start, stop - HORIZON + 1, HORIZON):
        for j in fs:
            for end in run_times(change):
                runs += 1
                alarms += oracle_p(full, j, change, end) <= ORACLE_ALPHA
    return QuietStream(
        units, n, days, found, alarms, runs, Cost(time.process_time() - t0, timer.calls, timer.seconds, units)
    )


@dataclass(frozen=True, slots=True)
class LeakStream:
    """A leak stream: minutes to the first run reporting it, the site reported, the true site, and
    the findings of the same stream drawn without the leak."""

    kind: str
    delay: float | None
    site: str | None
    truth: str
    control_findings: int
    cost: Cost


def leak_site(model: StackModel, stack: int, kind: str) -> str:
    """The function a leak at ``stack`` should be reported at: for memory the allocation site (the
    leaf); for goroutines, whose stacks all end in the scheduler, the frame of that stack found on
    the fewest stacks (the most specific; nearest the leaf on ties)."""
    frames = model.stacks[stack]
    if kind == "heap":
        return model.names[frames[0]]
    on = model.contains.sum(axis=0)
    return model.names[min(frames, key=lambda j: (on[j], frames.index(j)))]


def leak_stream(seed: int, key: tuple[int, ...], kind: str, per_min: float) -> LeakStream:
    """3 h of gauge scrapes every 15 s, a leak at the largest site from 2 h on, runs every minute."""
    t0 = time.process_time()
    rng = rng_for(seed, *key)
    model = gauge(kind)
    pt = ProfileType.parse(
        "memory:inuse_space:bytes:space:bytes" if kind == "heap" else "goroutine:goroutine:count:goroutine:count"
    )
    site = int(np.argmax(model.p))
    steps = int(3 * HOUR / S)
    start = int(2 * HOUR / S)
    ts = np.arange(steps, dtype=np.int64) * S
    delay: float | None = None
    reported: str | None = None
    control = 0
    for leaking in (True, False):
        if kind == "heap":
            levels = model.p[None, :] * rng.lognormal(0.0, 0.05, (steps, model.p.size))
        else:
            levels = rng.poisson(np.broadcast_to(model.p, (steps, model.p.size))).astype(np.float64)
        if leaking:
            grow = np.maximum(0, np.arange(steps) - start) * S / MIN * per_min
            levels[:, site] += np.floor(grow) if kind == "goroutine" else grow
        full = panel_of(model, levels, ts, np.zeros(steps, np.int64), profile_type=pt)
        for end in range(start * S + MIN, steps * S + 1, MIN):
            found = leak_findings(leak_tests(leak_panel(full, end), TimeRange(end - RECENT, end), T), T, "bench")
            if leaking and found:
                delay, reported = (end - start * S) / MIN, found[0].function
                break
            control += 0 if leaking else len(found)
    return LeakStream(
        kind, delay, reported, leak_site(model, site, kind), control, Cost(time.process_time() - t0, 0, 0.0)
    )


def leak_panel(full: Panel, end: int) -> Panel:
    """The leak window's rows (the last 30 min), every function a column as ``load_panel`` reads them."""
    lo, hi = np.searchsorted(full.ts, [end - RECENT, end])
    r = slice(int(lo), int(hi))
    return Panel(
        full.profile_type, full.service, full.series, full.units, full.ts[r], full.series_index[r], full.unit[r],
        full.total[r], full.functions, full.flat[r], full.cum[r], full.duration[r],
    )  # fmt: skip


# --- running the tasks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    section: str
    cost: float  # rough relative cost (detector calls x instances): the biggest start first
    fn: Callable[..., Any]
    args: tuple[Any, ...]


def run_tasks(tasks: list[Task], jobs: int) -> list[Any]:
    """Every task's result, in the order given. With ``jobs`` >= 1 they run on that many processes,
    the costliest first (so that the last to finish are short ones); 0 runs them here, for profiling."""
    if jobs <= 0:
        return [t.fn(*t.args) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    out: dict[int, Future[Any]] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for i in order:
            out[i] = pool.submit(tasks[i].fn, *tasks[i].args)
        return [out[i].result() for i in range(len(tasks))]


def settings_of(text: str) -> list[tuple[int, int]]:
    """``"1x1500,8x6000"`` -> [(1, 1500), (8, 6000)]: instances x samples per scrape."""
    return [(int(a), int(b)) for a, b in (s.split("x") for s in text.split(",") if s)]


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def plan(args: argparse.Namespace) -> list[Task]:
    """Every stream of the synthetic section as a task, keyed for its seed."""
    fs = targets(cpu())
    tasks: list[Task] = []
    for si, (units, n) in enumerate(settings_of(args.settings)):
        for f in fs:
            for xi, x in enumerate(floats(args.effects)):
                for rep in range(args.reps):
                    key: tuple[int, ...] = (1, si, f, xi, rep)
                    tasks.append(Task("regressions", 24 * units, regression_stream, (args.seed, key, f, x, units, n)))
    largest = int(np.argmax(cpu().flat_shares()))
    for si, (units, n) in enumerate(settings_of(args.control_settings)):
        for xi, x in enumerate(floats(args.control_effects)):
            for rep in range(args.reps):
                key = (2, si, xi, rep)
                tasks.append(Task("share control", 24 * units, control_stream, (args.seed, key, largest, x, units, n)))
    left, k = args.weeks * 7, 0
    while left > 1e-9:  # one stream per service-week, the last one shorter
        days = min(7.0, left)
        tasks.append(Task("false positives", days * 288, quiet_stream, (args.seed, (3, k), 1, 1500, days)))
        left, k = left - days, k + 1
    if args.pooled_days > 0:
        tasks.append(
            Task(
                "false positives",
                args.pooled_days * 288 * 8,
                quiet_stream,
                (args.seed, (4,), 8, 1500, args.pooled_days),
            )
        )
    for kind, per_min in (("heap", float(1 << 20)), ("goroutine", 10.0)):
        for rep in range(args.leak_reps):
            tasks.append(Task("leaks", 10, leak_stream, (args.seed, (5, int(kind == "heap"), rep), kind, per_min)))
    return tasks


# --- reporting -------------------------------------------------------------------------------


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def censored_median(values: list[float | None]) -> float:
    """Median with misses as +inf: a median time that half the streams did not reach is not a time."""
    return float(np.median([math.inf if v is None else v for v in values])) if values else math.inf


def rate(hits: list[bool]) -> str:
    return f"{sum(hits) / len(hits):.0%}" if hits else "-"


def regression_table(rows: list[RowStream]) -> None:
    """The detector beside the oracle, per (function, slowdown, instances, samples per scrape)."""
    model = cpu()
    shares = model.flat_shares()
    print(
        "| function (share of CPU) | slowdown | instances | samples/scrape | separation 30 min / 2 h | "
        "found in 30 min | found in 2 h | median time to detect | median change-point error | "
        "oracle found in 2 h | oracle median time | detector / oracle | ≤ 1.5x oracle |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple[int, int, int, float], list[RowStream]] = {}
    for r in rows:
        groups.setdefault((r.units, r.n, r.f, r.x), []).append(r)
    for (units, n, f, x), g in groups.items():
        sep30, sep2h = (separation(f, x, units, n, w) for w in (RECENT, LONG))
        got = [r.detector for r in g if r.detector is not None]
        det = censored_median([r.detector[0] if r.detector else None for r in g])
        orc = censored_median([r.oracle for r in g])
        ratio = det / orc if math.isfinite(orc) else math.nan
        verdict = "-" if orc > 120 else ("met" if ratio <= 1.5 else "**no**")
        print(
            f"| {model.names[f]} ({shares[f]:.1%}) | +{x:.0%} | {units} | {n:,} | {sep30:.1f} / {sep2h:.1f} SE | "
            f"{rate([h[0] <= 30 for h in got] + [False] * (len(g) - len(got)))} | {len(got) / len(g):.0%} | "
            f"{fmt(float(np.median([h[0] for h in got])) if got else None, '.0f')} min | "
            f"{fmt(float(np.median([h[1] for h in got])) if got else None, '.1f')} intervals | "
            f"{rate([r.oracle is not None for r in g])} | {fmt(orc, '.0f')} min | "
            f"{'∞' if math.isinf(ratio) else fmt(ratio, '.1f')} | {verdict} |"
        )


def separation(f: int, x: float, units: int, n: int, window: int) -> float:
    """The row's separation in ``window`` (StackModel.separation with the run's scrape counts)."""
    return cpu().separation(f, x, n, int(window / S) * units, int(BASELINE / S) * units)


def separation_table(rows: list[RowStream]) -> None:
    """Detection rate against the 30 min window's separation, every row's streams pooled."""
    edges = (0.0, *SEPARATION_EDGES, math.inf)
    names = ["< 2", *(f"{a:g}-{b:g}" for a, b in itertools.pairwise(SEPARATION_EDGES)), "≥ 12"]
    print(
        "| separation in 30 min | streams | found in 30 min | found in 2 h | oracle found in 30 min | oracle found in 2 h |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (lo, hi) in zip(names, itertools.pairwise(edges), strict=True):
        g = [r for r in rows if lo <= separation(r.f, r.x, r.units, r.n, RECENT) < hi]
        if not g:
            print(f"| {name} SE | 0 | - | - | - | - |")
            continue
        d = [r.detector[0] if r.detector else math.inf for r in g]
        o = [r.oracle if r.oracle is not None else math.inf for r in g]
        print(
            f"| {name} SE | {len(g)} | {rate([v <= 30 for v in d])} | {rate([v <= 120 for v in d])} | "
            f"{rate([v <= 30 for v in o])} | {rate([v <= 120 for v in o])} |"
        )


def control_table(streams: list[ControlStream]) -> None:
    model = cpu()
    shares = model.flat_shares()
    print(
        "| function whose own cost fell (share of CPU) | change | instances | samples/scrape | "
        "others' shares rise by | streams | findings in 2 h (any function) | functions reported |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple[int, int, int, float], list[ControlStream]] = {}
    for c in streams:
        groups.setdefault((c.units, c.n, c.f, c.x), []).append(c)
    for (units, n, f, x), g in groups.items():
        names: dict[str, int] = {}
        for c in g:
            for k, v in c.found.functions.items():
                names[k] = names.get(k, 0) + v
        top = ", ".join(f"{k} ({v})" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:4])
        more = f" and {len(names) - 4} more" if len(names) > 4 else ""
        print(
            f"| {model.names[f]} ({shares[f]:.1%}) | {x:+.0%} | {units} | {n:,} | {1 / (1 + shares[f] * x) - 1:+.1%} | "
            f"{len(g)} | {sum(c.found.count for c in g)} | {top + more or 'none'} |"
        )


def quiet_table(streams: list[QuietStream]) -> None:
    print("| instances | samples/scrape | service-weeks | distinct findings | per service-week | functions reported |")
    print("| --- | --- | --- | --- | --- | --- |")
    for units in sorted({q.units for q in streams}):
        g = [q for q in streams if q.units == units]
        weeks = sum(q.days for q in g) / 7
        count = sum(q.found.count for q in g)
        names = sorted({k for q in g for k in q.found.functions})
        print(f"| {units} | {g[0].n:,} | {weeks:.2f} | {count} | {count / weeks:.2f} | {', '.join(names) or 'none'} |")


def leak_table(streams: list[LeakStream]) -> None:
    print(
        "| leak | streams | found | within 15 min | median / max minutes | site named correctly | "
        "findings without the leak |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for kind, what in (("heap", "heap 1 MB/min"), ("goroutine", "goroutines 10/min")):
        g = [s for s in streams if s.kind == kind]
        if not g:
            continue
        got = [s.delay for s in g if s.delay is not None]
        sites = sorted({s.site for s in g if s.site is not None})
        print(
            f"| {what} | {len(g)} | {len(got)}/{len(g)} | {sum(d <= 15 for d in got)}/{len(g)} | "
            f"{fmt(float(np.median(got)) if got else None, '.0f')} / {fmt(max(got) if got else None, '.0f')} | "
            f"{sum(s.site == s.truth for s in g)}/{len(g)} ({g[0].truth}; reported: {', '.join(sites) or 'none'}) | "
            f"{sum(s.control_findings for s in g)} |"
        )


def cost_table(tasks: list[Task], results: list[Any]) -> None:
    """Where the time went: CPU per section and number of instances, and the detector's cost per call."""
    print("| section | instances | tasks | CPU s | longest task s | detector calls | detector s per call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for section, units in dict.fromkeys((t.section, r.cost.units) for t, r in zip(tasks, results, strict=True)):
        costs = [r.cost for t, r in zip(tasks, results, strict=True) if (t.section, r.cost.units) == (section, units)]
        calls = sum(c.detect_calls for c in costs)
        per = sum(c.detect_s for c in costs) / calls if calls else None
        print(
            f"| {section} | {units} | {len(costs)} | {sum(c.cpu_s for c in costs):.0f} | {max(c.cpu_s for c in costs):.0f} | "
            f"{calls} | {fmt(per, '.3f')} |"
        )


def synthetic(args: argparse.Namespace) -> None:
    tasks = plan(args)
    t0 = time.perf_counter()
    results = run_tasks(tasks, args.jobs)
    wall = time.perf_counter() - t0
    by: dict[str, list[Any]] = {}
    for t, r in zip(tasks, results, strict=True):
        by.setdefault(t.section, []).append(r)
    rows: list[RowStream] = by.get("regressions", [])
    quiet: list[QuietStream] = by.get("false positives", [])

    print(f"synthetic streams: {wall:.0f} s wall on {args.jobs} job(s); {args.reps} stream(s) per row")
    print()
    print("Where the time went (CPU seconds per section; the detector's own share of it):")
    print()
    cost_table(tasks, results)
    if rows:
        print()
        print(
            f"Oracle: a one-sided Welch t of the slowed function's flat share, scrapes since the true change "
            f"against the 24 h before it, each instance centered on its baseline mean; run at the detector's "
            f"times; per-run level {ORACLE_ALPHA:.2e} = 1/2016, Bonferroni over a service-week of runs every "
            f"5 min (at most 1 expected false alarm per service-week; conservative, not fitted on controls). "
            f"'detector / oracle' compares medians over the streams with misses counted as never."
        )
        print()
        regression_table(rows)
        print()
        separation_table(rows)
    if by.get("share control"):
        print()
        control_table(by["share control"])
    if quiet:
        print()
        quiet_table(quiet)
        alarms, runs = sum(q.oracle_alarms for q in quiet), sum(q.oracle_runs for q in quiet)
        if runs:
            print()
            print(
                f"Oracle on the same unchanged streams (a pretended change every 2 h, both target functions, "
                f"runs for 2 h after each): {alarms} alarm(s) in {runs:,} runs = {alarms / runs:.2e} per run "
                f"against its level {ORACLE_ALPHA:.2e}, i.e. {alarms / runs * 2016:.2f} per service-week of runs."
            )
    if by.get("leaks"):
        print()
        leak_table(by["leaks"])


# --- the real Go program ---------------------------------------------------------------------


def go_target(go: str, factors: list[int], before_s: float = 60.0, after_s: float = 90.0) -> list[tuple[Any, ...]]:
    """The real Go program: ``main.checksumBlock`` does ``factor`` times the work from a known moment.

    One-second CPU profiles are pulled back to back and ingested into a DuckDB store; from the
    switch on, a run every 5 s tests the last 30 s against everything before (persist 10 s), as
    the schedule would at this scale. Factor 1 is the control. Per factor: found, seconds from
    the switch to the first run that reports the function, change-point error in seconds, and
    findings of any other function.
    """
    t = Tuning(persist_ns=10 * 10**9, min_profiles=8, alpha=0.001)  # one short run, as in the e2e test
    out: list[tuple[Any, ...]] = []
    with tempfile.TemporaryDirectory(prefix="profstore-bench-go-") as tmp:
        work = Path(tmp)
        binary = build(work, go)
        db = Database(work / "store")
        ing = Ingestor(db)
        try:
            for factor in factors:
                service = f"gotarget-x{factor}"
                flags = ["-checksum"]
                if factor > 1:
                    flags += ["-checksum-slow-after", f"{3 + before_s}s", "-checksum-slow-factor", str(factor)]
                hit: tuple[float, float] | None = None
                others: set[str] = set()
                with running(binary, work, *flags) as url, httpx.Client(timeout=10) as http:
                    time.sleep(3)
                    t0 = time.time_ns()
                    switch = t0 + int(before_s * 1e9)
                    next_run = switch + 10 * 10**9
                    while time.time_ns() < switch + after_s * 1e9:
                        data = http.get(f"{url}/debug/pprof/profile", params={"seconds": 1}).content
                        ing.ingest(data, labels={"service_name": service, "instance": "gotarget"})
                        now = time.time_ns()
                        if now < next_run:
                            continue
                        next_run += 5 * 10**9
                        w = Windows.ending(now, 30 * 10**9, now - 30 * 10**9 - t0, 0, 30 * 10**9)
                        with db.read() as cur:
                            result = analyze(DuckDBSource(cur), DEFAULT_TENANT, w, t)
                            found = [f for f in result.findings if f.service == service]
                        others |= {f.function for f in found if f.function != "main.checksumBlock"}
                        mine = [f for f in found if f.function == "main.checksumBlock"]
                        if mine and hit is None:
                            hit = ((now - switch) / 1e9, abs(mine[0].change_ts - switch) / 1e9)
                out.append((factor, hit, sorted(others)))
        finally:
            db.close()
    return out


@dataclass(frozen=True, slots=True)
class PairRun:
    """One scheduled run of the gopair section: minutes since scraping began, and what each service got."""

    minute: float
    findings: dict[str, list[Finding]]
    seconds: float  # the run's own time (it shares the cores with the scrapers)
    cpu: dict[str, Panel]  # the CPU panel each service was tested on


@dataclass(frozen=True, slots=True)
class PairSchedule:
    """The service's schedule, shrunk only where a short run needs it: a run every 5 min testing the
    last 30 min (5 min persistence) when the run is long enough, else a sixth, a third and a third
    of it; the baseline is everything scraped before the recent window, the leak window 30 min or
    everything scraped. The slowed copy switches a third of the way in, so that two runs or more
    come after the change has held for the persistence."""

    minutes: float

    @property
    def total_ns(self) -> int:
        return int(self.minutes * MIN)

    @property
    def every_ns(self) -> int:
        return min(EVERY, self.total_ns // 6)

    @property
    def recent_ns(self) -> int:
        return min(RECENT, self.total_ns // 3)

    @property
    def switch_ns(self) -> int:
        return self.total_ns // 3

    def tuning(self) -> Tuning:
        return Tuning(persist_ns=min(T.persist_ns, self.recent_ns))

    def windows(self, start: int, end: int) -> Windows:
        return Windows.ending(end, self.recent_ns, end - self.recent_ns - start, 0, min(RECENT, end - start))

    def run_offsets(self) -> list[int]:
        """Runs once the baseline holds at least half as long as the recent window."""
        first = math.ceil(1.5 * self.recent_ns / self.every_ns)
        return [k * self.every_ns for k in range(first, self.total_ns // self.every_ns + 1)]


@dataclass(frozen=True, slots=True)
class Scraped:
    stored: int  # profiles stored (CPU and allocs deltas)
    starts: list[int]  # when each CPU profile was requested (ns): the scrape interval actually kept


def scrape_loop(url: str, labels: dict[str, str], ing: Ingestor, deltas: Deltas, stop: threading.Event) -> Scraped:
    """Scrape one target as the collector would, back to back until ``stop``: a 5 s CPU profile, then
    the allocs profile stored as the difference from the previous one (Go counts allocations since
    start; stored raw, each profile would repeat the whole history)."""
    stored = 0
    starts: list[int] = []
    key = f"{labels['service_name']}/allocs"
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            starts.append(time.time_ns())
            r = http.get(f"{url}/debug/pprof/profile", params={"seconds": 5})
            r.raise_for_status()
            ing.ingest(r.content, labels=labels, source="scrape")
            r = http.get(f"{url}/debug/pprof/allocs")
            r.raise_for_status()
            delta = deltas.apply(key, ing.read(r.content), time.time_ns())
            stored += 1
            if delta.envelope is not None:
                ing.store(delta.envelope, labels=labels, source="scrape")
                stored += 1
    return Scraped(stored, starts)


@dataclass(frozen=True, slots=True)
class PairResult:
    schedule: PairSchedule
    runs: list[PairRun]
    scraped: dict[str, Scraped]
    start: int  # when scraping began (ns)
    switch: int  # when the slowed copy switched (ns)


def go_pair(go: str, minutes: float, factor: int = 2) -> PairResult:
    """Two copies of the real Go program side by side, ``main.checksumBlock`` ``factor`` times slower
    in one from a third of the way in; both scraped into one DuckDB store and analyzed on the service's schedule
    (:class:`PairSchedule`)."""
    sched = PairSchedule(minutes)
    flags = ["-checksum", "-checksum-blocks", "16"]
    warmup = 5 * 10**9  # the programs' start-up is not part of what is measured
    with tempfile.TemporaryDirectory(prefix="profstore-bench-gopair-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        binary = build(work, go)
        for d in ("unchanged", "slowed"):
            (work / d).mkdir()
        db = Database(work / "store")
        stack.callback(db.close)
        ing = Ingestor(db)
        launched = time.time_ns()  # the slowed copy's clock starts a few ms after this
        slow = [
            "-checksum-slow-after",
            f"{(warmup + sched.switch_ns) / 1e9:.3f}s",
            "-checksum-slow-factor",
            str(factor),
        ]
        urls = {
            "gopair-slowed": stack.enter_context(running(binary, work / "slowed", *flags, *slow)),
            "gopair-unchanged": stack.enter_context(running(binary, work / "unchanged", *flags)),
        }
        start = launched + warmup
        time.sleep(max(0.0, (start - time.time_ns()) / 1e9))
        stop = threading.Event()
        deltas = Deltas()
        with ThreadPoolExecutor(2) as pool:
            scrapes = {
                svc: pool.submit(scrape_loop, url, {"service_name": svc, "instance": "gotarget"}, ing, deltas, stop)
                for svc, url in urls.items()
            }
            try:
                runs = [pair_run(db, sched, start, off, scrapes) for off in sched.run_offsets()]
            finally:
                stop.set()
            scraped = {svc: f.result() for svc, f in scrapes.items()}
    return PairResult(sched, runs, scraped, start, start + sched.switch_ns)


def pair_run(
    db: Database, sched: PairSchedule, start: int, offset: int, scrapes: dict[str, Future[Scraped]]
) -> PairRun:
    """Wait for the run's time, then ``analyze`` the store as the scheduled run would."""
    while time.time_ns() < start + offset:
        for job in scrapes.values():
            if job.done():
                job.result()  # a scraper that stopped early raises its error here
        time.sleep(0.2)
    end = time.time_ns()
    t0 = time.perf_counter()
    with db.read() as cur:
        result = analyze(DuckDBSource(cur), DEFAULT_TENANT, sched.windows(start, end), sched.tuning())
    by: dict[str, list[Finding]] = {svc: [] for svc in scrapes}
    for f in result.findings:
        by.setdefault(f.service, []).append(f)
    cpu = {svc: p for (svc, pt), p in result.panels.items() if pt.startswith("process_cpu:cpu:")}
    return PairRun((end - start) / MIN, by, time.perf_counter() - t0, cpu)


def share_around(panel: Panel | None, name: str, switch: int) -> str:
    """``name``'s mean flat share of CPU before and after ``switch``: that the slowdown is in the data."""
    if panel is None or name not in panel.functions:
        return "-"
    j = panel.functions.index(name)
    share = panel.flat[:, j] / np.maximum(panel.total, 1.0)
    before, after = share[panel.ts < switch], share[panel.ts >= switch]
    return f"{fmt(float(before.mean()) if before.size else None, '.1%')} → {fmt(float(after.mean()) if after.size else None, '.1%')}"


def gopair(args: argparse.Namespace) -> None:
    go = shutil.which("go")
    if go is None:
        print("gopair: go not installed, skipped")
        return
    t0 = time.perf_counter()
    res = go_pair(go, args.gopair_minutes)
    sched = res.schedule
    print(
        f"gopair: two tests/gotarget processes (-checksum -checksum-blocks 16), each scraped back to back for "
        f"{sched.minutes:g} min: a 5 s CPU profile, then allocs (stored as the difference from the previous "
        f"scrape, as the collector stores it), into one DuckDB store; `analyze` every {sched.every_ns / MIN:g} min, "
        f"the last {sched.recent_ns / MIN:g} min against everything scraped before, persistence "
        f"{sched.tuning().persist_ns / MIN:g} min, other settings default; main.checksumBlock 2x slower in one copy "
        f"from minute {(res.switch - res.start) / MIN:g}. {time.perf_counter() - t0:.0f} s."
    )
    print()
    print(
        "| copy | profiles stored | scrape interval median / max | main.checksumBlock share before → after the switch | "
        "runs (minute) | distinct findings | main.checksumBlock | other findings |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for svc in ("gopair-unchanged", "gopair-slowed"):
        seen = [r.findings.get(svc, []) for r in res.runs]
        hit = next(
            ((r, f) for r in res.runs for f in r.findings.get(svc, []) if f.function == "main.checksumBlock"), None
        )
        mine = (
            "not found"
            if hit is None
            else f"found at the run {hit[0].minute - (res.switch - res.start) / MIN:.1f} min after the switch, "
            f"change point off by {abs(hit[1].change_ts - res.switch) / 1e9:.0f} s"
        )
        others = sorted(
            {
                f"{f.function} ({f.kind}, {f.profile_type.split(':')[1]}, {f.metric})"
                for fs in seen
                for f in fs
                if f.function != "main.checksumBlock"
            }
        )
        minutes = ", ".join(f"{r.minute:.1f}" for r in res.runs)
        gaps = np.diff(res.scraped[svc].starts) / 1e9
        print(
            f"| {svc} | {res.scraped[svc].stored} | {fmt(float(np.median(gaps)) if gaps.size else None, '.1f')} / "
            f"{fmt(float(gaps.max()) if gaps.size else None, '.1f')} s | "
            f"{share_around(res.runs[-1].cpu.get(svc) if res.runs else None, 'main.checksumBlock', res.switch)} | "
            f"{len(res.runs)} ({minutes}) | "
            f"{episodes(seen).count} | {mine} | {', '.join(others) or 'none'} |"
        )
    print()
    print(f"`analyze` took {', '.join(f'{r.seconds:.1f}' for r in res.runs)} s per run.")


def real() -> None:
    go = shutil.which("go")
    if go is None:
        print("Go target: go not installed, skipped")
        return
    t0 = time.perf_counter()
    results = go_target(go, [1, 2, 3])
    print(
        f"Go target (tests/gotarget, 1-second CPU profiles, 60 s before the switch, 90 s after): {time.perf_counter() - t0:.0f} s"
    )
    for factor, hit, others in results:
        what = "control (no slowdown)" if factor == 1 else f"main.checksumBlock {factor}x slower"
        found = (
            "-"
            if factor == 1
            else (
                "not found"
                if hit is None
                else f"found {hit[0]:.0f} s after the switch, change point off by {hit[1]:.0f} s"
            )
        )
        print(f"- {what}: {found}; findings on other functions: {', '.join(others) or 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2, help="streams per (function, effect, setting)")
    ap.add_argument("--weeks", type=float, default=4.0, help="unchanged service-weeks on one instance")
    ap.add_argument("--pooled-days", type=float, default=1.0, help="unchanged days pooled over 8 instances")
    ap.add_argument(
        "--settings",
        default="1x1500,1x6000,8x1500,8x6000",
        help="instances x samples per scrape, comma-separated (1,500 is one busy core at 100 Hz)",
    )
    ap.add_argument("--effects", default="0.01,0.02,0.05,0.10,0.50", help="slowdowns of the regression rows")
    ap.add_argument(
        "--control-settings", default="1x1500,8x6000", help="settings of the share-artifact control (falling cost)"
    )
    ap.add_argument("--control-effects", default="-0.3,-0.5", help="changes of the largest function's own cost")
    ap.add_argument("--leak-reps", type=int, default=10, help="streams per leak kind")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for the streams (0: in this process)")
    ap.add_argument("--gopair-minutes", type=float, default=30.0, help="length of the gopair section")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--sections", default="synthetic,go", help="which parts to run: synthetic, go, gopair")
    args = ap.parse_args()
    sections = {x.strip() for x in args.sections.split(",")}
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    if "synthetic" in sections:
        synthetic(args)
    if "go" in sections:
        print()
        real()
    if "gopair" in sections:
        print()
        gopair(args)


if __name__ == "__main__":
    main()
