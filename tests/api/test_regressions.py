"""Detection end to end through the store and the API: real pprof bytes in, findings out.

A service's CPU profiles (drawn from real profiles, bench/synthetic.py) are ingested through the
one ingest entry point; 20 minutes before the end one function gets 50 % slower. ``POST
/api/v1/analyze`` must find exactly that function, store it, and serve it with its diff, links,
acknowledgement and annotation; a second service with no change must have no finding.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bench.synthetic import cpu_model, gauge_model, to_pprof
from service.types import now_ns
from tests.backends import Backend

S = 15 * 10**9
MIN = 60 * 10**9


@pytest.fixture(scope="module")
def stored(corpus: Path, tmp_path_factory: pytest.TempPathFactory, backend: Backend):  # type: ignore[no-untyped-def]
    from service.app import create_app

    model = cpu_model(corpus)
    slowed = model.names.index("sort.insertionSort")
    rng = np.random.default_rng(5)
    end = (now_ns() // S) * S
    steps = 2 * 60 * 4 + 120  # 2 h baseline + 30 min recent
    start = end - steps * S
    change = steps - 80
    items = []
    for svc in ("checkout", "cart"):
        for i in range(steps):
            slow = {slowed: 0.5} if svc == "checkout" and i >= change else None
            version = "v2" if svc == "checkout" and i >= change else "v1"
            data = to_pprof(model, model.draw(rng, 6000, slow), start + i * S)
            items.append((data, {"service_name": svc, "instance": "host-1:6060", "version": version}, "process_cpu"))
    # In the last 30 minutes: inventory's heap, leaking 1 MB/min at one allocation site for 15 of them.
    heap = gauge_model(corpus / "go119__heap.pb.gz", 3)
    site = int(heap.leaf[0])
    for i in range(120):
        levels = heap.p * rng.lognormal(0.0, 0.05, heap.p.size)
        levels[heap.leaf == site] += max(0, i - 60) * S / MIN * float(1 << 20) / (heap.leaf == site).sum()
        data = to_pprof(heap, levels, end - (120 - i) * S, kind="heap")
        items.append((data, {"service_name": "inventory", "instance": "host-2:6060"}, None))
    # After ``end``: 40 more minutes of checkout with the slowdown fixed (for the resolution test).
    fixed = [
        (
            to_pprof(model, model.draw(rng, 6000), end + i * S),
            {"service_name": "checkout", "instance": "host-1:6060", "version": "v3"},
            "process_cpu",
        )
        for i in range(160)
    ]
    with (
        backend.settings(tmp_path_factory.mktemp("regressions")) as settings,
        TestClient(create_app(settings)) as client,
    ):
        ing = client.app.state.ingestor  # type: ignore[attr-defined]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda it: ing.ingest(it[0], labels=it[1], name=it[2]), items + fixed))
        yield client, start, end, start + change * S, heap.names[site]


def analyze(client: TestClient, recent: tuple[int, int], baseline: tuple[int, int]) -> dict:  # type: ignore[type-arg]
    ms = 10**6
    r = client.post(
        "/api/v1/analyze",
        params={
            "from": recent[0] // ms,
            "until": recent[1] // ms,
            "baseline_from": baseline[0] // ms,
            "baseline_until": baseline[1] // ms,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_analyze_finds_the_slowed_function_and_only_it(stored) -> None:  # type: ignore[no-untyped-def]
    client, start, end, change_ts, leak_site = stored
    ms = 10**6
    body = analyze(client, (end - 30 * MIN, end), (start, end - 30 * MIN))
    regressions = [f for f in body["findings"] if f["kind"] == "regression"]
    assert [(f["service"], f["function"], f["metric"]) for f in regressions] == [
        ("checkout", "sort.insertionSort", "flat_share")
    ]
    f = regressions[0]
    assert set(body["new"]) == {x["id"] for x in body["findings"]}

    # The leak: found in inventory's in-use bytes, named by its growing site, at about 1 MB/min.
    leaks = {x["profile_type"]: x for x in body["findings"] if x["kind"] == "leak"}
    assert {x["service"] for x in leaks.values()} == {"inventory"}
    space = leaks["memory:inuse_space:bytes:space:bytes"]
    assert space["function"] == leak_site and space["metric"] == "total"
    assert space["details"]["per_minute"] == pytest.approx(1 << 20, rel=0.35)
    assert abs(space["change_ts"] - (end - 60 * S)) <= 4 * S
    assert space["details"]["sites"][0]["function"] == leak_site
    assert abs(f["change_ts"] - change_ts) <= 2 * S
    assert f["attribution"] == {"version": {"from": ["v1"], "to": ["v2"]}}
    assert f["instances"] == ["host-1:6060"]
    assert f["baseline"]["hi"] < f["current"]["lo"]
    assert 0.3 < f["relative"] < 0.7
    lo, hi = f["change_interval"]
    assert lo <= change_ts <= hi and lo <= f["change_ts"] <= hi
    # Its own cost rose, on every caller path alike (they differ in pdqsort's recursion depth only):
    # the function itself is where the rise enters, and the paths say who calls it.
    assert (f["entry"]["function"], f["entry"]["how"]) == ("sort.insertionSort", "proportional")
    paths = f["details"]["paths"]
    assert all(p["frames"][0] == "sort.insertionSort" and "main.workloadSortInts" in p["frames"] for p in paths)
    assert sum(p["share_of_rise"] for p in paths) == pytest.approx(1.0, abs=0.2)

    # Seen again: the same finding, not a new one.
    again = analyze(client, (end - 30 * MIN, end), (start, end - 30 * MIN))
    assert again["new"] == [] and {x["id"] for x in again["findings"]} == {x["id"] for x in body["findings"]}

    listed = client.get("/api/v1/regressions", params={"service": "checkout", "state": "open"}).json()
    assert [x["id"] for x in listed] == [f["id"]]
    assert client.get("/api/v1/regressions", params={"service": "cart"}).json() == []

    detail = client.get(f"/api/v1/regressions/{f['id']}").json()
    assert detail["diff"]["rows"][0]["name"] == "sort.insertionSort"
    assert detail["diff"]["rows"][0]["change_points"] > 0  # its share of the CPU rose
    export = client.get(detail["links"]["export_diff"])
    assert export.status_code == 200 and export.content[:2] == b"\x1f\x8b"

    acked = client.post(f"/api/v1/regressions/{f['id']}/ack").json()
    assert acked["state"] == "acknowledged" and acked["acked_at"]
    notes = client.get(
        "/api/v1/annotations", params={"from": start // ms, "until": end // ms, "service": "checkout"}
    ).json()
    assert [n["title"] for n in notes] == [acked["title"]]
    assert notes[0]["time"] == f["change_ts"] // ms and "v1 -> v2" in notes[0]["text"]

    # Fixed in v3: a run over the 30 minutes after that finds nothing and resolves the finding.
    later = analyze(client, (end + 10 * MIN, end + 40 * MIN), (start, end - 30 * MIN))
    assert later["findings"] == [] and later["resolved"] == [f["id"]]
    done = client.get(f"/api/v1/regressions/{f['id']}").json()
    assert done["state"] == "resolved" and done["resolved_at"] >= done["acked_at"]
    assert client.get("/api/v1/regressions", params={"state": "open", "service": "checkout"}).json() == []


def test_bad_requests_are_4xx(stored) -> None:  # type: ignore[no-untyped-def]
    client, *_ = stored
    assert client.get("/api/v1/regressions/12345").status_code == 404
    assert client.post("/api/v1/regressions/12345/ack").status_code == 404
    r = client.get("/api/v1/regressions/not-a-number")
    assert r.status_code == 400 and "uint64" in r.json()["error"]
    assert client.get("/api/v1/regressions", params={"state": "closed"}).status_code == 400
    r = client.post("/api/v1/analyze", params={"baseline_from": "now-2h"})
    assert r.status_code == 400 and "both" in r.json()["error"]
    r = client.post("/api/v1/analyze", params={"from": "now-30m", "baseline_from": "now-1h", "baseline_until": "now"})
    assert r.status_code == 400 and "before" in r.json()["error"]


@pytest.mark.parametrize(
    ("interval_s", "leak_interval_s", "kinds"),
    [(0.2, 60.0, ["leak", "regression"]), (3600.0, 0.2, ["leak"])],
    ids=["full-runs", "leak-only-runs"],
)
def test_the_schedule_runs_detection(
    tmp_path: Path, backend: Backend, interval_s: float, leak_interval_s: float, kinds: list[str]
) -> None:
    from service.app import create_app
    from service.config import AnalysisSettings

    analysis = AnalysisSettings(interval_s=interval_s, leak_interval_s=leak_interval_s)
    with backend.settings(tmp_path, analysis=analysis) as settings, TestClient(create_app(settings)) as client:
        analyzer = client.app.state.analyzer  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while analyzer.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert analyzer.last is not None, "no scheduled run within 20 s"
        assert analyzer.last.kinds == kinds
        assert analyzer.last.records == [] and analyzer.last.tests == 0  # an empty store: nothing to test
