"""The one thread that writes: batches of profiles, one transaction each.

DuckDB allows one writer per file, and a profile must become visible all at once (samples,
stacks, symbols, rollups) or not at all, also when the process is killed mid-batch. So every
write goes through this thread: it drains the queue into a batch, drops profiles already stored
(same ``group_id``), builds the rows of every table for the rest together, appends each table
as one Arrow relation inside a single transaction, commits, and only then acknowledges the
callers. Profiles arrive validated and normalized by the ingest threads
(:mod:`service.store.digest`); the few that were decoded by upb instead (legacy formats,
unusual encodings) are decoded and normalized here, in numpy. A profile that fails validation
is answered with its own error; the others of its batch are stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from service.errors import ProfstoreError, StoreError
from service.pprof.decode import Envelope, decode_batch
from service.store.digest import Prepared
from service.store.ids import KnownIds
from service.store.normalize import Meta, Normalized, Rows, merge_digests, normalize_batch, tables

__all__ = ["Pending", "WriteResult", "Writer"]

log = logging.getLogger(__name__)

# Interned tables and their id column, in the order a reader would need them.
_INTERNED = (
    ("mappings", "mapping_id"),
    ("functions", "function_id"),
    ("locations", "location_id"),
    ("stacks", "stack_id"),
    ("labelsets", "labelset_id"),
)
_FACTS = ("profiles", "samples", "function_rollup")


@dataclass(frozen=True, slots=True)
class Pending:
    envelope: Envelope
    meta: Meta
    prepared: Prepared | None = None  # normalized in the caller's thread when its columns were decoded there


@dataclass(frozen=True, slots=True)
class WriteResult:
    item: Normalized | None  # None when the profile was stored before
    duplicate: bool


class Writer:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        known: KnownIds,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.02,
        observe: Callable[[float, int], None] | None = None,
    ) -> None:
        self._con = con
        self._observe = observe  # (seconds, profiles) of every batch written, for /metrics
        self._known = known
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[Pending, Future[WriteResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="profstore-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Pending) -> Future[WriteResult]:
        fut: Future[WriteResult] = Future()
        if not self._thread.is_alive():
            fut.set_exception(StoreError("the writer is stopped"))
            return fut
        self._queue.put((item, fut))
        return fut

    def depth(self) -> int:
        """Profiles waiting for the writer."""
        return self._queue.qsize()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self._max_wait_s
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            t0 = time.monotonic()
            try:
                self._write(batch)
            except Exception as exc:  # every failure must reach the callers, typed; the thread lives on
                log.exception("write of a batch of %d profiles failed", len(batch))
                err = exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(err)
            if self._observe is not None:
                self._observe(time.monotonic() - t0, len(batch))
            if stop:
                return

    def _write(self, batch: list[tuple[Pending, Future[WriteResult]]]) -> None:
        stored = self._stored_groups([p.meta.group_id for p, _ in batch])
        todo: list[tuple[Pending, Future[WriteResult]]] = []
        leaders: dict[int, Future[WriteResult]] = {}
        followers: list[tuple[Future[WriteResult], Future[WriteResult]]] = []
        for p, fut in batch:
            g = p.meta.group_id
            if g in stored:
                fut.set_result(WriteResult(None, duplicate=True))
            elif g in leaders:  # the same profile twice in one batch: it shares the first one's fate
                followers.append((leaders[g], fut))
            else:
                leaders[g] = fut
                todo.append((p, fut))
        try:
            self._store(todo)
        finally:
            for leader, fut in followers:
                if leader.done() and leader.exception() is None:
                    fut.set_result(WriteResult(None, duplicate=True))
                elif leader.done():
                    fut.set_exception(leader.exception())  # type: ignore[arg-type]

    def _store(self, todo: list[tuple[Pending, Future[WriteResult]]]) -> None:
        if not todo:
            return
        if all(p.prepared is not None for p, _ in todo):
            # Validated and normalized in the ingest threads: only the tables are left to build.
            self._commit(lambda ok: tables(
                merge_digests([p.envelope for p, _ in ok], [p.prepared for p, _ in ok]),  # type: ignore[misc]
                [p.envelope.header for p, _ in ok], [p.meta for p, _ in ok], self._known,
            ), todo)  # fmt: skip
            return
        decoded, errors = decode_batch([p.envelope for p, _ in todo])
        ok = []
        for (p, fut), err in zip(todo, errors, strict=True):
            if err is None:
                ok.append((p, fut))
            else:
                fut.set_exception(err)
        if ok:
            self._commit(lambda ok: normalize_batch(decoded, [p.meta for p, _ in ok], self._known), ok)

    def _commit(
        self,
        rows_of: Callable[[list[tuple[Pending, Future[WriteResult]]]], Rows],
        ok: list[tuple[Pending, Future[WriteResult]]],
    ) -> None:
        """Normalize and commit ``ok`` as one transaction; if that fails, each profile alone."""
        try:
            self._transaction(rows_of(ok), ok)
        except Exception:
            if len(ok) == 1:
                raise
            # One profile must not take its batch down with it: store each alone, so only the
            # one that fails gets the error.
            log.exception("batch of %d profiles failed; storing them one by one", len(ok))
            for p, fut in ok:
                try:
                    one, errs = decode_batch([p.envelope])
                    if errs[0] is not None:
                        raise errs[0]
                    self._transaction(normalize_batch(one, [p.meta], self._known), [(p, fut)])
                except Exception as exc:
                    fut.set_exception(exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}"))

    def _transaction(self, rows: Rows, ok: list[tuple[Pending, Future[WriteResult]]]) -> None:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            self._append(con, rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        for kind, new in rows.new_ids.items():
            self._known.add(kind, new)
        for (_, fut), item in zip(ok, rows.items, strict=True):
            fut.set_result(WriteResult(item, duplicate=False))

    def _stored_groups(self, groups: list[int]) -> set[int]:
        con = self._con
        con.register("_batch_groups", pa.table({"group_id": pa.array(groups, pa.uint64())}))
        try:
            rows = con.execute(
                "SELECT DISTINCT group_id FROM profiles WHERE group_id IN (SELECT group_id FROM _batch_groups)"
            ).fetchall()
        finally:
            con.unregister("_batch_groups")
        return {r[0] for r in rows}

    @staticmethod
    def _append(con: duckdb.DuckDBPyConnection, rows: Rows) -> None:
        t = rows.tables
        con.register("_b", t["series"])
        con.execute(
            "INSERT INTO series SELECT * FROM _b WHERE series_id NOT IN (SELECT series_id FROM series) "
            "QUALIFY row_number() OVER (PARTITION BY series_id) = 1"
        )
        con.execute(
            "UPDATE series SET first_seen = least(series.first_seen, u.f), last_seen = greatest(series.last_seen, u.l) "
            "FROM (SELECT series_id, min(first_seen) f, max(last_seen) l FROM _b GROUP BY series_id) u "
            "WHERE series.series_id = u.series_id AND (u.f < series.first_seen OR u.l > series.last_seen)"
        )
        con.unregister("_b")
        for name, key in _INTERNED:
            batch = t[name]
            if batch.num_rows == 0:
                continue
            # Which of the batch's ids are stored already: a semi-join whose hash table is the
            # (small) batch, probed by one scan of the id column, not a hash table of the whole table.
            con.register("_b", batch.select([key]))
            stored = con.execute(f"SELECT {key} FROM {name} WHERE {key} IN (SELECT {key} FROM _b)").to_arrow_table()
            con.unregister("_b")
            if stored.num_rows:
                batch = batch.filter(pc.invert(pc.is_in(batch[key], value_set=stored[key].combine_chunks())))
            if batch.num_rows:
                con.register("_b", batch)
                con.execute(f"INSERT INTO {name} SELECT * FROM _b")
                con.unregister("_b")
        for name in _FACTS:
            if t[name].num_rows:
                con.register("_b", t[name])
                con.execute(f"INSERT INTO {name} SELECT * FROM _b")
                con.unregister("_b")
