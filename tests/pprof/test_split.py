"""A push split by its samples' string labels: selections of the decoded columns, checked by hand."""

from __future__ import annotations

from service.pprof import profile_pb2 as pb
from service.pprof.decode import envelope, resolve
from service.pprof.model import Label
from service.pprof.split import split_by_sample_labels
from tests.pprof.test_decode import minimal


def _labelled() -> pb.Profile:
    """minimal() with four more samples: phase=hot twice (one also with a profile_id), phase=cold, bytes=64."""
    p = minimal()
    st = list(p.string_table)
    for s in (b"phase", b"hot", b"cold", b"profile_id", b"abc", b"bytes"):
        p.string_table.append(s)
    code = {s: len(st) + i for i, s in enumerate(("phase", "hot", "cold", "profile_id", "abc", "bytes"))}
    a = p.sample.add(location_id=[3, 1], value=[1, 10])
    a.label.add(key=code["phase"], str=code["hot"])
    b = p.sample.add(location_id=[2, 1], value=[3, 30])
    b.label.add(key=code["profile_id"], str=code["abc"])
    b.label.add(key=code["phase"], str=code["hot"])
    c = p.sample.add(location_id=[1], value=[4, 40])
    c.label.add(key=code["phase"], str=code["cold"])
    d = p.sample.add(location_id=[3, 2, 1], value=[6, 60])
    d.label.add(key=code["bytes"], num=64)
    return p


def _rows(env_part: object) -> list[tuple[list[int], list[int], tuple[Label, ...]]]:
    p = resolve(env_part)  # type: ignore[arg-type]
    s = p.samples
    return [
        (
            s.location_ids[s.offsets[i] : s.offsets[i + 1]].tolist(),
            s.values[i].tolist(),
            s.labelsets[s.labelset_index[i]],
        )
        for i in range(len(s))
    ]


def test_samples_split_by_string_labels_profile_id_becomes_span_id() -> None:
    env = envelope(_labelled().SerializeToString())
    parts = split_by_sample_labels(env)
    assert [extra for extra, _ in parts] == [{}, {"endpoint": "/api"}, {"phase": "hot"}, {"phase": "cold"}]
    plain, api, hot, cold = (part for _, part in parts)
    assert _rows(plain) == [([3, 2, 1], [5, 50_000_000], ()), ([3, 2, 1], [6, 60], (Label("bytes", num=64),))]
    assert _rows(api) == [([2, 1], [2, 20_000_000], ())]
    assert _rows(hot) == [([3, 1], [1, 10], ()), ([2, 1], [3, 30], (Label("span_id", str="abc"),))]
    assert _rows(cold) == [([1], [4, 40], ())]
    # Each part is its own profile: the same time, a content hash of its own.
    assert len({part.content_hash for _, part in parts}) == 4
    assert all(part.header == env.header for _, part in parts)


def test_a_profile_without_string_labels_is_not_copied() -> None:
    p = minimal()
    del p.sample[1].label[:]
    env = envelope(p.SerializeToString())
    assert split_by_sample_labels(env) == [({}, env)]


def test_only_a_profile_id_renames_it_in_place() -> None:
    p = minimal()
    p.string_table[9] = b"profile_id"
    env = envelope(p.SerializeToString())
    [(extra, part)] = split_by_sample_labels(env)
    assert extra == {}
    assert part is not env and part.content_hash != env.content_hash
    assert _rows(part)[1] == ([2, 1], [2, 20_000_000], (Label("span_id", str="/api"),))
