"""A lake node under faults: the catalog's PostgreSQL stopped and started, the object store cut off
and back, the node killed under ingest. Every answer meanwhile is a clear 503 (never a 500), and
every acknowledged profile is stored once it is back: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.lake.conftest import S3, Postgres

PROFILE = "go119__cpu_10s.pb.gz"
RECOVER_S = 60.0


class Proxy:
    """A TCP proxy on loopback that can be cut (listener closed, every connection reset) and
    restored on the same port: an object store that goes away and comes back with its data."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self._conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _push(url: str, body: bytes, instance: str, ts: int) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/ingest",
        params={"labels": f'{{service_name="faults",instance="{instance}"}}', "ts": str(ts)},
        content=body,
        timeout=60,
    )


def _stored(url: str, t0: int) -> dict[str, int]:
    """Profiles stored per instance, as the node lists them."""
    params = {"query": 'process_cpu{service_name="faults"}', "from": str(t0 - 60), "until": str(t0 + 3600)}
    r = httpx.get(f"{url}/api/v1/profiles", params=params, timeout=60)
    assert r.status_code == 200, r.text
    out: dict[str, int] = {}
    for p in r.json()["profiles"]:
        inst = p["labels"]["instance"]
        out[inst] = out.get(inst, 0) + 1
    return out


def _run_outage(srv: Server, body: bytes, cut: object, restore: object, reason: str) -> None:
    """Push before, during and after an outage; every 200 is stored exactly once afterwards."""
    t0 = int(time.time()) - 600
    acked: dict[str, int] = {}
    for i in range(3):
        assert _push(srv.url, body, "before", t0 + i).status_code == 200
        acked["before"] = acked.get("before", 0) + 1
    deadline = time.monotonic() + RECOVER_S
    while _stored(srv.url, t0) != acked:  # committed: reading them needs the store
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cut()  # type: ignore[operator]
    try:
        refused = None
        for i in range(40):
            r = _push(srv.url, body, "during", t0 + 100 + i)
            assert r.status_code in (200, 503), r.text
            if r.status_code == 200:
                acked["during"] = acked.get("during", 0) + 1
            else:
                refused = r
                break
            time.sleep(0.25)
        assert refused is not None, "ingest never refused while the store was down"
        assert reason in refused.text.lower(), refused.text
        read = httpx.get(
            f"{srv.url}/api/v1/top",
            params={"query": 'process_cpu{service_name="faults"}', "from": str(t0 - 60), "until": str(t0 + 600)},
            timeout=60,
        )
        # Without the catalog nothing can be read; without the object store, files DuckDB still caches can.
        assert read.status_code == (503 if reason == "postgres" else read.status_code), read.text
        assert read.status_code in (200, 503), read.text
        assert read.status_code == 200 or reason in read.text.lower(), read.text
    finally:
        restore()  # type: ignore[operator]
    deadline = time.monotonic() + RECOVER_S
    while True:
        r = _push(srv.url, body, "after", t0 + 300)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    acked["after"] = 1
    while True:
        with contextlib.suppress(AssertionError):
            if _stored(srv.url, t0) == acked:
                break
        assert time.monotonic() < deadline, (_stored(srv.url, t0), acked)
        time.sleep(0.5)


@pytest.fixture
def lake_config(postgres: Postgres, tmp_path: Path) -> Path:
    config = tmp_path / "node.yaml"
    config.write_text(
        f"storage:\n  backend: ducklake\n  catalog: '{postgres.database()}'\n  data_path: {tmp_path / 'files'}/\n"
    )
    return config


def test_the_catalog_going_away_and_back_loses_nothing_acknowledged(
    postgres: Postgres, lake_config: Path, tmp_path: Path, corpus: Path
) -> None:
    srv = Server(tmp_path / "data", lake_config).start()
    try:
        _run_outage(srv, (corpus / PROFILE).read_bytes(), postgres.stop, postgres.start, "postgres")
    finally:
        srv.stop()


@pytest.fixture
def s3_proxy(s3: S3) -> Iterator[Proxy]:
    proxy = Proxy(("127.0.0.1", s3.port))
    yield proxy
    proxy.down()


def test_the_object_store_going_away_and_back_loses_nothing_acknowledged(
    postgres: Postgres, s3: S3, s3_proxy: Proxy, tmp_path: Path, corpus: Path
) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        f"storage:\n  backend: ducklake\n  catalog: '{postgres.database()}'\n"
        f"  data_path: s3://{s3.bucket}/{tmp_path.name}/\n"
        f"  s3: {{endpoint: '127.0.0.1:{s3_proxy.port}', url_style: path, use_ssl: false, key_id: test, secret: test}}\n"
    )
    srv = Server(tmp_path / "data", config).start()
    try:
        _run_outage(srv, (corpus / PROFILE).read_bytes(), s3_proxy.down, s3_proxy.up, "http")
    finally:
        srv.stop()


def test_a_node_killed_under_ingest_keeps_what_it_acknowledged(lake_config: Path, tmp_path: Path, corpus: Path) -> None:
    body = (corpus / PROFILE).read_bytes()
    t0 = int(time.time()) - 600
    srv = Server(tmp_path / "data", lake_config).start()
    acked = 0
    try:
        for i in range(30):
            assert _push(srv.url, body, "killed", t0 + i).status_code == 200
            acked += 1
    finally:
        srv.kill()  # SIGKILL: some of them are only in the journal
    srv.start()
    try:
        assert _stored(srv.url, t0) == {"killed": acked}
    finally:
        srv.stop()
