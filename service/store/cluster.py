"""Several nodes on one lake: who is alive, who maintains, and the write fence.

Everything here lives in the catalog's own PostgreSQL database, beside DuckLake's tables, and is
reached through DuckDB's postgres extension (no second driver). Three small tables:

- ``profstore_nodes``: one row per node, its heartbeat (``seen``) renewed every
  :data:`HEARTBEAT_S`; a node whose row is older than :data:`NODE_TTL_S` is dead. The live set
  decides which node scrapes which target (rendezvous hashing, in the collector).
- ``profstore_leases``: named leases (``maintenance``, ``migrate``), each taken by one atomic
  upsert that succeeds only for the holder or once the lease lapsed. An advisory lock would belong
  to whichever pooled connection the extension happened to use, and die with it.
- ``profstore_fence``: the write fence. DuckLake detects conflicts per table: a DELETE (retention,
  rollup recomputation, folding ``series``) conflicts with every concurrent INSERT into that table,
  and the first to commit wins, so maintenance would lose to a busy fleet forever. The maintenance
  node raises the fence; every node's writer stops between two batches, forgets the symbol ids it
  believes stored (retention may delete them), and acknowledges in its heartbeat row; once every
  live node acknowledged, maintenance runs alone and lowers the fence. Pushes are still
  acknowledged meanwhile (they wait in each node's journal), so a fence delays visibility, never
  an acknowledgement. A fence lapses by itself after :data:`FENCE_S` if its holder dies.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import duckdb

from service.errors import StoreError

__all__ = [
    "FENCE_S",
    "HEARTBEAT_S",
    "NODE_TTL_S",
    "Fence",
    "Node",
    "ensure_tables",
    "fence_acknowledged",
    "forget_dead",
    "lease_holder",
    "live_nodes",
    "lower_fence",
    "newest_snapshot",
    "raise_fence",
    "read_fence",
    "release_lease",
    "state",
    "take_lease",
]  # fmt: skip

log = logging.getLogger(__name__)

HEARTBEAT_S = 0.5  # also how soon a node sees the fence: maintenance waits for the slowest
NODE_TTL_S = 5.0  # a node silent this long is dead: its targets move at their next due run
FENCE_S = 120.0  # a fence whose holder died lapses after this
SERIALIZATION_RETRIES = 8
PG = "profstore_catalog"  # the catalog's PostgreSQL database, attached beside the lake

_DDL_LOCK = 0x70726F66  # any constant of ours: "prof"
_DDL = (
    "CREATE TABLE IF NOT EXISTS profstore_nodes (node TEXT PRIMARY KEY, address TEXT NOT NULL, "
    "started TIMESTAMPTZ NOT NULL DEFAULT now(), seen TIMESTAMPTZ NOT NULL, fence_ack BIGINT NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS profstore_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, "
    "expires TIMESTAMPTZ NOT NULL)",
    "CREATE TABLE IF NOT EXISTS profstore_fence (id INT PRIMARY KEY, epoch BIGINT NOT NULL, "
    "holder TEXT NOT NULL, expires TIMESTAMPTZ NOT NULL)",
)


def literal(text: str) -> str:
    """A SQL string literal (``postgres_execute`` takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _execute(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Run ``sql`` in the catalog's database. The postgres extension wraps it in a REPEATABLE READ
    transaction, so two nodes upserting one row at once make one of them fail with a serialization
    error: that one tries again (the statement is written to be repeated)."""
    for attempt in range(SERIALIZATION_RETRIES):
        try:
            con.execute(f"CALL postgres_execute('{PG}', {literal(sql)})")
            return
        except duckdb.Error as exc:
            if "could not serialize access" not in str(exc) or attempt == SERIALIZATION_RETRIES - 1:
                raise
            time.sleep(random.uniform(0.005, 0.05) * (attempt + 1))


def _query(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[Any, ...]]:
    return con.execute(f"SELECT * FROM postgres_query('{PG}', {literal(sql)})").fetchall()


def ensure_tables(con: duckdb.DuckDBPyConnection, catalog: str) -> None:
    """Attach the catalog's PostgreSQL database to ``con``'s instance (once) and create our tables."""
    attached = con.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = $n", {"n": PG}).fetchone()
    if attached and attached[0]:
        return
    con.execute(f"ATTACH IF NOT EXISTS {literal(catalog)} AS {PG} (TYPE postgres)")
    # CREATE TABLE IF NOT EXISTS races with itself in PostgreSQL (both see no table, one fails on
    # the catalog's unique index): the first node to start creates them under a transaction lock.
    _execute(con, f"SELECT pg_advisory_xact_lock({_DDL_LOCK}); " + "; ".join(_DDL))


def newest_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's newest snapshot, from its catalog table: one round trip, where DuckLake's own
    functions read the snapshot list or open a lake transaction first."""
    rows = _query(con, "SELECT max(snapshot_id) FROM ducklake_snapshot")
    return int(rows[0][0]) if rows and rows[0][0] is not None else -1


# Leases.


def take_lease(con: duckdb.DuckDBPyConnection, name: str, holder: str, seconds: float) -> str:
    """Take or renew lease ``name`` for ``holder``; who holds it afterwards (``holder`` when taken)."""
    _execute(
        con,
        f"INSERT INTO profstore_leases VALUES ({literal(name)}, {literal(holder)}, now() + interval '{float(seconds)} s') "
        "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires "
        "WHERE profstore_leases.holder = EXCLUDED.holder OR profstore_leases.expires < now()",
    )
    rows = _query(con, f"SELECT holder FROM profstore_leases WHERE name = {literal(name)}")
    return str(rows[0][0]) if rows else ""


def lease_holder(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """Who holds lease ``name`` now (None when nobody does, or it lapsed)."""
    rows = _query(con, f"SELECT holder FROM profstore_leases WHERE name = {literal(name)} AND expires > now()")
    return str(rows[0][0]) if rows else None


def release_lease(con: duckdb.DuckDBPyConnection, name: str, holder: str) -> None:
    _execute(con, f"DELETE FROM profstore_leases WHERE name = {literal(name)} AND holder = {literal(holder)}")


# Membership.


def beat(con: duckdb.DuckDBPyConnection, node: str, address: str, fence_ack: int) -> None:
    _execute(
        con,
        f"INSERT INTO profstore_nodes (node, address, seen, fence_ack) VALUES ({literal(node)}, {literal(address)}, "
        f"now(), {int(fence_ack)}) ON CONFLICT (node) DO UPDATE SET address = EXCLUDED.address, seen = now(), "
        "fence_ack = EXCLUDED.fence_ack",
    )


def live_nodes(con: duckdb.DuckDBPyConnection, ttl_s: float = NODE_TTL_S) -> list[str]:
    rows = _query(con, f"SELECT node FROM profstore_nodes WHERE seen > now() - interval '{float(ttl_s)} s' ORDER BY 1")
    return [str(r[0]) for r in rows]


def leave(con: duckdb.DuckDBPyConnection, node: str) -> None:
    """A node that stops says so: its targets move at once instead of after :data:`NODE_TTL_S`."""
    _execute(con, f"DELETE FROM profstore_nodes WHERE node = {literal(node)}")


def forget_dead(con: duckdb.DuckDBPyConnection, older_than_s: float = 86400.0) -> None:
    _execute(con, f"DELETE FROM profstore_nodes WHERE seen < now() - interval '{float(older_than_s)} s'")


# The write fence.


@dataclass(frozen=True, slots=True)
class Fence:
    """The fence's epoch (it only grows) and whether it stands now (raised and not lapsed)."""

    epoch: int
    up: bool


def read_fence(con: duckdb.DuckDBPyConnection) -> Fence:
    rows = _query(con, "SELECT epoch, expires > now() FROM profstore_fence WHERE id = 1")
    return Fence(int(rows[0][0]), bool(rows[0][1])) if rows else Fence(0, False)


def raise_fence(con: duckdb.DuckDBPyConnection, holder: str, seconds: float = FENCE_S) -> int:
    """Raise the fence under a new epoch; the epoch every node must acknowledge."""
    _execute(
        con,
        f"INSERT INTO profstore_fence VALUES (1, 1, {literal(holder)}, now() + interval '{float(seconds)} s') "
        "ON CONFLICT (id) DO UPDATE SET epoch = profstore_fence.epoch + 1, holder = EXCLUDED.holder, "
        "expires = EXCLUDED.expires",
    )
    rows = _query(con, "SELECT epoch FROM profstore_fence WHERE id = 1")
    return int(rows[0][0])


def lower_fence(con: duckdb.DuckDBPyConnection, holder: str) -> None:
    _execute(con, f"UPDATE profstore_fence SET expires = now() WHERE id = 1 AND holder = {literal(holder)}")


def fence_acknowledged(con: duckdb.DuckDBPyConnection, epoch: int, ttl_s: float = NODE_TTL_S) -> list[str]:
    """The live nodes that have not yet stopped for fence ``epoch`` (empty: maintenance may run)."""
    rows = _query(
        con,
        f"SELECT node FROM profstore_nodes WHERE seen > now() - interval '{float(ttl_s)} s' "
        f"AND fence_ack < {int(epoch)} ORDER BY 1",
    )
    return [str(r[0]) for r in rows]


def state(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """The live nodes, the maintenance node and the fence's epoch, for ``/api/v1/cluster``."""
    return {
        "nodes": live_nodes(con),
        "maintenance": lease_holder(con, "maintenance"),
        "fence_epoch": read_fence(con).epoch,
    }


class Node:
    """This node's part: the heartbeat thread, the live set, and stopping the writer at a fence.

    ``pause`` is called with an event that is set when the fence falls; the future it returns is
    done once the writer has stopped between batches and forgotten its known ids, and the writer
    stays stopped until the event is set (:meth:`Database.pause_writer`: a task in the writer thread).
    """

    def __init__(
        self,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        name: str,
        address: str,
        pause: Callable[[threading.Event], Future[object]],
    ) -> None:
        self.name = name
        self.address = address
        self._cursor = cursor
        self._pause = pause
        self._acked = 0
        self._lowered: threading.Event | None = None
        self._stopped: Future[object] | None = None
        self._live: tuple[str, ...] = (name,)
        self._closing = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="profstore-cluster", daemon=True)

    @property
    def live(self) -> tuple[str, ...]:
        """The live nodes, this one included, as last seen (kept while the catalog is unreachable)."""
        return self._live

    def start(self) -> None:
        self.tick()
        self._thread.start()

    def tick(self) -> None:
        """One heartbeat: renew this node's row, follow the fence, read the live set."""
        cur = self._cursor()
        try:
            fence = read_fence(cur)
            if fence.up and fence.epoch > self._acked:
                self._stop_writer(fence.epoch)
            elif not fence.up and self._lowered is not None:
                self._lowered.set()
                self._lowered = self._stopped = None
            beat(cur, self.name, self.address, self._acked)
            live = live_nodes(cur)
            self._live = tuple(live) if self.name in live else tuple(sorted({*live, self.name}))
        finally:
            cur.close()

    def _stop_writer(self, epoch: int) -> None:
        """Ask the writer to stop; acknowledge ``epoch`` only once it has (a later heartbeat, if the
        batch it is committing takes longer than this one)."""
        if self._lowered is None:
            self._lowered = threading.Event()
            self._stopped = self._pause(self._lowered)
            # A writer between batches stops at once: acknowledge in this heartbeat, not the next.
            futures.wait([self._stopped], timeout=HEARTBEAT_S)
        if self._stopped is not None and self._stopped.done():
            if self._stopped.exception() is not None:  # closing, or a fatal error: it never stopped
                log.warning("the writer did not stop for the maintenance fence: %s", self._stopped.exception())
                self._lowered.set()
                self._lowered = self._stopped = None
                return
            self._acked = epoch

    def _run(self) -> None:
        while not self._closing.wait(HEARTBEAT_S):
            try:
                self.tick()
                if self._failing:
                    log.warning("the lake's catalog answers heartbeats again")
                self._failing = False
            except (duckdb.Error, StoreError) as exc:
                if not self._failing:
                    log.error("heartbeat failed (the catalog is unreachable?); retrying: %s", exc)
                self._failing = True
            # A fence whose holder died lapses; do not wait for a heartbeat that may fail too.
            if self._lowered is not None and self._failing:
                self._lowered.set()
                self._lowered = self._stopped = None

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._lowered is not None:
            self._lowered.set()
        try:
            cur = self._cursor()
            try:
                leave(cur, self.name)
            finally:
                cur.close()
        except duckdb.Error as exc:
            log.warning("could not leave the cluster (the others see this node dead in %g s): %s", NODE_TTL_S, exc)


def wait_acknowledged(cur: duckdb.DuckDBPyConnection, epoch: int, timeout_s: float) -> list[str]:
    """Wait until every live node stopped for ``epoch``; the nodes still missing at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = fence_acknowledged(cur, epoch)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(HEARTBEAT_S / 4)
