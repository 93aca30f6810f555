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


@pytest.fixture(scope="module")
def cur(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    """A migrated database with one series per label set and type; seen at ts 10..19 or 20..29."""
    path = tmp_path_factory.mktemp("match") / "profstore.duckdb"
    upgrade(path)
    con = duckdb.connect(str(path))
    rows = []
    for i, labels in enumerate(LABELS):
        for j, pt in enumerate((CPU, HEAP)):
            name, st, su, ptype, pu = pt.split(":")
            first = 10 + 10 * (i % 2)
            rows.append((2 * i + j + 1, "t", pt, name, st, su, ptype, pu, list(labels.items()), first, first + 9))
    table = pa.table(
        {
            "series_id": pa.array([r[0] for r in rows], pa.uint64()),
            **{c: [r[k] for r in rows] for k, c in enumerate(("tenant", "profile_type", "name", "sample_type", "sample_unit", "period_type", "period_unit"), start=1)},
            "labels": pa.array([r[8] for r in rows], pa.map_(pa.string(), pa.string())),
            "first_seen": [r[9] for r in rows],
            "last_seen": [r[10] for r in rows],
        }
    )  # fmt: skip
    store_series(con, table)
    other = table.set_column(0, "series_id", pa.compute.add(table["series_id"], pa.scalar(1000, pa.uint64())))
    store_series(con, other.set_column(1, "tenant", pa.array(["other"] * len(other))))
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
