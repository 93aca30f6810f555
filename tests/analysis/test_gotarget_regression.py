"""End to end with a real Go program scraped by a real ``profstore serve``: detection names what changed.

``tests/gotarget`` runs with one of its switches; ``profstore serve`` scrapes it as it would any
target: CPU profiles of 1 s every 2 s (the shortest interval a timed profile allows) and the
allocs endpoint every 2 s (allocated bytes as deltas, in-use bytes as snapshots). ``POST
/api/v1/analyze`` then tests the time after the switch against the time before it, over every
profile type stored, and each test checks the whole answer:

- a slowed function is the one finding, named as the place where the change enters;
- a standard-library leaf that rose because one caller calls it more is named, with that caller;
- the same program without a switch has no finding at all;
- a heap leak is found, its allocation site named.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.gotarget import build, running
from tests.backends import Backend
from tests.conftest import Server
from tests.pprof_tool import go_bin

CPU = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
ALLOC = "memory:alloc_space:bytes:space:bytes"
INUSE = "memory:inuse_space:bytes:space:bytes"
SERVICE = "gotarget"
INTERVAL_S = 2  # the shortest a CPU profile allows: ?seconds=1 must end before the next run
MIN_PROFILES = 8

# Seconds from the Go program's start. The warm-up lets the heap and the scheduler settle and
# covers the first scrapes (serve reads the file_sd file within 2 s, and its first memory scrape
# only sets the collector's baseline).
WARM_UP_S = 8.0
BASELINE_S = 36.0  # 17 profiles of each type in the baseline window (it ends before the switch)
RECENT_S = 30.0  # 15: at complete separation Mann-Whitney's p is then ~8e-7, room under BH's bar
SWITCH_S = WARM_UP_S + BASELINE_S
# A profile covers the time after its timestamp (a CPU profile 1 s, a memory delta the 2 s since the
# previous scrape): the baseline ends a scrape interval before the switch, so no profile in it saw
# the switch, and the recent window starts a moment after it (the program starts a little after
# the test reads the clock).
BEFORE_SWITCH_S = INTERVAL_S
AFTER_SWITCH_S = 0.5
# The last profiles whose timestamps fall in a window are stored up to an interval after it ends.
SETTLE_S = INTERVAL_S + 1.5
# The leak starts 14 s into its window and grows for 30 s.
LEAK_S = WARM_UP_S + 14
LEAK_WINDOW = (WARM_UP_S, LEAK_S + 30)

# A minute of data instead of a day: the rise must hold 10 s rather than 10 min, and the one run
# here may use an FDR of 1 % that a week of runs every 5 minutes could not afford (the default's
# 0.01 % is for ~2,000 runs a week). 33 profiles give a rank test little to work with, and a rise
# must pass it twice, as a share and as a rate: on a busy machine the CPU the program gets varies
# by a fifth from one second to the next, and the rate of crypto/sha256.block (caller test) came
# out at p = 4e-5, above 0.1 %'s bar for it among ~260 tests. The control run's smallest p-values
# were 2e-3 and 1e-2, far above even 1 %'s first bar (4e-5).
CONFIG = """\
analysis: {{enabled: false, persist_s: 10, min_profiles: {min_profiles}, alpha: 0.01}}
scrape_configs:
  - job_name: gotarget
    scrape_interval: {interval}s
    scrape_timeout: {interval}s
    file_sd_configs: [{{files: [targets/*.json]}}]   # written once the Go program listens
    profiling_config:
      pprof_config:   # CPU and memory (process_cpu, memory) are what these tests are about
        goroutine: {{enabled: false}}
        block: {{enabled: false}}
        mutex: {{enabled: false}}
"""

# A minute of live scraping per test (wall-clock bound, whatever the store): on the DuckDB file only,
# to keep the suite's time; detection over a lake's store is tests/api/test_regressions.py's.
pytestmark = pytest.mark.backends(
    "duckdb", reason="a minute of live scraping per test; detection on a lake is covered by tests/api/test_regressions"
)


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("gotarget-bin"), go_bin())


def ms(ns: float) -> str:
    """Unix nanoseconds as the API's milliseconds."""
    return str(int(ns) // 10**6)


class Observed:
    """What one scraped run of the Go program gave: the analysis, and the profiles it read."""

    def __init__(self, body: dict[str, Any], counts: dict[str, dict[str, int]]) -> None:
        self.body = body
        self.counts = counts  # profile type -> window name -> profiles in it

    @property
    def findings(self) -> list[dict[str, Any]]:
        return list(self.body["findings"])

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["kind"] == kind]

    def __repr__(self) -> str:
        """Everything a failed assertion needs: verdicts, test count, profiles read, every finding."""
        lines = [f"verdicts {self.body['verdicts']}, {self.body['tests']} tests, profiles {self.counts}"]
        for f in self.findings:
            d = f["details"]
            lines.append(
                f"  {f['kind']} {f['profile_type']} {f['function']} {f['metric']} {f['relative']:+.2f} "
                f"p_adj={f['p_adjusted']:.2g} entry={d.get('entry')} sites={d.get('sites')}"
            )
        return "\n".join(lines)


# The windows of the regression tests, in seconds from the program's start.
BASELINE = (WARM_UP_S, SWITCH_S - BEFORE_SWITCH_S)
RECENT = (SWITCH_S + AFTER_SWITCH_S, SWITCH_S + AFTER_SWITCH_S + RECENT_S)
Window = tuple[float, float]


@pytest.fixture
def observe(binary: Path, backend: Backend, tmp_path: Path) -> Iterator[Any]:
    def run(*flags: str, recent: Window = RECENT, baseline: Window | None = BASELINE) -> Observed:
        """Run the Go program with ``flags``, scraped by a new ``profstore serve``, until ``recent``
        is stored; then analyze it against ``baseline`` (none: the service's default, a day before,
        holds no data and no regression is tested). Windows in seconds from the program's start."""
        config = CONFIG.format(min_profiles=MIN_PROFILES, interval=INTERVAL_S)
        # serve first, so the time it takes to start (long on a busy machine) is not the warm-up's.
        with backend.serve(tmp_path / "serve", config) as server:
            t_go = time.time_ns()
            with running(binary, tmp_path, *flags) as url:
                sd = tmp_path / "serve" / "targets"
                target = [{"targets": [url.removeprefix("http://")], "labels": {"service_name": SERVICE}}]
                (sd / "gotarget.json.tmp").write_text(json.dumps(target))
                (sd / "gotarget.json.tmp").rename(sd / "gotarget.json")  # read whole or not at all
                windows = {"recent": recent} | ({"baseline": baseline} if baseline else {})
                ns = {k: (t_go + a * 1e9, t_go + b * 1e9) for k, (a, b) in windows.items()}
                time.sleep(max(0.0, (ns["recent"][1] - time.time_ns()) / 1e9 + SETTLE_S))
                params = {"from": ms(ns["recent"][0]), "until": ms(ns["recent"][1])}
                if "baseline" in ns:
                    params |= {"baseline_from": ms(ns["baseline"][0]), "baseline_until": ms(ns["baseline"][1])}
                r = httpx.post(f"{server.url}/api/v1/analyze", params=params, timeout=120)
                assert r.status_code == 200, r.text
                counts = {pt: {k: _count(server, pt, *w) for k, w in ns.items()} for pt in (CPU, ALLOC, INUSE)}
                seen = Observed(r.json(), counts)
                print(seen)  # what was found, also when the test passes (pytest -s or -rP shows it)
                return seen

    (tmp_path / "serve" / "targets").mkdir(parents=True)
    yield run


def _count(server: Server, ptype: str, start: float, end: float) -> int:
    r = httpx.get(
        f"{server.url}/api/v1/profiles",
        params={"query": f'{ptype}{{service_name="{SERVICE}"}}', "from": ms(start), "until": ms(end)},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return sum(1 for p in r.json()["profiles"] if start <= p["ts"] < end)


def assert_tested(seen: Observed, *ptypes: str) -> None:
    """Both windows held enough profiles of each type: a run without findings tested something."""
    for pt in ptypes:
        assert min(seen.counts[pt].values()) >= MIN_PROFILES, seen


def test_the_slowed_function_is_named(observe: Any) -> None:
    # 16 calls per tick (4x the default): a few percent of the program's CPU, enough samples per
    # 1-second profile to tell 3x apart also when the machine is busy and the program gets less CPU.
    seen = observe(
        "-checksum", "-checksum-blocks", "16", "-checksum-slow-after", f"{SWITCH_S}s",
    )  # fmt: skip
    assert_tested(seen, CPU, ALLOC)
    # One finding over every type, naming the function (as its flat or its cum share: it is a leaf,
    # both rise); its callers' cum rose by as much and is explained by it, not reported again.
    # Nothing in alloc_space: the program allocates as much as before.
    assert [(f["kind"], f["profile_type"], f["function"]) for f in seen.findings] == [
        ("regression", CPU, "main.checksumBlock")
    ], seen
    f = seen.findings[0]
    # 3x the work of a function holding s of the CPU takes its share to 3s / (1 + 2s): at the few
    # percent it holds here, well over 1.5x.
    assert f["relative"] > 0.5, seen
    assert f["baseline"]["hi"] < f["current"]["lo"], seen
    # One caller path (checksumWork's): the change enters at the function itself.
    assert f["details"]["entry"]["function"] == "main.checksumBlock", seen


def test_the_caller_that_calls_more_is_named(observe: Any) -> None:
    # workloadHashLoop hashes 16 KiB 16 times per tick (2x the default, ~5 % of a core), ten times as
    # often after the switch (as when a cache in front of it stops hitting); hashWork's hashing
    # (~30 % of a core, time-based) is unchanged. The leaf crypto/sha256.block rises; the path that
    # rose parts from the unchanged one at the caller. The leaf's share rises by less than the
    # caller's (hashWork's share of the larger total falls): ten times, not three, so that a busy
    # machine, where the program gets a third of a core and 1-second profiles hold 30 samples,
    # still tells it apart.
    seen = observe(
        "-hashloop", "-hashloop-calls", "16", "-hashloop-factor", "10", "-hashloop-more-after", f"{SWITCH_S}s"
    )
    assert_tested(seen, CPU, ALLOC)
    # sha256's own functions above the leaf (Sum256, Write, ...) and workloadHashLoop's cum rose
    # with it: the leaf accounts for them, detection folds them into its finding.
    assert [(f["kind"], f["profile_type"], f["function"]) for f in seen.findings] == [
        ("regression", CPU, "crypto/sha256.block")
    ], seen
    entry = seen.findings[0]["details"]["entry"]
    assert (entry["function"], entry["how"]) == ("main.workloadHashLoop", "caller"), seen


def test_the_unchanged_program_has_no_finding(observe: Any) -> None:
    seen = observe()
    assert_tested(seen, CPU, ALLOC, INUSE)
    assert seen.findings == [], seen


def test_the_leak_and_its_allocation_site_are_found(observe: Any) -> None:
    # 1.5 MB/s of 64 KiB buffers from LEAK_S on, in a window that starts before it: flat in-use
    # bytes, then a steady climb of ~90 MB/min (the leak floor is 256 KiB/min). The analysis's leak
    # window is its recent window; no baseline, so only leaks are tested.
    seen = observe("-leak-after", f"{LEAK_S}s", "-leak-rate", "1500000", recent=LEAK_WINDOW, baseline=None)
    assert_tested(seen, INUSE)
    leaks = seen.of("leak")
    assert [f["profile_type"] for f in leaks if f["profile_type"] == INUSE] == [INUSE], seen
    f = next(f for f in leaks if f["profile_type"] == INUSE)
    assert f["function"] == "main.leakyCache", seen
    assert f["details"]["sites"][0]["function"] == "main.leakyCache", seen
    # Any other leak finding (in-use objects grow too) is the same leak.
    assert {g["function"] for g in leaks} == {"main.leakyCache"}, seen
