"""A full disk: writes fail whole with a clear 503, reads go on, writing resumes when space returns.

The disk fills for real as the server process sees it: its file-size limit (RLIMIT_FSIZE, set
from outside with prlimit) is lowered just past the database file, so the write-ahead log and
any checkpoint fail with EFBIG exactly as on a full disk. A failed checkpoint invalidates a
DuckDB instance; the writer must reopen it. Every acknowledged profile must survive, also a restart.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import httpx

from tests.collector.fault_server import FaultServer
from tests.conftest import Server

FILE = "go119__heap.pb.gz"
NOW_S = int(time.time())


def _ingest(url: str, data: bytes, ts: int) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/ingest", params={"labels": '{service_name="disk"}', "ts": str(ts)}, content=data, timeout=30
    )


def _stored(url: str) -> set[int]:
    r = httpx.get(
        f"{url}/api/v1/profiles",
        params={"query": "memory:inuse_space:bytes:space:bytes{}", "from": "0", "until": "now+1h", "limit": "10000"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return {p["ts"] // 10**9 for p in r.json()["profiles"]}


def _scrape_errors(url: str) -> list[str]:
    body = httpx.get(f"{url}/api/v1/targets", timeout=10).json()
    return [f"{t['last_error_kind']}: {t['last_error']}" for t in body["targets"] if t["last_error_kind"]]


def test_disk_full_fails_writes_cleanly_and_recovers(tmp_path: Path, corpus: Path) -> None:
    with FaultServer(corpus, 1 << 20).running() as target:
        _run(tmp_path, corpus, target.address)


def _run(tmp_path: Path, corpus: Path, target: str) -> None:
    config = tmp_path / "profstore.yaml"
    config.write_text(
        "analysis: {enabled: false}\nretention: {days: 31, rollup_days: 31}\n"
        "scrape_configs:\n  - job_name: scraped\n    scrape_interval: 1s\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
        "    profiling_config: {path_prefix: /ok, pprof_config: {process_cpu: {enabled: false}, memory: {enabled: false}, "
        "block: {enabled: false}, mutex: {enabled: false}}}\n"
    )
    srv = Server(tmp_path / "data", config).start()
    assert srv.proc is not None
    data = (corpus / FILE).read_bytes()
    acked: set[int] = set()
    try:
        for i in range(5):
            assert _ingest(srv.url, data, NOW_S - 1000 + i).status_code == 200
            acked.add(NOW_S - 1000 + i)
        old = NOW_S - 40 * 86400  # expires: the retention run below must delete and checkpoint
        assert _ingest(srv.url, data, old).status_code == 200
        db = srv.data_dir / "profstore.duckdb"
        # The file may not grow at all (the log may grow up to the same size).
        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (db.stat().st_size, resource.RLIM_INFINITY))

        # Retention deletes (the log has room), then checkpoints into a file that cannot grow:
        # the DuckDB instance is invalidated, and the writer must open it again.
        r = httpx.post(f"{srv.url}/api/v1/storage/expire", timeout=60)
        assert r.status_code == 503 and "Failed to create checkpoint" in r.json()["error"], r.text
        stored: set[int] = set()
        for _ in range(20):  # a read may meet the instance while it is being reopened
            if httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200:
                stored = _stored(srv.url)
                break
            time.sleep(0.25)
        assert acked <= stored

        # Now the log fills: every write fails whole, reads go on.
        failures: list[str] = []
        ts = NOW_S - 900
        deadline = time.monotonic() + 120
        while len(failures) < 3 and time.monotonic() < deadline:
            r = _ingest(srv.url, data, ts)
            if r.status_code == 200:
                acked.add(ts)
            else:
                assert r.status_code == 503, r.text
                failures.append(r.json()["error"])
            ts += 1
            assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200
        assert len(failures) == 3, "the disk never filled"
        assert all("File too large" in f or "database unavailable" in f for f in failures), failures
        # Reads go on. The last pushes acknowledged before the log filled may be only in the journal
        # until space returns: they are checked below.
        _stored(srv.url)
        # The scrapes (every second) meet the full disk too: the target says why it failed.
        errors: list[str] = []
        for _ in range(40):
            errors = _scrape_errors(srv.url)
            if any(e.startswith("store: ") for e in errors):
                break
            time.sleep(0.25)
        assert any(e.startswith("store: ") and ("File too large" in e or "unavailable" in e) for e in errors), errors

        resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        for i in range(3):
            r = _ingest(srv.url, data, NOW_S - 100 + i)
            assert r.status_code == 200, r.text
            acked.add(NOW_S - 100 + i)
        assert acked <= _stored(srv.url)
        assert httpx.post(f"{srv.url}/api/v1/storage/expire", timeout=60).status_code == 200
        time.sleep(2)  # the next scrapes store again
        health = httpx.get(f"{srv.url}/api/v1/targets", timeout=10).json()["targets"]
        assert [t["health"] for t in health] == ["up"], health
        assert old not in _stored(srv.url)
    finally:
        srv.stop()
    srv.start()
    try:
        assert acked <= _stored(srv.url)
        assert _ingest(srv.url, data, NOW_S).status_code == 200
    finally:
        srv.stop()
