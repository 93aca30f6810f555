"""Bytes → resolved, validated :class:`~service.pprof.model.Profile`.

Three stages, each with its own error prefix as pprof words them: gunzip
("decompressing profile: …"), protobuf parse ("parsing profile: …") and resolution plus
validation ("malformed profile: …"). Compression is sniffed from the gzip magic, never from a
file name: several real profiles named ``.pb.gz`` are raw protobuf.

upb parses the envelope; the repeated all-varint messages (samples, locations, functions,
mappings) are decoded column-wise by :mod:`service.pprof.wire`. When their encoding is
unusual, upb decodes them too (the slow, exact path), which also words real corruption.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from service.errors import DecompressError, MalformedProfile, ParseError, ProfileTooLarge
from service.hashing import mix, set_hashes
from service.pprof import profile_pb2 as pb
from service.pprof import wire
from service.pprof.model import Functions, Label, LabelSet, Locations, Mappings, Profile, Samples, ValueType
from service.pprof.validate import check_valid

__all__ = ["DecodeLimits", "decode", "decompress", "is_gzip", "parse"]

GZIP_MAGIC = b"\x1f\x8b"
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
_CHUNK = 8 << 20  # bytes of messages decoded per numpy pass: bounds temporary memory


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Size caps. The uncompressed cap is what stops gzip bombs: a 50 KiB body can inflate to GiBs."""

    max_compressed_bytes: int = 64 << 20
    max_uncompressed_bytes: int = 256 << 20


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


def decompress(data: bytes, limits: DecodeLimits | None = None) -> bytes:
    """Gunzip ``data`` (all members, as Go's gzip reader does) without ever holding more than the cap."""
    limits = limits or DecodeLimits()
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
            break  # trailing bytes after the last member: Go's reader stops here too
    return b"".join(out)


def decode(data: bytes, limits: DecodeLimits | None = None) -> Profile:
    """Decode gzipped or raw pprof protobuf bytes into a validated, resolved profile."""
    if not data:
        raise ParseError("empty input file")
    return parse(decompress(data, limits))


def parse(raw: bytes) -> Profile:
    """Parse uncompressed protobuf bytes into a validated, resolved profile."""
    if not raw:
        raise ParseError("empty input file")
    view = pb.ProfileView()
    try:
        view.ParseFromString(raw)
    except DecodeError as exc:
        raise ParseError(f"unrecognized profile format: {_guess(raw)} ({exc})") from exc
    if not view.string_table and not view.sample_type and not view.sample:
        raise ParseError(f"unrecognized profile format: {_guess(raw)}")
    strings = _strings(list(view.string_table))
    try:
        cols = _fast(view, len(view.sample_type))
    except wire.Unsupported:
        cols = _slow(raw, len(view.sample_type))
    profile = _assemble(view, strings, cols)
    check_valid(profile)
    return profile


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


def _strings(raw: list[bytes]) -> list[str]:
    if not raw:
        raise MalformedProfile("string_table is empty; string_table[0] must be ''")
    if raw[0] != b"":
        raise MalformedProfile("string_table[0] must be ''")
    try:
        return b"\x00".join(raw).decode("utf-8").split("\x00") if not any(b"\x00" in s for s in raw) else _each(raw)
    except UnicodeDecodeError:
        return _each(raw)


def _each(raw: list[bytes]) -> list[str]:
    # Invalid UTF-8 (seen in real profiles) becomes U+FFFD, as go tool pprof prints it.
    return [s.decode("utf-8", "replace") for s in raw]


@dataclass(slots=True)
class _Columns:
    """Everything numeric of a profile, before string checks and label resolution."""

    offsets: I64
    location_ids: U64
    values: I64
    value_counts: I64
    label_owner: I64  # sample index of each label
    label_key: I64
    label_str: I64
    label_num: I64
    label_unit: I64
    mappings: Mappings
    functions: Functions
    locations: Locations


def _chunks(blobs: list[bytes]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    size = 0
    for b in blobs:
        if not out or size + len(b) > _CHUNK:
            out.append([])
            size = 0
        out[-1].append(b)
        size += len(b)
    return out or [[]]


def _i(values: U64) -> I64:
    return values.view(np.int64)


def _fast(view: pb.ProfileView, num_types: int) -> _Columns:
    offsets_parts, locs, vals, counts = [np.zeros(1, np.int64)], [], [], []
    lab: list[list[npt.NDArray[np.int64]]] = [[], [], [], [], []]
    base = 0
    for chunk in _chunks(list(view.sample)):
        f = wire.scan(chunk)
        loc_ids, loc_off = f.repeated(1)
        values, val_off = f.repeated(2)
        offsets_parts.append(loc_off[1:] + (offsets_parts[-1][-1] if offsets_parts else 0))
        locs.append(loc_ids)
        vals.append(_i(values))
        counts.append(np.diff(val_off))
        labels, owner = f.sub(3)
        lab[0].append(owner + base)
        for i, number in enumerate((1, 2, 3, 4), start=1):
            lab[i].append(_i(labels.scalar(number)))
        base += f.count
    offsets = np.concatenate(offsets_parts)
    return _Columns(
        offsets,
        np.concatenate(locs).astype(np.uint64),
        np.concatenate(vals),
        np.concatenate(counts),
        *(np.concatenate(x) for x in lab),
        mappings=_fast_mappings(list(view.mapping)),
        functions=_fast_functions(list(view.function)),
        locations=_fast_locations(list(view.location)),
    )


def _fast_mappings(blobs: list[bytes]) -> Mappings:
    f = wire.scan(blobs)
    return Mappings(
        f.scalar(1),
        f.scalar(2),
        f.scalar(3),
        f.scalar(4),
        _i(f.scalar(5)),
        _i(f.scalar(6)),
        np.stack([f.scalar(n) != 0 for n in (7, 8, 9, 10)], axis=1).reshape(-1, 4),
    )


def _fast_functions(blobs: list[bytes]) -> Functions:
    f = wire.scan(blobs)
    return Functions(f.scalar(1), _i(f.scalar(2)), _i(f.scalar(3)), _i(f.scalar(4)), _i(f.scalar(5)))


def _fast_locations(blobs: list[bytes]) -> Locations:
    f = wire.scan(blobs)
    lines, owner = f.sub(4)
    per = np.bincount(owner, minlength=f.count).astype(np.int64)
    offsets = np.zeros(f.count + 1, np.int64)
    np.cumsum(per, out=offsets[1:])
    return Locations(
        f.scalar(1),
        f.scalar(2),
        f.scalar(3),
        f.scalar(5) != 0,
        offsets,
        lines.scalar(1),
        _i(lines.scalar(2)),
        _i(lines.scalar(3)),
    )


def _slow(raw: bytes, num_types: int) -> _Columns:
    """The same columns through upb objects: exact for any valid encoding, ~1 µs per sample."""
    msg = pb.Profile()
    try:
        msg.ParseFromString(raw)
    except DecodeError as exc:
        raise ParseError(f"unrecognized profile format: not a pprof protobuf ({exc})") from exc
    samples = msg.sample
    n = len(samples)
    loc_lists = [s.location_id for s in samples]
    depth = np.fromiter(map(len, loc_lists), np.int64, count=n)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(depth, out=offsets[1:])
    val_lists = [s.value for s in samples]
    counts = np.fromiter(map(len, val_lists), np.int64, count=n)
    labels = [(i, lb) for i, s in enumerate(samples) for lb in s.label]

    def col(get: Callable[[pb.Label], int]) -> I64:
        return np.fromiter((get(lb) for _, lb in labels), np.int64, count=len(labels))

    loc_msgs = msg.location
    line_counts = np.fromiter((len(loc.line) for loc in loc_msgs), np.int64, count=len(loc_msgs))
    line_off = np.zeros(len(loc_msgs) + 1, np.int64)
    np.cumsum(line_counts, out=line_off[1:])
    lines = [ln for loc in loc_msgs for ln in loc.line]
    ms, fs = msg.mapping, msg.function
    return _Columns(
        offsets,
        np.fromiter(chain.from_iterable(loc_lists), np.uint64, count=int(offsets[-1])),
        np.fromiter(chain.from_iterable(val_lists), np.int64, count=int(counts.sum())),
        counts,
        np.fromiter((i for i, _ in labels), np.int64, count=len(labels)),
        col(lambda lb: lb.key),
        col(lambda lb: lb.str),
        col(lambda lb: lb.num),
        col(lambda lb: lb.num_unit),
        mappings=Mappings(
            np.array([m.id for m in ms], np.uint64),
            np.array([m.memory_start for m in ms], np.uint64),
            np.array([m.memory_limit for m in ms], np.uint64),
            np.array([m.file_offset for m in ms], np.uint64),
            np.array([m.filename for m in ms], np.int64),
            np.array([m.build_id for m in ms], np.int64),
            np.array(
                [[m.has_functions, m.has_filenames, m.has_line_numbers, m.has_inline_frames] for m in ms], bool
            ).reshape(-1, 4),
        ),
        functions=Functions(
            np.array([f.id for f in fs], np.uint64),
            np.array([f.name for f in fs], np.int64),
            np.array([f.system_name for f in fs], np.int64),
            np.array([f.filename for f in fs], np.int64),
            np.array([f.start_line for f in fs], np.int64),
        ),
        locations=Locations(
            np.array([loc.id for loc in loc_msgs], np.uint64),
            np.array([loc.mapping_id for loc in loc_msgs], np.uint64),
            np.array([loc.address for loc in loc_msgs], np.uint64),
            np.array([loc.is_folded for loc in loc_msgs], bool),
            line_off,
            np.array([ln.function_id for ln in lines], np.uint64),
            np.array([ln.line for ln in lines], np.int64),
            np.array([ln.column for ln in lines], np.int64),
        ),
    )


def _check_codes(codes: I64, n: int, where: str, ids: U64 | None = None) -> None:
    bad = np.flatnonzero((codes < 0) | (codes >= n))
    if bad.size:
        i = int(bad[0])
        entity = f"{where.split()[0]} {int(ids[i])} {where.split()[1]}" if ids is not None else where
        raise MalformedProfile(f"string index {int(codes[i])} out of range (string_table has {n} entries) in {entity}")


def _assemble(view: pb.ProfileView, strings: list[str], c: _Columns) -> Profile:
    n_str = len(strings)

    def s(code: int, where: str) -> str:
        _check_codes(np.array([code], np.int64), n_str, where)
        return strings[code]

    m, f = c.mappings, c.functions
    for codes, where, ids in (
        (m.filename, "mapping filename", m.id),
        (m.build_id, "mapping build_id", m.id),
        (f.name, "function name", f.id),
        (f.system_name, "function system_name", f.id),
        (f.filename, "function filename", f.id),
        (c.label_key, "label key", None),
        (c.label_unit, "label num_unit", None),
    ):
        _check_codes(codes, n_str, where, ids)
    n_types = len(view.sample_type)
    n = c.offsets.size - 1
    if n and n_types == 0:
        raise MalformedProfile("missing sample type information")
    bad = np.flatnonzero(c.value_counts != n_types)
    if bad.size:
        raise MalformedProfile(f"mismatch: sample has {int(c.value_counts[bad[0]])} values vs. {n_types} types")
    sample_types = tuple(
        ValueType(s(v.type, "sample_type.type"), s(v.unit, "sample_type.unit")) for v in view.sample_type
    )
    labelset_index, labelsets = _labelsets(c, n, strings)
    return Profile(
        sample_types=sample_types,
        samples=Samples(c.offsets, c.location_ids, c.values.reshape(n, n_types), labelset_index, labelsets),
        strings=strings,
        mappings=m,
        locations=c.locations,
        functions=f,
        drop_frames=s(view.drop_frames, "drop_frames"),
        keep_frames=s(view.keep_frames, "keep_frames"),
        time_nanos=view.time_nanos,
        duration_nanos=view.duration_nanos,
        period_type=ValueType(
            s(view.period_type.type, "period_type.type"), s(view.period_type.unit, "period_type.unit")
        )
        if view.HasField("period_type")
        else None,
        period=view.period,
        comments=tuple(s(x, "comment") for x in view.comment),
        default_sample_type=s(view.default_sample_type, "default_sample_type"),
        doc_url=s(view.doc_url, "doc_url"),
    )


def _labelsets(c: _Columns, n: int, strings: list[str]) -> tuple[npt.NDArray[np.int32], list[LabelSet]]:
    """One label set per distinct set of labels (sets: order and repetition of labels do not matter)."""
    index = np.zeros(n, np.int32)
    if c.label_owner.size == 0:
        return index, [()]
    str_code = np.where(c.label_str != 0, c.label_str, 0)
    _check_codes(str_code, len(strings), "label str")
    per_label = mix(c.label_key, str_code, c.label_num, c.label_unit)
    per_sample = set_hashes(per_label, c.label_owner, n)
    uniq, first, inverse = np.unique(per_sample, return_index=True, return_inverse=True)
    order = np.argsort(c.label_owner, kind="stable")
    owners = c.label_owner[order]
    starts = np.searchsorted(owners, first)
    ends = np.searchsorted(owners, first, side="right")
    labelsets: list[LabelSet] = []
    for h, a, b in zip(uniq.tolist(), starts.tolist(), ends.tolist(), strict=True):
        if h == 0:
            labelsets.append(())
            continue
        rows = order[a:b]
        labels = (
            Label(strings[c.label_key[r]], str=strings[c.label_str[r]])
            if c.label_str[r]
            else Label(strings[c.label_key[r]], num=int(c.label_num[r]), num_unit=strings[c.label_unit[r]])
            for r in rows.tolist()
        )
        labelsets.append(tuple(sorted(labels, key=lambda lb: (lb.key, lb.str, lb.num, lb.num_unit))))
    # labelsets[0] must be the empty set.
    if labelsets and labelsets[0] == ():
        return inverse.astype(np.int32).reshape(-1), labelsets
    return (inverse.astype(np.int32).reshape(-1) + 1), [(), *labelsets]
