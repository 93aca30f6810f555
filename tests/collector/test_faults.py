"""Every way a target fails shows up as its own error kind, and a healthy target scraped alongside loses nothing.

A real ``profstore serve`` scrapes a real misbehaving HTTP server on loopback (``fault_server``)
plus a closed port and an unresolvable host, on a one-second schedule.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.collector.fault_server import SLOW_S, FaultServer
from tests.conftest import Server, free_port

BOMB_BYTES = 64 << 20  # inflates past the 16 MiB cap configured below
ONLY = {  # pprof_config that scrapes one type
    "goroutine": "{process_cpu: {enabled: false}, memory: {enabled: false}, block: {enabled: false}, mutex: {enabled: false}}",
    "mutex": "{process_cpu: {enabled: false}, memory: {enabled: false}, block: {enabled: false}, goroutine: {enabled: false}}",
    "process_cpu": "{process_cpu: {seconds: 1}, memory: {enabled: false}, block: {enabled: false}, mutex: {enabled: false}, goroutine: {enabled: false}}",
}
FAULTS = {  # job -> (address, path prefix, type scraped, expected error kind, words the message must contain)
    "refused": ("closed", "", "goroutine", "connection_refused", "refused"),
    "dns": ("profstore-test.invalid:6060", "", "goroutine", "dns", "resolve"),
    "slow": ("server", "/slow", "goroutine", "timeout", "1 s"),
    "e500": ("server", "/e500", "goroutine", "http_status", "HTTP 500"),
    "html": ("server", "/html", "goroutine", "not_pprof", "HTML"),
    "truncated": ("server", "/truncated", "goroutine", "malformed", "decompressing profile"),
    "bomb": ("server", "/bomb", "goroutine", "too_large", "uncompressed size"),
    "emptymutex": ("server", "/emptymutex", "mutex", "profiling_disabled", "SetMutexProfileFraction"),
}


def _config(path: Path, server: str, closed: str) -> Path:
    jobs = [
        f"""  - job_name: ok
    scrape_interval: 2s
    scrape_timeout: 1s
    static_configs: [{{targets: ["{server}"], labels: {{service_name: healthy}}}}]
    profiling_config: {{path_prefix: /ok}}"""
    ]
    # The same target for another tenant: its profiles and its health are that tenant's only.
    jobs.append(
        f"""  - job_name: tenanted
    tenant: team-x
    scrape_interval: 1s
    static_configs: [{{targets: ["{server}"]}}]
    profiling_config: {{path_prefix: /ok, pprof_config: {ONLY["goroutine"]}}}"""
    )
    # A CPU scrape held open past its interval: the next run must be skipped and counted.
    jobs.append(
        f"""  - job_name: overlap
    scrape_interval: 2s
    scrape_timeout: 2s
    static_configs: [{{targets: ["{server}"]}}]
    profiling_config: {{path_prefix: /slow, pprof_config: {ONLY["process_cpu"]}}}"""
    )
    for job, (addr, prefix, only, _, _) in FAULTS.items():
        target = {"closed": closed, "server": server}.get(addr, addr)
        jobs.append(
            f"""  - job_name: {job}
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs: [{{targets: ["{target}"]}}]
    profiling_config: {{path_prefix: "{prefix}", pprof_config: {ONLY[only]}}}"""
        )
    path.write_text("max_uncompressed_bytes: 16777216\nscrape_configs:\n" + "\n".join(jobs) + "\n")
    return path


@pytest.fixture(scope="module")
def scraping(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, FaultServer]]:
    work = tmp_path_factory.mktemp("faults")
    faults = FaultServer(corpus, BOMB_BYTES)
    with faults.running():
        config = _config(work / "profstore.yaml", faults.address, f"127.0.0.1:{free_port()}")
        server = Server(work / "data", config=config).start()
        try:
            time.sleep(SLOW_S + 2)  # every fault job has ended at least one scrape, the slow one included
            yield server, faults
        finally:
            server.stop()


def _targets(server: Server) -> dict[tuple[str, str], dict]:  # type: ignore[type-arg]
    body = httpx.get(f"{server.url}/api/v1/targets", timeout=10).json()
    return {(t["job"], t["profile"]): t for t in body["targets"]}


@pytest.mark.parametrize("job", list(FAULTS))
def test_each_fault_has_its_own_kind(scraping: tuple[Server, FaultServer], job: str) -> None:
    server, _ = scraping
    _, _, profile, kind, words = FAULTS[job]
    t = _targets(server)[(job, profile)]
    assert t["health"] == "down", t
    assert t["last_error_kind"] == kind, t
    assert words in t["last_error"], t
    assert t["consecutive_failures"] >= 1


def test_the_healthy_target_loses_nothing(scraping: tuple[Server, FaultServer]) -> None:
    server, _ = scraping
    targets = _targets(server)
    for profile, ptype in (
        ("process_cpu", "process_cpu:cpu:nanoseconds:cpu:nanoseconds"),
        ("goroutine", "goroutine:goroutine:count:goroutine:count"),
        ("memory", "memory:inuse_space:bytes:space:bytes"),
    ):
        t = targets[("ok", profile)]
        assert t["health"] == "up" and t["failures"] == 0, t
        assert t["labels"] == {"service_name": "healthy", "job": "ok", "instance": t["instance"]}
        stored = httpx.get(
            f"{server.url}/api/v1/profiles",
            params={"query": ptype + '{job="ok"}', "from": "now-1h", "until": "now+1h"},
            timeout=10,
        ).json()["profiles"]
        assert isinstance(stored, list), stored
        # The first memory scrape only sets the delta baseline.
        expected = t["scrapes"] - (1 if profile == "memory" else 0)
        assert expected >= 1
        # A scrape may be mid-flight between the two requests: allow the one in progress.
        assert expected <= len(stored) + 1 and len(stored) <= expected + 1, (t, stored)


def test_an_overlapping_scrape_is_skipped_and_counted(scraping: tuple[Server, FaultServer]) -> None:
    server, _ = scraping
    t = _targets(server)[("overlap", "process_cpu")]
    assert t["timeout_s"] == 3.0  # seconds + scrape_timeout: longer than the 2 s interval
    assert t["skipped"] >= 1, t
    assert t["last_error_kind"] == "timeout", t
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'profstore_scrapes_skipped_total{job="overlap",profile="process_cpu"}' in text


def test_metrics_count_scrapes_by_kind(scraping: tuple[Server, FaultServer]) -> None:
    server, _ = scraping
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for job, (_, _, profile, kind, _) in FAULTS.items():
        assert f'profstore_scrapes_total{{job="{job}",outcome="{kind}",profile="{profile}"}}' in text
    assert 'profstore_scrapes_total{job="ok",outcome="ok",profile="process_cpu"}' in text
    assert "profstore_scrape_duration_seconds_bucket" in text
    assert "profstore_writer_queue_depth" in text
    assert "profstore_database_bytes" in text
    assert 'profstore_ingested_profiles_total{source="scrape"}' in text
    assert f'profstore_targets{{health="down"}} {len(FAULTS) + 1}.0' in text  # the faults and the overlap job


def test_profstore_targets_prints_the_table(scraping: tuple[Server, FaultServer]) -> None:
    server, _ = scraping
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "targets", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["JOB", "INSTANCE", "PROFILE", "HEALTH"]
    at = next(i for i, line in enumerate(lines) if line.startswith("refused "))
    assert " down " in lines[at] and "last error (connection_refused): connection refused" in lines[at + 1]
    assert any(line.startswith("ok ") and " up " in line for line in lines)


def test_a_job_scrapes_into_its_tenant(scraping: tuple[Server, FaultServer]) -> None:
    server, _ = scraping
    query = {"query": 'goroutine:goroutine:count:goroutine:count{job="tenanted"}', "from": "now-1h", "until": "now+1h"}
    theirs = httpx.get(f"{server.url}/api/v1/profiles", params=query, headers={"X-Scope-OrgID": "team-x"}, timeout=10)
    assert theirs.status_code == 200 and len(theirs.json()["profiles"]) >= 1, theirs.text
    assert httpx.get(f"{server.url}/api/v1/profiles", params=query, timeout=10).json()["profiles"] == []
    assert ("tenanted", "goroutine") not in _targets(server)
    team = httpx.get(f"{server.url}/api/v1/targets", headers={"X-Scope-OrgID": "team-x"}, timeout=10).json()
    assert [(t["job"], t["health"]) for t in team["targets"]] == [("tenanted", "up")]
