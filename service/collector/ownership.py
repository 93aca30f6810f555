"""Which node scrapes a target: rendezvous (highest random weight) hashing over the live nodes.

Every node of a lake computes the owner of each target by itself, from the live set it reads in
the catalog (``service.store.cluster``): no coordination, no assignment table, and two nodes that
see the same live set agree on every owner. Rendezvous hashing gives each (target, node) pair a
pseudo-random weight and the target to the node of highest weight, so when a node dies only the
targets it owned move (each to the node that was second for it), and a node that joins takes
~1/N of the targets, from every other node alike.

The hash must be the same in every process and every Python version: :func:`hash` is salted per
process (PYTHONHASHSEED), so two nodes would disagree. BLAKE2b is in the standard library and
stable; a few µs a target (3 nodes) is nothing beside a scrape, and :class:`Owners` keeps the
answers for one live set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = ["Owners", "Ownership", "owner", "weight"]

Ownership = Callable[[], tuple[str, Sequence[str]]]
"""Returns (this node's name, the live nodes' names): what the collector asks at each due run."""


def weight(target_key: str, node: str) -> int:
    """The pair's rendezvous weight: 64 bits of BLAKE2b over both names (a separator no name
    contains, so ``("a", "b/c")`` and ``("a/b", "c")`` differ)."""
    digest = hashlib.blake2b(f"{target_key}\0{node}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(target_key: str, nodes: Sequence[str]) -> str:
    """The node of ``nodes`` that scrapes ``target_key``: the one of highest weight (ties, which
    need a 64-bit collision, go to the greater name, so the answer never depends on the order)."""
    if not nodes:
        raise ValueError("no live node to own a target")
    return max(nodes, key=lambda node: (weight(target_key, node), node))


class Owners:
    """Owners of targets for one live set at a time: recomputed only when the live set changes.

    Asked by each due run of every target (on the event loop) and by the targets API (in a thread):
    the live set and its answers are swapped as one tuple, so a reader never mixes two live sets.
    """

    def __init__(self) -> None:
        self._state: tuple[tuple[str, ...], dict[str, str]] = ((), {})

    def __call__(self, target_key: str, live: Sequence[str]) -> str:
        nodes = tuple(sorted(live))
        state = self._state
        if state[0] != nodes:
            state = self._state = (nodes, {})
        found = state[1].get(target_key)
        if found is None:
            found = state[1][target_key] = owner(target_key, nodes)
        return found
