"""The ingest journal: what is acknowledged survives until DuckDB has it, and not longer.

Framing and recovery are checked on the files themselves (a torn tail, a full disk); replay
through a real Database: records a crash left are committed once, also when part of them was
committed before the crash.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from service.errors import StoreError
from service.pprof.decode import read
from service.store import records
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.journal import MAGIC, Journal
from service.store.normalize import Meta
from tests.store.test_writer import _counts, _profiles


def test_records_come_back_in_order_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    seg = j.append([b"one", b"two"])
    assert j.append([b"three"]) == seg
    j._close_fd()  # a crash: nothing applied, nothing closed cleanly
    path = tmp_path / f"{seg:012d}.log"
    with path.open("ab") as f:
        f.write(b"\x09\x00\x00\x00\x00\x00")  # a record cut in its frame by the crash (never acknowledged)
    again = Journal(tmp_path)
    assert again.recover() == [(seg, b"one"), (seg, b"two"), (seg, b"three")]
    assert again.append([b"four"]) > seg  # a new segment: the torn one is never appended to


def test_a_segment_goes_once_everything_in_it_is_applied_and_it_is_no_longer_written(tmp_path: Path) -> None:
    j = Journal(tmp_path, segment_bytes=64)
    first = j.append([b"x" * 40])
    second = j.append([b"y" * 40])  # past 64 bytes: a new segment
    assert second == first + 1
    j.applied(first)
    assert not (tmp_path / f"{first:012d}.log").exists()
    j.applied(second)
    assert (tmp_path / f"{second:012d}.log").exists()  # still the one being written
    j.close()
    assert not list(tmp_path.glob("*.log"))


def test_a_failed_write_is_cut_back_and_the_next_one_is_readable(tmp_path: Path) -> None:
    """RLIMIT_FSIZE fails the write past the limit with EFBIG, as a full disk fails it (in a child
    process, so that the limit does not reach this one)."""
    script = f"""
import resource, sys
sys.path.insert(0, {str(Path.cwd())!r})
from pathlib import Path
from service.store.journal import Journal
j = Journal(Path({str(tmp_path)!r}))
j.append([b"a" * 100])
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
try:
    j.append([b"b" * 10000])
except OSError as exc:
    print("failed:", exc.strerror)
j.append([b"c" * 100])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "failed: File too large" in out.stdout, out
    assert Journal(tmp_path).recover() == [(1, b"a" * 100), (1, b"c" * 100)]
    assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY


def _leave_in_journal(tmp_path: Path, data: list[bytes], labels: dict[str, str]) -> list[Meta]:
    """Journal records as a run killed after their acknowledgement would leave them."""
    j = Journal(tmp_path / "journal")
    metas = []
    for i, d in enumerate(data):
        env = read(d)
        meta = Meta("anonymous", labels, "process_cpu", 1_700_000_000_000_000_000 + i, env.content_hash, "push")
        j.append([records.encode_record([(env, meta)])])
        metas.append(meta)
    j._close_fd()
    return metas


def test_what_a_crash_left_in_the_journal_is_committed_once_at_the_next_start(tmp_path: Path) -> None:
    data = _profiles(5)
    db = Database(tmp_path)
    Ingestor(db).ingest(data[0], labels={"job": "a"}, ts=1_700_000_000_000_000_000)  # committed before the crash
    db.close()
    _leave_in_journal(tmp_path, data, {"job": "a"})  # its record too: replaying it must not store it twice

    db = Database(tmp_path)
    try:
        assert _counts(db) == (5, 10)  # read() waits for the replay to be committed
        again = Ingestor(db).ingest(data[3], labels={"job": "a"}, ts=1_700_000_000_000_000_003)
        assert again.duplicate
    finally:
        db.close()
    assert not list((tmp_path / "journal").glob("*.log"))


def test_an_unreadable_record_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal")
    j.append([b"\x63" + bytes(8) + b"from a newer release"])
    j._close_fd()
    with pytest.raises(StoreError, match=r"journal record format 99.*move that directory aside"):
        Database(tmp_path)
    assert list((tmp_path / "journal").glob("*.log"))  # kept


def test_the_magic_marks_a_segment(tmp_path: Path) -> None:
    """A file in the journal directory that is not a segment is left alone, never deleted."""
    (tmp_path / "000000000001.log").write_bytes(b"something else")
    (tmp_path / "000000000002.log").write_bytes(MAGIC[:5])  # cut while it was created: removed
    assert Journal(tmp_path).recover() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000000000001.log"]
    assert os.path.getsize(tmp_path / "000000000001.log") == len(b"something else")
