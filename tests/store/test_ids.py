"""KnownIds: the writer's memory of committed ids, read by ingest threads without a lock."""

from __future__ import annotations

import numpy as np

from service.store.ids import KnownIds


def test_unknown_answers_like_a_set_across_adds() -> None:
    rng = np.random.default_rng(7)
    known = KnownIds()
    truth: set[int] = set()
    for _ in range(20):
        new = rng.integers(0, 2**64, 500, dtype=np.uint64, endpoint=False)
        new[:50] = new[50:100]  # repeats within one add
        known.add("stack", new)
        truth.update(new.tolist())
        probe = np.concatenate([new[:100], rng.integers(0, 2**64, 300, dtype=np.uint64, endpoint=False)])
        assert known.unknown("stack", probe).tolist() == [int(i) not in truth for i in probe.tolist()]
    assert known.unknown("function", probe).all()  # kinds are apart


def test_past_its_bound_the_memory_starts_over() -> None:
    known = KnownIds(limit=10)
    known.add("stack", np.arange(1, 9, dtype=np.uint64))
    known.add("stack", np.arange(100, 105, dtype=np.uint64))  # 8 + 5 > 10: forget, keep the new
    assert known.unknown("stack", np.array([1, 100], np.uint64)).tolist() == [True, False]
    off = KnownIds(limit=0)  # remembers nothing
    off.add("stack", np.arange(3, dtype=np.uint64))
    assert off.unknown("stack", np.arange(3, dtype=np.uint64)).all()


def test_recent_groups_know_exactly_above_the_watermark_and_move_it_up_when_full() -> None:
    from service.store.ids import RecentGroups

    g = RecentGroups(limit=4)
    assert not g.covers(10)  # not built: everything is looked up
    g.reset(100)
    assert not g.covers(100) and g.covers(101)
    g.add(1, 50)  # below the watermark: looked up anyway, not kept
    assert not g.stored(1)
    for group, ts in [(2, 101), (3, 102), (4, 103), (5, 104)]:
        g.add(group, ts)
    assert all(g.stored(k) for k in (2, 3, 4, 5))
    g.add(6, 105)  # past the limit: the older half is dropped, the watermark follows
    assert g.watermark is not None and 101 <= g.watermark < 105
    assert g.stored(6) and g.covers(105)
    assert not g.covers(101) and not g.stored(2)
    g.reset(None)
    assert not g.covers(10**18) and not g.stored(6)
