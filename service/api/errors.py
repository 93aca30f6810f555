"""The one place where exceptions become HTTP statuses.

Every answer to bad input is a 4xx with ``{"error": "<what is wrong>"}``; 5xx is reserved for
the server's own trouble (503 when storage or a time limit stops a request).
"""

from __future__ import annotations

import logging

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

__all__ = ["CONNECT_STATUS", "connect_code", "install", "status_of"]

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
        problems = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
            problems.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        return JSONResponse({"error": "invalid parameter " + "; ".join(problems)}, status_code=400)

    app.add_exception_handler(ProfstoreError, handle)
    app.add_exception_handler(RequestValidationError, invalid)
