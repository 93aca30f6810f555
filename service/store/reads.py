"""Reads of series, labels and profiles as SQL over the schema, and the SQL fragments the store's other
read modules share (:func:`values_between`, :func:`rollups_between`, :func:`id_list`,
:func:`rounded_quotient`). Every user value is a bound parameter.

Nothing above the store calls these with a cursor: ``service/store/source.py`` serves them as the
query layer's ``ProfileSource``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from service.store import series_index
from service.store.series_index import PSEUDO_LABELS, LabelMatcher, label_names, label_values, series_where
from service.types import ProfileType, TimeRange

__all__ = [
    "PSEUDO_LABELS",
    "LabelMatcher",
    "SeriesRow",
    "data_span",
    "find_series",
    "function_exists",
    "function_names",
    "id_list",
    "label_names",
    "label_values",
    "list_profiles",
    "list_series",
    "ping",
    "profile_spans",
    "profiles_around",
    "rollups_between",
    "rounded_quotient",
    "span_stacks",
    "stored_types",
    "values_between",
]


def id_list(ids: Iterable[int]) -> str:
    """Series ids as the SQL list of ``series_id IN (…)``.

    Series ids are ours — hashes of stored labels, never text from a request — and ``int`` makes
    each a plain number. DuckDB pushes a literal list into the table scan, where row groups are
    skipped by their min/max, but plans a bound list parameter as a semi-join over every row in
    the time range: a one-hour merge took 24 ms that way and 14 ms with the literal list.
    """
    return ",".join(f"{int(i)}::UBIGINT" for i in ids) or "NULL"


def values_between(lo: str, hi: str, series: str | None = None) -> str:
    """``series_id, ts, stack_id, labelset_id, value`` (scaled, aliases expanded) for ``lo <= ts < hi``.

    What the ``sample_values`` view gives, with the time bounds (SQL expressions, usually
    parameters) and an optional series filter (an :func:`id_list` or a subquery) written into both branches:
    through the view, the aliased branch joins ``samples`` on the source profile without
    bounds, and DuckDB scans every row group of the table instead of skipping by time.
    """
    return _between("samples", ("stack_id", "labelset_id"), ("value",), lo, hi, series)


def rollups_between(lo: str, hi: str, series: str | None = None) -> str:
    """``series_id, ts, function_id, flat, cum`` for ``lo <= ts < hi``: the ``rollup_values`` view
    with the bounds in both branches, as :func:`values_between` is to ``sample_values``."""
    return _between("function_rollup", ("function_id",), ("flat", "cum"), lo, hi, series)


def _between(table: str, keys: tuple[str, ...], values: tuple[str, ...], lo: str, hi: str, series: str | None) -> str:
    only = f"AND series_id IN ({series})" if series else ""
    only_p = f"AND p.series_id IN ({series})" if series else ""
    own = ", ".join([*keys, *(f"{v} * scale AS {v}" for v in values)])
    aliased = ", ".join([*(f"x.{k}" for k in keys), *(f"x.{v} * p.scale AS {v}" for v in values)])
    return (
        f"SELECT series_id, ts, {own} FROM {table} "
        f"WHERE ts >= {lo} AND ts < {hi} {only} "
        "UNION ALL "
        f"SELECT p.series_id, p.ts, {aliased} FROM profiles p "
        "JOIN profiles src ON src.group_id = p.group_id AND src.type_index = p.alias_of "
        f"JOIN {table} x ON x.series_id = src.series_id AND x.ts = src.ts "
        f"WHERE p.alias_of >= 0 AND p.ts >= {lo} AND p.ts < {hi} AND src.ts >= {lo} AND src.ts < {hi} "
        f"AND x.ts >= {lo} AND x.ts < {hi} {only_p}"
    )


def rounded_quotient(v: str, n: str) -> str:
    """SQL for the integer ``v / n`` rounded half to even, computed exactly (``n`` > 0).

    Gauges are averaged over each series' scrapes; in floating point, one third three times plus a
    half is 1.4999… in one summation order and 1.5 in another, so top and the export of the same
    query rounded the same stack to different units. Integer arithmetic rounds it one way only.
    DuckDB's ``//`` and ``%`` truncate towards zero, hence the floor through a non-negative remainder.
    """
    rem = f"((({v}) % ({n}) + ({n})) % ({n}))"
    floor = f"((({v}) - {rem}) // ({n}))"
    return f"({floor} + CASE WHEN 2 * {rem} > ({n}) OR (2 * {rem} = ({n}) AND {floor} % 2 <> 0) THEN 1 ELSE 0 END)"


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_id: int
    profile_type: ProfileType
    labels: dict[str, str]
    first_seen: int
    last_seen: int


def list_series(
    cur: duckdb.DuckDBPyConnection, tenant: str, profile_type: ProfileType | None = None
) -> list[SeriesRow]:
    # series_seen: one row per series, first/last seen exact on a shared lake too (migration 0005).
    sql = "SELECT series_id, profile_type, labels, first_seen, last_seen FROM series_seen WHERE tenant = $tenant"
    params: dict[str, object] = {"tenant": tenant}
    if profile_type is not None:
        sql += " AND profile_type = $pt"
        params["pt"] = str(profile_type)
    rows = cur.execute(sql + " ORDER BY profile_type, series_id", params).fetchall()
    return [SeriesRow(int(r[0]), ProfileType.parse(r[1]), dict(r[2]), r[3], r[4]) for r in rows]


def find_series(
    cur: duckdb.DuckDBPyConnection,
    tenant: str,
    profile_type: ProfileType | None = None,
    selectors: Sequence[Sequence[LabelMatcher]] = (),
    tr: TimeRange | None = None,
) -> list[SeriesRow]:
    """The series of ``tenant`` of a type (any when None) that match any of ``selectors`` and were
    seen in ``tr`` (any time when None), matched where they are stored.

    Label matchers run over the label index (:mod:`service.store.series_index`), which hands back
    series ids: no series' label map is decoded to match, and those of the matches mostly come
    from a cache.
    """
    rows = series_index.find_series(cur, tenant, profile_type, selectors, tr)
    types = {pt: ProfileType.parse(pt) for pt in {r[1] for r in rows}}  # parsed once each, not once a series
    return [SeriesRow(sid, types[pt], labels, first, last) for sid, pt, labels, first, last in rows]


def stored_types(cur: duckdb.DuckDBPyConnection, tenant: str, tr: TimeRange | None = None) -> set[ProfileType]:
    """The profile types ``tenant`` has series of (seen in ``tr``, any time when None): the one
    reader of the REST and Connect profile-type lists and of the query parser's stored types."""
    params: dict[str, object] = {}
    where = series_where(cur, tenant, None, (), tr, params)
    rows = cur.execute(f"SELECT DISTINCT profile_type FROM series_seen WHERE {where}", params)
    return {ProfileType.parse(r[0]) for r in rows.fetchall()}


def profile_spans(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange
) -> list[tuple[int, int, int, int]]:
    """Per series with profiles in ``tr``: ``series_id``, its first and last profile time, and how many."""
    return cur.execute(
        "SELECT series_id, min(ts), max(ts), count(*) FROM profiles "
        f"WHERE series_id IN ({id_list(series_ids)}) AND ts BETWEEN $start AND $end GROUP BY series_id",
        {"start": tr.start, "end": tr.end},
    ).fetchall()


def data_span(cur: duckdb.DuckDBPyConnection, tenant: str) -> tuple[int | None, int | None]:
    """The first and last time ``tenant`` has data of (None, None without series)."""
    row = cur.execute(
        "SELECT min(first_seen), max(last_seen) FROM series_seen WHERE tenant = $tenant", {"tenant": tenant}
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


# Samples whose ``span_id`` label is one of ``$spans``, merged per stack (sum: a span's samples
# are its own, whatever the profile type). A semi-join on the label sets: a set stored twice (two
# nodes that committed it at once, on a lake) must not count its samples twice.
_SPAN_STACKS = (
    "SELECT v.stack_id, sum(v.value)::DOUBLE AS value FROM ({values}) v WHERE v.labelset_id IN ("
    "SELECT labelset_id FROM labelsets WHERE list_position(keys, 'span_id') > 0 "
    "AND strs[list_position(keys, 'span_id')] IN (SELECT unnest($spans))) GROUP BY v.stack_id"
)


def span_stacks(cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange, spans: list[str]) -> pa.Table:
    """``stack_id, value``: the samples of ``series_ids`` in ``tr`` labelled with one of ``spans``, per stack."""
    sql = _SPAN_STACKS.format(values=values_between("$start", "$end", id_list(series_ids)))
    return cur.execute(sql, {"start": tr.start, "end": tr.end + 1, "spans": spans}).to_arrow_table()


def ping(cur: duckdb.DuckDBPyConnection) -> None:
    """A query that touches nothing: the database answers (liveness)."""
    cur.execute("SELECT 1").fetchone()


def list_profiles(
    cur: duckdb.DuckDBPyConnection,
    series_ids: list[int],
    tr: TimeRange,
    limit: int,
    *,
    newest_first: bool = True,
    after: tuple[int, int, int] | None = None,
) -> list[tuple[Any, ...]]:
    """Profiles of ``series_ids`` in ``tr``, ordered by ``(ts, series_id, profile_id)`` (descending when
    ``newest_first``), starting after the key ``after`` of the previous page's last row.

    A keyset, not an offset: a page costs the same however deep it is, and profiles stored while
    a client pages (always newer ones) neither repeat nor shift the rows of the next page.
    """
    desc = "DESC" if newest_first else "ASC"
    sql = (
        "SELECT profile_id, series_id, ts, duration_ns, period, total, sample_count, source FROM profiles "
        f"WHERE series_id IN ({id_list(series_ids)}) AND ts BETWEEN $start AND $end"
    )
    params: dict[str, object] = {"start": tr.start, "end": tr.end, "limit": limit}
    if after is not None:
        op = "<" if newest_first else ">"
        # The bare ts bound lets DuckDB skip row groups by their min/max before the exact keyset test.
        sql += (
            f" AND ts {op}= $ts AND (ts {op} $ts OR (ts = $ts AND (series_id {op} $sid "
            f"OR (series_id = $sid AND profile_id {op} $pid))))"
        )
        params.update(ts=after[0], sid=after[1], pid=after[2])
    sql += f" ORDER BY ts {desc}, series_id {desc}, profile_id {desc} LIMIT $limit"
    return cur.execute(sql, params).fetchall()


def profiles_around(
    cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange
) -> tuple[int, int | None, int | None]:
    """How many profiles of ``series_ids`` lie in ``tr``, the newest before it and the oldest after it.

    What an empty answer needs to say where the data is instead. One pass over ``profiles`` (a row
    per stored profile, not per sample), reading only the ``series_id`` and ``ts`` columns.
    """
    if not series_ids:
        return 0, None, None
    row = cur.execute(
        "SELECT count(*) FILTER (WHERE ts BETWEEN $start AND $end), max(ts) FILTER (WHERE ts < $start), "
        f"min(ts) FILTER (WHERE ts > $end) FROM profiles WHERE series_id IN ({id_list(series_ids)})",
        {"start": tr.start, "end": tr.end},
    ).fetchone()
    assert row is not None  # an aggregate always has a row
    return int(row[0]), row[1], row[2]


def function_exists(cur: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether any stored function has exactly this name (a scan of the small ``functions`` table)."""
    return cur.execute("SELECT 1 FROM functions WHERE name = $name LIMIT 1", {"name": name}).fetchone() is not None


def function_names(cur: duckdb.DuckDBPyConnection, series_ids: list[int], tr: TimeRange) -> list[str]:
    """The distinct names of the functions on stacks of ``series_ids`` in ``tr``, for suggesting one."""
    if not series_ids:
        return []
    rollups = rollups_between("$lo", "$hi", id_list(series_ids))
    rows = cur.execute(
        f"SELECT DISTINCT name FROM functions WHERE function_id IN (SELECT DISTINCT function_id FROM ({rollups})) "
        "ORDER BY name",
        {"lo": tr.start, "hi": tr.end + 1},
    ).fetchall()
    return [r[0] for r in rows]
