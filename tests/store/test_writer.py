"""The writer pipeline: batches commit whole or not at all, a failing profile fails alone, copies are stored once."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import StoreError
from service.pprof.decode import decode, parse
from service.pprof.encode import encode
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.writer import Writer
from tests.pprof.test_decode import minimal


def _profiles(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        p = parse(minimal().SerializeToString())
        p.time_nanos = 1_700_000_000_000_000_000 + i
        out.append(encode(p))
    return out


def _counts(db: Database) -> tuple[int, int]:
    with db.read() as cur:
        profiles = cur.execute("SELECT count(DISTINCT group_id) FROM profiles").fetchone()[0]
        samples = cur.execute("SELECT count(*) FROM samples").fetchone()[0]
    return profiles, samples


def test_a_profile_that_breaks_its_batch_is_kept_as_a_file_and_the_others_are_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input is refused before the acknowledgement; a profile DuckDB still fails on afterwards
    (here a poisoned append) is retried alone, then kept as a pprof file beside its labels and error,
    while the rest of its batch is stored and the journal is emptied."""
    data = _profiles(12)
    poisoned = {7}
    real = Writer._append

    def append(self, con, rows):  # type: ignore[no-untyped-def]
        if any(item.group_id in bad_groups for item in rows.items):
            raise RuntimeError("disk on fire")
        real(self, con, rows)

    monkeypatch.setattr(Writer, "_append", append)
    db = Database(tmp_path)
    ing = Ingestor(db)
    bad_groups: set[int] = set()
    try:
        import xxhash

        from service.pprof.decode import decompress
        from service.store.normalize import Meta

        for i in poisoned:
            raw = decompress(data[i])
            bad_groups.add(
                Meta(
                    "anonymous",
                    {"n": str(i)},
                    "process_cpu",
                    1_700_000_000_000_000_000 + i,
                    xxhash.xxh3_64_intdigest(raw),
                    "push",
                ).group_id
            )
        start = threading.Barrier(len(data))

        def one(i: int) -> str:
            start.wait()
            try:
                ing.ingest(data[i], labels={"n": str(i)}, name="process_cpu")
                return "ok"
            except StoreError as exc:
                return str(exc)

        with ThreadPoolExecutor(len(data)) as pool:
            results = list(pool.map(one, range(len(data))))
        assert results == ["ok"] * len(data)
        profiles, samples = _counts(db)
        assert profiles == len(data) - len(poisoned)
        assert samples == profiles * 2  # two samples each; cpu/nanoseconds aliases samples/count
    finally:
        db.close()
    kept = sorted((tmp_path / "journal" / "rejected").iterdir())
    assert [p.suffix for p in kept] == [".json", ".gz"]
    about = json.loads(kept[0].read_text())
    assert about["labels"] == {"n": "7"} and about["ts"] == 1_700_000_000_000_000_007
    assert "disk on fire" in about["error"]
    assert decode(kept[1].read_bytes()).time_nanos == 1_700_000_000_000_000_007
    assert not list((tmp_path / "journal").glob("*.log"))  # everything else committed: nothing to replay


def test_copies_arriving_while_the_first_is_being_committed_are_stored_once(tmp_path: Path) -> None:
    data = _profiles(1)[0]
    db = Database(tmp_path)
    ing = Ingestor(db)
    try:
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda _: ing.ingest(data, labels={"n": "x"}, name="process_cpu"), range(200)))
        assert sum(not r.duplicate for r in results) == 1
        assert len({tuple(r.profile_ids) for r in results}) == 1
        assert _counts(db) == (1, 2)
    finally:
        db.close()


def _stored(db: Database) -> int:
    with db.read() as cur:
        return int(cur.execute("SELECT count(DISTINCT group_id) FROM profiles").fetchone()[0])


def test_a_copy_is_a_duplicate_from_memory_after_a_restart_and_after_a_deletion(tmp_path: Path) -> None:
    """The writer answers "stored before?" from memory above its watermark: that answer must be the
    file's, whether the copy comes at once, after a restart, older than the newest, or after a deletion."""
    data = _profiles(3)
    db = Database(tmp_path)
    ing = Ingestor(db)
    first = [ing.ingest(d, labels={"job": "a"}) for d in data]
    assert [r.duplicate for r in first] == [False, False, False]
    again = ing.ingest(data[1], labels={"job": "a"})
    assert again.duplicate and again.profile_ids == first[1].profile_ids
    assert not ing.ingest(data[1], labels={"job": "b"}).duplicate  # other labels: another profile
    db.close()

    db = Database(tmp_path)
    ing = Ingestor(db)
    try:
        assert ing.ingest(data[2], labels={"job": "a"}).duplicate  # the newest stored: at the watermark
        assert ing.ingest(data[0], labels={"job": "a"}).duplicate  # older than it
        assert _stored(db) == 4
        # A deletion goes through the writer as a task; what it deleted is not "stored" any more.
        db.writer.call(lambda con: con.execute("DELETE FROM profiles WHERE ts = $ts", {"ts": first[2].ts})).result()
        assert not ing.ingest(data[2], labels={"job": "a"}).duplicate
        assert ing.ingest(data[2], labels={"job": "a"}).duplicate
        assert _stored(db) == 4
    finally:
        db.close()


def test_only_a_profile_older_than_the_rolled_up_buckets_marks_one_dirty(tmp_path: Path) -> None:
    """The writer skips the rollup_dirty statement when the batch is newer than every rolled-up bucket."""
    from service.store.stack_rollups import compact

    old, new = _profiles(2)
    p = decode(new)
    p.time_nanos = 1_800_000_000_000_000_000
    newer = encode(p)
    db = Database(tmp_path)
    ing = Ingestor(db)
    try:
        ing.ingest(old, labels={"job": "a"})
        done = db.writer.call(lambda con: compact(con, 1_750_000_000_000_000_000)).result()
        assert isinstance(done, dict) and min(done.values()) > 1_700_000_000_000_000_000

        def dirty() -> int:
            with db.read() as cur:
                return int(cur.execute("SELECT count(*) FROM rollup_dirty").fetchone()[0])

        ing.ingest(newer, labels={"job": "a"})
        assert dirty() == 0
        ing.ingest(new, labels={"job": "a"})  # 1 ns after the first: inside a rolled-up bucket
        assert dirty() > 0
    finally:
        db.close()


def test_the_writer_checkpoints_between_batches_past_its_threshold(tmp_path: Path) -> None:
    """Past its threshold the WAL is checkpointed by the writer after the batch (its callers answered),
    not by DuckDB inside a COMMIT; below it, it is left to grow. Nothing is lost either way."""
    data = _profiles(4)
    for name, idle in (("eager", 1), ("lazy", 1 << 30)):
        db = Database(tmp_path / name, checkpoint_idle_bytes=idle, checkpoint_busy_bytes=idle)
        seen: list[str] = []
        db.writer.observe_stages(lambda stage, seconds, seen=seen: seen.append(stage))
        ing = Ingestor(db)
        for d in data:
            ing.ingest(d, labels={"job": name})
        db.writer.close()  # the last batch's checkpoint runs after its acknowledgement: wait for the thread
        wal = db.path.with_name(db.path.name + ".wal")
        if idle == 1:  # after every batch (a batch may hold more than one of them)
            assert 1 <= seen.count("checkpoint") == seen.count("commit") <= len(data)
            assert not wal.exists() or wal.stat().st_size == 0
        else:
            assert "checkpoint" not in seen and wal.stat().st_size > 0
        db._con.close()  # no closing checkpoint: the lazy one reopens from its WAL
        db = Database(tmp_path / name)
        try:
            assert _counts(db)[0] == len(data)
        finally:
            db.close()


# DuckLake's words, verbatim (a commit that lost to another node's with ducklake_max_retry_count = 0,
# and PostgreSQL stopped under a live lake connection), as measured in the issue 19 spike.
_LOST = (
    "TransactionContext Error: Failed to commit: Failed to commit DuckLake transaction.\n"
    "Exceeded the maximum retry count of 0 set by the ducklake_max_retry_count setting.\n"
    'Failed to flush changes into DuckLake: ERROR:  duplicate key value violates unique constraint "ducklake_snapshot_pkey"'
)
_PG_DOWN = (
    "IO Error: Failed to query most recent snapshot for DuckLake: Unable to connect to Postgres at "
    '"dbname=lake host=/tmp/pg port=5432 user=lake password=hunter2":\nconnection to server on socket '
    '"/tmp/pg/.s.PGSQL.5432" failed: No such file or directory'
)


def test_a_lost_lake_commit_is_a_conflict_and_an_unreachable_catalog_says_why() -> None:
    import duckdb

    from service.store.writer import _reason, is_commit_conflict

    assert is_commit_conflict(duckdb.TransactionException(_LOST))
    assert not is_commit_conflict(duckdb.TransactionException("Failed to commit: Could not write file"))  # disk full
    assert not is_commit_conflict(duckdb.IOException(_PG_DOWN))
    why = _reason(duckdb.IOException(_PG_DOWN))  # what a refused push is told: the catalog, not a bare first line
    assert "Unable to connect to Postgres" in why and "No such file or directory" in why
    assert "hunter2" not in why
