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
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from service.errors import DecompressError, MalformedProfile, ParseError, ProfileError, ProfileTooLarge
from service.pprof import profile_pb2 as pb
from service.pprof import wire
from service.pprof.batch import ProfileBatch, bases
from service.pprof.encode import to_message
from service.pprof.exact import decode_exact
from service.pprof.legacy import looks_legacy, parse_legacy
from service.pprof.model import Functions, Header, Locations, Mappings, Profile, ValueType
from service.pprof.validate import invalid_profiles

__all__ = ["DecodeLimits", "Envelope", "decode", "decode_batch", "decompress", "envelope", "is_gzip", "parse"]

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


@dataclass(slots=True)
class Envelope:
    """A parsed but not yet decoded profile: header and strings resolved, repeated messages still bytes.

    Building one is cheap (upb does the work in C) and catches what is wrong with the bytes as a
    whole, so ingest can answer a bad request at once and decode good ones later, in a batch.
    """

    raw: bytes
    view: pb.ProfileView
    header: Header
    strings: list[str]


def envelope(raw: bytes) -> Envelope:
    """Parse uncompressed protobuf bytes down to the repeated messages."""
    if not raw:
        raise ParseError("empty input file")
    view = pb.ProfileView()
    try:
        view.ParseFromString(raw)
        parsed = bool(view.string_table or view.sample_type or view.sample)
    except DecodeError:
        parsed = False
    if not parsed:
        # pprof tries protobuf first, then its legacy text and binary formats; so do we.
        if looks_legacy(raw):
            return envelope(to_message(parse_legacy(raw)).SerializeToString())
        raise ParseError(f"unrecognized profile format: {_guess(raw)}")
    strings = _strings(list(view.string_table))

    def s(code: int, where: str) -> str:
        if 0 <= code < len(strings):
            return strings[code]
        raise MalformedProfile(f"string index {code} out of range (string_table has {len(strings)} entries) in {where}")

    if view.sample and not view.sample_type:
        raise MalformedProfile("missing sample type information")
    header = Header(
        sample_types=tuple(
            ValueType(s(v.type, "sample_type.type"), s(v.unit, "sample_type.unit")) for v in view.sample_type
        ),
        period_type=ValueType(
            s(view.period_type.type, "period_type.type"), s(view.period_type.unit, "period_type.unit")
        )
        if view.HasField("period_type")
        else None,
        period=view.period,
        time_nanos=view.time_nanos,
        duration_nanos=view.duration_nanos,
        drop_frames=s(view.drop_frames, "drop_frames"),
        keep_frames=s(view.keep_frames, "keep_frames"),
        comments=tuple(s(x, "comment") for x in view.comment),
        default_sample_type=s(view.default_sample_type, "default_sample_type"),
        doc_url=s(view.doc_url, "doc_url"),
    )
    return Envelope(raw, view, header, strings)


def decode(data: bytes, limits: DecodeLimits | None = None) -> Profile:
    """Decode gzipped or raw pprof protobuf bytes into a validated, resolved profile."""
    if not data:
        raise ParseError("empty input file")
    return parse(decompress(data, limits))


def parse(raw: bytes) -> Profile:
    """Parse uncompressed protobuf bytes into a validated, resolved profile."""
    batch, errors = decode_batch([envelope(raw)])
    if errors[0] is not None:
        raise errors[0]
    return batch.profile(0)


def decode_batch(envs: list[Envelope]) -> tuple[ProfileBatch, list[ProfileError | None]]:
    """Decode many envelopes column-wise at once; a profile that fails validation is left out.

    Returns the batch of the valid ones (in order) and, per input, its error or ``None``.
    """
    errors: list[ProfileError | None] = [None] * len(envs)
    try:
        batch = _fast(envs)
    except wire.Unsupported:
        # Some profile is encoded unusually: decode each alone, with upb where it must be.
        profiles = []
        for i, e in enumerate(envs):
            try:
                profiles.append(_one(e))
            except ProfileError as exc:
                errors[i] = exc
        return ProfileBatch.of(profiles), errors
    bad = invalid_profiles(batch, batch.resolve())
    if not bad:
        return batch, errors
    for i in bad:
        try:
            _exact(envs[i])
        except ProfileError as exc:
            errors[i] = exc
        else:  # the column checks found a fault the exact decoder does not: refuse, never store it
            errors[i] = MalformedProfile("profile failed validation")
    good = [e for e, err in zip(envs, errors, strict=True) if err is None]
    return (_fast(good) if good else ProfileBatch.empty()), errors


def _one(env: Envelope) -> Profile:
    try:
        batch = _fast([env])
    except wire.Unsupported:
        return _exact(env)
    if invalid_profiles(batch, batch.resolve()):
        return _exact(env)
    return batch.profile(0)


def _exact(env: Envelope) -> Profile:
    return decode_exact(env.view, env.strings, env.raw)


def _guess(raw: bytes) -> str:
    """Name what the bytes look like, so the error helps whoever pointed us at the wrong URL."""
    head = raw[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        return "looks like HTML, not a pprof protobuf"
    if head.startswith((b"{", b"[")):
        return "looks like JSON, not a pprof protobuf"
    return "not a pprof protobuf, nor a legacy format go tool pprof reads"


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


def _chunks(blobs: list[bytes]) -> list[list[bytes]]:
    """Consecutive runs of ``blobs`` of about ``_CHUNK`` bytes each."""
    if not blobs:
        return [[]]
    ends = np.cumsum(np.fromiter(map(len, blobs), np.int64, count=len(blobs)))
    cuts = np.searchsorted(ends, np.arange(_CHUNK, int(ends[-1]), _CHUNK), side="right")
    bounds = [0, *np.unique(cuts[(cuts > 0) & (cuts < len(blobs))]).tolist(), len(blobs)]
    return [blobs[a:b] for a, b in pairwise(bounds)]


def _i(values: U64) -> I64:
    return values.view(np.int64)


def _fast(envs: list[Envelope]) -> ProfileBatch:
    """Scan the repeated messages of all envelopes together, chunk by chunk."""
    string_base = bases([len(e.strings) for e in envs])
    views = [e.view for e in envs]
    sample_counts = [len(v.sample) for v in views]
    sample_base = bases(sample_counts)
    width = max((len(e.header.sample_types) for e in envs), default=0)
    types = np.repeat(np.array([len(e.header.sample_types) for e in envs], np.int64), sample_counts)
    sb_per_sample = np.repeat(string_base[:-1], sample_counts)

    offsets, locs, vals, counts = [np.zeros(1, np.int64)], [], [], []
    lab: list[list[I64]] = [[], [], [], [], []]
    done = 0
    for chunk in _chunks([b for v in views for b in v.sample]):
        f = wire.scan(chunk)
        loc_ids, loc_off = f.repeated(1)
        raw_values, val_off = f.repeated(2)
        offsets.append(loc_off[1:] + offsets[-1][-1])
        locs.append(loc_ids)
        vals.append(_i(raw_values))
        counts.append(np.diff(val_off))
        labels, owner = f.sub(3)
        owner = owner + done
        lab[0].append(owner)
        base = sb_per_sample[owner]
        key, strc, num, unit = (_i(labels.scalar(k)) for k in (1, 2, 3, 4))
        lab[1].append(key + base)
        lab[2].append(np.where(strc != 0, strc + base, 0))
        lab[3].append(num)
        lab[4].append(unit + base)
        done += f.count
    value_counts = np.concatenate(counts)
    flat_values = np.concatenate(vals)
    values = np.zeros((done, width), np.int64)
    if (value_counts == types).all():
        cols = np.arange(flat_values.size) - np.repeat(np.cumsum(value_counts) - value_counts, value_counts)
        values[np.repeat(np.arange(done), value_counts), cols] = flat_values
    mappings = _fast_mappings([b for v in views for b in v.mapping])
    functions = _fast_functions([b for v in views for b in v.function])
    mapping_base = bases([len(v.mapping) for v in views])
    function_base = bases([len(v.function) for v in views])
    m_sb = np.repeat(string_base[:-1], np.diff(mapping_base))
    f_sb = np.repeat(string_base[:-1], np.diff(function_base))
    mappings.filename += m_sb
    mappings.build_id += m_sb
    functions.name += f_sb
    functions.system_name += f_sb
    functions.filename += f_sb
    return ProfileBatch(
        headers=[e.header for e in envs],
        value_counts=value_counts,
        strings=[x for e in envs for x in e.strings],
        string_base=string_base,
        sample_base=sample_base,
        offsets=np.concatenate(offsets),
        location_ids=np.concatenate(locs).astype(np.uint64) if locs else np.zeros(0, np.uint64),
        values=values,
        label_owner=np.concatenate(lab[0]) if lab[0] else np.zeros(0, np.int64),
        label_key=np.concatenate(lab[1]) if lab[1] else np.zeros(0, np.int64),
        label_str=np.concatenate(lab[2]) if lab[2] else np.zeros(0, np.int64),
        label_num=np.concatenate(lab[3]) if lab[3] else np.zeros(0, np.int64),
        label_unit=np.concatenate(lab[4]) if lab[4] else np.zeros(0, np.int64),
        mapping_base=mapping_base,
        mappings=mappings,
        function_base=function_base,
        functions=functions,
        location_base=bases([len(v.location) for v in views]),
        locations=_fast_locations([b for v in views for b in v.location]),
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
