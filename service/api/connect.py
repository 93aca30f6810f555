"""Connect unary RPC over FastAPI: the protocol Grafana's Pyroscope data source and Pyroscope's
clients speak (https://connectrpc.com/docs/protocol).

A unary call is a ``POST /<package>.<Service>/<Method>`` whose body is the request message, as
``application/proto`` (binary) or ``application/json`` (protobuf's JSON mapping), optionally
gzip-compressed (``Content-Encoding``). The answer is the response message in the same codec
with exactly that ``Content-Type`` (connect-go rejects parameters such as ``; charset``), or an
error: a non-200 status and ``{"code", "message"}`` as JSON. Our errors map onto Connect codes
in ``service/api/errors.py``, with the REST statuses; nothing else knows the protocol.

Written on FastAPI rather than mounted from a Connect runtime so that the request size caps,
the gzip-bomb guard and the error wording are the ones every other endpoint uses; the tests
call it with the ``connectrpc`` runtime as an independent client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from service.api.body import read_body
from service.api.errors import CONNECT_STATUS, connect_code
from service.errors import InvalidRequest, ProfstoreError
from service.pprof.decode import decompress
from service.types import DecodeLimits

__all__ = ["PROTO", "Method", "service_router"]

log = logging.getLogger(__name__)

PROTO = "application/proto"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Method:
    """One unary method: its request message type and the handler (run in a worker thread, as it reads the store)."""

    request: type[Message]
    handler: Callable[[Request, Any], Message]


def error(code: str, message: str) -> Response:
    return Response(json.dumps({"code": code, "message": message}), status_code=CONNECT_STATUS[code], media_type=JSON)


def _codec(content_type: str) -> str | None:
    base = content_type.split(";", 1)[0].strip().lower()
    return {PROTO: PROTO, JSON: JSON}.get(base)


def _decode(body: bytes, encoding: str, codec: str, message: type[Message], limits: DecodeLimits) -> Message:
    if encoding == "gzip":
        if body[:2] != b"\x1f\x8b":
            raise InvalidRequest("Content-Encoding is gzip but the body is not gzip")
        body = decompress(body, limits)
    msg = message()
    try:
        if codec == PROTO:
            msg.ParseFromString(body)
        elif body.strip():
            json_format.Parse(body, msg, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
        kind = "protobuf" if codec == PROTO else "JSON"
        raise InvalidRequest(f"request body is not a valid {kind} {message.DESCRIPTOR.full_name}: {exc}") from exc
    return msg


def _encode(out: Message, codec: str) -> bytes:
    if codec == PROTO:
        return out.SerializeToString()
    return json_format.MessageToJson(out, indent=None).encode()


def service_router(service: str, methods: dict[str, Method], limits: Callable[[Request], DecodeLimits]) -> APIRouter:
    """``POST /<service>/<Method>`` for every method of ``methods``; any other method name is a
    Connect ``unimplemented`` (501), as a Connect server answers a method it does not have."""
    router = APIRouter()

    @router.post(f"/{service}/{{method}}", include_in_schema=False)
    async def call(request: Request, method: str) -> Response:
        m = methods.get(method)
        if m is None:
            return error("unimplemented", f"{service}/{method} is not implemented")
        codec = _codec(request.headers.get("content-type", ""))
        if codec is None:
            return Response(
                b'{"code":"unimplemented","message":"content type must be application/proto or application/json"}',
                status_code=415,
                media_type=JSON,
                headers={"Accept-Post": f"{PROTO}, {JSON}"},
            )
        version = request.headers.get("connect-protocol-version")
        if version is not None and version != "1":
            return error("invalid_argument", f"unsupported Connect-Protocol-Version {version!r}; this server speaks 1")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return error("unimplemented", f"unsupported Content-Encoding {encoding!r}; use gzip or identity")
        try:
            lim = limits(request)
            body = await read_body(request, lim.max_compressed_bytes)
            msg = _decode(body, encoding, codec, m.request, lim)
            # Encoding a large flame graph (JSON above all) takes long: off the event loop, with the handler.
            body = await run_in_threadpool(lambda: _encode(m.handler(request, msg), codec))
            return Response(body, media_type=codec)
        except ProfstoreError as exc:
            code = connect_code(exc)
            if CONNECT_STATUS[code] >= 500 and code != "unimplemented":
                log.error("%s/%s: %s", service, method, exc)
            return error(code, str(exc))

    return router
