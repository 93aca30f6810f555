"""Series ids inlined into SQL: every uint64 matches itself, an empty list matches nothing."""

from __future__ import annotations

import duckdb

from service.store.reads import id_list


def test_id_list_matches_full_range_ids_and_nothing_when_empty() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x UBIGINT)")
    con.execute("INSERT INTO t VALUES (1), (18446744073709551615), (9223372036854775808)")
    assert con.execute(f"SELECT count(*) FROM t WHERE x IN ({id_list([2**64 - 1, 2**63, 5])})").fetchone() == (2,)
    assert con.execute(f"SELECT count(*) FROM t WHERE x IN ({id_list([])})").fetchone() == (0,)
