"""The one thread that writes.

DuckDB allows one writer per file, and a profile must become visible all at once (samples,
stacks, symbols, rollups) or not at all, also when the process is killed mid-batch. So every
write goes through this thread: it drains the queue into a batch, appends each table as one
Arrow relation inside a single transaction, commits, and only then acknowledges the callers.
Interned tables are appended with an anti-join on their content-hash id, so re-sent symbols and
re-sent profiles (same ``group_id``) cost nothing and are stored once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from service.errors import StoreError
from service.store.ids import KnownIds
from service.store.normalize import Normalized

__all__ = ["WriteResult", "Writer"]

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
class WriteResult:
    duplicate: bool


class Writer:
    def __init__(
        self, con: duckdb.DuckDBPyConnection, known: KnownIds, *, max_batch: int = 256, max_wait_s: float = 0.02
    ) -> None:
        self._con = con
        self._known = known
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: queue.Queue[tuple[Normalized, Future[WriteResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="profstore-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Normalized) -> Future[WriteResult]:
        fut: Future[WriteResult] = Future()
        if not self._thread.is_alive():
            fut.set_exception(StoreError("the writer is stopped"))
            return fut
        self._queue.put((item, fut))
        return fut

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
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[tuple[Normalized, Future[WriteResult]]]) -> None:
        try:
            dup = self._commit([item for item, _ in batch])
        except Exception as exc:
            log.exception("write of a batch of %d profiles failed", len(batch))
            err = exc if isinstance(exc, StoreError) else StoreError(f"write failed: {exc}")
            for _, fut in batch:
                fut.set_exception(err)
            return
        for item, fut in batch:
            for kind, ids in item.new_ids.items():
                self._known.add(kind, ids)
            fut.set_result(WriteResult(duplicate=item.group_id in dup))

    def _commit(self, items: list[Normalized]) -> set[int]:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            ids = pa.table({"group_id": pa.array([i.group_id for i in items], pa.uint64())})
            con.register("_batch_groups", ids)
            existing = {
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT group_id FROM profiles WHERE group_id IN (SELECT group_id FROM _batch_groups)"
                ).fetchall()
            }
            con.unregister("_batch_groups")
            fresh: list[Normalized] = []
            seen: set[int] = set()
            for it in items:
                if it.group_id in existing or it.group_id in seen:
                    existing.add(it.group_id)
                    continue
                seen.add(it.group_id)
                fresh.append(it)
            if fresh:
                self._append(con, fresh)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return existing

    @staticmethod
    def _append(con: duckdb.DuckDBPyConnection, items: list[Normalized]) -> None:
        def table(name: str) -> pa.Table:
            return pa.concat_tables([getattr(i, name) for i in items]).combine_chunks()

        series = table("series")
        con.register("_b", series)
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
            batch = table(name)
            if batch.num_rows == 0:
                continue
            # Which of the batch's ids are stored already: a semi-join whose hash table is the
            # (small) batch, probed by one scan of the id column — not a hash table of the whole table.
            con.register("_b", batch.select([key]))
            stored = con.execute(f"SELECT {key} FROM {name} WHERE {key} IN (SELECT {key} FROM _b)").to_arrow_table()
            con.unregister("_b")
            keep = pc.invert(pc.is_in(batch[key], value_set=stored[key].combine_chunks()))
            batch = _first_per_key(batch.filter(keep), key)
            if batch.num_rows:
                con.register("_b", batch)
                con.execute(f"INSERT INTO {name} SELECT * FROM _b")
                con.unregister("_b")
        for name in _FACTS:
            con.register("_b", table(name))
            con.execute(f"INSERT INTO {name} SELECT * FROM _b")
            con.unregister("_b")


def _first_per_key(t: pa.Table, key: str) -> pa.Table:
    """One row per key (several profiles of a batch may bring the same new symbol)."""
    if t.num_rows < 2:
        return t
    idx = (
        pa.table({"k": t[key], "i": pa.array(range(t.num_rows))})
        .group_by("k", use_threads=False)
        .aggregate([("i", "min")])
    )
    return t.take(idx["i_min"])
