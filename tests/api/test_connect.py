"""Grafana's Pyroscope data source protocol against a running ``profstore serve``.

The client is the ``connectrpc`` runtime (stubs generated from our protos by
``protoc-gen-connectrpc``), in both of Connect's encodings; it stands in for Grafana, which cannot
be installed here, sending the requests Grafana sends. Where the
runtime is laxer than Grafana's connect-go (the exact ``Content-Type``), plain HTTP checks it.
Numbers are held against the REST API and against ``go tool pprof`` on the same data; the
flame graph and time series encodings against bytes built by hand.
"""

from __future__ import annotations

import gzip
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_json_codec
from connectrpc.errors import ConnectError

from service.pprof import profile_pb2 as pb
from service.protocols.querier.v1 import querier_connect as qc
from service.protocols.querier.v1 import querier_pb2 as q
from service.protocols.types.v1 import types_pb2 as t
from tests.backends import Backend
from tests.conftest import Server
from tests.pprof_tool import totals

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
INUSE = "memory:inuse_space:bytes:space:bytes"
T0 = 1_700_000_000_000  # ms: the hand-made profiles' times
NOW = int(time.time() * 1000) + 3_600_000


def _ingest(url: str, data: bytes, labels: str) -> None:
    r = httpx.post(f"{url}/api/v1/ingest", params={"labels": labels}, content=data)
    assert r.status_code == 200, r.text


def _cpu_profile(stacks: list[tuple[list[str], int]], ts_ms: int) -> bytes:
    """A CPU pprof with the given root-first stacks and values."""
    p = pb.Profile()
    strings = [b""]

    def s(x: str) -> int:
        strings.append(x.encode())
        return len(strings) - 1

    p.sample_type.add(type=s("cpu"), unit=s("nanoseconds"))
    p.period_type.type, p.period_type.unit = s("cpu"), s("nanoseconds")
    p.period = 10_000_000
    p.time_nanos = ts_ms * 1_000_000
    ids: dict[str, int] = {}
    for frames, value in stacks:
        for name in frames:
            if name not in ids:
                ids[name] = len(ids) + 1
                p.function.add(id=ids[name], name=s(name))
                p.location.add(id=ids[name]).line.add(function_id=ids[name])
        p.sample.add(location_id=[ids[f] for f in reversed(frames)], value=[value])
    p.string_table.extend(strings)
    return gzip.compress(p.SerializeToString())


@pytest.fixture(scope="module")
def loaded(server: Server, corpus: Path) -> Server:
    for f in sorted((corpus / "series").glob("cpu_0*.pb.gz")):
        _ingest(server.url, f.read_bytes(), '{service_name="series",env="prod"}')
    _ingest(server.url, (corpus / "go119__cpu_10s.pb.gz").read_bytes(), '{service_name="go",env="dev"}')
    _ingest(server.url, (corpus / "go119__heap.pb.gz").read_bytes(), '{service_name="go",env="dev"}')
    # The research notes' worked example: main;foo;bar = 3 and main;baz = 2 (root first).
    _ingest(server.url, _cpu_profile([(["main", "foo", "bar"], 3), (["main", "baz"], 2)], T0), '{service_name="fg"}')
    _ingest(server.url, _cpu_profile([(["main"], 7)], T0 + 20_000), '{service_name="fg"}')
    return server


@pytest.fixture(scope="module", params=["proto", "json"])
def querier(request: pytest.FixtureRequest, loaded: Server) -> Iterator[qc.QuerierServiceClientSync]:
    codec = google_protobuf_json_codec() if request.param == "json" else None
    client = (
        qc.QuerierServiceClientSync(loaded.url, codec=codec) if codec else qc.QuerierServiceClientSync(loaded.url)
    )
    with client:
        yield client


def _merge(query: str, selector: str = "{}", **kw: Any) -> q.SelectMergeStacktracesRequest:
    return q.SelectMergeStacktracesRequest(profile_typeID=query, label_selector=selector, **{"start": 0, "end": NOW, **kw})


def _tree(fg: q.FlameGraph) -> list[tuple[int, int, int, int, str]]:
    """(depth, x, total, self, name) of every node, decoded as Grafana decodes levels; checks nesting."""
    nodes = []
    prev_row: list[tuple[int, int]] = [(0, fg.total)]
    for d, level in enumerate(fg.levels):
        v = list(level.values)
        x_end = 0
        row = []
        for i in range(0, len(v), 4):
            x = x_end + v[i]
            total, self_, name = v[i + 1], v[i + 2], fg.names[v[i + 3]]
            assert any(px <= x and x + total <= px + pt for px, pt in prev_row), (d, x, total)
            nodes.append((d, x, total, self_, name))
            row.append((x, total))
            x_end = x + total
        prev_row = row
    return nodes


def _children_add_up(nodes: list[tuple[int, int, int, int, str]]) -> None:
    for d, x, total, self_, _ in nodes:
        kids = [n for n in nodes if n[0] == d + 1 and x <= n[1] < x + total]
        if kids:
            assert self_ + sum(k[2] for k in kids) == total


def test_save_and_test_works_on_an_empty_database(tmp_path: Path, backend: Backend) -> None:
    with backend.serve(tmp_path) as srv:
        for codec in (None, google_protobuf_json_codec()):
            with (
                qc.QuerierServiceClientSync(srv.url, codec=codec) if codec else qc.QuerierServiceClientSync(srv.url)
            ) as c:
                assert list(c.profile_types(q.ProfileTypesRequest(start=1000, end=4000)).profile_types) == []
                assert list(c.profile_types(q.ProfileTypesRequest()).profile_types) == []
                empty = c.select_merge_stacktraces(_merge(CPU))
                assert list(empty.flamegraph.names) == ["total"]
                assert [list(lv.values) for lv in empty.flamegraph.levels] == [[0, 0, 0, 0]]
                assert c.get_profile_stats(t.GetProfileStatsRequest()).data_ingested is False


def test_profile_types_and_labels(querier: qc.QuerierServiceClientSync) -> None:
    types = {p.ID: p for p in querier.profile_types(q.ProfileTypesRequest(start=0, end=NOW)).profile_types}
    assert CPU in types and INUSE in types
    cpu = types[CPU]
    assert (cpu.name, cpu.sample_type, cpu.sample_unit, cpu.period_type, cpu.period_unit) == (
        "process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds",
    )  # fmt: skip
    # The hand-made profiles of 2023 only, by time.
    old = querier.profile_types(q.ProfileTypesRequest(start=T0 - 1000, end=T0 + 60_000)).profile_types
    assert [p.ID for p in old] == [CPU]

    names = querier.label_names(t.LabelNamesRequest(matchers=["{}"], start=0, end=NOW)).names
    assert {"service_name", "env", "__name__", "__profile_type__"} <= set(names)
    values = querier.label_values(t.LabelValuesRequest(name="service_name", matchers=[""], start=0, end=NOW)).names
    assert list(values) == ["fg", "go", "series"]
    prod = querier.label_values(
        t.LabelValuesRequest(name="service_name", matchers=['{env="prod"}'], start=0, end=NOW)
    ).names
    assert list(prod) == ["series"]
    # Several matchers: a series matching any of them.
    both = querier.label_values(
        t.LabelValuesRequest(name="service_name", matchers=['{env="prod"}', '{service_name="fg"}'], start=0, end=NOW)
    ).names
    assert list(both) == ["fg", "series"]
    by_type = querier.label_values(
        t.LabelValuesRequest(name="__name__", matchers=[f'{{__profile_type__="{INUSE}"}}'], start=0, end=NOW)
    ).names
    assert list(by_type) == ["memory"]

    sets = querier.series(
        q.SeriesRequest(matchers=['{service_name="go"}'], label_names=["service_name", "__profile_type__"], start=0, end=NOW)
    ).labels_set
    got = {tuple((lp.name, lp.value) for lp in ls.labels) for ls in sets}
    assert (("__profile_type__", CPU), ("service_name", "go")) in got
    assert (("__profile_type__", INUSE), ("service_name", "go")) in got


def test_flame_graph_has_the_totals_of_the_rest_api_and_the_export(
    querier: qc.QuerierServiceClientSync, loaded: Server, tmp_path: Path
) -> None:
    for query, selector in ((CPU, '{service_name="series"}'), (INUSE, '{service_name="go"}')):
        fg = querier.select_merge_stacktraces(_merge(query, selector)).flamegraph
        rest = httpx.get(
            f"{loaded.url}/api/v1/flamegraph", params={"query": query + selector, "from": "0", "format": "pyroscope"}
        ).json()
        assert fg.total == rest["total"] > 0
        assert list(fg.names) == rest["flamebearer"]["names"]
        assert [list(lv.values) for lv in fg.levels] == rest["flamebearer"]["levels"]
        nodes = _tree(fg)
        _children_add_up(nodes)
        assert fg.max_self == max(n[3] for n in nodes)
    # CPU sums, so the export read by pprof has the same total.
    export = httpx.get(f"{loaded.url}/api/v1/export", params={"query": CPU + '{service_name="series"}', "from": "0"})
    path = tmp_path / "series.pb.gz"
    path.write_bytes(export.content)
    fg = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}')).flamegraph
    assert totals(path)["cpu/nanoseconds"] == fg.total


def test_max_nodes_absent_is_the_default_and_small_budgets_keep_totals(querier: qc.QuerierServiceClientSync) -> None:
    full = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}')).flamegraph
    assert len(_tree(full)) > 50
    small = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}', max_nodes=20)).flamegraph
    nodes = _tree(small)
    assert len([n for n in nodes if n[4] != "other"]) <= 20 < len(nodes) + 20
    assert small.total == full.total
    _children_add_up(nodes)
    zero = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}', max_nodes=0)).flamegraph
    assert zero == full  # 0 is "the default", as Pyroscope reads it


def test_call_site_selects_what_runs_below_it(querier: qc.QuerierServiceClientSync) -> None:
    sel = t.StackTraceSelector(call_site=[t.Location(name="main"), t.Location(name="foo")])
    fg = querier.select_merge_stacktraces(
        _merge(CPU, '{service_name="fg"}', start=T0 - 1000, end=T0 + 1000, stack_trace_selector=sel)
    ).flamegraph
    assert [n[4] for n in _tree(fg)] == ["total", "main", "foo", "bar"]
    assert fg.total == 3


def test_flame_graph_bytes_of_the_worked_example(loaded: Server) -> None:
    body = q.SelectMergeStacktracesRequest(
        profile_typeID=CPU, label_selector='{service_name="fg"}', start=T0 - 1000, end=T0 + 1000
    ).SerializeToString()
    r = httpx.post(
        f"{loaded.url}/querier.v1.QuerierService/SelectMergeStacktraces",
        content=body,
        headers={"Content-Type": "application/proto", "Connect-Protocol-Version": "1"},
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/proto"  # exactly: connect-go refuses parameters
    # Rows [x_delta, total, self, name]: total; main; baz then foo (children by name); bar under foo
    # at x = 2. The same nested set as the research notes' example, names in first-seen order.
    names = ["total", "main", "baz", "foo", "bar"]
    levels = [[0, 5, 0, 0], [0, 5, 0, 1], [0, 2, 2, 2, 0, 3, 0, 3], [2, 3, 3, 4]]
    flame = b"".join(_field(1, n.encode()) for n in names)
    flame += b"".join(_field(2, _field(1, b"".join(_varint(v) for v in lv))) for lv in levels)
    flame += _tag(3, 0) + _varint(5) + _tag(4, 0) + _varint(3)
    assert r.content == _field(1, flame)


def test_select_series_points_and_their_bytes(querier: qc.QuerierServiceClientSync, loaded: Server) -> None:
    # Profiles at T0 (value 5) and T0 + 20 s (value 7); 15 s steps from T0 - 15 s: points at T0
    # (holding (T0 - 15 s, T0]) and T0 + 30 s (holding (T0 + 15 s, T0 + 30 s]); the empty step between is omitted.
    req = q.SelectSeriesRequest(
        profile_typeID=CPU, label_selector='{service_name="fg"}', start=T0 - 15_000, end=T0 + 45_000, step=15.0
    )
    r = httpx.post(
        f"{loaded.url}/querier.v1.QuerierService/SelectSeries",
        content=req.SerializeToString(),
        headers={"Content-Type": "application/proto"},  # no Connect-Protocol-Version: accepted
    )
    assert r.status_code == 200, r.text
    # Without group_by, one series with no labels (as Pyroscope answers).
    points = [(5.0, T0), (7.0, T0 + 30_000)]
    series = b"".join(_field(2, _tag(1, 1) + struct.pack("<d", v) + _tag(2, 0) + _varint(ts)) for v, ts in points)
    assert r.content == _field(1, series)

    grouped = querier.select_series(
        q.SelectSeriesRequest(profile_typeID=CPU, label_selector="{}", start=0, end=NOW, step=604800.0, group_by=["service_name"])
    ).series
    by = {s.labels[0].value: sum(p.value for p in s.points) for s in grouped}
    assert set(by) == {"fg", "go", "series"}
    fg = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}')).flamegraph
    assert by["series"] == fg.total
    top = querier.select_series(
        q.SelectSeriesRequest(profile_typeID=CPU, label_selector="{}", start=0, end=NOW, step=604800.0, group_by=["service_name"], limit=1)
    ).series
    assert [s.labels[0].value for s in top] == [max(by, key=lambda k: by[k])]
    avg = querier.select_series(
        q.SelectSeriesRequest(
            profile_typeID=CPU, label_selector='{service_name="fg"}', start=T0 - 1000, end=T0 + 60_000, step=60.0,
            aggregation=t.TIME_SERIES_AGGREGATION_TYPE_AVERAGE,
        )
    ).series  # fmt: skip
    assert [p.value for p in avg[0].points] == [6.0]


def test_merged_pprof_reads_in_go_tool_pprof(
    querier: qc.QuerierServiceClientSync, loaded: Server, tmp_path: Path
) -> None:
    profile = querier.select_merge_profile(
        q.SelectMergeProfileRequest(profile_typeID=CPU, label_selector='{service_name="series"}', start=0, end=NOW)
    )
    path = tmp_path / "merged.pb"
    path.write_bytes(profile.SerializeToString())
    export = tmp_path / "export.pb.gz"
    export.write_bytes(
        httpx.get(f"{loaded.url}/api/v1/export", params={"query": CPU + '{service_name="series"}', "from": "0"}).content
    )
    assert totals(path) == totals(export)
    inline = querier.select_merge_stacktraces(_merge(CPU, '{service_name="series"}', format=q.PROFILE_FORMAT_PPROF))
    again = tmp_path / "inline.pb"
    again.write_bytes(inline.pprof.profile.SerializeToString())
    assert totals(again) == totals(export)


def test_diff_has_both_sides(querier: qc.QuerierServiceClientSync) -> None:
    left = _merge(CPU, '{service_name="fg"}', start=T0 - 1000, end=T0 + 1000)
    right = _merge(CPU, '{service_name="fg"}', start=T0 + 10_000, end=T0 + 30_000)
    fg = querier.diff(q.DiffRequest(left=left, right=right)).flamegraph
    assert (fg.leftTicks, fg.rightTicks, fg.total) == (5, 7, 12)
    rows = [list(lv.values) for lv in fg.levels]
    assert all(len(r) % 7 == 0 for r in rows)
    assert rows[0] == [0, 5, 0, 0, 7, 0, 0]
    main = rows[1]
    assert main[1:3] == [5, 0] and main[4:6] == [7, 7]  # main: a parent on the left, a leaf on the right


def test_profile_stats(querier: qc.QuerierServiceClientSync) -> None:
    stats = querier.get_profile_stats(t.GetProfileStatsRequest())
    assert stats.data_ingested
    assert stats.oldest_profile_time <= T0
    assert stats.newest_profile_time > T0


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_merge("process_cpu:cpu"), "invalid profile type"),
        (_merge(CPU, '{service_name="x"'), "selector"),
        (_merge(CPU, start=2000, end=1000), "before start"),
        (_merge(CPU, max_nodes=-1), "max_nodes"),
        (_merge(""), "profile_typeID is required"),
    ],
)
def test_bad_requests_are_invalid_argument(
    querier: qc.QuerierServiceClientSync, request_: q.SelectMergeStacktracesRequest, message: str
) -> None:
    with pytest.raises(ConnectError) as err:
        querier.select_merge_stacktraces(request_)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert message in err.value.message


def test_unknown_profile_type_is_empty_as_in_pyroscope(querier: qc.QuerierServiceClientSync) -> None:
    fg = querier.select_merge_stacktraces(_merge("memory:nope:bytes:space:bytes")).flamegraph
    assert (fg.total, list(fg.names)) == (0, ["total"])
    series = querier.select_series(
        q.SelectSeriesRequest(profile_typeID="memory:nope:bytes:space:bytes", label_selector="{}", start=0, end=NOW, step=604800.0)
    )
    assert list(series.series) == []


def test_protocol_errors(loaded: Server) -> None:
    url = f"{loaded.url}/querier.v1.QuerierService"
    proto = {"Content-Type": "application/proto"}
    r = httpx.post(f"{url}/SelectHeatmap", content=b"", headers=proto)
    assert (r.status_code, r.json()["code"]) == (501, "unimplemented")
    r = httpx.post(f"{url}/ProfileTypes", content=b"\xff\xff\xff", headers=proto)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    assert "ProfileTypesRequest" in r.json()["message"]
    r = httpx.post(f"{url}/ProfileTypes", content=b"{", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    r = httpx.post(f"{url}/ProfileTypes", content=b"", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(f"{url}/ProfileTypes", content=b"", headers={**proto, "Content-Encoding": "gzip"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    r = httpx.post(f"{url}/ProfileTypes", content=b"", headers={**proto, "Content-Encoding": "br"})
    assert (r.status_code, r.json()["code"]) == (501, "unimplemented")
    bomb = gzip.compress(b"\x00" * (300 << 20))
    r = httpx.post(f"{url}/ProfileTypes", content=bomb, headers={**proto, "Content-Encoding": "gzip"})
    assert (r.status_code, r.json()["code"]) == (429, "resource_exhausted")
    # JSON: lowerCamel names in, int64 as strings or numbers, unknown fields ignored; JSON out.
    r = httpx.post(
        f"{url}/SelectMergeStacktraces",
        json={"profileTypeID": CPU, "labelSelector": '{service_name="fg"}', "start": str(T0 - 1000), "end": T0 + 1000, "x": 1},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json()["flamegraph"]["total"] == "5"
    r = httpx.post(f"{url}/SelectMergeSpanProfile", content=b"", headers=proto)
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    assert "span_selector" in r.json()["message"]


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _field(field: int, payload: bytes) -> bytes:
    return _tag(field, 2) + _varint(len(payload)) + payload
