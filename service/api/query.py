"""Query endpoints: top functions, flame graphs, time series, diffs and series, under ``/api/v1``.

Every endpoint takes ``query=<profile type>{<selector>}`` and a range, reads through a cursor
that is interrupted past the configured time limit (503), and answers numbers that agree with
``go tool pprof`` on the export of the same query (see the README for aggregation and rounding).
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from service.api.auth import tenant_of
from service.api.params import (
    FromParam,
    GroupByParam,
    QueryParam,
    UntilParam,
    group_labels,
    select_series,
    time_range,
)
from service.errors import InvalidRequest
from service.query.aggregation import Aggregation, aggregation_for
from service.query.flamegraph import build_tree, nested_json, pyroscope_levels
from service.query.groups import Group, grouped_stacks, members, two_windows
from service.query.stacks import under_roots
from service.query.timeseries import timeseries
from service.query.top import diff, top
from service.types import TimeRange, parse_duration

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")

MAX_POINTS = 11_000  # per line, as Prometheus caps a range query
MAX_NODES = 1_048_576
DEFAULT_NODES = 8192  # also what max_nodes=0 means, as in Pyroscope's SelectMergeStacktraces

AggregationParam = Annotated[
    Aggregation | None,
    Query(
        description="How profiles of one series combine over the range: `sum` (default for cumulative types: cpu, "
        "alloc_*, contentions, delay), `avg` (default for gauges: inuse_*, goroutine, threadcreate; the average "
        "scrape of each series) or `last` (each series' latest scrape)."
    ),
]
FocusParam = Annotated[str | None, Query(description="pprof's focus: keep stacks with a frame matching this regex.")]
IgnoreParam = Annotated[str | None, Query(description="pprof's ignore: drop stacks with a frame matching this regex.")]
HideParam = Annotated[str | None, Query(description="pprof's hide: drop frames matching this regex from every stack.")]


class Filters:
    """What every stack endpoint takes besides the query and range: the aggregation and pprof's filters."""

    def __init__(
        self,
        aggregation: AggregationParam = None,
        focus: FocusParam = None,
        ignore: IgnoreParam = None,
        hide: HideParam = None,
        resolution: Annotated[
            Literal["auto", "raw"],
            Query(
                description="`auto`: hour and minute rollups where the range allows (same answer, less to read); "
                "`raw`: every stored profile. The `X-Profstore-Resolution` response header says what was read."
            ),
        ] = "auto",
    ) -> None:
        self.aggregation, self.focus, self.ignore, self.hide = aggregation, focus, ignore, hide
        self.raw = resolution == "raw"


FiltersParam = Annotated[Filters, Depends()]


class _Answer(BaseModel):
    """What every query answer starts with: the type and the aggregation it was computed for."""

    profile_type: str
    aggregation: Aggregation


class TopRowOut(BaseModel):
    name: str
    inline: str | None = Field(
        description="`inline` when every call into this function was inlined, `partial-inline` when some were "
        "(pprof prints it after the name)"
    )
    flat: int
    flat_percent: float = Field(description="flat / total x 100, two decimals as pprof prints it")
    sum_percent: float = Field(description="running sum of flat_percent in this order")
    cum: int
    cum_percent: float


class TopGroup(BaseModel):
    labels: dict[str, str] = Field(description="The group's value of each `group_by` label")
    total: int = Field(description="The group's sum before focus/ignore/hide: the 100 % of its percentages")
    functions: int = Field(
        description="Functions in the group's table before `limit` (flat or cum not zero): more than the rows "
        "when the table was cut"
    )
    rows: list[TopRowOut]


class TopResponse(_Answer):
    total: int = Field(
        description="Sum of all stacks before focus/ignore/hide: the 100 % of the percentages, as pprof's"
    )
    functions: int = Field(
        description="Functions in the table before `limit` (flat or cum not zero, after focus/ignore/hide): more "
        "than the rows when the table was cut. With `group_by`, the sum of the groups' (the rows of all tables "
        "without `limit`)"
    )
    rows: list[TopRowOut] = Field(description="The table; empty with `group_by`, which gives one per group")
    groups: list[TopGroup] | None = Field(
        default=None, description="With `group_by`: one table per group, largest total first"
    )


class FlameNode(BaseModel):
    name: str
    self: int
    total: int
    children: list[FlameNode]


class PyroscopeFlamegraph(BaseModel):
    names: list[str]
    levels: list[list[int]] = Field(description="Per depth, nodes as [x_delta, total, self, name_index]")
    total: int
    max_self: int


class FlamegraphResponse(_Answer):
    total: int
    tree: FlameNode | None = None
    flamebearer: PyroscopeFlamegraph | None = None


class PointOut(BaseModel):
    ts: int = Field(
        description="End of the step, unix nanoseconds: the point holds the profiles of (ts - step, ts], as "
        "Pyroscope's SelectSeries (and so Grafana) labels them. Points sit at `from` + k x step; the first, at "
        "`from`, holds the step before `from`; steps without profiles have no point"
    )
    value: float


class SeriesLine(BaseModel):
    labels: dict[str, str]
    points: list[PointOut]


class TimeseriesResponse(_Answer):
    step_s: float
    function: str | None
    series: list[SeriesLine]


class DiffRowOut(BaseModel):
    name: str
    base: int = Field(description="The function's flat (or cum, with `by=cum`) in the base window, in sample units")
    current: int = Field(description="The same in the current window")
    base_percent: float = Field(description="base / the base window's total x 100, two decimals as in top")
    current_percent: float = Field(description="current / the current window's total x 100, two decimals")
    change: int = Field(
        description="current - base, in the profile's sample unit (nanoseconds, bytes, count …), whatever "
        "`normalize` says; with `normalize=false` the rows are sorted by its absolute value"
    )
    change_points: float = Field(
        description="current_percent - base_percent in percentage points (computed before rounding, two decimals); "
        "with `normalize=true` (the default) the rows are sorted by its absolute value"
    )
    relative: float | None = Field(
        description="current / base - 1 of what is compared: of the shares with `normalize=true`, of the values "
        "with `normalize=false` (0.5 = half as much again); null when the function is new"
    )


class DiffGroup(BaseModel):
    labels: dict[str, str] = Field(description="The group's value of each `group_by` label")
    base_total: int
    current_total: int
    rows: list[DiffRowOut]


class DiffResponse(_Answer):
    normalized: bool = Field(
        description="The `normalize` asked for: true compares shares (`change_points`, `relative` of shares), "
        "false compares values (`change`, `relative` of values)"
    )
    base_total: int
    current_total: int
    rows: list[DiffRowOut] = Field(description="The comparison; empty with `group_by`, which gives one per group")
    groups: list[DiffGroup] | None = Field(
        default=None, description="With `group_by`: one comparison per group, largest current total first"
    )


class SeriesInfo(BaseModel):
    profile_type: str
    labels: dict[str, str]
    first_seen: int = Field(description="unix nanoseconds of the first profile in the range")
    last_seen: int
    profiles: int


RESOLUTION_HEADER = "X-Profstore-Resolution"


def _stacks(
    request: Request,
    response: Response,
    query: str,
    tr: TimeRange,
    f: Filters,
    group_by: str | None = None,
) -> tuple[str, Aggregation, list[Group]]:
    """The merged stacks after filters — one group, or one per value of the ``group_by`` labels."""
    with request.app.state.sources.read() as src:
        q, series = select_series(src, tenant_of(request), query)
        agg = aggregation_for(q.profile_type, f.aggregation)
        keys = group_labels(group_by, series) or []
        groups, resolutions = grouped_stacks(
            src, request.app.state.stack_names, series, keys, tr, agg, (f.focus, f.ignore, f.hide), raw=f.raw
        )
    response.headers[RESOLUTION_HEADER] = " / ".join(resolutions)
    return str(q.profile_type), agg, groups


@router.get("/top", response_model=TopResponse, summary="Top functions by flat or cum (as `go tool pprof -top`)")
def get_top(
    request: Request,
    response: Response,
    query: QueryParam,
    filters: FiltersParam,
    from_: FromParam = None,
    until: UntilParam = None,
    order: Annotated[Literal["flat", "cum"], Query(description="Sort by flat or cum")] = "flat",
    limit: Annotated[int, Query(ge=1, le=100_000, description="Rows to return (per group)")] = 100,
    group_by: GroupByParam = None,
) -> TopResponse:
    tr = time_range(request, from_, until)
    pt, agg, groups = _stacks(request, response, query, tr, filters, group_by=group_by)
    tables = []
    for g in groups:
        rows, total, functions = top(g.stacks, order, limit, g.before)
        tables.append(TopGroup(labels=g.labels, total=total, functions=functions, rows=[TopRowOut.model_validate(r, from_attributes=True) for r in rows]))  # fmt: skip
    if group_by is None:
        return TopResponse(profile_type=pt, aggregation=agg, total=tables[0].total, functions=tables[0].functions, rows=tables[0].rows)  # fmt: skip
    tables.sort(key=lambda t: -t.total)
    return TopResponse(
        profile_type=pt, aggregation=agg, total=sum(t.total for t in tables),
        functions=sum(t.functions for t in tables), rows=[], groups=tables,
    )  # fmt: skip


@router.get("/flamegraph", response_model=FlamegraphResponse, summary="Merged call tree")
def get_flamegraph(
    request: Request,
    response: Response,
    query: QueryParam,
    filters: FiltersParam,
    from_: FromParam = None,
    until: UntilParam = None,
    max_nodes: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_NODES,
            description="Keep the nodes with the largest totals; the cut children of a parent become one `other` "
            "node. 0 means the default, 8192, as in Pyroscope's API",
        ),
    ] = DEFAULT_NODES,
    format: Annotated[
        Literal["tree", "pyroscope"],
        Query(description="`tree`: nested JSON; `pyroscope`: the `names` + `levels` layout Grafana reads"),
    ] = "tree",
    group_by: GroupByParam = None,
) -> FlamegraphResponse:
    pt, agg, groups = _stacks(request, response, query, time_range(request, from_, until), filters, group_by=group_by)
    if group_by is None:
        stacks = groups[0].stacks
    else:
        stacks = under_roots([([f"{k}={v}" for k, v in g.labels.items()], g.stacks) for g in groups])
    tree = build_tree(stacks, max_nodes or DEFAULT_NODES)
    out = FlamegraphResponse(profile_type=pt, aggregation=agg, total=stacks.total)
    if format == "pyroscope":
        out.flamebearer = PyroscopeFlamegraph.model_validate(pyroscope_levels(tree))
        return out
    # The nested tree is as deep as the deepest stack: written without recursion, not validated.
    head = json.dumps(out.model_dump(mode="json", exclude={"tree"}))
    text = head[:-1] + ',"tree":' + nested_json(tree) + "}"
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(text, media_type="application/json", headers=headers)  # type: ignore[return-value]


def _step_ns(step: float | None, tr: TimeRange) -> int:
    span_s = max((tr.end - tr.start) / 1e9, 1.0)
    if step is None:
        step = max(15.0, math.ceil(span_s / 500))
    if not math.isfinite(step) or step <= 0:
        raise InvalidRequest(f"step must be a positive number of seconds, got {step}")
    if span_s / step > MAX_POINTS:
        raise InvalidRequest(
            f"step of {step:g} s gives {span_s / step:.0f} points per series over this range; "
            f"the maximum is {MAX_POINTS}: use a step of at least {math.ceil(span_s / MAX_POINTS)} s"
        )
    return int(step * 1e9)


@router.get("/timeseries", response_model=TimeseriesResponse, summary="Total, or one function, per step")
def get_timeseries(
    request: Request,
    query: QueryParam,
    from_: FromParam = None,
    until: UntilParam = None,
    step: Annotated[
        str | None, Query(description="Step: `15s`, `1m`, `1h30m` or seconds; default: the range / 500, at least 15 s")
    ] = None,
    group_by: GroupByParam = None,
    function: Annotated[
        str | None, Query(description="A function name: its flat or cum per step instead of the series total")
    ] = None,
    value: Annotated[Literal["flat", "cum"], Query(description="With `function`: flat or cum")] = "flat",
    aggregation: AggregationParam = None,
) -> TimeseriesResponse:
    tr = time_range(request, from_, until)
    step_ns = _step_ns(parse_duration(step, "step") / 1e9 if step is not None else None, tr)
    with request.app.state.sources.read() as src:
        q, series = select_series(src, tenant_of(request), query)
        groups = group_labels(group_by, series)
        agg = aggregation_for(q.profile_type, aggregation)
        lines = timeseries(src, series, tr, step_ns, agg, group_by=groups, function=function, value=value)
    return TimeseriesResponse(
        profile_type=str(q.profile_type),
        aggregation=agg,
        step_s=step_ns / 1e9,
        function=function,
        series=[SeriesLine(labels=ln.labels, points=[PointOut(ts=p.ts, value=p.value) for p in ln.points]) for ln in lines],
    )  # fmt: skip


@router.get("/diff", response_model=DiffResponse, summary="Per function: base window vs current window")
def get_diff(
    request: Request,
    response: Response,
    query: QueryParam,
    filters: FiltersParam,
    base_from: Annotated[str, Query(description="Start of the base window (formats as `from`)")],
    base_until: Annotated[str, Query(description="End of the base window")],
    from_: FromParam = None,
    until: UntilParam = None,
    base_query: Annotated[
        str | None, Query(description="Selector of the base window when it differs from `query` (same profile type)")
    ] = None,
    normalize: Annotated[
        bool, Query(description="Compare shares of each window's total (default) rather than raw values")
    ] = True,
    by: Annotated[Literal["flat", "cum"], Query(description="Compare flat or cum")] = "flat",
    limit: Annotated[int, Query(ge=1, le=100_000, description="Rows to return (per group)")] = 100,
    group_by: GroupByParam = None,
) -> DiffResponse:
    tr = time_range(request, from_, until)
    base_tr = time_range(request, base_from, base_until, names=("base_from", "base_until"))
    sources = request.app.state.sources
    pprof_filters = (filters.focus, filters.ignore, filters.hide)
    tables: list[DiffGroup] = []
    resolutions: list[str] = []
    with sources.read() as src:
        q, series = select_series(src, tenant_of(request), query)
        bq, base_series = (q, series) if base_query is None else select_series(src, tenant_of(request), base_query)
        if bq.profile_type != q.profile_type:
            raise InvalidRequest(f"base_query must select the same profile type as query ({q.profile_type})")
        agg = aggregation_for(q.profile_type, filters.aggregation)
        keys = group_labels(group_by, [*series, *base_series]) or []
        now, then = members(series, keys), members(base_series, keys)
        for key in sorted(now.keys() | then.keys()) or [("",) * len(keys)]:
            ids, base_ids = now.get(key, []), then.get(key, [])
            current, base, used = two_windows(
                sources, request.app.state.stack_names, src, (ids, tr), (base_ids, base_tr), agg, raw=filters.raw
            )
            if used not in resolutions:
                resolutions.append(used)
            rows, bt, ct = diff(
                base.filter(*pprof_filters), current.filter(*pprof_filters), normalize=normalize, by=by, limit=limit
            )
            out_rows = [DiffRowOut.model_validate(r, from_attributes=True) for r in rows]
            tables.append(
                DiffGroup(labels=dict(zip(keys, key, strict=True)), base_total=bt, current_total=ct, rows=out_rows)
            )
    response.headers[RESOLUTION_HEADER] = " / ".join(resolutions)
    out = DiffResponse(
        profile_type=str(q.profile_type),
        aggregation=agg,
        normalized=normalize,
        base_total=sum(t.base_total for t in tables),
        current_total=sum(t.current_total for t in tables),
        rows=[],
    )
    if group_by is None:
        out.rows = tables[0].rows
    else:
        out.groups = sorted(tables, key=lambda t: -t.current_total)
    return out


@router.get("/series", response_model=list[SeriesInfo], summary="Series matching a query, with what they hold")
def get_series(request: Request, query: QueryParam, from_: FromParam = None, until: UntilParam = None) -> list[Any]:
    tr = time_range(request, from_, until)
    with request.app.state.sources.read() as src:
        q, series = select_series(src, tenant_of(request), query, require=False)
        if not series:
            return []
        rows = src.profile_spans([s.series_id for s in series], tr)
    by_id = {s.series_id: s for s in series}
    out = [
        SeriesInfo(profile_type=str(q.profile_type), labels=by_id[r[0]].labels, first_seen=r[1], last_seen=r[2], profiles=r[3])
        for r in rows
    ]  # fmt: skip
    return sorted(out, key=lambda s: sorted(s.labels.items()))
