"""A fleet of simulated Go services on loopback, in one process, answering net/http/pprof with corpus profiles.

``python -m bench.targets_sim --targets 200 --log requests.tsv`` listens on 200 loopback ports
(one asyncio server each), prints one JSON line ``{"pid": ..., "ports": [...]}`` once all of them
listen, and serves until SIGTERM or SIGINT; then it writes one line per request to ``--log``
and a last JSON line with its own CPU time to stdout.

Each port behaves like a Go process with ``net/http/pprof``, as a collector sees it:

- ``/debug/pprof/profile?seconds=S`` holds the request for S seconds, then returns a CPU profile
  whose ``time_nanos`` is the start of the request and ``duration_nanos`` its length; a second CPU
  request while one runs on the same port is answered 500 as Go answers it;
- ``/debug/pprof/allocs`` (and ``/heap``), ``/goroutine``, ``/block``, ``/mutex`` answer after a
  latency drawn uniformly from ``--latency-ms`` (5-50 ms by default), with ``time_nanos`` = now;
- anything else is ``404 page not found``.

Content changes like a live process's: the CPU and goroutine profiles are one of a few variants
of the corpus profile (each sample dropped or multiplied by a small integer), and the cumulative
columns (``alloc_objects``/``alloc_space``, ``contentions``/``delay``) of each port grow from
request to request, each stack by a random whole multiple of its corpus value (zero for some,
so some stacks do not change between two scrapes), while ``inuse_*`` varies as a snapshot does.
Integer factors keep what Go keeps between a profile's types (cpu = samples x period,
alloc_space = alloc_objects x size). Bodies are gzipped as Go sends them; the CPU and goroutine
variants are serialized once and only get their time fields appended per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from bench.fleet import varint
from service.pprof import profile_pb2 as pb

# The repository's own copies (same bytes as ../shared/corpus), so tests/test_load.py runs in a fresh clone.
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"

FILES = {
    "profile": "go119__cpu_10s.pb.gz",
    "allocs": "go119__allocs.pb.gz",
    "goroutine": "go119__goroutine.pb.gz",
    "block": "go119__block.pb.gz",
    "mutex": "go119__mutex.pb.gz",
}
PATHS = {
    "/debug/pprof/profile": "profile",
    "/debug/pprof/allocs": "allocs",
    "/debug/pprof/heap": "allocs",
    "/debug/pprof/goroutine": "goroutine",
    "/debug/pprof/block": "block",
    "/debug/pprof/mutex": "mutex",
}
CUMULATIVE = frozenset({"alloc_objects", "alloc_space", "contentions", "delay"})
GZIP_LEVEL = 6  # Go's gzip.DefaultCompression


def _time_fields(time_ns: int, duration_ns: int = 0) -> bytes:
    """Fields 9 (time_nanos) and 10 (duration_nanos) of a pprof Profile, as wire bytes."""
    out = b"\x48" + varint(time_ns)
    return out + b"\x50" + varint(duration_ns) if duration_ns else out


def _load(name: str) -> pb.Profile:
    msg = pb.Profile()
    msg.ParseFromString(gzip.decompress((CORPUS / FILES[name]).read_bytes()))
    msg.ClearField("time_nanos")  # absent on the wire, so the one appended per request is the only one
    msg.ClearField("duration_nanos")
    return msg


def _values(msg: pb.Profile) -> np.ndarray:
    return np.array([list(s.value) for s in msg.sample], np.int64).reshape(len(msg.sample), len(msg.sample_type))


def _variants(name: str, n: int, rng: np.random.Generator) -> list[bytes]:
    """``n`` serialized variants of a snapshot profile: each sample dropped or multiplied by 1-3."""
    base = _load(name)
    values = _values(base)
    out = []
    for _ in range(n):
        msg = pb.Profile()
        msg.CopyFrom(base)
        factor = rng.choice(4, size=len(values), p=[0.1, 0.5, 0.3, 0.1])
        del msg.sample[:]
        for sample, row, f in zip(base.sample, values, factor.tolist(), strict=True):
            if f:
                s = msg.sample.add()
                s.CopyFrom(sample)
                s.value[:] = (row * f).tolist()
        out.append(msg.SerializeToString())
    return out


class Cumulative:
    """A profile with cumulative columns (allocs, block, mutex): one running total per port."""

    def __init__(self, name: str, rng: np.random.Generator) -> None:
        self.msg = _load(name)
        self.base = _values(self.msg)
        types = [bytes(self.msg.string_table[st.type]).decode() for st in self.msg.sample_type]
        self.cum = np.array([t in CUMULATIVE for t in types])
        assert self.cum.any(), f"{name}: no cumulative sample type in {types}"
        self.rng = rng
        self.totals: dict[int, np.ndarray] = {}

    def next(self, port: int) -> bytes:
        """The next profile of ``port``: totals grown since its last one, snapshot columns redrawn."""
        n = len(self.base)
        total = self.totals.get(port)
        grow = self.rng.choice(4, size=(n, 1), p=[0.4, 0.3, 0.2, 0.1])
        # A process that has run a while: the first answer already holds a few intervals' worth.
        total = self.base[:, self.cum] * (grow + 2) if total is None else total + self.base[:, self.cum] * grow
        self.totals[port] = total
        values = self.base.copy()
        values[:, self.cum] = total
        live = self.rng.choice(2, size=(n, 1), p=[0.3, 0.7])
        values[:, ~self.cum] *= live
        for sample, row in zip(self.msg.sample, values.tolist(), strict=True):
            sample.value[:] = row
        return self.msg.SerializeToString()


@dataclass
class Fleet:
    latency_s: tuple[float, float]
    seed: int = 1
    rng: np.random.Generator = field(init=False)
    cpu: list[bytes] = field(init=False)
    goroutine: list[bytes] = field(init=False)
    cumulative: dict[str, Cumulative] = field(init=False)
    cpu_busy: set[int] = field(default_factory=set)
    # [port, endpoint, arrival (unix s), answered (unix s), status, body bytes], logged on arrival;
    # a request still unanswered at exit has answered = nan and status -1, one the client left 0.
    log: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.cpu = _variants("profile", 16, self.rng)
        self.goroutine = _variants("goroutine", 16, self.rng)
        self.cumulative = {name: Cumulative(name, self.rng) for name in ("allocs", "block", "mutex")}

    def pick(self, variants: list[bytes]) -> bytes:
        return variants[int(self.rng.integers(len(variants)))]

    async def answer(self, port: int, target: str) -> tuple[int, bytes, str]:
        path, _, query = target.partition("?")
        kind = PATHS.get(path)
        if kind is None:
            return 404, b"404 page not found\n", "text/plain; charset=utf-8"
        if kind == "profile":
            return await self._cpu(port, parse_qs(query).get("seconds", ["30"])[0])
        await asyncio.sleep(float(self.rng.uniform(*self.latency_s)))
        now = time.time_ns()
        raw = self.pick(self.goroutine) if kind == "goroutine" else self.cumulative[kind].next(port)
        return 200, gzip.compress(raw + _time_fields(now), GZIP_LEVEL, mtime=0), "application/octet-stream"

    async def _cpu(self, port: int, seconds: str) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        try:
            sec = int(seconds)
        except ValueError:
            sec = 0
        if sec <= 0:
            return 400, b"Bad Request: invalid value for seconds\n", text
        if port in self.cpu_busy:  # runtime/pprof allows one CPU profile per process
            return 500, b"Could not enable CPU profiling: cpu profiling already in use\n", text
        self.cpu_busy.add(port)
        try:
            start = time.time_ns()
            await asyncio.sleep(sec)
            # StopCPUProfile flushes the last samples: a couple of milliseconds past the window.
            await asyncio.sleep(float(self.rng.uniform(0.001, 0.005)))
            end = time.time_ns()
        finally:
            self.cpu_busy.discard(port)
        raw = self.pick(self.cpu) + _time_fields(start, end - start)
        return 200, gzip.compress(raw, GZIP_LEVEL, mtime=0), "application/octet-stream"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        """One HTTP/1.1 connection: requests one after the other while the client keeps it open."""
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                arrival = time.time()
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                kind = PATHS.get(parts[1].split("?")[0], "other") if len(parts) == 3 else "other"
                entry: list[Any] = [port, kind, arrival, math.nan, -1, 0]
                self.log.append(entry)
                close = headers.get("connection", "").lower() == "close" or (len(parts) == 3 and parts[2] == "HTTP/1.0")
                if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                    status, body, ctype, close = 400, b"400 Bad Request", "text/plain; charset=utf-8", True
                else:
                    status, body, ctype = await self.answer(port, parts[1])
                extra = 'Content-Disposition: attachment; filename="profile"\r\n' if status == 200 else ""
                reply = (
                    f"HTTP/1.1 {status} {_REASON.get(status, '')}\r\nContent-Type: {ctype}\r\n{extra}"
                    f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n"
                    + ("Connection: close\r\n" if close else "")
                    + "\r\n"
                ).encode("latin-1")
                writer.write(reply + (body if parts[0] != "HEAD" else b""))
                try:
                    await writer.drain()
                except ConnectionError:
                    status, close = 0, True  # the client went away (a timeout on its side)
                entry[3:] = [time.time(), status, len(body)]
                if close:
                    return
        finally:
            writer.close()


_REASON = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


async def run(args: argparse.Namespace) -> None:
    lo, hi = (float(x) / 1000 for x in args.latency_ms.split(","))
    fleet = Fleet((lo, hi), seed=args.seed)
    servers = [await _listen(fleet) for _ in range(args.targets)]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(json.dumps({"pid": os.getpid(), "ports": ports}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()
    if args.log:
        with open(args.log, "w") as fh:
            fh.write("port\tendpoint\tarrival\tanswered\tstatus\tbytes\n")
            for port, kind, t0, t1, status, size in fleet.log:
                fh.write(f"{port}\t{kind}\t{t0:.6f}\t{t1:.6f}\t{status}\t{size}\n")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss, "requests": len(fleet.log)}))
    sys.stdout.flush()


async def _listen(fleet: Fleet) -> asyncio.Server:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]  # which target the connection came to
        # Open connections are cancelled at exit: that ends them, it is no error.
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await fleet.serve(reader, writer, port)

    return await asyncio.start_server(handler, "127.0.0.1", 0, backlog=512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=200, help="number of simulated services (one port each)")
    ap.add_argument("--latency-ms", default="5,50", help="latency of the snapshot endpoints, uniform in LO,HI ms")
    ap.add_argument("--log", help="write one line per request here at exit (TSV)")
    ap.add_argument("--seed", type=int, default=1)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
