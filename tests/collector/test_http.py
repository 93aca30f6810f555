"""The collector's HTTP client against a raw asyncio server that answers with hand-written bytes.

Each case is a framing a Go target (or something in front of it) really sends: Content-Length,
chunked (Go's net/http for bodies past its 4 KiB buffer), close-delimited (HTTP/1.0), an error
page, and a kept-alive connection the target closed while idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from service.collector.http import BodyTooLarge, HostClient, ProtocolError, Response

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, HostClient, list[bytes]]:
    requests: list[bytes] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(b"(new connection)")
        try:
            while True:
                try:
                    requests.append(await reader.readuntil(b"\r\n\r\n"))
                except asyncio.IncompleteReadError:
                    return
                await handler(reader, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, HostClient("http", f"127.0.0.1:{port}", tls=None, user_agent="t"), requests


def _run(handler: Handler, *gets: tuple[dict[str, str], int]) -> tuple[list[Response | Exception], list[bytes]]:
    async def go() -> tuple[list[Response | Exception], list[bytes]]:
        server, client, requests = await _serve(handler)
        out: list[Response | Exception] = []
        async with server:
            for params, limit in gets:
                try:
                    # Only the path is sent: the client is bound to its host.
                    out.append(await client.get("http://127.0.0.1/debug/pprof/heap", params, limit))
                except Exception as exc:
                    out.append(exc)
            await client.aclose()
        return out, requests

    return asyncio.run(go())


def test_content_length_and_keep_alive_reuse_one_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nhello")

    got, requests = _run(handler, ({"seconds": "3"}, 100), ({}, 100))
    assert [(r.status, r.body, r.headers["content-encoding"]) for r in got if isinstance(r, Response)] == [
        (200, b"hello", "gzip"),
        (200, b"hello", "gzip"),
    ]
    assert requests[0] == b"(new connection)" and len(requests) == 3  # one connection for both
    assert requests[1].startswith(b"GET /debug/pprof/heap?seconds=3 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert requests[2].startswith(b"GET /debug/pprof/heap HTTP/1.1\r\n")


def test_chunked_body_with_trailer() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n"
        )

    got, _ = _run(handler, ({}, 100), ({}, 100))
    assert [r.body for r in got if isinstance(r, Response)] == [b"abcde", b"abcde"]


def test_close_delimited_http10_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\nwhole body")
        await writer.drain()
        writer.close()

    got, requests = _run(handler, ({}, 100), ({}, 100))
    assert [r.body for r in got if isinstance(r, Response)] == [b"whole body", b"whole body"]
    assert requests.count(b"(new connection)") == 2


@pytest.mark.parametrize("framing", [b"Content-Length: 11\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\nb\r\n"])
def test_a_body_over_the_limit_is_refused(framing: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing + b"0123456789A\r\n0\r\n\r\n")

    got, _ = _run(handler, ({}, 10))
    assert isinstance(got[0], BodyTooLarge)


def test_an_error_page_keeps_its_head_only() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = b"x" * 5000
        writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    got, _ = _run(handler, ({}, 1 << 20))
    assert isinstance(got[0], Response) and got[0].status == 404 and got[0].body == b"x" * 200


def test_an_idle_connection_closed_by_the_target_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers as kept alive, then closes: the next request finds the connection gone.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    got, requests = _run(handler, ({}, 100), ({}, 100), ({}, 100))
    assert [r.body for r in got if isinstance(r, Response)] == [b"ok", b"ok", b"ok"]
    assert requests.count(b"(new connection)") == 3


def test_garbage_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    got, _ = _run(handler, ({}, 100))
    assert isinstance(got[0], ProtocolError)
