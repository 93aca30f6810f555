"""`make bench-cluster`: one node on a DuckDB file beside nodes on a DuckLake, on the same fleet.

Four configurations, one after the other in one run, each with fresh storage (``--configs`` picks):

- ``duckdb``: one ``profstore serve`` on its DuckDB file (the default backend);
- ``lake-dir``: one node, ``storage.backend: ducklake``, catalog in PostgreSQL, data files in a local directory;
- ``lake-s3``: the same with the data files on a moto S3 server;
- ``lake-3``: three nodes on one lake (local directory), pushes spread round-robin over them.

PostgreSQL and moto are the real servers the lake tests start (:mod:`bench.lakeparts`); every node is a
real ``profstore serve --config`` process with ``compaction_interval_s`` set to ``--maintain-s`` (60 s, the shipped default),
so a lake's maintenance node runs rollups (and retention when due) behind the write fence that often.
For each configuration:

1. **Fleet.** ``--targets`` Go services (small real CPU profiles from :func:`bench.push.bodies`, two
   series each) pushed over the last 24 h before the configuration's start: 8 points 3 h apart and 4 in
   the last hour (the backfill, by ``--clients`` clients; its rate is printed too). The query ranges end
   at that start, so every configuration answers over exactly the same profiles.
2. **Ingest** for ``--seconds``: ``--clients`` clients (a raw keep-alive HTTP/1.1 client on asyncio,
   as bench/push.py) each pushing its next profile when the last was acknowledged, client ``c`` to node
   ``c % nodes``, every push with its own time (after the query ranges) and the fleet's labels. Reported:
   profiles acknowledged per second, CPU per profile (the serve processes' and their children's CPU
   from ``/proc`` over the phase, divided by the profiles acknowledged; the catalog's PostgreSQL beside
   it, moto's not counted), the writer's commit time (``profstore_ingest_stage_seconds{stage="commit"}``
   over the batches: a mean; the exposition has no per-commit histogram) and the whole batch's p50/p99
   (``profstore_writer_batch_seconds``, interpolated in its buckets as Prometheus'
   ``histogram_quantile`` does: coarse, 10 ms up to 50 ms), non-200 answers by status.
3. **Freshness**: one probe at a time pushes a profile with a unique ``probe`` label to node ``i``
   and polls ``/api/v1/profiles`` on node ``i+1`` (the same node when there is one) until it is
   listed: acknowledgement → visible, p50/p99 and the worst; for ``--fresh-seconds`` under a steady
   open-loop ``--fresh-rate`` profiles/s (a fleet's load, well under saturation: the lake's own lag),
   once the ingest phase's backlog drained (``profstore_writer_queue_depth`` at 0 on every node; how
   long that took is printed: under saturation, a push waits behind that backlog, up to
   ``write_max_pending``). Not during the ingest phase: the probe's polling queries (one at a
   time, each ~10x dearer on a lake) would be in the CPU per profile.
4. **Files per table** before and after maintenance: the lake's live data and delete files per table as
   its catalog counts them (``ducklake_table_info``, from this process), and the Parquet files on disk
   or in the bucket (old files stay until cleanup, 15 min after they were replaced). Maintenance is
   forced with ``POST /api/v1/storage/expire`` on each node until one answers 200 (only the maintenance
   node runs it: rollups, retention, then merging and rewriting files, expiring snapshots, cleanup).
   A DuckDB file is one file: ``-``.
5. **Queries** after maintenance: top, flame graph and time series over the last 1 h and 24 h of the
   fleet, one untimed request then ``--repeat`` timed ones each, spread over the nodes: p50/p95.

Then the ratios the issue targets: lake CPU per profile vs DuckDB's (at most 1.25x), query p50 vs DuckDB's
(at most 1.5x), freshness p99 (at most 5 s).

``--minutes M`` instead runs the file-count soak: the lake configurations only (``--configs``), the
clients pushing for ``M`` minutes while the files per table are counted every ``--sample-s`` seconds;
maintenance runs on its own schedule (files every 10 min), or every ``--force-every`` seconds when set
(a short run then shows what a long one would).

The machine is shared: run it under ``nice``; throughput follows the neighbours, CPU per profile much
less. Everything runs in a temporary directory removed at the end (``--keep`` keeps it, with the node logs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.collector import Samples, buckets, histogram_quantile, parse_metrics, quantile, total
from bench.gotarget import stop_process, wait_healthy
from bench.lakeparts import S3, Postgres, free_port, postgres_server, s3_server, storage_yaml
from bench.push import TICKS, Conn, _tree, bodies
from service.config import S3Settings, StorageSettings
from service.store import lake

REPO = Path(__file__).resolve().parents[1]
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
JOB = "cluster-bench"
S = 10**9
H = 3600 * S
CONFIGS = ("duckdb", "lake-dir", "lake-s3", "lake-3")
FRESH_TARGET_S = 5.0
CPU_TARGET = 1.25
QUERY_TARGET = 1.5


# -- processes --------------------------------------------------------------------------------


def cpu_of(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (a server's ingest workers, PostgreSQL's backends)."""
    ticks = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / TICKS


class Node:
    """``profstore serve --config`` on a free loopback port with its own data directory (its journal)."""

    def __init__(self, work: Path, name: str, config: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / f"{name}.log"
        cmd = [
            sys.executable,
            "-m", "service.cli", "serve", "--config", str(config),
            "--data-dir", str(work / name), "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1")
            )

    def wait(self) -> None:
        wait_healthy(self.proc, self.url, self.log, time.monotonic() + 240, f"profstore serve ({self.name})")

    def cpu_s(self) -> float:
        return cpu_of(self.proc.pid)

    def metrics(self) -> Samples:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=30).text)

    def log_count(self, *needles: str) -> int:
        text = self.log.read_text(errors="replace").lower()
        return sum(text.count(n.lower()) for n in needles)

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Setup:
    """One configuration: its storage block, its nodes, and what counts its files."""

    name: str
    nodes: list[Node]
    storage: StorageSettings | None  # None: the DuckDB file
    files_dir: Path | None = None  # a local DATA_PATH
    s3: S3 | None = None
    s3_prefix: str = ""

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


def write_config(path: Path, storage: StorageSettings | None, maintain_s: float) -> None:
    block = storage_yaml(storage) if storage is not None else ""
    path.write_text(f"compaction_interval_s: {maintain_s:g}\n{block}")


@contextlib.contextmanager
def started(name: str, work: Path, pg: Postgres | None, s3: S3 | None, maintain_s: float) -> Iterator[Setup]:
    """The nodes of configuration ``name`` on fresh storage, healthy; stopped afterwards."""
    here = work / name
    here.mkdir()
    storage: StorageSettings | None = None
    setup_kw: dict[str, Any] = {}
    if name != "duckdb":
        assert pg is not None
        if name == "lake-s3":
            assert s3 is not None
            prefix = f"{name}-{int(time.time())}/"
            s3_settings = S3Settings(
                endpoint=s3.endpoint, region="us-east-1", key_id="test", secret="test", url_style="path", use_ssl=False
            )
            storage = StorageSettings(
                backend="ducklake", catalog=pg.database(), data_path=f"s3://{s3.bucket}/{prefix}", s3=s3_settings
            )
            setup_kw = {"s3": s3, "s3_prefix": prefix}
        else:
            storage = StorageSettings(backend="ducklake", catalog=pg.database(), data_path=f"{here / 'files'}/")
            setup_kw = {"files_dir": here / "files"}
    config = here / "node.yaml"
    write_config(config, storage, maintain_s)
    count = 3 if name == "lake-3" else 1
    # The first node alone first: on a new catalog, nodes that attach at the same moment race to create
    # DuckLake's own tables in PostgreSQL and the losers exit ("duplicate key value violates unique
    # constraint pg_type_typname_nsp_index"); the others then start together.
    nodes = [Node(here, "node0", config)]
    try:
        nodes[0].wait()
        nodes += [Node(here, f"node{i}", config) for i in range(1, count)]
        for n in nodes[1:]:
            n.wait()
        yield Setup(name, nodes, storage, **setup_kw)
    finally:
        for n in nodes:
            n.stop()


def postgres_pid(pg: Postgres) -> int | None:
    """The postmaster's pid (first line of its pid file), so its backends' CPU can be counted."""
    try:
        return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# -- pushing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Push:
    labels: str  # selector, already quoted for the URL
    ts: int  # ns
    body: bytes


def fleet_labels(target: int) -> str:
    return quote(f'{{job="{JOB}",service_name="svc-{target % 12}",instance="i{target}"}}')


def backfill(targets: int, blobs: list[bytes], end_ns: int) -> list[Push]:
    """Per target 8 profiles 3 h apart over the 24 h before ``end_ns`` and 4 in its last hour."""
    out = []
    for t in range(targets):
        offsets = [24 * H - k * 3 * H for k in range(8)] + [H - k * 15 * 60 * S for k in range(4)]
        for k, off in enumerate(offsets):
            out.append(Push(fleet_labels(t), end_ns - off + t * S, blobs[(t * 13 + k) % len(blobs)]))
    return out


def live_pushes(targets: int, blobs: list[bytes]) -> Iterator[Push]:
    """Endless pushes at the current time (each its own nanosecond), round-robin over the targets."""
    for i in itertools.count():
        yield Push(fleet_labels(i % targets), time.time_ns() + i % 1000, blobs[i % len(blobs)])


@dataclass
class Pushed:
    acks: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0


async def push_all(
    urls: list[str], jobs: Iterator[Push], clients: int, seconds: float | None, retry: bool = False
) -> Pushed:
    """``clients`` closed-loop clients, client ``c`` to ``urls[c % len(urls)]``, until ``jobs`` runs out
    or ``seconds`` pass; ``retry``: a refused push (503, no answer) is sent again after a pause, as a
    client that must deliver does (the backfill: every configuration then holds the same fleet)."""
    out = Pushed()
    stop = time.monotonic() + seconds if seconds is not None else math.inf
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]

    async def client(c: int) -> None:
        port = ports[c % len(ports)]
        conn: Conn | None = None
        job: Push | None = None
        while time.monotonic() < stop:
            job = job or next(jobs, None)
            if job is None:
                break
            try:
                if conn is None:
                    conn = await Conn.open(port)
                t = time.perf_counter()
                status = await conn.post(f"/api/v1/ingest?labels={job.labels}&ts={job.ts}", job.body)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                out.statuses["no answer"] += 1
                conn = None
                await asyncio.sleep(0.1)
                job = job if retry else None
                continue
            if status == 200:
                out.acks.append(time.perf_counter() - t)
                job = None
            else:
                out.statuses[str(status)] += 1
                if retry and status in (429, 503):
                    await asyncio.sleep(0.5)
                else:
                    job = None
        if conn is not None:
            conn.writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    out.wall_s = time.perf_counter() - t0
    return out


async def push_paced(urls: list[str], jobs: Iterator[Push], rate: float, stop: asyncio.Event) -> Pushed:
    """Open-loop pushes at ``rate`` per second in all (4 clients, each on its own schedule, none
    catching up in a burst when it falls behind), until ``stop``: a fleet's steady load, well below
    what the nodes can take, so that freshness measures the lake rather than a backlog."""
    out = Pushed()
    clients = 4
    gap = clients / rate
    ports = [int(u.rsplit(":", 1)[1]) for u in urls]

    async def client(c: int) -> None:
        conn = await Conn.open(ports[c % len(ports)])
        due = time.monotonic() + c * gap / clients
        while not stop.is_set():
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due = max(due + gap, time.monotonic())
            job = next(jobs)
            t = time.perf_counter()
            status = await conn.post(f"/api/v1/ingest?labels={job.labels}&ts={job.ts}", job.body)
            if status == 200:
                out.acks.append(time.perf_counter() - t)
            else:
                out.statuses[str(status)] += 1
        conn.writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    out.wall_s = time.perf_counter() - t0
    return out


async def probe_freshness(urls: list[str], blob: bytes, stop: asyncio.Event, tag: str) -> tuple[list[float], int]:
    """Ack → listed on the next node, one probe at a time until ``stop``; (delays, probes never seen in 30 s)."""
    delays: list[float] = []
    missed = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for k in itertools.count():
            if stop.is_set():
                break
            i = k % len(urls)
            j = (i + 1) % len(urls)
            labels = f'{{job="{JOB}-probe",probe="{tag}-{k}"}}'
            r = await client.post(
                f"{urls[i]}/api/v1/ingest", params={"labels": labels, "ts": str(time.time_ns())}, content=blob
            )
            if r.status_code != 200:
                await asyncio.sleep(0.5)
                continue
            acked = time.perf_counter()
            params = {"query": f"{CPU}{labels}", "from": "now-1h", "until": "now+1h", "limit": "1"}
            while time.perf_counter() - acked < 30:
                q = await client.get(f"{urls[j]}/api/v1/profiles", params=params)
                if q.status_code == 200 and q.json()["profiles"]:
                    delays.append(time.perf_counter() - acked)
                    break
                await asyncio.sleep(0.05)
            else:
                missed += 1
            await asyncio.sleep(0.3)
    return delays, missed


# -- files ------------------------------------------------------------------------------------


@dataclass
class Files:
    live: dict[str, int]  # table -> data + delete files in the current snapshot (the catalog's count)
    deletes: dict[str, int]  # table -> of which delete files
    stored: dict[str, int]  # table -> Parquet files in the data path (current and not yet cleaned up)

    def top(self) -> str:
        if not self.live:
            return "-"
        worst = max(self.live, key=lambda t: self.live[t])
        return f"{sum(self.live.values())} ({worst} {self.live[worst]})"


class FileCounter:
    """Counts a lake's files through its catalog (an attach of our own) and in its data path."""

    def __init__(self, setup: Setup, ext_dir: Path) -> None:
        self.setup = setup
        self.con = lake.connect(setup.storage, ext_dir) if setup.storage is not None else None

    def count(self) -> Files:
        if self.con is None:
            return Files({}, {}, {})
        cur = self.con.cursor()
        try:
            rows = cur.execute("SELECT table_name, file_count, delete_file_count FROM ducklake_table_info('lake')")
            got = rows.fetchall()
        finally:
            cur.close()
        live = {str(t): int(f or 0) + int(d or 0) for t, f, d in got}
        return Files(live, {str(t): int(d or 0) for t, _, d in got}, self._stored())

    def _stored(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        if self.setup.files_dir is not None:
            for p in self.setup.files_dir.rglob("*.parquet"):
                parts = p.relative_to(self.setup.files_dir).parts
                out[parts[1] if len(parts) > 2 else "?"] += 1
        elif self.setup.s3 is not None:
            client = self.setup.s3.client()
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.setup.s3.bucket, Prefix=self.setup.s3_prefix
            ):
                for obj in page.get("Contents", []):
                    parts = obj["Key"][len(self.setup.s3_prefix) :].split("/")
                    if obj["Key"].endswith(".parquet"):
                        out[parts[1] if len(parts) > 2 else "?"] += 1
        return dict(out)

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def maintain(setup: Setup) -> tuple[float, str]:
    """Force a full maintenance run on whichever node holds the lease; (seconds, who or why not)."""
    why = ""
    for _ in range(3):
        for n in setup.nodes:
            t = time.perf_counter()
            r = httpx.post(f"{n.url}/api/v1/storage/expire", timeout=600)
            if r.status_code == 200:
                return time.perf_counter() - t, n.name
            why = f"{r.status_code} {r.text[:120]}"
        time.sleep(2)
    return math.nan, why


# -- queries ----------------------------------------------------------------------------------

QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("top", "/api/v1/top", {"limit": 20}),
    ("flame graph", "/api/v1/flamegraph", {}),
    ("time series", "/api/v1/timeseries", {}),
]
RANGES = {"1h": H, "24h": 24 * H}


def wait_rollups(setup: Setup, since_s: float, limit_s: float) -> None:
    """Until a node's minute rollups are complete to the minute before ``since_s`` (what the lake's forced
    maintenance does at once, and a DuckDB file's compaction on its interval): both then answer a
    range from the same plan (``X-Profstore-Resolution``), and the comparison is of storage alone."""
    want = (since_s - 60) // 60 * 60
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if all(total(n.metrics(), "profstore_rollups_complete_seconds", resolution="60") >= want for n in setup.nodes):
            return
        time.sleep(1)
    raise RuntimeError(f"{setup.name}: minute rollups not complete within {limit_s:g} s")


def run_queries(setup: Setup, end_ns: int, repeat: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per request of each query and range (``"top 1h"``), spread over the nodes, and the plan
    each answered from (``X-Profstore-Resolution``); a non-200 fails."""
    out: dict[str, list[float]] = {}
    plans: dict[str, str] = {}
    rr = itertools.cycle(setup.urls)
    with httpx.Client(timeout=300) as client:
        for rname, span in RANGES.items():
            for qname, path, extra in QUERIES:
                params = {"query": f'{CPU}{{job="{JOB}"}}', "from": str(end_ns - span), "until": str(end_ns), **extra}
                if qname == "time series":
                    params["step"] = "60" if rname == "1h" else "900"
                took = []
                for k in range(repeat + 1):
                    t = time.perf_counter()
                    r = client.get(f"{next(rr)}{path}", params=params)
                    if r.status_code != 200:
                        raise RuntimeError(f"{setup.name}: {qname} {rname} answered {r.status_code}: {r.text[:300]}")
                    if k:  # the first one warms caches and compiled kernels up
                        took.append(time.perf_counter() - t)
                out[f"{qname} {rname}"] = took
                plans[f"{qname} {rname}"] = r.headers.get("X-Profstore-Resolution", "?")
    return out, plans


# -- one configuration ------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    nodes: int
    backfill_per_s: float = math.nan
    backfill_refused: Counter[str] = field(default_factory=Counter)  # then sent again
    drain_s: float = math.nan  # after the ingest phase, until every writer's queue was empty
    pushed: Pushed = field(default_factory=Pushed)
    cpu_s: float = 0.0
    pg_cpu_s: float = math.nan
    batches: float = 0.0
    commit_s: float = 0.0
    batch_p50: float = math.nan
    batch_p99: float = math.nan
    fresh: list[float] = field(default_factory=list)  # at --fresh-rate
    fresh_missed: int = 0
    fresh_pushed: Pushed = field(default_factory=Pushed)
    before: Files = field(default_factory=lambda: Files({}, {}, {}))
    after: Files = field(default_factory=lambda: Files({}, {}, {}))
    maintain_s: float = math.nan
    maintained_by: str = ""
    queries: dict[str, list[float]] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    conflicts: int = 0
    errors_logged: int = 0

    @property
    def per_s(self) -> float:
        return len(self.pushed.acks) / self.pushed.wall_s if self.pushed.wall_s else math.nan

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / max(len(self.pushed.acks), 1) * 1e3


def sum_metrics(nodes: list[Node]) -> Samples:
    return [s for n in nodes for s in n.metrics()]


def drain(setup: Setup, limit_s: float = 120.0) -> float:
    """Seconds until no node's writer has acknowledged profiles waiting (``profstore_writer_queue_depth``):
    the backlog the ingest phase left, which would otherwise be what the steady probes measure."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if total(sum_metrics(setup.nodes), "profstore_writer_queue_depth") == 0:
            return time.monotonic() - t0
        time.sleep(0.25)
    return math.inf


def step(setup: Setup, what: str, t0: float) -> None:
    """Progress: on a loaded machine a run is long, and this says where it is."""
    print(f"{setup.name}: {what} ({time.monotonic() - t0:.0f} s)", flush=True)


def measure(setup: Setup, args: argparse.Namespace, blobs: list[bytes], pg: Postgres | None, ext_dir: Path) -> Result:
    res = Result(setup.name, len(setup.nodes))
    t0 = time.monotonic()
    end_ns = time.time_ns() - 60 * S
    jobs = backfill(args.targets, blobs, end_ns)
    done = asyncio.run(push_all(setup.urls, iter(jobs), args.clients, None, retry=True))
    if len(done.acks) != len(jobs):
        raise RuntimeError(f"{setup.name}: backfill refused: {dict(done.statuses)}")
    res.backfill_refused = done.statuses
    res.backfill_per_s = len(done.acks) / done.wall_s
    step(setup, f"backfilled {len(done.acks)} profiles (refused, then sent again: {dict(done.statuses)})", t0)

    pg_pid = postgres_pid(pg) if pg is not None and setup.storage is not None else None
    m0 = sum_metrics(setup.nodes)
    c0 = sum(n.cpu_s() for n in setup.nodes)
    p0 = cpu_of(pg_pid) if pg_pid else math.nan

    res.pushed = asyncio.run(push_all(setup.urls, live_pushes(args.targets, blobs), args.clients, args.seconds))
    c1 = sum(n.cpu_s() for n in setup.nodes)
    p1 = cpu_of(pg_pid) if pg_pid else math.nan
    m1 = sum_metrics(setup.nodes)
    res.cpu_s, res.pg_cpu_s = c1 - c0, p1 - p0
    res.batches = total(m1, "profstore_writer_batch_seconds_count") - total(m0, "profstore_writer_batch_seconds_count")
    stage = "profstore_ingest_stage_seconds_total"
    res.commit_s = total(m1, stage, stage="commit") - total(m0, stage, stage="commit")
    b0 = dict(buckets(m0, "profstore_writer_batch_seconds"))
    delta = [(le, c - b0.get(le, 0.0)) for le, c in buckets(m1, "profstore_writer_batch_seconds")]
    res.batch_p50 = histogram_quantile(0.5, delta)[0]
    res.batch_p99 = histogram_quantile(0.99, delta)[0]

    step(setup, f"ingest: {len(res.pushed.acks)} profiles acknowledged", t0)

    res.drain_s = drain(setup)
    step(setup, f"backlog drained in {res.drain_s:.1f} s", t0)

    async def steady() -> tuple[Pushed, tuple[list[float], int]]:
        stop = asyncio.Event()
        load = asyncio.create_task(push_paced(setup.urls, live_pushes(args.targets, blobs), args.fresh_rate, stop))
        await asyncio.sleep(2)
        probe = asyncio.create_task(probe_freshness(setup.urls, blobs[1], stop, setup.name + "-steady"))
        await asyncio.sleep(args.fresh_seconds)
        stop.set()
        return await load, await probe

    res.fresh_pushed, (res.fresh, res.fresh_missed) = asyncio.run(steady())
    step(setup, f"freshness at {args.fresh_rate:g} profiles/s: {len(res.fresh)} probes", t0)
    counter = FileCounter(setup, ext_dir)
    try:
        time.sleep(2 * args.linger_s + 1)  # the last pushes committed
        res.before = counter.count()
        res.maintain_s, res.maintained_by = maintain(setup)
        res.after = counter.count()
    finally:
        counter.close()
    step(setup, f"maintenance forced: {res.maintain_s:.1f} s on {res.maintained_by}", t0)
    if setup.storage is None:  # a file's compaction runs on its interval: wait for it
        wait_rollups(setup, time.time(), 2 * args.maintain_s + 60)
        step(setup, "rollups complete", t0)
    res.queries, res.plans = run_queries(setup, end_ns, args.repeat)
    step(setup, "queries", t0)
    res.conflicts = sum(n.log_count("failed to commit ducklake transaction", "conflict") for n in setup.nodes)
    res.errors_logged = sum(n.log_count(" error ", "traceback") for n in setup.nodes)
    return res


# -- the soak: files per table over minutes ---------------------------------------------------


def soak(setup: Setup, args: argparse.Namespace, blobs: list[bytes], ext_dir: Path) -> None:
    counter = FileCounter(setup, ext_dir)
    end = time.monotonic() + args.minutes * 60
    print(f"\n{setup.name}: pushing for {args.minutes:g} min, files counted every {args.sample_s:g} s", flush=True)
    print(
        "| minute | profiles acked | live files (worst table) | series: files (delete files) | files stored | maintenance |",
        flush=True,
    )
    print("|---|---|---|---|---|---|", flush=True)
    acked = 0
    next_force = time.monotonic() + args.force_every if args.force_every else math.inf
    t0 = time.monotonic()
    jobs = live_pushes(args.targets, blobs)
    try:
        while time.monotonic() < end:
            span = min(args.sample_s, end - time.monotonic())
            pushed = asyncio.run(push_all(setup.urls, jobs, args.clients, span))
            acked += len(pushed.acks)
            note = ""
            if time.monotonic() >= next_force:
                took, who = maintain(setup)
                note = f"forced on {who}: {took:.1f} s"
                next_force = time.monotonic() + args.force_every
            files = counter.count()
            print(
                f"| {(time.monotonic() - t0) / 60:.1f} | {acked:,} | {files.top()} | {files.live.get('series', 0)} "
                f"({files.deletes.get('series', 0)}) | {sum(files.stored.values())} "
                f"| {note} |",
                flush=True,
            )
    finally:
        counter.close()


# -- report -----------------------------------------------------------------------------------


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x * 1e3:,.0f}" if x >= 0.1 else f"{x * 1e3:.1f}"


def freshness(delays: list[float], missed: int) -> str:
    out = f"{quantile(delays, 0.5):.2f} / {quantile(delays, 0.99):.2f} / {max(delays, default=math.nan):.2f}"
    return out + f" (n={len(delays)}{f', {missed} never' if missed else ''})"


def report(results: list[Result], args: argparse.Namespace, load0: tuple[float, float, float]) -> None:
    load = os.getloadavg()
    print(
        f"\nprofstore cluster bench: {args.targets} targets ({2 * args.targets} series) x 12 profiles over 24 h, then "
        f"{args.clients} clients for {args.seconds:g} s per configuration "
        f"then {args.fresh_rate:g} profiles/s for {args.fresh_seconds:g} s (freshness); {os.cpu_count()} cores, "
        f"load {load0[0]:.1f} at the start and {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at the end\n"
    )
    head = ["", "nodes", "backfill/s", "profiles/s", "CPU ms/profile", "PG CPU ms/profile", "profiles/batch"]
    head += ["commit ms (mean)", "batch p50/p99 ms", "backlog drained s"]
    head += ["fresh p50/p99/max s"]
    head += ["non-200", "files before → after"]
    rows = [head]
    for r in results:
        n = max(len(r.pushed.acks), 1)
        statuses = r.pushed.statuses + r.fresh_pushed.statuses
        rows.append(
            [
                r.name, str(r.nodes), f"{r.backfill_per_s:,.0f}" + "".join(f" ({v} {k} resent)" for k, v in r.backfill_refused.items()), f"{r.per_s:,.0f}", f"{r.cpu_ms:.2f}",
                "-" if math.isnan(r.pg_cpu_s) else f"{r.pg_cpu_s / n * 1e3:.2f}",
                f"{n / r.batches:.1f}" if r.batches else "-",
                ms(r.commit_s / r.batches) if r.batches else "-",
                f"{ms(r.batch_p50)} / {ms(r.batch_p99)}",
                f"{r.drain_s:.1f}",
                freshness(r.fresh, r.fresh_missed),
                ", ".join(f"{k}: {v}" for k, v in statuses.items()) or "0",
                f"{r.before.top()} → {r.after.top()}",
            ]
        )  # fmt: skip
    table(rows)

    print("\nqueries after maintenance, p50 / p95 ms (each query: 1 untimed, then", args.repeat, "timed)")
    names = list(results[0].queries) if results else []
    rows = [["", *names]]
    for r in results:
        rows.append(
            [r.name, *(f"{ms(quantile(r.queries[q], 0.5))} / {ms(quantile(r.queries[q], 0.95))}" for q in names)]
        )
    table(rows)
    plans = {q: {r.plans[q] for r in results if r.plans.get(q, "?") != "?"} for q in names}
    print(
        "plans (X-Profstore-Resolution): "
        + "; ".join(f"{q} {'/'.join(sorted(v))}" + (" (differ)" if len(v) > 1 else "") for q, v in plans.items() if v)
    )

    print(
        "\nfiles per table, data and delete files live in the catalog before → after maintenance "
        "(Parquet files stored in the data path after)"
    )
    for r in results:
        if not r.after.live:
            continue
        cells = [
            f"{t} {r.before.live.get(t, 0)}→{r.after.live[t]}"
            + (f" of which {r.after.deletes[t]} delete" if r.after.deletes.get(t) else "")
            + f" ({r.after.stored.get(t, 0)})"
            for t in sorted(r.after.live)
            if r.before.live.get(t, 0) or r.after.live[t]
        ]
        print(f"- {r.name} (maintenance {r.maintain_s:.1f} s on {r.maintained_by}): " + ", ".join(cells))
    for r in results:
        if r.conflicts or r.errors_logged:
            print(
                f"- {r.name}: node logs: {r.conflicts} failed DuckLake commits (conflicts), "
                f"{r.errors_logged} errors/tracebacks"
            )

    base = next((r for r in results if r.name == "duckdb"), None)
    if base is None:
        return
    print("\nissue 19 targets, against duckdb:")
    for r in results:
        if r is base:
            continue
        cpu = r.cpu_ms / base.cpu_ms
        worst = max(
            (quantile(r.queries[q], 0.5) / quantile(base.queries[q], 0.5), q) for q in names if q in base.queries
        )
        p99 = quantile(r.fresh, 0.99)
        print(
            f"- {r.name}: CPU per profile {cpu:.2f}x ({'ok' if cpu <= CPU_TARGET else 'over'} {CPU_TARGET}x); "
            f"query p50 worst {worst[0]:.2f}x ({worst[1]}; {'ok' if worst[0] <= QUERY_TARGET else 'over'} "
            f"{QUERY_TARGET}x); freshness p99 {p99:.2f} s ({'ok' if p99 <= FRESH_TARGET_S else 'over'} "
            f"{FRESH_TARGET_S:g} s); live files after maintenance {sum(r.after.live.values())}"
        )


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    ap.add_argument("--targets", type=int, default=100, help="services in the fleet, 2 series each (default 100)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent pushing clients (default 16)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the ingest phase (default 30)")
    ap.add_argument("--fresh-rate", type=float, default=40.0, help="steady load of the freshness phase (default 40/s)")
    ap.add_argument("--fresh-seconds", type=float, default=20.0, help="length of the freshness phase (default 20)")
    ap.add_argument("--repeat", type=int, default=5, help="timed requests per query and range (default 5)")
    ap.add_argument(
        "--maintain-s", type=float, default=60.0, help="the nodes' compaction_interval_s (default 60, as shipped)"
    )
    ap.add_argument("--linger-s", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--minutes", type=float, default=0.0, help="the file-count soak for this many minutes instead")
    ap.add_argument("--sample-s", type=float, default=30.0, help="soak: count files this often (default 30)")
    ap.add_argument("--force-every", type=float, default=0.0, help="soak: force maintenance this often (0: never)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (node logs, data)")
    args = ap.parse_args()
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := set(names) - set(CONFIGS):
        ap.error(f"unknown configuration(s) {sorted(unknown)}: pick from {', '.join(CONFIGS)}")
    if args.minutes:
        names = [n for n in names if n != "duckdb"]

    blobs = bodies(256)
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ext_dir = work / "ext"
    results: list[Result] = []
    try:
        with contextlib.ExitStack() as stack:
            lakes = [n for n in names if n != "duckdb"]
            pg = stack.enter_context(postgres_server()) if lakes else None
            s3 = stack.enter_context(s3_server(work / "moto.log")) if "lake-s3" in names else None
            for name in names:
                t0 = time.monotonic()
                try:
                    with started(name, work, pg, s3, args.maintain_s) as setup:
                        step(setup, f"{len(setup.nodes)} node(s) healthy", t0)
                        if args.minutes:
                            soak(setup, args, blobs, ext_dir)
                            continue
                        r = measure(setup, args, blobs, pg, ext_dir)
                        results.append(r)
                        print(
                            f"{name}: {r.per_s:,.0f} profiles/s, {r.cpu_ms:.2f} ms CPU/profile, "
                            f"fresh p99 {quantile(r.fresh, 0.99):.2f} s",
                            flush=True,
                        )
                except (RuntimeError, httpx.HTTPError, OSError) as exc:  # the other configurations still run
                    print(f"{name}: FAILED: {exc!r}", flush=True)
        if results:
            report(results, args, load0)
    finally:
        if args.keep:
            print(f"\nkept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
