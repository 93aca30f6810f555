"""The database object: one DuckDB connection per process, the writer and its journal, cursors for reads.

A DuckDB file admits one process, so collector, writer and API share this object. Reads take
their own cursor (``read()``), which never blocks ingestion, and run under a time limit:
a watchdog calls ``interrupt()`` on the cursor and the read raises ``QueryTimeout``. A read
first lets the writer commit what was acknowledged before it (``Writer.settle``), so a client
reads its own pushes. Pushes are durable in ``journal/`` beside the database file from their
acknowledgement until DuckDB has them; what a crash left there is committed at the next start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import duckdb

from service.config import StorageSettings
from service.errors import QueryTimeout, StoreError
from service.store import cluster, lake, migrate
from service.store.ids import KnownIds
from service.store.journal import Journal
from service.store.replica import Behind, Replica
from service.store.writer import Writer

if importlib.util.find_spec("pandas") is None:
    # duckdb-python tries ``import pandas`` for every bound parameter of every query; without
    # pandas each try walks sys.path again, 0.2-0.5 ms a query (measured: a 6-parameter read
    # 0.60 ms -> 0.38 ms). Recording the absence once makes each later try a dict lookup.
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]

__all__ = ["Database"]

log = logging.getLogger(__name__)

DB_FILE = "profstore.duckdb"
JOURNAL_DIR = "journal"
EXTENSION_DIR = "duckdb_extensions"  # the lake's DuckDB extensions, installed from their wheels
# How long a read waits for the writer to commit what was acknowledged before it. Normally one
# batch (milliseconds); the bound only matters when DuckDB is slow, and then a read answers
# with what is committed rather than wait for the rest.
SETTLE_S = 10.0
# DuckDB checkpoints by itself inside the COMMIT that takes the WAL past this (16 MiB by default),
# while that batch's callers wait. The writer checkpoints between batches instead (Writer's
# checkpoint_idle_bytes / checkpoint_busy_bytes); DuckDB's own stays as a backstop far above them.
AUTO_CHECKPOINT = "1GB"


class Database:
    def __init__(
        self,
        data_dir: Path,
        *,
        read_timeout_s: float = 30.0,
        max_batch: int = 256,
        linger_s: float = 0.25,
        max_unapplied: int = 2048,
        observe_batch: Callable[[float, int], None] | None = None,
        checkpoint_idle_bytes: int = 16 << 20,
        checkpoint_busy_bytes: int = 64 << 20,
        memory_limit: str | None = None,
        storage: StorageSettings | None = None,
        address: str = "",
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_FILE
        self._memory_limit = memory_limit
        self._lake = storage if storage is not None and storage.backend == "ducklake" else None
        self._extensions = data_dir / EXTENSION_DIR
        self.node_name = lake.node_name(data_dir)
        self.cluster: cluster.Node | None = None
        self.replica: Replica | None = None
        if self._lake is None:
            migrate.upgrade(self.path)
            self._con = self._connect()
        else:
            self._con = lake.connect(self._lake, self._extensions, attach_lake=False)
            try:
                migrate.upgrade_shared(self._con, self._lake, self._extensions, self.node_name)
            except BaseException:
                self._con.close()
                raise
        self.read_timeout_s = read_timeout_s
        self.known = KnownIds()
        journal = Journal(data_dir / JOURNAL_DIR)
        left = journal.recover()
        self.writer = Writer(
            self._cursor(),
            self.known,
            journal,
            max_batch=max_batch,
            max_wait_s=linger_s,
            max_unapplied=max_unapplied,
            observe=observe_batch,
            reopen=self._reopen,
            lookup_cursor=self._lookup_cursor,
            wal=self.path.with_name(self.path.name + ".wal") if self._lake is None else None,
            checkpoint_idle_bytes=checkpoint_idle_bytes,
            checkpoint_busy_bytes=checkpoint_busy_bytes,
            shared=self._lake is not None,
        )
        if left:
            try:
                replayed = self.writer.replay(left)
            except StoreError:
                self.close()  # the journal stays as it is
                raise
            log.warning("committing %d pushes the journal kept from the last run", replayed)
        if self._lake is not None:
            self.cluster = cluster.Node(self._cursor, self.node_name, address, self.pause_writer)
            try:
                self.cluster.start()
            except duckdb.Error as exc:
                self.close()
                raise StoreError(f"cannot join the lake's nodes: {exc}") from exc
            try:
                self.replica = Replica(self._con, self.path.parent, self.writer)
            except duckdb.Error as exc:
                self.close()
                raise StoreError(f"cannot copy the lake for reading: {exc}") from exc
            self.replica.start()

    @property
    def shared(self) -> bool:
        """Whether other nodes write to the same store (a lake): maintenance then runs under the fence."""
        return self._lake is not None

    def pause_writer(self, resume: threading.Event) -> Future[object]:
        """Stop the writer between batches until ``resume`` is set, for the lake's maintenance fence;
        the returned future is done once it stopped. It forgets the symbol ids it remembers as stored
        (maintenance may delete them), so every batch after the fence checks them again."""
        stopped: Future[object] = Future()

        def hold(_con: duckdb.DuckDBPyConnection) -> None:
            self.known.clear()
            stopped.set_result(None)
            resume.wait(cluster.FENCE_S)

        def ended(task: Future[object]) -> None:  # the task failed or was cancelled before it held the writer
            if not stopped.done():
                failed = None if task.cancelled() else task.exception()
                stopped.set_exception(failed or StoreError("the writer is closing"))

        self.writer.call(hold).add_done_callback(ended)
        return stopped

    def maintenance_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor of its own for maintenance on a lake (it runs beside the paused writer, not in it)."""
        return self._cursor()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        if self._lake is not None:  # opened again: the lake, and the catalog's database for leases and heartbeats
            con = lake.connect(self._lake, self._extensions)
            try:
                cluster.ensure_tables(con, self._lake.catalog or "")
            except BaseException:
                con.close()
                raise
            return con
        try:
            return duckdb.connect(
                str(self.path),
                config={
                    "autoinstall_known_extensions": "false",
                    "autoload_known_extensions": "false",
                    "checkpoint_threshold": AUTO_CHECKPOINT,
                    **({"memory_limit": self._memory_limit} if self._memory_limit else {}),
                },
            )
        except duckdb.Error as exc:
            raise (migrate.in_use(self.path, exc) or StoreError(f"cannot open {self.path}: {exc}")) from exc

    def _reopen(self) -> duckdb.DuckDBPyConnection:
        """Close the invalidated instance (its cursors fail and are closed by their readers) and open
        the file again; the writer calls this in its own thread and gets its new cursor."""
        with contextlib.suppress(duckdb.Error):
            self._con.close()
        self._con = self._connect()
        if self.replica is not None:  # attached to the closed instance: a new copy on the new one
            self.replica.close()
            self.replica = Replica(self._con, self.path.parent, self.writer)
            self.replica.start()
        return self._cursor()

    def _lookup_cursor(self) -> duckdb.DuckDBPyConnection:
        """Where the writer asks whether pushes are stored already: on a lake this node's copy as it
        is, the lake itself until the copy exists (the journal's replay at start).

        Not caught up first: asking the catalog on every accept cost ~1.5 ms of CPU each (py-spy
        under the cluster bench's load), and a catch-up ~15 ms per table it reads changes of.
        The writer remembers what this node committed meanwhile; another node's commit is found
        once the copy caught up with it (within :data:`~service.store.replica.CATCH_UP_S`).
        """
        return self._cursor() if self.replica is None else self.replica.cursor()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._con.cursor() if self._lake is None else lake.cursor(self._con)

    @contextlib.contextmanager
    def read(self, timeout_s: float | None = None, *, direct: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for one request, after what was acknowledged before it is committed; interrupted
        (→ ``QueryTimeout``) when it runs too long. On a lake it reads the node's copy, caught up
        first (:mod:`service.store.replica`); ``direct`` reads the lake itself (its files' sizes)."""
        self.writer.settle(SETTLE_S)
        try:
            cur = None
            if self.replica is not None and not direct:
                try:
                    self.replica.catch_up()
                    cur = self.replica.cursor()
                except Behind as exc:  # correct, only slower: the lake itself
                    log.warning("%s: this read runs on the lake", exc)
            if cur is None:
                cur = self._cursor()
        except duckdb.Error as exc:  # closed a moment ago by a reopen, or the lake is out of reach
            raise StoreError(f"read failed: {exc}; retry") from exc
        limit = self.read_timeout_s if timeout_s is None else timeout_s
        fired = threading.Event()

        def stop() -> None:
            fired.set()
            cur.interrupt()

        timer = threading.Timer(limit, stop)
        timer.daemon = True
        timer.start()
        try:
            if self._lake is not None:
                # One transaction per request: every statement of the request reads the same
                # snapshot (and on the lake itself, each statement outside one looks up the newest
                # snapshot and the tables' files in the catalog again: 6.0 -> 3.7 ms measured).
                cur.execute("BEGIN TRANSACTION")
            yield cur
            if self._lake is not None:
                cur.execute("COMMIT")
        except duckdb.Error as exc:
            if fired.is_set():
                raise QueryTimeout(
                    f"query ran longer than {limit:g} s and was stopped; narrow the time range or selector"
                ) from exc
            self.writer.mark_invalid(exc)
            raise StoreError(f"read failed: {exc}") from exc
        finally:
            timer.cancel()
            cur.close()

    def size_bytes(self) -> int:
        """The database file, its write-ahead log and the journal's segments, on disk."""
        total = 0
        for p in (
            self.path,
            self.path.with_name(self.path.name + ".wal"),
            *self.path.parent.glob(f"{JOURNAL_DIR}/*.log"),
        ):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.close()  # first: a paused writer resumes, and the others stop waiting for this node
        if self.replica is not None:
            self.replica.close()
        self.writer.close()
        if self._lake is None:  # on a lake, CHECKPOINT is the lake's whole maintenance (merge, expire, clean)
            with contextlib.suppress(duckdb.Error):
                self._con.execute("CHECKPOINT")
        self._con.close()
