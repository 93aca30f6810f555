"""The one place where exceptions become HTTP statuses.

Every answer to bad input is a 4xx with ``{"error": "<what is wrong>"}``; 5xx is reserved for
the server's own trouble (503 when storage or a time limit stops a request).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.errors import (
    IncompatibleProfiles,
    InvalidRequest,
    NotFound,
    ProfileError,
    ProfileTooLarge,
    ProfstoreError,
    QueryTimeout,
    RequestTimeout,
    StoreError,
    Unimplemented,
)

__all__ = ["CONNECT_STATUS", "connect_code", "install", "status_of", "validation_problem"]

log = logging.getLogger(__name__)


# Connect's error codes and the HTTP status each travels with (connectrpc.com/docs/protocol).
CONNECT_STATUS = {
    "canceled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


def connect_code(exc: ProfstoreError) -> str:
    """The Connect code of one of our errors, for the Connect endpoints (Grafana's and Pyroscope's)."""
    if isinstance(exc, Unimplemented):
        return "unimplemented"
    if isinstance(exc, RequestTimeout):
        return "deadline_exceeded"
    if isinstance(exc, ProfileTooLarge):
        return "resource_exhausted"
    if isinstance(exc, NotFound):
        return "not_found"
    if isinstance(exc, ProfileError | InvalidRequest | IncompatibleProfiles):
        return "invalid_argument"
    if isinstance(exc, QueryTimeout):
        return "deadline_exceeded"
    if isinstance(exc, StoreError):
        return "unavailable"
    return "internal"


def status_of(exc: ProfstoreError) -> int:
    if isinstance(exc, Unimplemented):
        return 501
    if isinstance(exc, RequestTimeout):
        return 408
    if isinstance(exc, ProfileTooLarge):
        return 413
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ProfileError | InvalidRequest | IncompatibleProfiles):
        return 400
    if isinstance(exc, QueryTimeout | StoreError):
        return 503
    return 500


# What a parameter that failed pydantic's check of this kind should be, by pydantic's error type.
_WANTED = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "int_type": "an integer",
    "json_invalid": "valid JSON",
}
# Bounds, by pydantic's error type: the context key holding the bound and how to say it.
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
    "string_too_long": ("max_length", "at most {} characters"),
    "string_too_short": ("min_length", "at least {} characters"),
}


def validation_problem(err: Mapping[str, Any]) -> str:
    """One of FastAPI's validation errors as a sentence that names the parameter the user sent.

    ``loc`` is (where, name, …): ``("query", "base_from")`` reads ``base_from is required``, where
    pydantic's own words were ``Field required`` and named no one.
    """
    loc = [str(x) for x in err.get("loc", ())]
    where, path = (loc[0], loc[1:]) if loc else ("request", [])
    name = ".".join(path) or ("the body" if where == "body" else where)
    kind, ctx = err.get("type", ""), err.get("ctx") or {}
    if kind == "missing":
        return f"{name} is required"
    got = err.get("input")
    shown = f" {got!r}" if isinstance(got, str | int | float) and len(str(got)) <= 200 else ""
    if kind in ("literal_error", "enum"):
        return f"invalid {name}{shown}: want {ctx.get('expected', 'one of the documented values')}"
    if kind in _WANTED:
        return f"invalid {name}{shown}: want {_WANTED[kind]}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        return f"invalid {name}{shown}: want " + (words.format(bound) if "{}" in words else f"{words} {bound}")
    msg = str(err.get("msg", "invalid value"))
    return f"invalid {name}{shown}: {msg[:1].lower()}{msg[1:]}"


def install(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProfstoreError)
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc)}, status_code=status)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI answers a parameter that fails its declared type or bounds with 422 and a
        # list of dicts; bad input here is a 400 with one sentence, like every other.
        assert isinstance(exc, RequestValidationError)
        problems = [validation_problem(err) for err in exc.errors()]
        return JSONResponse({"error": "; ".join(dict.fromkeys(problems))}, status_code=400)

    app.add_exception_handler(ProfstoreError, handle)
    app.add_exception_handler(RequestValidationError, invalid)
