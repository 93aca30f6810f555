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
import itertools
import math
import os
import platform
import time
from typing import Any

import numpy as np

from bench.detection_streams import (
    BASELINE,
    LONG,
    ORACLE_ALPHA,
    RECENT,
    SEPARATION_EDGES,
    ControlStream,
    LeakStream,
    QuietStream,
    RowStream,
    S,
    Task,
    cpu,
    fmt,
    plan,
    run_tasks,
)
from bench.go_detection import gopair, real


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
