"""Routes whose well-formed requests skip FastAPI's per-request machinery: the push endpoints.

A pushed profile is small (7.5 KB gzipped for a Go CPU profile) and arrives hundreds of times a
second. For each, FastAPI resolved the dependency tree, ran every query parameter through its
pydantic adapter and the sequence/form checks around it, then validated and serialized the
response model again: more CPU than gunzip and protobuf parsing of the profile take. Skipping it
took the server's HTTP path of a push from 0.53 to 0.38 ms of CPU (``python -m bench.push
--stub-store``, 32 clients, on httptools and uvloop). :class:`LeanRoute` does the same work
directly for the requests that need none of it:

- the route is declared like any other, so its signature and decorator make the OpenAPI schema
  and FastAPI's own handler as before;
- a request whose query parameters are plain (text is taken as sent, any other type passes its
  own pydantic check, no required one is missing) runs the app's request checks
  (:data:`service.api.params.APP_CHECKS`) and calls the endpoint with those values;
- any other request goes to FastAPI's handler, which answers it exactly as before (the 400 that
  names the bad parameter), so the error contract has one implementation;
- the endpoint returns its answer serialized (:func:`json_response`), the same bytes on both paths.

A lean route takes the request and query parameters only: one that declares more (a body, a
header, a dependency of its own) is refused when it is built, not served differently.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.routing import APIRoute, APIRouter
from pydantic import BaseModel
from starlette.datastructures import QueryParams
from starlette.responses import Response

from service.api.params import APP_CHECKS

__all__ = ["LeanRoute", "json_response", "lean_post"]


Endpoint = Callable[..., Coroutine[Any, Any, Response]]


def json_response(model: BaseModel) -> Response:
    """``model`` as FastAPI's ``response_model`` serializes it (compact JSON), without validating it a second time."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


@dataclass(frozen=True, slots=True)
class _Param:
    name: str  # the endpoint's argument
    alias: str  # what the client sends
    text: bool  # a str (or optional str) without constraints: the value as sent is the value
    required: bool
    default: Any
    validate: Callable[..., tuple[Any, list[Any]]]


def _is_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and set(args) == {str, type(None)}


def _values(params: list[_Param], query: QueryParams) -> dict[str, Any] | None:
    """The endpoint's arguments, or None when FastAPI must answer (a missing or invalid parameter)."""
    out: dict[str, Any] = {}
    for p in params:
        raw = query.get(p.alias)  # the last one when repeated, as FastAPI takes it
        if raw is None:
            if p.required:
                return None
            out[p.name] = p.default
        elif p.text:
            out[p.name] = raw
        else:
            value, errors = p.validate(raw, {}, loc=("query", p.alias))
            if errors:
                return None
            out[p.name] = value
    return out


class LeanRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` that calls its endpoint directly when the query is plain (see the module)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()
        d = self.dependant
        # FastAPI versions that copy the app's dependencies into each route show APP_CHECKS here.
        own = [sub.call for sub in d.dependencies if sub.call not in APP_CHECKS]
        if own or d.path_params or d.header_params or d.cookie_params or d.body_params or not d.request_param_name:
            raise TypeError(f"{self.path}: a LeanRoute takes the Request and query parameters only")
        if not inspect.iscoroutinefunction(d.call):
            raise TypeError(f"{self.path}: a LeanRoute's endpoint is a coroutine (it runs on the event loop)")
        params = [
            _Param(
                name=f.name,
                alias=f.alias,
                text=_is_text(f.field_info.annotation) and not f.field_info.metadata,
                required=f.field_info.is_required(),
                default=None if f.field_info.is_required() else f.field_info.get_default(call_default_factory=True),
                validate=f.validate,
            )
            for f in d.query_params
        ]
        call, request_name = d.call, d.request_param_name

        async def handler(request: Request) -> Response:
            values = _values(params, request.query_params)
            if values is None:
                return await generic(request)
            for check in APP_CHECKS:
                await check(request)
            values[request_name] = request
            response = await call(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a LeanRoute's endpoint returns a Response (see json_response)")
            return response

        return handler


def lean_post(router: APIRouter, path: str, **route: Any) -> Callable[[Endpoint], Endpoint]:
    """``@router.post(path, **route)`` as a :class:`LeanRoute` (FastAPI's decorators take no route class)."""

    def register(endpoint: Endpoint) -> Endpoint:
        router.add_api_route(path, endpoint, methods=["POST"], route_class_override=LeanRoute, **route)
        return endpoint

    return register
