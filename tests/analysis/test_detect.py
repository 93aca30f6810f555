"""Detection on synthetic streams drawn from real CPU and heap profiles (bench/synthetic.py).

Each case knows the truth: which function was slowed, when, by how much; the control streams
have none. Windows are shorter than the service's defaults (4 h baseline) to keep the suite fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.synthetic import StackModel, cpu_model, gauge_model, panel_of
from service.analysis.detect import confirm, screen
from service.analysis.findings import Finding, Tuning
from service.analysis.leaks import leak_findings, leak_tests
from service.analysis.panel import Panel
from service.types import ProfileType, TimeRange

S = 15 * 10**9
MIN = 60 * 10**9
HOUR = 60 * MIN
T = Tuning()


@pytest.fixture(scope="module")
def model(corpus: Path) -> StackModel:
    return cpu_model(corpus)


def stream(
    model: StackModel,
    slow: dict[int, float],
    *,
    change: int,
    until: int | None = None,
    units: int = 1,
    n: int = 6000,
    hours: float = 4.5,
    versions: tuple[str, str] | None = None,
    seed: int = 1,
) -> tuple[Panel, TimeRange, TimeRange]:
    """Scrapes every 15 s over ``hours``; ``slow`` applies from index ``change`` (to ``until``)."""
    rng = np.random.default_rng(seed)
    steps = int(hours * HOUR / S)
    ts, unit, counts, ver = [], [], [], []
    for i in range(steps):
        for u in range(units):
            on = change <= i < (until if until is not None else steps)
            counts.append(model.draw(rng, n, slow if on else None))
            ts.append(i * S + u * 10**6)
            unit.append(u)
            if versions:
                ver.append(versions[1] if i >= change else versions[0])
    p = panel_of(model, np.array(counts), np.array(ts, np.int64), np.array(unit, np.int64), versions=ver or None)
    end = steps * S
    recent = TimeRange(end - 30 * MIN, end)
    return p, TimeRange(recent.start - 4 * HOUR, recent.start), recent


def found(p: Panel, base: TimeRange, recent: TimeRange, t: Tuning = T) -> list[Finding]:
    sc = screen(p, base, recent, t)
    assert sc is not None
    return [v.finding for v in confirm([sc], t, "default") if v.finding is not None]


def top_functions(model: StackModel) -> list[int]:
    return [int(j) for j in np.argsort(-model.flat_shares())]


def test_a_slowed_function_is_found_with_its_change_point(model: StackModel) -> None:
    f = top_functions(model)[3]  # ~5 % of CPU
    steps = int(4.5 * HOUR / S)
    change = steps - 80  # 20 min before the end
    p, base, recent = stream(model, {f: 0.5}, change=change)
    out = found(p, base, recent)
    assert [(x.function, x.metric) for x in out] == [(model.names[f], "flat_share")]
    x = out[0]
    assert abs(x.change_ts - change * S) <= 2 * S
    lo, hi = x.details["change_interval"]
    assert lo <= change * S <= hi and lo <= x.change_ts <= hi
    assert hi - lo <= 8 * S  # a +50 % step: a few scrapes wide, not the window
    assert x.relative == pytest.approx(0.5, rel=0.25)
    assert x.baseline.hi < x.current.lo
    assert x.p_adjusted <= T.alpha
    assert x.instances == ["host-0:6060"]


def test_no_change_no_finding(model: StackModel) -> None:
    for seed in (1, 2, 3):
        p, base, recent = stream(model, {}, change=0, seed=seed)
        assert found(p, base, recent) == []


def test_a_rise_that_went_away_is_not_reported(model: StackModel) -> None:
    f = top_functions(model)[3]
    steps = int(4.5 * HOUR / S)
    p, base, recent = stream(model, {f: 0.5}, change=steps - 100, until=steps - 60)  # 10 min, gone 15 min ago
    sc = screen(p, base, recent, T)
    assert sc is not None
    verdicts = confirm([sc], T, "default")
    assert [v.finding for v in verdicts if v.finding] == []
    assert {v.reason for v in verdicts if v.function == model.names[f]} <= {"went-away"}


def test_a_young_rise_waits_for_persist(model: StackModel) -> None:
    f = top_functions(model)[3]
    steps = int(4.5 * HOUR / S)
    p, base, recent = stream(model, {f: 2.0}, change=steps - 18)  # 4.5 min old, persist is 5 min
    sc = screen(p, base, TimeRange(recent.end - 5 * MIN, recent.end), T)  # a window it nearly fills
    assert sc is not None
    verdicts = confirm([sc], T, "default")
    assert [v.finding for v in verdicts if v.finding] == []
    assert "pending" in {v.reason for v in verdicts if v.function == model.names[f]}


def test_cost_moved_between_siblings_is_a_cost_shift(model: StackModel) -> None:
    # sort.insertionSort and sort.partition share their caller (sort.pdqsort): move cost from the
    # second to the first, same total, as a refactor would.
    names = model.names
    gain, lose = names.index("sort.insertionSort"), names.index("sort.partition")
    shares = model.flat_shares()
    moved = 0.5 * shares[gain]
    slow = {gain: moved / shares[gain], lose: -moved / shares[lose]}
    steps = int(4.5 * HOUR / S)
    p, base, recent = stream(model, slow, change=steps - 80)
    sc = screen(p, base, recent, T)
    assert sc is not None
    verdicts = confirm([sc], T, "default")
    assert [v.finding for v in verdicts if v.finding] == []
    assert "cost-shift" in {v.reason for v in verdicts if v.function == "sort.insertionSort"}


def test_version_change_at_the_change_point_is_attributed(model: StackModel) -> None:
    f = top_functions(model)[3]
    steps = int(4.5 * HOUR / S)
    p, base, recent = stream(model, {f: 0.5}, change=steps - 80, versions=("v1.4.0", "v1.5.0"))
    (x,) = found(p, base, recent)
    assert x.attribution == {"version": {"from": ["v1.4.0"], "to": ["v1.5.0"]}}


def test_pooling_instances_finds_what_one_alone_misses(model: StackModel) -> None:
    f = top_functions(model)[5]  # ~1.3 % of CPU
    steps = int(4.5 * HOUR / S)
    one, base, recent = stream(model, {f: 0.08}, change=steps - 110, n=1500, seed=7)
    assert model.names[f] not in {x.function for x in found(one, base, recent)}
    many, base, recent = stream(model, {f: 0.08}, change=steps - 110, n=1500, units=8, seed=7)
    pooled = [x for x in found(many, base, recent) if x.function == model.names[f]]
    assert pooled and pooled[0].metric == "flat_share"


def test_a_function_that_fell_makes_no_other_function_a_finding(model: StackModel) -> None:
    """The largest function's own cost halves: every other function's share rises by about its
    own share over (1 - top / 2), many standard errors at 6,000 samples per scrape, but none of
    them costs more per second. Tested as shares alone, this stream reports several of them."""
    top = top_functions(model)[0]
    steps = int(4.5 * HOUR / S)
    p, base, recent = stream(model, {top: -0.5}, change=steps - 100)
    assert found(p, base, recent) == []
    shares_only = Panel(*(getattr(p, f) for f in Panel.__slots__ if f not in ("duration", "callers")))
    shares_only.callers = p.callers
    shares_only.duration = np.zeros(len(p))  # no durations: the rate is per profile, and still flat
    assert found(shares_only, base, recent) == []


def heap_stream(model: StackModel, leak_site: int | None, per_min: float, start: int, seed: int = 1) -> Panel:
    rng = np.random.default_rng(seed)
    steps = 120  # 30 min at 15 s
    counts = []
    for i in range(steps):
        levels = model.p * rng.lognormal(0.0, 0.05, model.p.size)
        if leak_site is not None and i >= start:
            levels[model.leaf == leak_site] += per_min * (i - start) * S / MIN / max(1, (model.leaf == leak_site).sum())
        counts.append(levels)
    pt = ProfileType.parse("memory:inuse_space:bytes:space:bytes")
    return panel_of(
        model, np.array(counts), np.arange(steps, dtype=np.int64) * S, np.zeros(steps, np.int64), profile_type=pt
    )


def test_a_memory_leak_is_found_with_its_site(corpus: Path) -> None:
    model = gauge_model(corpus / "go119__heap.pb.gz", 3)
    site = int(model.leaf[0])
    p = heap_stream(model, site, 1 << 20, start=60)  # 1 MB/min for the last 15 min
    window = TimeRange(0, 120 * S)
    out = leak_findings(leak_tests(p, window, T), T, "default")
    assert len(out) == 1
    x = out[0]
    assert x.kind == "leak" and x.function == model.names[site]
    assert x.details["per_minute"] == pytest.approx(1 << 20, rel=0.35)
    assert abs(x.change_ts - 60 * S) <= 4 * S
    control = heap_stream(model, None, 0, start=0)
    assert leak_findings(leak_tests(control, window, T), T, "default") == []


def test_a_leak_ending_in_a_collectors_dip_still_reads_as_a_rise(corpus: Path) -> None:
    # The last three scrapes fall to below the level before the leak (a collection's trough): the
    # trend holds, and the level now is read over the window's last fifth, not those three.
    model = gauge_model(corpus / "go119__heap.pb.gz", 3)
    p = heap_stream(model, int(model.leaf[0]), 4 << 20, start=40)
    p.total[-3:] = p.total[:40].mean() * 0.8
    out = leak_findings(leak_tests(p, TimeRange(0, 120 * S), T), T, "default")
    assert len(out) == 1 and out[0].relative > 0 and out[0].current.mean > out[0].baseline.mean
