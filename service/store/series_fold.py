"""Upkeep of a DuckLake that several nodes write: series first/last seen folded in, duplicate rows removed.

Writers on a lake append only (see :func:`service.store.writer.Writer`, ``shared``): an UPDATE of
``series`` in every batch made two nodes' commits conflict. So ``series.first_seen/last_seen``
lag behind the profiles committed since the last :func:`fold`, which readers add back
(``series_seen``, migration 0005), and a lake has no key to stop two nodes that commit at once
from each storing the same new symbol, stack, label set, series or label value. Content-hash ids
make such copies identical, readers give the same answers with them, and :func:`dedupe` removes
them. Both run on the maintenance node, between batches (behind the write fence); they only
rewrite a table that needs it, one transaction per table, run again if its commit lost to a
node's.

On a DuckDB file there is nothing to do: the writer keeps ``series`` exact and the keys unique.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb

from service.store.transaction import transaction
from service.store.writer import CONFLICT_ATTEMPTS, CONFLICT_JITTER_S, is_commit_conflict

__all__ = ["DEDUPED", "NOTHING_TO_FOLD", "Deduped", "Folded", "dedupe", "fold", "lake_view", "seen_view"]

log = logging.getLogger(__name__)

# The watermark of a DuckDB file (migration 0005): its writer updates series in every batch.
NOTHING_TO_FOLD = 2**63 - 1


def lake_view(snapshot: int) -> str:
    """``series_seen`` on a lake folded up to ``snapshot``: one row per series, first/last seen widened
    by the profiles committed after it (their files only: DuckLake prunes on ``snapshot_id``).

    The watermark is a literal, written again by every fold in its transaction, rather than a
    subquery on ``series_fold``: on a lake each table a query touches costs a catalog lookup.
    """
    return seen_view("profiles", "snapshot_id", str(int(snapshot)))


def seen_view(profiles: str, snapshot_column: str, watermark: str, name: str = "series_seen") -> str:
    """``series_seen`` (as view ``name``) over the ``profiles`` rows whose ``snapshot_column`` is past
    ``watermark`` (an SQL expression): the lake's own, or a node's copy of it
    (:mod:`service.store.replica`), which keeps each row's snapshot in a column of its own and reads
    the watermark from ``series_fold``."""
    return (
        f"CREATE OR REPLACE VIEW {name} AS "
        "SELECT s.series_id, s.tenant, s.profile_type, s.name, s.sample_type, s.sample_unit, s.period_type, "
        "s.period_unit, any_value(s.labels) AS labels, least(min(s.first_seen), any_value(t.f)) AS first_seen, "
        "greatest(max(s.last_seen), any_value(t.l)) AS last_seen "
        f"FROM series s LEFT JOIN (SELECT series_id, min(ts) AS f, max(ts) AS l FROM {profiles} "
        f"WHERE {snapshot_column} > {watermark} GROUP BY series_id) t ON t.series_id = s.series_id "
        "GROUP BY s.series_id, s.tenant, s.profile_type, s.name, s.sample_type, s.sample_unit, s.period_type, "
        "s.period_unit"
    )


# Tables whose rows may be stored twice by nodes that commit at once, and what makes a row the
# same: the content-hash id, or for the label index the whole row (a value's id is a hash DuckDB
# computes, which another DuckDB version could compute differently: postings keep either).
# ``series`` is :func:`fold`'s (its copies differ in first/last seen).
DEDUPED = {
    "mappings": "mapping_id",
    "functions": "function_id",
    "locations": "location_id",
    "stacks": "stack_id",
    "labelsets": "labelset_id",
    "series_label_values": "tenant, name, value, value_id",
    "series_labels": "value_id, series_id",
}

T = TypeVar("T")


@dataclass(slots=True)
class Folded:
    """What one :func:`fold` did: how many series got new first/last seen, how many copies went,
    and the lake snapshot folded up to (None: nothing to fold, a DuckDB file)."""

    series: int = 0
    copies: int = 0
    snapshot: int | None = None


def fold(con: duckdb.DuckDBPyConnection) -> Folded:
    """Fold the profiles committed since the last fold into ``series.first_seen/last_seen``, keep one
    row per series, and move the watermark to the newest snapshot folded.

    The watermark is a lake snapshot, not a profile time: a late profile (a backfill, a replayed
    journal) committed after a fold has a newer snapshot whatever its ``ts``, so it is never
    missed. A writer committing meanwhile makes this commit (or its own) conflict; the loser runs
    again, so nothing committed after the snapshot read here can be below the new watermark.
    """
    return _retrying(con, _fold_once)


def _fold_once(con: duckdb.DuckDBPyConnection) -> Folded:
    with transaction(con):
        row = con.execute("SELECT max(snapshot) FROM series_fold").fetchone()
        mark = None if row is None else row[0]
        if mark is None or mark >= NOTHING_TO_FOLD:
            return Folded()
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _tail AS SELECT series_id, min(ts) AS f, max(ts) AS l, "
            "max(snapshot_id) AS snap FROM profiles WHERE snapshot_id > $mark GROUP BY series_id",
            {"mark": mark},
        )
        try:
            newest, changed, copies = con.execute(  # type: ignore[misc]
                "SELECT (SELECT max(snap) FROM _tail), "
                "(SELECT count(*) FROM _tail t JOIN (SELECT series_id, min(first_seen) AS f, max(last_seen) AS l "
                "  FROM series GROUP BY series_id) s USING (series_id) WHERE t.f < s.f OR t.l > s.l), "
                "(SELECT count(*) - count(DISTINCT series_id) FROM series)"
            ).fetchone()
            if changed or copies:
                # The whole table again (one file on a lake): an UPDATE would rewrite it too.
                con.execute(
                    "CREATE OR REPLACE TEMP TABLE _folded AS SELECT s.series_id, any_value(s.tenant) AS tenant, "
                    "any_value(s.profile_type) AS profile_type, any_value(s.name) AS name, "
                    "any_value(s.sample_type) AS sample_type, any_value(s.sample_unit) AS sample_unit, "
                    "any_value(s.period_type) AS period_type, any_value(s.period_unit) AS period_unit, "
                    "any_value(s.labels) AS labels, least(min(s.first_seen), any_value(t.f)) AS first_seen, "
                    "greatest(max(s.last_seen), any_value(t.l)) AS last_seen "
                    "FROM series s LEFT JOIN _tail t USING (series_id) GROUP BY s.series_id"
                )
                con.execute("DELETE FROM series")
                con.execute("INSERT INTO series SELECT * FROM _folded ORDER BY tenant, profile_type, series_id")
                con.execute("DROP TABLE _folded")
            if newest is not None:
                con.execute("UPDATE series_fold SET snapshot = $s", {"s": int(newest)})
                con.execute(lake_view(int(newest)))
        finally:
            con.execute("DROP TABLE IF EXISTS _tail")
    return Folded(
        series=int(changed or 0), copies=int(copies or 0), snapshot=int(newest if newest is not None else mark)
    )


@dataclass(slots=True)
class Deduped:
    """Copies removed per table by one :func:`dedupe`."""

    removed: dict[str, int] = field(default_factory=dict)


def dedupe(con: duckdb.DuckDBPyConnection) -> Deduped:
    """Remove the copies of interned and label-index rows (and of series, through :func:`fold`).

    A table is rewritten only when it holds a copy (``count(*)`` against ``count(DISTINCT key)``,
    one scan of the key); a table without copies keeps its files. After a rewrite the writers'
    ``KnownIds`` must be cleared (the write fence does; a conflict with it does too): the rows
    they know are still there, but the lake saw a deletion.
    """
    out = Deduped()
    for table, key in DEDUPED.items():
        removed = _retrying(con, functools.partial(_dedupe_table, table=table, key=key))
        if removed:
            out.removed[table] = removed
    folded = fold(con)
    if folded.copies:
        out.removed["series"] = folded.copies
    if out.removed:
        log.info("removed rows stored twice by nodes that committed at once: %s", out.removed)
    return out


def _dedupe_table(con: duckdb.DuckDBPyConnection, *, table: str, key: str) -> int:
    with transaction(con):
        row = con.execute(f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}").fetchone()
        copies = int(row[0]) if row else 0
        if copies:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _unique AS SELECT * FROM {table} "
                f"QUALIFY row_number() OVER (PARTITION BY {key}) = 1"
            )
            try:
                con.execute(f"DELETE FROM {table}")
                con.execute(f"INSERT INTO {table} SELECT * FROM _unique")
            finally:
                con.execute("DROP TABLE IF EXISTS _unique")
    return copies


def _retrying(con: duckdb.DuckDBPyConnection, run: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """``run(con)`` in its transaction, again after a pause when its commit lost to another node's."""
    attempt = 1
    while True:
        try:
            return run(con)
        except duckdb.TransactionException as exc:
            if not is_commit_conflict(exc) or attempt >= CONFLICT_ATTEMPTS:
                raise
        time.sleep(random.uniform(0, CONFLICT_JITTER_S * attempt))
        attempt += 1
