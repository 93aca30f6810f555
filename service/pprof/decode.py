"""Bytes → resolved :class:`~service.pprof.model.Profile`.

Three stages, each with its own error prefix as pprof words them: gunzip
("decompressing profile: …"), protobuf parse ("parsing profile: …") and resolution plus
validation ("malformed profile: …"). Compression is sniffed from the gzip magic, never
from a file name: several real profiles named ``.pb.gz`` are raw protobuf.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import chain

import numpy as np
from google.protobuf.message import DecodeError

from service.errors import DecompressError, MalformedProfile, ParseError, ProfileTooLarge
from service.pprof import profile_pb2 as pb
from service.pprof.model import (
    Function,
    Label,
    LabelSet,
    Line,
    Location,
    Mapping,
    Profile,
    Samples,
    ValueType,
)
from service.pprof.validate import check_valid

__all__ = ["DecodeLimits", "decode", "decompress", "is_gzip", "parse"]

GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Size caps. The uncompressed cap is what stops gzip bombs: a 50 KiB body can inflate to GiBs."""

    max_compressed_bytes: int = 64 << 20
    max_uncompressed_bytes: int = 256 << 20


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


def decompress(data: bytes, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """Gunzip ``data`` (all members, as Go's gzip reader does) without ever holding more than the cap."""
    if len(data) > limits.max_compressed_bytes:
        raise ProfileTooLarge(f"compressed size {len(data)}", limits.max_compressed_bytes)
    if not is_gzip(data):
        return data
    out: list[bytes] = []
    room = limits.max_uncompressed_bytes
    rest = data
    while rest:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            chunk = inflater.decompress(rest, room + 1)
        except zlib.error as exc:
            raise DecompressError(str(exc)) from exc
        if len(chunk) > room or inflater.unconsumed_tail:
            raise ProfileTooLarge("uncompressed size", limits.max_uncompressed_bytes)
        if not inflater.eof:
            raise DecompressError("unexpected EOF (truncated gzip stream)")
        out.append(chunk)
        room -= len(chunk)
        rest = inflater.unused_data
        if rest and not is_gzip(rest):
            break  # trailing garbage after the last member: Go's reader stops here too
    return b"".join(out)


def decode(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Profile:
    """Decode gzipped or raw pprof protobuf bytes into a validated, resolved profile."""
    if not data:
        raise ParseError("empty input file")
    return parse(decompress(data, limits))


def parse(raw: bytes) -> Profile:
    """Parse uncompressed protobuf bytes into a validated, resolved profile."""
    if not raw:
        raise ParseError("empty input file")
    profile = _resolve(_parse(raw))
    check_valid(profile)
    return profile


def _parse(raw: bytes) -> pb.Profile:
    msg = pb.Profile()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ParseError(f"unrecognized profile format: {_guess(raw)} ({exc})") from exc
    if not msg.string_table and not msg.sample_type and not msg.sample:
        raise ParseError(f"unrecognized profile format: {_guess(raw)}")
    return msg


def _guess(raw: bytes) -> str:
    """Name what the bytes look like, so the error helps whoever pointed us at the wrong URL."""
    head = raw[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        return "looks like HTML, not a pprof protobuf"
    if head.startswith((b"{", b"[")):
        return "looks like JSON, not a pprof protobuf"
    for legacy in (b"heap profile:", b"goroutine profile:", b"threadcreate profile:", b"--- ", b"%"):
        if head.startswith(legacy):
            return "legacy text profile (debug=1); fetch with debug=0 or convert with `go tool pprof -proto`"
    return "not a pprof protobuf"


class _Strings:
    """Checked string-table lookups: an index out of range names the field that held it."""

    __slots__ = ("table",)

    def __init__(self, raw: list[bytes]) -> None:
        if not raw:
            raise MalformedProfile("string_table is empty; string_table[0] must be ''")
        if raw[0] != b"":
            raise MalformedProfile("string_table[0] must be ''")
        self.table = [b.decode("utf-8", "replace") for b in raw]

    def __call__(self, index: int, where: str) -> str:
        if 0 <= index < len(self.table):
            return self.table[index]
        raise MalformedProfile(
            f"string index {index} out of range (string_table has {len(self.table)} entries) in {where}"
        )


def _resolve(msg: pb.Profile) -> Profile:
    s = _Strings(list(msg.string_table))
    sample_types = tuple(
        ValueType(s(v.type, "sample_type.type"), s(v.unit, "sample_type.unit")) for v in msg.sample_type
    )
    mappings = tuple(
        Mapping(
            id=m.id,
            start=m.memory_start,
            limit=m.memory_limit,
            offset=m.file_offset,
            filename=s(m.filename, f"mapping {m.id} filename"),
            build_id=s(m.build_id, f"mapping {m.id} build_id"),
            has_functions=m.has_functions,
            has_filenames=m.has_filenames,
            has_line_numbers=m.has_line_numbers,
            has_inline_frames=m.has_inline_frames,
        )
        for m in msg.mapping
    )
    functions = tuple(
        Function(
            id=f.id,
            name=s(f.name, f"function {f.id} name"),
            system_name=s(f.system_name, f"function {f.id} system_name"),
            filename=s(f.filename, f"function {f.id} filename"),
            start_line=f.start_line,
        )
        for f in msg.function
    )
    locations = tuple(
        Location(
            id=loc.id,
            mapping_id=loc.mapping_id,
            address=loc.address,
            lines=tuple(Line(ln.function_id, ln.line, ln.column) for ln in loc.line),
            is_folded=loc.is_folded,
        )
        for loc in msg.location
    )
    period_type = None
    if msg.HasField("period_type"):
        period_type = ValueType(
            s(msg.period_type.type, "period_type.type"), s(msg.period_type.unit, "period_type.unit")
        )
    return Profile(
        sample_types=sample_types,
        samples=_samples(msg, len(sample_types), s),
        mappings=mappings,
        locations=locations,
        functions=functions,
        drop_frames=s(msg.drop_frames, "drop_frames"),
        keep_frames=s(msg.keep_frames, "keep_frames"),
        time_nanos=msg.time_nanos,
        duration_nanos=msg.duration_nanos,
        period_type=period_type,
        period=msg.period,
        comments=tuple(s(c, "comment") for c in msg.comment),
        default_sample_type=s(msg.default_sample_type, "default_sample_type"),
        doc_url=s(msg.doc_url, "doc_url"),
    )


def _samples(msg: pb.Profile, num_types: int, s: _Strings) -> Samples:
    """Pull the sample columns out of upb with as few Python-level steps per sample as possible.

    Touching repeated fields from Python is the cost that dominates decoding (see
    research/dependencies.md §3), so each column is gathered with one comprehension and
    flattened by ``np.fromiter`` over ``chain``; labels are resolved once per distinct set.
    """
    msgs = msg.sample
    n = len(msgs)
    if n == 0:
        return Samples.empty(num_types)
    if num_types == 0:
        raise MalformedProfile("missing sample type information")
    locs = [m.location_id for m in msgs]
    depth = np.fromiter(map(len, locs), np.int64, count=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(depth, out=offsets[1:])
    location_ids = np.fromiter(chain.from_iterable(locs), np.uint64, count=int(offsets[-1]))
    vals = [m.value for m in msgs]
    counts = np.fromiter(map(len, vals), np.int64, count=n)
    bad = np.flatnonzero(counts != num_types)
    if bad.size:
        raise MalformedProfile(f"mismatch: sample has {counts[bad[0]]} values vs. {num_types} types")
    values = np.fromiter(chain.from_iterable(vals), np.int64, count=n * num_types).reshape(n, num_types)
    labelset_index = np.zeros(n, np.int32)
    labelsets: list[LabelSet] = [()]
    labels = [m.label for m in msgs]
    with_labels = np.flatnonzero(np.fromiter(map(len, labels), np.int64, count=n))
    if with_labels.size:
        seen: dict[tuple[tuple[int, int, int, int], ...], int] = {}
        for i in with_labels.tolist():
            raw = tuple((lb.key, lb.str, lb.num, lb.num_unit) for lb in labels[i])
            idx = seen.get(raw)
            if idx is None:
                idx = seen[raw] = len(labelsets)
                labelsets.append(_labelset(raw, s))
            labelset_index[i] = idx
    return Samples(offsets, location_ids, values, labelset_index, labelsets)


def _labelset(raw: tuple[tuple[int, int, int, int], ...], s: _Strings) -> LabelSet:
    """Resolve and sort one label set; sorted so equal sets are equal tuples, as pprof's merge keys them."""
    out = []
    for key, str_i, num, unit_i in raw:
        k = s(key, "label key")
        if str_i:
            out.append(Label(k, str=s(str_i, f"label {k!r} value")))
        else:
            out.append(Label(k, num=num, num_unit=s(unit_i, f"label {k!r} unit")))
    out.sort(key=lambda lb: (lb.key, lb.str, lb.num, lb.num_unit))
    return tuple(out)
