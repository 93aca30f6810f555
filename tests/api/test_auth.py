"""Tokens, scopes and tenants against a running ``profstore serve`` configured with four tokens.

Every endpoint family (REST queries and catalogue, ingest, findings, collector, Connect querier,
Connect push, legacy ingest) is called without a token, with a token lacking the scope, and with a
token of another tenant; then the data each tenant wrote is shown to stay its own.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.auth import hash_token
from service.protocols.push.v1 import push_pb2
from service.protocols.querier.v1 import querier_pb2 as q
from tests.api.test_connect import CPU, _cpu_profile
from tests.backends import Backend, storage_yaml
from tests.conftest import REPO, Server

T0 = 1_700_000_000_000
TOKENS = {
    "admin": ("admin", ["admin"], ["*"]),
    "reader-a": ("reader-a", ["read"], ["team-a"]),
    "writer-a": ("writer-a", ["write"], ["team-a"]),
    "reader-b": ("reader-b", ["read"], ["team-b"]),
    "writer-b": ("writer-b", ["write"], ["team-b"]),
}
SECRET = {name: f"secret-of-{name}-0123456789" for name in TOKENS}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("auth")
    lines = ["auth:", "  tokens:"]
    for name, (_, scopes, tenants) in TOKENS.items():
        lines.append(
            f"    - {{name: {name}, sha256: {hash_token(SECRET[name])}, scopes: [{', '.join(scopes)}], "
            f"tenants: [{', '.join(repr(t) for t in tenants)}]}}"
        )
    lines.append("analysis: {enabled: false}")
    with backend.serve(root, "\n".join(lines) + "\n") as s:
        # One profile per tenant, different values, same labels and time: a mix would show in any total.
        for tenant, value in (("team-a", 7), ("team-b", 1000)):
            r = httpx.post(
                f"{s.url}/api/v1/ingest",
                params={"labels": '{service_name="shop"}'},
                content=_cpu_profile([(["main", "work"], value)], T0),
                headers={**_bearer("admin"), "X-Scope-OrgID": tenant},
            )
            assert r.status_code == 200, r.text
        yield s


def _bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET[name]}"}


RANGE = {"from": str(T0 // 1000 - 60), "until": str(T0 // 1000 + 60)}
QUERY = {"query": CPU + '{service_name="shop"}', **RANGE}
CONNECT_JSON = {"Content-Type": "application/json"}


def _calls() -> list[tuple[str, str, str, dict[str, str], bytes, dict[str, str]]]:
    """(scope, method, path, params, body, headers) for one call of each endpoint family."""
    push = push_pb2.PushRequest()
    series = push.series.add()
    series.labels.add(name="service_name", value="shop")
    series.samples.add(raw_profile=_cpu_profile([(["main"], 1)], T0))
    merge = q.SelectMergeStacktracesRequest(
        profile_typeID=CPU, label_selector="{}", start=T0 - 60_000, end=T0 + 60_000
    ).SerializeToString()
    proto = {"Content-Type": "application/proto"}
    cpu = _cpu_profile([(["main"], 1)], T0)
    return [
        ("read", "GET", "/api/v1/top", QUERY, b"", {}),
        ("read", "GET", "/api/v1/flamegraph", QUERY, b"", {}),
        ("read", "GET", "/api/v1/timeseries", QUERY, b"", {}),
        ("read", "GET", "/api/v1/diff", {**QUERY, "base_from": RANGE["from"], "base_until": RANGE["until"]}, b"", {}),
        ("read", "GET", "/api/v1/series", QUERY, b"", {}),
        ("read", "GET", "/api/v1/export", QUERY, b"", {}),
        ("read", "GET", "/api/v1/profiles", QUERY, b"", {}),
        ("read", "GET", "/api/v1/profile-types", {}, b"", {}),
        ("read", "GET", "/api/v1/labels", {}, b"", {}),
        ("read", "GET", "/api/v1/labels/service_name/values", {}, b"", {}),
        ("read", "GET", "/api/v1/regressions", {}, b"", {}),
        ("read", "GET", "/api/v1/regressions/1", {}, b"", {}),
        ("read", "GET", "/api/v1/annotations", {}, b"", {}),
        ("read", "GET", "/api/v1/targets", {}, b"", {}),
        ("read", "POST", "/querier.v1.QuerierService/ProfileTypes", {}, b"{}", CONNECT_JSON),
        ("read", "POST", "/querier.v1.QuerierService/SelectMergeStacktraces", {}, merge, proto),
        ("write", "POST", "/api/v1/ingest", {"labels": '{service_name="shop"}'}, cpu, {}),
        ("write", "POST", "/push.v1.PusherService/Push", {}, push.SerializeToString(), proto),
        ("write", "POST", "/ingest", {"name": "shop", "format": "pprof"}, cpu, {}),
        ("write", "POST", "/api/v1/regressions/1/ack", {}, b"", {}),
        ("admin", "POST", "/api/v1/analyze", {}, b"", {}),
        ("admin", "POST", "/-/reload", {}, b"", {}),
        ("admin", "GET", "/api/v1/storage", {}, b"", {}),
    ]


CALLS = _calls()
IDS = [f"{c[1]} {c[2]}" for c in CALLS]


def _call(
    srv: Server, call: tuple[str, str, str, dict[str, str], bytes, dict[str, str]], **headers: str
) -> httpx.Response:
    _, method, path, params, body, extra = call
    return httpx.request(
        method, srv.url + path, params=params, content=body or None, headers={**extra, **headers}, timeout=30
    )


def _is_connect(path: str) -> bool:
    return path.startswith(("/querier.", "/push."))


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_no_token_is_401_and_a_wrong_one_too(srv: Server, call: tuple) -> None:  # type: ignore[type-arg]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Token x"}):
        r = _call(srv, call, **headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.json()
        if _is_connect(call[2]):
            assert body["code"] == "unauthenticated"
        else:
            assert "token" in body["error"]


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_a_token_without_the_scope_is_403(srv: Server, call: tuple) -> None:  # type: ignore[type-arg]
    need = call[0]
    lacking = "writer-a" if need == "read" else "reader-a"
    r = _call(srv, call, **_bearer(lacking))
    assert r.status_code == 403, r.text
    message = r.json()["message" if _is_connect(call[2]) else "error"]
    assert f"lacks the '{need}' scope" in message


TENANT_CALLS = [c for c in CALLS if c[0] != "admin"]


@pytest.mark.parametrize("call", TENANT_CALLS, ids=[f"{c[1]} {c[2]}" for c in TENANT_CALLS])
def test_a_token_of_tenant_b_can_neither_read_nor_write_tenant_a(srv: Server, call: tuple) -> None:  # type: ignore[type-arg]
    token = "reader-b" if call[0] == "read" else "writer-b"
    r = _call(srv, call, **_bearer(token), **{"X-Scope-OrgID": "team-a"})
    assert r.status_code == 403, r.text
    message = r.json()["message" if _is_connect(call[2]) else "error"]
    assert "may not use tenant 'team-a'" in message
    # Its own tenant is fine (4xx only where the call itself is wrong: no finding 1 exists there).
    r = _call(srv, call, **_bearer(token))
    assert r.status_code in (200, 404), r.text


def _total(srv: Server, token: str, tenant: str | None = None) -> int:
    headers = _bearer(token) | ({"X-Scope-OrgID": tenant} if tenant else {})
    r = httpx.get(f"{srv.url}/api/v1/flamegraph", params=QUERY, headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_tenants_never_mix(srv: Server) -> None:
    # team-a holds 7 ns at T0 and team-b 1000, under the same labels; the write calls above may add
    # one profile of 1 ns to team-b (their own tenant), never to team-a.
    a = _total(srv, "reader-a")
    b = _total(srv, "reader-b")
    assert a == 7 and b in (1000, 1001)
    assert _total(srv, "admin", "team-a") == a and _total(srv, "admin", "team-b") == b
    # The Connect querier and the REST catalogue see the same split.
    merge = q.SelectMergeStacktracesRequest(
        profile_typeID=CPU, label_selector="{}", start=T0 - 60_000, end=T0 + 60_000
    ).SerializeToString()
    for token, want in (("reader-a", a), ("reader-b", b)):
        r = httpx.post(
            f"{srv.url}/querier.v1.QuerierService/SelectMergeStacktraces",
            content=merge,
            headers={"Content-Type": "application/proto", **_bearer(token)},
        )
        assert r.status_code == 200, r.text
        assert q.SelectMergeStacktracesResponse.FromString(r.content).flamegraph.total == want
    # The anonymous tenant (admin, no header, all tenants) holds nothing.
    assert httpx.get(f"{srv.url}/api/v1/profile-types", headers=_bearer("admin")).json() == []


def test_basic_auth_carries_the_token_as_its_password(srv: Server) -> None:
    basic = base64.b64encode(f"team-a:{SECRET['reader-a']}".encode()).decode()
    r = httpx.get(f"{srv.url}/api/v1/profile-types", headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200 and CPU in {t["id"] for t in r.json()}
    wrong = base64.b64encode(b"team-a:nope").decode()
    assert httpx.get(f"{srv.url}/api/v1/profile-types", headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_bad_tenant_ids_are_400(srv: Server) -> None:
    for tenant, says in (
        ("a|b", "cross-tenant"),
        ("..", "invalid tenant"),
        ("x" * 151, "invalid tenant"),
        ("a b", "invalid tenant"),
    ):
        r = httpx.get(f"{srv.url}/api/v1/profile-types", headers={**_bearer("admin"), "X-Scope-OrgID": tenant})
        assert r.status_code == 400 and says in r.json()["error"], (tenant, r.text)


def test_health_and_metrics_are_public_by_default(srv: Server) -> None:
    assert httpx.get(f"{srv.url}/healthz").status_code == 200
    assert httpx.get(f"{srv.url}/metrics").status_code == 200


def _serve(tmp_path: Path, config: Path | None, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    """``profstore serve`` on every address (not loopback), without tokens."""
    srv = Server(tmp_path / "data", config)
    proc = subprocess.Popen(
        [*srv.command("0.0.0.0"), *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO
    )
    return proc, srv.port


def test_serving_off_loopback_without_tokens_needs_insecure_no_auth(tmp_path: Path, backend: Backend) -> None:
    with backend.store(tmp_path / "data") as storage:
        config = tmp_path / "profstore.yaml" if storage.backend == "ducklake" else None
        if config is not None:
            config.write_text(storage_yaml(storage))
        _refused_then_served(tmp_path, config)


def _refused_then_served(tmp_path: Path, config: Path | None) -> None:
    proc, _ = _serve(tmp_path, config)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"refusing to serve 0.0.0.0" in out and b"--insecure-no-auth" in out
    proc, port = _serve(tmp_path, config, "--insecure-no-auth")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError("serve --insecure-no-auth did not come up")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert b"WITHOUT AUTHENTICATION" in out


def test_tokens_in_the_config_are_checked(tmp_path: Path) -> None:
    from service.config import load_settings
    from service.errors import InvalidRequest

    config = tmp_path / "p.yaml"
    config.write_text("auth:\n  tokens:\n    - {name: x, sha256: plain-token, scopes: [read]}\n")
    with pytest.raises(InvalidRequest, match=r"p.yaml:3: auth.tokens\[0\].sha256: sha256 must be 64 hex digits"):
        load_settings(config)
    config.write_text(f"auth:\n  tokens:\n    - {{name: x, sha256: {'0' * 64}, scopes: [own]}}\n")
    with pytest.raises(InvalidRequest, match=r"scopes\[0\]"):
        load_settings(config)
    config.write_text(f"auth:\n  tokens:\n    - {{name: x, sha256: {'0' * 64}, scopes: [read], tenants: ['a|b']}}\n")
    with pytest.raises(InvalidRequest, match="cross-tenant"):
        load_settings(config)


def test_cli_carries_token_and_tenant(srv: Server) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "service.cli", *args, "--url", srv.url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)

    out = cli("storage", "--token", SECRET["admin"])
    assert out.returncode == 0, out.stderr
    assert "samples" in out.stdout and "team-a" in out.stdout and "team-b" in out.stdout
    denied = cli("storage", "--token", SECRET["reader-a"])
    assert denied.returncode == 1 and "lacks the 'admin' scope" in denied.stderr
    target = Path(srv.data_dir.parent / "a.pb.gz")
    out = cli("export", "--query", CPU + "{}", "--from", RANGE["from"], "--until", RANGE["until"], "-o", str(target),
              "--token", SECRET["admin"], "--tenant", "team-a")  # fmt: skip
    assert out.returncode == 0, out.stderr
    token = subprocess.run(
        [sys.executable, "-m", "service.cli", "token", "--name", "ci", "--scopes", "write", "--tenants", "team-a"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    secret = token.stdout.split()[1]
    assert f'sha256: {hash_token(secret)}, scopes: [write], tenants: ["team-a"]' in token.stdout
