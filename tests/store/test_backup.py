"""Backup while serving and restore: the restored server answers every query as the original did."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.api.test_connect import CPU, _cpu_profile
from tests.conftest import REPO, Server

T0 = (int(time.time()) - 7200) // 60 * 60  # recent: retention (31 days) runs at every start


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def _answers(url: str) -> list[object]:
    q = {"query": CPU + "{}", "from": str(T0 - 60), "until": str(T0 + 3600)}
    out: list[object] = []
    for path, extra in (("/api/v1/top", {}), ("/api/v1/flamegraph", {}), ("/api/v1/timeseries", {"step": "60"}),
                        ("/api/v1/profiles", {"limit": "10000"}), ("/api/v1/profile-types", {})):  # fmt: skip
        r = httpx.get(url + path, params={**q, **extra} if path != "/api/v1/profile-types" else {}, timeout=30)
        assert r.status_code == 200, r.text
        out.append(r.json())
    export = httpx.get(url + "/api/v1/export", params=q, timeout=30)
    assert export.status_code == 200
    out.append(len(export.content) > 0)
    return out


def test_backup_while_writing_then_restore(tmp_path: Path, corpus: Path) -> None:
    src = Server(tmp_path / "data").start()
    try:
        for i in range(20):
            stacks = [(["main", f"f{i % 5}"], 10 + i), (["main", "g"], 3)]
            r = httpx.post(f"{src.url}/api/v1/ingest", params={"labels": f'{{service_name="s{i % 3}"}}', "ts": str(T0 + 60 * i)},
                           content=_cpu_profile(stacks, (T0 + 60 * i) * 1000))  # fmt: skip
            assert r.status_code == 200
        before = _answers(src.url)
        # Writes go on during the backup (to other times): the backup is one snapshot, whole.
        stop = threading.Event()

        def write() -> None:
            n = 0
            while not stop.is_set():
                ts = T0 + 86400 + n
                httpx.post(f"{src.url}/api/v1/ingest", params={"labels": '{service_name="late"}', "ts": str(ts)},
                           content=_cpu_profile([(["late"], 1)], ts * 1000), timeout=30)  # fmt: skip
                n += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            out = _cli("backup", str(tmp_path / "bk"), "--url", src.url)
        finally:
            stop.set()
            writer.join()
        assert out.returncode == 0, out.stderr
        assert "backed up" in out.stdout
        assert (tmp_path / "bk" / "profstore-backup.json").is_file()
        again = _cli("backup", str(tmp_path / "bk"), "--url", src.url)
        assert again.returncode == 1 and "exists already" in again.stderr
    finally:
        src.stop()

    out = _cli("restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert out.returncode == 0, out.stderr
    refused = _cli("restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert refused.returncode == 1 and "restore into an empty data directory" in refused.stderr
    dst = Server(tmp_path / "restored").start()
    try:
        assert _answers(dst.url) == before
        # The restored server takes writes as any other.
        r = httpx.post(f"{dst.url}/api/v1/ingest", params={"labels": '{service_name="s0"}', "ts": str(T0 + 7)},
                       content=_cpu_profile([(["main", "new"], 1)], (T0 + 7) * 1000))  # fmt: skip
        assert r.status_code == 200 and not r.json()["duplicate"]
    finally:
        dst.stop()


def test_a_damaged_backup_is_refused(tmp_path: Path) -> None:
    src = Server(tmp_path / "data").start()
    try:
        httpx.post(
            f"{src.url}/api/v1/ingest",
            params={"labels": "{}", "ts": str(T0)},
            content=_cpu_profile([(["m"], 1)], T0 * 1000),
        )
        assert _cli("backup", str(tmp_path / "bk"), "--url", src.url).returncode == 0
    finally:
        src.stop()
    (tmp_path / "bk" / "samples.parquet").write_bytes(b"not parquet")
    out = _cli("restore", str(tmp_path / "bk"), "--data-dir", str(tmp_path / "restored"))
    assert out.returncode == 1 and "restore from" in out.stderr
    assert not (tmp_path / "restored" / "profstore.duckdb").exists()
    assert _cli("restore", str(tmp_path), "--data-dir", str(tmp_path / "c")).returncode == 1


@pytest.mark.parametrize("bad", ["relative/dir"])
def test_backup_needs_an_absolute_new_directory(bad: str, server: Server) -> None:
    r = httpx.post(f"{server.url}/api/v1/storage/backup", params={"dir": bad})
    assert r.status_code == 400 and "absolute path" in r.json()["error"]
