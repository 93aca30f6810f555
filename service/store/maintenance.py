"""Maintenance of a lake shared by several nodes: one node at a time, behind the write fence.

Every node runs :meth:`LakeMaintenance.run_once` on the compaction interval; only the holder of the
``maintenance`` lease goes on (another takes over within one lease when it dies). It raises the
fence (:mod:`service.store.cluster`), waits until every live node's writer stopped, then, alone:
folds ``series``' first/last seen and removes duplicate rows two nodes may have written, brings the
stack rollups up to date, runs retention when it is due, and keeps the lake's files few (merges
small files, expires old snapshots, deletes files no snapshot needs). DuckLake's own CHECKPOINT
would do the last part too, but on every node that ran it; here it is one node, and the calls are
named.

On the DuckDB file none of this runs: there the writer thread does rollups and retention between
batches (``service.app``), as one process owns the file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from service.config import RetentionSettings
from service.store import cluster
from service.store.ids import KnownIds
from service.store.retention import Expired, expire
from service.store.stack_rollups import compact

__all__ = ["LakeMaintenance", "Report"]

log = logging.getLogger(__name__)

ACK_WAIT_S = 15.0  # a writer stops between batches; a batch that takes longer than this is a stuck node
FILES_EVERY_S = 600.0  # file merging and cleanup: often enough to keep a few files per table
KEEP_SNAPSHOTS_S = 900.0
REWRITE_ALWAYS = (
    "series",
    "rollup_dirty",
)  # a query that started earlier than this may still read an old snapshot's files


@dataclass(slots=True)
class Report:
    """What one maintenance run did, for the log and the tests."""

    epoch: int = 0
    waited_s: float = 0.0
    fenced_s: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)
    expired: Expired | None = None
    missing: list[str] = field(default_factory=list)


class LakeMaintenance:
    """One node's share of the lake's maintenance (nothing unless it holds the lease)."""

    def __init__(
        self,
        cursor: Callable[[], duckdb.DuckDBPyConnection],
        node: str,
        known: KnownIds,
        retention: RetentionSettings,
        interval_s: float,
        before: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], object]]] | None = None,
    ) -> None:
        self._cursor = cursor
        self.node = node
        self._known = known
        self._retention = retention
        self._interval_s = interval_s
        # Steps that run first under the fence (folding series, removing duplicate rows).
        self._before = before or []
        self._next_retention = 0.0
        self._next_files = time.monotonic() + FILES_EVERY_S
        self.holding = False
        # One run at a time in this node: a forced run (``POST /storage/expire``) that met the
        # scheduled one raised the fence anew, and the first run's end lowered it under the second
        # (found by the cluster bench: the second waited 15 s for acknowledgements that never came;
        # the other order would have run its steps with the writers going).
        self._running = threading.Lock()

    def lease_s(self) -> float:
        return max(3 * self._interval_s, 30.0)

    def claim(self) -> bool:
        """Take the lease now if nobody holds it (at start: a node alone on its lake detects
        regressions from its first scheduled run, not after its first maintenance run)."""
        cur = self._cursor()
        try:
            self.holding = cluster.take_lease(cur, "maintenance", self.node, self.lease_s()) == self.node
        finally:
            cur.close()
        return self.holding

    def run_once(self, now_ns: int, *, force: bool = False) -> Report | None:
        """A maintenance run if this node holds (or takes) the lease; ``force`` runs retention and the
        file steps now instead of when they are due. A run waits for one in progress on this node."""
        with self._running:
            return self._run_once(now_ns, force=force)

    def _run_once(self, now_ns: int, *, force: bool) -> Report | None:
        cur = self._cursor()
        try:
            self.holding = cluster.take_lease(cur, "maintenance", self.node, self.lease_s()) == self.node
            if not self.holding:
                return None
            report = Report(epoch=cluster.raise_fence(cur, self.node))
            t0 = time.monotonic()
            try:
                report.missing = cluster.wait_acknowledged(cur, report.epoch, ACK_WAIT_S)
                report.waited_s = time.monotonic() - t0
                if report.missing:
                    log.warning(
                        "maintenance skipped: node(s) %s did not stop writing within %g s",
                        ", ".join(report.missing), ACK_WAIT_S,
                    )  # fmt: skip
                    return report
                self._steps(cur, now_ns, report, force=force)
            finally:
                cluster.lower_fence(cur, self.node)
                report.fenced_s = time.monotonic() - t0
            return report
        finally:
            cur.close()

    def _steps(self, cur: duckdb.DuckDBPyConnection, now_ns: int, report: Report, *, force: bool) -> None:
        def step(name: str, run: Callable[[], object]) -> None:
            t = time.perf_counter()
            run()
            report.steps[name] = time.perf_counter() - t

        for name, run in self._before:
            step(name, lambda run=run: run(cur))  # type: ignore[misc]
        step("rollups", lambda: compact(cur, now_ns))
        mono = time.monotonic()
        if force or mono >= self._next_retention:
            self._next_retention = mono + self._retention.interval_s

            def retain() -> None:
                report.expired = expire(cur, self._retention, now_ns, self._known, checkpoint=False)

            step("retention", retain)
        if force or mono >= self._next_files:
            self._next_files = mono + FILES_EVERY_S
            step("files", lambda: _files(cur))
            cluster.forget_dead(cur)


def _files(cur: duckdb.DuckDBPyConnection) -> None:
    """Few files per table: inlined rows to files, small files merged, files with deletes rewritten;
    then what no recent snapshot reads is deleted. Each is a CALL: a SELECT over these functions,
    read with ``fetchone()``, never commits."""
    cur.execute("CALL ducklake_flush_inlined_data('lake')")
    # ``series`` and ``rollup_dirty`` are rewritten or emptied by maintenance itself, so their files
    # carry deletes of any share; DuckLake's default (95 % deleted) left their delete files to grow.
    for table in REWRITE_ALWAYS:
        cur.execute(f"CALL ducklake_rewrite_data_files('lake', '{table}', delete_threshold => 0)")
    cur.execute("CALL ducklake_rewrite_data_files('lake')")
    cur.execute("CALL ducklake_merge_adjacent_files('lake')")
    keep = f"now() - INTERVAL '{KEEP_SNAPSHOTS_S:g} seconds'"
    cur.execute(f"CALL ducklake_expire_snapshots('lake', older_than => {keep})")
    cur.execute(f"CALL ducklake_cleanup_old_files('lake', older_than => {keep})")
