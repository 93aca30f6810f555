"""Folded stacks become the decoded columns directly, and ``go tool pprof`` reads them as we do."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ParseError
from service.pprof.decode import resolve
from service.pprof.encode import encode
from service.pprof.folded import FOLDED_TYPES, parse_folded
from tests.pprof_tool import totals

TEXT = b"main;work;busy 30\nmain;idle 10\n\nmain;work;busy 20\nmain;work 5\n"


def test_stacks_are_summed_leaf_first_and_scaled_to_nanoseconds(tmp_path: Path) -> None:
    env = parse_folded(TEXT, FOLDED_TYPES["cpu"], sample_rate=100, time_nanos=7, duration_nanos=10**9)
    assert env.raw is None  # never pprof bytes
    p = resolve(env)
    names = {f.id: f.name for f in p.functions.entities(p.strings)}
    lines = {loc.id: names[loc.lines[0].function_id] for loc in p.locations.entities()}
    s = p.samples
    stacks = [[lines[i] for i in s.location_ids[s.offsets[k] : s.offsets[k + 1]].tolist()] for k in range(len(s))]
    assert stacks == [["busy", "work", "main"], ["idle", "main"], ["work", "main"]]
    assert s.values[:, 0].tolist() == [50 * 10**7, 10 * 10**7, 5 * 10**7]  # 100 Hz: 10 ms a sample
    assert (str(p.sample_types[0]), str(p.period_type), p.period) == ("cpu/nanoseconds", "cpu/nanoseconds", 10**7)
    assert (p.time_nanos, p.duration_nanos) == (7, 10**9)
    path = tmp_path / "folded.pb.gz"
    path.write_bytes(encode(p))
    assert totals(path) == {"cpu/nanoseconds": 65 * 10**7}


def test_the_same_text_is_the_same_profile() -> None:
    def env(text: bytes, t: int) -> int:
        return parse_folded(text, FOLDED_TYPES["cpu"], sample_rate=100, time_nanos=t, duration_nanos=0).content_hash

    assert env(TEXT, 1) == env(TEXT, 1) != env(TEXT + b"main 1\n", 1)
    assert env(TEXT, 1) != env(TEXT, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [(b"main;work\n", "folded line 1: want 'frame;frame;... <integer>', got 'main;work'"), (b"\n\n", "no stacks")],
)
def test_bad_text_is_refused_with_the_line(text: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_folded(text, FOLDED_TYPES["cpu"], sample_rate=100, time_nanos=0, duration_nanos=0)
