"""Configuration changes without a restart: POST /-/reload, SIGHUP and file_sd files; a bad config changes nothing."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.collector.fault_server import FaultServer
from tests.conftest import Server, free_port

ONLY_GOROUTINE = (
    "{process_cpu: {enabled: false}, memory: {enabled: false}, block: {enabled: false}, mutex: {enabled: false}}"
)


def _job(name: str, target: str) -> str:
    return f"""  - job_name: {name}
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs: [{{targets: ["{target}"]}}]
    profiling_config: {{path_prefix: /ok, pprof_config: {ONLY_GOROUTINE}}}
"""


@pytest.fixture(scope="module")
def faults(corpus: Path) -> Iterator[FaultServer]:
    server = FaultServer(corpus, bomb_bytes=1024)
    with server.running():
        yield server


def _jobs(server: Server) -> dict[str, dict]:  # type: ignore[type-arg]
    body = httpx.get(f"{server.url}/api/v1/targets", timeout=10).json()
    return {f"{t['job']}/{t['instance']}": t for t in body["targets"]}


def _eventually(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_reload_endpoint_sighup_and_a_bad_config(faults: FaultServer, tmp_path: Path) -> None:
    config = tmp_path / "profstore.yaml"
    config.write_text("scrape_configs:\n" + _job("a", faults.address))
    server = Server(tmp_path / "data", config=config).start()
    try:
        assert list(_jobs(server)) == [f"a/{faults.address}"]
        _eventually(lambda: _jobs(server)[f"a/{faults.address}"]["health"] == "up")

        config.write_text("scrape_configs:\n" + _job("a", faults.address) + _job("b", faults.address))
        r = httpx.post(f"{server.url}/-/reload", timeout=10)
        assert r.status_code == 200 and r.json() == {"status": "reloaded", "targets": 2}
        scrapes_a = _jobs(server)[f"a/{faults.address}"]["scrapes"]
        assert scrapes_a >= 1  # job a kept its history: it was not changed

        config.write_text("scrape_configs:\n" + _job("a", faults.address).replace("scrape_timeout", "scrape_timout"))
        r = httpx.post(f"{server.url}/-/reload", timeout=10)
        assert r.status_code == 400
        error = r.json()["error"]
        assert f"{config}:4:" in error and "scrape_timout" in error, error
        assert sorted(_jobs(server)) == sorted([f"a/{faults.address}", f"b/{faults.address}"])  # the old config runs on
        _eventually(lambda: _jobs(server)[f"b/{faults.address}"]["health"] == "up")

        config.write_text("scrape_configs:\n" + _job("b", faults.address))
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        _eventually(lambda: list(_jobs(server)) == [f"b/{faults.address}"])
    finally:
        server.stop()


def test_file_sd_files_are_reread_when_they_change(faults: FaultServer, tmp_path: Path) -> None:
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "one.json").write_text(json.dumps([{"targets": [faults.address], "labels": {"team": "red"}}]))
    config = tmp_path / "profstore.yaml"
    config.write_text(
        f"""scrape_configs:
  - job_name: sd
    scrape_interval: 1s
    scrape_timeout: 1s
    file_sd_configs: [{{files: ["sd/*.json"]}}]
    profiling_config: {{path_prefix: /ok, pprof_config: {ONLY_GOROUTINE}}}
"""
    )
    server = Server(tmp_path / "data", config=config).start()
    try:
        jobs = _jobs(server)
        assert list(jobs) == [f"sd/{faults.address}"] and jobs[f"sd/{faults.address}"]["labels"]["team"] == "red"

        other = f"127.0.0.1:{free_port()}"
        (sd / "two.json").write_text(json.dumps([{"targets": [other], "labels": {"team": "blue"}}]))
        _eventually(lambda: f"sd/{other}" in _jobs(server))
        _eventually(lambda: _jobs(server)[f"sd/{other}"]["last_error_kind"] == "connection_refused")

        (sd / "two.json").write_text("[{not json")
        _eventually(lambda: bool(httpx.get(f"{server.url}/api/v1/targets", timeout=10).json()["file_sd_errors"]))
        assert f"sd/{other}" in _jobs(server)  # a broken file keeps the targets it had

        (sd / "two.json").unlink()
        _eventually(lambda: list(_jobs(server)) == [f"sd/{faults.address}"])
    finally:
        server.stop()
