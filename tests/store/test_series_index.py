"""Migration 0004 builds the label index from the series stored before it, so an old data dir answers the same."""

from __future__ import annotations

from pathlib import Path

import duckdb

from service.api.params import label_matchers
from service.api.querier import labels_of
from service.query.selector import parse_selector
from service.store.db import Database
from service.store.ingest import Ingestor
from service.store.migrate import upgrade
from service.store.reads import find_series, label_names, label_values, list_series
from service.store.series_index import store_series
from tests.api.test_connect import _cpu_profile
from tests.store.test_series_match import LABELS, SELECTORS, series_table

NOW_MS = 1_700_000_000_000


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
        assert cur.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005_series_fold",)]
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


def _index_rows(db: Database) -> list[tuple[str, str, str, int]]:
    with db.read() as cur:
        return cur.execute(
            "SELECT tenant, name, value, series_id FROM series_labels JOIN series_label_values USING (value_id) ORDER BY ALL"
        ).fetchall()


def test_the_writer_indexes_each_new_series_once(tmp_path: Path) -> None:
    """Postings are written with a series' first profile only: not again for its later profiles,
    nor after a restart, when the writer no longer remembers which series it stored."""
    db = Database(tmp_path)
    try:
        ing = Ingestor(db)
        for i, labels in enumerate(
            [{"service_name": "a", "pod": "p1"}, {"service_name": "a", "pod": "p1"}, {"service_name": "b"}]
        ):
            ing.ingest(_cpu_profile([(["main"], 1)], NOW_MS + 1000 * i), labels=labels, name="process_cpu")
        first = _index_rows(db)
        ids = {value: sid for _, name, value, sid in first if name == "service_name"}
        assert [(t, n, v) for t, n, v, _ in first] == [
            ("anonymous", "pod", "p1"),
            ("anonymous", "service_name", "a"),
            ("anonymous", "service_name", "b"),
        ]
        assert len(ids) == 2 and first[0][3] == ids["a"]  # p1 is a's pod
    finally:
        db.close()
    db = Database(tmp_path)
    try:
        Ingestor(db).ingest(
            _cpu_profile([(["main"], 1)], NOW_MS + 5000), labels={"service_name": "a", "pod": "p1"}, name="process_cpu"
        )
        assert _index_rows(db) == first
        with db.read() as cur:
            assert cur.execute("SELECT count(*) FROM series_label_values").fetchall() == [(3,)]
    finally:
        db.close()


def test_cached_labels_are_those_of_the_database_read(tmp_path: Path) -> None:
    """Two files with the same series ids under other labels: each answers with its own, also once cached."""
    cons = []
    for name, labels in (("a", LABELS), ("b", LABELS[::-1])):
        upgrade(tmp_path / f"{name}.duckdb")
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"))
        store_series(con, series_table(label_sets=labels))
        cons.append(con)
    try:
        for _ in range(2):
            for con in cons:
                assert find_series(con, "t") == list_series(con, "t")
                assert find_series(con, "t", None, [[("env", "=", "prod")]]) == [
                    s for s in list_series(con, "t") if s.labels.get("env") == "prod"
                ]
        assert find_series(cons[0], "t") != find_series(cons[1], "t")
    finally:
        for con in cons:
            con.close()
