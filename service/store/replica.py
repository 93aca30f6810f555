"""A node's local copy of the lake, that its reads run on: DuckDB speed for a lake's queries.

On a DuckLake every table a statement touches costs round trips to the catalog before a row is
read: the snapshot, the table's data and delete files, their column statistics, schema versions,
inlined rows, and table statistics again for each filter the planner considers. Measured on the
cluster bench's fleet after maintenance (one file per table), a top or flame graph request spent
~180 ms where the same request on a DuckDB file took ~13 ms, and every operator of its plan took
under a millisecond: the time went to those lookups, which DuckLake does not cache between
statements. So each node keeps a DuckDB file (``lake-replica.duckdb`` in its data directory,
rebuilt at start) with every lake table, and keeps it current:

- each lake snapshot lists the tables it inserted into or deleted from (``ducklake_snapshots``);
  :meth:`Replica.catch_up` reads, at the newest snapshot, the rows of those tables committed
  since the last snapshot it applied (DuckLake's ``snapshot_id``, which merging files keeps) and
  replaces the copy's rows of their rowid, and removes from the tables rows were deleted from
  the rows whose rowid the lake no longer holds; all tables in one local transaction, so a
  reader sees whole lake commits and never half of one;
- rows are matched by DuckLake's ``rowid``, which a row keeps for its life (merging and rewriting
  files keep it too), stored beside the row as ``_rid``; the table's own columns are what the
  node's SQL sees, through a view of the same name;
- snapshots that only move rows between files (merging files, rewriting files with deletes,
  flushing inlined rows) change nothing a reader sees and are skipped;
- a gap in the snapshots (expired while this node lagged more than the lake keeps them, 15 min)
  or a change of the schema (another node migrated the lake) copies the whole lake again.

Every read first catches up (:meth:`Replica.catch_up`, one catalog lookup when nothing changed),
so a node answers what the lake holds when the request arrives, as the lake itself would; a
thread also catches up every :data:`CATCH_UP_S`, so that a read rarely waits for more than a
few seconds of other nodes' commits. The writer, the cluster's leases and maintenance keep working
on the lake itself: the copy is for reading only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from service.store import cluster, lake, series_fold

__all__ = ["CATCH_UP_S", "FILE", "Behind", "Replica", "Watcher"]

log = logging.getLogger(__name__)

FILE = "lake-replica.duckdb"
SCHEMA = "rows"  # the copied rows with their rowid; main holds a view per table with its own columns
# Each catch-up costs ~15 ms of CPU per table it reads (DuckLake's catalog lookups,
# measured), whatever the number of snapshots: under ingest ~10 tables, 8 % of a lake node's CPU
# at 2 s (py-spy, cluster bench). Reads catch up themselves; this bounds how long another node's
# push takes to be found by this node's "stored before?" (and what a read has to apply).
CATCH_UP_S = 5.0

# Keys of a snapshot's changes (``ducklake_snapshots().changes``) by what the copy does with them.
_DATA = frozenset({"tables_inserted_into", "tables_deleted_from", "inlined_insert", "inlined_delete"})
_MOVES = frozenset({"merge_adjacent", "rewrite_delete", "flushed_inlined"})  # same rows, other files
_VIEWS = frozenset({"views_created", "views_dropped"})  # the copy defines its views itself
_DELETES = frozenset({"tables_deleted_from", "inlined_delete"})
# series_seen, which every query's series lookup reads, is kept as a table, refreshed when a
# catch-up touched what it is made of: as a view over the copy it cost 2.8 ms per lookup against
# 0.9 ms on a DuckDB file (two lookups a request), and refreshing it ~4 ms (the bench's fleet).
_SEEN = f"{SCHEMA}.series_seen"
_SEEN_LIVE = f"{SCHEMA}.series_seen_live"
_SEEN_FROM = frozenset({"series", "profiles", "series_fold"})
WAIT_S = 5.0  # a read waits this long for a catch-up in progress, then reads the lake itself
STATEMENT_S = 30.0  # a catch-up taking longer is interrupted


class Behind(Exception):
    """The copy could not be caught up in time: read the lake itself."""


class Watcher(Protocol):
    """Told which profiles the copy read (the writer's memory of what is stored: :class:`~service.store.writer.Writer`)."""

    def lake_profiles(self, groups: pa.Table) -> None: ...

    def lake_reset(self, newest: int | None) -> None: ...


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: str  # quoted and comma-separated, in the lake's order


class Replica:
    """The lake's tables copied into a DuckDB file attached as ``replica`` to the node's connection."""

    ALIAS = "replica"

    def __init__(self, con: duckdb.DuckDBPyConnection, data_dir: Path, watcher: Watcher | None = None) -> None:
        self._con = con
        self._watcher = watcher
        path = data_dir / FILE
        for stale in (path, path.with_name(path.name + ".wal")):
            stale.unlink(missing_ok=True)  # what it held may be long expired from the lake
        con.execute(f"ATTACH '{path}' AS {self.ALIAS}")
        self._lock = threading.Lock()
        self._tables: dict[int, _Table] = {}
        # Per table, no rowid in the copy is above this. DuckLake numbers a table's new rows above
        # every rowid it gave before, so rows read by a catch-up replace rows of the copy only when
        # a rowid comes again (an UPDATE): otherwise the copy is not searched for them.
        self._top_rid: dict[int, int] = {}
        self._seen = False  # whether the copy holds series_seen (as a table, refreshed by catch-ups)
        self.snapshot = -1  # the last lake snapshot applied
        self.rebuilds = 0
        self.applied = 0  # snapshots applied by catching up (not by copying the lake whole)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.catch_up()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lake-replica", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor on the copy, its tables and views named as on the lake."""
        cur = self._con.cursor()
        cur.execute(f"USE {self.ALIAS}")
        return cur

    def catch_up(self) -> None:
        """Apply the lake's snapshots committed since the last one applied (a ``duckdb.Error`` when
        the catalog or the object store cannot be read: the copy then stays as it was)."""
        if not self._lock.acquire(timeout=WAIT_S):
            raise Behind(f"the lake replica has been catching up for over {WAIT_S:g} s")
        try:
            probe = self._con.cursor()  # not a lake cursor: USE of the lake costs a catalog lookup
            try:
                if cluster.newest_snapshot(probe) == self.snapshot:
                    return
            finally:
                probe.close()
            with self._lake_cursor() as cur:
                # A DuckLake call that runs this long is interrupted, and the next catch-up starts
                # again. (That did not end the hung ducklake_table_changes calls, see _apply, which
                # this no longer makes; reads then went to the lake after WAIT_S.)
                watchdog = threading.Timer(STATEMENT_S, cur.interrupt)
                watchdog.daemon = True
                watchdog.start()
                try:
                    self._catch_up(cur)
                finally:
                    watchdog.cancel()
        finally:
            self._lock.release()

    def _catch_up(self, cur: duckdb.DuckDBPyConnection) -> None:
        rows = cur.execute(
            f"SELECT snapshot_id, changes FROM ducklake_snapshots('{lake.ALIAS}') WHERE snapshot_id > $s "
            "ORDER BY snapshot_id",
            {"s": self.snapshot},
        ).fetchall()
        if not rows:
            return
        if self.snapshot < 0 or rows[0][0] != self.snapshot + 1:
            self._rebuild()
            return
        touched: set[int] = set()
        deleted: set[int] = set()
        for _snapshot, changes in rows:
            keys = set(changes)
            if keys & _MOVES:
                continue
            if keys - _DATA - _VIEWS:
                self._rebuild()
                return
            for key in keys & _DATA:
                ids = {int(table_id) for table_id in changes[key]}
                touched |= ids
                if key in _DELETES:
                    deleted |= ids
        if not touched <= set(self._tables):
            self._rebuild()
            return
        try:
            self._apply(touched, deleted, rows[-1][0])
        except duckdb.InvalidInputException as exc:  # a snapshot expired while it was read
            log.info("lake replica: %s; copying the lake again", exc)
            self._rebuild()
            return
        self.snapshot = rows[-1][0]
        self.applied += len(rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the copy in a transaction, committed at the end (rolled back on an error)."""
        out = self.cursor()
        try:
            out.execute("BEGIN TRANSACTION")
            yield out
            out.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                out.execute("ROLLBACK")
            raise
        finally:
            out.close()

    @contextlib.contextmanager
    def _lake_cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = lake.cursor(self._con)
        try:
            yield cur
        finally:
            cur.close()

    def _apply(self, touched: set[int], deleted: set[int], upto: int) -> None:
        """Bring the ``touched`` tables to lake snapshot ``upto``, in one local transaction that reads
        the lake at that snapshot: the rows committed after the last snapshot applied (DuckLake's
        ``snapshot_id``; an updated row comes again, with its rowid) replace the copy's rows of
        their rowid, and from the tables in ``deleted`` the rows whose rowid the lake no longer
        holds are removed (a scan of the lake's rowids).

        Plain scans, not ``ducklake_table_changes``: with DuckLake 1.5.5 that left out the deletes
        of rows still inlined in the catalog, and at times never returned (three nodes under
        ingest: PostgreSQL idle in its scan's transaction, DuckDB waiting for a task, not
        interruptible).
        """
        with self._transaction() as out:
            watchdog = threading.Timer(STATEMENT_S, out.interrupt)
            watchdog.daemon = True
            watchdog.start()
            try:
                top = self._apply_tables(out, touched, deleted, upto)
            finally:
                watchdog.cancel()
        self._top_rid.update(top)

    def _apply_tables(
        self, out: duckdb.DuckDBPyConnection, touched: set[int], deleted: set[int], upto: int
    ) -> dict[int, int]:
        """The rows; returns the tables' new :attr:`_top_rid`, set once the transaction committed."""
        top: dict[int, int] = {}
        for table_id in touched:
            t = self._tables[table_id]
            at = f'{lake.ALIAS}.main."{t.name}" AT (VERSION => {upto})'
            mine = f'{SCHEMA}."{t.name}"'
            new = out.execute(
                f"SELECT {t.columns}, rowid AS _rid, snapshot_id AS _snap FROM {at} WHERE snapshot_id > {self.snapshot}"
            ).to_arrow_table()
            if new.num_rows:
                rids = pc.min_max(new.column("_rid"))
                low, high = rids["min"].as_py(), rids["max"].as_py()
                out.register("_new", new)
                if low <= self._top_rid.get(table_id, -1):
                    out.execute(f"DELETE FROM {mine} WHERE _rid IN (SELECT _rid FROM _new)")
                out.execute(f"INSERT INTO {mine} SELECT * FROM _new")
                out.unregister("_new")
                top[table_id] = max(high, self._top_rid.get(table_id, -1))
            if table_id in deleted:
                out.execute(f"DELETE FROM {mine} WHERE _rid NOT IN (SELECT rowid FROM {at})")
            if self._watcher is not None and t.name == "profiles":
                if table_id in deleted:
                    self._watcher.lake_reset(self._newest(out))
                else:
                    self._watcher.lake_profiles(new.select(["group_id", "ts"]))
        if self._seen and {self._tables[i].name for i in touched} & _SEEN_FROM:
            out.execute(f"DELETE FROM {_SEEN}")
            out.execute(f"INSERT INTO {_SEEN} FROM {_SEEN_LIVE}")
        return top

    def _rebuild(self) -> None:
        """Copy every lake table at one snapshot, in one transaction that reads the lake and writes
        the copy: readers keep the old copy until it commits."""
        started = time.monotonic()
        with self._transaction() as out:
            snapshot = out.execute(f"FROM {lake.ALIAS}.current_snapshot()").fetchone()[0]  # type: ignore[index]
            tables = {
                int(i): _Table(name, self._columns(out, name))
                for i, name in out.execute(
                    f"SELECT table_id, table_name FROM ducklake_table_info('{lake.ALIAS}')"
                ).fetchall()
            }
            views = out.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE database_name = $d AND schema_name = 'main' "
                "AND NOT internal",
                {"d": lake.ALIAS},
            ).fetchall()
            out.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            for (name,) in out.execute(
                "SELECT view_name FROM duckdb_views() WHERE database_name = $d AND schema_name = 'main' AND NOT internal",
                {"d": self.ALIAS},
            ).fetchall():
                out.execute(f'DROP VIEW "{name}"')
            out.execute(f"CREATE SCHEMA {SCHEMA}")
            for t in tables.values():
                out.execute(
                    f'CREATE TABLE {SCHEMA}."{t.name}" AS SELECT {t.columns}, rowid AS _rid, snapshot_id AS _snap '
                    f'FROM {lake.ALIAS}.main."{t.name}"'
                )
                out.execute(f'CREATE VIEW main."{t.name}" AS SELECT {t.columns} FROM {SCHEMA}."{t.name}"')
            seen = False  # a lake's schema always has it; a copy without it has nothing to refresh
            for name, sql in views:
                if name == "series_seen":  # the lake's names its watermark, and reads DuckLake's snapshot_id
                    out.execute(
                        series_fold.seen_view(
                            f"{SCHEMA}.profiles", "_snap", "(SELECT max(snapshot) FROM series_fold)", _SEEN_LIVE
                        )
                    )
                    out.execute(f"CREATE TABLE {_SEEN} AS FROM {_SEEN_LIVE}")
                    out.execute(f"CREATE VIEW main.series_seen AS FROM {_SEEN}")
                    seen = True
                else:
                    out.execute(sql)
            newest = self._newest(out) if "profiles" in {t.name for t in tables.values()} else None
            top = {
                i: out.execute(f'SELECT coalesce(max(_rid), -1) FROM {SCHEMA}."{t.name}"').fetchone()[0]  # type: ignore[index]
                for i, t in tables.items()
            }
        if self._watcher is not None:
            self._watcher.lake_reset(newest)
        self._tables = tables
        self._top_rid = top
        self._seen = seen
        self.snapshot = int(snapshot)
        self.rebuilds += 1
        log.info(
            "lake replica: %d tables copied at snapshot %d in %.2f s", len(tables), snapshot, time.monotonic() - started
        )

    @staticmethod
    def _newest(cur: duckdb.DuckDBPyConnection) -> int | None:
        return cur.execute(f"SELECT max(ts) FROM {SCHEMA}.profiles").fetchone()[0]  # type: ignore[index,no-any-return]

    @staticmethod
    def _columns(cur: duckdb.DuckDBPyConnection, table: str) -> str:
        names = cur.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = $d AND schema_name = 'main' "
            "AND table_name = $t ORDER BY column_index",
            {"d": lake.ALIAS, "t": table},
        ).fetchall()
        return ", ".join(f'"{n}"' for (n,) in names)

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(CATCH_UP_S):
            try:
                self.catch_up()
                failing = False
            except duckdb.Error as exc:  # the lake is out of reach: reads say so; try again
                if not failing:
                    log.warning("lake replica cannot catch up: %s", exc)
                failing = True
