"""The ``profstore`` command line against a running server: every error one line, output `go tool pprof` reads,
tables that print what `go tool pprof -top` prints."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, Server, free_port
from tests.pprof_tool import go_bin, top, totals

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HEAP = "memory:inuse_space:bytes:space:bytes"
CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
GOROUTINE = "goroutine:goroutine:count:goroutine:count"


def cli(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        capture_output=True, cwd=REPO, timeout=120, check=False, env=env, input=stdin,
    )  # fmt: skip
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def cli_to_file(out: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The command with its stdout in ``out``: a pipe into a file, as `profstore export -o - > f` in a shell."""
    with out.open("wb") as fh:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args], stdout=fh, stderr=subprocess.PIPE, cwd=REPO, timeout=120
        )


def one_error_line(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The single stderr line of a failed command, after checking it is single and carries no traceback."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("profstore: "), lines
    return lines[0]


def pprof_text(*args: str) -> list[str]:
    proc = subprocess.run([go_bin(), "tool", "pprof", *args], capture_output=True, timeout=120, check=True)
    return proc.stdout.decode().splitlines()


@pytest.fixture(scope="module")
def ingested(server: Server, corpus: Path) -> dict[str, int]:
    """The corpus profiles the tests query, each under its own service_name; their timestamps by file."""
    stamps = {}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for name in (
            "go119__heap", "go119__cpu_10s", "go119__goroutine",
            "go119__cpu_before_regression_5s", "go119__cpu_after_regression_5s",
        ):  # fmt: skip
            service = "regression" if "regression" in name else name
            r = http.post(
                "/api/v1/ingest",
                params={"labels": f'{{service_name="{service}"}}'},
                content=(corpus / f"{name}.pb.gz").read_bytes(),
            )
            assert r.status_code == 200, r.text
            stamps[name] = r.json()["ts"]
    return stamps


def test_ingest_and_export_through_the_cli(server: Server, corpus: Path, tmp_path: Path) -> None:
    heap, block = corpus / "go119__heap.pb.gz", corpus / "go119__block.pb.gz"
    done = cli("ingest", str(heap), "--labels", '{service_name="cli"}', "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert "memory:inuse_space:bytes:space:bytes" in done.stdout
    refused = cli("ingest", str(block), "--labels", '{service_name="cli"}', "--url", server.url)
    assert "pass name=mutex or name=block" in one_error_line(refused)
    assert (
        cli("ingest", str(block), "--name", "block", "--labels", '{service_name="cli"}', "--url", server.url).returncode
        == 0
    )
    out = tmp_path / "heap.pb.gz"
    done = cli("export", "--query", f'{HEAP}{{service_name="cli"}}', "--from", "0", "-o", str(out), "--url", server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == f"wrote {out.stat().st_size} bytes to {out}\n"
    assert totals(out) == totals(heap)
    assert top(out, "inuse_space") == top(heap, "inuse_space")
    bad = cli("export", "--query", "nosuchtype{}", "--url", server.url, "-o", str(out))
    line = one_error_line(bad)
    assert line.startswith("profstore: export: 400 ") and "nosuchtype" in line


@pytest.mark.parametrize("output", ["-", "/dev/stdout"])
def test_export_to_stdout_is_a_profile_go_tool_pprof_reads(
    server: Server, corpus: Path, ingested: dict[str, int], tmp_path: Path, output: str
) -> None:
    piped = tmp_path / "piped.pb.gz"
    query = f'{CPU}{{service_name="go119__cpu_10s"}}'
    done = cli_to_file(piped, "export", query, "--from", "0", "-o", output, "--url", server.url)
    assert done.returncode == 0, done.stderr
    # The status line is on stderr; stdout holds the profile alone.
    where = "stdout" if output == "-" else output
    assert done.stderr.decode() == f"wrote {piped.stat().st_size} bytes to {where}\n"
    assert piped.read_bytes()[:2] == b"\x1f\x8b"
    assert totals(piped)["cpu/nanoseconds"] == totals(corpus / "go119__cpu_10s.pb.gz")["cpu/nanoseconds"]


@pytest.mark.parametrize(
    ("service", "profile_type", "sample_index", "limit"),
    [
        # limits end where the next row's flat differs, so which rows make the cut does not hang on a tie
        ("go119__heap", HEAP, "inuse_space", 8),
        ("go119__cpu_10s", CPU, "cpu", 9),
        ("go119__goroutine", GOROUTINE, "goroutine", 4),
    ],
)
def test_top_prints_what_go_tool_pprof_top_prints_on_the_export(
    server: Server,
    ingested: dict[str, int],
    tmp_path: Path,
    service: str,
    profile_type: str,
    sample_index: str,
    limit: int,
) -> None:
    query = f'{profile_type}{{service_name="{service}"}}'
    done = cli("top", query, "--from", "0", "--limit", str(limit), "--url", server.url)
    assert done.returncode == 0, done.stderr
    ours = done.stdout.splitlines()
    export = tmp_path / "export.pb.gz"
    assert cli("export", query, "--from", "0", "-o", str(export), "--url", server.url).returncode == 0
    theirs = pprof_text("-top", f"-nodecount={limit}", f"-sample_index={sample_index}", "-symbolize=none", str(export))
    assert ours[0] == f"Type: {sample_index}"
    shown = next(line for line in theirs if line.startswith("Showing nodes accounting for"))
    table_start = ours.index(shown)  # the same totals, in the same unit
    header = "      flat  flat%   sum%        cum   cum%"
    # Between them, at most pprof's "Showing top N nodes out of M" when the server says how many functions there are.
    assert all(line.startswith("Showing top ") for line in ours[table_start + 1 : ours.index(header)])
    # Row by row, in pprof's order (sum% depends on it); pprof marks (inline) only from edges it kept.
    strip = re.compile(r" \((partial-)?inline\)$")
    assert [strip.sub("", r) for r in ours[ours.index(header) + 1 :]] == [
        strip.sub("", r) for r in theirs[theirs.index(header) + 1 :]
    ]
    assert len(ours) == ours.index(header) + 1 + limit


def test_diff_compares_two_windows(server: Server, corpus: Path, ingested: dict[str, int]) -> None:
    before, after = ingested["go119__cpu_before_regression_5s"], ingested["go119__cpu_after_regression_5s"]
    ms = 1_000_000
    window = ("--from", str(after // ms - 1), "--until", str(after // ms + 1))
    base = ("--base-from", str(before // ms - 1), "--base-until", str(before // ms + 1))
    query = f'{CPU}{{service_name="regression"}}'
    done = cli("diff", query, *window, *base, "--limit", "3", "--no-normalize", "--url", server.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["BASE", "CURRENT"]))
    rows = [line.split() for line in lines[header + 1 :]]
    assert len(rows) == 3
    # Independent truth: go tool pprof's raw per-function flat in each file (nanoseconds).
    from tests.pprof_tool import top_values

    b = top_values(corpus / "go119__cpu_before_regression_5s.pb.gz", "-unit=ns", "-sample_index=cpu")
    a = top_values(corpus / "go119__cpu_after_regression_5s.pb.gz", "-unit=ns", "-sample_index=cpu")
    changes = sorted(
        ((a.get(n, (0,))[0] - b.get(n, (0,))[0], n) for n in a.keys() | b.keys()), key=lambda x: -abs(x[0])
    )
    assert [r[-1] for r in rows] == [n for _, n in changes[:3]]
    first_change, first_name = changes[0]
    base_ns = b.get(first_name, (0,))[0]
    expected_relative = f"{100 * first_change / base_ns:+.1f}%" if base_ns else "new"
    assert rows[0][5] == expected_relative
    normalized = cli("diff", query, *window, *base, "--limit", "1", "--url", server.url)
    assert normalized.returncode == 0, normalized.stderr
    assert "pp" in normalized.stdout.splitlines()[-1]
    refused = cli("diff", query, "--base-from", "now-1h", "--url", server.url)
    assert refused.returncode == 2 and "--base-until" in refused.stderr


def test_diff_export_is_current_minus_base(
    server: Server, corpus: Path, ingested: dict[str, int], tmp_path: Path
) -> None:
    before, after = ingested["go119__cpu_before_regression_5s"], ingested["go119__cpu_after_regression_5s"]
    ms = 1_000_000
    out = tmp_path / "diff.pb.gz"
    done = cli(
        "export", f'{CPU}{{service_name="regression"}}', "--from", str(after // ms - 1), "--until", str(after // ms + 1),
        "--base-from", str(before // ms - 1), "--base-until", str(before // ms + 1), "-o", str(out), "--url", server.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = totals(corpus / "go119__cpu_after_regression_5s.pb.gz")["cpu/nanoseconds"]
    want -= totals(corpus / "go119__cpu_before_regression_5s.pb.gz")["cpu/nanoseconds"]
    assert totals(out)["cpu/nanoseconds"] == want
    half = cli("export", "cpu{}", "--base-from", "now-1h", "-o", str(out), "--url", server.url)
    assert half.returncode == 2 and "--base-from and --base-until go together" in half.stderr


def test_series_lists_labels_and_rfc3339_times(server: Server, ingested: dict[str, int]) -> None:
    done = cli("series", f'{CPU}{{service_name="regression"}}', "--from", "0", "--url", server.url)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split() == ["LABELS", "FIRST", "LAST", "PROFILES"]
    labels, first, last, profiles = row.split()
    assert labels == '{service_name="regression"}' and profiles == "2"
    assert RFC3339.match(first) and RFC3339.match(last)
    stamps = sorted((ingested["go119__cpu_before_regression_5s"], ingested["go119__cpu_after_regression_5s"]))
    assert [first, last] == [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 10**9)) for ns in stamps]


def test_ingest_without_service_name_takes_the_file_name(server: Server, corpus: Path, tmp_path: Path) -> None:
    profile = tmp_path / "checkout-api.pb.gz"
    profile.write_bytes((corpus / "go119__goroutine.pb.gz").read_bytes())
    done = cli("ingest", str(profile), "--labels", '{region="eu"}', "--url", server.url)
    assert done.returncode == 0, done.stderr
    note = done.stderr.splitlines()
    assert len(note) == 1 and 'stored as service_name="checkout-api"' in note[0] and "--labels" in note[0]
    series = cli("series", f'{GOROUTINE}{{service_name="checkout-api"}}', "--from", "0", "--url", server.url)
    assert '{region="eu", service_name="checkout-api"}' in series.stdout
    # Standard input: `curl …/debug/pprof/heap | profstore ingest -`.
    piped = cli(
        "ingest", "-", "--labels", '{service_name="from-stdin"}', "--url", server.url,
        stdin=(corpus / "go119__goroutine.pb.gz").read_bytes(),
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    assert piped.stdout.startswith("-: ") and "goroutine:goroutine:count:goroutine:count" in piped.stdout


def test_every_error_is_one_line_without_a_traceback(server: Server, tmp_path: Path) -> None:
    assert one_error_line(cli("ingest", "nosuch.pb.gz")) == "profstore: nosuch.pb.gz: no such file"
    assert one_error_line(cli("ingest", str(tmp_path))) == f"profstore: {tmp_path}: is a directory"
    debug = cli("--debug", "ingest", "nosuch.pb.gz", "--url", server.url)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
    assert "Traceback" in cli("export", "x{}", "-o", "-", "--url", server.url, "--debug").stderr
    # Config files: missing, and not YAML.
    assert "/nosuch.yaml" in one_error_line(cli("migrate", "--config", str(tmp_path / "nosuch.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("scrape_configs: [\n")
    assert "invalid YAML" in one_error_line(cli("serve", "--config", str(bad)))
    # The server's refusals: a bad parameter, a bad label set.
    assert one_error_line(cli("top", "x{}", "--url", server.url)).startswith("profstore: top: 400 ")
    assert "invalid labels" in one_error_line(cli("ingest", "-", "--labels", '{a=~"b"}', "--url", server.url))
    # Nothing listening, and a server that never answers.
    dead = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(cli("series", "x{}", "--url", dead))
    assert line.startswith(f"profstore: cannot reach {dead}: connection refused")
    with silent_server() as url:
        line = one_error_line(cli("targets", "--url", url, "--timeout", "0.5"))
        assert line == f"profstore: {url} did not answer within 0.5 s; raise --timeout"
    # argparse keeps its usage errors (exit 2).
    assert cli("top").returncode == 2
    assert cli("export", "x{}").returncode == 2


def test_ctrl_c_exits_130_without_a_traceback() -> None:
    with silent_server() as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "targets", "--url", url, "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True,
        )  # fmt: skip
        time.sleep(2)  # imports done, the request waiting
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err == "profstore: interrupted\n"


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers: a request to it waits for its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_data_dir_in_use_is_one_line_naming_the_process(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    try:
        assert srv.proc is not None
        want = f"profstore: {tmp_path / 'data' / 'profstore.duckdb'} is in use by another process (PID {srv.proc.pid}, "
        for args in (["serve", "--listen", f"127.0.0.1:{free_port()}"], ["migrate"]):
            line = one_error_line(cli(*args, "--data-dir", str(tmp_path / "data")))
            assert line.startswith(want) and line.endswith("stop it or use another --data-dir"), line
        # The second server's port is taken too: said in one line, before anything is opened.
        other = one_error_line(cli("serve", "--data-dir", str(tmp_path / "other"), "--listen", f"127.0.0.1:{srv.port}"))
        assert other == f"profstore: 127.0.0.1:{srv.port} is already in use by another process; pass another --listen"
    finally:
        srv.stop()


def test_version_url_from_the_environment_and_help(server: Server, ingested: dict[str, int]) -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout == f"profstore {importlib.metadata.version('profstore')}\n"
    query = f'{CPU}{{service_name="go119__cpu_10s"}}'
    dead = f"http://127.0.0.1:{free_port()}"
    env = dict(os.environ, PROFSTORE_URL=server.url)
    assert cli("series", query, "--from", "0", env=env).stdout.count("go119__cpu_10s") == 1
    env_dead = dict(os.environ, PROFSTORE_URL=dead)
    assert cli("series", query, "--from", "0", "--url", server.url, env=env_dead).returncode == 0  # flag beats env
    assert dead in one_error_line(cli("series", query, env=env_dead))
    commands = re.findall(r"^    (\w+)", cli("--help").stdout, re.MULTILINE)
    assert {"top", "diff", "series", "export", "ingest", "serve", "targets"} <= set(commands)
    for command in commands:
        text = cli(command, "--help")
        assert text.returncode == 0, command
        assert "FROM_" not in text.stdout and "QUERY_FLAG" not in text.stdout, text.stdout
        if "--url" in text.stdout:
            assert "$PROFSTORE_URL" in text.stdout and "SECONDS" in text.stdout


class _TextTarget(BaseHTTPRequestHandler):
    """A pprof endpoint that answers text, as a Go service whose CPU profiler is busy does."""

    BODY = (
        "Could not enable CPU profiling: cpu profiling already in use; another profiler holds this process's "
        "profiler, so every profile request answers this text instead of a pprof protobuf until it finishes"
    )

    def do_GET(self) -> None:
        body = self.BODY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def text_target() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _TextTarget)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_targets_show_the_whole_error_wrapped(tmp_path: Path, text_target: str) -> None:
    config = tmp_path / "profstore.yaml"
    config.write_text(
        "scrape_configs:\n  - job_name: busy\n    scrape_interval: 2s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{text_target}']\n"
    )
    srv = Server(tmp_path / "data", config).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            body = httpx.get(f"{srv.url}/api/v1/targets", timeout=10).json()
            if all(t["health"] == "down" for t in body["targets"]):
                break
            time.sleep(0.5)
        env = dict(os.environ, COLUMNS="80")
        done = cli("targets", "--url", srv.url, env=env)
    finally:
        srv.stop()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:5] == ["JOB", "INSTANCE", "PROFILE", "HEALTH", "LAST"]
    for t in body["targets"]:
        (row,) = [i for i, line in enumerate(lines) if line.split()[:3] == ["busy", text_target, t["profile"]]]
        assert RFC3339.match(lines[row].split()[4]), lines[row]
        below = []
        for line in lines[row + 1 :]:
            if not line.startswith("    "):
                break
            assert len(line) <= 80, line
            below.append(line.strip())
        # All of it, cause included, wrapped under its row.
        assert " ".join(below) == f"last error ({t['last_error_kind']}): {' '.join(t['last_error'].split())}"
        assert len(" ".join(below)) > 100


def test_regressions_lists_what_a_running_server_found(server: Server, corpus: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

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
    assert RFC3339.match(rows[0].split()[2])
    assert "cli-svc: sort.insertionSort flat +" in rows[0]
    assert (
        cli("regressions", "--service", "cli-svc", "--state", "resolved", "--url", server.url).stdout.count("\n") == 1
    )
    down = cli("regressions", "--url", "http://127.0.0.1:9")
    assert one_error_line(down).startswith("profstore: cannot reach http://127.0.0.1:9: connection refused")
