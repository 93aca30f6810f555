"""Queries wait their turn beyond ``max_concurrent_queries``; ingestion and health never do."""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Scope, Send

from service.api.limits import QueryLimit, is_query


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

        async def call(method: str, path: str) -> None:
            await app({"type": "http", "method": method, "path": path}, None, None)  # type: ignore[arg-type]

        await asyncio.gather(*(call("GET", "/api/v1/top") for _ in range(8)))
        queries = running["max"]
        running["max"] = 0
        await asyncio.gather(*(call("POST", "/api/v1/ingest") for _ in range(8)))
        return queries, running["max"]

    queries, ingests = asyncio.run(main())
    assert queries == 2
    assert ingests == 8
