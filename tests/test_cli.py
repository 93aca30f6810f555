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
    assert bad.returncode == 1 and "no series of process_cpu:cpu:nanoseconds:cpu:nanoseconds match {}" in bad.stderr


def test_regressions_lists_what_a_running_server_found(server: Server, corpus: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import numpy as np

    from bench.synthetic import cpu_model, to_pprof
    from service.types import now_ns

    model = cpu_model(corpus)
    slowed = model.names.index("sort.insertionSort")
    rng = np.random.default_rng(11)
    step = 15 * 10**9
    end = (now_ns() // step) * step
    steps = 240 + 120  # 1 h baseline, 30 min recent; the last 20 min slowed
    bodies = [
        to_pprof(model, model.draw(rng, 6000, {slowed: 0.5} if i >= steps - 80 else None), end - (steps - i) * step)
        for i in range(steps)
    ]
    with httpx.Client(base_url=server.url, timeout=60) as http, ThreadPoolExecutor(8) as pool:
        for r in pool.map(
            lambda b: http.post("/api/v1/ingest", params={"labels": '{service_name="cli-svc"}'}, content=b), bodies
        ):
            assert r.status_code == 200, r.text
        ms = 10**6
        split = end - 30 * 60 * 10**9
        r = http.post(
            "/api/v1/analyze",
            params={
                "from": split // ms,
                "until": end // ms,
                "baseline_from": (end - steps * step) // ms,
                "baseline_until": split // ms,
            },
        )
        assert r.status_code == 200, r.text
        (finding,) = [f for f in r.json()["findings"] if f["service"] == "cli-svc"]

    done = cli("regressions", "--service", "cli-svc", "--url", server.url)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "SINCE", "P_ADJ"]
    assert len(rows) == 1 and rows[0].split()[:2] == [finding["id"], "open"]
    assert "cli-svc: sort.insertionSort flat +" in rows[0]
    assert (
        cli("regressions", "--service", "cli-svc", "--state", "resolved", "--url", server.url).stdout.count("\n") == 1
    )
    down = cli("regressions", "--url", "http://127.0.0.1:9")
    assert down.returncode == 2 and down.stderr.startswith("profstore: cannot reach http://127.0.0.1:9: ConnectError")
