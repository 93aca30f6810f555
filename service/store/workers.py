"""Ingest worker processes (setting ``ingest_workers``): a push's per-profile work outside the
serving process's GIL.

A worker does for a pushed body what a request thread does otherwise (gunzip, decoding into
columns, validation, hashing, normalization, the rows, the journal record: about 0.7 ms of
Python for a small Go CPU profile) and hands back the staged rows and the record while the
request thread waits without the GIL; the serving process only adds the interned rows not yet
committed (:func:`service.store.staging.with_entities`; in a steady fleet none) and submits.
Handing over costs the serving process about 0.17 ms and the worker about 0.3 ms more per
profile (pickling both ways). Measured on 2 cores (README, "Benchmarks", "Push") that is no gain:
the serving process's event loop, not its staging, is what the pushes wait for, and the extra
CPU is taken from the same two cores. Workers are off by default; they pay where cores are
idle while one interpreter lock is saturated.

Workers are started with ``spawn`` (the serving process runs threads and DuckDB, which ``fork``
would copy mid-flight) in the background at start, load the compiled kernels once, and are
replaced if one dies; they exit when the serving process closes their pipe or dies. Errors come
back typed, so a bad body is the same 4xx as in-process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from service.errors import ProfstoreError
from service.pprof.decode import read
from service.store.records import encode_record
from service.store.staging import StagedPart, stage_profile, warm_up
from service.types import DecodeLimits

__all__ = ["Prepared", "Workers"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A pushed body, staged by a worker: its profile's rows (without interned rows) and its record."""

    part: StagedPart
    record: bytes
    size: int  # bytes decoded (uncompressed)
    decode_s: float
    record_s: float


@dataclass(frozen=True, slots=True)
class _Failed:
    """A ProfstoreError, carried as its class, message and attributes (its constructor may take others)."""

    cls: type[ProfstoreError]
    message: str
    attrs: dict[str, object]

    def error(self) -> ProfstoreError:
        err = self.cls.__new__(self.cls)
        Exception.__init__(err, self.message)
        err.__dict__.update(self.attrs)
        return err


def _prepare(
    data: bytes,
    limits: DecodeLimits,
    labels: dict[str, str],
    name: str | None,
    ts: int | None,
    tenant: str,
    source: str,
) -> Prepared | _Failed:
    """In a worker: what :meth:`service.store.ingest.Ingestor.ingest` does before the writer."""
    import time

    try:
        t = time.perf_counter()
        env = read(data, limits)
        decode_s = time.perf_counter() - t
        part = stage_profile(env, labels, ts, name=name, tenant=tenant, source=source, known=None)
        t = time.perf_counter()
        record = encode_record([(env, part.meta)])
        return Prepared(part, record, env.size, decode_s, time.perf_counter() - t)
    except ProfstoreError as exc:
        return _Failed(type(exc), str(exc), dict(getattr(exc, "__dict__", {})))


class Workers:
    """Ingest worker processes, each on its own pipe, started in the background (:meth:`start`).

    A request thread takes an idle worker, sends the body and waits on the pipe without the GIL:
    no executor threads hand the call and its answer along (each hand-over waits for the GIL,
    milliseconds under load). Until every worker has loaded its kernels (a few seconds after a
    start) :attr:`ready` is false and pushes are staged in the serving process, so a fresh server
    never makes its first clients wait; a worker that dies is replaced the same way.
    """

    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._live = 0  # started and not known dead
        self._up = 0  # of those, answering
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._up > 0 and not self._closed

    def start(self) -> None:
        """Start the missing workers in the background; each joins the idle ones once it has answered."""
        with self._lock:
            missing = self._processes - self._live
            self._live += missing
        for _ in range(missing):
            threading.Thread(target=self._spawn, name="profstore-worker-start", daemon=True).start()

    def _spawn(self) -> None:
        try:
            worker = _Worker.spawn()
        except Exception as exc:
            log.warning("an ingest worker did not start (%s); pushes are staged in the serving process", exc)
            with self._lock:
                self._live -= 1
            return
        if self._closed:
            worker.stop()
            return
        with self._lock:
            self._up += 1
        self._idle.put(worker)

    def prepare(
        self,
        data: bytes,
        limits: DecodeLimits,
        labels: Mapping[str, str],
        name: str | None,
        ts: int | None,
        tenant: str,
        source: str,
    ) -> Prepared:
        """Stage a pushed body in a worker; raises what staging it in-process would raise."""
        args = (data, limits, dict(labels), name, ts, tenant, source)
        worker = None
        while worker is None and self.ready:
            with contextlib.suppress(queue.Empty):
                worker = self._idle.get(timeout=1.0)
        if worker is None:  # every worker died meanwhile
            out = _prepare(*args)
        else:
            try:
                out = worker.call(args)
            except (EOFError, OSError):  # it died (killed, out of memory): staged here, and another starts
                log.warning("an ingest worker died; starting another")
                worker.stop()
                with self._lock:
                    self._live -= 1
                    self._up -= 1
                if not self._closed:
                    self.start()
                out = _prepare(*args)
            else:
                if self._closed:
                    worker.stop()
                else:
                    self._idle.put(worker)
        if isinstance(out, _Failed):
            raise out.error()
        return out

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def spawn(cls) -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_serve, args=(child,), name="profstore-ingest-worker", daemon=True)
        process.start()
        child.close()
        worker = cls(process, parent)
        if parent.recv() != "ready":  # after the kernels are loaded
            raise RuntimeError("unexpected greeting")
        return worker

    def call(self, args: tuple[object, ...]) -> Prepared | _Failed:
        self.conn.send(args)
        out: Prepared | _Failed = self.conn.recv()
        return out

    def stop(self) -> None:
        self.conn.close()  # the worker's recv ends: it exits
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _serve(conn: Connection) -> None:
    """A worker's life: load the kernels, then stage what comes until the pipe closes."""
    warm_up()
    conn.send("ready")
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        conn.send(_prepare(*args))
