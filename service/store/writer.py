"""The writer: a push is acknowledged once it is in the journal; DuckDB gets it in large batches.

DuckDB allows one writer per file, and a profile must become visible all at once (samples,
stacks, symbols, rollups) or not at all, also when the process is killed mid-batch. A DuckDB
transaction costs 10-20 ms of CPU whatever its size, so two threads split the work:

- the **journal thread** takes whatever was submitted since its last round, answers copies of
  stored or accepted profiles as duplicates, appends the rest to the :class:`Journal` with one
  sync, and acknowledges them: that is the durable point (a SIGKILL after it loses nothing;
  :meth:`Writer.replay` commits what a crash left);
- the **writer thread** commits accepted pushes to DuckDB, as many per transaction as have
  accumulated (up to ``max_batch`` profiles), then tells the journal they may be forgotten.

Reads call :meth:`Writer.settle` first, so a client that pushed and then queries sees its
profile: an accepted profile becomes visible within one commit. When DuckDB cannot be written (a
full disk), accepted profiles stay in memory and in the journal and are retried until the write
succeeds; new pushes are refused with the reason until then, so the backlog cannot grow.

Being the one serial step, the writer thread does as little as possible: profiles arrive with
their rows built by the ingest threads (:mod:`service.store.staging`), so a batch is a
concatenation. Rows are built again here only when they went stale (retention cleared the known
ids after they were staged) or came from the journal after a restart. A push that fails in
DuckDB after its acknowledgement (never bad input: that is refused before) is retried alone;
if it fails alone it is written out as a pprof file (:func:`service.store.records.reject`).

On a DuckLake shared by several nodes (``shared``), each node's writer is one of several: a
batch only appends (``series`` first/last seen are folded by maintenance,
:mod:`service.store.series_fold`), a commit that lost to another node's is run again at once
(:func:`is_commit_conflict`; counted in ``conflicts``) instead of refusing pushes as a full disk
does, and what only the lake knows is asked of it: whether a push was stored (another node may
have stored it), and whether a rolled-up bucket went stale (the maintenance node rolls up).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from service.errors import ProfstoreError, StoreError
from service.pprof.decode import Envelope, decode_batch
from service.store import records
from service.store.ids import KnownIds, RecentGroups
from service.store.journal import Journal
from service.store.normalize import Meta, Normalized, Rows, normalize_batch
from service.store.series_index import insert_series
from service.store.staging import Staged, assemble

__all__ = ["Pending", "Task", "WriteResult", "Writer", "is_commit_conflict"]

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
    """A profile on its way to DuckDB: what it is stored as, its rows, and its push's journal record."""

    meta: Meta
    staged: Staged | None  # its rows, built in the ingest thread or process; None: built by the writer
    record: bytes  # the journal record of its push (every part of the push shares it); b"": not journaled
    part: int = 0  # its place in that record
    env: Envelope | None = None  # kept in memory when there is no record (a scrape)

    def envelope(self) -> Envelope:
        """The decoded profile, read back from its record: only when rows are built again (a replay,
        rows staged before retention cleared the known ids) or the profile is kept as a file."""
        if self.env is not None:
            return self.env
        return records.decode(self.record)[self.part][0]


@dataclass(frozen=True, slots=True)
class Task:
    """Other work that must hold the one write connection (compaction): run between batches."""

    run: Callable[[duckdb.DuckDBPyConnection], object]
    done: Future[object]


@dataclass(frozen=True, slots=True)
class WriteResult:
    item: Normalized | None  # None when the profile was stored before
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Accepted:
    """One acknowledged push (its profiles commit together) and the journal segment of its record."""

    profiles: list[Pending]
    segment: int


# The segment of a profile that has no journal record: a scrape, which no client waits to hear
# is durable (a crash before its commit loses it like a missed scrape) and which would cost the
# collector a record per scrape (measured: half the runs of 1,000 targets x 5 types skipped).
UNLOGGED = -1

# While DuckDB cannot be written, the writer retries every RETRY_S, or at once when a push
# arrives; that push waits up to RETRY_WAIT_S for the outcome, then is refused with the reason.
RETRY_S = 0.5
RETRY_WAIT_S = 2.0

# Errors of a write that say nothing about its profiles: the write is retried until it succeeds.
# (A full disk fails a COMMIT with a TransactionException "Failed to commit: Could not write file";
# an unreachable lake catalog or S3 raises an IOException.)
_WANT_OF_SPACE = (duckdb.IOException, duckdb.OutOfMemoryException, duckdb.TransactionException, OSError)

# A batch that lost a commit race on a shared DuckLake is run again at once, up to this many
# attempts in all, after a random pause of up to CONFLICT_JITTER_S times the attempt (so that two
# nodes that met do not meet again); past that it is handled like any failed write.
CONFLICT_ATTEMPTS = 8
CONFLICT_JITTER_S = 0.02
# How long a shared writer remembers its own commits for "stored before?": far longer than the
# node's copy of the lake takes to catch up with them (service.store.replica.CATCH_UP_S).
OWN_KEEP_S = 60.0


def is_commit_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a DuckLake commit that lost to another node's commit.

    With DuckLake's own retry off (``ducklake_max_retry_count = 0``, see service/store/lake.py),
    a commit fails whenever another one landed since its transaction began: "Failed to commit
    DuckLake transaction", with "Transaction conflict" (an insert met a delete) or a duplicate
    snapshot id. Nothing is wrong with the rows or the lake: running the statements again, on
    the newer snapshot, succeeds (and re-evaluates the anti-joins that keep symbols unique).
    """
    return isinstance(exc, duckdb.TransactionException) and "Failed to commit DuckLake transaction" in str(exc)


def _reason(exc: BaseException) -> str:
    """Why a write failed, for the 503 and the log: the error's lines on one line (a lake's error
    names the catalog or S3 failure on a later line), without a password, at most 400 characters."""
    text = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return re.sub(r"(?i)password=\S+", "password=…", text)[:400]


class _Flush:
    """Put in the writer's queue by a read waiting for acknowledged profiles: commit what is gathered now."""


_FLUSH = _Flush()


@dataclass(frozen=True, slots=True)
class Submission:
    """A push waiting for the journal thread: its profiles with their callers' futures, and its record."""

    items: list[tuple[Pending, Future[WriteResult]]]
    record: bytes


class Writer:
    """A journal thread that acknowledges, a writer thread that commits; see the module docstring.

    (A two-thread commit pipeline — build batch N+1 while batch N commits — measured slower on two
    cores: the extra thread's trips through the GIL cost more than the overlap won.)
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        known: KnownIds,
        journal: Journal,
        *,
        max_batch: int = 256,
        max_wait_s: float = 0.25,
        max_unapplied: int = 2048,
        observe: Callable[[float, int], None] | None = None,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        lookup_cursor: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        wal: Path | None = None,
        rejected: Path | None = None,
        checkpoint_idle_bytes: int = 16 << 20,
        checkpoint_busy_bytes: int = 64 << 20,
        shared: bool = False,
    ) -> None:
        self._con = con
        # Other nodes write to the same store (a DuckLake): commits may conflict and are run again;
        # series first/last seen are folded by maintenance, not updated in every batch; "stored
        # before?" and stale rollup buckets are asked of the store, which only this node's memory
        # would miss (see the methods that test it).
        self._shared = shared
        self.conflicts = 0  # commits that lost to another node's and were run again (for /metrics)
        self._snapshot_seen: int | None = None  # the lake snapshot up to which deletions were looked for
        # The journal thread's lookups run on cursors of their own, opened as the Database opens its
        # readers' (on a DuckLake, with the lake in use).
        self._lookup_cursor = lookup_cursor or (lambda: self._con.cursor())
        self._journal = journal
        self._rejected = rejected or journal.directory / "rejected"
        # The write-ahead log, checkpointed by this thread between batches (see _maybe_checkpoint):
        # when nothing waits and it passed ``checkpoint_idle_bytes``, or whatever waits past
        # ``checkpoint_busy_bytes``. DuckDB's own automatic checkpoint would run inside a COMMIT,
        # delaying every read that settles on it.
        self._wal = wal
        self._checkpoint_idle = checkpoint_idle_bytes
        self._checkpoint_busy = checkpoint_busy_bytes
        self._checkpoint_failed_at = 0  # WAL size of a failed attempt: the next waits for more growth
        # A failed checkpoint (disk full) invalidates the whole DuckDB instance until it is opened
        # again; ``reopen`` does that (replaying the WAL: everything committed is kept).
        self._reopen = reopen
        self._fatal: str | None = None  # why the connection is unusable, until reopened
        # Why accepted profiles cannot be committed (set by a fatal error, cleared by the next
        # successful commit): new pushes are refused meanwhile, and reads stop waiting for them.
        self._failing: str | None = None
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
        self._max_unapplied = max_unapplied
        # Accepted and not yet committed: group_id -> 1. With the counts below and _groups, under _cond.
        self._pending: dict[int, int] = {}
        # Shared: this node's commits of the last OWN_KEEP_S, group_id -> monotonic commit time, in
        # commit order. The store a lookup asks (the node's copy of the lake) catches up with a
        # delay; this holds what this node committed meanwhile.
        self._own: dict[int, float] = {}
        self._accepted = 0  # profiles acknowledged (or replayed) so far
        self._applied = 0  # of those, committed (or found stored, or rejected); FIFO, so a count suffices
        self._cond = threading.Condition()
        self._closing = False
        self._retry_now = False  # a push is waiting to hear whether DuckDB can be written again
        self._incoming: queue.Queue[Submission | None] = queue.Queue()
        self._queue: queue.Queue[Accepted | Task | _Flush | None] = queue.Queue()
        self._accepter = threading.Thread(target=self._accept_loop, name="profstore-journal", daemon=True)
        self._thread = threading.Thread(target=self._run, name="profstore-writer", daemon=True)
        self._accepter.start()
        self._thread.start()

    def replay(self, found: list[tuple[int, bytes]]) -> int:
        """Commit the journal records a previous run left (before new pushes: call it first).

        Raises a clear error for a record this release cannot read, rather than start without it.
        """
        pushes = []
        for segment, payload in found:
            try:
                parts = records.decode(payload)
            except Exception as exc:
                raise StoreError(
                    f"cannot read a journal record in {self._journal.directory} ({exc}); move that directory aside "
                    "to start without the profiles it holds"
                ) from exc
            pushes.append(Accepted([Pending(meta, None, payload, i) for i, (_, meta) in enumerate(parts)], segment))
        with self._cond:  # pending like accepted pushes, so that a copy pushed meanwhile is a duplicate
            for a in pushes:
                for p in a.profiles:
                    self._pending[p.meta.group_id] = 1
            self._accepted += sum(len(a.profiles) for a in pushes)
        for a in pushes:
            self._queue.put(a)
        return len(pushes)

    def submit(self, item: Pending) -> Future[WriteResult]:
        return self.submit_together([item])[0]

    def submit_together(self, items: list[Pending]) -> list[Future[WriteResult]]:
        """Profiles of one push (each with its rows staged): accepted together or refused together.

        They come with their journal record, encoded by the caller (its thread or an ingest
        worker): the journal thread, which every push waits for, is left the write and the sync.
        """
        futs: list[Future[WriteResult]] = [Future() for _ in items]
        if not self._accepter.is_alive():
            for fut in futs:
                fut.set_exception(StoreError("the writer is stopped"))
            return futs
        assert all(p.record is items[0].record for p in items), "the parts of one push share its record"
        self._incoming.put(Submission(list(zip(items, futs, strict=True)), items[0].record))
        return futs

    def call(self, run: Callable[[duckdb.DuckDBPyConnection], object]) -> Future[object]:
        """Run ``run(connection)`` in the writer thread, after the profiles acknowledged before it are committed."""
        task = Task(run, Future())
        if not self._thread.is_alive():
            task.done.set_exception(StoreError("the writer is stopped"))
        else:
            self._queue.put(task)
        return task.done

    def settle(self, timeout_s: float) -> None:
        """Wait until every profile acknowledged before this call is committed (a read sees its own
        pushes), at most ``timeout_s``, and not at all while commits are failing."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._accepted
            if self._applied < target and self._failing is None:
                self._queue.put(_FLUSH)  # commit now rather than at the end of the linger
            while self._applied < target and self._failing is None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return
                self._cond.wait(left)

    def observe_stages(self, observe: Callable[[str, float], None]) -> None:
        """Report the seconds of each step (dedup, journal, assemble, append, commit, checkpoint) to ``observe``."""
        self._stage = observe

    def depth(self) -> int:
        """Profiles submitted or acknowledged and not yet committed."""
        with self._cond:
            return self._incoming.qsize() + self._accepted - self._applied

    def close(self) -> None:
        """Commit everything acknowledged so far (unless DuckDB cannot be written: the journal keeps it), then stop."""
        self._incoming.put(None)
        self._accepter.join()
        self._thread.join()
        self._journal.close()

    # The journal thread.

    def _accept_loop(self) -> None:
        while True:
            first = self._incoming.get()
            if first is None:
                break
            subs = [first]
            stop = False
            while True:  # everything that arrived meanwhile shares one sync
                try:
                    nxt = self._incoming.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                subs.append(nxt)
            try:
                self._accept(subs)
            except Exception as exc:  # every failure must reach the callers, typed; the thread lives on
                log.exception("accepting %d pushes failed", len(subs))
                _fail([x for sub in subs for x in sub.items], exc)
            if stop:
                break
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._queue.put(None)

    def _accept(self, subs: list[Submission]) -> None:
        with self._cond:  # a backlog DuckDB has not caught up with holds new pushes back
            while self._accepted - self._applied >= self._max_unapplied and self._failing is None:
                self._cond.wait(1.0)
            if self._failing is not None:  # ask the writer to try again now: the disk may have room again
                self._retry_now = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._failing is None, RETRY_WAIT_S)
            failing = self._failing
        if failing is not None:
            _fail([x for sub in subs for x in sub.items], self._unavailable(failing))
            return
        t = time.perf_counter()
        stored = self._stored_or_accepted([p.meta for sub in subs for p, _ in sub.items])
        seen: set[int] = set()
        fresh: list[Submission] = []
        copies: list[Future[WriteResult]] = []
        for sub in subs:
            new = []
            for p, fut in sub.items:
                g = p.meta.group_id
                if g in stored or g in seen:
                    copies.append(fut)
                else:
                    seen.add(g)
                    new.append((p, fut))
            if len(new) == len(sub.items):
                fresh.append(sub)
            elif new:  # part of a push was stored before: the rest gets a record of its own
                record = records.encode_record([(p.envelope(), p.meta) for p, _ in new])
                fresh.append(
                    Submission([(replace(p, record=record, part=i), f) for i, (p, f) in enumerate(new)], record)
                )
        t1 = time.perf_counter()
        self._stage("dedup", t1 - t)
        if fresh:
            try:
                logged = [sub.record for sub in fresh if sub.record]
                segment = self._journal.append(logged) if logged else UNLOGGED
            except OSError as exc:
                _fail([x for sub in fresh for x in sub.items], StoreError(f"journal write failed: {exc}"))
                fresh = []
            else:
                with self._cond:
                    for sub in fresh:
                        for p, _ in sub.items:
                            self._pending[p.meta.group_id] = 1
                        self._accepted += len(sub.items)
                for sub in fresh:  # queued before anyone hears back, so a task called after sees them
                    self._queue.put(Accepted([p for p, _ in sub.items], segment if sub.record else UNLOGGED))
                for sub in fresh:
                    for p, fut in sub.items:
                        assert p.staged is not None, "a submitted profile comes with its rows staged"
                        fut.set_result(WriteResult(p.staged.item, duplicate=False))
            finally:
                self._stage("journal", time.perf_counter() - t1)
        for fut in copies:
            fut.set_result(WriteResult(None, duplicate=True))

    def _stored_or_accepted(self, metas: list[Meta]) -> set[int]:
        """The keys of ``metas`` already accepted (waiting to commit) or stored: from memory above the
        watermark (:class:`RecentGroups`), from the file below it or while that memory is being rebuilt."""
        with self._cond:
            out = {m.group_id for m in metas if m.group_id in self._pending}
            g = self._groups
            if self._shared:  # this node's own commits, which the node's copy of the lake may not hold yet
                out |= {m.group_id for m in metas if m.group_id in self._own}
            if self._stale:
                older = [m for m in metas if m.group_id not in out]
            else:
                out |= {m.group_id for m in metas if g.covers(m.ts) and g.stored(m.group_id)}
                older = [m for m in metas if not g.covers(m.ts) and m.group_id not in out]
        if older:
            # A commit moves a key from _pending to the file, never the other way: what was not
            # pending above and is not in the file now was never accepted.
            cur = self._lookup_cursor()
            try:
                out |= _select_stored(cur, older)
            finally:
                cur.close()
        return out

    def lake_profiles(self, groups: pa.Table) -> None:
        """Profiles (``group_id``, ``ts``) the lake holds, any node's, as the node's copy of the lake
        read them: in a shared store, "stored before?" finds them in memory above the watermark
        (py-spy: asking the copy on every accept was an eighth of a lake node's CPU under ingest).

        The copy reads every node's commits, in snapshot order, so above the watermark the memory
        holds all the lake's profiles up to the copy's snapshot, and this node's own after it: what
        asking the copy would answer.
        """
        ids = groups.column("group_id").to_pylist()
        times = groups.column("ts").to_pylist()
        with self._cond:
            for g, t in zip(ids, times, strict=True):
                self._groups.add(g, t)

    def lake_reset(self, newest: int | None) -> None:
        """The node's copy of the lake was taken again, or rows of ``profiles`` were deleted: start
        again above ``newest``, the newest profile time the copy holds."""
        with self._cond:
            self._groups.reset(-(2**63) if newest is None else newest)

    # The writer thread.

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if isinstance(first, Task):
                if self._fatal is not None:
                    self._recover()
                self._task(first)
                continue
            if isinstance(first, _Flush):
                continue  # nothing is waiting to be committed
            batch = [first]  # a push is never split across batches
            size = len(first.profiles)
            # Gather for up to the linger: an acknowledgement no longer waits for the commit, and
            # a transaction costs the same for one profile as for a hundred. A read waiting for
            # these profiles (settle) cuts the linger short.
            deadline = time.monotonic() + self._max_wait_s
            stop = False
            task: Task | None = None
            while size < self._max_batch:
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
                if isinstance(nxt, _Flush):
                    break
                batch.append(nxt)
                size += len(nxt.profiles)
            t0 = time.monotonic()
            self._apply(batch)
            if self._observe is not None:
                self._observe(time.monotonic() - t0, size)
            self._maybe_checkpoint()
            if task is not None:
                self._task(task)
            if stop:
                return

    def _apply(self, batch: list[Accepted]) -> None:
        """Commit ``batch``: retried while DuckDB cannot be written, one push at a time if it fails otherwise."""
        todo = batch
        while todo:
            if self._failing is not None and self._closing:
                return  # the journal keeps them for the next start
            if self._fatal is not None:
                self._recover()
                if self._fatal is not None:
                    continue
            try:
                self._write(todo)
                self._done(todo)
                return
            except Exception as exc:
                if self._must_wait(exc):
                    continue
                if len(todo) > 1:
                    log.exception("a batch of %d pushes failed; committing them one at a time", len(todo))
            # One push must not take its batch down with it: each alone, so that only one that
            # fails by itself is given up on.
            rest = list(todo)
            while rest:
                try:
                    try:
                        self._write(rest[:1])
                    except Exception as exc:
                        if self._must_wait(exc):
                            break
                        self._reject(rest[0], exc)
                    self._done(rest[:1])
                except OSError as exc:  # it could not even be kept as a file: wait, as for a full disk
                    self._must_wait(exc)
                    break
                rest.pop(0)
            todo = rest

    def _must_wait(self, exc: BaseException) -> bool:
        """Whether a failed write failed for want of a writable database (a full disk, an invalidated
        instance) rather than for its profiles: then note why, and wait before the retry."""
        with contextlib.suppress(duckdb.Error):  # DuckDB may have ended the failed transaction itself
            self._con.execute("ROLLBACK")
        fatal = self._note_fatal(exc)
        if not (fatal or isinstance(exc, _WANT_OF_SPACE) or "Could not write file" in str(exc)):
            return False
        why = self._fatal or _reason(exc)
        if self._failing is None:
            log.error("cannot write to the database (%s); acknowledged profiles wait in the journal", why)
        with self._cond:
            self._failing = why
            self._cond.notify_all()
            # A full disk stays full for a while: do not spin on it, but try again at once when a
            # push comes (it waits RETRY_WAIT_S for the outcome before it is refused).
            self._cond.wait_for(lambda: self._retry_now or self._closing, RETRY_S)
            self._retry_now = False
        return True

    def _reject(self, push: Accepted, exc: BaseException) -> None:
        """An acknowledged push that fails alone, not for want of space: keep it as files, say so loudly.

        Raises OSError when the files cannot be written; the push is then retried like any write
        that met a full disk.
        """
        for p in push.profiles:
            path = records.reject(self._rejected, p.envelope(), p.meta, str(exc))
            log.error("an acknowledged profile could not be stored (%s); kept as %s", exc, path)

    def _done(self, pushes: list[Accepted]) -> None:
        with self._cond:
            for a in pushes:
                for p in a.profiles:
                    self._pending.pop(p.meta.group_id, None)
                self._applied += len(a.profiles)
            self._failing = None
            self._cond.notify_all()
        self._journal.applied_all(a.segment for a in pushes if a.segment != UNLOGGED)

    def _write(self, pushes: list[Accepted]) -> None:
        """One transaction for the profiles of ``pushes`` not stored yet; on a shared lake, run again
        at once when its commit lost to another node's (:func:`is_commit_conflict`)."""
        attempt = 1
        while True:
            t = time.perf_counter()
            try:
                self._write_once(pushes)
                return
            except Exception as exc:
                if not (self._shared and is_commit_conflict(exc)) or attempt >= CONFLICT_ATTEMPTS:
                    raise
                with contextlib.suppress(duckdb.Error):  # DuckDB may have ended the failed transaction itself
                    self._con.execute("ROLLBACK")
                self.conflicts += 1
                self._after_conflict()
                self._stage("conflict", time.perf_counter() - t)
            time.sleep(random.uniform(0, CONFLICT_JITTER_S * attempt))
            attempt += 1

    def _after_conflict(self) -> None:
        """Forget the ids known committed if another node deleted rows since this writer last looked.

        A conflict says other nodes committed meanwhile. Inserts leave every id this node knows
        committed still committed, but a deletion (retention, a dedupe or fold rewriting a table,
        normally behind the write fence) may have removed one: then ``KnownIds`` is cleared, and the
        batch is built again with every symbol it needs. Asked of the lake's snapshot list, once
        per conflict, from the snapshot of the last look (or of the writer's last refresh); when
        that is unknown or the list cannot be read, cleared anyway.
        """
        try:
            newest, deleted = self._lake_snapshots(-1 if self._snapshot_seen is None else self._snapshot_seen)
        except (duckdb.Error, TypeError) as exc:
            log.warning("cannot read the lake's snapshots after a commit conflict (%s); forgetting known ids", exc)
            self._known.clear()
            self._snapshot_seen = None
            return
        if self._snapshot_seen is None or deleted:
            self._known.clear()
        self._snapshot_seen = newest

    def _lake_snapshots(self, after: int) -> tuple[int | None, bool]:
        """The lake's newest snapshot, and whether any snapshot after ``after`` deleted rows."""
        catalog = self._con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        newest, deleted = self._con.execute(  # type: ignore[misc]
            f"SELECT max(snapshot_id), bool_or(len(list_filter(map_keys(changes), k -> k LIKE '%delete%' "
            f"OR k LIKE '%drop%')) > 0) FILTER (WHERE snapshot_id > $after) FROM ducklake_snapshots('{catalog}')",
            {"after": after},
        ).fetchone()
        return newest, bool(deleted)

    def _write_once(self, pushes: list[Accepted]) -> None:
        """One transaction for the profiles of ``pushes`` not stored yet.

        The journal thread accepted only profiles that were not; a replayed record (rows not
        staged) may have been committed before the crash, so only those are looked up again.
        (On a shared lake, a copy pushed to another node in the instant between this node's
        acceptance and its commit is stored twice: looking every profile up again here would
        narrow that window, not close it, for a lake query in every batch.)
        """
        profiles = [p for a in pushes for p in a.profiles]
        self._refresh()
        stored = self._stored_groups([p.meta for p in profiles if p.staged is None])
        todo = [p for p in profiles if p.meta.group_id not in stored]
        if not todo:
            return
        t = time.perf_counter()
        if all(p.staged is not None and p.staged.generation == self._known.generation for p in todo):
            rows = assemble([p.staged for p in todo], self._known)  # type: ignore[misc]  # staged: checked
        else:  # staged before retention cleared the known ids, or read back from the journal
            decoded, errors = decode_batch([p.envelope() for p in todo])
            bad = next((e for e in errors if e is not None), None)
            if bad is not None:
                raise bad
            rows = normalize_batch(decoded, [p.meta for p in todo], self._known)
        self._stage("assemble", time.perf_counter() - t)
        self._transaction(rows, todo)

    def _maybe_checkpoint(self) -> None:
        """Checkpoint after a batch was committed, not inside the next COMMIT.

        A checkpoint writes everything the WAL holds into the database file: hundreds of
        milliseconds once the WAL holds megabytes. Done here, it delays no acknowledgement and,
        when the queue is empty, no read. A failure invalidates the instance (a full disk) like
        any failed write; the writer reopens it before the next.
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
            task.done.set_exception(self._unavailable(self._fatal))
            return
        with self._cond:  # whatever it writes or deletes, the memory of the file is rebuilt
            self._stale = True
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

    @staticmethod
    def _unavailable(why: str) -> StoreError:
        return StoreError(f"database unavailable after a failed write ({why}); writes resume once it reopens")

    def _recover(self) -> None:
        """Open the database again after a fatal error; on failure the next batch or task tries again."""
        if self._reopen is None:
            time.sleep(0.5)
            return
        try:
            self._con = self._reopen()
        except Exception as exc:
            log.error("reopening the database failed (%s); retrying with the next write", exc)
            time.sleep(0.5)  # a queue of writes must not spin on a disk that is still full
            return
        self._known.clear()  # a fresh start: ids are checked against the file again
        with self._cond:
            self._stale = True
        self._checkpoint_failed_at = 0
        log.warning("database reopened after: %s", self._fatal)
        self._fatal = None

    def _transaction(self, rows: Rows, todo: list[Pending]) -> None:
        con = self._con
        # The batch's series that may be new: those not known committed (most batches: none).
        series = rows.tables["series"]
        rows.tables["new_series"] = series.filter(pa.array(self._known.unknown("series", _series_ids(series))))
        self._append(con, rows)
        with self._cond:
            for p in todo:
                self._groups.add(p.meta.group_id, p.meta.ts)
            if self._shared:
                now = time.monotonic()
                self._own.update((p.meta.group_id, now) for p in todo)
                for group, t in list(self._own.items()):  # oldest first: stop at the first one to keep
                    if t > now - OWN_KEEP_S:
                        break
                    del self._own[group]
        for kind, new in rows.new_ids.items():
            self._known.add(kind, new)
        self._known.add("series", _series_ids(series))

    def _stored_groups(self, metas: list[Meta]) -> set[int]:
        """The keys of replayed profiles already in ``profiles``: from memory for profiles newer
        than the watermark (:class:`RecentGroups`), from the file for the others."""
        if not metas:
            return set()
        t = time.perf_counter()
        try:
            if self._shared:  # replayed at start, before the node's copy of the lake fed RecentGroups
                return _select_stored(self._con, metas)
            g = self._groups
            out = {m.group_id for m in metas if g.covers(m.ts) and g.stored(m.group_id)}
            older = [m for m in metas if not g.covers(m.ts)]
            return out | _select_stored(self._con, older) if older else out
        finally:
            self._stage("dedup", time.perf_counter() - t)

    def _refresh(self) -> None:
        """Rebuild what the writer remembers of the file, if a task or a reopen may have changed it."""
        if not self._stale:
            return
        newest, done = self._con.execute(
            "SELECT (SELECT max(ts) FROM profiles), (SELECT max(done_until) FROM rollup_state)"
        ).fetchone() or (None, None)
        with self._cond:
            self._groups.reset(-(2**63) if newest is None else int(newest))
            self._stale = False
        self._done_until = None if done is None else int(done)
        if self._shared:  # KnownIds hold as of now (a task that deleted rows cleared them): look from here
            try:
                self._snapshot_seen = self._lake_snapshots(2**62)[0]
            except (duckdb.Error, TypeError):
                self._snapshot_seen = None

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
        # Only a profile older than the newest rolled-up bucket can make a bucket stale. On a shared
        # lake the maintenance node moves ``done_until``, unseen here: the statement's join decides.
        oldest = pc.min(t["profiles"]["ts"]).as_py()
        dirty = self._shared or (self._done_until is not None and (oldest is None or oldest < self._done_until))
        names = []
        for name in ("series", *(["new_series"] if new_series else []), *present, *_FACTS):
            con.register(f"_b_{name}", t[name])
            names.append(f"_b_{name}")
        try:
            t0 = time.perf_counter()
            con.execute(_script(present, new_series=new_series, dirty=dirty, fold=not self._shared))
            t1 = time.perf_counter()
            self._stage("append", t1 - t0)
            # COMMIT on its own call (one more return through the GIL) so that /metrics can tell
            # the statements from the commit: the WAL's write and fsync, and any checkpoint.
            con.execute("COMMIT")
            self._stage("commit", time.perf_counter() - t1)
        except BaseException:
            # Undo first: in an aborted transaction the views could not be dropped, and the retry
            # would fail to register them again (found with the object store cut off mid-batch).
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            raise
        finally:
            for n in names:
                con.unregister(n)


def _series_ids(series: pa.Table) -> npt.NDArray[np.uint64]:
    return series.column("series_id").to_numpy().astype(np.uint64, copy=False)


def _script(interned: list[str], *, new_series: bool, dirty: bool = True, fold: bool = True) -> str:
    """The batch's statements. Series rows come with every profile (their last_seen moves on), but
    a new series is rare in a steady fleet, and finding which are new reads every stored
    ``series_id`` (milliseconds at 100,000 series): only the rows of ``_b_new_series``, those
    not known committed (``KnownIds``, which retention clears), are looked for, and with none
    (``new_series`` False) only the update runs.

    ``fold`` False (a shared lake): no update of ``series``. Two nodes updating it conflict at
    table level, and each update rewrote the table's file; readers widen first/last seen with
    the profiles committed since the last fold instead (``series_seen``, migration 0005), and
    maintenance folds them in (:func:`service.store.series_fold.fold`).
    """
    keys = dict(_INTERNED)
    parts = insert_series("_b_new_series") if new_series else []
    if fold:
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


def _select_stored(con: duckdb.DuckDBPyConnection, metas: list[Meta]) -> set[int]:
    """The keys of ``metas`` in ``profiles``, asked of the file.

    A key hashes its profile's time, so only rows of the batch's time range can match; the
    range lets DuckDB skip every row group outside it by its min/max instead of scanning the
    whole table.
    """
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


def _fail(batch: list[tuple[Pending, Future[WriteResult]]], exc: BaseException) -> None:
    err = exc if isinstance(exc, ProfstoreError) else StoreError(f"write failed: {exc}")
    for _, fut in batch:
        if not fut.done():
            fut.set_exception(err)
