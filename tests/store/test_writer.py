"""The writer pipeline: batches commit whole or not at all, a failing profile fails alone, copies are stored once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.errors import StoreError
from service.pprof.decode import parse
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


def test_a_profile_that_breaks_its_batch_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
        assert [r == "ok" for r in results] == [i not in poisoned for i in range(len(data))], results
        assert "disk on fire" in results[7]
        profiles, samples = _counts(db)
        assert profiles == len(data) - len(poisoned)
        assert samples == profiles * 2  # two samples each; cpu/nanoseconds aliases samples/count
    finally:
        db.close()


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
