"""Queries wait their turn beyond ``max_concurrent_queries``; ingestion and health never do."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from service.api.limits import QueryLimit, is_query
from tests.conftest import Server


def test_which_requests_are_queries() -> None:
    assert is_query("GET", "/api/v1/flamegraph") and is_query("POST", "/querier.v1.QuerierService/SelectSeries")
    assert not is_query("POST", "/api/v1/ingest") and not is_query("POST", "/push.v1.PusherService/Push")
    assert not is_query("GET", "/healthz") and not is_query("GET", "/metrics") and not is_query("POST", "/ingest")


def test_at_most_limit_queries_run_at_once() -> None:
    running = {"now": 0, "max": 0}

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.05)
        running["now"] -= 1

    async def main() -> tuple[int, int]:
        app = QueryLimit(inner, limit=2)

        async def call(method: str, path: str, query: bytes = b"") -> None:
            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": b"", "more_body": False}

            scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}
            await app(scope, receive, None)  # type: ignore[arg-type]

        await asyncio.gather(*(call("GET", "/api/v1/top", b"n=%d" % i) for i in range(8)))
        queries = running["max"]
        running["max"] = 0
        await asyncio.gather(*(call("POST", "/api/v1/ingest") for _ in range(8)))
        return queries, running["max"]

    queries, ingests = asyncio.run(main())
    assert queries == 2
    assert ingests == 8


class _Counting:
    """An app that answers each request with its query string and the number of its run, slowly."""

    def __init__(self, fail_first: bool = False) -> None:
        self.runs = 0
        self.fail_first = fail_first
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.runs += 1
        n = self.runs
        body = (await receive()).get("body", b"")
        await self.release.wait()
        if self.fail_first and n == 1:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%s run %d %s" % (scope["query_string"], n, body)})


def _request(
    app: QueryLimit,
    query: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
    method: str = "GET",
) -> asyncio.Task[bytes]:
    """One request through ``app`` as a server would make it; the task's result is the body sent."""
    path = "/api/v1/top" if method == "GET" else "/querier.v1.QuerierService/SelectSeries"
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers or []}
    received = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        if received:
            return received.pop(0)
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def run() -> bytes:
        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await app(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 200
        return b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]

    return asyncio.ensure_future(run())


def test_identical_waiting_queries_share_one_run() -> None:
    async def main() -> None:
        inner = _Counting()
        app = QueryLimit(inner, limit=1)
        busy = _request(app, b"other")  # holds the one slot
        await asyncio.sleep(0.01)
        same = [_request(app, b"q=a") for _ in range(5)]
        other = _request(app, b"q=b")
        tenant = _request(app, b"q=a", [(b"x-scope-orgid", b"t2")])
        await asyncio.sleep(0.01)
        inner.release.set()
        answers = await asyncio.gather(busy, *same, other, tenant)
        assert answers[1:6] == [b"q=a run 2 "] * 5  # one run answered all five
        assert answers[6] == b"q=b run 3 " and answers[7] == b"q=a run 4 "
        assert inner.runs == 4

    asyncio.run(main())


def test_a_query_arriving_after_its_twin_started_runs_again() -> None:
    """Sharing never hands out an answer whose read began before the request arrived."""

    async def main() -> None:
        inner = _Counting()
        app = QueryLimit(inner, limit=2)
        first = _request(app, b"q=a")
        await asyncio.sleep(0.01)  # running: it has its slot
        second = _request(app, b"q=a")
        await asyncio.sleep(0.01)
        inner.release.set()
        assert await asyncio.gather(first, second) == [b"q=a run 1 ", b"q=a run 2 "]

    asyncio.run(main())


def test_bodies_are_part_of_the_query() -> None:
    async def main() -> None:
        inner = _Counting()
        app = QueryLimit(inner, limit=1)
        busy = _request(app, b"busy")
        await asyncio.sleep(0.01)
        posts = [_request(app, b"", body=b, method="POST") for b in (b"x", b"x", b"y")]
        await asyncio.sleep(0.01)
        inner.release.set()
        await busy
        assert await asyncio.gather(*posts) == [b" run 2 x", b" run 2 x", b" run 3 y"]

    asyncio.run(main())


def test_followers_of_a_failed_or_abandoned_run_run_their_own() -> None:
    async def main() -> None:
        inner = _Counting(fail_first=True)
        app = QueryLimit(inner, limit=1)
        leader = _request(app, b"q=a")
        await asyncio.sleep(0.01)
        followers = [_request(app, b"q=a") for _ in range(2)]
        await asyncio.sleep(0.01)
        inner.release.set()
        with pytest.raises(RuntimeError, match="boom"):
            await leader
        assert await asyncio.gather(*followers) == [b"q=a run 2 ", b"q=a run 2 "]  # the next run is shared again

        inner.release.clear()
        busy = _request(app, b"busy")
        await asyncio.sleep(0.01)
        waiting = _request(app, b"q=c")
        await asyncio.sleep(0.01)
        follower = _request(app, b"q=c")
        await asyncio.sleep(0.01)
        waiting.cancel()  # its client went away before its turn
        inner.release.set()
        await busy
        assert await follower == b"q=c run 4 "

    asyncio.run(main())


def test_a_served_node_shares_answers_between_identical_dashboards(server: Server, corpus: Path) -> None:
    """Forty viewers of one panel at once, through ``profstore serve``: every answer is the answer
    one viewer alone gets, and the queue ran it fewer times than it was asked."""
    data = (corpus / "go119__cpu_10s.pb.gz").read_bytes()
    r = httpx.post(
        f"{server.url}/api/v1/ingest", params={"labels": '{service_name="shared"}'}, content=data, timeout=30
    )
    assert r.status_code == 200, r.text
    params = {"query": 'process_cpu{service_name="shared"}', "from": "0", "until": "now+1h"}
    alone = httpx.get(f"{server.url}/api/v1/flamegraph", params=params, timeout=30).json()
    before = _queries(server)
    start = threading.Barrier(40)

    def viewer(_: int) -> object:
        with httpx.Client(timeout=60) as c:
            start.wait()
            return c.get(f"{server.url}/api/v1/flamegraph", params=params).json()

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(viewer, range(40)))
    assert all(a == alone for a in answers)
    after = _queries(server)
    ran, shared = after["ran"] - before["ran"], after["shared"] - before["shared"]
    assert ran + shared == 40
    assert shared > 0


def _queries(server: Server) -> dict[str, float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    counts = {"ran": 0.0, "shared": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "profstore_queries_total":
                counts[sample.labels["answer"]] = sample.value
    return counts
