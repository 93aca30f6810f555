"""At most ``max_concurrent_queries`` queries run at once; the others wait their turn in the event loop.

Queries are CPU work in Python threads (building trees, merging stacks) between calls into
DuckDB, and every thread shares one GIL with the collector's storing threads and the writer.
Twenty dashboards querying at once took the GIL from ingestion: scrapes stored late, CPU scrapes
overlapped their next run and were skipped (bench/collector.py with 20 query clients dropped 9 %
of them). Running a few queries at a time costs the same CPU per query, keeps the machine's
throughput, and leaves the writer its share. Ingest, push, health and metrics are never queued.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["QueryLimit", "is_query"]


def is_query(method: str, path: str) -> bool:
    """Reads of stored data: the REST API's GETs and the Connect querier (Grafana's calls)."""
    return (method == "GET" and path.startswith("/api/v1/")) or path.startswith("/querier.v1.")


class QueryLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self._slots = asyncio.Semaphore(limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_query(scope["method"], scope["path"]):
            async with self._slots:
                await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)
