"""An export shows what the API shows: ``go tool pprof -top`` on it equals ``/api/v1/top``.

Profiles of every kind come from the real Go program (tests/gotarget) scraped over HTTP several
times, stored as two series with different numbers of scrapes, so averages have fractions and
each series' last scrape differs. For every stored profile type and every aggregation (the
default, ``sum``, ``avg``, ``last``), pprof's table of the export must equal the API's top, node
for node: a heap export is the average heap, not the sum of every scrape.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bench.gotarget import build, running
from service.app import create_app
from service.pprof import profile_pb2 as pb
from service.protocols.querier.v1 import querier_pb2 as q
from tests.backends import Backend
from tests.pprof_tool import go_bin, top_values

# kind -> (endpoint, ingest name, scrapes)
KINDS = {
    "cpu": ("/debug/pprof/profile?seconds=1", None, 2),
    "heap": ("/debug/pprof/heap", None, 3),
    "goroutine": ("/debug/pprof/goroutine", None, 3),
    "block": ("/debug/pprof/block", "block", 3),
    "mutex": ("/debug/pprof/mutex", "mutex", 3),
    "threadcreate": ("/debug/pprof/threadcreate", None, 3),
}
T0 = 1_800_000_000 * 10**9  # a fixed time: ranges below are absolute
UNIT_FLAG = {"nanoseconds": ["-unit=ns"], "bytes": ["-unit=B"]}
# Every profile kind and aggregation against pprof: on the lake with its data files on S3 too.
pytestmark = pytest.mark.backends("duckdb", "lake", "lake-s3")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[TestClient]:
    """Scrapes of each kind: series "a" holds every scrape, series "b" all but the first."""
    work = tmp_path_factory.mktemp("gotarget")
    scrapes: dict[str, list[bytes]] = {}
    with running(build(work, go_bin()), work) as url:
        for kind, (endpoint, _, n) in KINDS.items():
            for _ in range(n):
                r = httpx.get(url + endpoint, timeout=30)
                assert r.status_code == 200, r.text
                scrapes.setdefault(kind, []).append(r.content)
                time.sleep(0.2)  # the heap and the counters move between scrapes
    with (
        backend.settings(tmp_path_factory.mktemp("export-agg") / "data") as settings,
        TestClient(create_app(settings)) as client,
    ):
        for kind, bodies in scrapes.items():
            name = KINDS[kind][1]
            for i, body in enumerate(bodies):
                for series, offset in (("a", 0), ("b", 5)):
                    if series == "b" and i == 0:
                        continue
                    params = {
                        "labels": f'{{service_name="agg",instance="{series}"}}',
                        "ts": str(T0 + i * 15 * 10**9 + offset * 10**9),
                    }
                    if name:
                        params["name"] = name
                    r = client.post("/api/v1/ingest", params=params, content=body)
                    assert r.status_code == 200, r.text
        yield client


def _total(path: Path, sample_type: str, unit: str = "count") -> int:
    """The export's total of one sample type as ``go tool pprof -top`` states it ("… of N total"), in raw
    units: samples without a stack (Go's threadcreate has some) count, as in the API's total."""
    proc = subprocess.run(
        [
            go_bin(),
            "tool",
            "pprof",
            "-top",
            "-nodecount=1",
            *UNIT_FLAG.get(unit, []),
            f"-sample_index={sample_type}",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    m = re.search(r"of (\d+)[a-zA-Z]* total", proc.stdout)
    assert m is not None, proc.stdout
    return int(m.group(1))


def _types(client: TestClient) -> list[str]:
    return [t["id"] for t in client.get("/api/v1/profile-types").json()]


def _range() -> dict[str, str]:
    return {"from": str(T0 - 10**9), "until": str(T0 + 3600 * 10**9)}


def _export(client: TestClient, query: str, tmp_path: Path, **params: str) -> Path:
    r = client.get("/api/v1/export", params={"query": query, **_range(), **params})
    assert r.status_code == 200, r.text
    out = tmp_path / f"export-{abs(hash((query, *params.items())))}.pb.gz"
    out.write_bytes(r.content)
    return out


def _top(client: TestClient, query: str, **params: str) -> dict[str, Any]:
    r = client.get("/api/v1/top", params={"query": query, "limit": "100000", **_range(), **params})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_every_kind_was_stored(stored: TestClient) -> None:
    names = {t.split(":")[0] for t in _types(stored)}
    assert names == {"process_cpu", "memory", "goroutine", "block", "mutex", "threadcreate"}


@pytest.mark.parametrize("aggregation", [None, "sum", "avg", "last"])
def test_pprof_top_of_the_export_equals_the_api_top(
    stored: TestClient, tmp_path: Path, aggregation: str | None
) -> None:
    asked = {"aggregation": aggregation} if aggregation else {}
    checked = 0
    for ptype in _types(stored):
        query = ptype + '{service_name="agg"}'
        sample_type, unit = ptype.split(":")[1:3]
        api = _top(stored, query, **asked)
        path = _export(stored, query, tmp_path, **asked)
        assert _total(path, sample_type, unit) == api["total"], (ptype, aggregation)
        if api["total"] == 0:  # Go 1.19's threadcreate profile holds no stacks: nothing for -top to list
            continue
        ref = top_values(path, f"-sample_index={sample_type}", *UNIT_FLAG.get(unit, []))
        ours = {r["name"] + (f" ({r['inline']})" if r["inline"] else ""): (r["flat"], r["cum"]) for r in api["rows"]}
        assert ours == {name: v[:2] for name, v in ref.items()}, (ptype, aggregation)
        checked += 1
    assert checked >= 8  # cpu x2, memory x4, goroutine, block, mutex: all have stacks


def test_a_heap_export_is_the_average_heap_not_every_scrape_added(stored: TestClient, tmp_path: Path) -> None:
    query = 'memory:inuse_space:bytes:space:bytes{service_name="agg"}'
    avg = _total(_export(stored, query, tmp_path), "inuse_space", "bytes")
    summed = _total(_export(stored, query, tmp_path, aggregation="sum"), "inuse_space", "bytes")
    last = _total(_export(stored, query, tmp_path, aggregation="last"), "inuse_space", "bytes")
    assert avg == _top(stored, query)["total"] > 0
    assert summed == _top(stored, query, aggregation="sum")["total"]
    # Two series of 3 and 2 scrapes: the sum holds five heaps, the average two.
    assert 2 * summed > 4 * avg
    assert last == _top(stored, query, aggregation="last")["total"]
    # Without an aggregation, each type keeps its own default: allocations are still summed.
    alloc = 'memory:alloc_space:bytes:space:bytes{service_name="agg"}'
    assert _total(_export(stored, query, tmp_path), "alloc_space", "bytes") == _top(stored, alloc)["total"]
    assert _top(stored, alloc)["aggregation"] == "sum"


def test_a_diff_export_takes_the_aggregation_of_both_windows(stored: TestClient, tmp_path: Path) -> None:
    query = 'goroutine:goroutine:count:goroutine:count{service_name="agg"}'
    # The base window holds series a's first two scrapes; the current one a's last and b's two:
    # about one goroutine profile against two, whatever the program did between scrapes.
    base_until, current_from = str(T0 + 16 * 10**9), str(T0 + 19 * 10**9)
    params = {
        "from": current_from,
        "until": str(T0 + 3600 * 10**9),
        "base_from": str(T0 - 10**9),
        "base_until": base_until,
    }
    r = stored.get("/api/v1/export", params={"query": query, **params})
    assert r.status_code == 200, r.text
    path = tmp_path / "diff.pb.gz"
    path.write_bytes(r.content)
    window, base_window = (
        {k: params[k] for k in ("from", "until")},
        {"from": params["base_from"], "until": params["base_until"]},
    )

    # pprof marks a function " (inline)" when it saw it only inlined along the edges it kept, and the
    # diff's edges are not either window's: the mark is compared apart from the numbers.
    def flats(**w: str) -> dict[str, int]:
        return {r["name"].removesuffix(" (inline)"): r["flat"] for r in _top(stored, query, **w)["rows"]}

    now, base = flats(**window), flats(**base_window)
    assert sum(now.values()) > sum(base.values()) > 0
    ref = {name.removesuffix(" (inline)"): v[0] for name, v in top_values(path).items()}
    assert {n: v for n, v in ref.items() if v} == {
        n: now.get(n, 0) - base.get(n, 0) for n in now.keys() | base.keys() if now.get(n, 0) != base.get(n, 0)
    }


def test_grafanas_merged_pprof_is_the_merge_of_its_flame_graph(stored: TestClient, tmp_path: Path) -> None:
    """Connect's SelectMergeProfile (Grafana's "export as pprof") merges as the export does by default."""

    def call(method: str, req: Any, answer: Any) -> Any:
        r = stored.post(
            f"/querier.v1.QuerierService/{method}",
            content=req.SerializeToString(),
            headers={"Content-Type": "application/proto"},
        )
        assert r.status_code == 200, r.text
        return answer.FromString(r.content)

    span = {"start": T0 // 10**6 - 1000, "end": T0 // 10**6 + 3_600_000}
    for ptype, unit in (
        ("memory:inuse_space:bytes:space:bytes", "bytes"),
        ("goroutine:goroutine:count:goroutine:count", "count"),
    ):
        selector = '{service_name="agg"}'
        merged = call(
            "SelectMergeProfile",
            q.SelectMergeProfileRequest(profile_typeID=ptype, label_selector=selector, **span),
            pb.Profile,
        )
        path = tmp_path / f"{ptype.split(':')[0]}.pb"
        path.write_bytes(merged.SerializeToString())
        flame = call(
            "SelectMergeStacktraces",
            q.SelectMergeStacktracesRequest(profile_typeID=ptype, label_selector=selector, **span),
            q.SelectMergeStacktracesResponse,
        )
        api = _top(stored, ptype + selector)
        assert api["aggregation"] == "avg"
        assert _total(path, ptype.split(":")[1], unit) == flame.flamegraph.total == api["total"] > 0
