"""Bytes → the decoded columnar form (:class:`Envelope`), once, whatever the source.

Every source ends here: :func:`read` is the one place bytes are gunzipped under the size caps
and parsed. Three stages, each with its own error prefix as pprof words them: gunzip
("decompressing profile: …"), protobuf parse ("parsing profile: …") and resolution plus
validation ("malformed profile: …"). Compression is sniffed from the gzip magic, never from a
file name: several real profiles named ``.pb.gz`` are raw protobuf.

upb parses the envelope (header, string table); the repeated messages (samples, locations,
functions, mappings) are decoded into columns by :mod:`service.pprof.decode_fast`, compiled code that
runs in the caller's thread without the GIL. When their encoding is unusual, upb decodes them
(the slow, exact path, which also words real corruption) and the result becomes the same
columns; so do legacy text profiles (:mod:`service.pprof.legacy`) and folded stacks
(:mod:`service.pprof.folded`) through :func:`from_profile`. What changes a decoded profile —
a push split by sample labels, a scrape's delta — selects from its columns
(:meth:`~service.pprof.decode_fast.Columns.select`); nothing is encoded to protobuf to be parsed again.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash
from google.protobuf.message import DecodeError

from service.errors import DecompressError, MalformedProfile, ParseError, ProfileError, ProfileTooLarge
from service.pprof import decode_fast
from service.pprof import profile_pb2 as pb
from service.pprof.batch import ProfileBatch, Resolved, expand
from service.pprof.decode_exact import decode_exact
from service.pprof.hashing import ContentIds, content_ids, hash_strings
from service.pprof.legacy import looks_legacy, parse_legacy
from service.pprof.model import Functions, Header, Locations, Mappings, Profile, StringTable, ValueType, offsets_of
from service.pprof.validate import check_valid, valid
from service.types import I64, DecodeLimits

__all__ = [
    "Entities",
    "Envelope",
    "check",
    "content_ids_of",
    "decode",
    "decode_batch",
    "decompress",
    "derived",
    "entities",
    "envelope",
    "from_profile",
    "is_gzip",
    "parse",
    "read",
    "resolve",
]

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


def decompress(data: bytes, limits: DecodeLimits | None = None) -> bytes:
    """Gunzip ``data`` (all members, as Go's gzip reader does) without ever holding more than the cap.

    Profiles come in through :func:`read`; this is also what gunzips an HTTP body (``Content-Encoding``).
    """
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
    """A decoded profile: header and strings resolved, samples and symbols as columns, not yet validated.

    Building one is cheap (upb and compiled code do the work) and catches what is wrong with the
    bytes as a whole, so ingest can answer a bad request at once; the rules are checked by
    :func:`check` (per profile, in the ingest thread) or :func:`decode_batch` (many at once).
    """

    header: Header
    strings: list[str]
    columns: decode_fast.Columns
    content_hash: int  # what makes the same profile the same (idempotent ingest): of its bytes when it had some
    size: int  # bytes it was read from (its part of them, for the parts of a split push)
    raw: bytes | None = None  # the protobuf it was parsed from: the exact decoder words its errors
    view: pb.ProfileView | None = None


def read(data: bytes, limits: DecodeLimits | None = None, parse: Callable[[bytes], Envelope] | None = None) -> Envelope:
    """The one way bytes become a profile: gunzip under the size caps, then ``parse`` (pprof or legacy
    text by default; :func:`service.pprof.folded.parse_folded` for collapsed stacks)."""
    if not data:
        raise ParseError("empty input file")
    return (parse or envelope)(decompress(data, limits))


def envelope(raw: bytes) -> Envelope:
    """Parse uncompressed protobuf (or legacy text) bytes into columns."""
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
            return from_profile(parse_legacy(raw), content_hash=xxhash.xxh3_64_intdigest(raw), size=len(raw))
        raise ParseError(_guess(raw))
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
    digest = xxhash.xxh3_64_intdigest(raw)
    try:
        cols = decode_fast.columns(raw)
    except decode_fast.Unsupported:
        # An unusual but maybe valid encoding: upb decodes it (and words what is wrong with it).
        cols = decode_exact(view, strings, raw)
    return Envelope(header, strings, cols, digest, len(raw), raw, view)


def from_profile(p: Profile, *, content_hash: int, size: int) -> Envelope:
    """The decoded form of a profile built as the model (legacy text, folded stacks): its columns, once.

    Raises pprof's message when the profile breaks a rule.
    """
    strings, cols = _columns_of(p)
    check_valid(cols, len(p.sample_types))
    return Envelope(p.header(), strings, cols, content_hash, size)


def derived(
    env: Envelope,
    columns: decode_fast.Columns,
    *,
    header: Header | None = None,
    strings: list[str] | None = None,
    salt: object = "",
) -> Envelope:
    """A profile made from ``env`` by selecting from its columns (a split part, a delta, kept types).

    It is valid when ``env`` is; its content hash is ``env``'s with ``salt`` (what was made of it) mixed in.
    """
    h = xxhash.xxh3_64(env.content_hash.to_bytes(8, "little"))
    h.update(repr(salt).encode())
    return Envelope(header or env.header, env.strings if strings is None else strings, columns, h.intdigest(), env.size)


def _columns_of(p: Profile) -> tuple[list[str], decode_fast.Columns]:
    """A resolved profile as decoded columns; the label strings join the profile's dictionary."""
    code = StringTable(p.strings)
    s = p.samples
    set_rows = [
        [(code(lb.key), code(lb.str) if lb.str else 0, lb.num, code(lb.num_unit)) for lb in ls] for ls in s.labelsets
    ]
    labels = [(i, *lb) for i, k in enumerate(s.labelset_index.tolist()) for lb in set_rows[k]]
    cols = decode_fast.Columns.of(
        depths=s.depths(),
        location_ids=s.location_ids,
        values=s.values,
        labels=np.array(labels, np.int64).reshape(-1, decode_fast.LABEL_W),
        mappings=p.mappings,
        functions=p.functions,
        locations=p.locations,
    )
    return code.table, cols


def content_ids_of(env: Envelope) -> ContentIds:
    """Content hashes of one decoded profile's symbols, stacks and label sets (a valid one: see :func:`check`)."""
    c = env.columns
    mappings, functions, locations = c.parts()
    lab = c.labels
    return content_ids(
        hash_strings(env.strings),
        mappings,
        functions,
        locations,
        location_mapping=c.location_mapping,
        line_function=c.line_function,
        offsets=offsets_of(c.sample_locations),
        sample_location=c.sample_location,
        labels=(lab[:, 0], lab[:, 1], lab[:, 2], lab[:, 3], lab[:, 4]),
    )


def decode(data: bytes, limits: DecodeLimits | None = None) -> Profile:
    """Decode gzipped or raw pprof bytes into a validated, resolved profile."""
    return resolve(read(data, limits))


def parse(raw: bytes) -> Profile:
    """Parse uncompressed protobuf bytes into a validated, resolved profile."""
    return resolve(envelope(raw))


def resolve(env: Envelope) -> Profile:
    """The validated, resolved profile of an envelope."""
    batch, errors = decode_batch([env])
    if errors[0] is not None:
        raise errors[0]
    return batch.profile(0)


def check(env: Envelope) -> None:
    """pprof's validity rules on one decoded profile; raises pprof's message for the first one broken."""
    error = _error(env)
    if error is not None:
        raise error


def _error(env: Envelope) -> ProfileError | None:
    if valid(env.columns, len(env.header.sample_types), len(env.strings)):
        return None
    if env.raw is not None and env.view is not None:
        try:
            decode_exact(env.view, env.strings, env.raw)
        except ProfileError as exc:
            return exc
    # The column checks found a fault the exact decoder does not: refuse, never store it.
    return MalformedProfile("profile failed validation")


def decode_batch(envs: list[Envelope]) -> tuple[ProfileBatch, list[ProfileError | None]]:
    """Decode many envelopes column-wise at once; a profile that fails validation is left out.

    Returns the batch of the valid ones (in order) and, per input, its error or ``None``.
    """
    errors = [_error(e) for e in envs]
    good = [e for e, err in zip(envs, errors, strict=True) if err is None]
    return (_fast(good) if good else ProfileBatch.empty()), errors


def _guess(raw: bytes) -> str:
    """Name what the bytes look like, so the error helps whoever pointed us at the wrong URL.

    Plain text is usually an error message from the profiled program itself — Go's
    ``/debug/pprof/profile`` answers ``Could not enable CPU profiling: cpu profiling already in
    use`` while another CPU profile runs — so its first line is shown: it says what went wrong.
    """
    head = raw[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        return "unrecognized profile format: looks like HTML, not a pprof protobuf"
    if head.startswith((b"{", b"[")):
        return "unrecognized profile format: looks like JSON, not a pprof protobuf"
    line = _text_line(raw)
    if line is not None:
        return f"not a pprof profile: the body is text: {json.dumps(line, ensure_ascii=False)}"
    return "unrecognized profile format: not a pprof protobuf, nor a legacy format go tool pprof reads"


def _text_line(raw: bytes, limit: int = 200) -> str | None:
    """The first non-blank line (at most ``limit`` characters) when the bytes are printable UTF-8 text."""
    head = raw[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # invalid, not merely a character cut at the 4 KiB mark
            return None
        text = head[: exc.start].decode("utf-8")
    if not text.strip() or any(not ch.isprintable() and ch not in "\t\n\r" for ch in text):
        return None
    line = next(ln.strip() for ln in text.splitlines() if ln.strip())
    return line if len(line) <= limit else line[:limit] + "…"


def _strings(raw: list[bytes]) -> list[str]:
    if not raw:
        raise MalformedProfile("string_table is empty; string_table[0] must be ''")
    if raw[0] != b"":
        raise MalformedProfile("string_table[0] must be ''")
    joined = b"\x00".join(raw)
    if joined.count(b"\x00") != len(raw) - 1:  # some string holds a NUL itself: split would cut it
        return _each(raw)
    try:
        return joined.decode("utf-8").split("\x00")
    except UnicodeDecodeError:
        return _each(raw)


def _each(raw: list[bytes]) -> list[str]:
    # Invalid UTF-8 (seen in real profiles) becomes U+FFFD, as go tool pprof prints it.
    return [s.decode("utf-8", "replace") for s in raw]


@dataclass(frozen=True, slots=True)
class Entities:
    """The symbol tables and sample labels of decoded envelopes, concatenated in batch numbering.

    String codes index ``strings`` (all profiles' tables one after the other), label owners are
    batch sample indexes, and ``*_base`` give each profile's range of rows.
    """

    strings: list[str]
    string_base: I64
    sample_base: I64
    mapping_base: I64
    mappings: Mappings
    function_base: I64
    functions: Functions
    location_base: I64
    locations: Locations
    labels: tuple[I64, I64, I64, I64, I64]  # batch sample, key, str (0: numeric), num, unit


def entities(envs: Sequence[Envelope]) -> Entities:
    """Concatenate the columns of decoded envelopes into batch numbering."""
    cols = [e.columns for e in envs]
    string_base = offsets_of([len(e.strings) for e in envs])
    sb = string_base[:-1]
    sample_base = offsets_of([c.sample_locations.size for c in cols])

    def rows(name: str, width: int) -> tuple[I64, I64, I64]:
        """All profiles' rows of one packed output, the base per profile, and each row's string base."""
        parts = [getattr(c, name) for c in cols]
        base = offsets_of([p.shape[0] for p in parts])
        table = np.concatenate(parts) if parts else np.zeros((0, width), np.int64)
        return table, base, np.repeat(sb, np.diff(base))

    lab, label_base, lab_sb = rows("labels", decode_fast.LABEL_W)
    strc = lab[:, 2]
    m, mapping_base, m_sb = rows("mappings", decode_fast.MAPPING_W)
    f, function_base, f_sb = rows("functions", decode_fast.FUNCTION_W)
    loc, location_base, _ = rows("locations", decode_fast.LOCATION_W)
    lines = _cat([c.lines for c in cols], np.int64).reshape(-1, decode_fast.LINE_W)
    mappings, functions, locations = decode_fast.parts(m, f, loc, lines)
    mappings.filename = mappings.filename + m_sb
    mappings.build_id = mappings.build_id + m_sb
    functions.name = functions.name + f_sb
    functions.system_name = functions.system_name + f_sb
    functions.filename = functions.filename + f_sb
    return Entities(
        strings=[x for e in envs for x in e.strings],
        string_base=string_base,
        sample_base=sample_base,
        mapping_base=mapping_base,
        mappings=mappings,
        function_base=function_base,
        functions=functions,
        location_base=location_base,
        locations=locations,
        labels=(
            lab[:, 0] + np.repeat(sample_base[:-1], np.diff(label_base)),
            lab[:, 1] + lab_sb,
            np.where(strc != 0, strc + lab_sb, 0),
            np.ascontiguousarray(lab[:, 3]),
            lab[:, 4] + lab_sb,
        ),
    )


def _fast(envs: list[Envelope]) -> ProfileBatch:
    """Concatenate the envelopes' columns into one batch, with string codes in batch numbering."""
    ent = entities(envs)
    cols = [e.columns for e in envs]
    sample_counts = [c.sample_locations.size for c in cols]
    width = max((len(e.header.sample_types) for e in envs), default=0)
    types = np.repeat(np.array([len(e.header.sample_types) for e in envs], np.int64), sample_counts)
    value_counts = _cat([c.sample_values for c in cols], np.int64)
    flat_values = _cat([c.values for c in cols], np.int64)
    done = int(ent.sample_base[-1])
    values = np.zeros((done, width), np.int64)
    if (value_counts == types).all():
        col = expand(np.zeros(value_counts.size, np.int64), value_counts)  # each value's place in its sample
        values[np.repeat(np.arange(done), value_counts), col] = flat_values

    def refs(name: str, target_base: I64) -> I64:
        """Per-profile row references moved to batch rows (-1 stays -1)."""
        parts = [getattr(c, name) for c in cols]
        rows = _cat(parts, np.int64)
        base = np.repeat(target_base[:-1], [p.size for p in parts])
        return np.where(rows >= 0, rows + base, -1)

    owner, key, strc, num, unit = ent.labels
    return ProfileBatch(
        headers=[e.header for e in envs],
        value_counts=value_counts,
        strings=ent.strings,
        string_base=ent.string_base,
        sample_base=ent.sample_base,
        offsets=offsets_of(_cat([c.sample_locations for c in cols], np.int64)),
        location_ids=_cat([c.location_ids for c in cols], np.uint64),
        values=values,
        label_owner=owner,
        label_key=key,
        label_str=strc,
        label_num=num,
        label_unit=unit,
        mapping_base=ent.mapping_base,
        mappings=ent.mappings,
        function_base=ent.function_base,
        functions=ent.functions,
        location_base=ent.location_base,
        locations=ent.locations,
        resolved=Resolved(
            refs("sample_location", ent.location_base),
            refs("line_function", ent.function_base),
            refs("location_mapping", ent.mapping_base),
        ),
    )


def _cat(parts: list[npt.NDArray[Any]], dtype: type) -> npt.NDArray[Any]:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)
