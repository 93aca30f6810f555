"""For the lake tests: DuckDB with the DuckLake, postgres and httpfs extensions loaded from their
PyPI wheels. The ``postgres`` and ``s3`` fixtures (one real server of each per session) come from
the plugin :mod:`tests.backends`, which every test directory shares."""

from __future__ import annotations

from pathlib import Path

import duckdb

from bench.lakeparts import S3, Postgres
from service.store import lake

__all__ = ["S3", "Postgres", "lake_duckdb"]


def lake_duckdb(extension_dir: Path) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the three extensions, as a lake node loads them."""
    con = duckdb.connect(config=lake.config(extension_dir))
    lake.load_extensions(con)
    return con
