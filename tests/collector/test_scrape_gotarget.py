"""The collector against a real Go program: one CPU profile per interval, allocation deltas that add up
to what the Go runtime counted, in-use memory as snapshots, and a restart that re-baselines.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.gotarget import build, stop_process, wait_healthy
from tests.conftest import Server, free_port
from tests.pprof_tool import go_bin

INTERVAL_S = 2


class GoTarget:
    """tests/gotarget on a fixed loopback port, so it can be restarted where the collector looks."""

    def __init__(self, binary: Path, port: int, log: Path) -> None:
        self.binary, self.port, self.log = binary, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.binary), "-listen", f"127.0.0.1:{self.port}"], stdout=out, stderr=subprocess.STDOUT
            )
        wait_healthy(self.proc, self.url, self.log, time.monotonic() + 15)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class AllocClock:
    """Polls the target's runtime.MemStats.TotalAlloc, to interpolate it at any moment of the run."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.points: list[tuple[int, int, int]] = []  # (unix ns, total_alloc_bytes, pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                s = httpx.get(f"{self.url}/debug/stats", timeout=1).json()
                self.points.append((time.time_ns(), s["total_alloc_bytes"], s["pid"]))
            except httpx.HTTPError:
                pass
            self._stop.wait(0.05)

    def __enter__(self) -> AllocClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t_ns: int, pid: int) -> float:
        pts = np.array([(t, a) for t, a, p in self.points if p == pid], dtype=np.float64)
        assert pts.size and pts[0, 0] <= t_ns <= pts[-1, 0], "the window is outside the polled range"
        return float(np.interp(t_ns, pts[:, 0], pts[:, 1]))


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("gobuild"), go_bin())


@pytest.fixture
def scraped(binary: Path, tmp_path: Path) -> Iterator[tuple[Server, GoTarget, AllocClock]]:
    target = GoTarget(binary, free_port(), tmp_path / "gotarget.log")
    target.start()
    clock = AllocClock(target.url).__enter__()  # polling before the first scrape: every window is covered
    config = tmp_path / "profstore.yaml"
    config.write_text(
        f"""scrape_configs:
  - job_name: go
    scrape_interval: {INTERVAL_S}s
    scrape_timeout: 2s
    static_configs: [{{targets: ["127.0.0.1:{target.port}"], labels: {{service_name: gotarget}}}}]
"""
    )
    try:
        server = Server(tmp_path / "data", config=config).start()
        try:
            yield server, target, clock
        finally:
            server.stop()
    finally:
        clock.__exit__()
        target.stop()


def _profiles(server: Server, ptype: str) -> list[dict]:  # type: ignore[type-arg]
    r = httpx.get(
        f"{server.url}/api/v1/profiles",
        params={"query": ptype + '{service_name="gotarget"}', "from": "now-1h", "until": "now+1h"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return sorted(r.json()["profiles"], key=lambda p: p["ts"])


def _targets(server: Server) -> dict[str, dict]:  # type: ignore[type-arg]
    return {t["profile"]: t for t in httpx.get(f"{server.url}/api/v1/targets", timeout=10).json()["targets"]}


def test_all_default_types_scraped_with_deltas_and_restart(scraped: tuple[Server, GoTarget, AllocClock]) -> None:
    server, target, clock = scraped
    assert target.proc is not None
    time.sleep(5 * INTERVAL_S + 1)
    first_pid = target.proc.pid
    targets = _targets(server)
    assert set(targets) == {"process_cpu", "memory", "goroutine", "block", "mutex"}
    for name, t in targets.items():
        assert t["health"] == "up" and t["failures"] == 0, (name, t)

    # CPU: one profile per run, never two at once (Go refuses a second CPU profile, and the collector
    # skips a run that would overlap); how close to the schedule they run is bench/'s figure, not a test's.
    cpu = _profiles(server, "process_cpu:cpu:nanoseconds:cpu:nanoseconds")
    assert len(cpu) >= 2
    assert all(p["duration_ns"] > 0 for p in cpu), cpu
    for a, b in itertools.pairwise(cpu):
        assert a["ts"] + a["duration_ns"] <= b["ts"], (a, b)

    # Memory: the first scrape is the baseline; every stored profile is the interval since the last.
    # Both types of a scrape are stored in one transaction, but a scrape may land between the two
    # reads: compare up to the last scrape both reads saw.
    alloc = _profiles(server, "memory:alloc_space:bytes:space:bytes")
    inuse = _profiles(server, "memory:inuse_space:bytes:space:bytes")
    seen_by_both = min(alloc[-1]["ts"], inuse[-1]["ts"])
    alloc = [p for p in alloc if p["ts"] <= seen_by_both]
    inuse = [p for p in inuse if p["ts"] <= seen_by_both]
    assert len(alloc) >= 3 and [p["ts"] for p in alloc] == [p["ts"] for p in inuse]
    for a, b in itertools.pairwise(alloc):
        assert abs(a["ts"] + a["duration_ns"] - b["ts"]) < 1e6, (a, b)  # back to back, no gap, no overlap
    start, end = alloc[0]["ts"], alloc[-1]["ts"] + alloc[-1]["duration_ns"]
    counted = clock.at(end, first_pid) - clock.at(start, first_pid)
    summed = sum(p["total"] for p in alloc)
    # The heap profile is a sampled estimate as of the last GC; the runtime counts every byte.
    print(f"alloc_space deltas {summed:,} B vs runtime TotalAlloc {counted:,.0f} B over the same window")
    assert 0.6 < summed / counted < 1.5, (summed, counted)
    # In-use bytes are a snapshot of the live buffers (a bounded ring), not a running sum.
    totals = np.array([p["total"] for p in inuse], dtype=np.float64)
    assert np.all(totals > 0) and totals.max() / totals.min() < 3, totals
    assert totals.mean() < summed / len(alloc), "in-use must not accumulate like allocations"

    # Restart: the counters start again from zero, which must re-baseline, never store a negative delta.
    target.stop()
    restarted_ns = time.time_ns()  # every scrape of the new process starts after this
    target.start()
    time.sleep(3 * INTERVAL_S + 1)
    alloc = _profiles(server, "memory:alloc_space:bytes:space:bytes")
    assert all(p["total"] >= 0 for p in alloc), alloc
    # The windows chain back to back except once: the interval spanning the restart is not stored,
    # the next delta starts at the new process's baseline scrape.
    gaps = [(a, b) for a, b in itertools.pairwise(alloc) if b["ts"] - (a["ts"] + a["duration_ns"]) > 1e6]
    assert len(gaps) == 1, gaps
    before, after = gaps[0]
    assert before["ts"] + before["duration_ns"] < restarted_ns <= after["ts"], (before, after, restarted_ns)
    assert alloc[-1]["ts"] > restarted_ns, "deltas resumed after the restart"
    cpu_after = _profiles(server, "process_cpu:cpu:nanoseconds:cpu:nanoseconds")
    assert len(cpu_after) > len(cpu)
