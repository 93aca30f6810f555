"""Parameters and checks every query endpoint shares: the query, the time range, the tenant.

Also the checks that make a mistyped request fail loudly instead of answering something else:
unknown query parameters (:func:`reject_unknown_params`), profile types that do not resolve, and
selectors that match nothing (:func:`select_series` answers 404 with the closest label values).
"""

from __future__ import annotations

import difflib
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from service.errors import InvalidRequest, NotFound, UnknownProfileType
from service.query.selector import Matcher, format_selector, parse_query
from service.query.selector import Query as ParsedQuery
from service.query.source import ProfileSource
from service.store.reads import LabelMatcher, SeriesRow
from service.types import KNOWN_PROFILE_TYPES, ProfileType, TimeRange, format_time, unknown_type_message

__all__ = [
    "APP_CHECKS",
    "FromParam",
    "GroupByParam",
    "QueryParam",
    "UntilParam",
    "group_labels",
    "known_types",
    "label_matchers",
    "reject_unknown_params",
    "require_profiles",
    "select_series",
    "time_range",
]

QueryParam = Annotated[
    str,
    Query(
        description="`<profile type>{<selector>}`: a profile type and a Prometheus-style label selector (`=`, `!=`, "
        "`=~`, `!~`; regexes fully anchored). The type is a Pyroscope ID "
        "(`process_cpu:cpu:nanoseconds:cpu:nanoseconds`), a short name (`cpu`, `heap`, `allocs`, `goroutine`, "
        "`block`, `mutex`, `inuse_objects`, …) or a partial ID (`memory:inuse_space`).",
        examples=['process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="checkout"}', 'heap{service_name="demo"}'],
    ),
]
FromParam = Annotated[
    str | None,
    Query(
        alias="from",
        description="Start: RFC 3339, unix seconds or milliseconds, or `now-1h` (any duration: `now-1h30m`). "
        "Default: until minus 1 h.",
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

# The paths whose parameters are all ours. Pyroscope's legacy ``POST /ingest`` and the Connect
# routes (``/querier.v1…``, ``/push.v1…``) are left alone: SDKs and agents send parameters there
# that profstore has no use for (``spyName``, ``sampleRate``, Connect's ``encoding``…), and
# refusing them would refuse their profiles. ``/metrics`` is a scrape target; scrapers add their own.
CHECKED_PREFIXES = ("/api/v1/", "/-/")


async def reject_unknown_params(request: Request) -> None:
    """An app-wide dependency: a query parameter the endpoint does not declare is a 400 naming it.

    Without it ``aggregation`` misspelt ``agregation`` answered 200 with the default aggregation —
    a wrong answer that looks right. The declared names are read from the matched route (its own
    parameters and those of its sub-dependencies), so a new endpoint is covered without a list.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not route.path.startswith(CHECKED_PREFIXES):
        return
    known = _declared(route)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known]
    if not unknown:
        return
    close = {n: difflib.get_close_matches(n, sorted(known), n=1, cutoff=0.6) for n in unknown}
    choices = f"known: {', '.join(sorted(known))}" if known else f"{route.path} takes no query parameters"
    if len(unknown) == 1:
        name = unknown[0]
        hint = f' did you mean "{close[name][0]}"?' if close[name] else ""
        raise InvalidRequest(f'unknown parameter "{name}";{hint} {choices}')
    named = [f'"{n}"' + (f' (did you mean "{close[n][0]}"?)' if close[n] else "") for n in unknown]
    raise InvalidRequest(f"unknown parameters {', '.join(named)}; {choices}")


# The checks every request passes before its endpoint runs: the app's dependencies (``create_app``),
# which the push endpoints' LeanRoute runs itself when it skips FastAPI's dependency resolution.
APP_CHECKS: tuple[Callable[[Request], Awaitable[None]], ...] = (reject_unknown_params,)


def _declared(route: APIRoute) -> frozenset[str]:
    """The query parameter names (aliases: ``from``, not ``from_``) of a route and its dependencies.

    Walked on every request (a handful of lists): routes are unhashable, and a cache keyed by
    ``id()`` could outlive an app and answer for another route built at the same address.
    """

    def walk(d: Dependant) -> Iterable[str]:
        yield from (f.alias for f in d.query_params)
        for sub in d.dependencies:
            yield from walk(sub)

    return frozenset(walk(route.dependant))


def time_range(
    request: Request, from_: str | None, until: str | None, names: tuple[str, str] = ("from", "until")
) -> TimeRange:
    """The range of two parameters; ``names`` are what the user sent them as (``base_from``), for the errors."""
    tr = TimeRange.parse(from_, until, names=names)
    limit = request.app.state.settings.max_range_days
    if limit is not None and tr.end - tr.start > limit * 86400 * 10**9:
        raise InvalidRequest(
            f"time range {names[0]}..{names[1]} of {(tr.end - tr.start) / 86400e9:.1f} days exceeds the maximum of "
            f"{limit:g} days"
        )
    return tr


def known_types(stored: Iterable[ProfileType]) -> str:
    known = sorted({str(pt) for pt in stored})
    return ", ".join(known) if known else "none yet"


def label_matchers(matchers: Iterable[Matcher]) -> list[LabelMatcher]:
    """Parsed (and so validated) matchers as the store matches them."""
    return [(m.name, m.op, m.value) for m in matchers]


def select_series(
    src: ProfileSource, tenant: str, query: str, *, require: bool = True
) -> tuple[ParsedQuery, list[SeriesRow]]:
    """The parsed query (its type resolved to a full ID) and its matching series of ``tenant``.

    A type that resolves to nothing stored or known is a 400 listing the stored ones. With
    ``require`` (every endpoint that answers numbers), no matching series is a 404 that says
    which matcher matched nothing and the closest values that exist: a typo in a selector
    would otherwise answer zeros, or export an empty profile, that look like real answers.
    Search endpoints (series, profiles, labels) pass ``require=False``: empty is their answer.
    """
    stored = src.stored_types(tenant)
    q = parse_query(query, stored)
    if q.profile_type not in stored and str(q.profile_type) not in KNOWN_PROFILE_TYPES:
        head = query[: query.find("{")] if "{" in query else query
        raise UnknownProfileType(unknown_type_message(head.strip(), stored))
    matched = src.find_series(tenant, q.profile_type, [label_matchers(q.matchers)])
    if require and not matched:
        raise NotFound(_no_match(q, src.find_series(tenant, q.profile_type), stored))
    return q, matched


def _no_match(q: ParsedQuery, of_type: list[SeriesRow], stored: set[ProfileType]) -> str:
    """``no series of T match {…}; did you mean service_name="demo"? (service_name has: checkout, demo)``."""
    head = f"no series of {q.profile_type} match {_clip(format_selector(q.matchers))}"
    if not of_type:
        return f"{head}: none of this type is stored; stored: {known_types(stored)}"
    hints = [_hint(m, of_type) for m in q.matchers if not any(m.matches(s.labels) for s in of_type)]
    if not hints:
        return f"{head}: each matcher matches some series of this type, but no series matches all of them"
    return f"{head}; " + "; ".join(hints)


def _clip(text: str, limit: int = 300) -> str:
    """A user's text as an error quotes it: whole when short, else its start (a label value may be 2 KiB)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _listed(values: list[str], limit: int = 20) -> str:
    shown = ", ".join(_clip(v, 100) for v in values[:limit]) or "no values"
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _hint(m: Matcher, of_type: list[SeriesRow]) -> str:
    """What exists instead of what one matcher asked for, among the series of the queried type."""
    names = sorted({k for s in of_type for k in s.labels})
    if m.name not in names:
        close = difflib.get_close_matches(m.name, names, n=1, cutoff=0.6)
        guess = f'did you mean "{close[0]}"? ' if close else ""
        return f'no series of this type has a label "{_clip(m.name)}"; {guess}(labels: {_listed(names)})'
    values = sorted({s.labels[m.name] for s in of_type if m.name in s.labels})
    has = f"({m.name} has: {_listed(values)})"
    if m.op == "=":
        close = difflib.get_close_matches(m.value, values, n=1, cutoff=0.6)
        if close:
            return f"did you mean {_clip(str(Matcher(m.name, '=', close[0])))}? {has}"
    return f"{_clip(str(m))} matches no series {has}"


def require_profiles(
    src: ProfileSource, q: ParsedQuery, series: list[SeriesRow], tr: TimeRange, names: tuple[str, str]
) -> None:
    """NotFound unless ``series`` hold a profile in ``tr``, saying where their profiles are.

    An export of nothing is a valid, empty pprof that ``go tool pprof`` opens without a word:
    the user must learn that the range, not the program, is empty.
    """
    inside, before, after = src.profiles_around([s.series_id for s in series], tr)
    if inside:
        return
    what = f"{q.profile_type}{_clip(format_selector(q.matchers))}"
    where = (
        f"{what} has no profiles between {format_time(tr.start)} ({names[0]}) and {format_time(tr.end)} ({names[1]})"
    )
    if before is not None and after is not None:
        raise NotFound(f"{where}; the nearest are at {format_time(before)} and {format_time(after)}")
    if before is not None:
        raise NotFound(f"{where}; its newest is at {format_time(before)}")
    if after is not None:
        raise NotFound(f"{where}; its oldest is at {format_time(after)}")
    raise NotFound(f"{where}; none of its profiles are left (retention deletes old ones)")


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
