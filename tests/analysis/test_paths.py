"""Where a rise enters, from caller paths shaped as Go's stacks are (leaf first).

The cases are the ones a person pages on: a caller that calls a library function more often
(the leaf rises, the caller changed), the library function itself slower (every caller rises in
proportion), and one caller path only (nothing tells the frames apart: the service's own is named).
"""

from __future__ import annotations

import numpy as np

from service.analysis.paths import is_library, locate

BLOCK = "crypto/sha256.block"
WRITE = "crypto/sha256.(*digest).Write"
SUM = "crypto/sha256.Sum256"
ROOT = ("main.startWorkload.func1", "runtime/pprof.Do", "runtime.goexit")
HASH = (BLOCK, WRITE, SUM, "main.hashWork", "main.startWorkload.func2", *ROOT)
LOOP = (BLOCK, WRITE, SUM, "main.workloadHashLoop", "main.startWorkload.func9", *ROOT)
LOOP_CHECKSUM = (
    BLOCK,
    "crypto/sha256.(*digest).checkSum",
    SUM,
    "main.workloadHashLoop",
    "main.startWorkload.func9",
    *ROOT,
)
JSON = ("encoding/json.(*encodeState).string", "encoding/json.Marshal", "main.jsonWork", *ROOT)


def profiles(
    paths: dict[tuple[str, ...], tuple[float, float]], n: int = 60, seed: int = 1
) -> tuple[list[tuple[int, int, tuple[str, ...], float]], dict[tuple[int, int], float], int]:
    """``n`` baseline then ``n`` later profiles of one series; each path's samples are Poisson with
    the (before, after) mean given; every profile holds 1,000 samples of other work besides."""
    rng = np.random.default_rng(seed)
    rows, totals = [], {}
    for i in range(2 * n):
        ts = i * 10**9
        total = 1000.0
        for frames, (before, after) in paths.items():
            v = float(rng.poisson(after if i >= n else before))
            if v:
                rows.append((1, ts, frames, v))
                total += v
        totals[(1, ts)] = total
    return rows, totals, n * 10**9


def test_a_caller_that_calls_more_is_named_not_the_leaf() -> None:
    rows, totals, change = profiles({HASH: (40, 40), LOOP: (30, 90), LOOP_CHECKSUM: (10, 30), JSON: (50, 50)})
    got = locate(BLOCK, True, rows, totals, change)
    assert got is not None
    assert (got.entry, got.how) == ("main.workloadHashLoop", "caller")
    assert got.share_of_rise > 0.9
    top = got.paths[0]
    assert top["frames"][0] == BLOCK and "main.workloadHashLoop" in top["frames"]
    assert sum(p["share_of_rise"] for p in got.paths) > 0.95  # the two paths through the loop carry it


def test_a_slower_function_is_spread_over_its_callers_in_proportion() -> None:
    rows, totals, change = profiles({HASH: (40, 80), LOOP: (40, 80), LOOP_CHECKSUM: (10, 20)})
    got = locate(BLOCK, True, rows, totals, change)
    assert got is not None
    assert (got.entry, got.how) == (BLOCK, "proportional")  # all library: the leaf itself


def test_one_caller_path_names_the_services_own_frame() -> None:
    rows, totals, change = profiles({LOOP: (30, 90), JSON: (50, 50)})
    got = locate(BLOCK, True, rows, totals, change)
    assert got is not None
    assert (got.entry, got.how) == ("main.workloadHashLoop", "one-path")
    leaf = ("main.checksumBlock", "main.checksumWork", *ROOT)
    rows, totals, change = profiles({leaf: (30, 90)})
    got = locate("main.checksumBlock", True, rows, totals, change)
    assert got is not None and (got.entry, got.how) == ("main.checksumBlock", "one-path")


def test_noise_alone_leads_nowhere() -> None:
    # Unchanged paths: the per-profile test keeps chance gaps from naming a caller.
    for seed in range(20):
        rows, totals, change = profiles({HASH: (40, 41), LOOP: (40, 41), LOOP_CHECKSUM: (5, 5)}, seed=seed)
        got = locate(BLOCK, True, rows, totals, change)
        assert got is not None and got.how == "proportional", seed


def test_flat_reads_only_stacks_where_the_function_is_the_leaf() -> None:
    # Sum256's cum includes block's stacks; its flat none of them (it has no own samples here).
    rows, totals, change = profiles({LOOP: (30, 90)})
    assert locate(SUM, True, rows, totals, change) is None
    got = locate(SUM, False, rows, totals, change)
    assert got is not None and got.paths[0]["frames"][0] == SUM


def test_library_code_is_told_from_the_services() -> None:
    assert is_library(BLOCK) and is_library("runtime.mallocgc") and is_library("encoding/json.Marshal")
    assert not is_library("main.workloadHashLoop")
    assert not is_library("github.com/acme/shop/cart.(*Cart).Total")
    assert not is_library("app/handlers.py:handle")
