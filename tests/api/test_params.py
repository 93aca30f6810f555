"""What a user types and what the API answers when it is wrong: unknown parameters, short profile
type names, durations, errors that name the parameter, 404 when a selector matches nothing."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.errors import ParseError, UnknownProfileType
from service.pprof import profile_pb2 as pb
from service.pprof.decode import decode
from service.types import TimeRange, parse_duration, parse_time, resolve_profile_type
from tests.backends import Backend

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
HEAP = "memory:inuse_space:bytes:space:bytes"
T = 1_800_000_000  # 2027-01-15T08:00:00Z, the time every profile here is stored at
AROUND = {"from": str(T - 60), "until": str(T + 60)}


def _ingest(client: TestClient, data: bytes, labels: str, **params: str) -> None:
    r = client.post("/api/v1/ingest", params={"labels": labels, "ts": str(T), **params}, content=data)
    assert r.status_code == 200, r.text


@pytest.fixture
def loaded(client: TestClient, corpus: Path) -> TestClient:
    """Heap profiles of demo and checkout, a CPU and a block profile of demo, all at T."""
    heap = (corpus / "go119__heap.pb.gz").read_bytes()
    _ingest(client, heap, '{service_name="demo"}')
    _ingest(client, heap, '{service_name="checkout"}')
    _ingest(client, (corpus / "go119__cpu_10s.pb.gz").read_bytes(), '{service_name="demo"}')
    _ingest(client, (corpus / "go119__block.pb.gz").read_bytes(), '{service_name="demo"}', name="block")
    return client


def _error(r: Any, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    return str(r.json()["error"])


# --- unknown parameters -------------------------------------------------------------------------

CHECKED = ("/api/v1/", "/-/")
# Routes outside /api/v1 and /-/: Pyroscope's and Connect's (SDKs send parameters of their own) and
# the probes and the landing page. A new route lands in neither list and fails the test below until it is placed.
UNCHECKED = {
    "/ingest",
    "/querier.v1.QuerierService/{method}",
    "/push.v1.PusherService/{method}",
    "/healthz",
    "/metrics",
    "/",
}


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        inner = getattr(r, "original_router", None)  # FastAPI wraps an included router in a route of its own
        if inner is not None:
            yield from _api_routes(inner.routes)


def test_every_rest_route_refuses_an_unknown_parameter(client: TestClient) -> None:
    routes = list(_api_routes(client.app.routes))  # type: ignore[attr-defined]
    checked = [r for r in routes if r.path.startswith(CHECKED)]
    assert {r.path for r in routes if not r.path.startswith(CHECKED)} == UNCHECKED
    assert {"/api/v1/top", "/api/v1/export", "/api/v1/ingest", "/-/reload"} <= {r.path for r in checked}
    tried = 0
    for route in checked:
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods & {"GET", "POST"}):
            r = client.request(method, path, params={"zzz_typo": "1"})
            assert _error(r, 400).startswith('unknown parameter "zzz_typo";'), (method, path, r.text)
            tried += 1
    assert tried >= 20


def test_a_misspelt_parameter_names_the_one_meant(loaded: TestClient) -> None:
    r = loaded.get("/api/v1/top", params={"query": HEAP, "agregation": "last", **AROUND})
    assert _error(r, 400) == (
        'unknown parameter "agregation"; did you mean "aggregation"? known: aggregation, focus, from, group_by, hide, '
        "ignore, limit, order, query, resolution, until"
    )
    r = loaded.get("/api/v1/top", params={"query": HEAP, "agregation": "last", "fcous": "x", "zzz": "1"})
    assert _error(r, 400).startswith(
        'unknown parameters "agregation" (did you mean "aggregation"?), "fcous" (did you mean "focus"?), "zzz"; known: '
    )
    assert _error(loaded.get("/api/v1/profile-types", params={"x": "1"}), 400) == (
        'unknown parameter "x"; /api/v1/profile-types takes no query parameters'
    )
    # Parameters of a shared dependency (the filters) are known; so is every alias (from).
    ok = loaded.get("/api/v1/top", params={"query": HEAP, "aggregation": "last", "focus": "main", **AROUND})
    assert ok.status_code == 200, ok.text
    # Pyroscope's ingest takes what SDKs send, known or not.
    legacy = loaded.post(
        "/ingest", params={"name": "legacy.cpu{}", "from": str(T), "clientVersion": "1.2"}, content=b"main;work 3\n"
    )
    assert legacy.status_code == 200, legacy.text


# --- profile types ------------------------------------------------------------------------------

ALIASES = {
    "cpu": CPU,
    "process_cpu": CPU,
    "heap": HEAP,
    "memory": HEAP,
    "inuse_space": HEAP,
    "inuse_objects": "memory:inuse_objects:count:space:bytes",
    "allocs": "memory:alloc_space:bytes:space:bytes",
    "alloc_space": "memory:alloc_space:bytes:space:bytes",
    "alloc_objects": "memory:alloc_objects:count:space:bytes",
    "goroutine": "goroutine:goroutine:count:goroutine:count",
    "goroutines": "goroutine:goroutine:count:goroutine:count",
    "threadcreate": "threadcreate:threadcreate:count:threadcreate:count",
    "mutex": "mutex:delay:nanoseconds:contentions:count",
    "block": "block:delay:nanoseconds:contentions:count",
    "memory:inuse_space": HEAP,
    "memory:alloc_objects": "memory:alloc_objects:count:space:bytes",
    "process_cpu:samples": "process_cpu:samples:count:cpu:nanoseconds",
    "block:contentions": "block:contentions:count:contentions:count",
    "mutex:contentions": "mutex:contentions:count:contentions:count",
    CPU: CPU,
}


@pytest.mark.parametrize(("short", "full"), sorted(ALIASES.items()))
def test_short_names_resolve_to_pyroscope_ids(short: str, full: str) -> None:
    assert str(resolve_profile_type(short)) == full


def test_short_and_partial_types_answer_as_the_full_id(loaded: TestClient) -> None:
    stored = {t["id"] for t in loaded.get("/api/v1/profile-types").json()}
    tried = 0
    for short, full in ALIASES.items():
        if full not in stored:
            continue
        got = loaded.get("/api/v1/top", params={"query": short + '{service_name="demo"}', **AROUND})
        want = loaded.get("/api/v1/top", params={"query": full + '{service_name="demo"}', **AROUND})
        assert got.status_code == 200, (short, got.text)
        assert got.json() == want.json() and got.json()["profile_type"] == full and got.json()["total"] > 0
        tried += 1
    assert tried == 15
    ts = loaded.get("/api/v1/timeseries", params={"query": "heap", **AROUND}).json()
    assert ts["profile_type"] == HEAP and len(ts["series"]) == 2


def _profile(sample_type: str, unit: str, period_type: str, period_unit: str, value: int) -> bytes:
    """One sample on main.main, built field by field."""
    strings = ["", sample_type, unit, period_type, period_unit, "main.main"]
    p = pb.Profile(string_table=[s.encode() for s in strings])
    p.sample_type.add(type=1, unit=2)
    p.period_type.type, p.period_type.unit, p.period = 3, 4, 1
    p.function.add(id=1, name=5, system_name=5)
    p.location.add(id=1, address=0x1000).line.add(function_id=1, line=1)
    p.sample.add(location_id=[1], value=[value])
    return p.SerializeToString()


def test_a_partial_id_is_completed_from_the_stored_types_first(client: TestClient) -> None:
    kib = "memory:inuse_space:kilobytes:space:bytes"  # not Go's unit, so not the fixed table's answer
    _ingest(client, _profile("inuse_space", "kilobytes", "space", "bytes", 7), '{service_name="kb"}')
    r = client.get("/api/v1/top", params={"query": "memory:inuse_space", **AROUND})
    assert r.status_code == 200, r.text
    assert (r.json()["profile_type"], r.json()["total"]) == (kib, 7)
    _ingest(client, _profile("wall", "nanoseconds", "wall", "nanoseconds", 9), '{service_name="w"}')
    r = client.get("/api/v1/top", params={"query": "wall", **AROUND})  # a stored name with one type
    assert (r.json()["profile_type"], r.json()["total"]) == ("wall:wall:nanoseconds:wall:nanoseconds", 9)
    _ingest(client, _profile("inuse_space", "bytes", "space", "bytes", 5), '{service_name="b"}')
    r = client.get("/api/v1/top", params={"query": "memory:inuse_space", **AROUND})
    assert _error(r, 400) == (f'ambiguous profile type "memory:inuse_space": it can be {HEAP}, {kib}; name one')
    r = client.get("/api/v1/top", params={"query": "heap", **AROUND})  # a short name means Go's type
    assert (r.json()["profile_type"], r.json()["total"]) == (HEAP, 5)


def test_an_unknown_type_is_400_with_the_closest_name_and_the_stored_types(loaded: TestClient) -> None:
    stored = (
        "block:contentions:count:contentions:count, block:delay:nanoseconds:contentions:count, "
        "memory:alloc_objects:count:space:bytes, memory:alloc_space:bytes:space:bytes, "
        f"memory:inuse_objects:count:space:bytes, {HEAP}, {CPU}, process_cpu:samples:count:cpu:nanoseconds"
    )
    for path in ("/api/v1/top", "/api/v1/export", "/api/v1/series", "/api/v1/profiles"):
        r = loaded.get(path, params={"query": 'cpux{service_name="demo"}'})
        assert _error(r, 400) == f'unknown profile type "cpux"; did you mean "cpu" ({CPU})? stored: {stored}'
    r = loaded.get("/api/v1/top", params={"query": "memory:inuse_spac:bytes:space:bytes"})
    assert (
        _error(r, 400)
        == f'unknown profile type "memory:inuse_spac:bytes:space:bytes"; did you mean "{HEAP}"? stored: {stored}'
    )
    with pytest.raises(UnknownProfileType, match='unknown profile type "hepa"; did you mean "heap"'):
        resolve_profile_type("hepa")


# --- durations and times ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("1m", 60), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), ("15", 15), ("2.5", 2.5)],
)
def test_step_takes_durations_as_prometheus_writes_them(loaded: TestClient, text: str, seconds: float) -> None:
    assert parse_duration(text, "step") == int(seconds * 10**9)
    r = loaded.get(
        "/api/v1/timeseries", params={"query": "cpu", "step": text, "from": str(T - 60), "until": str(T + 60)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["step_s"] == seconds
    assert sum(p["value"] for s in r.json()["series"] for p in s["points"]) > 0


def test_relative_times_take_compound_durations(loaded: TestClient) -> None:
    now = 1_900_000_000 * 10**9
    assert parse_time("now-1h30m", "from", now) == now - 5400 * 10**9
    assert parse_time("now-1d12h", "from", now) == now - 36 * 3600 * 10**9
    r = loaded.get("/api/v1/timeseries", params={"query": "cpu", "from": "now-1h30m", "step": "1m"})
    assert r.status_code == 200, r.text
    assert _error(loaded.get("/api/v1/timeseries", params={"query": "cpu", "step": "fast"}), 400) == (
        "invalid step 'fast': want a duration like 15s, 1m, 1h30m or 500ms or a number of seconds"
    )
    huge = loaded.get("/api/v1/timeseries", params={"query": "cpu", "step": "-1.7976931348623157e+308"})
    assert _error(huge, 400) == "invalid step '-1.7976931348623157e+308': longer than 292 years"
    assert _error(loaded.get("/api/v1/top", params={"query": "cpu", "from": "now-1x"}), 400) == (
        "invalid from 'now-1x': want now-<duration> such as now-1h, now-1h30m or now-15m"
    )


def test_errors_name_the_parameter_sent_and_show_rfc3339(loaded: TestClient) -> None:
    diff = {"query": "cpu", **AROUND}
    cases = [
        (
            "/api/v1/diff",
            {**diff, "base_from": "2026-12-06T13:27:13Z", "base_until": "2026-12-06T12:00:00Z"},
            "base_from (2026-12-06T13:27:13Z) is after base_until (2026-12-06T12:00:00Z): the range is reversed",
        ),
        (
            "/api/v1/top",
            {"query": "cpu", "from": str(T + 1), "until": str(T)},
            "from (2027-01-15T08:00:01Z) is after until (2027-01-15T08:00:00Z): the range is reversed",
        ),
        (
            "/api/v1/export",
            {"query": "cpu", **AROUND, "base_from": "1800000000500", "base_until": "1800000000"},
            "base_from (2027-01-15T08:00:00.500Z) is after base_until (2027-01-15T08:00:00Z): the range is reversed",
        ),
        ("/api/v1/diff", {**diff, "base_from": "yesterday", "base_until": "now"}, "invalid base_from 'yesterday'"),
        ("/api/v1/top", {}, "query is required"),
        ("/api/v1/diff", {**diff, "base_from": "now-1h"}, "base_until is required"),
        ("/api/v1/diff", {"from": "now-1h"}, "query is required; base_from is required; base_until is required"),
        ("/api/v1/top", {"query": "cpu", "limit": "many"}, "invalid limit 'many': want an integer"),
        ("/api/v1/top", {"query": "cpu", "limit": "0"}, "invalid limit '0': want at least 1"),
        ("/api/v1/top", {"query": "cpu", "order": "size"}, "invalid order 'size': want 'flat' or 'cum'"),
        (
            "/api/v1/diff",
            {**diff, "base_from": "0", "base_until": "1", "normalize": "maybe"},
            "invalid normalize 'maybe': want true or false",
        ),
    ]
    for path, params, message in cases:
        r = loaded.get(path, params=params)
        assert r.status_code == 400, (path, params, r.text)
        error = r.json()["error"]
        assert error == message or (error.startswith(message) and message.startswith("invalid ")), (message, error)
    with pytest.raises(Exception, match=r"start \(1970-01-01T00:00:02Z\) is after end \(1970-01-01T00:00:01Z\)"):
        TimeRange(2 * 10**9, 10**9)


# --- nothing matched ----------------------------------------------------------------------------

DMEO = (
    f'no series of {HEAP} match {{service_name="dmeo"}}; did you mean service_name="demo"? '
    "(service_name has: checkout, demo)"
)


def test_a_selector_matching_nothing_is_404_with_the_values_that_exist(loaded: TestClient) -> None:
    q = {"query": 'heap{service_name="dmeo"}', **AROUND}
    for path, extra in [
        ("/api/v1/top", {}),
        ("/api/v1/flamegraph", {}),
        ("/api/v1/timeseries", {}),
        ("/api/v1/diff", {"base_from": AROUND["from"], "base_until": AROUND["until"]}),
        ("/api/v1/export", {}),
    ]:
        assert _error(loaded.get(path, params={**q, **extra}), 404) == DMEO, path
    base = {
        "query": "heap",
        "base_query": 'heap{service_name="dmeo"}',
        "base_from": str(T - 60),
        "base_until": str(T + 60),
    }
    assert _error(loaded.get("/api/v1/diff", params={**AROUND, **base}), 404) == DMEO
    assert _error(loaded.get("/api/v1/export", params={**AROUND, **base}), 404) == DMEO
    cases = {
        'heap{servce_name="demo"}': f'no series of {HEAP} match {{servce_name="demo"}}; no series of this type has a '
        'label "servce_name"; did you mean "service_name"? (labels: service_name)',
        'heap{service_name=~"zz.*"}': f'no series of {HEAP} match {{service_name=~"zz.*"}}; service_name=~"zz.*" '
        "matches no series (service_name has: checkout, demo)",
        'heap{service_name="demo",service_name="checkout"}': f"no series of {HEAP} match "
        '{service_name="demo",service_name="checkout"}: each matcher matches some series of this type, but no '
        "series matches all of them",
        'block{service_name="checkout"}': "no series of block:delay:nanoseconds:contentions:count match "
        '{service_name="checkout"}; service_name="checkout" matches no series (service_name has: demo)',
        'goroutine{service_name="demo"}': "no series of goroutine:goroutine:count:goroutine:count match "
        '{service_name="demo"}: none of this type is stored; stored: block:contentions:count:contentions:count, '
        "block:delay:nanoseconds:contentions:count, memory:alloc_objects:count:space:bytes, "
        "memory:alloc_space:bytes:space:bytes, memory:inuse_objects:count:space:bytes, "
        f"{HEAP}, {CPU}, process_cpu:samples:count:cpu:nanoseconds",
    }
    for query, message in cases.items():
        assert _error(loaded.get("/api/v1/top", params={"query": query}), 404) == message


def test_search_endpoints_answer_an_empty_list(loaded: TestClient) -> None:
    q = 'heap{service_name="dmeo"}'
    for path, params in [
        ("/api/v1/series", {"query": q, **AROUND}),
        ("/api/v1/labels", {"query": q}),
        ("/api/v1/labels/service_name/values", {"query": q}),
        ("/api/v1/series", {"query": "goroutine"}),
    ]:
        r = loaded.get(path, params=params)
        assert (r.status_code, r.json()) == (200, []), (path, r.text)
    r = loaded.get("/api/v1/profiles", params={"query": q, **AROUND})
    assert (r.status_code, r.json()) == (200, {"profiles": [], "next_cursor": None, "truncated": False}), r.text
    assert loaded.get("/api/v1/labels/service_name/values", params={"query": "heap"}).json() == ["checkout", "demo"]


def test_an_export_with_nothing_in_the_range_says_where_the_profiles_are(loaded: TestClient) -> None:
    q = 'heap{service_name="demo"}'
    r = loaded.get(
        "/api/v1/export", params={"query": q, "from": "2027-01-15T09:00:00Z", "until": "2027-01-15T09:30:00Z"}
    )
    assert _error(r, 404) == (
        f'{HEAP}{{service_name="demo"}} has no profiles between 2027-01-15T09:00:00Z (from) and '
        "2027-01-15T09:30:00Z (until); its newest is at 2027-01-15T08:00:00Z"
    )
    r = loaded.get("/api/v1/export", params={"query": q, "from": "2027-01-15T06:00:00Z", "until": "2027-01-15T07:00:00Z",
                                             "base_from": "0", "base_until": "1"})  # fmt: skip
    assert _error(r, 404).endswith("(until); its oldest is at 2027-01-15T08:00:00Z")
    r = loaded.get("/api/v1/export", params={"query": q, **AROUND, "base_from": "0", "base_until": "1"})
    assert _error(r, 404) == (
        f'{HEAP}{{service_name="demo"}} has no profiles between 1970-01-01T00:00:00Z (base_from) and '
        "1970-01-01T00:00:01Z (base_until); its oldest is at 2027-01-15T08:00:00Z"
    )
    ok = loaded.get("/api/v1/export", params={"query": q, **AROUND})
    assert ok.status_code == 200 and ok.content[:2] == b"\x1f\x8b"
    # top and friends answer an empty range with zeros: a gap in a dashboard is not an error
    assert loaded.get("/api/v1/top", params={"query": q, "from": "0", "until": "1"}).json()["total"] == 0


def test_an_export_inside_a_gap_names_the_profiles_on_both_sides(client: TestClient) -> None:
    for ts in (T, T + 3600):
        _ingest(client, _profile("wall", "nanoseconds", "wall", "nanoseconds", 9), '{service_name="w"}', ts=str(ts))
    r = client.get("/api/v1/export", params={"query": "wall", "from": str(T + 60), "until": str(T + 120)})
    assert _error(r, 404) == (
        "wall:wall:nanoseconds:wall:nanoseconds{} has no profiles between 2027-01-15T08:01:00Z (from) and "
        "2027-01-15T08:02:00Z (until); the nearest are at 2027-01-15T08:00:00Z and 2027-01-15T09:00:00Z"
    )


def test_connect_keeps_pyroscopes_empty_answers(loaded: TestClient) -> None:
    r = loaded.post(
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        json={
            "profileTypeID": HEAP,
            "labelSelector": '{service_name="dmeo"}',
            "start": "0",
            "end": str((T + 60) * 1000),
        },
    )
    assert r.status_code == 200, r.text
    assert int(r.json().get("flamegraph", {}).get("total", "0")) == 0


# --- functions ----------------------------------------------------------------------------------


def test_a_function_name_that_is_stored_nowhere_is_400_with_the_one_meant(loaded: TestClient) -> None:
    q = {"query": 'cpu{service_name="demo"}', **AROUND}
    r = loaded.get("/api/v1/timeseries", params={**q, "function": "sha256.block"})
    assert (
        _error(r, 400) == 'no function named "sha256.block" in the matching series; did you mean "crypto/sha256.block"?'
    )
    r = loaded.get("/api/v1/timeseries", params={**q, "function": "runtime.mallocgcc"})
    assert _error(r, 400).startswith(
        'no function named "runtime.mallocgcc" in the matching series; did you mean "runtime.mallocgc"'
    )
    r = loaded.get("/api/v1/timeseries", params={**q, "function": "crypto/sha256.block"})
    assert r.status_code == 200 and r.json()["series"][0]["points"][0]["value"] > 0
    # A stored function that is not on these stacks (only in the heap) still answers, with zeros.
    r = loaded.get("/api/v1/timeseries", params={**q, "function": "main.leakGrow"})
    assert r.status_code == 200 and [p["value"] for p in r.json()["series"][0]["points"]] == [0.0]


# --- plain text bodies --------------------------------------------------------------------------


def test_a_text_body_is_refused_with_its_first_line(client: TestClient) -> None:
    busy = b"Could not enable CPU profiling: cpu profiling already in use\n"
    message = 'parsing profile: not a pprof profile: the body is text: "Could not enable CPU profiling: cpu profiling already in use"'
    assert _error(client.post("/api/v1/ingest", content=busy), 400) == message
    with pytest.raises(ParseError) as exc:
        decode(b"\n\n  404 page not found\nmore\n")
    assert str(exc.value) == 'parsing profile: not a pprof profile: the body is text: "404 page not found"'
    garbage = _error(client.post("/api/v1/ingest", content=b"\x00\x01\x02garbage\xff"), 400)
    assert (
        garbage
        == "parsing profile: unrecognized profile format: not a pprof protobuf, nor a legacy format go tool pprof reads"
    )


def test_a_range_over_the_limit_names_the_parameters(tmp_path: Path, backend: Backend) -> None:
    from service.app import create_app

    with backend.settings(tmp_path / "data", max_range_days=1) as settings, TestClient(create_app(settings)) as c:
        r = c.get(
            "/api/v1/diff",
            params={"query": "cpu", "base_from": "2027-01-01T00:00:00Z", "base_until": "2027-01-03T00:00:00Z"},
        )
        assert _error(r, 400) == "time range base_from..base_until of 2.0 days exceeds the maximum of 1 days"
