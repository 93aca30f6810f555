"""Rendezvous hashing of targets over live nodes: every node computes the same owner by itself, the
targets are shared out evenly, and a change of the live set moves only what it must."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from service.collector.ownership import Owners, owner

KEYS = [f"job{i % 7}/10.0.{i // 250}.{i % 250}:6060" for i in range(1000)]
NODES = ("host-a:/var/lib/profstore", "host-b:/var/lib/profstore", "host-c:/data/profstore")


def _owners(nodes: tuple[str, ...]) -> dict[str, str]:
    return {k: owner(k, nodes) for k in KEYS}


def test_the_owner_does_not_depend_on_the_order_of_the_nodes_nor_on_the_process() -> None:
    first = _owners(NODES)
    assert _owners(tuple(reversed(NODES))) == first
    assert _owners((NODES[1], NODES[2], NODES[0])) == first
    # Another interpreter with another hash seed agrees: the hash is not Python's salted hash().
    code = (
        "from service.collector.ownership import owner; import sys; "
        f"print(','.join(owner(k, {NODES!r}) for k in {KEYS[:50]!r}))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        )
        assert out.stdout.strip().split(",") == [first[k] for k in KEYS[:50]]


def test_a_thousand_targets_are_shared_evenly_over_three_nodes() -> None:
    counts = Counter(_owners(NODES).values())
    assert set(counts) == set(NODES)
    # 1000/3 = 333 each; a binomial spread of sd ~15, so 280..390 holds for any fair hash.
    assert all(280 <= n <= 390 for n in counts.values()), counts


def test_when_a_node_dies_only_its_targets_move_and_they_spread_over_the_others() -> None:
    before = _owners(NODES)
    dead = NODES[1]
    after = _owners((NODES[0], NODES[2]))
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == dead}
    taken = Counter(after[k] for k in moved)
    assert set(taken) == {NODES[0], NODES[2]} and min(taken.values()) >= len(moved) / 2 * 0.75, taken


def test_when_a_node_joins_it_takes_about_a_third_each_from_every_other_node() -> None:
    before = _owners(NODES)
    joined = "host-d:/var/lib/profstore"
    after = _owners((*NODES, joined))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == joined for k in moved)  # nothing moves between the old nodes
    assert 200 <= len(moved) <= 300, len(moved)  # ~1/4 of 1000
    assert all(40 <= n <= 120 for n in Counter(before[k] for k in moved).values())


def test_one_node_owns_everything_and_no_node_is_an_error() -> None:
    assert {owner(k, (NODES[0],)) for k in KEYS} == {NODES[0]}
    with pytest.raises(ValueError, match="no live node"):
        owner(KEYS[0], ())


def test_the_cache_follows_the_live_set() -> None:
    owners = Owners()
    assert [owners(k, NODES) for k in KEYS] == [owner(k, NODES) for k in KEYS]
    two = (NODES[2], NODES[0])
    assert [owners(k, two) for k in KEYS] == [owner(k, two) for k in KEYS]
    assert [owners(k, list(reversed(NODES))) for k in KEYS] == [owner(k, NODES) for k in KEYS]
