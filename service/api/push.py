"""What Pyroscope's clients push: ``push.v1.PusherService/Push`` (Grafana Alloy, the pyroscope-rs
SDKs, profilecli) and the legacy ``POST /ingest`` (the Node.js and Go SDKs, older agents).

Both end in :meth:`Ingestor.store`, the entry point scrapes and REST pushes use, so a pushed
profile is stored, deduplicated and queryable exactly like a scraped one. Pyroscope's rules for
naming what arrives are kept: ``__name__`` is the profile name, ``service_name`` the
application, other ``__``-labels are Pyroscope's own and dropped; a legacy ``name=app{k=v}``
gives ``service_name=app`` plus its tags and ``pyroscope_spy``; a profile's own ``time_nanos``
is its time unless it is unset or in 1970, then ``from`` is.
"""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from service.api.auth import tenant_of
from service.api.body import read_body
from service.api.connect import Method, service_router
from service.api.lean import json_response, lean_post
from service.errors import InvalidRequest, ProfileError
from service.pprof.decode import Envelope, check
from service.pprof.folded import FOLDED_TYPES, parse_folded
from service.pprof.split import split_by_sample_labels
from service.protocols.push.v1 import push_pb2
from service.store.ingest import Ingestor, IngestResult
from service.types import DecodeLimits, now_ns, parse_time

__all__ = ["SERVICE", "connect_router", "router"]

SERVICE = "push.v1.PusherService"
YEAR_1971_NS = 365 * 86400 * 10**9
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


def _store(
    ingestor: Ingestor,
    tenant: str,
    env: Envelope,
    labels: dict[str, str],
    name: str | None,
    fallback_ts: int | None,
    size: int,
) -> list[IngestResult]:
    """Split a decoded profile by sample labels, pick the time (the profile's own unless unset or in 1970), store."""
    check(env)  # a bad profile fails here, whole, before any part of it is stored
    parts = []
    for extra, part in split_by_sample_labels(env):
        ts = None if part.header.time_nanos >= YEAR_1971_NS else fallback_ts
        parts.append((part, {**labels, **extra}, ts))
    return ingestor.store_together(parts, name=name, tenant=tenant, source="push", size=size)


def _series_labels(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], str | None]:
    labels: dict[str, str] = {}
    name = None
    for k, v in pairs:
        if k == "__name__":
            name = v or None
        elif k.startswith("__"):
            continue  # Pyroscope's own (__delta__, __session_id__, ...)
        elif not _LABEL.match(k):
            raise InvalidRequest(f"invalid label name {k!r}")
        elif v:
            labels[k] = v
    return labels, name


def push(request: Request, req: push_pb2.PushRequest) -> push_pb2.PushResponse:
    """Every sample of every series; one bad profile fails the request (the client retries it whole,
    and what was stored before it is stored once: ingest is idempotent)."""
    ingestor: Ingestor = request.app.state.ingestor
    for i, series in enumerate(req.series):
        labels, name = _series_labels([(lp.name, lp.value) for lp in series.labels])
        for sample in series.samples:
            try:
                env = ingestor.read(sample.raw_profile)
                _store(ingestor, tenant_of(request), env, labels, name, now_ns(), len(sample.raw_profile))
            except ProfileError as exc:
                raise type(exc)(f"series {i} ({labels.get('service_name', '')}): {exc}") from exc
    return push_pb2.PushResponse()


def _limits(request: Request) -> DecodeLimits:
    return request.app.state.settings.decode_limits


connect_router = service_router(SERVICE, {"Push": Method(push_pb2.PushRequest, push)}, _limits)

router = APIRouter()


class LegacyIngestResponse(BaseModel):
    series: list[str]
    samples: int
    duplicate: bool


def parse_app_name(text: str) -> tuple[str, dict[str, str]]:
    """``app.name{k=v,k2=v2}`` → (``app.name``, tags); values are unquoted (quotes are stripped)."""
    text = text.strip()
    brace = text.find("{")
    app = (text if brace < 0 else text[:brace]).strip()
    if not app:
        raise InvalidRequest(f"invalid name {text!r}: want app{{key=value,...}}")
    tags: dict[str, str] = {}
    if brace >= 0:
        if not text.endswith("}"):
            raise InvalidRequest(f"invalid name {text!r}: the tags must end with '}}'")
        for part in text[brace + 1 : -1].split(","):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            key, value = key.strip(), value.strip().strip('"')
            if not eq or not _LABEL.match(key):
                raise InvalidRequest(f"invalid tag {part.strip()!r} in name {text!r}: want key=value")
            tags[key] = value
    return app, tags


def _mutex_or_block(sample_type_config: bytes | None) -> str | None:
    """pyroscope-go renames contention sample types in ``sample_type_config`` (``mutex_count``…):
    the only thing that tells a Go mutex profile from a block profile."""
    if not sample_type_config:
        return None
    try:
        config = json.loads(sample_type_config)
    except ValueError as exc:
        raise InvalidRequest(f"sample_type_config is not JSON: {exc}") from exc
    names = (
        [str(v.get("display-name", "")) for v in config.values() if isinstance(v, dict)]
        if isinstance(config, dict)
        else []
    )
    for prefix in ("mutex", "block"):
        if any(n.startswith(prefix + "_") for n in names):
            return prefix
    return None


@lean_post(
    router,
    "/ingest",
    response_model=LegacyIngestResponse,
    summary="Pyroscope's legacy ingest (pprof, folded, multipart)",
    description="What Pyroscope's SDKs and agents send: `name=app{k=v}` names the service (`service_name=app`) and "
    "its tags. `format=pprof` takes a pprof body (gzipped or not), also as the `profile` field of a "
    "`multipart/form-data` upload (the form's default); `folded` (the default otherwise) takes lines "
    "`a;b;c 42`, root first, with the profile type from the name's suffix (`app.cpu`, `app.inuse_space`, …). "
    "`from`/`until` are unix s, ms, µs or ns (by digit count) or `now-1h`; the profile's own time wins "
    "when it has one. `sampleRate` scales folded CPU samples to nanoseconds; pprof carries its own period.",
    responses={400: {"description": "Bad name, times, format or profile"}, 413: {"description": "Too large"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "profile": {"type": "string", "format": "binary"},
                            "sample_type_config": {"type": "string", "format": "binary"},
                        },
                        "required": ["profile"],
                    }
                },
            },
        }
    },
)
async def legacy_ingest(
    request: Request,
    name: Annotated[str, Query(description="`app{key=value,...}`; for folded input `app.<type>{…}`")],
    from_: Annotated[str | None, Query(alias="from", description="Start of the profile")] = None,
    until: Annotated[str | None, Query(description="End of the profile")] = None,
    format: Annotated[
        str | None, Query(description="pprof or folded (lines is folded with one stack per line)")
    ] = None,
    sample_rate: Annotated[
        int, Query(alias="sampleRate", ge=0, description="Samples per second of folded input")
    ] = 100,
    spy_name: Annotated[str | None, Query(alias="spyName", description="The agent; stored as pyroscope_spy")] = None,
    units: Annotated[str | None, Query(description="Accepted for compatibility; pprof carries its units")] = None,
    aggregation_type: Annotated[
        str | None, Query(alias="aggregationType", description="Accepted for compatibility (sum or average)")
    ] = None,
) -> Response:
    settings = request.app.state.settings
    app, tags = parse_app_name(name)
    start = parse_time(from_, "from") if from_ else None
    end = parse_time(until, "until") if until else None
    if start is not None and end is not None and end < start:
        raise InvalidRequest(f"until ({until}) is before from ({from_})")
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    fmt = (format or ("pprof" if multipart else "folded")).lower()
    if fmt not in ("pprof", "folded", "lines"):
        raise InvalidRequest(f"unsupported format {fmt!r}: profstore takes pprof, folded or lines")
    profile_name = None
    if multipart:
        form = await request.form(max_files=4, max_fields=16, max_part_size=settings.max_compressed_bytes)
        part = form.get("profile")
        if part is None or isinstance(part, str):
            raise InvalidRequest("multipart upload without a 'profile' file field")
        if "prev_profile" in form:
            raise InvalidRequest("prev_profile is not supported: send the delta profile itself")
        data = await part.read()
        config = form.get("sample_type_config")
        profile_name = _mutex_or_block(
            await config.read() if config is not None and not isinstance(config, str) else None
        )
    else:
        data = await read_body(request, settings.max_compressed_bytes)
    labels = {"service_name": app, **tags} if fmt == "pprof" else {}
    if spy_name:
        labels["pyroscope_spy"] = spy_name
    ingestor: Ingestor = request.app.state.ingestor
    tenant = tenant_of(request)
    if fmt == "pprof":

        def read_and_store() -> list[IngestResult]:
            return _store(ingestor, tenant, ingestor.read(data), labels, profile_name, start, len(data))

        results = await run_in_threadpool(read_and_store)
    else:
        base, _, suffix = app.rpartition(".")
        kind = FOLDED_TYPES.get(suffix) if base else None
        service = base if kind is not None else app
        labels = {"service_name": service, **tags, **labels}
        when = start if start is not None else now_ns()
        parse = partial(
            parse_folded,
            kind=kind or FOLDED_TYPES["cpu"],
            sample_rate=sample_rate,
            time_nanos=when,
            duration_nanos=max((end or when) - when, 0),
        )

        def convert_and_store() -> list[IngestResult]:
            return _store(ingestor, tenant, ingestor.read(data, parse), labels, None, when, len(data))

        results = await run_in_threadpool(convert_and_store)  # parsing text is CPU work: off the event loop
    return json_response(
        LegacyIngestResponse(
            series=sorted({s for r in results for s in r.series}),
            samples=sum(r.samples for r in results),
            duplicate=all(r.duplicate for r in results),
        )
    )
