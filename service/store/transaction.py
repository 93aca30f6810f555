"""The brackets around a write step: one transaction, and Arrow tables visible to SQL for its length.

DuckDB ends a transaction itself when its COMMIT fails, so the ROLLBACK after an error may have
nothing to roll back; its own error would hide the one that matters, and is dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb
import pyarrow as pa

__all__ = ["registered", "transaction"]


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """``BEGIN`` … ``COMMIT`` around the block; on any error (or interrupt), ``ROLLBACK`` and re-raise."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` readable as the view ``name`` on ``con`` for the block, and gone after it, whatever happens."""
    con.register(name, table)
    try:
        yield
    finally:
        con.unregister(name)
