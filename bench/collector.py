"""`make bench-collector`: the collector scraping a simulated fleet, as ``profstore serve`` runs it.

``python -m bench.collector --targets 200 --duration 75`` starts :mod:`bench.targets_sim` (N
simulated Go services on loopback, in ``--sim-procs`` processes), writes a config with one job whose static
targets are those N ports (every default profile type, 15 s), starts ``profstore serve`` on it
with a fresh data dir, lets it run for ``--duration`` seconds after it is healthy, and reports:

- runs due (per target x type, every scheduled time up to the end) against the requests the
  targets received for them (ground truth from the simulator's request log) and the scrapes
  profstore completed, failed (by error kind) and skipped; a due run without a request at its
  target within its interval is a dropped scrape;
- scrapes/s sustained (after the first interval, when every target x type has started);
- scrape lateness p50/p99 from ``profstore_scrape_lateness_seconds`` (interpolated within buckets
  as Prometheus' ``histogram_quantile`` does), next to the exact lateness the targets saw
  (request arrival minus scheduled time; the schedule's phase comes from ``next_run``);
- CPU and memory of the profstore process (``/proc/<pid>/stat`` and ``status`` every second),
  and of the simulator, so it is visible that it is not the bottleneck; profstore's CPU per scrape
  (process CPU over the steady window / scrapes completed in it: run with ``--query-clients 0``
  for the collector's own cost, since query clients' CPU is in the same process);
- profiles stored and the data dir's size;
- ``--query-clients`` (default 20) clients querying from the second interval on (flame graphs, top, time series,
  catalogue, the Connect querier Grafana calls), each sending its next query when the last one
  answered: queries answered, p50/p95/p99/max latency, and any 5xx.

Everything runs in a temporary directory that is removed at the end (``--keep`` keeps it, with
the server's log, the config and the simulator's request log), also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
JOB = "bench"
# Endpoint of the simulator's request log -> pprof_config name profstore scrapes it as.
ENDPOINT_PROFILE = {
    "profile": "process_cpu",
    "allocs": "memory",
    "goroutine": "goroutine",
    "block": "block",
    "mutex": "mutex",
}
PROFILES = list(ENDPOINT_PROFILE.values())
CUMULATIVE = ("memory", "block", "mutex")  # the first scrape of each only sets the delta baseline
# One sample type per stored profile, to count profiles through /api/v1/profiles.
LIST_TYPES = {
    "process_cpu": "process_cpu:samples:count:cpu:nanoseconds",
    "memory": "memory:alloc_space:bytes:space:bytes",
    "goroutine": "goroutine:goroutine:count:goroutine:count",
    "block": "block:contentions:count:contentions:count",
    "mutex": "mutex:contentions:count:contentions:count",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# What the query clients ask, in turn: what a dashboard and an engineer ask during an incident.
QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/v1/flamegraph", {"query": f'process_cpu:cpu:nanoseconds:cpu:nanoseconds{{job="{JOB}"}}', "from": "now-5m"}),
    ("GET", "/api/v1/top", {"query": f'memory:inuse_space:bytes:space:bytes{{job="{JOB}"}}', "from": "now-5m", "limit": 20}),
    ("GET", "/api/v1/timeseries", {"query": f'goroutine:goroutine:count:goroutine:count{{job="{JOB}"}}', "from": "now-15m", "step": 15}),
    ("GET", "/api/v1/profile-types", {}),
    ("GET", "/api/v1/labels/instance/values", {}),
    ("POST", "/querier.v1.QuerierService/SelectMergeStacktraces", {}),
]  # fmt: skip


class QueryLoad:
    """Closed-loop query clients: each sends its next query when the previous one is answered."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.results: list[tuple[float, int, str]] = []  # (seconds, status, path); status 0 = no answer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> QueryLoad:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            n = i
            while not self._stop.is_set():
                method, path, params = QUERIES[n % len(QUERIES)]
                n += 1
                t0 = time.perf_counter()
                try:
                    if method == "GET":
                        r = client.get(path, params=params)
                    else:
                        now_ms = int(time.time() * 1000)
                        body = {"profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                                "labelSelector": f'{{job="{JOB}"}}', "start": now_ms - 300_000, "end": now_ms}  # fmt: skip
                        r = client.post(path, json=body)
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                with self._lock:
                    self.results.append((time.perf_counter() - t0, status, path))


# -- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_usage(pid: int) -> tuple[float, int, int] | None:
    """(CPU seconds user+system, VmRSS kB, VmHWM kB) of a live process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on; comm may hold spaces
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (14th and 15th)
    mem = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            mem[key] = int(value.split()[0])
    return cpu, mem.get("VmRSS", 0), mem.get("VmHWM", 0)


@dataclass
class Sampler:
    """Samples CPU time and RSS of some processes every ``period`` seconds in a thread."""

    pids: dict[str, int]
    period: float = 1.0
    samples: dict[str, list[tuple[float, float, int, int]]] = field(default_factory=lambda: defaultdict(list))
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="sampler")
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            self.take()
            if self._stop.wait(self.period):
                return

    def take(self) -> None:
        now = time.time()
        for name, pid in self.pids.items():
            u = proc_usage(pid)
            if u is not None:
                self.samples[name].append((now, *u))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def at(self, name: str, t: float) -> tuple[float, float, int, int]:
        """The last sample taken at or before ``t`` (else the first one)."""
        got = self.samples[name]
        before = [s for s in got if s[0] <= t]
        return before[-1] if before else got[0]


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user+system) of each live thread of ``pid``, by native thread id."""
    out: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by native id, from ``py-spy dump`` when it is installed (else empty).

    The OS name of every thread is "python" (3.11 does not set it): only py-spy can say which
    thread is the event loop, a scrape worker or the writer.
    """
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = ""
    for _ in range(3):  # a dump can fail while a thread starts or ends (hundreds of them): try again
        try:
            got = subprocess.run(
                [spy, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return {}
        if got.returncode == 0:
            out = got.stdout
            break
    names = {}
    for line in out.splitlines():
        m = re.match(r'Thread (?:0x[0-9A-Fa-f]+|\d+) \((?:active|idle)[^)]*\): "([^"]*)"', line)
        tid = re.search(r"\(native id (\d+)\)|^Thread (\d+) ", line)
        if m and tid:
            names[int(tid.group(1) or tid.group(2))] = m.group(1)
    return names


# What each of profstore's threads does in a scrape, for the CPU breakdown.
THREAD_ROLES = {
    "MainThread": "event loop: scheduling, HTTP fetch, health, API",
    "profstore-scrape": "scrape workers: decode, limits, delta, ingest (stage), waiting on the writer",
    "profstore-writer": "writer: DuckDB append and commit",
}


def stop_process(proc: subprocess.Popen[Any] | None, sig: int, wait_s: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Simulator:
    """``bench.targets_sim`` as ``procs`` child processes sharing the targets, so that one
    simulator's event loop is not what limits a 1,000-target fleet; their CPU is summed apart."""

    def __init__(self, work: Path, targets: int, latency_ms: str, procs: int = 1) -> None:
        procs = max(1, min(procs, targets))
        self.logs = [work / f"requests.{i}.tsv" for i in range(procs)]
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(procs):
            n = targets // procs + (1 if i < targets % procs else 0)
            cmd = [sys.executable, "-m", "bench.targets_sim", "--targets", str(n), "--latency-ms", latency_ms,
                   "--seed", str(i + 1), "--log", str(self.logs[i])]  # fmt: skip
            with (work / f"targets_sim.{i}.log").open("wb") as err:
                self.procs.append(
                    subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=REPO, start_new_session=True)
                )
        self.ports: list[int] = []
        for i, proc in enumerate(self.procs):
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 120)
            line = proc.stdout.readline() if ready else b""
            if not line:
                self.kill()
                raise RuntimeError(
                    f"target simulator {i} did not start: {(work / f'targets_sim.{i}.log').read_text()[-2000:]}"
                )
            self.ports += json.loads(line)["ports"]
        self.pids = {f"sim{i}": p.pid for i, p in enumerate(self.procs)}

    def kill(self) -> None:
        for proc in self.procs:
            stop_process(proc, signal.SIGTERM, 30)

    def finish(self) -> dict[str, Any]:
        """Stop them; each writes its request log and prints its own CPU time (summed here)."""
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        usage: dict[str, Any] = {"cpu_s": 0.0, "requests": 0, "procs": len(self.procs)}
        for proc in self.procs:
            out, _ = proc.communicate(timeout=60)
            lines = out.decode().strip().splitlines()
            got = json.loads(lines[-1]) if lines else {}
            usage["cpu_s"] += got.get("cpu_s", math.nan)
            usage["requests"] += got.get("requests", 0)
        return usage

    def requests(self) -> list[tuple[int, str, float, float, int, int]]:
        rows = []
        for log in self.logs:
            with log.open() as fh:
                next(fh)
                for line in fh:
                    port, kind, t0, t1, status, size = line.rstrip("\n").split("\t")
                    rows.append((int(port), kind, float(t0), float(t1), int(status), int(size)))
        return rows


class Profstore:
    """``profstore serve --config FILE`` as a child process on a free loopback port."""

    def __init__(self, work: Path, config: Path, repo: Path = REPO) -> None:
        self.data_dir = work / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "profstore.log"
        python = repo / ".venv" / "bin" / "python" if repo != REPO else Path(sys.executable)
        cmd = [
            str(python), "-m", "service.cli", "serve", "--config", str(config),
            "--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.spawned = time.time()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, cwd=repo, start_new_session=True,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )  # fmt: skip
        self.pid = self.proc.pid
        self.healthy = 0.0

    def wait_healthy(self, timeout_s: float = 120) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"profstore serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.healthy = time.time()
                    return self.healthy
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"profstore serve did not become healthy: {self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def get(self, path: str, params: dict[str, Any] | None = None, timeout_s: float = 60) -> httpx.Response:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=timeout_s)
        r.raise_for_status()
        return r


# -- metrics ----------------------------------------------------------------------------------


Samples = list[tuple[str, dict[str, str], float]]


@dataclass(frozen=True)
class Poll:
    at: float  # when the answer arrived
    took: float  # how long GET /metrics took
    metrics: Samples


def parse_metrics(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), float(s.value)) for fam in text_string_to_metric_families(text) for s in fam.samples
    ]


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for n, lb, v in samples if n == name and all(lb.get(k) == m for k, m in match.items()))


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for n, lb, v in samples:
        if n == name:
            out[lb.get(label, "")] += v
    return dict(out)


def buckets(samples: Samples, name: str, **match: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram, summed over the label sets that match."""
    acc: dict[float, float] = defaultdict(float)
    for n, lb, v in samples:
        if n == f"{name}_bucket" and all(lb.get(k) == m for k, m in match.items()):
            acc[float(lb["le"])] += v
    return sorted(acc.items())


def histogram_quantile(q: float, bs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Prometheus' histogram_quantile: (estimate, lower and upper bound of the bucket it falls in)."""
    if not bs or bs[-1][1] == 0:
        return math.nan, math.nan, math.nan
    rank = q * bs[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bs:
        if count >= rank:
            if math.isinf(upper):  # beyond the last finite bucket: its bound is all that is known
                return lower, lower, upper
            if count == below:
                return upper, lower, upper
            return lower + (upper - lower) * (rank - below) / (count - below), lower, upper
        lower, below = upper, count
    return math.nan, math.nan, math.nan


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    pos = q * (len(s) - 1)
    i = int(pos)
    return s[i] if i + 1 >= len(s) else s[i] + (s[i + 1] - s[i]) * (pos - i)


# -- schedule reconstruction ------------------------------------------------------------------


@dataclass
class KeyRuns:
    profile: str
    start: float  # first scheduled time
    due: int  # scheduled times up to the end
    requests: dict[int, list[float]]  # slot -> arrival times at the target (slot 0 = start)

    def dropped(self) -> int:
        return sum(1 for j in range(self.due) if j not in self.requests)

    def doubled(self) -> int:
        return sum(len(v) - 1 for j, v in self.requests.items() if j < self.due and len(v) > 1)


def schedules(
    targets: list[dict[str, Any]],
    requests: list[tuple[int, str, float, float, int, int]],
    interval: float,
    end: float,
) -> tuple[list[KeyRuns], float]:
    """Each target x type's runs: the scheduled times (phase from ``next_run``) and the requests per slot.

    The first scheduled time is the slot a key's first request falls in; the configuration time
    is the earliest of those over all keys, and a key whose first slot(s) got no request starts
    at its first slot after that.
    """
    arrivals: dict[tuple[int, str], list[float]] = defaultdict(list)
    for port, kind, t0, _t1, _status, _size in requests:
        if kind in ENDPOINT_PROFILE:
            arrivals[(port, ENDPOINT_PROFILE[kind])].append(t0)
    phases: dict[str, float] = {}
    firsts: dict[str, float] = {}
    for t in targets:
        key = f"{t['instance']}/{t['profile']}"
        nxt = datetime.fromisoformat(t["next_run"]).timestamp() if t.get("next_run") else math.nan
        phases[key] = nxt
        got = arrivals.get((int(t["instance"].rsplit(":", 1)[1]), t["profile"]))
        if got and not math.isnan(nxt):
            r1 = min(got)
            firsts[key] = r1 - ((r1 - nxt) % interval)
    configured = min(firsts.values()) if firsts else math.nan
    out = []
    for t in targets:
        key = f"{t['instance']}/{t['profile']}"
        nxt = phases[key]
        # The first slot at or after configuration (nan when unknown).
        start = configured + (nxt - configured) % interval
        due = int((end - start) // interval) + 1 if not math.isnan(start) and end >= start else 0
        slots: dict[int, list[float]] = defaultdict(list)
        for r in arrivals.get((int(t["instance"].rsplit(":", 1)[1]), t["profile"]), []):
            if not math.isnan(start):
                slots[int((r - start) // interval)].append(r)
        out.append(KeyRuns(t["profile"], start, due, dict(slots)))
    return out, configured


# -- the run ----------------------------------------------------------------------------------


def write_config(path: Path, ports: list[int], interval: int) -> None:
    config = {
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": f"{interval}s",
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in ports]}],
            }
        ]
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    ap = argparse.ArgumentParser(description="profstore's collector scraping a simulated fleet of Go services")
    ap.add_argument("--targets", type=int, default=200, help="simulated services (ports); default 200")
    ap.add_argument("--duration", type=float, default=75, help="seconds to run after profstore is healthy")
    ap.add_argument("--interval", type=int, default=15, help="scrape_interval in seconds; default 15")
    ap.add_argument("--latency-ms", default="5,50", help="latency of the snapshot endpoints, uniform LO,HI ms")
    ap.add_argument("--grace", type=float, default=5, help="seconds a run due before the end may take to arrive")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, config, request log)")
    ap.add_argument(
        "--query-clients", type=int, default=20,
        help="concurrent query clients; default 20 (0: none, to measure the collector's CPU per scrape alone)",
    )  # fmt: skip
    ap.add_argument("--sim-procs", type=int, default=1, help="processes the simulated targets are spread over")
    ap.add_argument(
        "--serve-repo", type=Path, default=REPO,
        help="run profstore serve from this checkout (its .venv): a 'before' to compare with in the same minutes",
    )  # fmt: skip
    args = ap.parse_args()
    # Also SIGINT: a shell starting the bench in the background leaves SIGINT ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)

    work = Path(tempfile.mkdtemp(prefix="profstore-bench-collector-"))
    sim: Simulator | None = None
    srv: Profstore | None = None
    sampler: Sampler | None = None
    load: QueryLoad | None = None
    try:
        t = time.perf_counter()
        sim = Simulator(work, args.targets, args.latency_ms, args.sim_procs)
        print(f"simulator: {len(sim.ports)} targets up in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        config = work / "profstore.yaml"
        write_config(config, sim.ports, args.interval)
        srv = Profstore(work, config, args.serve_repo.resolve())
        sampler = Sampler({"profstore": srv.pid, **sim.pids}).start()
        healthy = srv.wait_healthy()
        print(f"profstore: healthy after {healthy - srv.spawned:.1f} s; running {args.duration:g} s", file=sys.stderr)
        end = healthy + args.duration
        # The schedule's phases (next_run of each target x type), read while profstore is still idle:
        # an overloaded one may not answer this in time at the end.
        got = srv.get("/api/v1/targets")
        (work / "targets_start.json").write_text(got.text)
        schedule = got.json()["targets"]

        # One /metrics read per interval, for the per-interval rates and memory growth.
        polls: list[Poll] = []
        per_thread: list[dict[int, float]] = []  # CPU s of each profstore thread, at each poll
        k = 1
        while True:
            at = min(healthy + k * args.interval, end)
            time.sleep(max(0.0, at - time.time()))
            t = time.time()
            text = srv.get("/metrics", timeout_s=120).text
            polls.append(Poll(time.time(), time.time() - t, parse_metrics(text)))
            m = polls[-1].metrics
            (work / "metrics.txt").write_text(text)
            sampler.take()
            per_thread.append(thread_cpu(srv.pid))
            cpu_s, rss, _ = sampler.at("profstore", time.time())[1:]
            done = total(m, "profstore_scrapes_total")
            skipped = total(m, "profstore_scrapes_skipped_total")
            print(
                f"  +{at - healthy:4.0f} s: {done:6.0f} scrapes, {skipped:.0f} skipped, "
                f"profstore {cpu_s:.1f} CPU s, RSS {rss / 1024:.0f} MiB",
                file=sys.stderr,
            )
            if at >= end:
                break
            if load is None and args.query_clients:  # from the second interval on, when every type has been stored once
                load = QueryLoad(srv.url, args.query_clients).start()
            k += 1

        names = thread_names(srv.pid)
        # The end: the query clients stop, then targets and metrics, the stragglers' grace, the fleet.
        if load is not None:
            load.stop()
        t = time.perf_counter()
        targets: list[dict[str, Any]] | None = None
        try:
            got = srv.get("/api/v1/targets", timeout_s=120)
            (work / "targets.json").write_text(got.text)
            targets = got.json()["targets"]
        except httpx.TimeoutException:
            print("GET /api/v1/targets timed out after 120 s; reporting without it", file=sys.stderr)
        targets_s = time.perf_counter() - t
        final = polls[-1].metrics
        time.sleep(args.grace)
        sim_usage = sim.finish()
        requests = sim.requests()
        time.sleep(1)  # scrapes cut off by the fleet's end finish failing; nothing new is stored after
        listed = {
            p: len(
                srv.get(
                    "/api/v1/profiles", {"query": f'{q}{{job="{JOB}"}}', "limit": 100_000, "from": "now-1d"}
                ).json()["profiles"]
            )
            for p, q in LIST_TYPES.items()
        }
        after = parse_metrics(srv.get("/metrics").text)
        sampler.take()
        sampler.stop()
        stop_process(srv.proc, signal.SIGTERM, 90)
        data_bytes = dir_bytes(srv.data_dir)

        report(
            args, srv, sampler, healthy, end, polls, final, after, schedule, targets, targets_s, requests, sim_usage,
            listed, data_bytes, load.results if load is not None else [], (per_thread, names),
        )  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        sys.exit(130)
    except Exception:
        if srv is not None:
            print(f"profstore log (tail):\n{srv.tail()}", file=sys.stderr)
        raise
    finally:
        if sampler is not None:
            sampler.stop()
        if load is not None:
            load.stop()
        if sim is not None:
            sim.kill()
        if srv is not None:
            stop_process(srv.proc, signal.SIGTERM, 90)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    srv: Profstore,
    sampler: Sampler,
    healthy: float,
    end: float,
    polls: list[Poll],
    final: Samples,
    after: Samples,
    schedule: list[dict[str, Any]],
    targets: list[dict[str, Any]] | None,
    targets_s: float,
    requests: list[tuple[int, str, float, float, int, int]],
    sim_usage: dict[str, Any],
    listed: dict[str, int],
    data_bytes: int,
    queries: list[tuple[float, int, str]],
    threads: tuple[list[dict[int, float]], dict[int, str]],
) -> None:
    interval = float(args.interval)
    keys = len(schedule)
    runs, configured = schedules(schedule, requests, interval, end)
    due = sum(r.due for r in runs)
    dropped = sum(r.dropped() for r in runs)
    doubled = sum(r.doubled() for r in runs)
    outcomes = by_label(final, "profstore_scrapes_total", "outcome")
    ok = outcomes.pop("ok", 0.0)
    failed = sum(outcomes.values())
    skipped = total(final, "profstore_scrapes_skipped_total")
    completed = ok + failed
    # profstore's own account: every due run was completed, skipped, or is still running.
    unfinished = due - completed - skipped

    # Lateness: the histogram (interpolated in its buckets) and the exact one the targets saw.
    lat_b = buckets(final, "profstore_scrape_lateness_seconds")
    p50, p50_lo, p50_hi = histogram_quantile(0.5, lat_b)
    p99, p99_lo, p99_hi = histogram_quantile(0.99, lat_b)
    lat_n = lat_b[-1][1] if lat_b else 0
    seen = [
        r - (k.start + j * interval) for k in runs for j, rs in k.requests.items() if j < k.due for r in rs
    ]  # fmt: skip
    worst = max(seen) if seen else math.nan

    # Sustained rate: completed scrapes per second from the end of the first interval on.
    t1, m1, t2, m2 = polls[0].at, polls[0].metrics, polls[-1].at, polls[-1].metrics
    steady = (total(m2, "profstore_scrapes_total") - total(m1, "profstore_scrapes_total")) / (t2 - t1)
    expected_rate = keys / interval

    # CPU and memory of profstore; the simulator's CPU alongside.
    s0, s1, sN = sampler.at("profstore", healthy), sampler.at("profstore", t1), sampler.at("profstore", end)
    cpu_run = (sN[1] - s0[1]) / (sN[0] - s0[0])
    cpu_steady = (sN[1] - s1[1]) / (sN[0] - s1[0])
    last = sampler.samples["profstore"][-1]
    peak_rss = max(s[2] for s in sampler.samples["profstore"])
    hwm = max(s[3] for s in sampler.samples["profstore"])
    sim_names = [n for n in sampler.samples if n.startswith("sim")]
    sim_cpu = sum(
        (sampler.at(n, end)[1] - sampler.at(n, healthy)[1])
        / max(sampler.at(n, end)[0] - sampler.at(n, healthy)[0], 1e-9)
        for n in sim_names
    )
    # CPU per scrape: profstore's process CPU between the first and the last /metrics poll (every type
    # has started by the first), divided by the scrapes it completed in that window.
    c1, c2 = sampler.at("profstore", t1), sampler.at("profstore", t2)
    scrapes_window = total(m2, "profstore_scrapes_total") - total(m1, "profstore_scrapes_total")
    cpu_per_scrape = (c2[1] - c1[1]) / scrapes_window if scrapes_window else math.nan
    s1_, s2_ = [sum(sampler.at(n, t)[1] for n in sim_names) for t in (t1, t2)]
    sim_per_scrape = (s2_ - s1_) / scrapes_window if scrapes_window else math.nan
    cores = os.cpu_count() or 1

    stored = total(after, "profstore_ingested_profiles_total", source="scrape")
    stored_at_end = total(final, "profstore_ingested_profiles_total", source="scrape")
    baselines = (
        sum(1 for t in targets if t["profile"] in CUMULATIVE and t["scrapes"] > t["failures"]) if targets else None
    )
    db_gauge = total(final, "profstore_database_bytes")
    http = defaultdict(list)
    for _port, kind, t0, t1_, status, _size in requests:
        if status == 200 and kind in ENDPOINT_PROFILE:
            http[ENDPOINT_PROFILE[kind]].append(t1_ - t0)
    scraped_bytes = sum(size for *_, status, size in requests if status == 200)

    out = []
    out.append(
        f"machine: {cores} cores, {platform.machine()}, Python {platform.python_version()}; "
        f"{args.targets} targets x {len(PROFILES)} types = {keys} target x type at {interval:g} s, "
        f"{args.duration:g} s after healthy (profstore started in {healthy - srv.spawned:.1f} s)"
    )
    out.append("")
    out.append(row(["what", "value", "note"]))
    out.append(row(["---"] * 3))
    out.append(row(["targets x types", f"{args.targets} x {len(PROFILES)} = {keys}", ", ".join(PROFILES)]))
    out.append(
        row(
            [
                "runs due",
                f"{due:,}",
                f"scheduled times up to the end; expected {expected_rate:.1f} scrapes/s once all have started",
            ]
        )
    )
    kinds = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]) if v)
    out.append(
        row(
            [
                "scrapes completed",
                f"{completed:,.0f}: {ok:,.0f} ok, {failed:,.0f} failed",
                f"failed by kind: {kinds}" if kinds else "no failures",
            ]
        )
    )
    out.append(
        row(
            [
                "unfinished at the end",
                f"{unfinished:,.0f}",
                "due - completed - skipped: runs still in flight (a CPU scrape takes 14 s), or lost; "
                f"GET /metrics took up to {max(p.took for p in polls) * 1e3:,.0f} ms",
            ]
        )
    )
    out.append(
        row(
            [
                "scrapes/s sustained",
                f"{steady:.1f}",
                f"from +{t1 - healthy:.0f} s to +{t2 - healthy:.0f} s; {steady / expected_rate:.1%} of {expected_rate:.1f}",
            ]
        )
    )
    out.append(
        row(
            [
                "dropped scrapes",
                f"{dropped:,} of {due:,}",
                f"due runs without a request at the target within their interval; profstore skipped {skipped:,.0f}"
                + (f"; {doubled} slot(s) got two requests" if doubled else ""),
            ]
        )
    )
    out.append(
        row(
            [
                "scrape lateness p50 / p99",
                f"{p50 * 1e3:.1f} ms / {p99 * 1e3:.1f} ms",
                f"histogram ({lat_n:,.0f} runs), interpolated in buckets {p50_lo * 1e3:g}-{p50_hi * 1e3:g} ms "
                f"and {p99_lo * 1e3:g}-{p99_hi * 1e3:g} ms (the histogram's own buckets)",
            ]
        )
    )
    out.append(
        row(
            [
                "lateness at the targets p50 / p99 / max",
                f"{quantile(seen, 0.5) * 1e3:.1f} / {quantile(seen, 0.99) * 1e3:.1f} / {worst * 1e3:.0f} ms",
                f"request arrival - scheduled time, exact, {len(seen):,} requests",
            ]
        )
    )
    out.append(
        row(
            [
                "profstore CPU",
                f"{cpu_run:.0%} of a core, {sN[1]:.1f} CPU s in all",
                f"{cpu_steady:.0%} after the first interval; {sN[1] - s0[1]:.1f} CPU s while scraping, "
                f"{s0[1]:.1f} s to start ({cores} cores)",
            ]
        )
    )
    out.append(
        row(
            [
                "profstore CPU per scrape",
                f"{cpu_per_scrape * 1e3:.2f} ms",
                f"process CPU {c2[1] - c1[1]:.1f} s / {scrapes_window:,.0f} scrapes completed from +{t1 - healthy:.0f} s "
                f"to +{t2 - healthy:.0f} s, with {args.query_clients} query clients"
                + ("" if args.query_clients == 0 else " (their CPU is in it: measure with --query-clients 0)"),
            ]
        )
    )
    out.append(
        row(
            [
                "profstore RSS",
                f"peak {max(peak_rss, hwm) / 1024:.0f} MiB",
                f"{s0[2] / 1024:.0f} MiB when healthy, {s1[2] / 1024:.0f} MiB after one interval, "
                f"{last[2] / 1024:.0f} MiB at the end (VmHWM {hwm / 1024:.0f} MiB)",
            ]
        )
    )
    out.append(
        row(
            [
                "profiles stored",
                f"{stored:,.0f}",
                f"after the fleet stopped ({stored_at_end:,.0f} at the end of the window"
                + (f": ok scrapes {ok:,.0f} - {baselines} delta baselines" if baselines is not None else "")
                + f"); /api/v1/profiles lists {sum(listed.values()):,}",
            ]
        )
    )
    out.append(
        row(
            [
                "data dir",
                f"{data_bytes / 1e6:.1f} MB",
                f"after shutdown; {db_gauge / 1e6:.1f} MB (file + WAL) at the end of the window; "
                f"{scraped_bytes / 1e6:.1f} MB scraped (gzipped)",
            ]
        )
    )
    out.append(
        row(
            [
                "target simulator",
                f"{sim_cpu:.0%} of a core",
                f"{len(sim_names)} process(es), {sim_per_scrape * 1e3:.2f} ms CPU per scrape (not profstore's); "
                f"{sim_usage.get('requests', 0):,} requests, {sim_usage.get('cpu_s', math.nan):.1f} CPU s in all",
            ]
        )
    )
    answered = [s for s, status, _ in queries if status == 200]
    errors5 = sum(1 for _, status, _ in queries if status >= 500)
    failed: dict[str, int] = defaultdict(int)
    for _, status, path in queries:
        if status != 200 and status < 500:
            failed[f"{status or 'no answer'} {path}"] += 1
    others = ", ".join(f"{k} x{n}" for k, n in sorted(failed.items())) or "none"
    out.append(
        row(
            [
                f"queries ({args.query_clients} clients)",
                f"{len(answered):,} answered, p50 {quantile(answered, 0.5) * 1e3:,.0f} ms, "
                f"p95 {quantile(answered, 0.95) * 1e3:,.0f} ms, p99 {quantile(answered, 0.99) * 1e3:,.0f} ms, "
                f"max {max(answered, default=math.nan) * 1e3:,.0f} ms",
                f"5xx: {errors5}; other failures: {others}; "
                f"{len(QUERIES)} kinds in turn (flame graph, top, time series, catalogue, Connect merge)",
            ]
        )
    )
    out.append(
        row(
            [
                "GET /api/v1/targets",
                f"{targets_s * 1e3:,.0f} ms" if targets is not None else f"no answer in {targets_s:.0f} s",
                f"{keys} entries, at the end of the window (under load)",
            ]
        )
    )
    out.append("")

    # Per query kind: which answers the clients waited for (the queue in front of them included).
    if queries:
        out.append(row(["query", "answered", "p50", "p95", "p99"]))
        out.append(row(["---"] * 5))
        for _, path, _ in QUERIES:
            took = [s for s, status, p in queries if p == path and status == 200]
            cells = [f"{quantile(took, q) * 1e3:,.0f} ms" for q in (0.5, 0.95, 0.99)]
            out.append(row([path, f"{len(took):,}", *cells]))
        out.append("")

    # Where profstore's CPU went, by thread role, over the same window as the CPU per scrape.
    per_thread, names = threads
    if len(per_thread) >= 2 and scrapes_window:
        first, last_ = per_thread[0], per_thread[-1]
        roles: dict[str, float] = defaultdict(float)
        for tid, cpu in last_.items():
            name = names.get(tid, "main" if tid == srv.pid else "")
            role = re.sub(r"_\d+$", "", name) if name else "other threads (DuckDB, native)"
            roles[role] += cpu - first.get(tid, 0.0)
        out.append(row(["profstore thread", "CPU ms per scrape", "share", "does"]))
        out.append(row(["---"] * 4))
        spent = sum(roles.values()) or 1.0
        for role, cpu in sorted(roles.items(), key=lambda kv: -kv[1]):
            does = THREAD_ROLES.get(role, "" if names else "(threads unnamed: py-spy absent or its dump failed)")
            out.append(row([role, f"{cpu / scrapes_window * 1e3:.2f}", f"{cpu / spent:.0%}", does]))
        out.append("")

    # Per type: where the runs went, and what the targets saw.
    skipped_by = by_label(final, "profstore_scrapes_skipped_total", "profile")
    out.append(
        row(
            [
                "type", "due", "requests", "ok", "failed", "skipped", "dropped",
                "lateness p50 / p99 at target", "HTTP p50", "last run p50 / max",
            ]
        )
    )  # fmt: skip
    out.append(row(["---"] * 10))
    for p in PROFILES:
        ks = [r for r in runs if r.profile == p]
        took = [t["last_duration_s"] for t in targets or [] if t["profile"] == p and t["last_duration_s"] is not None]
        lat = [r - (k.start + j * interval) for k in ks for j, rs in k.requests.items() if j < k.due for r in rs]
        p_ok = total(final, "profstore_scrapes_total", profile=p, outcome="ok")
        p_all = total(final, "profstore_scrapes_total", profile=p)
        out.append(
            row(
                [
                    p,
                    f"{sum(k.due for k in ks):,}",
                    f"{len(lat):,}",
                    f"{p_ok:,.0f}",
                    f"{p_all - p_ok:,.0f}",
                    f"{skipped_by.get(p, 0):,.0f}",
                    f"{sum(k.dropped() for k in ks):,}",
                    f"{quantile(lat, 0.5) * 1e3:.1f} / {quantile(lat, 0.99) * 1e3:.1f} ms",
                    f"{quantile(http[p], 0.5) * 1e3:.0f} ms",
                    f"{quantile(took, 0.5):.2f} / {max(took, default=math.nan):.2f} s",
                ]
            )
        )
    out.append("")
    out.append(
        "HTTP: request arrival to answer at the target. Last run: profstore's last_duration_s of each "
        "target x type (request, decode, delta and store), from /api/v1/targets."
    )
    out.append("")

    # Per interval: rate, CPU and memory, to see growth.
    # Every due slot with the lateness of its request (None: dropped), to show when lateness happens.
    slots = [
        (k.start + j * interval, (min(k.requests[j]) - (k.start + j * interval)) if j in k.requests else None)
        for k in runs
        for j in range(k.due)
    ]
    out.append(
        row(
            [
                "interval", "scrapes", "scrapes/s", "skipped", "dropped", "lateness p50 / p99 at target",
                "profstore CPU", "RSS at end", "stored",
            ]
        )
    )  # fmt: skip
    out.append(row(["---"] * 9))
    prev_t, prev_m = healthy, None
    for poll in polls:
        at, m = poll.at, poll.metrics
        a, b = sampler.at("profstore", prev_t), sampler.at("profstore", at)
        n = total(m, "profstore_scrapes_total") - (total(prev_m, "profstore_scrapes_total") if prev_m else 0)
        sk = total(m, "profstore_scrapes_skipped_total") - (
            total(prev_m, "profstore_scrapes_skipped_total") if prev_m else 0
        )
        st = total(m, "profstore_ingested_profiles_total") - (
            total(prev_m, "profstore_ingested_profiles_total") if prev_m else 0
        )
        window = [lat for t0, lat in slots if (prev_t if prev_m else 0) <= t0 < at]
        lat = [x for x in window if x is not None]
        out.append(
            row(
                [
                    f"+{prev_t - healthy:.0f}..{at - healthy:.0f} s",
                    f"{n:,.0f}",
                    f"{n / (at - prev_t):.1f}",
                    f"{sk:,.0f}",
                    f"{len(window) - len(lat):,}",
                    f"{quantile(lat, 0.5) * 1e3:.0f} / {quantile(lat, 0.99) * 1e3:.0f} ms",
                    f"{(b[1] - a[1]) / max(b[0] - a[0], 1e-9):.0%}",
                    f"{b[2] / 1024:.0f} MiB",
                    f"{st:,.0f}",
                ]
            )
        )
        prev_t, prev_m = at, m
    print("\n".join(out))
    if not math.isnan(configured) and not (srv.spawned <= configured <= healthy + 1):
        print(f"note: schedule start {configured - healthy:+.2f} s from healthy looks off", file=sys.stderr)
    machine = {
        "targets": args.targets,
        "types": len(PROFILES),
        "interval_s": interval,
        "duration_s": args.duration,
        "due": due,
        "completed": completed,
        "ok": ok,
        "failed": failed,
        "failed_by_kind": {k: v for k, v in outcomes.items() if v},
        "skipped": skipped,
        "dropped": dropped,
        "unfinished": unfinished,
        "scrapes_per_s": round(steady, 2),
        "lateness_p50_s": round(p50, 6),
        "lateness_p99_s": round(p99, 6),
        "target_lateness_p50_s": round(quantile(seen, 0.5), 6),
        "target_lateness_p99_s": round(quantile(seen, 0.99), 6),
        "target_lateness_max_s": round(worst, 6),
        "cpu_core_fraction": round(cpu_run, 3),
        "cpu_s": round(sN[1], 2),
        "rss_peak_mib": round(max(peak_rss, hwm) / 1024, 1),
        "profiles_stored": stored,
        "data_dir_bytes": data_bytes,
        "sim_cpu_core_fraction": round(sim_cpu, 3),
        "sim_procs": len(sim_names),
        "cpu_ms_per_scrape": round(cpu_per_scrape * 1e3, 3),
        "sim_cpu_ms_per_scrape": round(sim_per_scrape * 1e3, 3),
        "query_clients": args.query_clients,
    }
    print("BENCH_COLLECTOR " + json.dumps(machine, sort_keys=True))


if __name__ == "__main__":
    main()
