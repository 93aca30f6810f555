"""At most ``max_concurrent_queries`` queries run at once; the others wait their turn in the event
loop, and identical queries waiting together are answered by one run.

Queries are CPU work in Python threads (building trees, merging stacks) between calls into
DuckDB, and every thread shares one GIL with the collector's storing threads and the writer.
Twenty dashboards querying at once took the GIL from ingestion: scrapes stored late, CPU scrapes
overlapped their next run and were skipped (bench/collector.py with 20 query clients dropped 9 %
of them). Running a few queries at a time costs the same CPU per query, keeps the machine's
throughput, and leaves the writer its share. Ingest, push, health and metrics are never queued.

The queue makes the answer of a busy node a matter of how many queries wait, so the queue is
also where repeats are dropped: dashboards send the same panels' queries from every viewer and
on every refresh (the same text, ``now-1h`` included). A request identical to one still waiting
for its slot (method, path, query string, body and headers; so the same tenant, token and
encoding) shares that request's answer instead of queueing a run of its own. Only requests
that have not started are joined, so every answer still comes from a read that began after its
request arrived: an acknowledged push is in any answer asked for after it, as without sharing.
Followers of a run that fails without an answer (its client went away, an exception) run their
own. Answers are JSON or protobuf built in memory, so holding one to send it several times costs
no more than sending it once.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

__all__ = ["QueryLimit", "is_query"]

# A body is read before the query queues only while it is small and quick, as Grafana's are;
# anything else queues unshared and is read by its route under the route's own limits.
SHARE_MAX_BODY = 1 << 20
SHARE_BODY_WAIT_S = 1.0
# Headers that say nothing about the answer (how the client connects, who it says it is).
_UNKEYED = frozenset({b"connection", b"keep-alive", b"user-agent", b"content-length", b"traceparent", b"tracestate"})


def is_query(method: str, path: str) -> bool:
    """Reads of stored data: the REST API's GETs and the Connect querier (Grafana's calls)."""
    return (method == "GET" and path.startswith("/api/v1/")) or path.startswith("/querier.v1.")


@dataclass
class _Run:
    """One queued query and the identical requests that wait for its answer."""

    answer: asyncio.Future[list[Message] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class QueryLimit:
    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self._slots = asyncio.Semaphore(limit)
        self._queued: dict[tuple[object, ...], _Run] = {}
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_query(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        body, receive = await _read_small_body(receive)
        if body is None:  # large or slow: queued alone
            await self._run(scope, receive, send)
            return
        key = _key(scope, body)
        run = self._queued.get(key)
        if run is not None:
            answer = await asyncio.shield(run.answer)
            if answer is not None:
                self._count("shared")
                for message in answer:
                    await send(message)
                return
            await self._run(scope, receive, send)  # that run ended without an answer: our own
            return
        run = self._queued[key] = _Run()
        sent: list[Message] = []

        async def keep(message: Message) -> None:
            sent.append(message)

        try:
            async with self._slots:
                del self._queued[key]  # from here on this run reads: later requests queue their own
                self._count("ran")
                await self.app(scope, receive, keep)
            run.answer.set_result(sent or None)
        finally:
            if self._queued.get(key) is run:  # cancelled while it waited for its slot
                del self._queued[key]
            if not run.answer.done():
                run.answer.set_result(None)
        for message in sent:
            await send(message)

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._slots:
            self._count("ran")
            await self.app(scope, receive, send)

    def _count(self, answer: str) -> None:
        if self._metrics is not None:
            self._metrics.queries.labels(answer=answer).inc()


def _key(scope: Scope, body: bytes) -> tuple[object, ...]:
    headers = tuple(sorted((k.lower(), v) for k, v in scope["headers"] if k.lower() not in _UNKEYED))
    return (scope["method"], scope["path"], scope.get("query_string", b""), body, headers)


async def _read_small_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """The whole body when it is small and arrives at once, and a ``receive`` that replays what
    was read before the rest of the connection's messages."""
    read: list[Message] = []
    size = 0
    complete = False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SHARE_BODY_WAIT_S):
            while size <= SHARE_MAX_BODY:
                message = await receive()
                read.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    complete = True
                    break
    replay = list(read)

    async def replaying() -> Message:
        return replay.pop(0) if replay else await receive()

    if not complete:
        return None, replaying
    return b"".join(m.get("body", b"") for m in read), replaying
