"""The REST API agrees with itself and with the Pyroscope API Grafana calls.

Time series points are labelled the same way by ``/api/v1/timeseries`` and by the Connect
``SelectSeries`` (each point at the end of its step, holding ``(t - step, t]``); ``max_nodes=0``
means the default in both; diff rows carry their unit in their field names; ``/api/v1/profiles``
pages newest first with a cursor; ``top`` says how many functions it cut; ``/metrics`` has the
process metrics and no ``_created`` series; an unknown route answers in the API's error shape.
Expected values are worked out by hand from the profiles each test stores.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from connectrpc.compat import google_protobuf_json_codec
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service.protocols.querier.v1 import querier_connect as qc
from service.protocols.querier.v1 import querier_pb2 as q
from service.protocols.types.v1 import types_pb2 as t
from tests.api.test_connect import _cpu_profile
from tests.conftest import Server

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
S = 10**9  # ns
MS = 10**6
T0 = 1_700_000_000 * S  # aligned on every step used below


def _cpu(stacks: list[tuple[list[str], int]]) -> bytes:
    """A CPU pprof with the given root-first stacks and values; its time comes from the ingest's ``ts``."""
    return _cpu_profile(stacks, 0)


def _ingest(http: httpx.Client | TestClient, data: bytes, labels: str, ts: int) -> None:
    r = http.post("/api/v1/ingest", params={"labels": labels, "ts": str(ts)}, content=data)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def http(server: Server) -> Any:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


# --- time series: one convention for REST and Connect --------------------------------------------

# (service, seconds after T0, value): "a" has one profile in the step before T0, one exactly on a
# step's end (T0 + 30 s) and one inside it; "b" one just before T0 + 45 s and one after the range.
TS_PROFILES = [("a", -10, 2), ("a", 0, 5), ("a", 20, 7), ("a", 30, 11), ("b", 44, 3), ("b", 50, 13)]


@pytest.fixture(scope="module")
def steps(http: httpx.Client) -> httpx.Client:
    for svc, dt, v in TS_PROFILES:
        _ingest(http, _cpu([(["main", f"work_{svc}"], v)]), f'{{service_name="ts-{svc}",env="x"}}', T0 + dt * S)
    return http


def _rest_points(http: httpx.Client, **params: Any) -> dict[str, list[tuple[int, float]]]:
    r = http.get("/api/v1/timeseries", params={"query": CPU + '{service_name=~"ts-.*"}', **params})
    assert r.status_code == 200, r.text
    return {
        ",".join(f"{k}={v}" for k, v in sorted(ln["labels"].items())): [(p["ts"], p["value"]) for p in ln["points"]]
        for ln in r.json()["series"]
    }


def _connect_points(
    url: str, start_ns: int, end_ns: int, step_s: float, group_by: list[str], **kw: Any
) -> dict[str, list[tuple[int, float]]]:
    """SelectSeries through the Connect runtime, in both encodings (they must agree), ms scaled to ns."""
    answers = []
    for codec in (None, google_protobuf_json_codec()):
        with qc.QuerierServiceClientSync(url, codec=codec) if codec else qc.QuerierServiceClientSync(url) as c:
            req = q.SelectSeriesRequest(
                profile_typeID=CPU, label_selector='{service_name=~"ts-.*"}', start=start_ns // MS,
                end=end_ns // MS, step=step_s, group_by=group_by, **kw,
            )  # fmt: skip
            answers.append(
                {
                    ",".join(f"{lp.name}={lp.value}" for lp in s.labels): [
                        (p.timestamp * MS, p.value) for p in s.points
                    ]
                    for s in c.select_series(req).series
                }
            )
    assert answers[0] == answers[1]
    return answers[0]


def test_steps_are_labelled_by_their_end_in_rest_and_connect(steps: httpx.Client, server: Server) -> None:
    end = T0 + 45 * S
    # By hand: T0 holds (T0 - 15 s, T0] = 2 + 5; T0 + 15 s holds nothing (no point); T0 + 30 s holds
    # (T0 + 15 s, T0 + 30 s] = 7 + 11; "b" at T0 + 44 s lands on T0 + 45 s; T0 + 50 s is past the range.
    want = {
        "service_name=ts-a": [(T0, 7.0), (T0 + 30 * S, 18.0)],
        "service_name=ts-b": [(T0 + 45 * S, 3.0)],
    }
    rest = _rest_points(steps, **{"from": str(T0), "until": str(end), "step": "15", "group_by": "service_name"})
    assert rest == want
    assert _connect_points(server.url, T0, end, 15.0, ["service_name"]) == want
    # One line for both services: grouped by the label they share, or (Connect) by none.
    total = [(T0, 7.0), (T0 + 30 * S, 18.0), (T0 + 45 * S, 3.0)]
    assert _rest_points(steps, **{"from": str(T0), "until": str(end), "step": "15", "group_by": "env"}) == {
        "env=x": total
    }
    assert _connect_points(server.url, T0, end, 15.0, ["env"]) == {"env=x": total}
    assert _connect_points(server.url, T0, end, 15.0, []) == {"": total}


@pytest.mark.parametrize(
    ("offset_s", "span_s", "step_s"),
    [(0, 60, 1.0), (-7, 60, 7.5), (3, 45, 10.0), (-60, 180, 60.0), (-20, 70, 20.0), (-3600, 7200, 3600.0)],
)
def test_rest_and_select_series_give_the_same_points(
    steps: httpx.Client, server: Server, offset_s: int, span_s: int, step_s: float
) -> None:
    start, end = T0 + offset_s * S, T0 + (offset_s + span_s) * S
    rest = _rest_points(
        steps, **{"from": str(start), "until": str(end), "step": f"{step_s:g}", "group_by": "service_name"}
    )
    assert rest == _connect_points(server.url, start, end, step_s, ["service_name"])
    # Every profile in (start - step, end] is on some point, once.
    held = sum(v for svc, dt, v in TS_PROFILES if start - step_s * S < T0 + dt * S <= end)
    assert sum(v for pts in rest.values() for _, v in pts) == held


def test_averages_agree_too(steps: httpx.Client, server: Server) -> None:
    # 60 s steps from T0: T0 holds (T0 - 60 s, T0] = {2, 5} -> 3.5; T0 + 60 s holds {7, 11} -> 9.
    rest = _rest_points(
        steps, **{"from": str(T0), "until": str(T0 + 40 * S), "step": "60", "aggregation": "avg",
                  "group_by": "service_name"},
    )  # fmt: skip
    avg = t.TIME_SERIES_AGGREGATION_TYPE_AVERAGE
    connect = _connect_points(server.url, T0, T0 + 40 * S, 60.0, ["service_name"], aggregation=avg)
    assert rest["service_name=ts-a"] == [(T0, 3.5), (T0 + 60 * S, 9.0)]
    assert rest == connect


# --- max_nodes=0 is the default in both APIs ------------------------------------------------------


@pytest.fixture(scope="module")
def wide(http: httpx.Client) -> httpx.Client:
    """30 leaf functions under main: more nodes than a small budget keeps."""
    _ingest(http, _cpu([(["main", f"leaf{i:02d}"], i + 1) for i in range(30)]), '{service_name="wide"}', T0)
    return http


def _flame_rest(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get(
        "/api/v1/flamegraph",
        params={"query": CPU + '{service_name="wide"}', "from": str(T0), "until": str(T0), "format": "pyroscope", **params},
    )  # fmt: skip


def test_max_nodes_zero_is_the_default_in_rest_and_connect(wide: httpx.Client, server: Server) -> None:
    default = _flame_rest(wide)
    zero, budget = _flame_rest(wide, max_nodes=0), _flame_rest(wide, max_nodes=8192)
    small = _flame_rest(wide, max_nodes=5)
    assert default.status_code == zero.status_code == budget.status_code == small.status_code == 200, zero.text
    assert zero.json() == default.json() == budget.json()
    assert "other" not in zero.json()["flamebearer"]["names"] and "other" in small.json()["flamebearer"]["names"]
    bad = _flame_rest(wide, max_nodes=-1)
    assert bad.status_code == 400 and "max_nodes" in bad.json()["error"]
    # The Connect API: absent and 0 alike, and the same flame graph as REST's pyroscope layout.
    with qc.QuerierServiceClientSync(server.url) as c:
        graphs = [
            c.select_merge_stacktraces(
                q.SelectMergeStacktracesRequest(
                    profile_typeID=CPU, label_selector='{service_name="wide"}', start=T0 // MS, end=T0 // MS, **kw
                )
            ).flamegraph
            for kw in ({}, {"max_nodes": 0})
        ]
    assert graphs[0] == graphs[1]
    fb = zero.json()["flamebearer"]
    assert list(graphs[1].names) == fb["names"] and [list(lv.values) for lv in graphs[1].levels] == fb["levels"]


# --- diff: units in the field names ---------------------------------------------------------------

B0, C0 = T0 + 3600 * S, T0 + 7200 * S  # base and current window of the diff tests


@pytest.fixture(scope="module")
def windows(http: httpx.Client) -> httpx.Client:
    # base: a = 1, b = 2 (total 3); current: a = 3, c = 1 (total 4). main has no flat.
    _ingest(http, _cpu([(["main", "a"], 1), (["main", "b"], 2)]), '{service_name="diff"}', B0)
    _ingest(http, _cpu([(["main", "a"], 3), (["main", "c"], 1)]), '{service_name="diff"}', C0)
    return http


def _diff(http: httpx.Client, **params: Any) -> dict[str, Any]:
    r = http.get(
        "/api/v1/diff",
        params={"query": CPU + '{service_name="diff"}', "base_from": str(B0), "base_until": str(B0),
                "from": str(C0), "until": str(C0), **params},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_diff_shares_in_percent_and_changes_named_by_unit(windows: httpx.Client) -> None:
    fields = ("name", "base", "current", "base_percent", "current_percent", "change", "change_points", "relative")
    # Shares: a 1/3 -> 3/4 (+41.67 points, relative 0.75 / (1/3) - 1 = 1.25); b 2/3 -> 0; c 0 -> 1/4 (new).
    # Sorted by the size of the share change: b (66.67), a (41.67), c (25).
    shares = _diff(windows)
    assert shares["normalized"] is True and (shares["base_total"], shares["current_total"]) == (3, 4)
    assert [tuple(r[f] for f in fields) for r in shares["rows"]] == [
        ("b", 2, 0, 66.67, 0.0, -2, -66.67, -1.0),
        ("a", 1, 3, 33.33, 75.0, 2, 41.67, pytest.approx(1.25)),
        ("c", 0, 1, 0.0, 25.0, 1, 25.0, None),
    ]
    # Values: the same shares and points; relative of the values, sorted by |change| (a and b tie: by name).
    values = _diff(windows, normalize="false")
    assert values["normalized"] is False
    assert [tuple(r[f] for f in fields) for r in values["rows"]] == [
        ("a", 1, 3, 33.33, 75.0, 2, 41.67, 2.0),
        ("b", 2, 0, 66.67, 0.0, -2, -66.67, -1.0),
        ("c", 0, 1, 0.0, 25.0, 1, 25.0, None),
    ]
    assert all(isinstance(r["change"], int) for r in values["rows"])


# --- /api/v1/profiles: newest first, pages, a cursor ----------------------------------------------

P0 = T0 + 10_000 * S


Listed = tuple[httpx.Client, list[tuple[int, str]]]


@pytest.fixture(scope="module")
def listed(http: httpx.Client) -> Listed:
    """Seven profiles of "p1" 15 s apart, and two of "p2" at the same times as two of them (ties on ts)."""
    stored = []
    for i in range(7):
        _ingest(http, _cpu([(["main", "p"], i + 1)]), '{service_name="list",s="p1"}', P0 + 15 * i * S)
        stored.append((P0 + 15 * i * S, "p1"))
    for i in (2, 5):
        _ingest(http, _cpu([(["main", "q"], 100 + i)]), '{service_name="list",s="p2"}', P0 + 15 * i * S)
        stored.append((P0 + 15 * i * S, "p2"))
    return http, stored


def _page(http: httpx.Client, **params: Any) -> httpx.Response:
    return http.get(
        "/api/v1/profiles",
        params={"query": CPU + '{service_name="list"}', "from": str(P0), "until": str(P0 + 3600 * S), **params},
    )


def _all_pages(http: httpx.Client, limit: int, **params: Any) -> list[dict[str, Any]]:
    pages, cursor = [], None
    while True:
        r = _page(http, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = pages[-1]["next_cursor"]
        assert pages[-1]["truncated"] is (cursor is not None)
        if cursor is None:
            return pages


def test_profiles_newest_first_in_pages(listed: Listed) -> None:
    http, stored = listed
    pages = _all_pages(http, 4)
    assert [len(p["profiles"]) for p in pages] == [4, 4, 1]
    got = [(x["ts"], x["labels"]["s"]) for p in pages for x in p["profiles"]]
    assert [ts for ts, _ in got] == sorted((ts for ts, _ in stored), reverse=True)
    assert sorted(got) == sorted(stored)  # every one once
    assert _page(http).json()["profiles"][0]["ts"] == P0 + 90 * S  # newest is the default order
    oldest = [(x["ts"], x["labels"]["s"]) for p in _all_pages(http, 2, order="oldest") for x in p["profiles"]]
    assert oldest == got[::-1]  # equal times keep one order (by series, then id), reversed
    # Exactly limit: not truncated, no cursor.
    whole = _page(http, limit=len(stored)).json()
    assert len(whole["profiles"]) == len(stored) and whole["truncated"] is False and whole["next_cursor"] is None


def test_a_profile_stored_while_paging_does_not_shift_the_pages(listed: Listed) -> None:
    http, stored = listed
    first = _page(http, limit=3).json()
    _ingest(http, _cpu([(["main", "late"], 1)]), '{service_name="list",s="p3"}', P0 + 100 * S)
    second = _page(http, limit=3, cursor=first["next_cursor"]).json()
    seen = [(x["ts"], x["labels"]["s"]) for x in first["profiles"] + second["profiles"]]
    want = sorted(stored, key=lambda x: x[0], reverse=True)[:6]
    assert [ts for ts, _ in seen] == [ts for ts, _ in want] and (P0 + 100 * S, "p3") not in seen


@pytest.mark.parametrize(
    ("cursor", "order", "message"),
    [
        (
            "not a cursor",
            "newest",
            "invalid cursor 'not a cursor': pass the next_cursor of the previous page unchanged",
        ),
        ("eDoxOjI6Mw", "newest", "invalid cursor 'eDoxOjI6Mw': pass the next_cursor of the previous page unchanged"),
        (
            "bjoxOjE4NDQ2NzQ0MDczNzA5NTUxNjE2OjM",
            "newest",
            "invalid cursor 'bjoxOjE4NDQ2NzQ0MDczNzA5NTUxNjE2OjM': pass the next_cursor of the previous page unchanged",
        ),
    ],
)
def test_a_bad_cursor_is_a_400(listed: Listed, cursor: str, order: str, message: str) -> None:
    r = _page(listed[0], cursor=cursor, order=order)
    assert r.status_code == 400 and r.json() == {"error": message}


def test_a_cursor_of_the_other_order_is_a_400(listed: Listed) -> None:
    http = listed[0]
    cursor = _page(http, limit=1).json()["next_cursor"]
    r = _page(http, limit=1, order="oldest", cursor=cursor)
    assert r.status_code == 400
    assert r.json() == {"error": "the cursor belongs to order=newest, not order=oldest: keep the order while paging"}
    assert _page(http, order="latest").status_code == 400


# --- top: how many functions beside the rows ------------------------------------------------------


def test_top_says_how_many_functions_there_are(http: httpx.Client) -> None:
    # main -> a 3, b 2, c 1 in "top1"; main -> a 4 in "top2": functions main (cum only), a, b, c.
    _ingest(http, _cpu([(["main", "a"], 3), (["main", "b"], 2), (["main", "c"], 1)]), '{service_name="top1"}', T0)
    _ingest(http, _cpu([(["main", "a"], 4)]), '{service_name="top2"}', T0)

    def top(sel: str, **params: Any) -> dict[str, Any]:
        r = http.get("/api/v1/top", params={"query": CPU + sel, "from": str(T0), "until": str(T0), **params})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    cut = top('{service_name="top1"}', limit=2)
    assert [r["name"] for r in cut["rows"]] == ["a", "b"] and cut["functions"] == 4
    assert top('{service_name="top1"}')["functions"] == 4 == len(top('{service_name="top1"}')["rows"])
    assert top('{service_name="top1"}', focus="^b$", limit=1)["functions"] == 2  # main and b
    grouped = top('{service_name=~"top[12]"}', group_by="service_name", limit=1)
    assert [(g["labels"]["service_name"], g["functions"], len(g["rows"])) for g in grouped["groups"]] == [
        ("top1", 4, 1),
        ("top2", 2, 1),
    ]
    assert grouped["functions"] == 6 and grouped["rows"] == []


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_have_process_metrics_and_no_created_series(http: httpx.Client) -> None:
    _ingest(http, _cpu([(["main", "m"], 1)]), '{service_name="metrics"}', T0)
    r = http.get("/metrics")
    assert r.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    samples = {s.name: s for f in families.values() for s in f.samples}
    assert samples["process_resident_memory_bytes"].value > 10 << 20  # a Python process with DuckDB
    assert samples["process_cpu_seconds_total"].value > 0
    assert samples["process_open_fds"].value > 0
    assert samples["process_start_time_seconds"].value > 1_700_000_000
    assert "python_info" in samples
    # Counters and histograms, labelled or not, are there without their creation-time twins.
    assert "profstore_ingested_profiles_total" in samples and "profstore_scrape_lateness_seconds_count" in samples
    assert [name for name in samples if name.endswith("_created")] == []


# --- unknown routes and / -------------------------------------------------------------------------


def test_unknown_routes_answer_in_the_api_error_shape(client: TestClient) -> None:
    r = client.get("/nosuch")
    assert r.status_code == 404 and r.json() == {"error": "no route GET /nosuch; the API is under /api/v1 (see /docs)"}
    r = client.get("/api/v1/nosuch")
    assert r.status_code == 404
    assert r.json() == {"error": "no route GET /api/v1/nosuch; the endpoints are listed at /docs"}
    r = client.delete("/api/v1/top")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert r.json() == {"error": "method DELETE is not allowed on /api/v1/top; allowed: GET (see /docs)"}
    r = client.post("/")
    assert r.status_code == 405 and r.json() == {"error": "method POST is not allowed on /; allowed: GET (see /docs)"}
    # Connect clients read Connect's error shape.
    r = client.get("/querier.v1.QuerierService/SelectSeries")
    assert r.status_code == 405 and r.json()["code"] == "unimplemented" and "allowed: POST" in r.json()["message"]


def test_root_serves_the_ui_which_points_to_the_docs_and_the_docs_still_work(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in r.text and 'src="/ui/app.js"' in r.text
    for path in ("/ui/app.js", "/ui/flame.js", "/ui/style.css", "/docs", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path
    assert "text/html" in client.get("/docs").headers["content-type"]
    assert "/api/v1/top" in client.get("/openapi.json").json()["paths"]
    missing = client.get("/ui/nothing.js")
    assert missing.status_code == 404 and "error" in missing.json()
