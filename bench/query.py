"""`make bench-query`: query latency over days of a synthetic fleet, and a day's export vs ``go tool pprof -proto``.

The fleet: ``--services`` services x 2 instances x (process_cpu, memory, goroutine) every 15 s for
``--days`` days, built from real corpus profiles (bench/fleet.py's variants: each sample dropped or
multiplied by a small integer, so values and stack mixes differ from profile to profile). Each
variant is decoded, validated, normalized and staged once by the ingest code; every stored profile
is a variant stamped with its series and time and written through the writer like any other, so
generation costs what the writer costs, not what decoding 2 M profiles would. One instance's CPU
profiles of the last day are real bytes ingested through the whole path, and also written to
files for ``go tool pprof -proto``. Then the rollups are compacted and each query is timed in
process through the HTTP app (TestClient), ``--repeat`` times per range after one untimed request.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from bench.fleet import BASES, variants, varint
from service.app import create_app
from service.config import Settings
from service.pprof.decode import Envelope, decompress, envelope
from service.store.digest import prepare
from service.store.ids import KnownIds
from service.store.normalize import Meta, Normalized, profile_ids_of, profile_types_of, series_id_of
from service.store.records import encode_record
from service.store.stack_rollups import compact
from service.store.staging import Staged, stage
from service.store.writer import Pending
from service.types import DEFAULT_TENANT

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"  # the repository's own
S = 10**9
STEP = 15 * S
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
TYPES = {"process_cpu": [0, 1, 2, 3, 4], "memory": [5], "goroutine": [6]}  # indexes into bench.fleet.BASES


def _templates(rng: np.random.Generator) -> list[list[tuple[Template, bytes]]]:
    """Per base, its variants staged once (with a placeholder series and time) and their raw bytes."""
    out = []
    for (_, name), (_, raws) in zip(BASES, variants(CORPUS, 8, rng), strict=True):
        row = []
        for raw in raws:
            env = envelope(raw)
            meta = Meta(DEFAULT_TENANT, {}, name, 0, 0, "bench")
            prepared = prepare(env)
            assert prepared is not None
            row.append((Template(env, meta, stage(env, prepared, meta, KnownIds(limit=0))), raw))
        out.append(row)
    return out


@dataclass(frozen=True, slots=True)
class Template:
    envelope: Envelope
    meta: Meta
    staged: Staged


def _stamp(t: Template, labels: dict[str, str], ts: int, first: bool) -> Pending:
    """The template's rows for another series and time (interned rows only the first time), with
    the journal record that stores them again after a crash."""
    st = t.staged
    assert st is not None
    meta = Meta(DEFAULT_TENANT, labels, t.meta.name, ts, ts, "bench")
    pts = profile_types_of(t.envelope.header, meta.name)
    sids = np.array([series_id_of(DEFAULT_TENANT, pt, labels) for pt in pts], np.uint64)
    group = meta.group_id
    pids = profile_ids_of(group, len(pts))
    series = [{**r, "series_id": int(sids[i]), "labels": sorted(labels.items()), "first_seen": ts, "last_seen": ts}
              for i, r in enumerate(st.series)]  # fmt: skip
    profiles = [{**r, "profile_id": pids[i], "series_id": int(sids[i]), "ts": ts, "group_id": group}
                for i, r in enumerate(st.profiles)]  # fmt: skip
    staged = Staged(
        item=Normalized(group, pids, st.item.series, st.item.sample_rows),
        ts=ts,
        samples=(st.samples[0], sids[st.samples[0]], *st.samples[2:]),
        rollup=(st.rollup[0], sids[st.rollup[0]], *st.rollup[2:]),
        series=series,
        profiles=profiles,
        entities=st.entities if first else None,
        generation=st.generation,
    )
    return Pending(meta, staged, encode_record([(t.envelope, meta)]))


def generate(client: TestClient, services: int, days: float, raw_dir: Path) -> tuple[int, int, float]:
    """Write the fleet; returns (profiles, sample rows, seconds)."""
    app = client.app
    db = app.state.db  # type: ignore[attr-defined]
    rng = np.random.default_rng(7)
    templates = _templates(rng)
    end = 1_790_000_000 * S
    end -= end % (3600 * S)
    start = end - int(days * 86400) * S
    used: set[tuple[int, int]] = set()
    t0 = time.perf_counter()
    pending: deque[Future[object]] = deque()
    profiles = rows = 0
    real = ThreadPoolExecutor(4)  # the real-bytes profiles, through the whole ingest path

    def drain(keep: int) -> None:
        nonlocal rows
        while len(pending) > keep:
            res = pending.popleft().result()
            rows += res.samples if hasattr(res, "samples") else res.item.sample_rows  # type: ignore[attr-defined]

    day_start = end - 86400 * S
    for ts in range(start, end, STEP):
        for svc in range(services):
            for inst in range(2):
                labels = {"service_name": f"svc-{svc}", "instance": f"svc-{svc}-{inst}:6060"}
                for name, bases in TYPES.items():
                    b = bases[svc % len(bases)]
                    k = int(rng.integers(8))
                    t, raw = templates[b][k]
                    at = ts + (svc * 2 + inst) * 10**6
                    if svc == 0 and inst == 0 and name == "process_cpu" and at >= day_start:
                        data = gzip.compress(raw + b"\x48" + varint(at), compresslevel=1, mtime=0)
                        (raw_dir / f"{at}.pb.gz").write_bytes(data)
                        ingest = app.state.ingestor.ingest  # type: ignore[attr-defined]
                        pending.append(real.submit(ingest, data, labels=labels, name=name))
                        profiles += 1
                        continue
                    pending.append(db.writer.submit(_stamp(t, labels, at, (b, k) not in used)))  # type: ignore[arg-type]
                    used.add((b, k))
                    profiles += 1
        drain(4096)
    drain(0)
    real.shutdown()
    return profiles, rows, time.perf_counter() - t0


def _ranges(end: int, days: float) -> Iterator[tuple[str, int, int]]:
    """Ranges ending at an arbitrary "now" (7 min 31 s before the data ends), as `from=now-1h` would:
    never aligned to a minute or an hour, so the planner needs every level."""
    now = end - (7 * 60 + 31) * S
    for label, span in (("1h", 3600), ("24h", 86400), ("7d", 7 * 86400)):
        if span <= days * 86400:
            yield label, now - span * S, now


def _time(client: TestClient, path: str, params: dict[str, object], repeat: int) -> tuple[float, float, str]:
    times = []
    resolution = ""
    client.get(path, params=params)  # untimed: the first read of a range loads its blocks from the OS
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(path, params=params)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text
        resolution = r.headers.get("X-Profstore-Resolution", "")
    return float(np.percentile(times, 50)), float(np.percentile(times, 95)), resolution


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=10)
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument(
        "--keep",
        type=Path,
        help="generate into this folder and keep it; if it already holds a fleet, only time the queries again",
    )
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="profstore-qbench-"))
    raw_dir = work / "raw"
    reuse = (work / "data").exists()
    raw_dir.mkdir(parents=True, exist_ok=True)
    try:
        app = create_app(Settings(data_dir=work / "data", compaction_interval_s=10**9, max_range_days=31))
        with TestClient(app) as client:
            db = app.state.db
            end = 1_790_000_000 * S
            end -= end % (3600 * S)
            if reuse:
                with db.read() as cur:
                    profiles = cur.execute("SELECT count(DISTINCT group_id) FROM profiles").fetchone()[0]
                    rows = cur.execute("SELECT count(*) FROM samples").fetchone()[0]
                made = f"reused from {work}"
            else:
                profiles, rows, gen_s = generate(client, args.services, args.days, raw_dir)
                t = time.perf_counter()
                db.writer.call(lambda con: compact(con, end + 120 * S)).result()  # as the job would have by then
                compact_s = time.perf_counter() - t
                db.writer.call(lambda con: con.execute("CHECKPOINT")).result()
                made = f"generated in {gen_s:.0f} s ({profiles / gen_s:,.0f} profiles/s); rollups compacted in {compact_s:.1f} s"
            size = db.size_bytes()
            out = [
                f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
                f"fleet: {args.services} services x 2 instances x 3 types every 15 s for {args.days:g} days: "
                f"{profiles:,} profiles, {rows:,} sample rows, {made}; "
                f"{size / 1e9:.2f} GB on disk, {size / max(rows, 1):.1f} B per sample row",
                "",
                "| query | scope | range | p50 | p95 | read |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            one = CPU + '{service_name="svc-1"}'
            scopes = [("one service", one), ("whole fleet", CPU)]
            for label, lo, hi in _ranges(end, args.days):
                for scope, q in scopes:
                    base = {"query": q, "from": lo, "until": hi}
                    queries = [
                        ("top", "/api/v1/top", base),
                        ("flamegraph", "/api/v1/flamegraph", base),
                        ("timeseries", "/api/v1/timeseries", base),
                        ("diff", "/api/v1/diff", {**base, "base_from": lo - (hi - lo), "base_until": lo - 1}),
                    ]
                    for name, path, params in queries:
                        p50, p95, res = _time(client, path, params, args.repeat)
                        out.append(f"| {name} | {scope} | {label} | {p50 * 1e3:.0f} ms | {p95 * 1e3:.0f} ms | {res} |")
            # Export of one instance's last day vs go tool pprof -proto on the same raw files.
            files = sorted(raw_dir.glob("*.pb.gz"))
            if not files:  # a kept fleet whose raw files are gone: queries only
                print("\n".join(out))
                return
            q = CPU + '{instance="svc-0-0:6060"}'
            t = time.perf_counter()
            r = client.get("/api/v1/export", params={"query": q, "from": end - 86400 * S, "until": end - 1})
            ours = time.perf_counter() - t
            assert r.status_code == 200, r.text
            go = shutil.which("go")
            go_s = float("nan")
            if go:
                t = time.perf_counter()
                subprocess.run([go, "tool", "pprof", "-proto", "-symbolize=none", *map(str, files)],
                               capture_output=True, check=True, timeout=3600)  # fmt: skip
                go_s = time.perf_counter() - t
            out += [
                "",
                f"export of one instance's day ({len(files):,} CPU profiles, {len(decompress(r.content)):,} bytes "
                f"merged): {ours:.2f} s; go tool pprof -proto on the raw files: {go_s:.2f} s "
                f"({go_s / ours:.1f}x faster)",
            ]
        print("\n".join(out))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
