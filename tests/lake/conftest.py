"""Fixtures for the lake tests: the real parts of :mod:`bench.lakeparts` (PostgreSQL, moto S3),
one of each per session, and DuckDB with the DuckLake, postgres and httpfs extensions loaded from
their PyPI wheels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from bench.lakeparts import S3, Postgres, postgres_server, s3_server
from service.store import lake

__all__ = ["S3", "Postgres", "lake_duckdb", "postgres", "s3"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def lake_duckdb(extension_dir: Path) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with the three extensions, as a lake node loads them."""
    con = duckdb.connect(config=lake.config(extension_dir))
    lake.load_extensions(con)
    return con
