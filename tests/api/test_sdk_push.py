"""Pyroscope's own clients push to a running ``profstore serve``, unchanged, and what they push is queryable.

- The Python SDK (``pyroscope-io``, Rust inside) sends gzipped ``push.v1.PusherService/Push``
  bodies without ``Connect-Protocol-Version``.
- The Node.js SDK (``@pyroscope/nodejs``, from npm) sends ``/ingest?format=pprof&name=app{k=v}``
  with a gzipped pprof body: a wall-clock profile (with CPU time) and a heap profile.
- Hand-built requests cover what neither SDK sends: a multipart upload, folded stacks, a plain
  (not gzipped) Push, Push as JSON, and the errors.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.pprof import profile_pb2 as pb
from service.protocols.push.v1 import push_pb2
from service.protocols.querier.v1 import querier_pb2 as q
from service.protocols.types.v1 import types_pb2 as t
from tests.conftest import REPO, Server

SDK = REPO / "tests" / "sdk"
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


def _top(url: str, query: str) -> dict[str, int]:
    r = httpx.get(f"{url}/api/v1/top", params={"query": query, "from": "0", "limit": 1000})
    assert r.status_code == 200, r.text
    return {row["name"]: row["flat"] for row in r.json()["rows"]}


def _types(url: str, service: str) -> set[str]:
    r = httpx.get(f"{url}/api/v1/labels/service_name/values")
    assert service in r.json(), r.json()
    return {
        p["id"]
        for p in httpx.get(f"{url}/api/v1/profile-types").json()
        if httpx.get(
            f"{url}/api/v1/series", params={"query": p["id"] + f'{{service_name="{service}"}}', "from": "0"}
        ).json()
    }


def test_python_sdk_pushes(server: Server) -> None:
    subprocess.run([sys.executable, str(SDK / "pyroscope_busy.py"), server.url, "5"], check=True, timeout=60)
    assert CPU in _types(server.url, "pyapp")
    top = _top(server.url, CPU + '{service_name="pyapp",env="test",phase="hot"}')
    assert max(top, key=lambda k: top[k]).startswith("busy_leaf"), top
    assert sum(top.values()) > 2 * 10**9  # about 5 s of one busy core


def test_nodejs_sdk_pushes(server: Server, tmp_path: Path) -> None:
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "Node.js and npm are needed (.ci/run installs them)"
    work = tmp_path / "nodejs"
    shutil.copytree(SDK / "nodejs", work)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work, check=True, timeout=300)
    subprocess.run([node, "busy.js", server.url, "6000"], cwd=work, check=True, timeout=60)
    types = _types(server.url, "nodeapp")
    assert {"wall:wall:nanoseconds:wall:nanoseconds", "wall:cpu:nanoseconds:wall:nanoseconds"} <= types, types
    assert any(x.startswith("memory:inuse_space:bytes") for x in types), types
    top = _top(server.url, 'wall:cpu:nanoseconds:wall:nanoseconds{service_name="nodeapp"}')
    assert any("busyLeaf" in name for name in top), top
    r = httpx.get(f"{server.url}/api/v1/labels/pyroscope_spy/values")
    assert "nodespy" in r.json()


def _cpu_pprof(corpus: Path) -> bytes:
    return (corpus / "go119__cpu_10s.pb.gz").read_bytes()


def test_push_plain_gzip_and_json(server: Server, corpus: Path) -> None:
    raw = gzip.decompress(_cpu_pprof(corpus))
    labels = [t.LabelPair(name="__name__", value="process_cpu"), t.LabelPair(name="service_name", value="pushed"),
              t.LabelPair(name="__delta__", value="false"), t.LabelPair(name="otel.scope.name", value="x/y")]  # fmt: skip
    req = push_pb2.PushRequest(
        series=[push_pb2.RawProfileSeries(labels=labels, samples=[push_pb2.RawSample(raw_profile=raw, ID="a")])]
    )
    url = f"{server.url}/push.v1.PusherService/Push"
    r = httpx.post(
        url,
        content=req.SerializeToString(),
        headers={"Content-Type": "application/proto", "Connect-Protocol-Version": "1"},
    )
    assert (r.status_code, r.headers["content-type"], r.content) == (200, "application/proto", b"")
    before = _top(server.url, CPU + '{service_name="pushed"}')
    # The same profile gzipped, the whole body gzipped (as pyroscope-rs sends it): stored once.
    req.series[0].samples[0].raw_profile = gzip.compress(raw)
    r = httpx.post(
        url,
        content=gzip.compress(req.SerializeToString()),
        headers={"Content-Type": "application/proto", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert _top(server.url, CPU + '{service_name="pushed"}') == before
    body = {"series": [{"labels": [{"name": "service_name", "value": "pushed-json"}],
                        "samples": [{"ID": "b", "rawProfile": base64.b64encode(raw).decode()}]}]}  # fmt: skip
    r = httpx.post(url, json=body)
    assert r.status_code == 200, r.text
    assert _top(server.url, CPU + '{service_name="pushed-json"}') == before
    labels = httpx.get(f"{server.url}/api/v1/labels", params={"query": '{service_name="pushed"}'}).json()
    assert "otel.scope.name" in labels and "__delta__" not in labels


def test_push_errors(server: Server) -> None:
    url = f"{server.url}/push.v1.PusherService/Push"
    bad = push_pb2.PushRequest(series=[push_pb2.RawProfileSeries(labels=[t.LabelPair(name="service_name", value="bad")],
                                                                 samples=[push_pb2.RawSample(raw_profile=b"<html>nope</html>")])])  # fmt: skip
    r = httpx.post(url, content=bad.SerializeToString(), headers={"Content-Type": "application/proto"})
    assert (r.status_code, r.json()["code"]) == (400, "invalid_argument")
    assert "series 0 (bad)" in r.json()["message"]
    r = httpx.post(
        f"{server.url}/push.v1.PusherService/PushV2", content=b"", headers={"Content-Type": "application/proto"}
    )
    assert r.status_code == 501


def test_legacy_ingest_multipart_and_folded(server: Server, corpus: Path) -> None:
    data = _cpu_pprof(corpus)
    r = httpx.post(
        f"{server.url}/ingest",
        params={
            "name": "multi{env=prod,region=eu-west/1}",
            "from": "1700000000",
            "until": "1700000010",
            "spyName": "gospy",
        },
        files={"profile": ("profile.pprof", data, "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    direct = httpx.post(f"{server.url}/api/v1/ingest", params={"labels": '{service_name="direct"}'}, content=data)
    assert direct.status_code == 200
    assert _top(server.url, CPU + '{service_name="multi",region="eu-west/1",pyroscope_spy="gospy"}') == _top(
        server.url, CPU + '{service_name="direct"}'
    )
    # Mutex or block: only pyroscope-go's sample_type_config tells.
    mutex = (corpus / "go119__mutex.pb.gz").read_bytes()
    config = json.dumps({"contentions": {"display-name": "mutex_count"}, "delay": {"display-name": "mutex_duration"}})
    r = httpx.post(f"{server.url}/ingest", params={"name": "multi"},
                   files={"profile": ("p", mutex), "sample_type_config": ("c", config.encode())})  # fmt: skip
    assert r.status_code == 200, r.text
    assert any(s.startswith("mutex:") for s in r.json()["series"]), r.json()

    folded = b"main;work;busy 30\nmain;idle 10\nmain;work;busy 20\n"
    r = httpx.post(
        f"{server.url}/ingest",
        params={"name": "fold.cpu{env=test}", "from": "1700000000000", "sampleRate": "100"},
        content=folded,
    )
    assert r.status_code == 200, r.text
    top = _top(server.url, CPU + '{service_name="fold",env="test"}')
    assert {k: v for k, v in top.items() if v} == {
        "busy": 50 * 10**7,
        "idle": 10 * 10**7,
    }  # samples at 100 Hz are 10 ms each
    r = httpx.post(f"{server.url}/ingest", params={"name": "fold.inuse_space"}, content=b"main;alloc 4096\n")
    assert r.status_code == 200, r.text
    assert r.json()["series"] == ["memory:inuse_space:bytes:space:bytes"]


@pytest.mark.parametrize(
    ("params", "body", "message"),
    [
        ({"name": "{env=x}"}, b"a 1", "invalid name"),
        ({"name": "app{env}"}, b"a 1", "invalid tag"),
        ({"name": "app", "format": "jfr"}, b"x", "unsupported format"),
        ({"name": "app", "from": "yesterday"}, b"a 1", "invalid from"),
        ({"name": "app", "from": "200", "until": "100"}, b"a 1", "before from"),
        ({"name": "app"}, b"no value here", "folded line 1"),
        ({"name": "app", "format": "pprof"}, b"<html></html>", "parsing profile"),
    ],
)
def test_legacy_ingest_errors(server: Server, params: dict[str, str], body: bytes, message: str) -> None:
    r = httpx.post(f"{server.url}/ingest", params=params, content=body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]


def test_sample_labels_become_series_labels_and_spans_stay_selectable(server: Server) -> None:
    """As Pyroscope splits what SDKs push: dynamic tags (sample labels) become series labels; span_id
    (and profile_id, renamed to it) stay on the samples, where SelectMergeSpanProfile selects them."""
    p = pb.Profile()
    strings = ["", "cpu", "nanoseconds", "main", "hot_path", "cold_path", "phase", "hot", "cold", "span_id", "profile_id",
               "00000000000000aa", "00000000000000bb"]  # fmt: skip
    p.string_table.extend(x.encode() for x in strings)
    p.sample_type.add(type=1, unit=2)
    p.period_type.type, p.period_type.unit, p.period = 1, 2, 10_000_000
    p.time_nanos = 1_700_000_000 * 10**9
    for fid, name in ((1, 3), (2, 4), (3, 5)):
        p.function.add(id=fid, name=name)
        p.location.add(id=fid).line.add(function_id=fid)
    hot = p.sample.add(location_id=[2, 1], value=[30])
    hot.label.add(key=6, str=7)
    hot.label.add(key=9, str=11)
    cold = p.sample.add(location_id=[3, 1], value=[20])
    cold.label.add(key=6, str=8)
    cold.label.add(key=10, str=12)  # profile_id: Pyroscope's older name for span_id
    plain = p.sample.add(location_id=[1], value=[5])
    plain.label.add(key=9, str=11)
    labels = [t.LabelPair(name="__name__", value="process_cpu"), t.LabelPair(name="service_name", value="split")]
    req = push_pb2.PushRequest(
        series=[
            push_pb2.RawProfileSeries(labels=labels, samples=[push_pb2.RawSample(raw_profile=p.SerializeToString())])
        ]
    )
    r = httpx.post(
        f"{server.url}/push.v1.PusherService/Push",
        content=req.SerializeToString(),
        headers={"Content-Type": "application/proto"},
    )
    assert r.status_code == 200, r.text
    assert httpx.get(f"{server.url}/api/v1/labels/phase/values", params={"query": '{service_name="split"}'}).json() == [
        "cold",
        "hot",
    ]
    assert {k: v for k, v in _top(server.url, CPU + '{service_name="split",phase="hot"}').items() if v} == {
        "hot_path": 30
    }
    assert {k: v for k, v in _top(server.url, CPU + '{service_name="split"}').items() if v} == {
        "hot_path": 30,
        "cold_path": 20,
        "main": 5,
    }

    def span_total(*spans: str) -> int:
        body = q.SelectMergeSpanProfileRequest(profile_typeID=CPU, label_selector='{service_name="split"}', span_selector=list(spans),
                                               start=1_699_999_999_000, end=1_700_000_001_000)  # fmt: skip
        r = httpx.post(f"{server.url}/querier.v1.QuerierService/SelectMergeSpanProfile", content=body.SerializeToString(),
                       headers={"Content-Type": "application/proto"})  # fmt: skip
        assert r.status_code == 200, r.text
        return q.SelectMergeSpanProfileResponse.FromString(r.content).flamegraph.total

    assert span_total("00000000000000aa") == 35
    assert span_total("00000000000000bb") == 20
    assert span_total("00000000000000aa", "00000000000000bb") == 55
    assert span_total("00000000000000cc") == 0
