"""Shared fixtures: the real corpus, real DuckDB files, a real ASGI app and a real server process.

The corpus is the repository's own ``tests/corpus`` (its MANIFEST.tsv names each file's source and
licence: google/pprof and parca under Apache-2.0, profiles generated from Go and Node.js workloads,
and profiles built by ``tests/corpus_gen.py``), so a fresh clone runs every test.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app

if TYPE_CHECKING:
    from tests.backends import Backend

# The backends the API, query and analysis tests run on, and the PostgreSQL and moto fixtures of
# tests/lake made visible to them: a plugin, loaded once this module is imported (it imports ``Server``).
pytest_plugins = ["tests.backends"]

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    producer: str
    sample_types: str
    accepted: bool
    verdict: str

    @property
    def name(self) -> str:
        return self.path.name


def corpus_files() -> list[CorpusFile]:
    """The rows of the corpus's MANIFEST.tsv."""
    with (CORPUS / "MANIFEST.tsv").open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [
        CorpusFile(CORPUS / r["file"], r["producer"], r["sample_types"], r["go_tool_pprof"] == "ok", r["go_tool_pprof"])
        for r in rows
    ]


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The repository's own corpus directory (files named as in its MANIFEST.tsv)."""
    return CORPUS


@pytest.fixture
def client(tmp_path: Path, backend: Backend) -> Iterator[TestClient]:
    """The real app on a fresh store of ``backend`` (a DuckDB file unless parametrized), driven in-process."""
    limits = {"max_compressed_bytes": 8 << 20, "max_uncompressed_bytes": 64 << 20}
    with backend.settings(tmp_path / "data", **limits) as settings, TestClient(create_app(settings)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``profstore serve`` as a child process on loopback."""

    def __init__(self, data_dir: Path, config: Path | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def command(self, host: str = "127.0.0.1") -> list[str]:
        cmd = [sys.executable, "-m", "service.cli", "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--listen", f"{host}:{self.port}"]
        return cmd + (["--config", str(self.config)] if self.config is not None else [])

    def start(self, attempts: int = 3) -> Server:
        """Start and wait until healthy.

        ``free_port`` lets the port go before the server binds it, and in that gap another
        process's outgoing connection may take it as its local port: then the server says the
        address is in use, and it starts again on another free port.
        """
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if attempts > 1 and "already in use" in self.log.read_text()[-2000:]:
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                    return self.start(attempts - 1)
                raise AssertionError(
                    f"profstore serve exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"profstore serve did not become healthy: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, backend: Backend) -> Iterator[Server]:
    """``profstore serve`` on a fresh store of ``backend`` (a DuckDB file unless parametrized)."""
    with backend.serve(tmp_path_factory.mktemp("serve")) as srv:
        yield srv
