"""Bounded fuzzing of the two parsers that read untrusted input: the pprof decoder and the selector parser.

The property is the same for both: any input either parses or raises one of our typed errors
(``ProfstoreError``, a 4xx at the API), and returns: a hang guard, for speed is bench/'s business.
Examples are derandomized so CI runs the same cases every time; ``--hypothesis-seed`` explores
others locally.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import ProfstoreError
from service.pprof.decode import decode, decode_batch, read
from service.query.selector import parse_query
from service.store.digest import prepare
from service.types import DecodeLimits
from tests.conftest import CORPUS

LIMITS = DecodeLimits(1 << 20, 8 << 20)
SEEDS = ["parca__two-stacks.pb.gz", "go119__mutex.pb.gz", "go119__threadcreate.pb.gz"]
# No per-example deadline: a wall-clock limit fails on a busy shared machine; hangs are guarded below.
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _seeds() -> list[bytes]:
    return [gzip.decompress((CORPUS / name).read_bytes()) for name in SEEDS]


def _decode_all_ways(data: bytes) -> None:
    """The exact decoder (upb + pprof's checks) and the fast path ingest uses (columns + compiled checks)."""
    with contextlib.suppress(ProfstoreError):
        decode(data, LIMITS)
    try:
        env = read(data, LIMITS)
        decode_batch([env])  # the writer's path (many at once)
        prepare(env)  # the ingest thread's path (one at a time)
    except ProfstoreError:
        pass


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A real profile with a few bytes flipped, cut, inserted or repeated; sometimes gzipped again."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return gzip.compress(bytes(data), 1) if draw(st.booleans()) else bytes(data)


def test_decoder_on_mutated_real_profiles() -> None:
    seeds = _seeds()

    @FUZZ
    @given(mutated(seeds))
    def run(data: bytes) -> None:
        _decode_all_ways(data)

    run()


@FUZZ
@given(st.binary(max_size=512) | st.binary(max_size=512).map(lambda b: gzip.compress(b, 1)))
def test_decoder_on_random_bytes(data: bytes) -> None:
    _decode_all_ways(data)


PT = "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
SELECTOR_ALPHABET = st.sampled_from(list("{}=!~\",'`\\ab_ .*+?()[]|^$0:\n"))


@FUZZ
@given(st.text(SELECTOR_ALPHABET, max_size=80) | st.text(max_size=80))
def test_selector_parser(text: str) -> None:
    for query in (text, PT + text, PT + "{" + text):
        with contextlib.suppress(ProfstoreError):
            parse_query(query)


@FUZZ
@given(st.text(SELECTOR_ALPHABET, max_size=40), st.text(max_size=200))
def test_selector_regexes_match_in_linear_time(pattern: str, value: str) -> None:
    try:
        q = parse_query(f"{PT}{{a=~`{pattern}`}}")
    except ProfstoreError:
        return
    assert _finishes(lambda: q.matches({"a": value}))


@pytest.mark.parametrize("pattern", ["(a+)+$", "(a|aa)+$", "(.*a){20}", "(x+x+)+y"])
def test_catastrophic_patterns_are_linear(pattern: str) -> None:
    """Patterns that take Python's backtracking ``re`` exponential time on these values."""
    q = parse_query(f"{PT}{{a=~`{pattern}`}}")
    assert _finishes(lambda: [q.matches({"a": value}) for value in ("a" * 5000 + "b", "x" * 5000)])


def _finishes(work: Callable[[], object]) -> bool:
    """Whether ``work`` ends at all: a hang guard, not a speed test. Backtracking on these inputs takes
    hours; RE2 takes microseconds, so the 60 s bound is no figure a loaded machine could approach."""
    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(60)
    return not t.is_alive()
