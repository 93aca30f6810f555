"""What the DuckLake backend stands on, proven with the real parts: the pinned DuckDB loads the
three extensions from their wheels with no network, a lake on the PostgreSQL catalog is shared by
separate DuckDB instances (as nodes share it) with its files in a directory or on S3, and a catalog
that goes away is a clear error that passes once it is back."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from service.store.lake import extension_file
from tests.lake.conftest import S3, Postgres, lake_duckdb


def test_the_extensions_come_from_the_wheels_of_the_pinned_duckdb(tmp_path: Path) -> None:
    for name in ("ducklake", "postgres", "httpfs"):
        assert extension_file(name).is_file(), f"duckdb-extension-{name} does not match duckdb {duckdb.__version__}"
    con = lake_duckdb(tmp_path / "ext")
    loaded = {r[0] for r in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()}
    assert {"ducklake", "postgres_scanner", "httpfs"} <= loaded
    again = lake_duckdb(tmp_path / "ext")  # a second instance loads what the first installed
    assert again.execute(
        "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'ducklake'"
    ).fetchone() == (1,)


@pytest.mark.parametrize("where", ["directory", "s3"])
def test_two_instances_share_one_lake(where: str, postgres: Postgres, s3: S3, tmp_path: Path) -> None:
    catalog = postgres.database()
    data_path = f"{tmp_path}/files/" if where == "directory" else f"s3://{s3.bucket}/{tmp_path.name}/"

    def node() -> duckdb.DuckDBPyConnection:
        con = lake_duckdb(tmp_path / "ext")
        con.execute(s3.secret_sql())
        con.execute(f"ATTACH 'ducklake:postgres:{catalog}' AS lake (DATA_PATH '{data_path}')")
        con.execute("SET ducklake_max_retry_count = 0")  # conflicts are retried by the writer (issue 19)
        return con

    a, b = node(), node()
    a.execute("CREATE TABLE lake.t (k UBIGINT, v BLOB)")
    a.execute("INSERT INTO lake.t SELECT range, hash(range)::VARCHAR::BLOB FROM range(1000)")
    b.execute("INSERT INTO lake.t SELECT range + 1000, NULL FROM range(10)")
    for con in (a, b):
        assert con.execute("SELECT count(*), count(DISTINCT k) FROM lake.t").fetchone() == (1010, 1010)
    if where == "directory":
        assert list((tmp_path / "files").rglob("*.parquet"))
    else:
        listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{tmp_path.name}/")
        assert any(o["Key"].endswith(".parquet") for o in listed.get("Contents", []))


def test_a_catalog_that_is_down_is_a_clear_error_until_it_is_back(postgres: Postgres, tmp_path: Path) -> None:
    catalog = postgres.database()
    con = lake_duckdb(tmp_path / "ext")
    con.execute(f"ATTACH 'ducklake:postgres:{catalog}' AS lake (DATA_PATH '{tmp_path}/files/')")
    con.execute("CREATE TABLE lake.t AS SELECT 1 AS x")
    postgres.stop()
    try:
        with pytest.raises(duckdb.IOException, match=r"(?i)postgres"):
            con.execute("INSERT INTO lake.t VALUES (2)")
    finally:
        postgres.start()
    con.execute("INSERT INTO lake.t VALUES (3)")
    assert con.execute("SELECT list(x ORDER BY x) FROM lake.t").fetchone() == ([1, 3],)
