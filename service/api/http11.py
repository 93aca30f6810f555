"""The HTTP/1.1 protocol ``profstore serve`` speaks: uvicorn's httptools (llhttp, in C), with a bound on
the request head.

Why httptools and not uvicorn's default h11 (pure Python): pushing small profiles, parsing
requests and writing responses was a measured share of the server's CPU per profile
(``python -m bench.push``; the README's push figures). llhttp does it in C.

Why a subclass: h11 refuses a request head (request line and headers) that grows past 16 KiB
without ending, so a client cannot make the server buffer an endless header. httptools has no
such limit: it keeps a header's bytes until the header ends (a 50 MB header line was read whole).
:class:`BoundedHttpToolsProtocol` counts the bytes that arrive while a head is incomplete and
answers 431 past :data:`MAX_HEAD_BYTES`, closing the connection: a connection buffers at most
that much plus one read (256 KiB).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

# Larger than h11's 16 KiB: selectors of many labels fit (Pyroscope allows values of 2,048
# characters); small enough that thousands of hostile connections hold little memory.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head past :data:`MAX_HEAD_BYTES` with a 431."""

    _in_head = False  # between the start of a request and the end of its headers
    _heads = 0  # requests begun on this connection
    _head_bytes = 0  # bytes of reads that fell wholly inside the current head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._heads += 1
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # refused: the connection is closing, nothing more is parsed
            return
        heads = self._heads
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():  # done, or refused by uvicorn (a 400)
            return
        # A read in which the head began also holds what came before it (pipelined requests): it is not
        # counted, so a connection buffers at most the bound plus one read.
        if self._heads == heads:
            self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self.logger.warning("request head over %d bytes refused (431)", MAX_HEAD_BYTES)
            self._refuse_head()

    def _refuse_head(self) -> None:
        msg = f"request line and headers exceed {MAX_HEAD_BYTES} bytes"
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(msg)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + msg.encode("ascii"))
        self.transport.close()
        self._in_head = False
        self.parser = None  # type: ignore[assignment]  # frees what it buffered; connection_lost does the same
