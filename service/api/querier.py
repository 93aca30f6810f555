"""``querier.v1.QuerierService``: what Grafana's built-in Pyroscope data source (and the Profiles
Drilldown app) call, answered from the same reads as the REST API, so a flame graph here has the
totals of ``/api/v1/flamegraph`` and of the export.

Pyroscope's rules kept here: times are unix milliseconds (``0`` and ``0`` mean all of time); a
selector never names the profile type, the request does (``profile_typeID``); a well-formed
profile type with no data is an empty answer, not an error; ``max_nodes`` absent or 0 means
8192; ``SelectSeries`` points sit at ``start + k * step`` and each holds the profiles of
``(t - step, t]``, empty steps omitted. Series carry Pyroscope's internal labels
(``__name__``, ``__profile_type__``, ``__type__``, ``__unit__``, ``__period_type__``,
``__period_unit__``) besides their own, so selectors and label lookups may use them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

from fastapi import Request

from service.api.auth import tenant_of
from service.api.connect import Method, service_router
from service.api.params import label_matchers
from service.errors import InvalidRequest, Unimplemented
from service.pprof import profile_pb2 as pb
from service.pprof.encode import to_message
from service.protocols.querier.v1 import querier_pb2 as q
from service.protocols.types.v1 import types_pb2 as t
from service.query.aggregation import Aggregation, aggregation_for
from service.query.export import export_profile
from service.query.flamegraph import build_tree, diff_levels, pyroscope_levels
from service.query.groups import selected_stacks
from service.query.selector import Matcher, Query, parse_selector
from service.query.source import ProfileSource
from service.query.stacks import StackSet
from service.query.timeseries import timeseries
from service.store.reads import SeriesRow
from service.types import DecodeLimits, ProfileType, TimeRange, now_ns

__all__ = ["SERVICE", "router"]

SERVICE = "querier.v1.QuerierService"
MS = 1_000_000
DEFAULT_NODES = 8192
MAX_NODES = 1_048_576
MAX_POINTS = 11_000


def labels_of(s: SeriesRow) -> dict[str, str]:
    """A series' labels with Pyroscope's internal ones, which selectors and label lookups may name."""
    pt = s.profile_type
    return {
        **s.labels,
        "__name__": pt.name,
        "__profile_type__": str(pt),
        "__type__": pt.sample_type,
        "__unit__": pt.sample_unit,
        "__period_type__": pt.period_type,
        "__period_unit__": pt.period_unit,
    }


def _range(start_ms: int, end_ms: int) -> TimeRange:
    if start_ms == 0 and end_ms == 0:
        return TimeRange(0, now_ns())
    if end_ms < start_ms:
        raise InvalidRequest(f"end ({end_ms}) is before start ({start_ms}); times are unix milliseconds")
    return TimeRange(start_ms * MS, end_ms * MS)


def _selectors(matchers: Iterable[str]) -> list[tuple[Matcher, ...]]:
    """Each matcher string is a selector; a series matches when it matches any of them ("" and none: all)."""
    out = [parse_selector(m.strip()) for m in matchers if m.strip()]
    return out or [()]


def _series(request: Request, tr: TimeRange, matchers: Iterable[str] = ()) -> list[SeriesRow]:
    """Series seen in ``tr`` that match any of the selectors (Pyroscope's internal labels included)."""
    selectors = [label_matchers(sel) for sel in _selectors(matchers)]
    with request.app.state.sources.read() as src:
        return src.find_series(tenant_of(request), None, selectors, tr)


def _query(profile_type_id: str, label_selector: str) -> Query:
    if not profile_type_id:
        raise InvalidRequest("profile_typeID is required (e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds)")
    return Query(ProfileType.parse(profile_type_id), parse_selector(label_selector.strip() or "{}"))


def _matching(src: ProfileSource, request: Request, query: Query, tr: TimeRange) -> list[SeriesRow]:
    return src.find_series(tenant_of(request), query.profile_type, [label_matchers(query.matchers)], tr)


def _max_nodes(req: q.SelectMergeStacktracesRequest | q.SelectMergeSpanProfileRequest) -> int:
    if not req.HasField("max_nodes") or req.max_nodes == 0:
        return DEFAULT_NODES
    if req.max_nodes < 0 or req.max_nodes > MAX_NODES:
        raise InvalidRequest(f"max_nodes must be between 1 and {MAX_NODES}, got {req.max_nodes}")
    return int(req.max_nodes)


def _call_site(sel: t.StackTraceSelector | None) -> list[str]:
    if sel is None:
        return []
    if sel.HasField("go_pgo"):
        raise Unimplemented("stack_trace_selector.go_pgo is not implemented")
    return [loc.name for loc in sel.call_site]


def _stacks(
    request: Request, query: Query, tr: TimeRange, call_site: list[str], spans: list[str] | None = None
) -> StackSet | None:
    """The merged stacks of ``query`` (``None`` when nothing matches), aggregated as the REST API does;
    with ``spans``, only the samples labelled with one of those span ids."""
    with request.app.state.sources.read() as src:
        series = _matching(src, request, query, tr)
        if not series:
            return None
        agg = aggregation_for(query.profile_type, None)
        return selected_stacks(
            src, request.app.state.stack_names, [s.series_id for s in series], tr, agg,
            spans=spans or (), call_site=call_site,
        )  # fmt: skip


def _flamegraph(stacks: StackSet | None, max_nodes: int) -> q.FlameGraph:
    if stacks is None:
        return q.FlameGraph(names=["total"], levels=[q.Level(values=[0, 0, 0, 0])], total=0, max_self=0)
    fg = pyroscope_levels(build_tree(stacks, max_nodes))
    return q.FlameGraph(
        names=fg["names"], levels=[q.Level(values=v) for v in fg["levels"]], total=fg["total"], max_self=fg["max_self"]
    )


def _no_selection(profile_ids: Iterable[str], trace_ids: Iterable[str]) -> None:
    if list(profile_ids) or list(trace_ids):
        raise Unimplemented("profile and trace id selectors are not implemented; span_selector is")


def profile_types(request: Request, req: q.ProfileTypesRequest) -> q.ProfileTypesResponse:
    with request.app.state.sources.read() as src:
        seen = src.stored_types(tenant_of(request), _range(req.start, req.end))
    return q.ProfileTypesResponse(
        profile_types=[t.ProfileType(ID=str(pt), **asdict(pt)) for pt in sorted(seen, key=str)]
    )


def label_names(request: Request, req: t.LabelNamesRequest) -> t.LabelNamesResponse:
    series = _series(request, _range(req.start, req.end), req.matchers)
    return t.LabelNamesResponse(names=sorted({k for s in series for k in labels_of(s)}))


def label_values(request: Request, req: t.LabelValuesRequest) -> t.LabelValuesResponse:
    if not req.name:
        raise InvalidRequest("name is required: the label whose values to list")
    series = _series(request, _range(req.start, req.end), req.matchers)
    return t.LabelValuesResponse(names=sorted({v for s in series if (v := labels_of(s).get(req.name)) is not None}))


def series(request: Request, req: q.SeriesRequest) -> q.SeriesResponse:
    keep = set(req.label_names)
    sets = set()
    for s in _series(request, _range(req.start, req.end), req.matchers):
        sets.add(tuple(sorted((k, v) for k, v in labels_of(s).items() if not keep or k in keep)))
    return q.SeriesResponse(
        labels_set=[t.Labels(labels=[t.LabelPair(name=k, value=v) for k, v in ls]) for ls in sorted(sets)]
    )


def select_merge_stacktraces(
    request: Request, req: q.SelectMergeStacktracesRequest
) -> q.SelectMergeStacktracesResponse:
    _no_selection(req.profile_id_selector, req.trace_id_selector)
    query = _query(req.profile_typeID, req.label_selector)
    tr = _range(req.start, req.end)
    call_site = _call_site(req.stack_trace_selector if req.HasField("stack_trace_selector") else None)
    if req.format == q.PROFILE_FORMAT_PPROF:
        return q.SelectMergeStacktracesResponse(
            pprof=q.PprofProfile(profile=_merged_pprof(request, query, tr, call_site))
        )
    if req.format not in (q.PROFILE_FORMAT_UNSPECIFIED, q.PROFILE_FORMAT_FLAMEGRAPH):
        raise Unimplemented(f"format {q.ProfileFormat.Name(req.format)} is not implemented; use FLAMEGRAPH or PPROF")
    max_nodes = _max_nodes(req)
    stacks = _stacks(request, query, tr, call_site, _spans(req.span_selector))
    return q.SelectMergeStacktracesResponse(flamegraph=_flamegraph(stacks, max_nodes))


def _spans(selector: Iterable[str]) -> list[str] | None:
    spans = [s.strip() for s in selector if s.strip()]
    return spans or None


def select_merge_span_profile(
    request: Request, req: q.SelectMergeSpanProfileRequest
) -> q.SelectMergeSpanProfileResponse:
    """The flame graph of the samples of some spans (``span_id`` sample labels, as otel-profiling-go
    writes them); Tempo's "traces to profiles" asks for it."""
    if req.format not in (q.PROFILE_FORMAT_UNSPECIFIED, q.PROFILE_FORMAT_FLAMEGRAPH):
        raise Unimplemented(f"format {q.ProfileFormat.Name(req.format)} is not implemented for span profiles")
    spans = _spans(req.span_selector)
    if spans is None:
        raise InvalidRequest("span_selector is empty: give the span ids whose samples to merge")
    query = _query(req.profile_typeID, req.label_selector)
    stacks = _stacks(request, query, _range(req.start, req.end), [], spans)
    return q.SelectMergeSpanProfileResponse(flamegraph=_flamegraph(stacks, _max_nodes(req)))


def _merged_pprof(request: Request, query: Query, tr: TimeRange, call_site: list[str]) -> pb.Profile:
    if call_site:
        raise Unimplemented("stack_trace_selector is not implemented for pprof answers")
    with request.app.state.sources.read() as src:
        series = src.find_series(tenant_of(request), query.profile_type, [label_matchers(query.matchers)])
        return to_message(export_profile(src, query, series, tr))


def select_merge_profile(request: Request, req: q.SelectMergeProfileRequest) -> pb.Profile:
    _no_selection(req.profile_id_selector, req.trace_id_selector)
    query = _query(req.profile_typeID, req.label_selector)
    call_site = _call_site(req.stack_trace_selector if req.HasField("stack_trace_selector") else None)
    return _merged_pprof(request, query, _range(req.start, req.end), call_site)


def select_series(request: Request, req: q.SelectSeriesRequest) -> q.SelectSeriesResponse:
    if req.exemplar_type in (t.EXEMPLAR_TYPE_INDIVIDUAL, t.EXEMPLAR_TYPE_SPAN):
        raise Unimplemented("exemplars are not implemented; use exemplar_type NONE")
    if req.HasField("stack_trace_selector"):
        raise Unimplemented("stack_trace_selector is not implemented for SelectSeries")
    query = _query(req.profile_typeID, req.label_selector)
    tr = _range(req.start, req.end)
    if not req.step > 0:
        raise InvalidRequest(f"step must be a positive number of seconds, got {req.step}")
    step = int(req.step * 1e9)
    if (tr.end - tr.start) / step > MAX_POINTS:
        raise InvalidRequest(f"step of {req.step:g} s gives more than {MAX_POINTS} points over this range")
    agg = (
        Aggregation.AVG
        if req.HasField("aggregation") and req.aggregation == t.TIME_SERIES_AGGREGATION_TYPE_AVERAGE
        else Aggregation.SUM
    )
    # The first point holds the step before start: series seen only then count too.
    group_by = list(req.group_by)
    with request.app.state.sources.read() as src:
        matching = _matching(src, request, query, TimeRange(tr.start - step + 1, tr.end))
        # timeseries() labels each step by its end, (t - step, t], as Pyroscope does: the REST API's points too.
        lines = timeseries(src, matching, tr, step, agg, group_by=group_by)
    out = [
        t.Series(
            labels=[t.LabelPair(name=k, value=v) for k, v in sorted(line.labels.items())],
            points=[t.Point(value=p.value, timestamp=p.ts // MS) for p in line.points],
        )
        for line in lines
    ]
    if req.HasField("limit") and req.limit > 0 and len(out) > req.limit:
        out = sorted(out, key=lambda s: -sum(p.value for p in s.points))[: req.limit]
        out.sort(key=lambda s: [(lp.name, lp.value) for lp in s.labels])
    return q.SelectSeriesResponse(series=out)


def diff(request: Request, req: q.DiffRequest) -> q.DiffResponse:
    sides = []
    for side in (req.left, req.right):
        _no_selection(side.profile_id_selector, side.trace_id_selector)
        query = _query(side.profile_typeID, side.label_selector)
        call_site = _call_site(side.stack_trace_selector if side.HasField("stack_trace_selector") else None)
        stacks = _stacks(request, query, _range(side.start, side.end), call_site, _spans(side.span_selector))
        sides.append((query, stacks, _max_nodes(side)))
    if sides[0][0].profile_type != sides[1][0].profile_type:
        raise InvalidRequest("left and right must query the same profile type")
    fg = diff_levels(sides[0][1], sides[1][1], min(sides[0][2], sides[1][2]))
    return q.DiffResponse(
        flamegraph=q.FlameGraphDiff(
            names=fg["names"],
            levels=[q.Level(values=v) for v in fg["levels"]],
            total=fg["total"],
            max_self=fg["max_self"],
            leftTicks=fg["left_ticks"],
            rightTicks=fg["right_ticks"],
        )
    )


def profile_stats(request: Request, req: t.GetProfileStatsRequest) -> t.GetProfileStatsResponse:
    with request.app.state.sources.read() as src:
        oldest, newest = src.data_span(tenant_of(request))
    if oldest is None or newest is None:
        return t.GetProfileStatsResponse(data_ingested=False, oldest_profile_time=0, newest_profile_time=0)
    return t.GetProfileStatsResponse(
        data_ingested=True, oldest_profile_time=oldest // MS, newest_profile_time=newest // MS
    )


def _limits(request: Request) -> DecodeLimits:
    return request.app.state.settings.decode_limits


router = service_router(
    SERVICE,
    {
        "ProfileTypes": Method(q.ProfileTypesRequest, profile_types),
        "LabelNames": Method(t.LabelNamesRequest, label_names),
        "LabelValues": Method(t.LabelValuesRequest, label_values),
        "Series": Method(q.SeriesRequest, series),
        "SelectMergeStacktraces": Method(q.SelectMergeStacktracesRequest, select_merge_stacktraces),
        "SelectMergeSpanProfile": Method(q.SelectMergeSpanProfileRequest, select_merge_span_profile),
        "SelectMergeProfile": Method(q.SelectMergeProfileRequest, select_merge_profile),
        "SelectSeries": Method(q.SelectSeriesRequest, select_series),
        "Diff": Method(q.DiffRequest, diff),
        "GetProfileStats": Method(t.GetProfileStatsRequest, profile_stats),
    },
    _limits,
)
