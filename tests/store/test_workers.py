"""Ingest workers: a body staged in a worker process is stored exactly as one staged in-process,
its errors are the same errors, and a worker that dies costs no push."""

from __future__ import annotations

import gzip
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.errors import ProfileError, ProfileTooLarge
from service.pprof.decode import resolve
from service.pprof.encode import encode
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.normalize import Meta
from service.store.records import decode
from service.store.workers import Workers
from service.types import DecodeLimits

FILES = [
    "go119__cpu_10s.pb.gz",
    "go119__heap.pb.gz",
    "go119__goroutine.pb.gz",
    "gen__go_cpu_labels.pb.gz",
    "gen__nodejs_wall_us.pb.gz",
    "gpprof__cppbench.cpu.legacy",
]
TABLES = ("profiles", "samples", "function_rollup", "stacks", "locations", "functions", "mappings", "labelsets")


@pytest.fixture(scope="module")
def workers() -> Iterator[Workers]:
    w = Workers(2)
    w.start()
    deadline = time.monotonic() + 120
    while not w.ready:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
    yield w
    w.close()


def _store(path: Path, corpus: Path, workers: Workers | None) -> dict[str, list[tuple[object, ...]]]:
    db = Database(path)
    ing = Ingestor(db, workers=workers)
    try:
        for i, f in enumerate(FILES):
            for copy in range(2):  # the second is a duplicate, found as one either way
                res = ing.ingest((corpus / f).read_bytes(), labels={"f": f}, ts=1_700_000_000_000_000_000 + i)
                assert res.duplicate == bool(copy)
        with db.read() as cur:
            return {t: sorted(cur.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        db.close()


def test_a_worker_stages_the_rows_the_serving_process_would(tmp_path: Path, corpus: Path, workers: Workers) -> None:
    here = _store(tmp_path / "here", corpus, None)
    there = _store(tmp_path / "there", corpus, workers)
    assert all(here[t] for t in TABLES)
    for t in TABLES:
        assert there[t] == here[t], t


def test_errors_come_back_as_the_same_errors(workers: Workers) -> None:
    limits = DecodeLimits(max_uncompressed_bytes=1000)
    with pytest.raises(ProfileError, match="parsing profile") as err:
        workers.prepare(b"not a profile at all", limits, {}, None, None, "t", "push")
    assert type(err.value).__name__ == "ParseError"
    with pytest.raises(ProfileTooLarge) as big:
        workers.prepare(gzip.compress(bytes(5000)), limits, {}, None, None, "t", "push")
    assert big.value.limit == 1000 and "exceeds the limit of 1000 bytes" in str(big.value)


def _rebuilt(record: bytes) -> list[tuple[bytes, Meta]]:
    """What a journal record rebuilds: its profiles as pprof bytes and their metadata (the pickled
    bytes themselves differ between processes, with how each interned its strings)."""
    return [(encode(resolve(env)), meta) for env, meta in decode(record)]


def test_a_killed_worker_costs_no_push(tmp_path: Path, corpus: Path) -> None:
    w = Workers(1)
    w.start()
    try:
        while not w.ready:
            time.sleep(0.05)
        pid = w._idle.queue[0].process.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        data = (corpus / FILES[0]).read_bytes()
        ready = w.prepare(data, DecodeLimits(), {"a": "b"}, None, 1, "t", "push")  # staged here this once
        assert ready.part.types
        deadline = time.monotonic() + 120
        while not w.ready:  # and the pool comes back
            assert time.monotonic() < deadline
            time.sleep(0.05)
        again = w.prepare(data, DecodeLimits(), {"a": "b"}, None, 1, "t", "push")
        assert _rebuilt(again.record) == _rebuilt(ready.record)
    finally:
        w.close()
