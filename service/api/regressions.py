"""Regression and leak findings: list, inspect, acknowledge, run on demand, and as Grafana annotations."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from service.analysis.analyze import Windows
from service.analysis.records import Record
from service.analysis.runner import Analyzer, RunReport
from service.api.auth import tenant_of
from service.api.params import FromParam, UntilParam, time_range
from service.api.query import DiffResponse, Filters, get_diff
from service.errors import InvalidRequest, NotFound
from service.types import TimeRange, now_ns

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


class Interval(BaseModel):
    mean: float
    lo: float = Field(description="95 % confidence interval of the mean, lower end")
    hi: float


class Links(BaseModel):
    diff: str = Field(description="`GET /api/v1/diff` of the baseline window against the time since the change")
    export_diff: str = Field(
        description="The same as a pprof diff profile: `curl -o d.pb.gz URL; go tool pprof -top d.pb.gz` "
        "reports exactly what `go tool pprof -diff_base base.pb.gz current.pb.gz` would"
    )
    export_current: str
    export_baseline: str


class Entry(BaseModel):
    function: str = Field(description="Where the rise enters: the frame whose caller paths carry it")
    how: Literal["caller", "proportional", "one-path"] = Field(
        description="caller: those paths carry much more of the rise than they held, and their part of the "
        "function grew; proportional: every caller path rose alike (the function itself got slower); one-path: "
        "a single caller path, its frame of the service's own code nearest the function is named"
    )
    share_of_rise: float = Field(
        description="The part of the function's rise that the entry's paths carry (above 1 when the other paths fell)"
    )


class RegressionOut(BaseModel):
    id: str = Field(description="Finding id (a decimal uint64, as a string so JavaScript keeps every digit)")
    kind: Literal["regression", "leak"]
    state: Literal["open", "acknowledged", "resolved"]
    title: str
    service: str
    profile_type: str
    function: str = Field(description="The function that rose (regression) or the top growing site (leak)")
    metric: Literal["flat_share", "cum_share", "total"] = Field(
        description="flat_share / cum_share: the function's share of each profile's total; total: the profile's total"
    )
    change_ts: int = Field(description="Where the change starts, unix nanoseconds")
    change_interval: list[int] | None = Field(
        description="95 % confidence interval of the change point, [lo, hi] unix nanoseconds (regressions)"
    )
    entry: Entry | None = Field(
        description="Where the rise enters, from the caller paths through the function (regressions); "
        "`details.paths` has the paths carrying the most of the rise"
    )
    baseline: Interval
    current: Interval
    relative: float = Field(description="current / baseline - 1 (1e9 for a rise from zero)")
    p_value: float
    p_adjusted: float = Field(description="Benjamini-Hochberg adjusted over every test of the run")
    instances: list[str] = Field(description="Instances where the change is significant on its own")
    attribution: dict[str, dict[str, list[str]]] = Field(
        description='Labels that changed at the change point, e.g. {"version": {"from": ["v1"], "to": ["v2"]}}'
    )
    series_ids: list[str]
    first_seen: int
    last_seen: int
    acked_at: int | None
    resolved_at: int | None
    details: dict[str, Any] = Field(
        description="Windows, profile counts, callers, the caller paths carrying the rise (`paths`: frames leaf "
        "first, baseline and current share, share of the rise); for leaks slope per minute and sites"
    )
    links: Links


class RegressionDetail(RegressionOut):
    diff: DiffResponse | None = Field(description="Top changed functions, baseline window vs since the change")


class AnalyzeResponse(BaseModel):
    recent: list[int] = Field(description="[start, end) of the recent window, unix nanoseconds")
    baseline: list[int]
    leak_window: list[int]
    tests: int = Field(description="Statistical tests run (functions x metrics, and leak trends)")
    seconds: float
    verdicts: dict[str, int] = Field(
        description="What became of the tests that passed the correction: reported, pending (younger than "
        "persist_s), went-away, cost-shift, too-small"
    )
    new: list[str]
    resolved: list[str]
    findings: list[RegressionOut]


class Annotation(BaseModel):
    """Grafana's annotation shape (the JSON API / Infinity data sources read it as is)."""

    time: int = Field(description="Change point, unix milliseconds")
    timeEnd: int = Field(description="Last seen, unix milliseconds")
    title: str
    text: str
    tags: list[str]


def _selector(r: Record) -> str:
    return f"{r.profile_type}{{service_name={json.dumps(r.service)}}}"


def _windows(r: Record) -> tuple[TimeRange, TimeRange]:
    """Baseline as tested, and from the change point to the last time it was seen (at least a minute)."""
    base = r.details.get("baseline_window") or r.details.get("window") or [r.change_ts - 3600 * 10**9, r.change_ts]
    if r.kind == "leak":
        base = [base[0], r.change_ts]
    end = max(r.last_seen, r.change_ts + 60 * 10**9)
    return TimeRange(int(base[0]), int(base[1])), TimeRange(r.change_ts, end)


def _links(r: Record) -> Links:
    base, cur = _windows(r)
    q = _selector(r)
    now = {"query": q, "from": str(cur.start // 10**6), "until": str(cur.end // 10**6)}
    then = {"base_from": str(base.start // 10**6), "base_until": str(base.end // 10**6)}
    by = "cum" if r.metric == "cum_share" else "flat"
    return Links(
        diff="/api/v1/diff?" + urlencode({**now, **then, "by": by}),
        export_diff="/api/v1/export?" + urlencode({**now, **then}),
        export_current="/api/v1/export?" + urlencode(now),
        export_baseline="/api/v1/export?"
        + urlencode({"query": q, "from": then["base_from"], "until": then["base_until"]}),
    )


def _out(r: Record) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "kind": r.kind,
        "state": r.state,
        "title": r.title,
        "service": r.service,
        "profile_type": r.profile_type,
        "function": r.function,
        "metric": r.metric,
        "change_ts": r.change_ts,
        "change_interval": r.details.get("change_interval"),
        "entry": r.details.get("entry"),
        "baseline": Interval(mean=r.baseline, lo=r.baseline_lo, hi=r.baseline_hi),
        "current": Interval(mean=r.current, lo=r.current_lo, hi=r.current_hi),
        "relative": r.relative,
        "p_value": r.p_value,
        "p_adjusted": r.p_adjusted,
        "instances": r.instances,
        "attribution": r.attribution,
        "series_ids": [str(s) for s in r.series_ids],
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "acked_at": r.acked_at,
        "resolved_at": r.resolved_at,
        "details": r.details,
        "links": _links(r),
    }


def _id(rid: str) -> int:
    if not rid.isdigit() or int(rid) >= 2**64:
        raise InvalidRequest(f"finding id must be a decimal uint64, got {rid!r}")
    return int(rid)


KindParam = Annotated[Literal["regression", "leak"] | None, Query(description="Only this kind")]
StateParam = Annotated[Literal["open", "acknowledged", "resolved"] | None, Query(description="Only this state")]


@router.get("/regressions", response_model=list[RegressionOut], summary="Findings, newest first")
def list_regressions(
    request: Request,
    service: Annotated[str | None, Query(description="Only this service_name")] = None,
    kind: KindParam = None,
    state: StateParam = None,
    from_: FromParam = None,
    until: UntilParam = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    tr = time_range(request, from_, until) if from_ or until else None
    with request.app.state.sources.read() as src:
        rows = src.list_findings(tenant_of(request), service=service, kind=kind, state=state, tr=tr, limit=limit)
    return [_out(r) for r in rows]


@router.get("/regressions/{rid}", response_model=RegressionDetail, summary="One finding, with its diff")
def get_regression(request: Request, response: Response, rid: str) -> dict[str, Any]:
    with request.app.state.sources.read() as src:
        r = src.finding(tenant_of(request), _id(rid))
    if r is None:
        raise NotFound(f"no finding with id {rid}")
    out = _out(r)
    base, cur_tr = _windows(r)
    try:
        out["diff"] = get_diff(
            request, response, query=_selector(r), filters=Filters(), base_from=str(base.start // 10**6),
            base_until=str(base.end // 10**6), from_=str(cur_tr.start // 10**6), until=str(cur_tr.end // 10**6),
            by="cum" if r.metric == "cum_share" else "flat", limit=20,
        )  # fmt: skip
    except InvalidRequest:
        out["diff"] = None  # its series are gone (retention): the finding stays readable
    return out


@router.post("/regressions/{rid}/ack", response_model=RegressionOut, summary="Acknowledge a finding")
def ack_regression(request: Request, rid: str) -> dict[str, Any]:
    key = _id(rid)
    tenant, now = tenant_of(request), now_ns()
    r = request.app.state.sources.write_findings(lambda rows: rows.ack(tenant, key, now))
    if r is None:
        raise NotFound(f"no finding with id {rid}")
    return _out(r)


@router.post("/analyze", response_model=AnalyzeResponse, summary="Run detection now")
def analyze_now(
    request: Request,
    from_: Annotated[
        str | None, Query(alias="from", description="Start of the recent window (default: until - recent_s)")
    ] = None,
    until: UntilParam = None,
    baseline_from: Annotated[str | None, Query(description="Start of the baseline (default from the settings)")] = None,
    baseline_until: Annotated[str | None, Query(description="End of the baseline")] = None,
) -> dict[str, Any]:
    """Tests ``from``..``until`` against the baseline, stores and returns what it finds (as the schedule does)."""
    analyzer: Analyzer = request.app.state.analyzer
    w = analyzer.windows(time_range(request, None, until).end if until else None)
    if from_ is not None:
        recent = time_range(request, from_, until)
        off = int(analyzer.settings.baseline_offset_s * 1e9)
        length = int(analyzer.settings.baseline_s * 1e9)
        w = Windows(recent, TimeRange(recent.start - off - length, recent.start - off), recent)
    if (baseline_from is None) != (baseline_until is None):
        raise InvalidRequest("give both baseline_from and baseline_until, or neither")
    if baseline_from is not None and baseline_until is not None:
        base = time_range(request, baseline_from, baseline_until)
        if base.end > w.recent.start:
            raise InvalidRequest("the baseline must end before the recent window starts")
        w = Windows(w.recent, base, w.leak)
    report: RunReport = analyzer.run(w, tenant=tenant_of(request))
    return {
        "recent": [report.recent.start, report.recent.end],
        "baseline": [report.baseline.start, report.baseline.end],
        "leak_window": [report.leak.start, report.leak.end],
        "tests": report.tests,
        "seconds": report.seconds,
        "verdicts": report.verdicts,
        "new": [str(i) for i in report.new],
        "resolved": [str(i) for i in report.resolved],
        "findings": [_out(r) for r in report.records],
    }


@router.get("/annotations", response_model=list[Annotation], summary="Findings as Grafana annotations")
def get_annotations(
    request: Request,
    from_: FromParam = None,
    until: UntilParam = None,
    service: Annotated[str | None, Query(description="Only this service_name")] = None,
) -> list[Annotation]:
    """One annotation per finding seen in the range: a region from the change point to when it was last seen."""
    tr = time_range(request, from_, until)
    with request.app.state.sources.read() as src:
        rows = src.list_findings(tenant_of(request), service=service, tr=tr)
    out = []
    for r in rows:
        text = (
            f"{r.profile_type}: baseline {r.baseline:.4g} -> {r.current:.4g} ({r.relative:+.1%}), "
            f"p_adj={r.p_adjusted:.2g}; state {r.state}"
        )
        if r.attribution:
            text += "; " + ", ".join(
                f"{k}: {','.join(v['from'])} -> {','.join(v['to'])}" for k, v in r.attribution.items()
            )
        out.append(
            Annotation(
                time=r.change_ts // 10**6,
                timeEnd=r.last_seen // 10**6,
                title=r.title,
                text=text,
                tags=["profstore", r.kind, r.service, r.state],
            )
        )
    return out
