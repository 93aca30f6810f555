"""The real Go program in `make bench-regressions`: ``tests/gotarget`` slowed at a known moment and
analyzed through a real DuckDB store (section ``go``), and two copies side by side, one slowed,
scraped as the collector would for ``--gopair-minutes`` (section ``gopair``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.detection_streams import EVERY, MIN, RECENT, T, episodes, fmt
from bench.gotarget import build, running
from service.analysis.analyze import Windows, analyze
from service.analysis.findings import Finding, Tuning
from service.analysis.panel import Panel
from service.collector.delta import Deltas
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.source import DuckDBSource
from service.types import DEFAULT_TENANT

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
