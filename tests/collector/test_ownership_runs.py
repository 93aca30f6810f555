"""The collector on a lake: each due run scrapes only a target this node owns; a target that moves away
is left to its owner (not counted as a skipped run) and loses its delta baseline, so when it comes back
its first scrape here is a baseline again, not a delta over the time another node scraped it.

Real scrapes of a real HTTP server (``fault_server``) every 200 ms; the live set is a fake
``ownership`` callable the test switches, as the lake's heartbeats would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from service.collector.jobs import Collector, first_run_in
from service.collector.ownership import owner
from service.metrics import Metrics
from service.pprof.decode import Envelope
from service.scrape_config import ScrapeConfig
from service.types import DecodeLimits
from tests.collector.fault_server import FaultServer

ME = "node-1:/data"
ONLY_MEMORY = {n: {"enabled": False} for n in ("process_cpu", "goroutine", "block", "mutex")}
JOBS = ("stays", "moves")


class Sink:
    def __init__(self) -> None:
        self.stored: list[str] = []  # the job of each profile stored, in order
        self._lock = threading.Lock()

    def __call__(self, env: Envelope, labels: Mapping[str, str], name: str, tenant: str) -> int:
        with self._lock:
            self.stored.append(labels["job"])
        return 1

    def count(self, job: str) -> int:
        with self._lock:
            return self.stored.count(job)


class Live:
    """What ``db.cluster`` tells the collector: this node's name and the live set, switched by the test."""

    def __init__(self) -> None:
        self.nodes: tuple[str, ...] = (ME,)

    def __call__(self) -> tuple[str, tuple[str, ...]]:
        return ME, self.nodes


def _other_node(address: str) -> str:
    """A node name that, beside ME, owns job ``moves`` and not job ``stays``."""
    for i in range(1000):
        other = f"node-{i + 2}:/data"
        pair = (ME, other)
        if owner(f"moves/{address}", pair) == other and owner(f"stays/{address}", pair) == ME:
            return other
    raise AssertionError("no such node name")


async def _until(check: Callable[[], bool], seconds: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_target_owned_elsewhere_is_left_to_its_owner_and_starts_from_a_baseline_when_it_comes_back(
    corpus: Path,
) -> None:
    faults = FaultServer(corpus, bomb_bytes=1024)
    sink, live, metrics = Sink(), Live(), Metrics()
    other = _other_node(faults.address)
    configs = [
        ScrapeConfig.model_validate({
            "job_name": job, "scrape_interval": "200ms", "scrape_timeout": "200ms",
            "static_configs": [{"targets": [faults.address]}],
            "profiling_config": {"path_prefix": "/ok", "pprof_config": ONLY_MEMORY},
        })
        for job in JOBS
    ]  # fmt: skip
    collector = Collector(sink, limits=DecodeLimits(), metrics=metrics, ownership=live)
    outcomes: dict[str, list[str]] = {job: [] for job in JOBS}  # what each scrape that ended turned into
    ok = collector.health.ok

    def record(key: str, **kw: object) -> None:
        outcomes[key.split("/", 1)[0]].append(str(kw["outcome"]))
        ok(key, **kw)  # type: ignore[arg-type]

    collector.health.ok = record  # type: ignore[method-assign]
    moves = f"moves/{faults.address}/memory"

    def health(job: str) -> object:
        return next(h for h in collector.health.snapshot() if h.spec.job == job)

    async def scenario() -> None:
        await collector.start(configs, Path("."))
        try:
            # Alone: this node owns both, and scrapes both; after the baseline, deltas are stored.
            await _until(lambda: all(len(outcomes[j]) >= 3 for j in JOBS))
            assert all(outcomes[j][0] == "baseline" and set(outcomes[j][1:]) == {"stored"} for j in JOBS), outcomes
            assert moves in collector.deltas
            spec = next(h.spec for h in collector.health.snapshot() if h.spec.job == "moves")
            assert collector.owner_of(spec) == ME

            # Another node joins and owns "moves": its runs here return at once; its baseline goes.
            live.nodes = (ME, other)
            await _until(lambda: health("moves").health == "elsewhere")  # type: ignore[attr-defined]
            await asyncio.sleep(0.5)  # a scrape fetched before the switch may still be storing
            left_at, stays_at = len(outcomes["moves"]), len(outcomes["stays"])
            stored_moves = sink.count("moves")
            await _until(lambda: len(outcomes["stays"]) >= stays_at + 4)  # "stays" goes on: 4 more runs
            assert len(outcomes["moves"]) == left_at and sink.count("moves") == stored_moves
            assert moves not in collector.deltas
            h = health("moves")
            assert h.owner == other and collector.owner_of(spec) == other  # type: ignore[attr-defined]
            assert health("stays").health == "up" and health("stays").owner == ME  # type: ignore[attr-defined]

            # It comes back (the other node died): the first scrape here is a baseline, then deltas.
            live.nodes = (ME,)
            await _until(lambda: len(outcomes["moves"]) >= left_at + 3)
            assert outcomes["moves"][left_at:][:3] == ["baseline", "stored", "stored"], outcomes["moves"]
            assert health("moves").health == "up" and health("moves").owner == ME  # type: ignore[attr-defined]
        finally:
            await collector.stop(drain_s=30)

    with faults.running():
        asyncio.run(scenario())

    # A run left to another node is not an overload: nothing counted as skipped, nothing failed.
    assert all(h.skipped == 0 and h.failures == 0 for h in collector.health.snapshot())
    skipped = sum(s.value for m in metrics.scrapes_skipped.collect() for s in m.samples if s.name.endswith("_total"))
    assert skipped == 0


def test_a_joining_node_takes_its_targets_only_after_the_others_have_heard_of_it(corpus: Path) -> None:
    """For ``join_grace_s`` a node with company scrapes nothing: the others still scrape what it will
    own until their next heartbeat shows it, and taking it at once would scrape those twice."""
    faults = FaultServer(corpus, bomb_bytes=1024)
    sink, live = Sink(), Live()
    other = _other_node(faults.address)  # beside ME, ME owns "stays"
    live.nodes = (ME, other)
    config = ScrapeConfig.model_validate({
        "job_name": "stays", "scrape_interval": "200ms", "scrape_timeout": "200ms",
        "static_configs": [{"targets": [faults.address]}],
        "profiling_config": {"path_prefix": "/ok", "pprof_config": ONLY_MEMORY},
    })  # fmt: skip
    collector = Collector(sink, limits=DecodeLimits(), metrics=Metrics(), ownership=live, join_grace_s=3.0)

    async def scenario() -> None:
        await collector.start([config], Path("."))
        try:
            await _until(lambda: collector.health.snapshot()[0].health == "elsewhere")
            (h,) = collector.health.snapshot()
            assert h.owner == other and collector.owner_of(h.spec) == other and sink.count("stays") == 0
            # After the grace the target is this node's: scraped here, and every node names this one.
            await _until(lambda: collector.health.snapshot()[0].scrapes >= 2)
            (h,) = collector.health.snapshot()
            assert h.owner == ME and collector.owner_of(h.spec) == ME and h.health == "up"
        finally:
            await collector.stop(drain_s=30)

    with faults.running():
        asyncio.run(scenario())
    (h,) = collector.health.snapshot()
    assert h.skipped == 0 and h.failures == 0


def test_the_first_run_is_at_the_same_phase_of_the_clock_in_every_process() -> None:
    """Nodes started at different times run a target at the same instants (so a takeover keeps its phase)."""
    key, interval = "job/10.0.0.1:6060/memory", 15.0
    runs = [start + first_run_in(key, interval, start) for start in (1000.0, 1003.7, 1014.2, 2000.05)]
    phases = {round(t % interval, 6) for t in runs}
    assert len(phases) == 1
    assert all(0 <= first_run_in(key, interval, s) < interval for s in (0.0, 1.5, 99999.9))
