"""The protocol `profstore serve` runs: httptools with a bound on request heads, over uvloop.

A real uvicorn server on loopback, spoken to over raw sockets: what a hostile or unusual client
sends is exactly what the parser sees.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from service.api.http11 import MAX_HEAD_BYTES, BoundedHttpToolsProtocol
from tests.conftest import Server, free_port


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with the size of the body it read and of its longest header value."""
    assert scope["type"] == "http"
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    longest = max((len(v) for _, v in scope["headers"]), default=0)
    body = f"{size} {longest}".encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        echo, host="127.0.0.1", port=port, http=BoundedHttpToolsProtocol, loop="uvloop", lifespan="off",
        log_level="error",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


def exchange(port: int, *parts: bytes, pause: float = 0.0) -> bytes:
    """Send ``parts`` (each its own write, ``pause`` apart), then read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            for part in parts:
                s.sendall(part)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-request: the answer was sent before the close
        s.settimeout(1.0)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def request(header_value: bytes = b"v", body: bytes = b"", close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return (
        b"POST /x HTTP/1.1\r\nHost: t\r\nX-Long: " + header_value + b"\r\n" + connection
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def test_a_request_with_a_large_body_and_long_headers_is_served(port: int) -> None:
    # The body does not count towards the head, even when it arrives in the same read.
    body = b"b" * 5_000_000
    out = exchange(port, request(b"h" * (MAX_HEAD_BYTES // 2), body))
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(f"{len(body)} {MAX_HEAD_BYTES // 2}".encode()), out[:200]


def test_a_head_that_does_not_end_is_refused_with_431(port: int) -> None:
    head = b"POST /x HTTP/1.1\r\nHost: t\r\nX-Long: "
    chunks = [head] + [b"h" * 16384] * (4 * MAX_HEAD_BYTES // 16384)
    out = exchange(port, *chunks, pause=0.01)
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    assert f"exceed {MAX_HEAD_BYTES} bytes".encode() in out


def test_a_long_url_trickled_in_is_refused_too(port: int) -> None:
    chunks = [b"GET /x?q="] + [b"a" * 8192] * (2 * MAX_HEAD_BYTES // 8192) + [b" HTTP/1.1\r\nHost: t\r\n\r\n"]
    assert exchange(port, *chunks, pause=0.005).startswith(b"HTTP/1.1 431 ")


def test_the_bound_is_per_request_on_a_kept_alive_connection(port: int) -> None:
    # Ten requests of 3/4 of the bound each, on one connection: together far past it, each within it.
    value = b"h" * (3 * MAX_HEAD_BYTES // 4)
    parts = [request(value, b"x", close=False) for _ in range(9)] + [request(value, b"x")]
    out = exchange(port, *parts, pause=0.01)
    assert out.count(b"HTTP/1.1 200") == 10 and b"431" not in out, out[:300]


def test_pipelined_requests_do_not_count_towards_the_next_head(port: int) -> None:
    # 1,200 small requests in one write (past the bound together), then one whose head ends a moment later:
    # the server may read them all and the start of the last head at once.
    many = b"".join(request(b"v", b"x", close=False) for _ in range(1200))
    assert len(many) > MAX_HEAD_BYTES
    last = request(b"v", b"x")
    out = exchange(port, many + last[:20], last[20:], pause=0.05)
    assert out.count(b"HTTP/1.1 200") == 1201 and b"431" not in out, out[-300:]


def test_malformed_requests_are_still_uvicorns_400(port: int) -> None:
    assert exchange(port, b"NOT HTTP\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_profstore_serve_runs_the_bounded_protocol(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    head = b"POST /api/v1/ingest HTTP/1.1\r\nHost: t\r\nX-Long: "
    assert exchange(port, head, *[b"h" * 16384] * (4 * MAX_HEAD_BYTES // 16384), pause=0.01).startswith(
        b"HTTP/1.1 431 "
    )
    ok = (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Long: "
        + b"h" * (MAX_HEAD_BYTES // 2)
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert exchange(port, ok).startswith(b"HTTP/1.1 200 ")
