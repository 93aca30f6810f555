"""A live Go program's net/http/pprof output goes through ``profstore serve`` and comes back with pprof's numbers.

``tests/gotarget`` is built with the local Go toolchain and run in serve mode. Its CPU, heap, goroutine,
block and mutex profiles are scraped over HTTP, ingested through a real ``profstore serve`` and exported
again. The truth is ``go tool pprof`` on the scraped file: the export must give the same ``-raw`` totals
and the same ``-top`` table for every sample type. The content is also checked against what the Go
program is known to do (sha256 hashing on CPU, 20 parked goroutines, mutex contention).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.gotarget import build, running
from tests.conftest import Server
from tests.pprof_tool import go_bin, top, totals

SERVICE = "gotarget"


@dataclass(frozen=True)
class Kind:
    name: str  # the kind="..." label and the file stem
    endpoint: str  # path under the Go target, with query
    ptype: str  # profile type id to export
    ingest_name: str | None  # the ingest ?name=, where the bytes alone do not tell


KINDS = {
    k.name: k
    for k in (
        Kind("cpu", "/debug/pprof/profile?seconds=2", "process_cpu:cpu:nanoseconds:cpu:nanoseconds", None),
        Kind("heap", "/debug/pprof/heap", "memory:inuse_space:bytes:space:bytes", None),
        Kind("goroutine", "/debug/pprof/goroutine", "goroutine:goroutine:count:goroutine:count", None),
        Kind("block", "/debug/pprof/block", "block:delay:nanoseconds:contentions:count", "block"),
        Kind("mutex", "/debug/pprof/mutex", "mutex:delay:nanoseconds:contentions:count", "mutex"),
    )
}


def _pprof_text(*args: str) -> str:
    proc = subprocess.run([go_bin(), "tool", "pprof", *args], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, f"go tool pprof {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode("utf-8", errors="replace")


def top_cum(path: Path, sample_index: str | None = None) -> dict[str, str]:
    """Function name -> cum column (as pprof prints it, e.g. ``20`` or ``680ms``) of ``go tool pprof -top -cum``."""
    args = ["-top", "-cum", "-nodecount=200", "-symbolize=none"]
    if sample_index:
        args.append(f"-sample_index={sample_index}")
    lines = _pprof_text(*args, str(path)).splitlines()
    start = next((i for i, line in enumerate(lines) if "flat%" in line), None)
    assert start is not None, f"no -top table in: {lines[:5]}"
    rows: dict[str, str] = {}
    for line in lines[start + 1 :]:
        parts = line.split(maxsplit=5)
        if len(parts) == 6:
            rows[parts[5].removesuffix(" (inline)")] = parts[3]
    return rows


@pytest.fixture(scope="module")
def gotarget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the running Go target; built with ``go build -trimpath`` and stopped at module end."""
    work = tmp_path_factory.mktemp("gotarget")
    with running(build(work, go_bin()), work) as url:
        yield url


@dataclass(frozen=True)
class RoundTrip:
    kind: Kind
    raw: Path
    exported: Path
    ingest: dict  # type: ignore[type-arg]


def _selector(kind: Kind) -> str:
    return f'{{service_name="{SERVICE}",kind="{kind.name}"}}'


def _ingest(client: httpx.Client, kind: Kind, data: bytes) -> httpx.Response:
    params = {"labels": _selector(kind)}
    if kind.ingest_name:
        params["name"] = kind.ingest_name
    return client.post("/api/v1/ingest", params=params, content=data)


@pytest.fixture(scope="module")
def round_trips(gotarget: str, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RoundTrip]:
    """Scrape every kind from the Go target, ingest it into profstore, export it again."""
    work = tmp_path_factory.mktemp("gotarget-profiles")
    raws: dict[str, Path] = {}
    # CPU first: its 2 s window also lets block and mutex contention accumulate before they are scraped.
    with httpx.Client(base_url=gotarget, timeout=15) as go_client:
        for kind in KINDS.values():
            r = go_client.get(kind.endpoint)
            assert r.status_code == 200, f"{kind.endpoint}: {r.status_code} {r.text[:500]}"
            assert r.content, f"{kind.endpoint}: empty body"
            raws[kind.name] = work / f"{kind.name}.raw.pb.gz"
            raws[kind.name].write_bytes(r.content)

    out: dict[str, RoundTrip] = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for kind in KINDS.values():
            r = _ingest(client, kind, raws[kind.name].read_bytes())
            assert r.status_code == 200, f"ingest {kind.name}: {r.status_code} {r.text[:500]}"
            body = r.json()
            assert kind.ptype in body["series"], (kind.name, body)
            assert body["samples"] > 0 and not body["duplicate"], (kind.name, body)
            r = client.get(
                "/api/v1/export",
                params={"query": kind.ptype + _selector(kind), "from": "0", "until": "now"},
            )
            assert r.status_code == 200, f"export {kind.name}: {r.status_code} {r.text[:500]}"
            exported = work / f"{kind.name}.export.pb.gz"
            exported.write_bytes(r.content)
            out[kind.name] = RoundTrip(kind, raws[kind.name], exported, body)
    return out


@pytest.mark.parametrize("name", list(KINDS))
def test_export_matches_scraped_profile(name: str, round_trips: dict[str, RoundTrip]) -> None:
    rt = round_trips[name]
    want = totals(rt.raw)
    assert want, f"go tool pprof lists no sample types in the scraped {name} profile"
    assert totals(rt.exported) == want
    for sample_type in want:
        index = sample_type.split("/")[0]
        assert top(rt.exported, index) == top(rt.raw, index), f"-top -sample_index={index} for {name}"


def test_heap_export_has_all_four_sample_types(round_trips: dict[str, RoundTrip]) -> None:
    assert list(totals(round_trips["heap"].exported)) == [
        "alloc_objects/count",
        "alloc_space/bytes",
        "inuse_objects/count",
        "inuse_space/bytes",
    ]


def test_cpu_profile_shows_the_hash_workload(round_trips: dict[str, RoundTrip]) -> None:
    rt = round_trips["cpu"]
    assert totals(rt.exported)["cpu/nanoseconds"] > 0
    rows = top_cum(rt.exported)
    hash_rows = {f: cum for f, cum in rows.items() if f in ("crypto/sha256.block", "main.hashWork")}
    assert hash_rows, f"neither crypto/sha256.block nor main.hashWork in -top -cum: {rows}"
    assert any(cum != "0" for cum in hash_rows.values()), hash_rows


def test_goroutine_profile_counts_the_parked_workers(round_trips: dict[str, RoundTrip]) -> None:
    rows = top_cum(round_trips["goroutine"].exported)
    assert "main.parkedWorker" in rows, rows
    assert int(rows["main.parkedWorker"]) >= 20, rows


@pytest.mark.parametrize("name", ["block", "mutex"])
def test_contention_profiles_are_not_empty(name: str, round_trips: dict[str, RoundTrip]) -> None:
    got = totals(round_trips[name].exported)
    assert got["contentions/count"] > 0 and got["delay/nanoseconds"] > 0, got
    assert "main.contendedWork" in top_cum(round_trips[name].exported, "contentions")


def test_same_cpu_bytes_again_are_a_duplicate(round_trips: dict[str, RoundTrip], server: Server) -> None:
    rt = round_trips["cpu"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = _ingest(client, rt.kind, rt.raw.read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["duplicate"] is True, body
    assert body["profile_ids"] == rt.ingest["profile_ids"]
    assert body["series"] == rt.ingest["series"]
