"""`make bench-push`: pushing small Go CPU profiles to a real ``profstore serve``, as clients do.

Starts ``profstore serve`` on loopback with a fresh data directory, then pushes small Go CPU
profiles (80-180 samples, 6-8 KB gzipped: the repository's ``series/cpu_*`` profiles, each cut to
a random subset of its samples) with ``POST /api/v1/ingest``:

- (a) 32 concurrent clients, each sending its next profile as soon as the last was acknowledged;
- (b) one client sending profiles one after another (a backfill, ``profstore ingest *.pb.gz``).

Every request has its own time and labels, so nothing is deduplicated. Beside each phase it
prints the parse floor: gunzip + upb ``ParseFromString`` of the very same bodies on one core,
measured in the same run. The server's CPU seconds per profile come from ``/proc/<pid>/stat`` of
the server and its child processes (the ingest workers):
on a shared 2-core machine throughput depends on the neighbours, CPU per profile much less.

The clients are a minimal HTTP/1.1 client on asyncio streams in this process (keep-alive, one
connection per client), cheap enough (tens of microseconds a request) not to take the server's
core; the bench's own CPU is printed too. The stage breakdown reads the server's
``profstore_ingest_stage_seconds`` counters from ``/metrics``, divided by the profiles pushed: in
the request threads (or, with ingest workers, in a worker: then ``worker`` is the request's wait
for it) body (receiving it), decode (gunzip, protobuf parse, validation, content hash), digest
(ids of stacks and symbols), stage (the rows), record (its journal record); in the journal
thread, per round, dedup and journal (the append and its sync); wait (a request from its
submission to its acknowledgement: the journal round); and in the writer thread, per batch,
which no request waits for, dedup, assemble, append (the batch's statements), commit and
checkpoint. They are wall seconds: on a loaded machine they include waiting for a core and for
the GIL.

``--server-python``/``--server-cwd`` run another checkout's server (a before/after comparison
in the same minutes). ``--stub-store`` replaces the server's ingestor with one that answers at
once: the server CPU per profile is then its HTTP path alone (uvicorn, middleware, routing,
parameters, the hop to a worker thread, the response), measurable beside a noisy neighbour that
swamps a difference of 0.1 ms in the whole.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np

from bench.gotarget import stop_process, wait_healthy
from service.pprof import profile_pb2 as pb

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus" / "series"
TICKS = os.sysconf("SC_CLK_TCK")
T0_NS = 1_780_000_000 * 10**9


def bodies(n: int, seed: int = 7) -> list[bytes]:
    """``n`` distinct small Go CPU profiles: a random 80-180 of the samples of a real one each."""
    rng = np.random.default_rng(seed)
    bases = []
    for f in sorted(CORPUS.glob("cpu_*.pb.gz")):
        m = pb.Profile()
        m.ParseFromString(gzip.decompress(f.read_bytes()))
        m.time_nanos = 0  # the request's ts is the profile's time
        bases.append(m)
    out = []
    for i in range(n):
        base = bases[i % len(bases)]
        keep = np.sort(rng.choice(len(base.sample), size=int(rng.integers(80, 181)), replace=False))
        m = pb.Profile()
        m.CopyFrom(base)
        del m.sample[:]
        for k in keep:
            s = m.sample.add()
            s.CopyFrom(base.sample[int(k)])
            s.value[0] *= int(rng.integers(1, 4))
            s.value[1] = s.value[0] * base.period
        out.append(gzip.compress(m.SerializeToString(), compresslevel=6, mtime=0))
    return out


def floor(blobs: list[bytes]) -> float:
    """Seconds of gunzip + upb parse of ``blobs`` on one core (the least any ingest must do)."""
    t = time.process_time()
    for b in blobs:
        m = pb.Profile()
        m.ParseFromString(gzip.decompress(b))
    return time.process_time() - t


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/<pid>/task/<tid>/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
    return out


# ``profstore serve`` of the server's checkout (``python -c`` imports from its cwd) with an Ingestor
# that answers at once: what the server then spends is its HTTP path alone (uvicorn, middleware,
# routing, parameters, the hop to a worker thread and back, the response).
STUB_SERVE = """
import sys
from dataclasses import dataclass, field
import service.app

@dataclass
class Stored:
    profile_ids: list = field(default_factory=lambda: [1780000000000000001, 1780000000000000002])
    series: list = field(default_factory=lambda: ["process_cpu:samples:count:cpu:nanoseconds", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"])
    samples: int = 120
    ts: int = 1780000000000000000
    duplicate: bool = False

class StubIngestor:
    def __init__(self, db, limits=None, metrics=None, workers=None):
        self.metrics = metrics

    def ingest(self, data, **kw):
        return Stored()

    def close(self):
        pass

service.app.Ingestor = StubIngestor
from service.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Server:
    """``profstore serve`` as a child process, with a fresh data directory."""

    def __init__(self, python: str, cwd: Path, work: Path, env: dict[str, str], stub_store: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"server-{self.port}.log"
        entry = ["-c", STUB_SERVE, "serve"] if stub_store else ["-m", "service.cli", "serve"]
        cmd = [python, *entry, "--data-dir", str(work / f"data-{self.port}"), "--listen", f"127.0.0.1:{self.port}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1", **env)
            )
        wait_healthy(self.proc, self.url, self.log, time.monotonic() + 60, "profstore serve")

    def cpu_s(self) -> float:
        """CPU seconds of the server and its live child processes (ingest workers, their spawn helper)."""
        total = 0
        for pid in _tree(self.proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / TICKS

    def metrics(self) -> dict[str, float]:
        """Counter samples of ``/metrics`` by their full name with labels."""
        out: dict[str, float] = {}
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self) -> None:
        stop_process(self.proc)


class Conn:
    """One keep-alive HTTP/1.1 connection: a request written, its response read, nothing more."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> int:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(status_line.split()[1])


@dataclass
class Phase:
    name: str
    profiles: int
    wall_s: float
    acks: list[float]
    server_cpu_s: float
    bench_cpu_s: float
    errors: int
    stages: dict[str, float]
    batches: float


async def _push(port: int, blobs: list[bytes], clients: int, seconds: float, first: int) -> tuple[list[float], int]:
    acks: list[float] = []
    errors = 0
    counter = iter(range(first, first + 10**9))
    stop = time.monotonic() + seconds

    async def client(c: int) -> None:
        nonlocal errors
        conn = await Conn.open(port)
        while time.monotonic() < stop:
            i = next(counter)
            labels = quote(f'{{service_name="push-bench",instance="i{i % 64}"}}')
            path = f"/api/v1/ingest?labels={labels}&ts={T0_NS + i * 1_000_000}"
            t = time.perf_counter()
            status = await conn.post(path, blobs[i % len(blobs)])
            if status == 200:
                acks.append(time.perf_counter() - t)
            else:
                errors += 1
        conn.writer.close()

    await asyncio.gather(*(client(c) for c in range(clients)))
    return acks, errors


_STAGE = re.compile(r'profstore_ingest_stage_seconds_total\{stage="([^"]+)"\}')


def phase(srv: Server, name: str, blobs: list[bytes], clients: int, seconds: float, first: int) -> Phase:
    m0, c0, b0 = srv.metrics(), srv.cpu_s(), time.process_time()
    t = time.perf_counter()
    acks, errors = asyncio.run(_push(srv.port, blobs, clients, seconds, first))
    wall = time.perf_counter() - t
    c1, b1, m1 = srv.cpu_s(), time.process_time(), srv.metrics()
    stages = {}
    for key, v in m1.items():
        if hit := _STAGE.fullmatch(key):
            stages[hit.group(1)] = v - m0.get(key, 0.0)
    batches = m1.get("profstore_writer_batch_seconds_count", 0) - m0.get("profstore_writer_batch_seconds_count", 0)
    return Phase(name, len(acks), wall, acks, c1 - c0, b1 - b0, errors, stages, batches)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each phase (default 20)")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients of phase (a) (default 32)")
    ap.add_argument("--server-python", default=sys.executable, help="python of the server's checkout")
    ap.add_argument("--server-cwd", type=Path, default=REPO, help="the server's checkout (default: this one)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="environment of the server")
    ap.add_argument(
        "--stub-store",
        action="store_true",
        help="the server's ingest answers at once, storing nothing: the CPU of its HTTP path alone",
    )
    args = ap.parse_args()

    blobs = bodies(256)
    sizes = [len(b) for b in blobs]
    floor_s = floor(blobs * 4) / (len(blobs) * 4)
    work = Path(tempfile.mkdtemp(prefix="bench-push-"))
    env = dict(kv.split("=", 1) for kv in args.env)
    srv = Server(args.server_python, args.server_cwd, work, env, stub_store=args.stub_store)
    try:
        asyncio.run(_push(srv.port, blobs, 4, 2.0, 10**8))  # warm-up: kernels, caches, interned ids
        for second in range(10):  # and the ingest workers, which start in the background (when there are any)
            if any('stage="worker"' in k for k in srv.metrics()):
                break
            asyncio.run(_push(srv.port, blobs, 4, 1.0, 2 * 10**8 + second * 10**6))
        phases = [
            phase(srv, f"{args.clients} concurrent clients", blobs, args.clients, args.seconds, 0),
            phase(srv, "1 sequential client", blobs, 1, args.seconds, 10**7),
        ]
    finally:
        srv.stop()
    load = os.getloadavg()
    print(
        f"\nprofstore push bench: {len(blobs)} distinct Go CPU profiles, {statistics.median(sizes) / 1024:.1f} KB "
        f"gzipped median ({min(sizes)}-{max(sizes)} B), server {args.server_cwd}"
        f"{' with its store stubbed (HTTP path only)' if args.stub_store else ''}, {os.cpu_count()} cores, "
        f"load {load[0]:.2f} {load[1]:.2f}"
    )
    head = ["phase", "profiles/s", "ack p50 ms", "ack p99 ms", "server CPU ms/profile", "profiles/batch", "errors"]
    head += ["bench CPU ms/profile", "parse floor profiles/s (1 core)", "server CPU vs floor"]
    rows = [head]
    for p in phases:
        n = max(p.profiles, 1)
        rows.append(
            [
                p.name,
                f"{p.profiles / p.wall_s:,.0f}",
                f"{pct(p.acks, 50) * 1e3:.1f}",
                f"{pct(p.acks, 99) * 1e3:.1f}",
                f"{p.server_cpu_s / n * 1e3:.2f}",
                f"{p.profiles / p.batches:.1f}" if p.batches else "-",
                str(p.errors),
                f"{p.bench_cpu_s / n * 1e3:.2f}",
                f"{1 / floor_s:,.0f}",
                f"{p.server_cpu_s / n / floor_s:.0f}x",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    names = sorted({s for p in phases for s in p.stages}, key=lambda s: STAGE_ORDER.get(s, 99))
    if names:
        print("\nper-stage seconds per profile (ms, from the server's profstore_ingest_stage_seconds):")
        print("| stage | " + " | ".join(p.name for p in phases) + " |")
        for s in names:
            cells = [f"{p.stages.get(s, 0.0) / max(p.profiles, 1) * 1e3:.3f}" for p in phases]
            print(f"| {s} | " + " | ".join(cells) + " |")
    else:
        print("\n(the server exposes no profstore_ingest_stage_seconds: no stage breakdown)")
    print(f"\nparse floor: {floor_s * 1e3:.3f} ms per profile (gunzip + upb parse, same bodies, this process)")
    shutil.rmtree(work, ignore_errors=True)


STAGE_ORDER = {
    s: i
    for i, s in enumerate(
        ["body", "decode", "digest", "stage", "dedup", "assemble", "append", "commit", "checkpoint", "wait"]
    )
}  # fmt: skip


if __name__ == "__main__":
    main()
