"""The load bench, short: simulated targets scraped on schedule while query clients run.

``python -m bench.collector`` (README "Collector": 200 targets at 15 s and 20 query clients for
5 minutes) here with 40 targets at 5 s, 6 clients, 30 s. Only invariants are asserted: no 5xx,
queries answered, every due scrape completed or reported as skipped (nothing lost), bounded
memory. How late scrapes ran and how fast queries were is the bench's report, not a test: on a
shared 2-core machine a wall-clock bound fails for reasons that are not bugs.
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def _cell(out: str, what: str) -> str:
    m = re.search(rf"^\| {re.escape(what)} \| ([^|]+) \| ([^|]+) \|", out, flags=re.M)
    assert m is not None, f"no row {what!r} in:\n{out}"
    return m.group(1).strip() + " | " + m.group(2).strip()


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def test_scrapes_accounted_for_and_queries_answered_under_load() -> None:
    cmd = [sys.executable, "-m", "bench.collector", "--targets", "40", "--interval", "5", "--duration", "30",
           "--query-clients", "6"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    queries = _cell(out, "queries (6 clients)")
    assert "5xx: 0;" in queries, queries
    answered = int(re.match(r"([\d,]+) answered", queries).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert answered > 0, queries
    # Nothing lost: every due run was completed (ok or failed with a kind), skipped and counted, or is
    # the one run still in flight for its target x type when the window closed.
    keys = int(re.search(r"= (\d+)", _cell(out, "targets x types")).group(1))  # type: ignore[union-attr]
    due = _num(_cell(out, "runs due").split(" | ")[0])
    completed = _num(_cell(out, "scrapes completed").split(":")[0])
    skipped = _num(re.search(r"profstore skipped ([\d,]+)", _cell(out, "dropped scrapes")).group(1))  # type: ignore[union-attr]
    assert due > 0 and completed > 0, out
    assert 0 <= due - completed - skipped <= keys, out
    peak = int(re.search(r"peak (\d+) MiB", _cell(out, "profstore RSS")).group(1))  # type: ignore[union-attr]
    assert peak < 2048, out
