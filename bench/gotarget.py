"""Build and run ``tests/gotarget`` (the real Go program that tests scrape and benches measure), stopped cleanly afterwards."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

__all__ = ["GOTARGET_SRC", "build", "running", "stop_process", "wait_healthy"]

GOTARGET_SRC = Path(__file__).resolve().parents[1] / "tests" / "gotarget"


def build(work: Path, go: str) -> Path:
    """``go build -trimpath`` of the target into ``work`` (standard library only: no downloads)."""
    binary = work / "gotarget"
    proc = subprocess.run(
        [go, "build", "-trimpath", "-o", str(binary), "."],
        cwd=GOTARGET_SRC,
        capture_output=True,
        timeout=180,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build failed: {proc.stderr.decode(errors='replace')}")
    return binary


@contextlib.contextmanager
def running(binary: Path, work: Path, *flags: str) -> Iterator[str]:
    """The target serving on a free loopback port; yields its base URL; SIGTERM must end it with 0."""
    port_file = work / "addr"
    port_file.unlink(missing_ok=True)
    log = work / "gotarget.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-listen", "127.0.0.1:0", "-write-port-file", str(port_file), *flags],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        url = "http://" + _wait_for_port_file(proc, port_file, log, deadline)
        wait_healthy(proc, url, log, deadline)
        yield url
    finally:
        stop_process(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"gotarget exited with {proc.returncode} on SIGTERM: {log.read_text()[-2000:]}")


def _wait_for_port_file(proc: subprocess.Popen[bytes], port_file: Path, log: Path, deadline: float) -> str:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gotarget exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if port_file.exists():
            text = port_file.read_text()
            if text.endswith("\n"):  # written atomically, but be strict anyway
                return text.strip()
        time.sleep(0.02)
    raise RuntimeError(f"gotarget wrote no port file within the deadline: {log.read_text()[-2000:]}")


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, deadline: float, what: str = "gotarget") -> None:
    """Wait until ``url``/healthz answers 200; a process that exits or never answers is an error with its log."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{what} /healthz never answered 200: {log.read_text()[-2000:]}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
