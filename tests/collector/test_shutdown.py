"""SIGTERM while a scrape is in flight: the scrape finishes, is committed, and the process exits cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.collector.fault_server import FaultServer
from tests.conftest import Server


def test_sigterm_drains_a_running_scrape_into_the_database(corpus: Path, tmp_path: Path) -> None:
    faults = FaultServer(corpus, bomb_bytes=1024)
    with faults.running():
        config = tmp_path / "profstore.yaml"
        config.write_text(
            f"""scrape_configs:
  - job_name: delayed
    scrape_interval: 3s
    scrape_timeout: 3s
    static_configs: [{{targets: ["{faults.address}"]}}]
    profiling_config:
      path_prefix: /delayed
      pprof_config:
        process_cpu: {{seconds: 1}}
        memory: {{enabled: false}}
        goroutine: {{enabled: false}}
        block: {{enabled: false}}
        mutex: {{enabled: false}}
"""
        )
        server = Server(tmp_path / "data", config=config).start()
        deadline = time.monotonic() + 10
        while faults.requests.get("delayed", 0) == 0:  # the first scrape is waiting for its profile
            assert time.monotonic() < deadline, "no scrape started"
            time.sleep(0.02)
        assert server.proc is not None
        server.proc.terminate()
        # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM.
        assert server.proc.wait(30) in (0, -signal.SIGTERM), server.log.read_text()[-2000:]
        assert "Application shutdown complete" in server.log.read_text()
        assert faults.requests["delayed"] == 1

    again = Server(tmp_path / "data").start()  # no config: only what the first process committed
    try:
        stored = httpx.get(
            f"{again.url}/api/v1/profiles",
            params={"query": 'process_cpu:cpu:nanoseconds:cpu:nanoseconds{job="delayed"}', "from": "now-1h"},
            timeout=10,
        ).json()["profiles"]
        assert len(stored) == 1, stored
    finally:
        again.stop()
