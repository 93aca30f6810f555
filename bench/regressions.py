"""`make bench-regressions`: how well detection finds real regressions and leaks, and how often it cries wolf.

Streams are drawn from real profiles (bench/synthetic.py): CPU scrapes every 15 s from the six
back-to-back profiles of one Go program, heap and goroutine scrapes from real Go profiles. The
detector is the service's own (``regression_screens`` / ``confirm`` / ``leak_tests`` with the
default settings: 30 min and 2 h recent windows, 24 h baseline, 10 min persistence, FDR 0.01 %
per run), run on the same
schedule as the service (every 5 min; leaks every minute as well) over panels shaped as
``load_panel`` shapes them (only functions with 0.5 % of the recent window).

Reported:
- regressions: for a slowdown of +1 … +50 % of one function's own cost at a known time, on one
  instance and pooled over 8, at 1,500 and 6,000 CPU samples per scrape (about 1 and 4 busy
  cores): the share of runs that found it within 30 min and within 2 h, the median time to
  detect, and the median change-point error in scrape intervals; beside them the separation
  (the rise in standard errors of the mean share) that sampling and the workload's own drift
  leave to any test in a 30 min and a 2 h window, so a miss can be told from a weak detector;
- false positives: distinct findings on control streams (same draws, no change), per
  service-week;
- leaks: time to detect a 1 MB/min heap leak and a 10 goroutines/min leak;
- the real Go program (tests/gotarget) with one function made 2x and 3x slower at a known
  moment, through a real DuckDB store and the service's own run (``analyze``), and its control.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.gotarget import build, running
from bench.synthetic import StackModel, cpu_model, draw_many, gauge_model, panel_of
from service.analysis.analyze import Windows, analyze, regression_screens
from service.analysis.detect import confirm
from service.analysis.findings import Finding, Tuning
from service.analysis.leaks import leak_findings, leak_tests
from service.analysis.panel import Panel
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.source import DuckDBSource
from service.types import DEFAULT_TENANT, ProfileType, TimeRange

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"  # the repository's own
S = 15 * 10**9
MIN = 60 * 10**9
HOUR = 60 * MIN
RECENT = 30 * MIN
LONG = 2 * HOUR
BASELINE = 24 * HOUR
EVERY = 5 * MIN
T = Tuning()


def stream(
    model: StackModel, rng: np.random.Generator, steps: int, units: int, n: int, slow: dict[int, float] | None
) -> np.ndarray:
    """(steps x units, stacks) counts, ordered by scrape then instance (= by time)."""
    return draw_many(model, rng, steps * units, n, slow)


def layout(steps: int, units: int) -> tuple[np.ndarray, np.ndarray]:
    i = np.repeat(np.arange(steps, dtype=np.int64), units)
    u = np.tile(np.arange(units, dtype=np.int64), steps)
    return i * S + u * (S // units), u


def window_panel(full: Panel, end: int) -> tuple[Panel, Windows]:
    """The rows a run at ``end`` reads, and the columns ``load_panel`` would keep."""
    w = Windows.ending(end, RECENT, BASELINE, 0, RECENT, LONG)
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
    p, w = window_panel(full, end)
    return [v.finding for v in confirm(regression_screens(p, w, T), T, "bench") if v.finding is not None]


def regressions(
    model: StackModel,
    rng: np.random.Generator,
    targets: list[int],
    effects: list[float],
    units: int,
    n: int,
    reps: int,
    horizon: int,
) -> list[tuple]:
    """Per (function, effect): runs found within 30 min, within the horizon, median minutes, median
    change-point error, and the separation (standard errors) the 30 min and 2 h windows allow."""
    before = int((BASELINE + LONG) / S)
    after = int(horizon / S)
    ts, unit = layout(before + after, units)
    change = before * S
    out = []
    results: dict[tuple[int, float], list[tuple[float | None, float | None]]] = {}
    for _ in range(reps):
        base_counts = stream(model, rng, before, units, n, None)
        for f in targets:
            for x in effects:
                counts = np.concatenate([base_counts, stream(model, rng, after, units, n, {f: x})])
                full = panel_of(model, counts, ts, unit)
                hit: tuple[float | None, float | None] = (None, None)
                for end in range(change + EVERY, change + horizon + 1, EVERY):
                    found = [x for x in detect(full, end) if x.function == model.names[f]]
                    if found:
                        hit = ((end - change) / MIN, abs(found[0].change_ts - change) / S)
                        break
                results.setdefault((f, x), []).append(hit)
    shares = model.flat_shares()
    base_scrapes = int(BASELINE / S) * units
    for (f, x), hits in results.items():
        got = [h for h in hits if h[0] is not None]
        sep = [model.separation(f, x, n, int(w / S) * units, base_scrapes) for w in (RECENT, LONG)]
        out.append((
            model.names[f], shares[f], x, units, n, *sep,
            sum(1 for h in got if h[0] <= 30) / len(hits), len(got) / len(hits),
            float(np.median([h[0] for h in got])) if got else None,
            float(np.median([h[1] for h in got])) if got else None,
        ))  # fmt: skip
    return out


def false_positives(model: StackModel, rng: np.random.Generator, units: int, n: int, days: float) -> tuple[int, float]:
    """Distinct findings (a key found in consecutive runs is one) over ``days`` of runs on an unchanged stream."""
    before = int((BASELINE + LONG) / S)
    steps = before + int(days * 24 * HOUR / S)
    ts, unit = layout(steps, units)
    full = panel_of(model, stream(model, rng, steps, units, n, None), ts, unit)
    episodes, last_seen = 0, {}
    for k, end in enumerate(range(before * S, steps * S + 1, EVERY)):
        for f in detect(full, end):
            if last_seen.get(f.key, -9) < k - 1:
                episodes += 1
            last_seen[f.key] = k
    return episodes, days


def leak_delay(
    model: StackModel, kind: str, per_min: float, rng: np.random.Generator, reps: int
) -> tuple[list[float | None], int]:
    """Minutes from the leak's start to the first run (every minute) that reports it; and findings on controls."""
    pt = ProfileType.parse(
        "memory:inuse_space:bytes:space:bytes" if kind == "heap" else "goroutine:goroutine:count:goroutine:count"
    )
    site = int(np.argmax(model.p))
    steps = int(3 * HOUR / S)
    start = int(2 * HOUR / S)
    delays: list[float | None] = []
    control_findings = 0
    for _ in range(reps):
        for leaking in (True, False):
            if kind == "heap":
                levels = model.p[None, :] * rng.lognormal(0.0, 0.05, (steps, model.p.size))
            else:
                levels = rng.poisson(np.broadcast_to(model.p, (steps, model.p.size))).astype(np.float64)
            if leaking:
                grow = np.maximum(0, np.arange(steps) - start) * S / MIN * per_min
                levels[:, site] += np.floor(grow) if kind == "goroutine" else grow
            ts = np.arange(steps, dtype=np.int64) * S
            full = panel_of(model, levels, ts, np.zeros(steps, np.int64), profile_type=pt)
            hit = None
            for end in range(start * S + MIN, steps * S + 1, MIN):
                window = TimeRange(end - RECENT, end)
                lo, hi = np.searchsorted(ts, [window.start, end])
                p = Panel(
                    pt,
                    full.service,
                    full.series,
                    full.units,
                    ts[lo:hi],
                    full.series_index[lo:hi],
                    full.unit[lo:hi],
                    full.total[lo:hi],
                    full.functions,
                    full.flat[lo:hi],
                    full.cum[lo:hi],
                    full.duration[lo:hi],
                )
                found = leak_findings(leak_tests(p, window, T), T, "bench")
                if found and leaking:
                    hit = (end - start * S) / MIN
                    break
                control_findings += len(found) if not leaking else 0
            if leaking:
                delays.append(hit)
    return delays, control_findings


def go_target(go: str, factors: list[int], before_s: float = 60.0, after_s: float = 90.0) -> list[tuple]:
    """The real Go program: ``main.checksumBlock`` does ``factor`` times the work from a known moment.

    One-second CPU profiles are pulled back to back and ingested into a DuckDB store; from the
    switch on, a run every 5 s tests the last 30 s against everything before (persist 10 s), as
    the schedule would at this scale. Factor 1 is the control. Per factor: found, seconds from
    the switch to the first run that reports the function, change-point error in seconds, and
    findings of any other function.
    """
    t = Tuning(persist_ns=10 * 10**9, min_profiles=8, alpha=0.001)  # one short run, as in the e2e test
    out = []
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


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def synthetic(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    model = cpu_model(CORPUS)
    shares = model.flat_shares()
    by_share = [int(j) for j in np.argsort(-shares)]
    # The functions slowed: the real ones nearest to 5 % and to 1.3 % of CPU.
    targets = [min(by_share, key=lambda j: abs(shares[j] - s)) for s in (0.05, 0.013)]
    effects = [0.01, 0.02, 0.05, 0.10, 0.50]
    rows = []
    for setting in args.settings.split(","):
        units, n = (int(v) for v in setting.split("x"))
        rows += regressions(model, rng, targets, effects, units, n, args.reps, 2 * HOUR)
    fp_one = [false_positives(model, rng, 1, 1500, 7.0) for _ in range(max(1, round(args.weeks)))]
    fp_pool = false_positives(model, rng, 8, 1500, args.pooled_days)
    heap = gauge_model(CORPUS / "go119__heap.pb.gz", 3)
    goroutines = gauge_model(CORPUS / "go119__goroutine.pb.gz", 0)
    heap_delay, heap_fp = leak_delay(heap, "heap", float(1 << 20), rng, 10)
    gr_delay, gr_fp = leak_delay(goroutines, "goroutine", 10.0, rng, 10)
    took = time.perf_counter() - t0

    print(f"synthetic streams: {took:.0f} s; {args.reps} streams per row")
    print()
    print(
        "| function (share of CPU) | slowdown | instances | samples/scrape | separation 30 min / 2 h | "
        "found in 30 min | found in 2 h | median time to detect | median change-point error |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, share, x, units, n, sep30, sep2h, in30, in2h, ttd, cpe in rows:
        print(
            f"| {name} ({share:.1%}) | +{x:.0%} | {units} | {n:,} | {sep30:.1f} / {sep2h:.1f} SE | {in30:.0%} | {in2h:.0%} | "
            f"{fmt(ttd, '.0f')} min | {fmt(cpe, '.1f')} intervals |"
        )
    print()
    weeks = sum(d for _, d in fp_one) / 7
    print(
        f"false positives, 1 instance, 1,500 samples/scrape: {sum(e for e, _ in fp_one)} in {weeks:g} service-week(s) = {sum(e for e, _ in fp_one) / weeks:.2f} per service-week"
    )
    print(
        f"false positives, 8 instances pooled: {fp_pool[0]} in {fp_pool[1]:g} day(s) = {fp_pool[0] / fp_pool[1] * 7:.2f} per service-week"
    )
    for what, delays, fp in (("heap 1 MB/min", heap_delay, heap_fp), ("goroutines 10/min", gr_delay, gr_fp)):
        got = [d for d in delays if d is not None]
        print(
            f"leak {what}: found in {len(got)}/{len(delays)} streams, median {fmt(float(np.median(got)) if got else None, '.0f')} min, "
            f"max {fmt(max(got) if got else None, '.0f')} min after it started (runs every minute); "
            f"findings on the same streams without a leak: {fp}"
        )


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
    ap.add_argument("--weeks", type=float, default=1.0, help="control service-weeks on one instance")
    ap.add_argument("--pooled-days", type=float, default=1.0, help="control days pooled over 8 instances")
    ap.add_argument(
        "--settings",
        default="1x1500,1x6000,8x1500,8x6000",
        help="instances x samples per scrape, comma-separated (1,500 is one busy core at 100 Hz)",
    )
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--sections", default="synthetic,go", help="which parts to run: synthetic, go or both")
    args = ap.parse_args()
    sections = {x.strip() for x in args.sections.split(",")}
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    if "synthetic" in sections:
        synthetic(args)
    if "go" in sections:
        print()
        real()


if __name__ == "__main__":
    main()
