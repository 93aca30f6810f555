"""Hostile input gets a bounded, clear answer: huge and many labels, deep stacks, lying sizes, slow bodies."""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.protocols.push.v1 import push_pb2
from service.protocols.querier.v1 import querier_pb2 as q
from tests.api.test_connect import CPU, _cpu_profile
from tests.backends import Backend
from tests.conftest import Server

T0 = 1_700_000_000_000


def _push(client: TestClient, labels: list[tuple[str, str]], raw: bytes) -> httpx.Response:
    req = push_pb2.PushRequest()
    series = req.series.add()
    for k, v in labels:
        series.labels.add(name=k, value=v)
    series.samples.add(raw_profile=raw)
    return client.post(
        "/push.v1.PusherService/Push", content=req.SerializeToString(), headers={"Content-Type": "application/proto"}
    )


def test_ten_thousand_labels_are_refused(client: TestClient) -> None:
    labels = [("service_name", "a")] + [(f"l{i}", "v") for i in range(10_000)]
    r = _push(client, labels, _cpu_profile([(["main"], 1)], T0))
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    assert "10001 labels; at most 30" in r.json()["message"]
    selector = "{" + ",".join(f'l{i}="v"' for i in range(2_000)) + "}"  # as many as a URL holds
    r = client.post("/api/v1/ingest", params={"labels": selector}, content=_cpu_profile([(["main"], 1)], T0))
    assert r.status_code == 400 and "at most 30" in r.json()["error"]
    assert client.get("/api/v1/profile-types").json() == []  # nothing half-written


def test_huge_label_values_are_refused(client: TestClient) -> None:
    r = _push(client, [("service_name", "x" * 1_000_000)], _cpu_profile([(["main"], 1)], T0))
    assert r.status_code == 400 and "1000000 characters; at most 2048" in r.json()["message"]
    r = client.get("/api/v1/top", params={"query": CPU + '{service_name="' + "x" * 30_000 + '"}', "from": "0"})
    assert r.status_code == 404 and len(r.text) < 1000  # nothing stored: a short 404, not a scan or an echo


def test_thousand_deep_stacks_answer_everywhere(client: TestClient) -> None:
    frames = [f"f{i}" for i in range(1000)]
    r = client.post(
        "/api/v1/ingest", params={"labels": '{service_name="deep"}'}, content=_cpu_profile([(frames, 5)], T0)
    )
    assert r.status_code == 200, r.text
    params = {"query": CPU + "{}", "from": str(T0 // 1000 - 60), "until": str(T0 // 1000 + 60)}
    top = client.get("/api/v1/top", params=params).json()
    assert {row["name"]: row["cum"] for row in top["rows"]}["f0"] == 5
    nested = client.get("/api/v1/flamegraph", params=params)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # Python's own JSON decoder recurses per level; the server does not
    try:
        body = json.loads(nested.content)
    finally:
        sys.setrecursionlimit(limit)
    assert nested.status_code == 200 and body["total"] == 5
    depth, node = 0, body["tree"]
    while node.get("children"):
        node, depth = node["children"][0], depth + 1
    assert depth == 1000 and node["name"] == "f999"
    assert client.get("/api/v1/flamegraph", params={**params, "format": "pyroscope"}).status_code == 200
    assert client.get("/api/v1/export", params=params).status_code == 200
    merge = q.SelectMergeStacktracesRequest(profile_typeID=CPU, label_selector="{}", start=T0 - 60_000, end=T0 + 60_000)
    r = client.post(
        "/querier.v1.QuerierService/SelectMergeStacktraces",
        content=merge.SerializeToString(),
        headers={"Content-Type": "application/proto"},
    )
    assert r.status_code == 200
    assert len(q.SelectMergeStacktracesResponse.FromString(r.content).flamegraph.levels) == 1001


@pytest.fixture(scope="module")
def slow_srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    with backend.serve(
        tmp_path_factory.mktemp("hostile"), "request_body_timeout_s: 2\nanalysis: {enabled: false}\n"
    ) as s:
        yield s


def _raw_request(srv: Server, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _response(sock: socket.socket) -> tuple[int, dict]:  # type: ignore[type-arg]
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def test_a_claimed_gigabyte_is_refused_before_reading(slow_srv: Server) -> None:
    sock = _raw_request(
        slow_srv,
        "POST /api/v1/ingest?labels=%7B%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n",
    )
    with sock:
        status, body = _response(sock)
    # 413, not the 408 a wait for the body would end in: refused on the header, before reading.
    assert status == 413 and "1073741824 bytes" in body["error"]


def test_a_slow_loris_body_gets_408_and_others_are_served_meanwhile(slow_srv: Server, corpus: Path) -> None:
    sock = _raw_request(
        slow_srv, "POST /api/v1/ingest?labels=%7B%7D HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    )
    with sock:
        for _ in range(3):  # a byte now and then: never idle, never done
            sock.sendall(b"\x1f")
            assert httpx.get(f"{slow_srv.url}/healthz", timeout=5).status_code == 200
            time.sleep(0.5)
        status, body = _response(sock)
    assert status == 408 and "not received within 2 s" in body["error"]
    data = (corpus / "go119__cpu_10s.pb.gz").read_bytes()
    r = httpx.post(f"{slow_srv.url}/api/v1/ingest", params={"labels": "{}"}, content=data, timeout=30)
    assert r.status_code == 200
