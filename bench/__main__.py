"""`make bench`: ingest, storage and export figures, each next to its reference, in one run.

- parse floor: gunzip + upb ``ParseFromString`` of the very same bytes (no resolution, no storage);
- ingest: decode, normalize and commit through the writer thread, end to end;
- storage: DuckDB file bytes after CHECKPOINT vs the summed ``.pb.gz`` sizes;
- export: a 1,000-profile merge from DuckDB vs ``go tool pprof -proto`` merging the same raw files.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.fleet import build
from service.errors import ProfileError
from service.pprof import profile_pb2 as pb
from service.pprof.decode import decode
from service.pprof.encode import encode
from service.query.export import export_profile
from service.query.selector import parse_query
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.reads import list_series
from service.store.source import DuckDBSource
from service.store.workers import Workers
from service.types import DEFAULT_TENANT, TimeRange

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"  # the repository's own: the fleet's bases
# The README's "ingest, corpus" row reads the 51 files of many producers kept beside the repository
# where they are; a fresh clone measures the repository's own corpus instead, and says so.
WIDE_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def floor(blobs: list[bytes]) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for b in blobs:
        m = pb.Profile()
        m.ParseFromString(gzip.decompress(b))
        n += len(m.sample)
    return time.perf_counter() - t, n


def ingest(
    db: Database, items: list[tuple[bytes, dict[str, str], str | None]], threads: int, workers: int = 0
) -> float:
    """Seconds to ingest ``items`` from ``threads`` clients, staged in-process or by ``workers`` ingest workers."""
    pool_of = Workers(workers) if workers else None
    if pool_of is not None:
        pool_of.start()
        while not pool_of.ready:
            time.sleep(0.05)
    ing = Ingestor(db, workers=pool_of)
    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda it: ing.ingest(it[0], labels=it[1], name=it[2]), items))
        return time.perf_counter() - t
    finally:
        ing.close()


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--scrapes", type=int, default=100)
    ap.add_argument("--threads", type=int, default=256, help="concurrent ingest clients (the writer batches them)")
    ap.add_argument("--workers", type=int, default=2, help="ingest workers of the second fleet run (0: skip it)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="profstore-bench-"))
    out: list[str] = []
    try:
        # 1. The corpus files that are protobuf, as they are.
        corpus = []
        source = WIDE_CORPUS if WIDE_CORPUS.is_dir() else CORPUS
        print(f"corpus row: the protobuf files of {source}", file=sys.stderr)
        for f in sorted(source.glob("*.pb*")):
            data = f.read_bytes()
            try:
                decode(data)
            except ProfileError:
                continue  # the files pprof refuses
            blob = data if data[:2] == b"\x1f\x8b" else gzip.compress(data)
            corpus.append((f, blob))
        names = {"go119__block.pb.gz": "block", "go119__mutex.pb.gz": "mutex"}
        c_floor, c_samples = floor([b for _, b in corpus])
        db = Database(work / "corpus")
        c_ing = ingest(db, [(b, {"service_name": "bench", "file": f.name}, names.get(f.name)) for f, b in corpus], 1)
        db.close()

        # 2. The synthetic fleet.
        t = time.perf_counter()
        fleet = build(CORPUS, args.targets, args.scrapes)
        gen = time.perf_counter() - t
        blobs = [p.data for p in fleet]
        f_floor, f_samples = floor(blobs)
        db = Database(work / "fleet")
        fleet_items = [
            (p.data, {"service_name": f"svc-{p.target % 10}", "instance": f"host-{p.target}:6060"}, p.name)
            for p in fleet
        ]
        f_ing = ingest(db, fleet_items, args.threads)
        db.close()
        w_ing = float("nan")
        if args.workers:  # the same fleet into a fresh store, staged by ingest worker processes
            db = Database(work / "fleet-workers")
            w_ing = ingest(db, fleet_items, args.threads, args.workers)
            db.close()
        db_bytes = (work / "fleet" / "profstore.duckdb").stat().st_size
        raw_bytes = sum(len(b) for b in blobs)
        db = Database(work / "fleet")
        with db.read() as cur:
            rows = cur.execute("SELECT count(*) FROM samples").fetchone()[0]

        # 3. Export: 1,000 CPU profiles (10 targets x 100 scrapes of one service) vs go tool pprof -proto.
        merge_targets = [p for p in fleet if p.name == "process_cpu" and p.target % 7 == 0 and p.target < 70][:1000]
        ids = sorted({p.target for p in merge_targets})
        q = parse_query(
            'process_cpu:cpu:nanoseconds:cpu:nanoseconds{instance=~"' + "|".join(f"host-{i}:6060" for i in ids) + '"}'
        )
        t = time.perf_counter()
        with db.read(timeout_s=600) as cur:
            prof = export_profile(DuckDBSource(cur), q, list_series(cur, DEFAULT_TENANT), TimeRange(0, 2**62))
        ours_bytes = encode(prof)
        ours = time.perf_counter() - t
        db.close()
        go = shutil.which("go")
        go_s = float("nan")
        if go:
            rawdir = work / "raw"
            rawdir.mkdir()
            paths = []
            for i, p in enumerate(merge_targets):
                path = rawdir / f"{i:04d}.pb.gz"
                path.write_bytes(p.data)
                paths.append(str(path))
            t = time.perf_counter()
            subprocess.run([go, "tool", "pprof", "-proto", "-symbolize=none", *paths], check=True, capture_output=True)
            go_s = time.perf_counter() - t

        cpu = platform.processor() or platform.machine()
        out.append(
            f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
            f"fleet generated in {gen:.1f} s"
        )
        out.append("")
        out.append(row(["what", "profiles", "samples", "ours", "reference (same run)", "ratio"]))
        out.append(row(["---"] * 6))
        for label, n, s, floor_s, ing_s in (
            ("ingest, corpus", len(corpus), c_samples, c_floor, c_ing),
            ("ingest, fleet", len(fleet), f_samples, f_floor, f_ing),
            *(
                [(f"ingest, fleet, {args.workers} ingest workers", len(fleet), f_samples, f_floor, w_ing)]
                if args.workers
                else []
            ),
        ):
            out.append(
                row(
                    [
                        label,
                        f"{n:,}",
                        f"{s:,}",
                        f"{n / ing_s:,.0f} profiles/s, {s / ing_s:,.0f} samples/s",
                        f"parse floor {n / floor_s:,.0f} profiles/s, {s / floor_s:,.0f} samples/s",
                        f"{floor_s / ing_s:.1%} of floor",
                    ]
                )
            )
        out.append(
            row(
                [
                    "storage, fleet",
                    f"{len(fleet):,}",
                    f"{rows:,} rows",
                    f"{db_bytes / 1e6:,.1f} MB on disk, {db_bytes / f_samples:.2f} B per pprof sample",
                    f"{raw_bytes / 1e6:,.1f} MB of .pb.gz, {raw_bytes / f_samples:.2f} B per sample",
                    f"{db_bytes / raw_bytes:.2f}x raw",
                ]
            )
        )
        out.append(
            row(
                [
                    "export, 1,000-profile merge",
                    f"{len(merge_targets):,}",
                    f"{len(prof.samples):,} merged",
                    f"{ours:.2f} s ({len(ours_bytes) / 1e3:,.0f} kB)",
                    f"go tool pprof -proto {go_s:.2f} s",
                    f"{go_s / ours:.1f}x faster" if go else "go not installed",
                ]
            )
        )
        print("\n".join(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
