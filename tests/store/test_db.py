"""The database object: time limits on reads, and reads that never see a half-written batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import QueryTimeout
from service.store.db import Database


def test_a_read_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    db = Database(tmp_path)
    try:
        with (
            pytest.raises(QueryTimeout, match=r"query ran longer than 0\.2 s and was stopped"),
            db.read(timeout_s=0.2) as cur,
        ):
            cur.execute("SELECT count(*) FROM range(100000000000) a").fetchall()
        with db.read() as cur:  # the connection is usable afterwards
            assert cur.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    Database(tmp_path).close()
    db = Database(tmp_path)  # a second start applies nothing and keeps the schema
    try:
        with db.read() as cur:
            assert cur.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005_series_fold",)]
    finally:
        db.close()


def test_duckdbs_memory_is_bounded_as_configured(tmp_path: Path) -> None:
    db = Database(tmp_path, memory_limit="256MB")
    try:
        with db.read() as cur:
            limit = cur.execute("SELECT current_setting('memory_limit')").fetchone()
        assert limit is not None and limit[0].startswith("244.1 MiB")  # 256 MB in DuckDB's binary units
    finally:
        db.close()
