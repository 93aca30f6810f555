"""Migration 0004 builds the label index from the series stored before it, so an old data dir answers the same."""

from __future__ import annotations

from pathlib import Path

import duckdb

from service.api.params import label_matchers
from service.api.querier import labels_of
from service.query.selector import parse_selector
from service.store.migrate import upgrade
from service.store.reads import find_series, label_names, label_values, list_series
from tests.store.test_series_match import SELECTORS, series_table


def test_a_database_at_0003_is_indexed_by_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "profstore.duckdb"
    upgrade(path, "0003_regressions")
    with duckdb.connect(str(path)) as con:  # series as the writer stored them before the index existed
        con.register("old", series_table())
        con.execute("INSERT INTO series SELECT * FROM old")
        con.register("old_other", series_table("other", 1000))
        con.execute("INSERT INTO series SELECT * FROM old_other")
    upgrade(path)
    with duckdb.connect(str(path)) as cur:
        assert cur.execute("SELECT version_num FROM alembic_version").fetchall() == [("0004_series_label_index",)]
        every = list_series(cur, "t")
        assert len(every) == 16
        for selector in SELECTORS:
            matchers = parse_selector(selector)
            found = [s for s in every if all(m.matches(labels_of(s)) for m in matchers)]
            sel = [label_matchers(matchers)]
            assert find_series(cur, "t", None, sel) == found, selector  # list_series's order: type, then id
            assert label_names(cur, "t", None, sel) == sorted({k for s in found for k in s.labels}), selector
            values = sorted({s.labels["env"] for s in found if "env" in s.labels})
            assert label_values(cur, "t", "env", None, sel) == values, selector
        assert label_values(cur, "other", "service_name") == label_values(cur, "t", "service_name") != []
