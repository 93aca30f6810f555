"""Parameters and checks every query endpoint shares: the query, the time range, the tenant."""

from __future__ import annotations

from typing import Annotated

import duckdb
from fastapi import Query, Request

from service.errors import InvalidRequest
from service.query.selector import Query as ParsedQuery
from service.query.selector import parse_query
from service.store.reads import SeriesRow, list_series
from service.types import TimeRange

__all__ = [
    "FromParam",
    "GroupByParam",
    "QueryParam",
    "UntilParam",
    "group_labels",
    "known_types",
    "select_series",
    "time_range",
]

QueryParam = Annotated[
    str,
    Query(
        description="`<profile type>{<selector>}`: a profile type as Pyroscope names it and a Prometheus-style label "
        "selector (`=`, `!=`, `=~`, `!~`; regexes fully anchored).",
        examples=['process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout"}'],
    ),
]
FromParam = Annotated[
    str | None,
    Query(
        alias="from",
        description="Start: RFC 3339, unix seconds or milliseconds, or `now-1h`. Default: until minus 1 h.",
        examples=["now-1h"],
    ),
]
UntilParam = Annotated[str | None, Query(description="End, same formats as `from`. Default: now.", examples=["now"])]
GroupByParam = Annotated[
    str | None,
    Query(
        description="Comma-separated series labels to split the answer by (a series without one counts as its "
        "empty value): one line per value in time series, one table per value in top, and in flame graphs one "
        "`label=value` frame per label above each stack, as `go tool pprof -tagroot` draws them.",
        examples=["service_name"],
    ),
]


def time_range(request: Request, from_: str | None, until: str | None) -> TimeRange:
    tr = TimeRange.parse(from_, until)
    limit = request.app.state.settings.max_range_days
    if limit is not None and tr.end - tr.start > limit * 86400 * 10**9:
        raise InvalidRequest(
            f"time range of {(tr.end - tr.start) / 86400e9:.1f} days exceeds the maximum of {limit:g} days"
        )
    return tr


def known_types(series: list[SeriesRow]) -> str:
    known = sorted({str(s.profile_type) for s in series})
    return ", ".join(known) if known else "none stored yet"


def select_series(cur: duckdb.DuckDBPyConnection, tenant: str, query: str) -> tuple[ParsedQuery, list[SeriesRow]]:
    """The parsed query and its matching series of ``tenant``; an unknown profile type is a 400 listing the known ones."""
    q = parse_query(query)
    series = list_series(cur, tenant)
    if not any(s.profile_type == q.profile_type for s in series):
        raise InvalidRequest(f'unknown profile type "{q.profile_type}"; known: {known_types(series)}')
    return q, [s for s in series if s.profile_type == q.profile_type and q.matches(s.labels)]


def group_labels(group_by: str | None, series: list[SeriesRow]) -> list[str] | None:
    """The ``group_by`` labels; one that none of the matching series has is a 400 (most likely a typo)."""
    groups = [g.strip() for g in group_by.split(",") if g.strip()] if group_by else None
    known = {k for s in series for k in s.labels}
    unknown = [g for g in groups or () if g not in known]
    if series and unknown:
        raise InvalidRequest(
            f"group_by label {unknown[0]!r} is on none of the matching series; they have: {', '.join(sorted(known))}"
        )
    return groups
