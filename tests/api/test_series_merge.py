"""Six back-to-back CPU profiles merged by ingest + export equal ``go tool pprof -proto``'s merge."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from service.pprof.decode import decode
from service.pprof.encode import encode
from service.pprof.merge import merge
from tests.pprof_tool import merge_proto, top, totals

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


def expected_top(corpus: Path) -> list[tuple[str, ...]]:
    """The -top rows written in series/EXPECTED_top.txt (recorded by go1.19.8)."""
    lines = (corpus / "series" / "EXPECTED_top.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "flat%" in line)
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip() or line.startswith("#"):
            break
        rows.append(tuple(line.split(maxsplit=5)))
    return sorted(rows)


def test_series_export_equals_pprof_merge(client: TestClient, corpus: Path, tmp_path: Path) -> None:
    files = sorted((corpus / "series").glob("cpu_0*.pb.gz"))
    assert len(files) == 6
    for f in files:
        r = client.post("/api/v1/ingest", params={"labels": '{service_name="series"}'}, content=f.read_bytes())
        assert r.status_code == 200, r.text
    out = tmp_path / "merged.pb.gz"
    r = client.get("/api/v1/export", params={"query": CPU + '{service_name="series"}', "from": "0"})
    out.write_bytes(r.content)
    ref = merge_proto(files, tmp_path / "ref.pb.gz")
    assert totals(out) == totals(ref) == {"samples/count": 1719, "cpu/nanoseconds": 17_190_000_000}
    assert top(out, nodecount=20) == top(ref, nodecount=20) == expected_top(corpus)
    # Header rules: earliest time, summed duration, max period.
    merged = decode(r.content)
    parts = [decode(f.read_bytes()) for f in files]
    assert merged.time_nanos == min(p.time_nanos for p in parts)
    assert merged.duration_nanos == sum(p.duration_nanos for p in parts)
    assert merged.period == max(p.period for p in parts)


def test_model_merge_equals_pprof_merge(corpus: Path, tmp_path: Path) -> None:
    files = sorted((corpus / "series").glob("cpu_0*.pb.gz"))
    out = tmp_path / "m.pb.gz"
    out.write_bytes(encode(merge([decode(f.read_bytes()) for f in files])))
    assert top(out, nodecount=20) == expected_top(corpus)
    assert totals(out) == {"samples/count": 1719, "cpu/nanoseconds": 17_190_000_000}
