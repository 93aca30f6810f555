"""Decoding: every malformed input gets its own message, in pprof's phrasing; nothing crashes."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from service.errors import DecompressError, MalformedProfile, ParseError, ProfileTooLarge
from service.pprof import profile_pb2 as pb
from service.pprof.decode import decode
from service.types import DecodeLimits


def minimal() -> pb.Profile:
    """Two samples over three functions, built by hand: main.main → main.work → main.leaf."""
    strings = [
        "",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        "main.main",
        "main.work",
        "main.leaf",
        "main.go",
        "endpoint",
        "/api",
    ]
    p = pb.Profile(string_table=[s.encode() for s in strings])
    p.sample_type.add(type=1, unit=2)
    p.sample_type.add(type=3, unit=4)
    p.period_type.type, p.period_type.unit, p.period = 3, 4, 10_000_000
    p.mapping.add(id=1, memory_start=0x1000, memory_limit=0x9000, filename=8)
    for fid, name in ((1, 5), (2, 6), (3, 7)):
        p.function.add(id=fid, name=name, system_name=name, filename=8)
        p.location.add(id=fid, mapping_id=1, address=0x1000 + fid).line.add(function_id=fid, line=10 * fid)
    p.sample.add(location_id=[3, 2, 1], value=[5, 50_000_000])
    s = p.sample.add(location_id=[2, 1], value=[2, 20_000_000])
    s.label.add(key=9, str=10)
    return p


def test_gzipped_and_raw_decode_to_the_same_profile() -> None:
    raw = minimal().SerializeToString()
    a, b = decode(raw), decode(gzip.compress(raw))
    assert a.totals().tolist() == b.totals().tolist() == [7, 70_000_000]
    assert [str(t) for t in a.sample_types] == ["samples/count", "cpu/nanoseconds"]
    assert a.samples.location_ids.tolist() == [3, 2, 1, 2, 1]
    assert a.samples.labelsets[a.samples.labelset_index[1]][0].str == "/api"
    assert {f.name for f in a.functions.entities(a.strings)} == {"main.main", "main.work", "main.leaf"}


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda p: p.sample[0].value.append(1),
            MalformedProfile,
            "malformed profile: mismatch: sample has 3 values vs. 2 types",
        ),
        (lambda p: setattr(p.function[0], "name", 999), MalformedProfile, "string index 999 out of range"),
        (lambda p: p.string_table.__setitem__(0, b"X"), MalformedProfile, "string_table[0] must be ''"),
        (lambda p: setattr(p.location[0], "id", 0), MalformedProfile, "found location with reserved id=0"),
        (lambda p: setattr(p.function[1], "id", 1), MalformedProfile, "multiple functions with same id: 1"),
        (lambda p: setattr(p.mapping[0], "id", 0), MalformedProfile, "found mapping with reserved ID=0"),
        (
            lambda p: p.sample[0].location_id.append(77),
            MalformedProfile,
            "sample has nil location (location id 77 not found)",
        ),
        (
            lambda p: setattr(p.location[0].line[0], "function_id", 42),
            MalformedProfile,
            "location id: 1 has a line with nil function",
        ),
        (lambda p: p.ClearField("sample_type"), MalformedProfile, "missing sample type information"),
    ],
    ids=[
        "value-count",
        "string-index",
        "string-table-0",
        "location-id-0",
        "duplicate-function",
        "mapping-id-0",
        "unknown-location",
        "unknown-function",
        "no-sample-types",
    ],
)
def test_malformed_profiles_name_what_is_wrong(mutate, error, message) -> None:  # type: ignore[no-untyped-def]
    p = minimal()
    mutate(p)
    with pytest.raises(error) as exc:
        decode(gzip.compress(p.SerializeToString()))
    assert message in str(exc.value)


def test_location_with_unknown_mapping_is_accepted_like_pprof() -> None:
    p = minimal()
    p.location[0].mapping_id = 99
    assert decode(p.SerializeToString()).totals().tolist() == [7, 70_000_000]


def test_truncated_gzip() -> None:
    data = gzip.compress(minimal().SerializeToString())
    with pytest.raises(DecompressError, match=r"^decompressing profile: unexpected EOF \(truncated gzip stream\)$"):
        decode(data[: len(data) // 2])


def test_corrupt_gzip() -> None:
    data = bytearray(gzip.compress(minimal().SerializeToString()))
    data[12:20] = b"\xff" * 8
    with pytest.raises(DecompressError, match=r"^decompressing profile: "):
        decode(bytes(data))


def test_gzip_bomb_stops_at_the_uncompressed_cap() -> None:
    bomb = gzip.compress(b"\x00" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(ProfileTooLarge, match="uncompressed size exceeds the limit of 1048576 bytes"):
        decode(bomb, DecodeLimits(max_compressed_bytes=1 << 20, max_uncompressed_bytes=1 << 20))


def test_compressed_cap() -> None:
    with pytest.raises(ProfileTooLarge, match=r"compressed size 2000 exceeds the limit of 1000 bytes"):
        decode(b"\x1f\x8b" + b"\x00" * 1998, DecodeLimits(max_compressed_bytes=1000))


def test_html_is_named() -> None:
    with pytest.raises(ParseError, match="looks like HTML, not a pprof protobuf"):
        decode(b"<!DOCTYPE html><html><body>404 page not found</body></html>")


def test_json_is_named() -> None:
    with pytest.raises(ParseError, match="looks like JSON"):
        decode(b'{"error": "profiling disabled"}')


def test_random_bytes_are_refused() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        data = rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        with pytest.raises((ParseError, MalformedProfile, DecompressError)):
            decode(data)


def test_empty_input() -> None:
    with pytest.raises(ParseError, match="empty input file"):
        decode(b"")
    with pytest.raises(ParseError, match="empty input file"):
        decode(gzip.compress(b""))


def test_invalid_utf8_strings_decode(corpus: Path) -> None:
    p = decode((corpus / "gen__invalid_utf8.pb.gz").read_bytes())
    assert p.totals().tolist() == [1]
    # Names that are not UTF-8 keep their valid parts; each bad byte becomes U+FFFD, as Go prints it.
    assert {"caf\ufffd_\ufffd\ufffd", "src/\ufffd(.c"} <= set(p.strings)


def test_corpus_decodes_or_refuses_with_a_typed_error(corpus: Path) -> None:
    for f in sorted(corpus.glob("*")):
        if f.suffix in (".tsv", ".md") or not f.is_file():
            continue
        try:
            decode(f.read_bytes())
        except (ParseError, MalformedProfile) as exc:
            assert str(exc).startswith(("parsing profile: ", "malformed profile: ")), f.name
    assert os.path.exists(corpus / "MANIFEST.tsv")
