"""Who may call what, for which tenant: one ASGI middleware in front of every route.

Tokens come as ``Authorization: Bearer <token>`` (Grafana's custom header, Alloy, profilecli) or
as the password of ``Basic`` auth (Grafana's data source basic auth, the Pyroscope SDKs'
``basic_auth_password``). Only their SHA-256 is configured. Each token has scopes (``admin``
implies ``read`` and ``write``) and the tenants it may use.

The tenant is ``X-Scope-OrgID`` as Pyroscope reads it; without the header it is the token's only
tenant when it has exactly one, else ``anonymous``. The middleware puts it in the request's state
(``tenant_of``), so no handler reads the header itself and none can forget the check.

Without tokens every request is allowed, and ``profstore serve`` refuses to listen off loopback
unless told ``--insecure-no-auth``. Refusals are 401 (no or unknown token) and 403 (scope or
tenant), as JSON in the protocol of the path: ``{"error"}`` for REST, ``{"code", "message"}`` for
Connect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import logging
from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import AuthSettings
from service.errors import InvalidRequest
from service.types import DEFAULT_TENANT, check_tenant

__all__ = ["Auth", "hash_token", "is_loopback", "required_scope", "tenant_of", "visible_tenants"]

log = logging.getLogger(__name__)

# Paths that describe the API and hold no data.
_DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_CONNECT = ("/querier.v1.", "/push.v1.")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]
    tenants: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def may_use(self, tenant: str) -> bool:
        return "*" in self.tenants or tenant in self.tenants


def hash_token(token: str) -> str:
    """The hex SHA-256 configured for ``token``: tokens are random and long, so no slow hash is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (a name other than localhost is not assumed to)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def required_scope(method: str, path: str, settings: AuthSettings) -> str | None:
    """The scope a request needs, or None when the path is public."""
    if path == "/healthz":
        return None if settings.public_healthz else "read"
    if path == "/metrics":
        return None if settings.public_metrics else "read"
    if path in _DOCS or path == "/" or path.startswith("/ui/"):  # the UI's page and files hold no data
        return None
    if path in ("/api/v1/ingest", "/ingest") or path.startswith("/push.v1."):
        return "write"
    if path == "/-/reload" or path == "/api/v1/analyze" or path.startswith("/api/v1/storage"):
        return "admin"
    if method == "POST" and path.startswith("/api/v1/regressions/") and path.endswith("/ack"):
        return "write"
    return "read"


def tenant_of(request: Request) -> str:
    """The tenant the middleware resolved for this request."""
    return str(request.state.tenant)


def visible_tenants(request: Request) -> frozenset[str] | None:
    """The tenants this request's token may see; None: all (a token for ``*``, or no authentication)."""
    return request.state.tenants  # type: ignore[no-any-return]


class Auth:
    """Pure ASGI, so request bodies stream through untouched to their size-capped readers."""

    def __init__(self, app: ASGIApp, settings: AuthSettings) -> None:
        self.app = app
        self.settings = settings
        self.tokens = {t.sha256: Principal(t.name, frozenset(t.scopes), frozenset(t.tenants)) for t in settings.tokens}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        need = required_scope(scope["method"], path, self.settings)
        principal = None
        if self.tokens and need is not None:
            token = _token(headers.get("authorization", ""))
            if token is None:
                await _refuse(send, path, 401, "unauthenticated", "missing token: send Authorization: Bearer <token>")
                return
            principal = self.tokens.get(hash_token(token))
            if principal is None:
                await _refuse(send, path, 401, "unauthenticated", "invalid token")
                return
            if not principal.may(need):
                log.warning("token %s refused: %s %s needs scope %s", principal.name, scope["method"], path, need)
                await _refuse(
                    send, path, 403, "permission_denied", f"token {principal.name!r} lacks the {need!r} scope"
                )
                return
        try:
            tenant = self._tenant(headers.get("x-scope-orgid"), principal)
        except InvalidRequest as exc:
            await _refuse(send, path, 400, "invalid_argument", str(exc))
            return
        if principal is not None and not principal.may_use(tenant):
            log.warning("token %s refused: tenant %s", principal.name, tenant)
            await _refuse(
                send, path, 403, "permission_denied", f"token {principal.name!r} may not use tenant {tenant!r}"
            )
            return
        state = scope.setdefault("state", {})
        state["tenant"] = tenant
        state["tenants"] = None if principal is None or "*" in principal.tenants else principal.tenants
        await self.app(scope, receive, send)

    @staticmethod
    def _tenant(header: str | None, principal: Principal | None) -> str:
        if header is not None and header.strip():
            return check_tenant(header.strip())
        if principal is not None and len(principal.tenants) == 1 and "*" not in principal.tenants:
            return next(iter(principal.tenants))
        return DEFAULT_TENANT


def _token(authorization: str) -> str | None:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def _refuse(send: Send, path: str, status: int, code: str, message: str) -> None:
    body = {"code": code, "message": message} if path.startswith(_CONNECT) else {"error": message}
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="profstore"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
