"""Client-side deltas of cumulative profiles, checked against hand-computed amounts and ``go tool pprof``.

Later scrapes are built from real Go profiles of the corpus by adding known amounts to their
values. Samples are compared by a content key computed here by plain iteration (function names,
lines, addresses, mapping file, labels), independent of the hashing the code under test uses.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from service.collector import delta
from service.collector.delta import CUMULATIVE_TYPES
from service.pprof.decode import decode, from_profile, resolve
from service.pprof.encode import encode
from service.pprof.model import Function, Label, Line, Location, Mapping, Profile, Samples, ValueType
from tests.pprof_tool import go_bin, totals

S = 1_000_000_000
T0 = 1_700_000_000 * S  # scrape times: 15 s apart
T1, T2, T3 = T0 + 15 * S, T0 + 30 * S, T0 + 45 * S

Key = tuple[tuple[object, ...], frozenset[Label]]


@dataclass(frozen=True)
class DeltaResult:
    profile: Profile | None
    outcome: str
    detail: str


class Deltas:
    """The collector's deltas fed and read as the model: these tests build and inspect profiles that way.

    The collector hands it the decoded columns of a scrape and stores the columns it returns;
    here each profile goes in through :func:`from_profile` and the result comes out resolved.
    """

    def __init__(self) -> None:
        self.inner = delta.Deltas()

    def apply(self, key: str, p: Profile, scraped_at_ns: int) -> DeltaResult:
        r = self.inner.apply(key, from_profile(p, content_hash=0, size=0), scraped_at_ns)
        return DeltaResult(None if r.envelope is None else resolve(r.envelope), r.outcome, r.detail)

    def __contains__(self, key: object) -> bool:
        return key in self.inner

    def __len__(self) -> int:
        return len(self.inner)

    def forget(self, keep: list[str]) -> None:
        self.inner.forget(keep)

    def drop(self, key: str) -> None:
        self.inner.drop(key)


def load(corpus: Path, name: str) -> Profile:
    return decode((corpus / name).read_bytes())


def with_values(p: Profile, values: np.ndarray) -> Profile:
    return replace(p, samples=replace(p.samples, values=np.asarray(values, np.int64)))


def renumber(p: Profile, seed: int) -> Profile:
    """The same profile with location ids shuffled (and moved), as Go renumbers them per scrape."""
    rng = np.random.default_rng(seed)
    n = len(p.locations)
    new = (rng.permutation(n) + 101).astype(np.uint64)
    lookup = np.zeros(int(p.locations.id.max()) + 1, np.uint64)
    lookup[p.locations.id] = new
    s = p.samples
    return replace(
        p,
        locations=replace(p.locations, id=new),
        samples=replace(s, location_ids=lookup[s.location_ids]),
    )


def content_keys(p: Profile) -> list[Key]:
    """Each sample's stack by content (never by location id) and its label set."""
    fn = {f.id: f for f in p.functions.entities(p.strings)}
    mp = {m.id: m for m in p.mappings.entities(p.strings)}
    loc = {}
    for x in p.locations.entities():
        m = mp.get(x.mapping_id)
        lines = tuple((fn[ln.function_id].name, fn[ln.function_id].filename, ln.line) for ln in x.lines)
        loc[x.id] = (x.address, m.filename if m else "", lines)
    s = p.samples
    out = []
    for i in range(len(s)):
        ids = s.location_ids[s.offsets[i] : s.offsets[i + 1]].tolist()
        out.append((tuple(loc[j] for j in ids), frozenset(s.labelsets[s.labelset_index[i]])))
    return out


def by_content(p: Profile) -> dict[Key, list[int]]:
    """Values per content key, equal keys summed (what pprof's merge would do)."""
    out: dict[Key, list[int]] = {}
    for k, v in zip(content_keys(p), p.samples.values.tolist(), strict=True):
        out[k] = [a + b for a, b in zip(out[k], v, strict=True)] if k in out else v
    return out


def write(tmp_path: Path, name: str, p: Profile) -> Path:
    path = tmp_path / name
    path.write_bytes(encode(p))
    return path


def pprof_top(path: Path, sample_index: str, diff_base: Path | None = None) -> list[tuple[str, str, str]]:
    """``go tool pprof -top`` rows (flat, cum, name) in exact units, with no node dropped."""
    args = [go_bin(), "tool", "pprof", "-top", "-symbolize=none", "-nodecount=100000", "-nodefraction=0"]
    args += ["-edgefraction=0", "-unit=B", f"-sample_index={sample_index}"]
    if diff_base is not None:
        args.append(f"-diff_base={diff_base}")
    proc = subprocess.run([*args, str(path)], capture_output=True, timeout=120, check=True)
    lines = proc.stdout.decode().splitlines()
    start = next(i for i, line in enumerate(lines) if "flat%" in line)
    rows = [line.split(maxsplit=5) for line in lines[start + 1 :] if line.strip()]
    return sorted((r[0], r[3], r[5]) for r in rows)


def delta_of(base: Profile, later: Profile, key: str = "svc") -> DeltaResult:
    deltas = Deltas()
    first = deltas.apply(key, base, T0)
    assert (first.profile, first.outcome) == (None, "baseline")
    return deltas.apply(key, later, T1)


def test_real_consecutive_scrapes_delta_as_pprof_diff_base(corpus: Path, tmp_path: Path) -> None:
    # go119__heap and go119__allocs were scraped one after the other from the same process.
    heap, allocs = load(corpus, "go119__heap.pb.gz"), load(corpus, "go119__allocs.pb.gz")
    result = delta_of(heap, allocs)
    assert result.outcome == "delta"
    assert result.profile is not None
    before, after = write(tmp_path, "heap.pb.gz", heap), write(tmp_path, "allocs.pb.gz", allocs)
    out = write(tmp_path, "delta.pb.gz", result.profile)
    for t in ("alloc_objects", "alloc_space"):
        assert pprof_top(out, t) == pprof_top(after, t, diff_base=before)
    for t in ("inuse_objects", "inuse_space"):
        assert pprof_top(out, t) == pprof_top(after, t)
    got, was, now = totals(out), totals(before), totals(after)
    assert got["alloc_space/bytes"] == now["alloc_space/bytes"] - was["alloc_space/bytes"] > 0
    assert got["inuse_space/bytes"] == now["inuse_space/bytes"]


def test_heap_delta_is_exactly_the_added_amounts(corpus: Path, tmp_path: Path) -> None:
    base = load(corpus, "go119__heap.pb.gz")
    v = base.samples.values
    n = len(base.samples)
    added = np.zeros((n, 2), np.int64)
    added[::3] = v[::3, :2] + 1  # every third stack allocated as much again, plus one
    later_values = v.copy()
    later_values[:, :2] += added
    later_values[:, 2:] = v[:, 2:] // 2 + np.arange(n)[:, None] % 2  # in-use snapshot changed freely
    # A new identity: the stack of sample 0 with a label it never had.
    s = base.samples
    new_label = (Label("bytes", num=12345),)
    depth0 = int(s.offsets[1] - s.offsets[0])
    later = renumber(
        replace(
            base,
            samples=Samples(
                np.append(s.offsets, s.offsets[-1] + depth0),
                np.concatenate([s.location_ids, s.location_ids[: s.offsets[1]]]),
                np.vstack([later_values, [[7, 7 * 12345, 1, 12345]]]),
                np.append(s.labelset_index, len(s.labelsets)).astype(np.int32),
                [*s.labelsets, new_label],
            ),
        ),
        seed=1,
    )

    result = delta_of(base, later)

    assert result.outcome == "delta"
    assert result.profile is not None
    keys = content_keys(base)
    expected = {
        keys[i]: [*added[i].tolist(), *later_values[i, 2:].tolist()]
        for i in range(n)
        if added[i].any() or later_values[i, 2:].any()
    }
    expected[(keys[0][0], frozenset(new_label))] = [7, 7 * 12345, 1, 12345]
    assert by_content(result.profile) == expected
    assert len(result.profile.samples) == len(expected)  # one sample per identity, zero ones dropped
    assert result.profile.sample_types == base.sample_types
    assert (result.profile.period_type, result.profile.period) == (base.period_type, base.period)
    path = write(tmp_path, "delta.pb.gz", result.profile)
    assert totals(path) == {
        "alloc_objects/count": int(added[:, 0].sum()) + 7,
        "alloc_space/bytes": int(added[:, 1].sum()) + 7 * 12345,
        "inuse_objects/count": int(later_values[:, 2].sum()) + 1,
        "inuse_space/bytes": int(later_values[:, 3].sum()) + 12345,
    }


def test_unchanged_renumbered_scrape_stores_nothing_but_in_use(corpus: Path, tmp_path: Path) -> None:
    block = load(corpus, "go119__block.pb.gz")
    result = delta_of(block, renumber(block, seed=2))
    assert result.outcome == "delta"
    assert result.profile is not None
    assert len(result.profile.samples) == 0
    assert totals(write(tmp_path, "empty.pb.gz", result.profile)) == {"contentions/count": 0, "delay/nanoseconds": 0}

    heap = load(corpus, "go119__heap.pb.gz")
    result = delta_of(heap, renumber(heap, seed=3))
    assert result.profile is not None
    expected = {
        k: [0, 0, *v[2:]] for k, v in zip(content_keys(heap), heap.samples.values.tolist(), strict=True) if any(v[2:])
    }
    assert by_content(result.profile) == expected


def test_block_delta_matches_pprof_totals(corpus: Path, tmp_path: Path) -> None:
    block = load(corpus, "go119__block.pb.gz")
    v = block.samples.values
    added = np.zeros_like(v)
    added[[1, 4]] = [[3, 3_000_000], [10, 123_456_789]]
    result = delta_of(block, renumber(with_values(block, v + added), seed=4))
    assert result.profile is not None
    keys = content_keys(block)
    assert by_content(result.profile) == {keys[1]: [3, 3_000_000], keys[4]: [10, 123_456_789]}
    path = write(tmp_path, "block_delta.pb.gz", result.profile)
    assert totals(path) == {"contentions/count": 13, "delay/nanoseconds": 126_456_789}


def _profile(rows: list[tuple[list[int], list[int], tuple[Label, ...]]], loc_ids: tuple[int, int, int]) -> Profile:
    """A small contentions/delay profile over three locations with the given ids (for renumbering)."""
    fns = [Function(1, "main.a", filename="a.go"), Function(2, "main.b", filename="b.go")]
    a, b, c = loc_ids
    locs = [
        Location(a, 1, 0x1000, (Line(1, 10),)),
        Location(b, 1, 0x2000, (Line(2, 20),)),
        Location(c, 1, 0x3000, (Line(2, 30),)),
    ]
    return Profile.build(
        [ValueType("contentions", "count"), ValueType("delay", "nanoseconds")],
        Samples.of(rows, 2),
        mappings=[Mapping(1, 0x1000, 0x9000, 0, "/bin/app", "abc")],
        locations=locs,
        functions=fns,
        period_type=ValueType("contentions", "count"),
        period=1,
    )


def test_label_sets_distinguish_identities_regardless_of_order() -> None:
    ab = (Label("a", "1"), Label("b", "2"))
    ba = (Label("b", "2"), Label("a", "1"))
    other = (Label("a", "1"), Label("b", "3"))
    base = _profile([([1, 2], [1, 100], ab), ([1, 2], [5, 500], other), ([1, 2], [2, 200], ())], (1, 2, 3))
    # Same stacks, location ids renumbered, label order reversed: only the "other" set grew.
    later = _profile([([9, 8], [1, 100], ba), ([9, 8], [6, 650], other), ([9, 8], [2, 200], ())], (9, 8, 7))
    result = delta_of(base, later)
    assert result.profile is not None
    keys = content_keys(later)
    assert by_content(result.profile) == {keys[1]: [1, 150]}


def test_samples_of_equal_identity_are_summed_first() -> None:
    base = _profile([([1, 2], [4, 400], ()), ([1, 2], [6, 600], ()), ([3], [1, 10], ())], (1, 2, 3))
    # The stack [a, b] is now one sample with 10 + 5 more, while [c] is split over two samples.
    later = _profile([([1, 2], [15, 1500], ()), ([3], [1, 10], ()), ([3], [2, 20], ())], (1, 2, 3))
    result = delta_of(base, later)
    assert result.outcome == "delta"
    assert result.profile is not None
    keys = content_keys(later)
    assert by_content(result.profile) == {keys[0]: [5, 500], keys[1]: [2, 20]}
    assert len(result.profile.samples) == 2


def test_restart_rebaselines_then_deltas_against_the_new_baseline(corpus: Path) -> None:
    mutex = load(corpus, "go119__mutex.pb.gz")
    v = mutex.samples.values
    deltas = Deltas()
    assert deltas.apply("m", mutex, T0).outcome == "baseline"

    restarted = renumber(with_values(mutex, v // 2), seed=5)
    result = deltas.apply("m", restarted, T1)
    assert result == DeltaResult(
        None, "rebaseline_restart", "contentions, delay went down for 1 stack: the process restarted; new baseline"
    )

    result = deltas.apply("m", with_values(mutex, v // 2 + [[3, 3000]]), T2)
    assert result.outcome == "delta"
    assert result.profile is not None
    assert result.profile.samples.values.tolist() == [[3, 3000]]
    assert (result.profile.time_nanos, result.profile.duration_nanos) == (T1, T2 - T1)


def test_total_going_down_is_a_restart_but_a_vanished_stack_alone_is_not(corpus: Path) -> None:
    block = load(corpus, "go119__block.pb.gz")
    keys = content_keys(block)
    v = block.samples.values
    s = block.samples

    def without_sample_0(values: np.ndarray) -> Profile:
        o = s.offsets
        return replace(
            block,
            samples=Samples(o[1:] - o[1], s.location_ids[o[1] :], values[1:], s.labelset_index[1:], s.labelsets),
        )

    result = delta_of(block, without_sample_0(v))
    assert result.profile is None
    assert result.outcome == "rebaseline_restart"
    assert result.detail == (
        f"total contentions went down from {v[:, 0].sum()} to {v[1:, 0].sum()}: the process restarted; new baseline"
    )

    grown = v.copy()
    grown[2] += v[0] + 1  # more than the vanished stack had
    result = delta_of(block, without_sample_0(grown))
    assert result.outcome == "delta"
    assert result.profile is not None
    assert by_content(result.profile) == {keys[2]: (v[0] + 1).tolist()}


@pytest.mark.parametrize("name", ["go119__cpu_10s.pb.gz", "go119__goroutine.pb.gz", "go119__threadcreate.pb.gz"])
def test_profiles_without_cumulative_types_pass_through(corpus: Path, name: str) -> None:
    env = from_profile(load(corpus, name), content_hash=0, size=0)
    assert not CUMULATIVE_TYPES & {t.type for t in env.header.sample_types}
    deltas = delta.Deltas()
    for t in (T0, T1):
        result = deltas.apply("k", env, t)
        assert result.envelope is env
        assert result.outcome == "stored_as_is"
    assert "k" not in deltas
    assert len(deltas) == 0


def test_result_covers_the_interval_between_scrapes(corpus: Path) -> None:
    allocs = load(corpus, "go119__allocs.pb.gz")
    v = allocs.samples.values.copy()
    deltas = Deltas()
    deltas.apply("a", allocs, T0)
    for t_prev, t in ((T0, T1), (T1, T3)):
        v[0, :2] += [1, 4096]
        result = deltas.apply("a", with_values(allocs, v.copy()), t)
        assert result.profile is not None
        assert (result.profile.time_nanos, result.profile.duration_nanos) == (t_prev, t - t_prev)
        assert result.profile.totals()[:2].tolist() == [1, 4096]
    assert "over 30.000 s" in result.detail


def test_changed_sample_types_set_a_new_baseline(corpus: Path) -> None:
    deltas = Deltas()
    deltas.apply("k", load(corpus, "go119__heap.pb.gz"), T0)
    result = deltas.apply("k", load(corpus, "go119__block.pb.gz"), T1)
    assert result.profile is None
    assert result.outcome == "baseline"
    assert result.detail == (
        "sample types changed from [alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"
        " per space/bytes] to [contentions/count delay/nanoseconds per contentions/count]; new baseline"
    )


def test_forget_drops_baselines_of_keys_not_kept(corpus: Path) -> None:
    block = load(corpus, "go119__block.pb.gz")
    deltas = Deltas()
    for key in ("a", "b", "c"):
        deltas.apply(key, block, T0)
    deltas.forget(["a", "c", "never-seen"])
    assert ("a" in deltas, "b" in deltas, "c" in deltas, len(deltas)) == (True, False, True, 2)
    assert deltas.apply("b", block, T1).outcome == "baseline"
    assert deltas.apply("a", block, T1).outcome == "delta"
    deltas.forget([])
    assert len(deltas) == 0


def test_drop_makes_the_next_scrape_of_that_key_a_baseline(corpus: Path) -> None:
    """A target that moved to another node and came back: no delta over the time the other scraped it."""
    block = load(corpus, "go119__block.pb.gz")
    deltas = Deltas()
    for key in ("moved", "stayed"):
        deltas.apply(key, block, T0)
    deltas.drop("moved")
    deltas.drop("never-seen")
    assert ("moved" in deltas, "stayed" in deltas) == (False, True)
    assert deltas.apply("moved", block, T1).outcome == "baseline"
    assert deltas.apply("stayed", block, T1).outcome == "delta"


def test_large_profile_matches_by_content_after_renumbering(corpus: Path) -> None:
    big = load(corpus, "gen__heap_go_truncated_many.pb.gz")  # 41k samples of alloc_objects
    n = len(big.samples)
    rows = np.random.default_rng(6).choice(n, 100, replace=False)
    added = np.zeros_like(big.samples.values)
    added[rows, 0] = rows + 1
    later = renumber(with_values(big, big.samples.values + added), seed=7)
    result = delta_of(big, later)
    assert result.profile is not None
    out = result.profile.samples
    kept = np.sort(rows)
    assert out.values[:, 0].tolist() == (kept + 1).tolist()
    ls = later.samples
    for j, i in enumerate(kept.tolist()):
        got = out.location_ids[out.offsets[j] : out.offsets[j + 1]]
        assert got.tolist() == ls.location_ids[ls.offsets[i] : ls.offsets[i + 1]].tolist()


def test_concurrent_keys_each_delta_against_their_own_baseline(corpus: Path) -> None:
    block = load(corpus, "go119__block.pb.gz")
    v = block.samples.values
    deltas = Deltas()
    start = threading.Barrier(8)

    def scrape(k: int) -> list[list[int]]:
        if k < 8:
            start.wait(timeout=60)
        key = f"target-{k}"
        assert deltas.apply(key, with_values(block, v * (k + 1)), T0).outcome == "baseline"
        result = deltas.apply(key, renumber(with_values(block, v * (k + 1) + [[k, 0]] * len(v)), seed=k), T1)
        assert result.profile is not None
        return result.profile.samples.values.tolist()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(scrape, range(40)))
    assert results[0] == []
    for k, values in enumerate(results[1:], start=1):
        assert values == [[k, 0]] * len(v)
    assert len(deltas) == 40
