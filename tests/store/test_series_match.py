"""Selectors matched in the store (SQL over the label maps) agree with the parsed matchers' own rule.

The reference is :meth:`Matcher.matches` on each series' labels with Pyroscope's internal ones
(``__name__``, ``__profile_type__``…), the rule Prometheus states: a missing label reads as "",
regexes are RE2 and fully anchored. Each selector below is run both ways over the same series.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from service.api.params import label_matchers
from service.api.querier import labels_of
from service.query.selector import parse_selector
from service.store.migrate import upgrade
from service.store.reads import SeriesRow, find_series, label_names, label_values, list_series
from service.store.series_index import store_series
from service.types import ProfileType, TimeRange

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
HEAP = "memory:inuse_space:bytes:space:bytes"
LABELS = [
    {"service_name": "checkout", "env": "prod", "pod": "checkout-7d9f"},
    {"service_name": "checkout", "env": "dev"},
    {"service_name": "Checkout-API", "region": "eu"},
    {"service_name": "café", "env": ""},
    {"service_name": "multi\nline", "env": "prod"},
    {"service_name": "a.b", "env": "prod", "__name__": "shadowed"},
    {"service_name": "axb"},
    {},
]
SELECTORS = [
    "{}",
    '{service_name="checkout"}',
    '{service_name!="checkout"}',
    '{env=""}',
    '{env!=""}',
    '{missing=""}',
    '{missing=~".+"}',
    '{missing!~".*"}',
    '{service_name=~"check.*"}',
    '{service_name=~"(?i)check.*"}',
    '{service_name=~"a.b"}',
    '{service_name=~"a\\\\.b"}',
    '{service_name=~"multi.line"}',
    '{service_name=~"(?s)multi.line"}',
    '{service_name=~"caf."}',
    '{service_name=~"^checkout$"}',
    '{service_name=~"checkout|axb"}',
    '{service_name=~"[[:alpha:]]+"}',
    '{service_name!~"check.*", env="prod"}',
    '{service_name=~".*", env=~"prod|"}',
    '{__name__="process_cpu"}',
    '{__name__="shadowed"}',
    f'{{__profile_type__="{HEAP}"}}',
    '{__type__=~"inuse_.*", env="prod"}',
    '{__period_unit__="nanoseconds", service_name=~"check.*"}',
]


def series_table(tenant: str = "t", id_offset: int = 0, label_sets: list[dict[str, str]] = LABELS) -> pa.Table:
    """One series per label set and type (ids from ``id_offset + 1``); seen at ts 10..19 or 20..29."""
    rows = []
    for i, labels in enumerate(label_sets):
        for j, pt in enumerate((CPU, HEAP)):
            name, st, su, ptype, pu = pt.split(":")
            first = 10 + 10 * (i % 2)
            rows.append(
                (id_offset + 2 * i + j + 1, tenant, pt, name, st, su, ptype, pu, list(labels.items()), first, first + 9)
            )
    return pa.table(
        {
            "series_id": pa.array([r[0] for r in rows], pa.uint64()),
            **{c: [r[k] for r in rows] for k, c in enumerate(("tenant", "profile_type", "name", "sample_type", "sample_unit", "period_type", "period_unit"), start=1)},
            "labels": pa.array([r[8] for r in rows], pa.map_(pa.string(), pa.string())),
            "first_seen": [r[9] for r in rows],
            "last_seen": [r[10] for r in rows],
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def cur(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated database with the series of :func:`series_table` for tenants "t" and "other",
    stored with their label index as the writer stores them."""
    path = tmp_path_factory.mktemp("match") / "profstore.duckdb"
    upgrade(path)
    con = duckdb.connect(str(path))
    store_series(con, series_table())
    store_series(con, series_table("other", 1000))
    store_series(con, series_table())  # stored again: nothing doubles
    yield con
    con.close()


def _ids(series: list[SeriesRow]) -> list[int]:
    return sorted(s.series_id for s in series)


@pytest.mark.parametrize("selector", SELECTORS)
def test_the_store_matches_as_the_matchers_do(cur: duckdb.DuckDBPyConnection, selector: str) -> None:
    matchers = parse_selector(selector)
    every = list_series(cur, "t")
    expected = [s for s in every if all(m.matches(labels_of(s)) for m in matchers)]
    assert _ids(find_series(cur, "t", None, [label_matchers(matchers)])) == _ids(expected)
    of_cpu = [s for s in expected if str(s.profile_type) == CPU]
    assert _ids(find_series(cur, "t", ProfileType.parse(CPU), [label_matchers(matchers)])) == _ids(of_cpu)


def test_selectors_are_alternatives_and_ranges_and_tenants_narrow(cur: duckdb.DuckDBPyConnection) -> None:
    every = list_series(cur, "t")
    a, b = parse_selector('{env="dev"}'), parse_selector('{region="eu"}')
    either = [s for s in every if any(all(m.matches(s.labels) for m in sel) for sel in (a, b))]
    assert _ids(find_series(cur, "t", None, [label_matchers(a), label_matchers(b)])) == _ids(either) != []
    early = [s for s in every if s.first_seen <= 15]
    assert _ids(find_series(cur, "t", None, (), TimeRange(0, 15))) == _ids(early) != _ids(every)
    assert {s.series_id for s in find_series(cur, "other")} == {s.series_id + 1000 for s in every}


def test_label_names_and_values_are_those_of_the_matching_series(cur: duckdb.DuckDBPyConnection) -> None:
    prod = [label_matchers(parse_selector('{env="prod"}'))]
    assert label_names(cur, "t", None, prod) == ["__name__", "env", "pod", "service_name"]
    assert label_values(cur, "t", "service_name", None, prod) == ["a.b", "checkout", "multi\nline"]
    assert label_values(cur, "t", "env") == ["", "dev", "prod"]
    assert label_values(cur, "t", "nosuch") == []
    assert label_names(cur, "nosuch") == []


def _names_and_values(found: list[SeriesRow]) -> tuple[list[str], dict[str, list[str]]]:
    names = sorted({k for s in found for k in s.labels})
    return names, {n: sorted({s.labels[n] for s in found if n in s.labels}) for n in ("service_name", "env", "nosuch")}


@pytest.mark.parametrize("selector", SELECTORS)
@pytest.mark.parametrize("scope", ["all", "cpu", "early", "late cpu"])
def test_label_names_and_values_are_those_the_matchers_select(
    cur: duckdb.DuckDBPyConnection, selector: str, scope: str
) -> None:
    """Label lookups (over the index) return the stored labels of exactly the series the parsed matchers select."""
    matchers = parse_selector(selector)
    pt = ProfileType.parse(CPU) if "cpu" in scope else None
    tr = {"early": TimeRange(0, 15), "late cpu": TimeRange(25, 40)}.get(scope)
    found = [
        s
        for s in list_series(cur, "t", pt)
        if all(m.matches(labels_of(s)) for m in matchers)
        and (tr is None or (s.last_seen >= tr.start and s.first_seen <= tr.end))
    ]
    names, values = _names_and_values(found)
    sel = [label_matchers(matchers)]
    assert label_names(cur, "t", pt, sel, tr) == names
    assert {n: label_values(cur, "t", n, pt, sel, tr) for n in values} == values


def test_selectors_that_match_every_series_list_every_label(cur: duckdb.DuckDBPyConnection) -> None:
    names, values = _names_and_values(list_series(cur, "t"))
    assert names == ["__name__", "env", "pod", "region", "service_name"]
    for selectors in ([], [[]], [label_matchers(parse_selector('{env="dev"}')), []]):
        assert label_names(cur, "t", None, selectors) == names
        assert {n: label_values(cur, "t", n, None, selectors) for n in values} == values
    # Stored twice, the series and their postings are there once; each distinct value once per tenant.
    pairs = [(k, v) for labels in LABELS for k, v in labels.items()]
    assert cur.execute("SELECT count(*) FROM series_labels").fetchall() == [(2 * 2 * len(pairs),)]
    assert cur.execute("SELECT count(DISTINCT value_id) FROM series_label_values").fetchall() == [
        (2 * len(set(pairs)),)
    ]
