"""The exact, slow decoder of a profile's repeated messages: upb objects, errors worded as pprof words them.

Used for a profile the column-wise decoder cannot take (an unusual but valid encoding) and to
word the error of a profile the batch checks found faulty: every check here has pprof's
message, naming the entity and id. About 1 µs per sample, so never the common path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from service.errors import MalformedProfile, ParseError
from service.pprof import profile_pb2 as pb
from service.pprof.hashing import mix, set_hashes
from service.pprof.model import Functions, Label, LabelSet, Locations, Mappings, Profile, Samples, ValueType, offsets_of
from service.pprof.validate import check_valid

__all__ = ["decode_exact"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def decode_exact(view: pb.ProfileView, strings: list[str], raw: bytes) -> Profile:
    """Decode and validate one profile through upb; raises pprof's errors."""
    profile = _assemble(view, strings, _slow(raw))
    check_valid(profile)
    return profile


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


def _slow(raw: bytes) -> _Columns:
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
    offsets = offsets_of(depth)
    val_lists = [s.value for s in samples]
    counts = np.fromiter(map(len, val_lists), np.int64, count=n)
    labels = [(i, lb) for i, s in enumerate(samples) for lb in s.label]

    def col(get: Callable[[pb.Label], int]) -> I64:
        return np.fromiter((get(lb) for _, lb in labels), np.int64, count=len(labels))

    loc_msgs = msg.location
    line_counts = np.fromiter((len(loc.line) for loc in loc_msgs), np.int64, count=len(loc_msgs))
    line_off = offsets_of(line_counts)
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
