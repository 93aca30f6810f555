"""`profstore ingest` and `profstore export` against a running server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Server
from tests.pprof_tool import top, totals


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )


def test_ingest_and_export_through_the_cli(server: Server, corpus: Path, tmp_path: Path) -> None:
    heap, block = corpus / "go119__heap.pb.gz", corpus / "go119__block.pb.gz"
    done = cli("ingest", str(heap), "--labels", '{service_name="cli"}', "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "memory:inuse_space:bytes:space:bytes" in done.stdout
    refused = cli("ingest", str(block), "--labels", '{service_name="cli"}', "--url", server.url)
    assert refused.returncode == 1 and "pass name=mutex or name=block" in refused.stderr
    assert (
        cli("ingest", str(block), "--name", "block", "--labels", '{service_name="cli"}', "--url", server.url).returncode
        == 0
    )
    out = tmp_path / "heap.pb.gz"
    done = cli(
        "export",
        "--query",
        'memory:inuse_space:bytes:space:bytes{service_name="cli"}',
        "--from",
        "0",
        "-o",
        str(out),
        "--url",
        server.url,
    )
    assert done.returncode == 0, done.stderr
    assert totals(out) == totals(heap)
    assert top(out, "inuse_space") == top(heap, "inuse_space")
    bad = cli("export", "--query", "cpu{}", "--url", server.url, "-o", str(out))
    assert bad.returncode == 1 and "invalid profile type 'cpu'" in bad.stderr
