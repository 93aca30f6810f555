"""A node's copy of the lake (:mod:`service.store.replica`), that its reads run on, holds exactly the
lake's rows: after pushes, after maintenance deleted and rewrote rows (fold, dedupe, rollups,
retention) and moved them between files (flush, rewrite, merge), after a gap of expired snapshots,
and after another process changed the schema. Each check compares every table, row for row, read
from the lake itself and from the copy. A catch-up that does not end sends reads to the lake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from service.config import RetentionSettings, StorageSettings
from service.store import lake, series_fold
from service.store import replica as replica_module
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.maintenance import LakeMaintenance
from tests.lake.conftest import Postgres

T0 = 1_700_000_000_000_000_000
SEC = 10**9
DAY = 86400 * SEC
FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "gen__cpu_span_id_some.pb.gz"]


@pytest.fixture
def storage(postgres: Postgres, tmp_path: Path) -> StorageSettings:
    return StorageSettings(backend="ducklake", catalog=postgres.database(), data_path=f"{tmp_path}/files/")


@pytest.fixture
def node(storage: StorageSettings, tmp_path: Path) -> Iterator[Database]:
    db = Database(tmp_path / "node", storage=storage, linger_s=0.05)
    try:
        yield db
    finally:
        db.close()


def _push(db: Database, corpus: Path, n: int, t0: int) -> None:
    ing = Ingestor(db)
    for i in range(n):
        data = (corpus / FILES[i % len(FILES)]).read_bytes()
        ing.ingest(data, labels={"service_name": "r", "instance": f"i{i % 2}"}, ts=t0 + i * SEC)
    db.writer.settle(60)


def _tables(db: Database) -> list[str]:
    with db.read(timeout_s=300, direct=True) as cur:
        rows = cur.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = $d ORDER BY 1", {"d": lake.ALIAS}
        ).fetchall()
    return [r[0] for r in rows]


def _contents(cur: duckdb.DuckDBPyConnection, tables: list[str]) -> dict[str, list[tuple[object, ...]]]:
    return {t: cur.execute(f'SELECT * FROM "{t}" ORDER BY ALL').fetchall() for t in tables}


def _assert_copy_is_lake(db: Database) -> None:
    tables = _tables(db)
    with db.read(timeout_s=300, direct=True) as cur:
        truth = _contents(cur, tables)
        seen = cur.execute("SELECT * FROM series_seen ORDER BY ALL").fetchall()
    with db.read(timeout_s=300) as cur:
        assert cur.execute("SELECT current_database()").fetchone() == ("replica",)
        copy = _contents(cur, tables)
        assert cur.execute("SELECT * FROM series_seen ORDER BY ALL").fetchall() == seen
    for t in tables:
        assert copy[t] == truth[t], t
    assert any(truth[t] for t in ("samples", "profiles", "series"))


def _maintain(db: Database, now_ns: int, retention: RetentionSettings | None = None) -> None:
    m = LakeMaintenance(
        db.maintenance_cursor, db.node_name, db.known, retention or RetentionSettings(), 60.0,
        before=[("fold", series_fold.fold), ("dedupe", series_fold.dedupe)],
    )  # fmt: skip
    report = m.run_once(now_ns, force=True)
    assert report is not None and not report.missing


def test_the_copy_holds_the_lakes_rows_after_pushes_and_every_kind_of_maintenance(node: Database, corpus: Path) -> None:
    replica = node.replica
    assert replica is not None
    _push(node, corpus, 6, T0)
    _assert_copy_is_lake(node)
    # Rows stored twice (two nodes committing the same new rows at once): the copy has them too.
    with node.read(timeout_s=300, direct=True) as cur:
        cur.execute("INSERT INTO stacks SELECT * FROM stacks")
        cur.execute("INSERT INTO series SELECT * FROM series")
    _assert_copy_is_lake(node)
    rebuilds = replica.rebuilds
    # Fold and dedupe (deletes, rewrites of series), rollups, retention (raw data older than a day
    # deleted) and the file steps (inlined rows flushed, files rewritten and merged).
    _maintain(node, T0 + 3 * DAY, RetentionSettings(days=1))
    _assert_copy_is_lake(node)
    with node.read(timeout_s=300, direct=True) as cur:
        assert cur.execute("SELECT count(*) FROM samples").fetchone() == (0,)  # retention ran
    _push(node, corpus, 4, T0 + 3 * DAY)
    _maintain(node, T0 + 3 * DAY + 60 * SEC)
    _push(node, corpus, 2, T0 + 3 * DAY + 120 * SEC)
    _assert_copy_is_lake(node)
    # Files merged and rewritten moved rows, not changed them: applied without copying again.
    assert replica.rebuilds == rebuilds
    assert replica.applied > 0


def test_the_copy_is_taken_again_after_a_gap_of_expired_snapshots_or_a_schema_change(
    node: Database, storage: StorageSettings, tmp_path: Path, corpus: Path
) -> None:
    replica = node.replica
    assert replica is not None
    replica.close()  # no catching up in the background: the copy lags while the lake moves on
    _push(node, corpus, 3, T0)
    with node.read(timeout_s=300, direct=True) as cur:
        cur.execute("INSERT INTO series SELECT * FROM series")  # one more commit after the pushes
    before = replica.rebuilds
    cur = node.maintenance_cursor()
    try:
        time.sleep(0.05)
        cur.execute("CALL ducklake_expire_snapshots('lake', older_than => now())")
    finally:
        cur.close()
    _assert_copy_is_lake(node)
    assert replica.rebuilds == before + 1
    # Another process adds a table to the lake (a newer node's migration): copied too.
    con = lake.connect(storage, tmp_path / "ext")
    try:
        con.execute("USE lake")
        con.execute("CREATE TABLE added_later (k INTEGER)")
        con.execute("INSERT INTO added_later VALUES (7)")
    finally:
        con.close()
    with node.read(timeout_s=300) as cur:
        assert cur.execute("SELECT * FROM added_later").fetchall() == [(7,)]
    assert replica.rebuilds == before + 2
    _assert_copy_is_lake(node)


def test_another_nodes_commits_are_read_through_the_copy(
    storage: StorageSettings, tmp_path: Path, corpus: Path
) -> None:
    a = Database(tmp_path / "a", storage=storage, linger_s=0.05)
    b = Database(tmp_path / "b", storage=storage, linger_s=0.05)
    try:
        _push(a, corpus, 3, T0)
        _assert_copy_is_lake(b)
        with a.read(timeout_s=300) as ca, b.read(timeout_s=300) as cb:
            q = "SELECT series_id, count(*), sum(value * scale) FROM samples GROUP BY 1 ORDER BY 1"
            assert ca.execute(q).fetchall() == cb.execute(q).fetchall() != []
    finally:
        b.close()
        a.close()


def test_a_read_waits_for_a_catch_up_in_progress_only_so_long_then_reads_the_lake(
    node: Database, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push(node, corpus, 2, T0)
    replica = node.replica
    assert replica is not None
    with node.read(timeout_s=60, direct=True) as cur:
        stored = cur.execute("SELECT count(*) FROM profiles").fetchone()
    assert stored is not None and stored[0] > 0
    monkeypatch.setattr(replica_module, "WAIT_S", 0.2)
    # Held: a catch-up that does not end (DuckLake calls have hung).
    with replica._lock, node.read(timeout_s=60) as cur:
        assert cur.execute("SELECT current_database()").fetchone() == ("lake",)
        assert cur.execute("SELECT count(*) FROM profiles").fetchone() == stored
    with node.read(timeout_s=60) as cur:  # and the copy once the catch-up ended
        assert cur.execute("SELECT current_database()").fetchone() == ("replica",)
        assert cur.execute("SELECT count(*) FROM profiles").fetchone() == stored


def test_after_the_instance_is_opened_again_reads_run_on_a_new_copy(node: Database, corpus: Path) -> None:
    """A fatal error (a disk full under the copy's file) invalidates the whole DuckDB instance, the
    copy's attachment with it: the writer opens the lake again, and the node takes a new copy
    there rather than reading a closed one."""
    _push(node, corpus, 2, T0)
    old = node.replica
    assert old is not None
    node.writer.mark_invalid(duckdb.FatalException("database has been invalidated (a test)"))
    deadline = time.monotonic() + 60
    while node.replica is old and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.replica is not old and node.replica is not None
    _push(node, corpus, 2, T0 + 10 * SEC)  # through the new instance, read through the new copy
    _assert_copy_is_lake(node)
    with node.read(timeout_s=60) as cur:
        assert cur.execute("SELECT count(DISTINCT ts) FROM profiles").fetchone() == (4,)
