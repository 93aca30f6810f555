"""The REST API under ``/api/v1``: ingest, export and the catalogue of what is stored."""

from __future__ import annotations

import base64
import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from service.api.auth import tenant_of
from service.api.body import read_body
from service.api.lean import json_response, lean_post
from service.api.params import (
    FromParam,
    QueryParam,
    UntilParam,
    label_matchers,
    require_profiles,
    select_series,
    time_range,
)
from service.api.query import AggregationParam
from service.errors import InvalidRequest
from service.pprof.encode import encode
from service.query.export import diff_profile, export_profile
from service.query.selector import Matcher, parse_labels, parse_query, parse_selector
from service.store.ingest import Ingestor
from service.store.reads import LabelMatcher
from service.types import ProfileType, TimeRange, parse_time

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")


class IngestResponse(BaseModel):
    profile_ids: list[str] = Field(description="One id per stored series (one per sample type), as decimal strings.")
    series: list[str] = Field(description="Profile types written, one series each.")
    samples: int = Field(
        description="Sample rows stored: equal stacks merged, zeros dropped, a type proportional to another stored once."
    )
    ts: int = Field(description="Profile timestamp used, unix nanoseconds.")
    duplicate: bool = Field(description="True when the same profile was already stored; nothing was written twice.")


class ProfileTypeInfo(BaseModel):
    id: str = Field(examples=["process_cpu:cpu:nanoseconds:cpu:nanoseconds"])
    name: str
    sample_type: str
    sample_unit: str
    period_type: str
    period_unit: str


class StoredProfile(BaseModel):
    id: str
    ts: int = Field(description="unix nanoseconds")
    profile_type: str
    labels: dict[str, str]
    duration_ns: int
    period: int
    total: int = Field(description="Sum of this sample type's values")
    samples: int


def _stored_types(request: Request) -> set[ProfileType]:
    with request.app.state.sources.read() as src:
        return src.stored_types(tenant_of(request))


@lean_post(
    router,
    "/ingest",
    response_model=IngestResponse,
    summary="Store one pprof profile",
    description="The body is a pprof profile, gzipped or raw protobuf. It is stored as one series per sample type. "
    "Sending the same bytes for the same labels and time again stores nothing new.",
    responses={400: {"description": "Not a valid pprof profile or bad parameters"}, 413: {"description": "Too large"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def ingest(
    request: Request,
    labels: Annotated[
        str,
        Query(
            description="Series labels as a selector of `=` matchers.",
            examples=['{service_name="checkout",env="prod"}'],
        ),
    ] = "{}",
    name: Annotated[
        str | None,
        Query(
            description="Profile name (process_cpu, memory, goroutine, mutex, block, …); "
            "inferred from the sample types when absent.",
            examples=["process_cpu"],
        ),
    ] = None,
    ts: Annotated[str | None, Query(description="Profile time; default: the profile's time_nanos, else now.")] = None,
) -> Response:
    settings = request.app.state.settings
    series_labels = parse_labels(labels)
    when = parse_time(ts, "ts") if ts else None
    t = time.perf_counter()
    data = await read_body(request, settings.max_compressed_bytes)
    ingestor: Ingestor = request.app.state.ingestor
    if ingestor.metrics is not None:
        ingestor.metrics.ingest_stage_seconds.labels("body").inc(time.perf_counter() - t)
    res = await run_in_threadpool(
        ingestor.ingest, data, labels=series_labels, name=name, ts=when, tenant=tenant_of(request)
    )
    return json_response(
        IngestResponse(
            profile_ids=[str(i) for i in res.profile_ids],
            series=res.series,
            samples=res.samples,
            ts=res.ts,
            duplicate=res.duplicate,
        )
    )


@router.get(
    "/export",
    summary="Merged pprof of all matching profiles",
    description="A gzipped pprof (`go tool pprof` reads it) of every stored profile matching `query` in the range, "
    "merged as `go tool pprof -proto` merges, each series' profiles combined as `aggregation` says: by default "
    "cumulative types are summed and gauges (in-use memory, goroutines, threads) are the average scrape of each "
    "series, so `go tool pprof -top` shows what `/api/v1/top` shows. All sample types stored together come back "
    "(without `aggregation`, each with its own default); the default sample type is the queried one. With `base_from`/`base_until`, the diff against that window: base samples negated "
    "and labelled `pprof::base=true`, which `go tool pprof` reports as it reports `-diff_base`.",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        400: {"description": "Unknown profile type, malformed selector or reversed range"},
    },
)
def export(
    request: Request,
    query: QueryParam,
    from_: FromParam = None,
    until: UntilParam = None,
    base_from: Annotated[
        str | None,
        Query(
            description="With `base_until`: export the diff against this base window (as `go tool pprof -diff_base`)"
        ),
    ] = None,
    base_until: Annotated[str | None, Query(description="End of the base window")] = None,
    base_query: Annotated[
        str | None, Query(description="Selector of the base window when it differs from `query` (same profile type)")
    ] = None,
    aggregation: AggregationParam = None,
) -> Response:
    tr = time_range(request, from_, until)
    if (base_from is None) != (base_until is None) or (base_query is not None and base_from is None):
        raise InvalidRequest("a diff export needs both base_from and base_until (and base_query only with them)")
    with request.app.state.sources.read() as src:
        q, series = select_series(src, tenant_of(request), query)
        require_profiles(src, q, series, tr, ("from", "until"))
        profile = export_profile(src, q, series, tr, aggregation)
        if base_from is not None:
            bq, base_series = select_series(src, tenant_of(request), base_query) if base_query else (q, series)
            if bq.profile_type != q.profile_type:
                raise InvalidRequest(f"base_query must select the same profile type as query ({q.profile_type})")
            base_tr = time_range(request, base_from, base_until, names=("base_from", "base_until"))
            require_profiles(src, bq, base_series, base_tr, ("base_from", "base_until"))
            base = export_profile(src, bq, base_series, base_tr, aggregation)
            profile = diff_profile(profile, base)
    return Response(
        encode(profile),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{q.profile_type.name}.pb.gz"'},
    )


@router.get("/profile-types", response_model=list[ProfileTypeInfo], summary="Profile types stored")
def profile_types(request: Request) -> list[ProfileTypeInfo]:
    seen = _stored_types(request)
    return [ProfileTypeInfo(id=str(pt), **asdict(pt)) for pt in sorted(seen, key=str)]


def _scope(
    request: Request, selector: str | None, from_: str | None, until: str | None
) -> tuple[ProfileType | None, list[LabelMatcher], TimeRange | None]:
    """The series an optional selector and range name (all time when no range is given)."""
    tr = TimeRange.parse(from_, until) if from_ or until else None
    matchers: tuple[Matcher, ...] = ()
    ptype = None
    if selector:
        if selector.lstrip().startswith("{"):
            matchers = parse_selector(selector)
        else:
            q = parse_query(selector, _stored_types(request))
            matchers, ptype = q.matchers, q.profile_type
    return ptype, label_matchers(matchers), tr


SelectorParam = Annotated[
    str | None,
    Query(
        description="Optional `{selector}` or `<profile type>{selector}` restricting the series considered.",
        examples=['{service_name="checkout"}'],
    ),
]


@router.get("/labels", response_model=list[str], summary="Label names of stored series")
def labels(
    request: Request, query: SelectorParam = None, from_: FromParam = None, until: UntilParam = None
) -> list[str]:
    ptype, matchers, tr = _scope(request, query, from_, until)
    with request.app.state.sources.read() as src:
        return src.label_names(tenant_of(request), ptype, [matchers], tr)


@router.get("/labels/{name}/values", response_model=list[str], summary="Values of one label")
def label_values(
    request: Request,
    name: Annotated[str, Path(description="Label name", examples=["service_name"])],
    query: SelectorParam = None,
    from_: FromParam = None,
    until: UntilParam = None,
) -> list[str]:
    ptype, matchers, tr = _scope(request, query, from_, until)
    with request.app.state.sources.read() as src:
        return src.label_values(tenant_of(request), name, ptype, [matchers], tr)


class ProfilesPage(BaseModel):
    profiles: list[StoredProfile] = Field(description="At most `limit` profiles, in the order asked for")
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same query, range and order) for the next page; null on the last page"
    )
    truncated: bool = Field(description="True when more profiles match than `limit`: the list was cut")


def _cursor(order: str, row: Any) -> str:
    """The opaque key of a page's last row: the order it belongs to, then ``ts, series_id, profile_id``."""
    raw = f"{order[0]}:{int(row[2])}:{int(row[1])}:{int(row[0])}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _after(cursor: str, order: str) -> tuple[int, int, int]:
    bad = f"invalid cursor {cursor!r}: pass the next_cursor of the previous page unchanged"
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, ts, sid, pid = raw.split(":")
        key = (int(ts), int(sid), int(pid))
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidRequest(bad) from exc
    if kind not in ("n", "o") or not (-(2**63) <= key[0] < 2**63 and min(key[1:]) >= 0 and max(key[1:]) < 2**64):
        raise InvalidRequest(bad)
    if kind != order[0]:
        other = "newest" if kind == "n" else "oldest"
        raise InvalidRequest(f"the cursor belongs to order={other}, not order={order}: keep the order while paging")
    return key


@router.get("/profiles", response_model=ProfilesPage, summary="Individual stored profiles, a page at a time")
def profiles(
    request: Request,
    query: QueryParam,
    from_: FromParam = None,
    until: UntilParam = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="Profiles per page")] = 1000,
    order: Annotated[
        Literal["newest", "oldest"],
        Query(description="`newest` first (default) or `oldest` first; equal times by series, then profile id"),
    ] = "newest",
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` of the previous page, to continue where it stopped")
    ] = None,
) -> ProfilesPage:
    tr = time_range(request, from_, until)
    after = _after(cursor, order) if cursor else None
    with request.app.state.sources.read() as src:
        q = parse_query(query, src.stored_types(tenant_of(request)))
        found = src.find_series(tenant_of(request), q.profile_type, [label_matchers(q.matchers)])
        series = {s.series_id: s for s in found}
        # One row more than the page: whether there is a next page, without counting them all.
        rows: list[Any] = (
            src.list_profiles(list(series), tr, limit + 1, newest_first=order == "newest", after=after)
            if series
            else []
        )
    truncated = len(rows) > limit
    rows = rows[:limit]
    return ProfilesPage(
        profiles=[
            StoredProfile(
                id=str(r[0]),
                ts=r[2],
                profile_type=str(series[r[1]].profile_type),
                labels=series[r[1]].labels,
                duration_ns=r[3],
                period=r[4],
                total=r[5],
                samples=r[6],
            )
            for r in rows
        ],
        next_cursor=_cursor(order, rows[-1]) if truncated else None,
        truncated=truncated,
    )
