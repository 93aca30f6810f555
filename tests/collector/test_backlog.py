"""A writer that falls behind: the collector's store backlog stays bounded, and the excess runs are skipped, counted.

The collector is built with its sink directly; the sink blocks on an Event, as a writer stuck
behind a slow disk would, while real scrapes of a real HTTP server (``fault_server``) go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from service.collector.health import SKIP_STORE_BACKLOG
from service.collector.jobs import Collector
from service.metrics import Metrics
from service.pprof.decode import Envelope
from service.scrape_config import ScrapeConfig
from service.types import DecodeLimits
from tests.collector.fault_server import FaultServer

BOUND = 5
JOBS = 4  # target x type keys, each scraped every 200 ms
ONLY_GOROUTINE = {n: {"enabled": False} for n in ("process_cpu", "memory", "block", "mutex")}


class BlockedSink:
    """Stores nothing until ``gate`` is set; records what it was handed, in order, per job."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.stored: list[tuple[str, int]] = []  # (job, the profile's time)
        self._lock = threading.Lock()

    def __call__(self, env: Envelope, labels: Mapping[str, str], name: str, tenant: str) -> int:
        assert name == "goroutine" and self.gate.wait(60), "the sink was never released"
        with self._lock:
            self.stored.append((labels["job"], env.header.time_nanos))
        return 1


async def _until(check: Callable[[], bool], watch: Callable[[], None], seconds: float = 60) -> None:
    """Poll ``check`` every few ms, calling ``watch`` each time; a generous timeout only against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        watch()
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)
    watch()


def test_a_stuck_writer_bounds_pending_stores_and_the_excess_is_skipped(corpus: Path) -> None:
    faults = FaultServer(corpus, bomb_bytes=1024)
    sink = BlockedSink()
    metrics = Metrics()
    configs = [
        ScrapeConfig.model_validate({
            "job_name": f"j{i}", "scrape_interval": "200ms", "scrape_timeout": "200ms",
            "static_configs": [{"targets": [faults.address]}],
            "profiling_config": {"path_prefix": "/ok", "pprof_config": ONLY_GOROUTINE},
        })
        for i in range(JOBS)
    ]  # fmt: skip
    collector = Collector(sink, limits=DecodeLimits(), metrics=metrics, max_pending_stores=BOUND)
    peak = 0

    def watch() -> None:
        nonlocal peak
        peak = max(peak, collector.pending_stores)

    def backlog_skips() -> int:
        return sum(h.skipped_store_backlog for h in collector.health.snapshot())

    def stored_ok() -> int:
        return sum(h.scrapes for h in collector.health.snapshot())

    async def scenario() -> None:
        await collector.start(configs, Path("."))
        try:
            # Stuck: the backlog fills to the bound, never past it, and further runs are skipped.
            await _until(lambda: backlog_skips() >= 2 * JOBS, watch)
            assert collector.pending_stores == BOUND and peak == BOUND
            assert sink.stored == [] and stored_ok() == 0
            health = collector.health.snapshot()
            assert {h.last_skip_reason for h in health if h.skipped} == {SKIP_STORE_BACKLOG}, health
            assert all(h.skipped == h.skipped_store_backlog for h in health), health
            # Released: everything waiting is stored, and scraping resumes past it.
            sink.gate.set()
            await _until(lambda: stored_ok() >= BOUND + 2 * JOBS, watch)
        finally:
            sink.gate.set()
            await collector.stop(drain_s=30)
        assert peak <= BOUND
        assert collector.pending_stores == 0

    with faults.running():
        asyncio.run(scenario())

    health = collector.health.snapshot()
    assert len(health) == JOBS
    assert all(h.failures == 0 and h.health == "up" for h in health), health
    # Every run that reached the sink was stored and counted ok; nothing failed or vanished.
    assert len(sink.stored) == sum(h.scrapes for h in health)
    skipped = sum(h.skipped for h in health)
    counted = sum(s.value for m in metrics.scrapes_skipped.collect() for s in m.samples if s.name.endswith("_total"))
    assert skipped == counted > 0
    # The bytes fetched are each stored, skipped before decoding, or were the one in flight at stop.
    fetched = faults.requests["ok"]
    assert len(sink.stored) <= fetched <= len(sink.stored) + sum(h.skipped_store_backlog for h in health) + JOBS
    # Per target x type, scrapes were stored in the order they were taken.
    for job in {j for j, _ in sink.stored}:
        times = [t for j, t in sink.stored if j == job]
        assert times == sorted(times), (job, times)
