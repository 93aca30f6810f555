"""The exact, slow decoder of a profile's repeated messages: upb objects, errors worded as pprof words them.

Used for a profile the column-wise decoder cannot take (an unusual but valid encoding), which
becomes the same decoded columns (:meth:`~service.pprof.decode_fast.Columns.of`), and to word
the error of a profile the column checks found faulty: every check here has pprof's message,
naming the entity and id. About 1 µs per sample, so never the common path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain

import numpy as np
from google.protobuf.message import DecodeError

from service.errors import MalformedProfile, ParseError
from service.pprof import profile_pb2 as pb
from service.pprof.decode_fast import Columns
from service.pprof.model import Functions, Locations, Mappings, offsets_of
from service.pprof.validate import check_valid
from service.types import I64, U64

__all__ = ["decode_exact"]


def decode_exact(view: pb.ProfileView, strings: list[str], raw: bytes) -> Columns:
    """Decode and validate one profile's repeated messages through upb; raises pprof's errors.

    ``view`` and ``strings`` are its envelope's (whose header strings are checked there).
    """
    columns = _assemble(len(view.sample_type), len(strings), _slow(raw))
    check_valid(columns, len(view.sample_type))
    return columns


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


def _assemble(n_types: int, n_strings: int, c: _Columns) -> Columns:
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
        _check_codes(codes, n_strings, where, ids)
    n = c.offsets.size - 1
    if n and n_types == 0:
        raise MalformedProfile("missing sample type information")
    bad = np.flatnonzero(c.value_counts != n_types)
    if bad.size:
        raise MalformedProfile(f"mismatch: sample has {int(c.value_counts[bad[0]])} values vs. {n_types} types")
    _check_codes(c.label_str, n_strings, "label str")
    return Columns.of(
        depths=np.diff(c.offsets),
        location_ids=c.location_ids,
        values=c.values.reshape(n, n_types),
        labels=np.stack([c.label_owner, c.label_key, c.label_str, c.label_num, c.label_unit], axis=1),
        mappings=m,
        functions=f,
        locations=c.locations,
    )
