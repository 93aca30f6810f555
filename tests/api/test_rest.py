"""The REST API's contract: answers, idempotency and a clear 4xx for every bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

from fastapi.testclient import TestClient

from tests.pprof.test_decode import minimal

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"


def post(client: TestClient, data: bytes, labels: str = '{service_name="api"}', **params: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/ingest", params={"labels": labels, **params}, content=data)


def test_ingest_answers_series_samples_and_ids(client: TestClient) -> None:
    r = post(client, gzip.compress(minimal().SerializeToString()), ts="1700000000")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["series"] == ["process_cpu:samples:count:cpu:nanoseconds", CPU]
    assert body["samples"] == 2  # two merged samples; cpu/nanoseconds is samples/count x period, stored once
    assert body["ts"] == 1_700_000_000 * 10**9
    assert len(body["profile_ids"]) == 2 and not body["duplicate"]


def test_same_bytes_twice_are_stored_once(client: TestClient) -> None:
    data = gzip.compress(minimal().SerializeToString())
    first = post(client, data, ts="1700000000").json()
    second = post(client, data, ts="1700000000").json()
    assert second["duplicate"] and second["profile_ids"] == first["profile_ids"]
    listed = client.get("/api/v1/profiles", params={"query": CPU + "{}", "from": "0"}).json()["profiles"]
    assert len(listed) == 1
    assert listed[0]["total"] == 70_000_000 and listed[0]["labels"] == {"service_name": "api"}
    # A different time is a different profile.
    post(client, data, ts="1700000015")
    assert len(client.get("/api/v1/profiles", params={"query": CPU + "{}", "from": "0"}).json()["profiles"]) == 2


def test_ts_defaults_to_time_nanos(client: TestClient) -> None:
    p = minimal()
    p.time_nanos = 1_690_000_000_123_456_789
    assert post(client, p.SerializeToString()).json()["ts"] == 1_690_000_000_123_456_789


def test_catalogue_endpoints(client: TestClient) -> None:
    post(client, minimal().SerializeToString(), labels='{service_name="a",env="prod"}', ts="1700000000")
    post(client, minimal().SerializeToString(), labels='{service_name="b"}', ts="1700000000")
    types = client.get("/api/v1/profile-types").json()
    assert [t["id"] for t in types] == [CPU, "process_cpu:samples:count:cpu:nanoseconds"]
    assert types[0] == {
        "id": CPU,
        "name": "process_cpu",
        "sample_type": "cpu",
        "sample_unit": "nanoseconds",
        "period_type": "cpu",
        "period_unit": "nanoseconds",
    }
    assert client.get("/api/v1/labels").json() == ["env", "service_name"]
    assert client.get("/api/v1/labels/service_name/values").json() == ["a", "b"]
    assert client.get("/api/v1/labels/service_name/values", params={"query": '{env="prod"}'}).json() == ["a"]
    assert client.get("/api/v1/labels/service_name/values", params={"from": "now-1h"}).json() == []
    assert client.get("/healthz").json()["status"] == "ok"


def test_export_merges_across_matching_series_only(client: TestClient, tmp_path: Path) -> None:
    from tests.pprof_tool import totals

    post(client, minimal().SerializeToString(), labels='{service_name="a"}', ts="1700000000")
    post(client, minimal().SerializeToString(), labels='{service_name="a"}', ts="1700000010")
    post(client, minimal().SerializeToString(), labels='{service_name="b"}', ts="1700000000")
    out = tmp_path / "a.pb.gz"
    out.write_bytes(client.get("/api/v1/export", params={"query": CPU + '{service_name="a"}', "from": "0"}).content)
    assert totals(out) == {"samples/count": 14, "cpu/nanoseconds": 140_000_000}
    out.write_bytes(client.get("/api/v1/export", params={"query": CPU + '{service_name=~"a|b"}', "from": "0"}).content)
    assert totals(out) == {"samples/count": 21, "cpu/nanoseconds": 210_000_000}
    out.write_bytes(
        client.get("/api/v1/export", params={"query": CPU + "{}", "from": "1700000005", "until": "1700000020"}).content
    )
    assert totals(out) == {"samples/count": 7, "cpu/nanoseconds": 70_000_000}


def test_bad_inputs_get_a_clear_400(client: TestClient) -> None:
    post(client, minimal().SerializeToString(), ts="1700000000")
    cases = [
        (post(client, b"<html>nope</html>"), "looks like HTML"),
        (post(client, b"\x1f\x8b\x08\x00garbage"), "decompressing profile:"),
        (post(client, minimal().SerializeToString(), labels='{service_name=~"x"}'), "series labels take only ="),
        (
            post(client, minimal().SerializeToString(), labels="{service_name=}"),
            "at position 14: expected a quoted label value",
        ),
        (post(client, minimal().SerializeToString(), ts="yesterday"), "invalid ts 'yesterday'"),
        (client.get("/api/v1/export", params={"query": "cpux{}"}), 'unknown profile type "cpux"; did you mean "cpu"'),
        (
            client.get("/api/v1/export", params={"query": "memory:inuse_spac:bytes:space:bytes{}"}),
            'unknown profile type "memory:inuse_spac:bytes:space:bytes"; did you mean '
            f'"memory:inuse_space:bytes:space:bytes"? stored: {CPU}, process_cpu:samples:count:cpu:nanoseconds',
        ),
        (
            client.get("/api/v1/export", params={"query": CPU + '{service_name="x"'}),
            "expected ',' or '}', got end of input",
        ),
        (client.get("/api/v1/export", params={"query": CPU + '{a=~"("}'}), "invalid regex '('"),
        (
            client.get("/api/v1/export", params={"query": CPU + "{}", "from": "now", "until": "now-1h"}),
            "the range is reversed",
        ),
        (client.get("/api/v1/export", params={"query": CPU + "{}", "from": "2026-01-01T00:00:00"}), "need a zone"),
    ]
    for r, message in cases:
        assert r.status_code == 400, (message, r.text)
        assert message in r.json()["error"], (message, r.json())


def test_contention_profiles_need_a_name(client: TestClient, corpus: Path) -> None:
    data = (corpus / "go119__mutex.pb.gz").read_bytes()
    r = post(client, data)
    assert r.status_code == 400
    assert r.json()["error"] == (
        "name is required: a contentions/delay profile can be Go's mutex or block profile; pass name=mutex or name=block"
    )
    assert post(client, data, name="mutex").json()["series"][1] == "mutex:delay:nanoseconds:contentions:count"


def test_oversize_body_is_413(client: TestClient) -> None:
    r = post(client, b"\x00" * (9 << 20))
    assert r.status_code == 413
    assert "exceeds the limit of 8388608 bytes" in r.json()["error"]


def test_export_of_a_selector_matching_nothing_is_404(client: TestClient) -> None:
    post(client, minimal().SerializeToString(), ts="1700000000")
    r = client.get("/api/v1/export", params={"query": CPU + '{service_name="nobody"}', "from": "0"})
    assert r.status_code == 404
    assert (
        r.json()["error"]
        == f'no series of {CPU} match {{service_name="nobody"}}; service_name="nobody" matches no series (service_name has: api)'
    )


def test_concurrent_ingests_each_get_their_own_answer(server) -> None:  # type: ignore[no-untyped-def]
    """Good and bad profiles arriving together share writer batches; each gets its own verdict."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    bad = minimal()
    bad.sample[0].value.append(1)
    bodies = []
    for i in range(24):
        p = minimal()
        p.time_nanos = 1_700_000_000_000_000_000 + i
        bodies.append((i, bad.SerializeToString() if i % 3 == 0 else p.SerializeToString()))

    def send(item: tuple[int, bytes]) -> tuple[int, httpx.Response]:
        i, body = item
        return i, httpx.post(
            f"{server.url}/api/v1/ingest", params={"labels": '{service_name="concurrent"}'}, content=body, timeout=30
        )

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, bodies))
    for i, r in answers:
        if i % 3 == 0:
            assert r.status_code == 400
            assert r.json()["error"] == "malformed profile: mismatch: sample has 3 values vs. 2 types"
        else:
            assert r.status_code == 200, r.text
    listed = httpx.get(
        f"{server.url}/api/v1/profiles", params={"query": CPU + '{service_name="concurrent"}', "from": "0"}
    ).json()["profiles"]
    assert len(listed) == 16


def test_the_same_profile_sent_many_times_at_once(server) -> None:  # type: ignore[no-untyped-def]
    """Copies in one writer batch share the first one's fate: stored once, or refused alike."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    good = minimal()
    good.time_nanos = 1_650_000_000_000_000_000
    bad = minimal()
    bad.sample[1].value.append(9)

    def send(body: bytes) -> httpx.Response:
        return httpx.post(
            f"{server.url}/api/v1/ingest", params={"labels": '{service_name="copies"}'}, content=body, timeout=30
        )

    with ThreadPoolExecutor(8) as pool:
        goods = list(pool.map(send, [good.SerializeToString()] * 8))
        bads = list(pool.map(send, [bad.SerializeToString()] * 8))
    assert [r.status_code for r in goods] == [200] * 8
    assert sorted(r.json()["duplicate"] for r in goods) == [False] + [True] * 7
    assert len({tuple(r.json()["profile_ids"]) for r in goods}) == 1
    assert [r.status_code for r in bads] == [400] * 8
    assert {r.json()["error"] for r in bads} == {"malformed profile: mismatch: sample has 3 values vs. 2 types"}


def test_metrics_say_where_an_ingest_spent_its_time(client: TestClient) -> None:
    """Each stage a pushed profile passes through adds its seconds to /metrics (bench-push reads them)."""

    def stages() -> dict[str, float]:
        text = client.get("/metrics").text
        return {
            line.split('stage="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("profstore_ingest_stage_seconds_total{")
        }

    before = stages()
    for i in range(3):
        assert post(client, gzip.compress(minimal().SerializeToString()), ts=str(1_700_000_000 + i)).status_code == 200
    client.app.state.db.writer.settle(30)  # type: ignore[attr-defined]  # the commits follow the acknowledgements
    after = stages()
    for stage in ("body", "decode", "digest", "stage", "record", "journal", "wait", "assemble", "append", "commit"):
        assert after.get(stage, 0.0) > before.get(stage, 0.0), (stage, before, after)
