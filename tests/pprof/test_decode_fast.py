"""The compiled column decoder against upb: same profile for every encoding protobuf allows."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from service.errors import ProfileError
from service.pprof import decode_fast as wire
from service.pprof import profile_pb2 as pb
from service.pprof.decode import Envelope, decompress, envelope, parse, resolve
from service.pprof.decode_exact import decode_exact
from service.pprof.encode import to_message
from service.pprof.model import Profile
from tests.pprof.test_decode import minimal


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    tag = _varint(number << 3 | wire_type)
    return tag + (_varint(len(payload)) + payload if wire_type == 2 else payload)


# One unknown field of each wire type protobuf skips: varint, fixed64, bytes, fixed32.
UNKNOWN = _field(99, 0, _varint(7)) + _field(98, 1, b"\x01" * 8) + _field(97, 2, b"xyz") + _field(96, 5, b"\x02" * 4)


def _fast_and_exact(raw: bytes) -> tuple[pb.Profile, pb.Profile]:
    wire.columns(raw)  # raises Unsupported when the compiled decoder cannot read this encoding
    return to_message(parse(raw)), to_message(_exact(envelope(raw)))


def _exact(env: Envelope) -> Profile:
    """The profile as the exact decoder (upb) reads the envelope's repeated messages."""
    assert env.view is not None and env.raw is not None
    return resolve(replace(env, columns=decode_exact(env.view, env.strings, env.raw)))


def _with(p: pb.Profile, field: int, messages: list[bytes]) -> bytes:
    """``p`` serialized with repeated message field ``field`` replaced by hand-encoded ``messages``."""
    q = pb.Profile()
    q.CopyFrom(p)
    q.ClearField({2: "sample", 3: "mapping", 4: "location", 5: "function"}[field])
    return q.SerializeToString() + b"".join(_field(field, 2, m) for m in messages)


def test_every_corpus_profile_decodes_as_upb_decodes_it(corpus: Path) -> None:
    checked = 0
    for f in sorted(corpus.glob("*.pb*")):
        raw = decompress(f.read_bytes())
        try:
            env = envelope(raw)
            fast = parse(raw)
        except ProfileError:
            continue  # refused files have their own tests
        if env.view is None:
            continue  # not protobuf: legacy formats are converted to columns without it
        assert to_message(fast) == to_message(_exact(env)), f.name
        checked += 1
    assert checked >= 20


def test_unpacked_repeated_fields_equal_packed() -> None:
    p = minimal()
    samples = [
        b"".join(_field(1, 0, _varint(i)) for i in s.location_id) + b"".join(_field(2, 0, _varint(v)) for v in s.value)
        for s in p.sample
    ]
    samples[1] += b"".join(_field(3, 2, lb.SerializeToString()) for lb in p.sample[1].label)
    fast, exact = _fast_and_exact(_with(p, 2, samples))
    assert fast == exact == to_message(parse(p.SerializeToString()))


def test_unknown_fields_of_every_wire_type_are_skipped_at_every_level() -> None:
    p = minimal()
    raw = p.SerializeToString() + UNKNOWN
    samples = [s.SerializeToString() + UNKNOWN for s in p.sample]
    label = p.sample[1].label[0].SerializeToString() + UNKNOWN
    samples[1] = (
        _field(1, 2, b"".join(_varint(i) for i in p.sample[1].location_id))
        + _field(2, 2, b"".join(_varint(v) for v in p.sample[1].value))
        + _field(3, 2, label)
    )
    locations = [
        loc.SerializeToString() + UNKNOWN + _field(4, 2, loc.line[0].SerializeToString() + UNKNOWN)
        for loc in p.location
    ]
    for field, msgs in ((2, samples), (4, locations)):
        raw = _with(p, field, msgs) + UNKNOWN
        fast, exact = _fast_and_exact(raw)
        assert fast == exact
    fns = [fn.SerializeToString() + UNKNOWN for fn in p.function]
    maps = [m.SerializeToString() + UNKNOWN for m in p.mapping]
    for field, msgs in ((5, fns), (3, maps)):
        fast, exact = _fast_and_exact(_with(p, field, msgs))
        assert fast == exact == to_message(parse(p.SerializeToString()))


def test_the_last_occurrence_of_a_singular_field_wins() -> None:
    p = minimal()
    fns = [fn.SerializeToString() for fn in p.function]
    fns[0] += _field(2, 0, _varint(7))  # function 1 renamed main.main → main.leaf by a later occurrence
    fast, exact = _fast_and_exact(_with(p, 5, fns))
    assert fast == exact
    assert fast.string_table[fast.function[0].name] == b"main.leaf"


def test_negative_values_use_ten_byte_varints() -> None:
    p = minimal()
    p.sample[0].value[:] = [-5, -50_000_000]
    fast, exact = _fast_and_exact(p.SerializeToString())
    assert fast == exact
    assert list(fast.sample[0].value) == [-5, -50_000_000]


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (_field(1, 2, b"\x81"), "truncated or overlong varint"),  # a packed varint cut off
        (_field(1, 0, b"\xff" * 10 + b"\x01"), "truncated or overlong varint"),  # 11 bytes
        (_field(3, 0, b"\x01"), "singular field with an unexpected wire type"),  # a label as a varint
        (_varint(90 << 3 | 3) + _varint(90 << 3 | 4), "unsupported wire type (group or reserved)"),  # a group
    ],
)
def test_unusual_encodings_go_to_upb(sample: bytes, reason: str) -> None:
    p = minimal()
    raw = _with(p, 2, [s.SerializeToString() for s in p.sample] + [sample])
    with pytest.raises(wire.Unsupported, match=re.escape(reason)):
        wire.columns(raw)
    try:
        parsed = pb.Profile.FromString(raw)
    except Exception:  # upb refuses it too: the profile is refused with upb's wording
        with pytest.raises(ProfileError):
            parse(raw)
    else:  # upb reads it (a group is skipped, for instance): the exact path decodes it, at once
        assert len(parsed.sample) == 3
        with pytest.raises(ProfileError, match=r"sample has 0 values vs\. 2 types"):
            envelope(raw)  # the third sample has no values: pprof refuses it, and so do we
