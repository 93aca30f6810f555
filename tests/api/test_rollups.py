"""Minute and hour stack rollups: the planner's answers equal the raw answers, also for late data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store.stack_rollups import compact

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
INUSE = "memory:inuse_space:bytes:space:bytes"
S = 10**9
T0 = 1_700_000_000 * S - (1_700_000_000 * S) % (3600 * S)  # an hour boundary
HOURS = 3


@pytest.fixture
def fleet(client: TestClient, corpus: Path) -> TestClient:
    """Two instances, a CPU profile every 5 minutes (cycling through six real ones) and a heap every 15, for 3 h."""
    cpus = [f.read_bytes() for f in sorted((corpus / "series").glob("cpu_0*.pb.gz"))]
    heap = (corpus / "go119__heap.pb.gz").read_bytes()
    for i, ts in enumerate(range(T0 + 7 * S, T0 + HOURS * 3600 * S, 300 * S)):
        for inst in ("a", "b"):
            labels = f'{{service_name="svc",instance="{inst}"}}'
            r = client.post("/api/v1/ingest", params={"labels": labels, "ts": str(ts)}, content=cpus[i % 6])
            assert r.status_code == 200, r.text
            if i % 3 == 0:
                r = client.post("/api/v1/ingest", params={"labels": labels, "ts": str(ts)}, content=heap)
                assert r.status_code == 200, r.text
    return client


def _compact(client: TestClient, now: int) -> dict[int, int]:
    app: Any = client.app
    return app.state.db.writer.call(lambda con: compact(con, now)).result()  # type: ignore[no-any-return]


def _top(client: TestClient, query: str, lo: int, hi: int, **params: str) -> tuple[dict[str, Any], str]:
    r = client.get(
        "/api/v1/top", params={"query": query, "from": str(lo), "until": str(hi), "limit": 100_000, **params}
    )
    assert r.status_code == 200, r.text
    return r.json(), r.headers["X-Profstore-Resolution"]


RANGES = [
    (T0, T0 + HOURS * 3600 * S - 1),  # everything, aligned
    (T0 + 90 * S, T0 + 2 * 3600 * S + 17 * 60 * S + 5 * S),  # partial minutes and hours at both ends
    (T0 + 3600 * S, T0 + 2 * 3600 * S - 1),  # exactly one hour
    (T0 + 125 * S, T0 + 50 * 60 * S),  # no whole hour
    (T0 + 10 * S, T0 + 20 * S),  # not even a whole minute
]


@pytest.mark.parametrize(("query", "aggregation"), [(CPU, "sum"), (INUSE, "avg"), (INUSE, "sum")])
def test_rollups_answer_like_raw(fleet: TestClient, query: str, aggregation: str) -> None:
    done = _compact(fleet, T0 + (HOURS + 1) * 3600 * S)
    assert done == {60: T0 + (HOURS + 1) * 3600 * S - 60 * S, 3600: T0 + HOURS * 3600 * S}  # up to now - lag
    used = set()
    for lo, hi in RANGES:
        auto, res = _top(fleet, query, lo, hi, aggregation=aggregation)
        raw, raw_res = _top(fleet, query, lo, hi, aggregation=aggregation, resolution="raw")
        assert raw_res == "raw"
        assert auto == raw, (lo - T0, hi - T0, res)
        used.add(res)
    assert {"1h+1m+raw", "1h", "1m+raw", "raw"} <= used


def test_a_late_profile_is_read_raw_until_compaction_redoes_its_bucket(fleet: TestClient, corpus: Path) -> None:
    _compact(fleet, T0 + (HOURS + 1) * 3600 * S)
    lo, hi = T0, T0 + HOURS * 3600 * S - 1
    before, res = _top(fleet, CPU, lo, hi)
    assert res == "1h"
    late = (corpus / "go119__cpu_10s.pb.gz").read_bytes()
    r = fleet.post(
        "/api/v1/ingest", params={"labels": '{service_name="svc",instance="a"}', "ts": str(T0 + 3600 * S + 30 * S)}, content=late
    )  # fmt: skip
    assert r.status_code == 200, r.text
    stale, res = _top(fleet, CPU, lo, hi)
    assert res == "raw"  # the bucket is dirty: read raw rather than answer without the late profile
    assert stale["total"] > before["total"]
    _compact(fleet, T0 + (HOURS + 1) * 3600 * S)
    fresh, res = _top(fleet, CPU, lo, hi)
    assert res == "1h" and fresh == stale


def test_flamegraph_and_diff_say_what_they_read(fleet: TestClient) -> None:
    _compact(fleet, T0 + (HOURS + 1) * 3600 * S)
    params = {"query": CPU, "from": str(T0), "until": str(T0 + 2 * 3600 * S - 1)}
    r = fleet.get("/api/v1/flamegraph", params=params)
    assert r.status_code == 200 and r.headers["X-Profstore-Resolution"] == "1h"
    r = fleet.get("/api/v1/diff", params={**params, "base_from": str(T0 + 61 * S), "base_until": str(T0 + 3600 * S)})
    assert r.status_code == 200 and r.headers["X-Profstore-Resolution"] == "1h, 1m+raw"


def test_metrics_say_how_far_rollups_are_complete(fleet: TestClient) -> None:
    """``profstore_rollups_complete_seconds`` follows compaction: what a stale-rollups alert and the
    cluster bench (which waits for it before timing queries) read."""

    def complete() -> dict[str, float]:
        return {
            line.split('resolution="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in fleet.get("/metrics").text.splitlines()
            if line.startswith("profstore_rollups_complete_seconds{")
        }

    assert complete() == {"60": 0.0, "3600": 0.0}
    now = T0 + (HOURS + 1) * 3600 * S
    _compact(fleet, now)
    assert complete() == {"60": (now - 60 * S) / S, "3600": (T0 + HOURS * 3600 * S) / S}
