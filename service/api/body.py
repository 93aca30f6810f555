"""Request bodies read under a size cap: a declared length over it is refused before reading, and a
body that streams past it is refused as soon as it does (a client cannot make us buffer more)."""

from __future__ import annotations

from fastapi import Request

from service.errors import ProfileTooLarge

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProfileTooLarge(f"request body of {declared} bytes", limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProfileTooLarge("request body", limit)
        chunks.append(chunk)
    return b"".join(chunks)
