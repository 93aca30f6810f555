"""The README's shell examples run as written against a live ``profstore serve`` that scrapes the demo.

A user's first hour is the README: its examples must work on ``make run`` as they are printed, or the
README has gone stale. So each shell block marked ``<!-- tested -->`` on the line above its fence runs
here, in order, in one working directory (later blocks use the files earlier ones wrote), with
``bash -euo pipefail``, against the setup ``make run`` gives: the demo Go program (``tests/gotarget``)
scraped by a real ``profstore serve`` configured by ``profstore.example.yaml``. Every other shell block
must say why it is not run (``<!-- not tested: reason -->``), so the selection is explicit and a new
block cannot be left out by accident.

The README's fixed addresses become this test's free loopback ports (``REWRITES``), and ``.venv/``
paths become this interpreter's ``profstore`` and a fresh build of the demo; no address or ``.venv/``
path may be left over, so an example can never reach a server on the developer's machine. ``curl``
runs with ``--fail-with-body`` (an HTTP error fails the block and shows the answer), ``profstore`` with
``--url`` of this test's server, and every ``.pb.gz`` a block names must exist afterwards and read as a
non-empty ``go tool pprof -top`` table (an export that matched nothing is an empty profile).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench.gotarget import build, running
from service.cli import _parser
from tests.conftest import REPO, Server
from tests.pprof_tool import go_bin, top

README = REPO / "README.md"
SHELLS = {"sh", "bash", "shell", "console", "zsh"}
TESTED = "<!-- tested -->"
NOT_TESTED = re.compile(r"<!-- not tested: \S.* -->")
# What the examples query of the demo: stored once its CPU and memory endpoints were scraped.
DEMO_TYPES = {"process_cpu:cpu:nanoseconds:cpu:nanoseconds", "memory:inuse_space:bytes:space:bytes"}
# Anything that would still point at a developer's own server or virtualenv after the rewrites.
LEFTOVER = re.compile(r"(?:127\.0\.0\.1|localhost|\[::1\]|0\.0\.0\.0):(?:4040|6060)\b|\.venv/")
PROFILE_FILE = re.compile(r"(?<![@\w./-])([\w./-]+\.pb\.gz)\b")
COMMENT = re.compile(r"(?:^|(?<=\s))#.*$", re.M)  # a shell comment, as the README writes them


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str  # the HTML comment on the line above the fence, or ""
    code: str


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of the README, with the marker comment (if any) on the line above its fence."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(```+)\s*([\w+-]*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start = i
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == fence.group(1)), None)
        assert end is not None, f"README.md:{start + 1}: the fenced block is never closed"
        above = lines[start - 1].strip() if start > 0 else ""
        marker = above if above.startswith("<!--") else ""
        blocks.append(Block(start + 1, fence.group(2).lower(), marker, "\n".join(lines[start + 1 : end]) + "\n"))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
RUN = [b for b in BLOCKS if b.marker == TESTED]


def test_every_shell_block_says_whether_it_is_tested() -> None:
    """A shell block without a marker would silently escape the test, so each must choose."""
    unmarked = [
        b.line for b in BLOCKS if b.lang in SHELLS and b.marker != TESTED and not NOT_TESTED.fullmatch(b.marker)
    ]
    assert not unmarked, (
        f"README.md lines {unmarked}: a shell block needs `{TESTED}` or `<!-- not tested: why -->` on the line above it"
    )
    misplaced = [b.line for b in BLOCKS if b.marker == TESTED and b.lang not in SHELLS]
    assert not misplaced, f"README.md lines {misplaced}: only shell blocks ({sorted(SHELLS)}) can be run"
    assert RUN, "no README block is marked tested"


def client_commands() -> list[str]:
    """The CLI subcommands that talk to a running server: those that take ``--url``."""
    subs = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(name for name, sp in subs.choices.items() if "--url" in sp._option_string_actions)


def write_shims(bin_dir: Path, server_url: str) -> None:
    """``profstore`` aimed at the test's server and ``curl`` that fails on HTTP errors, first on PATH."""
    bin_dir.mkdir()
    real_profstore = Path(sys.executable).parent / "profstore"
    assert real_profstore.exists(), f"no profstore script beside {sys.executable}: pip install -e ."
    real_curl = shutil.which("curl")
    assert real_curl, "the README's examples need curl"
    cases = "|".join(client_commands())
    shims = {
        "profstore": f"""#!/bin/sh
# The README's commands use the default URL; this test's server listens on a free port.
case "${{1:-}}" in
    {cases}) sub=$1; shift; exec {shlex.quote(str(real_profstore))} "$sub" --url {shlex.quote(server_url)} "$@" ;;
esac
exec {shlex.quote(str(real_profstore))} "$@"
""",
        "curl": f"""#!/bin/sh
# An example whose request is refused has broken: fail, and show what the server said. curl refuses
# --fail-with-body beside the example's own -f/--fail, which fails on errors already.
for arg in "$@"; do
    case "$arg" in
        --fail|--fail-with-body|--fail-early) exec {shlex.quote(real_curl)} "$@" ;;
        --*) ;;
        -*f*) exec {shlex.quote(real_curl)} "$@" ;;
    esac
done
exec {shlex.quote(real_curl)} --fail-with-body "$@"
""",
    }
    for name, text in shims.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def example_config(demo_addr: str) -> str:
    """profstore.example.yaml as ``make run`` uses it, scraping this test's demo.

    Its 15 s interval stays: the collector then holds the demo's CPU profiler for 14 s of every 15 s, as
    it does for a reader, so an example that asks the demo for a CPU profile by hand fails here too.
    """
    text = (REPO / "profstore.example.yaml").read_text()
    assert "127.0.0.1:6060" in text, "profstore.example.yaml no longer scrapes the demo at 127.0.0.1:6060"
    return text.replace("127.0.0.1:6060", demo_addr)


def wait_for_demo_data(url: str, timeout_s: float = 90) -> None:
    """Until every demo target is up and the demo's profile types are stored, as a minute into ``make run``."""
    deadline = time.monotonic() + timeout_s
    targets: list[dict[str, object]] = []
    stored: set[str] = set()
    while time.monotonic() < deadline:
        targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["targets"]
        stored = {p["id"] for p in httpx.get(f"{url}/api/v1/profile-types", timeout=10).json()}
        if targets and all(t["health"] == "up" for t in targets) and stored >= DEMO_TYPES:
            return
        time.sleep(0.5)
    raise AssertionError(f"the demo was not scraped in {timeout_s} s: stored {sorted(stored)}, targets {targets}")


@dataclass(frozen=True)
class Live:
    """What ``make run`` gives a reader, on this test's ports, and where the examples run."""

    rewrites: dict[str, str]
    env: dict[str, str]
    workdir: Path

    def script(self, block: Block) -> str:
        code = block.code
        for readme_value, test_value in self.rewrites.items():
            code = code.replace(readme_value, test_value)
        leftover = LEFTOVER.findall(code)
        assert not leftover, f"README.md:{block.line}: {leftover} has no test equivalent; add it to the rewrites"
        return code


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    go = go_bin()
    base = tmp_path_factory.mktemp("readme")
    binary = build(base, go)
    with running(binary, base) as demo_url:
        demo_addr = demo_url.removeprefix("http://")
        config = base / "profstore.yaml"
        config.write_text(example_config(demo_addr))
        server = Server(base / "data", config).start()
        try:
            wait_for_demo_data(server.url)
            write_shims(base / "bin", server.url)
            workdir = base / "work"
            workdir.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith("PROFSTORE_")}
            env["PATH"] = f"{base / 'bin'}:{Path(go).parent}:{env.get('PATH', '')}"
            env["PROFSTORE_URL"] = server.url
            rewrites = {
                # Longest first: the profstore shim before the rest of .venv/.
                ".venv/bin/profstore": str(base / "bin" / "profstore"),
                ".venv/bin/": f"{Path(sys.executable).parent}/",
                ".venv/gotarget": str(binary),
                "127.0.0.1:4040": f"127.0.0.1:{server.port}",
                "127.0.0.1:6060": demo_addr,
            }
            yield Live(rewrites, env, workdir)
        finally:
            server.stop()


@pytest.mark.parametrize("block", RUN, ids=[f"README.md:{b.line}" for b in RUN])
def test_readme_example_runs(live: Live, block: Block) -> None:
    script = live.script(block)
    proc = subprocess.run(
        ["bash", "-xeuo", "pipefail", "-c", script],
        cwd=live.workdir,
        env=live.env,
        capture_output=True,
        timeout=180,
        check=False,
    )
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, (
        f"README.md:{block.line}: the example exited {proc.returncode}\n--- script\n{script}"
        f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
    )
    for name in PROFILE_FILE.findall(COMMENT.sub("", block.code)):
        path = live.workdir / name
        assert path.is_file(), f"README.md:{block.line}: the example names {name} but left no such file"
        rows = top(path)
        assert rows, f"README.md:{block.line}: go tool pprof -top shows no functions in {name}"
