"""The one thread that writes: batches of profiles, one transaction each.

DuckDB allows one writer per file, and a profile must become visible all at once (samples,
stacks, symbols, rollups) or not at all, also when the process is killed mid-batch. So every
write goes through this thread: it drains the queue into a batch, drops profiles already stored
(same ``group_id``), assembles the rows of the rest, appends each table as one Arrow relation
inside a single transaction, commits, and only then acknowledges the callers.

Being the one serial step, it does as little as possible: profiles arrive with their rows built
by the ingest threads (:mod:`service.store.staging`), so a batch is a concatenation. Rows are
built again here only when they went stale (retention cleared the known ids after they were
staged) or when a batch failed and its profiles are stored one by one; a profile that fails then
is answered with its own error, and the others of its batch are stored.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.errors import ProfstoreError, StoreError
from service.pprof.decode import Envelope, decode_batch
from service.store.ids import KnownIds, RecentGroups
from service.store.normalize import Meta, Normalized, Rows, normalize_batch
from service.store.series_index import insert_series
from service.store.staging import Staged, assemble

__all__ = ["Pending", "Task", "WriteResult", "Writer"]

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
    staged: Staged | None = None  # its rows, built in the caller's thread when its columns were decoded there


@dataclass(frozen=True, slots=True)
class Task:
    """Other work that must hold the one write connection (compaction): run between batches."""

    run: Callable[[duckdb.DuckDBPyConnection], object]
    done: Future[object]


@dataclass(frozen=True, slots=True)
class WriteResult:
    item: Normalized | None  # None when the profile was stored before
    duplicate: bool


# Profiles to commit together, and how to build their rows (inside the commit's try: a batch
# whose rows cannot be built is retried one profile at a time like one that cannot commit).
Job = tuple[Callable[[], Rows], list[tuple[Pending, Future[WriteResult]]]]


class Writer:
    """One thread: collect a batch, drop what is stored or being stored, build the rows, commit.

    (A two-thread pipeline — build batch N+1 while batch N commits — measured slower on two
    cores: the extra thread's trips through the GIL cost more than the overlap won.)
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        known: KnownIds,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.02,
        observe: Callable[[float, int], None] | None = None,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        wal: Path | None = None,
        checkpoint_idle_bytes: int = 16 << 20,
        checkpoint_busy_bytes: int = 64 << 20,
    ) -> None:
        self._con = con
        # The write-ahead log, checkpointed by this thread between batches (see _maybe_checkpoint):
        # when nothing waits and it passed ``checkpoint_idle_bytes``, or whatever waits past
        # ``checkpoint_busy_bytes``. DuckDB's own automatic checkpoint would run inside a COMMIT,
        # with that batch's callers waiting for their acknowledgement.
        self._wal = wal
        self._checkpoint_idle = checkpoint_idle_bytes
        self._checkpoint_busy = checkpoint_busy_bytes
        self._checkpoint_failed_at = 0  # WAL size of a failed attempt: the next waits for more growth
        # A failed checkpoint (disk full) invalidates the whole DuckDB instance until it is opened
        # again; ``reopen`` does that (replaying the WAL: everything committed is kept).
        self._reopen = reopen
        self._fatal: str | None = None  # why the connection is unusable, until reopened
        self._observe = observe  # (seconds, profiles) of every batch written, for /metrics
        self._stage: Callable[[str, float], None] = _ignore  # (stage, seconds) of each step, for /metrics
        self._known = known
        # Committed idempotency keys above a time watermark, and the newest rolled-up time: the
        # two facts a batch would otherwise query the file for. Both are rebuilt (``_stale``)
        # after anything but a batch held the connection: a task, a reopen.
        self._groups = RecentGroups()
        self._done_until: int | None = None  # max(rollup_state.done_until); None: nothing rolled up
        self._stale = True
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._last_batch = 0  # profiles of the previous batch: was there company to wait for?
        self._queue: queue.Queue[list[tuple[Pending, Future[WriteResult]]] | Task | None] = queue.Queue()
        self._inflight: dict[int, Future[WriteResult]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="profstore-writer", daemon=True)
        self._thread.start()

    def submit(self, item: Pending) -> Future[WriteResult]:
        return self.submit_together([item])[0]

    def submit_together(self, items: list[Pending]) -> list[Future[WriteResult]]:
        """Profiles committed in one transaction (the parts of one push): all are stored or none."""
        futs: list[Future[WriteResult]] = [Future() for _ in items]
        if not self._thread.is_alive():
            for fut in futs:
                fut.set_exception(StoreError("the writer is stopped"))
            return futs
        self._queue.put(list(zip(items, futs, strict=True)))
        return futs

    def call(self, run: Callable[[duckdb.DuckDBPyConnection], object]) -> Future[object]:
        """Run ``run(connection)`` in the writer thread, after the profiles submitted before it."""
        task = Task(run, Future())
        if not self._thread.is_alive():
            task.done.set_exception(StoreError("the writer is stopped"))
        else:
            self._queue.put(task)
        return task.done

    def observe_stages(self, observe: Callable[[str, float], None]) -> None:
        """Report the seconds of each writer step (dedup, assemble, append, commit, checkpoint) to ``observe``."""
        self._stage = observe

    def depth(self) -> int:
        """Profiles waiting for the writer."""
        return self._queue.qsize()

    def close(self) -> None:
        """Write everything submitted so far, then stop both threads."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self._fatal is not None:
                self._recover()
            if isinstance(first, Task):
                self._task(first)
                continue
            batch = list(first)  # a group is never split across batches
            # Linger for company only when the last batch had some: a lone client (a backfill,
            # ``profstore ingest``) is answered after its own commit instead of after the linger
            # too, while concurrent pushers keep batches of the linger's size.
            linger = self._max_wait_s if self._last_batch > 1 else 0.0
            deadline = time.monotonic() + linger
            stop = False
            task: Task | None = None
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if isinstance(nxt, Task):
                    task = nxt  # after this batch, in submission order
                    break
                batch.extend(nxt)
            self._last_batch = len(batch)
            t0 = time.monotonic()
            jobs: list[Job] = []
            leaders: list[int] = []
            if self._fatal is not None:
                _fail(batch, self._unavailable())
                if task is not None:
                    self._task(task)
                if stop:
                    return
                continue
            try:
                jobs, leaders = self._build(batch)
            except Exception as exc:  # every failure must reach the callers, typed; the thread lives on
                log.exception("building the rows of a batch of %d profiles failed", len(batch))
                _fail(batch, exc)
            for build, ok in jobs:
                try:
                    self._commit(build, ok)
                except Exception as exc:
                    log.exception("write of a batch of %d profiles failed", len(ok))
                    _fail(ok, exc)
            self._release(leaders)
            if self._observe is not None:
                self._observe(time.monotonic() - t0, len(batch))
            self._maybe_checkpoint()
            if task is not None:
                self._task(task)
            if stop:
                return

    def _maybe_checkpoint(self) -> None:
        """Checkpoint after a batch was acknowledged, not inside the next COMMIT.

        A checkpoint writes everything the WAL holds into the database file: hundreds of
        milliseconds once the WAL holds megabytes. Done here, it delays no acknowledgement of the
        batch just written and, when the queue is empty, none at all. A failure invalidates
        the instance (a full disk) like any failed write; the writer reopens it before the next.
        """
        if self._wal is None or self._fatal is not None:
            return
        try:
            size = self._wal.stat().st_size
        except OSError:  # no WAL: nothing committed since the last checkpoint
            return
        limit = self._checkpoint_idle if self._queue.empty() else self._checkpoint_busy
        if size < max(limit, self._checkpoint_failed_at + self._checkpoint_idle):
            return
        t = time.perf_counter()
        try:
            self._con.execute("CHECKPOINT")
            self._checkpoint_failed_at = 0
        except Exception as exc:  # the data is safe in the WAL; the next attempt waits for more of it
            self._checkpoint_failed_at = size
            if not self._note_fatal(exc):
                log.warning("checkpoint of a %d-byte WAL failed: %s", size, exc)
        finally:
            self._stage("checkpoint", time.perf_counter() - t)

    def _task(self, task: Task) -> None:
        if not task.done.set_running_or_notify_cancel():
            return  # the caller gave up waiting (a shutdown cancels the retention timer's task)
        if self._fatal is not None:
            task.done.set_exception(self._unavailable())
            return
        self._stale = True  # whatever it wrote or deleted, the writer's memory of the file is rebuilt
        try:
            task.done.set_result(task.run(self._con))
        except Exception as exc:  # the caller gets it, typed; the thread lives on
            self._note_fatal(exc)
            with contextlib.suppress(duckdb.Error):
                self._con.execute("ROLLBACK")
            task.done.set_exception(exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}"))

    def mark_invalid(self, exc: BaseException) -> None:
        """A reader saw the instance invalidated: reopen before the next write (and wake the thread to)."""
        if self._note_fatal(exc):
            self.call(lambda con: None)

    def _note_fatal(self, exc: BaseException) -> bool:
        if isinstance(exc, duckdb.FatalException) or "database has been invalidated" in str(exc):
            if self._fatal is None:  # the first error says why; later ones only that it is invalidated
                log.error("the database is unusable until reopened: %s", exc)
                self._fatal = str(exc).splitlines()[0][:300]
            return True
        return False

    def _unavailable(self) -> StoreError:
        return StoreError(f"database unavailable after a failed write ({self._fatal}); writes resume once it reopens")

    def _recover(self) -> None:
        """Open the database again after a fatal error; on failure the next batch or task tries again."""
        if self._reopen is None:
            return
        try:
            self._con = self._reopen()
        except Exception as exc:
            log.error("reopening the database failed (%s); retrying with the next write", exc)
            time.sleep(0.5)  # a queue of writes must not spin on a disk that is still full
            return
        self._known.clear()  # a fresh start: ids are checked against the file again
        self._stale = True
        self._checkpoint_failed_at = 0
        log.warning("database reopened after: %s", self._fatal)
        self._fatal = None

    def _release(self, groups: list[int]) -> None:
        with self._lock:
            for g in groups:
                self._inflight.pop(g, None)

    def _build(self, batch: list[tuple[Pending, Future[WriteResult]]]) -> tuple[list[Job], list[int]]:
        """Drop what is stored or being stored; say how to build the rows of the rest."""
        leaders: list[int] = []
        rest: list[tuple[Pending, Future[WriteResult]]] = []
        with self._lock:  # in flight first, then the database: a batch leaves the first only once committed
            for p, fut in batch:
                g = p.meta.group_id
                lead = self._inflight.get(g)
                if lead is not None:  # the same profile is being written: it shares that outcome
                    lead.add_done_callback(_follow(fut))
                else:
                    self._inflight[g] = fut
                    leaders.append(g)
                    rest.append((p, fut))
        try:
            return self._rows(rest), leaders
        except BaseException:
            self._release(leaders)  # nothing of this batch is in flight any more
            raise

    def _rows(self, rest: list[tuple[Pending, Future[WriteResult]]]) -> list[Job]:
        todo: list[tuple[Pending, Future[WriteResult]]] = []
        stored = self._stored_groups([p.meta for p, _ in rest])
        for p, fut in rest:
            if p.meta.group_id in stored:
                fut.set_result(WriteResult(None, duplicate=True))
            else:
                todo.append((p, fut))
        if not todo:
            return []
        if all(p.staged is not None and p.staged.generation == self._known.generation for p, _ in todo):
            # Rows built in the ingest threads: only the concatenation is left.
            def fast(ok: list[tuple[Pending, Future[WriteResult]]] = todo) -> Rows:
                return assemble([p.staged for p, _ in ok], self._known)  # type: ignore[misc]

            return [(fast, todo)]
        decoded, errors = decode_batch([p.envelope for p, _ in todo])
        ok = []
        for (p, fut), err in zip(todo, errors, strict=True):
            if err is None:
                ok.append((p, fut))
            else:
                fut.set_exception(err)
        if not ok:
            return []

        def slow() -> Rows:
            return normalize_batch(decoded, [p.meta for p, _ in ok], self._known)

        return [(slow, ok)]

    def _commit(self, build: Callable[[], Rows], ok: list[tuple[Pending, Future[WriteResult]]]) -> None:
        """Build the rows of ``ok`` and commit them as one transaction; if that fails, each profile alone."""
        try:
            t = time.perf_counter()
            rows = build()
            self._stage("assemble", time.perf_counter() - t)
            self._transaction(rows, ok)
        except Exception as exc:
            if len(ok) == 1 or self._note_fatal(exc):
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
                    self._note_fatal(exc)
                    fut.set_exception(exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}"))

    def _transaction(self, rows: Rows, ok: list[tuple[Pending, Future[WriteResult]]]) -> None:
        con = self._con
        # The batch's series that may be new: those not known committed (most batches: none).
        series = rows.tables["series"]
        rows.tables["new_series"] = series.filter(pa.array(self._known.unknown("series", _series_ids(series))))
        try:
            self._append(con, rows)
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # DuckDB may have ended the failed transaction itself
                con.execute("ROLLBACK")
            raise
        for p, _ in ok:
            self._groups.add(p.meta.group_id, p.meta.ts)
        for kind, new in rows.new_ids.items():
            self._known.add(kind, new)
        self._known.add("series", _series_ids(series))
        for (_, fut), item in zip(ok, rows.items, strict=True):
            fut.set_result(WriteResult(item, duplicate=False))

    def _stored_groups(self, metas: list[Meta]) -> set[int]:
        """The batch's idempotency keys already in ``profiles``: from memory for profiles newer
        than the watermark (:class:`RecentGroups`), from the file for the others."""
        if not metas:
            return set()
        t = time.perf_counter()
        try:
            self._refresh()
            g = self._groups
            out = {m.group_id for m in metas if g.covers(m.ts) and g.stored(m.group_id)}
            older = [m for m in metas if not g.covers(m.ts)]
            return out | self._select_stored(older) if older else out
        finally:
            self._stage("dedup", time.perf_counter() - t)

    def _refresh(self) -> None:
        """Rebuild what the writer remembers of the file, if a task or a reopen may have changed it."""
        if not self._stale:
            return
        newest, done = self._con.execute(
            "SELECT (SELECT max(ts) FROM profiles), (SELECT max(done_until) FROM rollup_state)"
        ).fetchone() or (None, None)
        self._groups.reset(-(2**63) if newest is None else int(newest))
        self._done_until = None if done is None else int(done)
        self._stale = False

    def _select_stored(self, metas: list[Meta]) -> set[int]:
        """The keys of ``metas`` in ``profiles``, asked of the file.

        A key hashes its profile's time, so only rows of the batch's time range can match; the
        range lets DuckDB skip every row group outside it by its min/max instead of scanning the
        whole table.
        """
        con = self._con
        con.register("_batch_groups", pa.table({"group_id": pa.array([m.group_id for m in metas], pa.uint64())}))
        try:
            rows = con.execute(
                "SELECT DISTINCT group_id FROM profiles WHERE ts BETWEEN $lo AND $hi "
                "AND group_id IN (SELECT group_id FROM _batch_groups)",
                {"lo": min(m.ts for m in metas), "hi": max(m.ts for m in metas)},
            ).fetchall()
        finally:
            con.unregister("_batch_groups")
        return {r[0] for r in rows}

    def _append(self, con: duckdb.DuckDBPyConnection, rows: Rows) -> None:
        """A batch's statements as one SQL script, then its COMMIT: two calls into DuckDB, so the GIL is taken back twice.

        (Every call returns to Python through the GIL; with request threads busy, each return
        can wait a whole switch interval, which made twenty statements slower than their work.)
        Interned tables with no new rows — in a steady fleet, all of them — get no statement,
        nor do ``series`` and its label index when every series of the batch is known committed.
        """
        t = rows.tables
        present = [name for name, _ in _INTERNED if name in t and t[name].num_rows]
        new_series = "new_series" in t and t["new_series"].num_rows > 0
        # Only a profile older than the newest rolled-up bucket can make a bucket stale.
        oldest = pc.min(t["profiles"]["ts"]).as_py()
        dirty = self._done_until is not None and (oldest is None or oldest < self._done_until)
        names = []
        for name in ("series", *(["new_series"] if new_series else []), *present, *_FACTS):
            con.register(f"_b_{name}", t[name])
            names.append(f"_b_{name}")
        try:
            t0 = time.perf_counter()
            con.execute(_script(present, new_series=new_series, dirty=dirty))
            t1 = time.perf_counter()
            self._stage("append", t1 - t0)
            # COMMIT on its own call (one more return through the GIL) so that /metrics can tell
            # the statements from the commit: the WAL's write and fsync, and any checkpoint.
            con.execute("COMMIT")
            self._stage("commit", time.perf_counter() - t1)
        finally:
            for n in names:
                con.unregister(n)


def _series_ids(series: pa.Table) -> npt.NDArray[np.uint64]:
    return series.column("series_id").to_numpy().astype(np.uint64, copy=False)


def _script(interned: list[str], *, new_series: bool, dirty: bool = True) -> str:
    """The batch's statements. Series rows come with every profile (their last_seen moves on), but
    a new series is rare in a steady fleet, and finding which are new reads every stored
    ``series_id`` (milliseconds at 100,000 series): only the rows of ``_b_new_series``, those
    not known committed (``KnownIds``, which retention clears), are looked for, and with none
    (``new_series`` False) only the update runs.
    """
    keys = dict(_INTERNED)
    parts = insert_series("_b_new_series") if new_series else []
    parts.append(
        "UPDATE series SET first_seen = least(series.first_seen, u.f), last_seen = greatest(series.last_seen, u.l) "
        "FROM (SELECT series_id, min(first_seen) f, max(last_seen) l FROM _b_series GROUP BY series_id) u "
        "WHERE series.series_id = u.series_id AND (u.f < series.first_seen OR u.l > series.last_seen)"
    )
    for name in interned:
        key = keys[name]
        # Rows whose id is stored already are skipped (KnownIds forgets past its bound). The
        # inner IN is a semi-join whose hash table is the (small) batch, probed by one scan of
        # the id column, never a hash of the whole table.
        parts.append(
            f"INSERT INTO {name} SELECT * FROM _b_{name} WHERE {key} NOT IN "
            f"(SELECT {key} FROM {name} WHERE {key} IN (SELECT {key} FROM _b_{name}))"
        )
    parts += [f"INSERT INTO {name} SELECT * FROM _b_{name}" for name in _FACTS]
    # A profile for a bucket already rolled up makes that bucket stale until compaction redoes it
    # (``dirty`` False: the writer knows every profile of the batch is newer than any rolled-up bucket).
    if dirty:
        parts.append(
            "INSERT INTO rollup_dirty SELECT s.resolution, p.series_id, "
            "p.ts - ((p.ts % (s.resolution * 1000000000::BIGINT)) + s.resolution * 1000000000::BIGINT) "
            "% (s.resolution * 1000000000::BIGINT) FROM _b_profiles p JOIN rollup_state s ON p.ts < s.done_until"
        )
    return "BEGIN TRANSACTION;\n" + ";\n".join(parts) + ";"


def _ignore(stage: str, seconds: float) -> None:
    pass


def _fail(batch: list[tuple[Pending, Future[WriteResult]]], exc: BaseException) -> None:
    err = exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}")
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(err)


def _follow(fut: Future[WriteResult]) -> Callable[[Future[WriteResult]], None]:
    """A copy of a profile being written gets the first one's outcome: stored (as a duplicate) or its error."""

    def done(leader: Future[WriteResult]) -> None:
        exc = leader.exception()
        if exc is None:
            fut.set_result(WriteResult(None, duplicate=True))
        else:
            fut.set_exception(exc)

    return done
