"""Request bodies read under a size cap and a time limit: a declared length over the cap is refused
before reading, a body that streams past it as soon as it does (a client cannot make us buffer
more), and a body still arriving after ``request_body_timeout_s`` is a 408 (a slow-loris client
cannot hold a connection and its buffer for ever)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from service.errors import ProfileTooLarge, RequestTimeout

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProfileTooLarge(f"request body of {declared} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    timeout_s: float = request.app.state.settings.request_body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ProfileTooLarge("request body", limit)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"request body not received within {timeout_s:g} s ({size} bytes arrived)") from None
    return b"".join(chunks)
