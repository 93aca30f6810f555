"""The synthetic streams of `make bench-regressions` and what runs on them: the service's detector
(``regression_screens`` / ``confirm`` on panels shaped as ``load_panel`` shapes them), the oracle
beside it, and the tasks (one stream each) that ``--jobs`` processes run.

Streams are drawn from real profiles (bench/synthetic.py). Each task's generator is seeded from
``--seed`` and the task's own coordinates, so results do not depend on ``--jobs``.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from bench.synthetic import StackModel, cpu_model, draw_many, gauge_model, panel_of
from service.analysis.analyze import Windows, regression_screens
from service.analysis.detect import confirm
from service.analysis.findings import Finding, Tuning
from service.analysis.leaks import leak_findings, leak_tests
from service.analysis.panel import Panel
from service.types import ProfileType, TimeRange

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
