"""A small HTTP/1.1 GET client for pprof endpoints: one per target, keep-alive, asyncio streams.

The collector sends a thousand-target fleet ~70 GETs a second from the event loop. httpx costs
about a millisecond of event-loop CPU per request there (httpcore's pool and shields, anyio
streams, h11 events, a failed ``import sniffio`` per lock), more than decoding the profile: its
generality (proxies, HTTP/2, redirects, cookies, auth) is all unused here. A scrape is one GET of
a known URL with no body, whose answer is read whole (bounded) and then parsed: that needs a
status line, headers, ``Content-Length`` or chunked framing, and a connection kept open for the
next scrape of the same target (Go's ``net/http`` keeps idle connections open indefinitely).

Failures surface as the exceptions the caller classifies: :class:`socket.gaierror` (DNS),
:class:`ConnectionRefusedError`, other :class:`OSError` (connect/reset), :class:`ProtocolError`
(not HTTP), :class:`BodyTooLarge`; timeouts are the caller's ``asyncio.timeout``. Proxies from
the environment are not used: a fleet is scraped directly, as Prometheus does by default.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

__all__ = ["BodyTooLarge", "HostClient", "ProtocolError", "Response"]

_MAX_HEAD = 64 << 10  # status line + headers; a pprof endpoint sends a few hundred bytes
_MAX_IDLE = 4  # idle connections kept per target (a CPU scrape holds one for its window)


class ProtocolError(Exception):
    """The answer is not HTTP/1.x as expected (a truncated or garbled response)."""


class BodyTooLarge(Exception):
    """The body is larger than the caller's limit (nothing more is read)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes  # whole body (status 200), else at most the first 200 bytes


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class HostClient:
    """GETs to one ``scheme://host:port``, over connections kept open between requests."""

    def __init__(self, scheme: str, netloc: str, *, tls: ssl.SSLContext | None, user_agent: str) -> None:
        parts = urlsplit(f"{scheme}://{netloc}")
        if parts.hostname is None:
            raise ValueError(f"no host in {netloc!r}")
        self._host = parts.hostname
        self._port = parts.port or (443 if scheme == "https" else 80)
        self._tls = tls if scheme == "https" else None
        self._head = f"Host: {netloc}\r\nUser-Agent: {user_agent}\r\nAccept-Encoding: identity\r\n\r\n".encode(
            "latin-1"
        )
        self._idle: list[_Conn] = []
        self._closed = False

    async def get(self, url: str, params: dict[str, str], max_bytes: int) -> Response:
        """GET ``url`` (of this host) with ``params``; the body of a 200 is read whole, up to ``max_bytes``.

        A kept-alive connection the target closed meanwhile fails before any byte of the answer
        arrives: that request is sent once more on a new connection (it had not reached the target).
        """
        parts = urlsplit(url)
        target = (parts.path or "/") + ("?" + urlencode(params) if params else "")
        request = f"GET {target} HTTP/1.1\r\n".encode("latin-1") + self._head
        while self._idle:
            conn = self._idle.pop()
            try:
                return await self._exchange(conn, request, max_bytes)
            except _Stale:
                conn.close()
        conn = await self._connect()
        try:
            return await self._exchange(conn, request, max_bytes)
        except _Stale as exc:
            raise ProtocolError("the target closed the connection without answering") from exc

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    async def _connect(self) -> _Conn:
        reader, writer = await asyncio.open_connection(
            self._host, self._port, ssl=self._tls, server_hostname=self._host if self._tls else None,
            limit=_MAX_HEAD,
        )  # fmt: skip
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: bytes, max_bytes: int) -> Response:
        """One request/response on ``conn``; the connection goes back to the idle list if reusable."""
        done = False
        try:
            conn.writer.write(request)
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale from None
                raise ProtocolError("connection closed in the middle of the response headers") from None
            except ConnectionResetError:
                raise _Stale from None
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"response headers longer than {_MAX_HEAD} bytes") from None
            version, status, headers = _parse_head(head)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            limit = max_bytes if status == 200 else 200
            body, whole = await _read_body(conn.reader, headers, limit, status == 200)
            done = keep and whole
            return Response(status, headers, body)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed before the end of the body") from None
        finally:
            if done and not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append(conn)
            else:
                conn.close()


class _Stale(Exception):
    """A reused connection that the peer had closed: nothing was answered."""


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    return version, int(code), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], limit: int, strict: bool
) -> tuple[bytes, bool]:
    """The body, at most ``limit`` bytes: (bytes, whether the body was read to its end).

    ``strict``: a longer body raises :class:`BodyTooLarge`; otherwise it is cut (an error page's head).
    """
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"malformed chunk size {line[:40]!r}") from None
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks), True
            if size + n > limit:
                if strict:
                    raise BodyTooLarge
                chunks.append(await reader.readexactly(limit - size))
                return b"".join(chunks), False
            chunks.append(await reader.readexactly(n))
            size += n
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(f"malformed Content-Length {length[:40]!r}")
        n = int(length)
        if n > limit:
            if strict:
                raise BodyTooLarge
            return await reader.readexactly(limit), False
        return await reader.readexactly(n), True
    # Neither: the body ends when the target closes the connection.
    body = await reader.read(limit + 1)
    while len(body) <= limit:
        more = await reader.read(limit + 1 - len(body))
        if not more:
            return body, False
        body += more
    if strict:
        raise BodyTooLarge
    return body[:limit], False
