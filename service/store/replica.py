"""A node's local copy of the lake, that its reads run on: DuckDB speed for a lake's queries.

On a DuckLake every table a statement touches costs round trips to the catalog before a row is
read: the snapshot, the table's data and delete files, their column statistics, schema versions,
inlined rows, and table statistics again for each filter the planner considers. Measured on the
cluster bench's fleet after maintenance (one file per table), a top or flame graph request spent
~180 ms where the same request on a DuckDB file took ~13 ms, and every operator of its plan took
under a millisecond: the time went to those lookups, which DuckLake does not cache between
statements. So each node keeps a DuckDB file (``lake-replica.duckdb`` in its data directory,
rebuilt at start) with every lake table, and keeps it current from DuckLake's change feed:

- each lake snapshot lists the tables it inserted into or deleted from
  (``ducklake_snapshots``); :meth:`Replica.catch_up` reads the changes of those tables since the
  last snapshot it applied (``ducklake_table_changes``) and applies them, all tables in one local
  transaction, so a reader sees whole lake commits, in order, and never half of one;
- rows are matched by DuckLake's ``rowid``, which a row keeps for its life (merging and rewriting
  files keep it too), stored beside the row as ``_rid``; the table's own columns are what the
  node's SQL sees, through a view of the same name;
- snapshots that only move rows between files (merging files, rewriting files with deletes,
  flushing inlined rows) change nothing a reader sees and are skipped: ``ducklake_table_changes``
  reports the rows a rewrite moved as updates, and deletes of rows deleted before;
- a gap in the snapshots (expired while this node lagged more than the lake keeps them, 15 min)
  or a change of the schema (another node migrated the lake) rebuilds the copy.

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

import duckdb

from service.store import cluster, lake, series_fold

__all__ = ["CATCH_UP_S", "FILE", "Replica"]

log = logging.getLogger(__name__)

FILE = "lake-replica.duckdb"
SCHEMA = "rows"  # the copied rows with their rowid; main holds a view per table with its own columns
# Each catch-up costs ~15 ms of CPU per table it reads changes of (DuckLake's catalog lookups,
# measured), whatever the number of snapshots: under ingest ~10 tables, 8 % of a lake node's CPU
# at 2 s (py-spy, cluster bench). Reads catch up themselves; this bounds how long another node's
# push takes to be found by this node's "stored before?" (and what a read has to apply).
CATCH_UP_S = 5.0

# Keys of a snapshot's changes (``ducklake_snapshots().changes``) by what the copy does with them.
_DATA = frozenset({"tables_inserted_into", "tables_deleted_from", "inlined_insert", "inlined_delete"})
_MOVES = frozenset({"merge_adjacent", "rewrite_delete", "flushed_inlined"})  # same rows, other files
_VIEWS = frozenset({"views_created", "views_dropped"})  # the copy defines its views itself
_DELETES = frozenset({"tables_deleted_from", "inlined_delete"})
_INSERTED = "('insert', 'update_postimage')"


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: str  # quoted and comma-separated, in the lake's order


class Replica:
    """The lake's tables copied into a DuckDB file attached as ``replica`` to the node's connection."""

    ALIAS = "replica"

    def __init__(self, con: duckdb.DuckDBPyConnection, data_dir: Path) -> None:
        self._con = con
        path = data_dir / FILE
        for stale in (path, path.with_name(path.name + ".wal")):
            stale.unlink(missing_ok=True)  # what it held may be long expired from the lake
        con.execute(f"ATTACH '{path}' AS {self.ALIAS}")
        self._lock = threading.Lock()
        self._tables: dict[int, _Table] = {}
        self.snapshot = -1  # the last lake snapshot applied
        self.rebuilds = 0
        self.recopies = 0  # tables copied whole again after a catch-up that counted them wrong
        self.applied = 0  # snapshots applied one by one
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
        with self._lock:
            probe = self._con.cursor()  # not a lake cursor: USE of the lake costs a catalog lookup
            try:
                if cluster.newest_snapshot(probe) == self.snapshot:
                    return
            finally:
                probe.close()
            with self._lake_cursor() as cur:
                self._catch_up(cur)

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
        touched: dict[int, list[int]] = {}
        deleted: set[int] = set()
        moved = False
        for snapshot, changes in rows:
            keys = set(changes)
            if keys & _MOVES:
                moved = True
                continue
            if keys - _DATA - _VIEWS:
                self._rebuild()
                return
            for key in keys & _DATA:
                for table_id in changes[key]:
                    touched.setdefault(int(table_id), []).append(snapshot)
                    if key in _DELETES:
                        deleted.add(int(table_id))
        if any(t not in self._tables for t in touched):
            self._rebuild()
            return
        try:
            self._apply(cur, touched, rows[-1][0], verify=set(touched) if moved else deleted)
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

    def _apply(
        self, cur: duckdb.DuckDBPyConnection, touched: dict[int, list[int]], upto: int, *, verify: set[int]
    ) -> None:
        """The changes of ``touched`` tables at the listed snapshots, in one local transaction. Per row
        the last change wins (an update is a pre-image and a post-image of the same rowid).

        The tables in ``verify`` (those rows were deleted from, all of them when files were flushed,
        rewritten or merged meanwhile) are counted on both sides at ``upto``, and one that differs
        is copied whole: with DuckLake 1.5.5, ``ducklake_table_changes`` leaves out the deletes of
        rows that are still inlined in the catalog (until a flush writes them to files; seen in
        tests/lake/test_replica.py). Writers only append: deletes come from maintenance, once per
        compaction interval at most, and a count costs a catalog lookup per table.
        """
        with self._transaction() as out:
            for table_id, listed in touched.items():
                snapshots = sorted(set(listed))
                t = self._tables[table_id]
                # Renamed: a scan of the Arrow table has a ``rowid`` of its own (the row's position).
                changes = cur.execute(
                    f"SELECT snapshot_id AS _snap, rowid AS _rid, change_type AS _change, {t.columns} "
                    f"FROM ducklake_table_changes('{lake.ALIAS}', 'main', '{t.name}', {min(snapshots)}, "
                    f"{max(snapshots)}) WHERE snapshot_id IN ({', '.join(map(str, snapshots))})"
                ).to_arrow_table()
                out.register("_changes", changes)
                out.execute(f'DELETE FROM {SCHEMA}."{t.name}" WHERE _rid IN (SELECT _rid FROM _changes)')
                out.execute(
                    f'INSERT INTO {SCHEMA}."{t.name}" SELECT {t.columns}, _rid, _snap FROM ('
                    "SELECT *, row_number() OVER (PARTITION BY _rid ORDER BY _snap DESC, "
                    f"_change IN {_INSERTED} DESC) AS k FROM _changes"
                    f") WHERE k = 1 AND _change IN {_INSERTED}"
                )
                out.unregister("_changes")
                if table_id in verify and self._count(
                    out, f'{lake.ALIAS}.main."{t.name}" AT (VERSION => {upto})'
                ) != self._count(out, f'{SCHEMA}."{t.name}"'):
                    log.info("lake replica: %s differs from the lake at snapshot %d; copying it again", t.name, upto)
                    self.recopies += 1
                    out.execute(f'DELETE FROM {SCHEMA}."{t.name}"')
                    out.execute(
                        f'INSERT INTO {SCHEMA}."{t.name}" SELECT {t.columns}, rowid, snapshot_id '
                        f'FROM {lake.ALIAS}.main."{t.name}" AT (VERSION => {upto})'
                    )

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
            for name, sql in views:
                if name == "series_seen":  # the lake's names its watermark, and reads DuckLake's snapshot_id
                    out.execute(
                        series_fold.seen_view(f"{SCHEMA}.profiles", "_snap", "(SELECT max(snapshot) FROM series_fold)")
                    )
                else:
                    out.execute(sql)
        self._tables = tables
        self.snapshot = int(snapshot)
        self.rebuilds += 1
        log.info(
            "lake replica: %d tables copied at snapshot %d in %.2f s", len(tables), snapshot, time.monotonic() - started
        )

    @staticmethod
    def _count(cur: duckdb.DuckDBPyConnection, table: str) -> int:
        return int(cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]

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
