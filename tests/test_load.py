"""The load bench, short: simulated targets scraped on schedule while query clients run.

``python -m bench.collector`` (README "Collector": 200 targets at 15 s and 20 query clients for
5 minutes) here with 40 targets at 5 s, 6 clients, 30 s: no scrape dropped, no 5xx, bounded memory.
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


def test_scrapes_on_time_and_queries_answered_under_load() -> None:
    cmd = [sys.executable, "-m", "bench.collector", "--targets", "40", "--interval", "5", "--duration", "30",
           "--query-clients", "6"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert _cell(out, "dropped scrapes").startswith("0 of ")
    queries = _cell(out, "queries (6 clients)")
    assert "5xx: 0;" in queries, queries
    answered = int(re.match(r"([\d,]+) answered", queries).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert answered >= 50, queries
    peak = int(re.search(r"peak (\d+) MiB", _cell(out, "profstore RSS")).group(1))  # type: ignore[union-attr]
    assert peak < 2048, out
