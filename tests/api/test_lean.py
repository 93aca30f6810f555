"""LeanRoute answers every request exactly as FastAPI's own route does for the same endpoint.

FastAPI is the reference: one endpoint is mounted twice in one app, once as a plain APIRoute and
once as a LeanRoute, and every query below (plain, missing, invalid, repeated, unknown, encoded)
must get the same status, headers and bytes from both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from service.api import errors, params
from service.api.lean import LeanRoute, json_response, lean_post
from service.app import create_app
from service.errors import InvalidRequest
from tests.backends import Backend


class Echo(BaseModel):
    text: str
    maybe: str | None
    required: str
    rate: int
    method: str


async def echo(
    request: Request,
    required: Annotated[str, Query(description="a required text")],
    text: Annotated[str, Query(description="a text with a default")] = "{}",
    maybe: Annotated[str | None, Query(alias="from", description="an optional text under an alias")] = None,
    rate: Annotated[int, Query(alias="sampleRate", ge=0, le=10**6)] = 100,
) -> object:
    if required == "boom":
        raise InvalidRequest("required must not be boom")
    return json_response(Echo(text=text, maybe=maybe, required=required, rate=rate, method=request.method))


def _app() -> FastAPI:
    app = FastAPI(dependencies=[Depends(check) for check in params.APP_CHECKS])
    errors.install(app)
    router = APIRouter(prefix="/api/v1")
    router.add_api_route("/plain", echo, methods=["POST"], response_model=Echo)
    lean_post(router, "/lean", response_model=Echo)(echo)
    app.include_router(router)
    return app


QUERIES = [
    "required=a",
    "required=a&text=%7Bservice_name%3D%22x%22%7D&from=now-1h&sampleRate=7",
    "required=&text=&from=",  # blank values are values
    "required=a&required=b&sampleRate=1&sampleRate=2",  # repeated: the last counts
    "required=a&sampleRate=007",
    "required=a&sampleRate=%2B5",
    "required=a+b&text=%E2%82%AC",
    "required=boom",  # the endpoint's own 400
    "",  # missing required
    "text=x",
    "required=a&sampleRate=-1",  # out of bounds
    "required=a&sampleRate=1000001",
    "required=a&sampleRate=abc",
    "required=a&sampleRate=1.5",
    "required=a&sampleRate=",
    "required=a&sampleRate=99999999999999999999999999",
    "required=a&bogus=1",  # unknown parameters: the app's check
    "required=a&txt=1",  # did you mean
    "sampleRate=abc&bogus=1",  # both wrong: the unknown one is named first, as FastAPI's dependencies run first
]


@pytest.mark.parametrize("query", QUERIES)
def test_lean_route_answers_as_fastapi_does(query: str) -> None:
    with TestClient(_app()) as client:
        plain = client.post(f"/api/v1/plain?{query}", content=b"body")
        lean = client.post(f"/api/v1/lean?{query}", content=b"body")
    assert (lean.status_code, lean.content) == (plain.status_code, plain.content)
    assert lean.headers == plain.headers
    assert plain.status_code in (200, 400), plain.text


def test_lean_route_has_fastapis_schema() -> None:
    schema = _app().openapi()["paths"]
    plain, lean = schema["/api/v1/plain"]["post"], schema["/api/v1/lean"]["post"]
    for op in (plain, lean):
        op.pop("operationId")
    assert lean == plain


def test_the_push_endpoints_are_lean(tmp_path: Path, backend: Backend) -> None:
    with backend.settings(tmp_path / "data") as settings:  # not ./data: a store of the test's own
        _push_endpoints_are_lean(create_app(settings))


def _push_endpoints_are_lean(app: FastAPI) -> None:
    openapi = app.openapi()["paths"]
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/api/v1/ingest", "/ingest"):
            assert "post" in openapi[path]
            # A GET still gets the API's 405 (the route only answers POST).
            r = client.get(path)
            assert r.status_code == 405 and "method GET is not allowed" in r.json()["error"], r.text
    from service.api import push, rest

    routes = {(r.path, type(r)) for router in (rest.router, push.router) for r in router.routes}
    assert ("/api/v1/ingest", LeanRoute) in routes and ("/ingest", LeanRoute) in routes


async def _body_param(request: Request, item: Echo) -> object:
    return json_response(item)


def _sync(request: Request) -> object:
    return json_response(Echo(text="", maybe=None, required="", rate=0, method=""))


async def _own_dependency(request: Request, x: Annotated[str, Depends(lambda: "x")]) -> object:
    return json_response(Echo(text=x, maybe=None, required="", rate=0, method=""))


@pytest.mark.parametrize("endpoint", [_body_param, _sync, _own_dependency])
def test_a_lean_route_takes_the_request_and_query_parameters_only(endpoint: object) -> None:
    with pytest.raises(TypeError, match="LeanRoute"):
        LeanRoute("/x", endpoint, methods=["POST"])  # type: ignore[arg-type]


def test_a_lean_endpoint_returns_a_response() -> None:
    async def model(request: Request) -> Echo:
        return Echo(text="", maybe=None, required="", rate=0, method="")

    app = FastAPI()
    router = APIRouter()
    lean_post(router, "/x", response_model=Echo)(model)
    app.include_router(router)
    with TestClient(app) as client, pytest.raises(TypeError, match="returns a Response"):
        client.post("/x")
