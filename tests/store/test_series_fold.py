"""On a DuckDB file the writer keeps ``series`` exact and the keys unique: fold and dedupe leave it as it is,
and ``series_seen`` is the table itself. (On a lake: tests/lake/test_writers.py.)"""

from __future__ import annotations

from pathlib import Path

from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.series_fold import NOTHING_TO_FOLD, Deduped, Folded, dedupe, fold


def test_fold_and_dedupe_leave_a_duckdb_file_as_it_is(tmp_path: Path, corpus: Path) -> None:
    db = Database(tmp_path)
    try:
        ing = Ingestor(db)
        for i, name in enumerate(["go119__cpu_10s.pb.gz", "go119__heap.pb.gz"]):
            ing.ingest((corpus / name).read_bytes(), labels={"i": str(i)}, ts=1_700_000_000_000_000_000 + i)
        with db.read() as cur:
            before = cur.execute("SELECT * FROM series ORDER BY series_id").fetchall()
            assert cur.execute("SELECT * FROM series_seen ORDER BY series_id").fetchall() == before
        assert db.writer.call(fold).result(60) == Folded()
        assert db.writer.call(dedupe).result(60) == Deduped()
        with db.read() as cur:
            assert cur.execute("SELECT * FROM series ORDER BY series_id").fetchall() == before
            assert cur.execute("SELECT snapshot FROM series_fold").fetchall() == [(NOTHING_TO_FOLD,)]
    finally:
        db.close()
