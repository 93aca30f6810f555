"""The fast decoder of a profile's repeated messages: straight into columns, compiled with numba.

upb parses a profile in C, but reading its samples, locations, functions and mappings back
from Python costs about 1 µs per element (research/dependencies.md §3), several times the
parse itself. So upb handles the envelope (header and string table) and this module walks the
same bytes once more in machine code, writing every repeated message straight into columns:
one pass counts (reading tags and lengths, not values), one pass fills. It runs without the GIL, so callers decode in parallel
threads while the writer thread commits.

Only plain encodings are read here: varint and length-delimited fields, repeated scalars packed
or not, last occurrence of a singular field wins, unknown fields skipped. Anything else
(groups, a singular field with the wrong wire type, a length past its message, a varint longer
than ten bytes) sets a non-zero status; the caller then decodes with upb, which is exact and
words real corruption as pprof does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.jit import jit
from service.pprof.model import Functions, Locations, Mappings, expand, offsets_of
from service.types import I64, U64

__all__ = ["Columns", "Unsupported", "columns", "numbered_in_order", "parts", "rows_of"]


# Row widths of the packed outputs.
LABEL_W = 5  # sample index, key, str, num, num_unit
MAPPING_W = 10  # id, memory_start, memory_limit, file_offset, filename, build_id, has_* x4
FUNCTION_W = 5  # id, name, system_name, filename, start_line
LOCATION_W = 5  # id, mapping_id, address, is_folded, number of lines
LINE_W = 3  # function_id, line, column


class Unsupported(Exception):
    """The bytes are not in the plain encoding this module reads; decode them another way."""


@dataclass(frozen=True, slots=True)
class Columns:
    """The repeated messages of one profile, as columns (row order = wire order)."""

    sample_locations: I64  # per sample: how many location ids
    sample_values: I64  # per sample: how many values
    location_ids: U64
    values: I64
    # Packed rows of raw varints as int64 (unsigned fields: view as uint64).
    labels: I64  # (n, LABEL_W)
    mappings: I64  # (n, MAPPING_W)
    functions: I64  # (n, FUNCTION_W)
    locations: I64  # (n, LOCATION_W)
    lines: I64  # (n, LINE_W)
    # References resolved to row indexes within the profile (-1: no such id).
    sample_location: I64  # per location id of the samples
    line_function: I64  # per line
    location_mapping: I64  # per location (-1 also for mapping_id 0: unmapped)

    def parts(self) -> tuple[Mappings, Functions, Locations]:
        """The entity columns as the model's types (views, string codes of this profile)."""
        return parts(self.mappings, self.functions, self.locations, self.lines)

    @classmethod
    def of(
        cls,
        *,
        depths: I64,
        location_ids: U64,
        values: I64,
        labels: I64,
        mappings: Mappings,
        functions: Functions,
        locations: Locations,
    ) -> Columns:
        """The one constructor of a profile's columns from parts, for what was never pprof bytes.

        Legacy text, folded stacks and profiles upb decoded become these columns here, so
        everything downstream reads one form. ``values`` is (samples, types); ``labels`` has
        ``LABEL_W`` columns (sample, key, str, num, num_unit), rows grouped by sample in order.
        """
        m = np.zeros((len(mappings), MAPPING_W), np.int64)
        for k, col in enumerate((mappings.id, mappings.start, mappings.limit, mappings.offset)):
            m[:, k] = np.asarray(col, np.uint64).view(np.int64)
        m[:, 4], m[:, 5], m[:, 6:10] = mappings.filename, mappings.build_id, mappings.flags
        f = np.zeros((len(functions), FUNCTION_W), np.int64)
        f[:, 0] = np.asarray(functions.id, np.uint64).view(np.int64)
        f[:, 1], f[:, 2], f[:, 3], f[:, 4] = (
            functions.name,
            functions.system_name,
            functions.filename,
            functions.start_line,
        )
        loc = np.zeros((len(locations), LOCATION_W), np.int64)
        for k, col in enumerate((locations.id, locations.mapping_id, locations.address)):
            loc[:, k] = np.asarray(col, np.uint64).view(np.int64)
        loc[:, 3], loc[:, 4] = locations.is_folded, np.diff(locations.line_offsets)
        lines = np.zeros((locations.line_function_id.size, LINE_W), np.int64)
        lines[:, 0] = np.asarray(locations.line_function_id, np.uint64).view(np.int64)
        lines[:, 1], lines[:, 2] = locations.line_line, locations.line_column
        ids = np.ascontiguousarray(location_ids, np.uint64)
        return cls._packed(depths, ids, values, np.asarray(labels, np.int64).reshape(-1, LABEL_W), m, f, loc, lines)

    @classmethod
    def _packed(cls, depths: I64, ids: U64, values: I64, labels: I64, m: I64, f: I64, loc: I64, lines: I64) -> Columns:
        n, w = values.shape
        return cls(
            np.asarray(depths, np.int64),
            np.full(n, w, np.int64),
            ids,
            np.ascontiguousarray(values, np.int64).reshape(-1),
            labels,
            m,
            f,
            loc,
            lines,
            rows_of(loc[:, 0], ids.view(np.int64)),
            rows_of(f[:, 0], lines[:, 0]),
            rows_of(m[:, 0], loc[:, 1]),
        )

    def select(self, rows: I64, values: I64, *, depths: I64 | None = None, labels: I64 | None = None) -> Columns:
        """Samples ``rows`` (in that order, each at most once) with new ``values`` (rows, types); symbols kept.

        How a profile is split, cut to some sample types, truncated or turned into a delta
        without being encoded again: ``depths`` keeps each stack's innermost frames (a stack is
        listed leaf first), ``labels`` replaces the label rows (numbered by the old samples).
        """
        offsets = offsets_of(self.sample_locations)
        full = self.sample_locations[rows]
        keep = full if depths is None else np.minimum(full, depths)
        elems = expand(offsets[rows], keep)
        lab = self.labels if labels is None else labels
        new = np.full(self.sample_locations.size, -1, np.int64)
        new[rows] = np.arange(rows.size)
        owner = new[lab[:, 0]] if lab.size else np.zeros(0, np.int64)
        picked = np.flatnonzero(owner >= 0)
        picked = picked[np.argsort(owner[picked], kind="stable")]
        lab = lab[picked]
        lab[:, 0] = owner[picked]
        return Columns(
            keep,
            np.full(rows.size, values.shape[1], np.int64),
            self.location_ids[elems],
            np.ascontiguousarray(values, np.int64).reshape(-1),
            lab,
            self.mappings,
            self.functions,
            self.locations,
            self.lines,
            self.sample_location[elems],
            self.line_function,
            self.location_mapping,
        )


def parts(mappings: I64, functions: I64, locations: I64, lines: I64) -> tuple[Mappings, Functions, Locations]:
    """Packed rows (one profile's or a batch's) as the model's column types."""
    m, f, loc = mappings, functions, locations

    # Strided views, no copies: consumers index them (a copy then) or hand them to compiled code.
    def u(column: I64) -> U64:
        return column.view(np.uint64)

    def i(column: I64) -> I64:
        return column

    line_offsets = offsets_of(loc[:, 4])
    return (
        Mappings(u(m[:, 0]), u(m[:, 1]), u(m[:, 2]), u(m[:, 3]), i(m[:, 4]), i(m[:, 5]), m[:, 6:10] != 0),
        Functions(u(f[:, 0]), i(f[:, 1]), i(f[:, 2]), i(f[:, 3]), i(f[:, 4])),
        Locations(
            u(loc[:, 0]),
            u(loc[:, 1]),
            u(loc[:, 2]),
            loc[:, 3] != 0,
            line_offsets,
            u(lines[:, 0]),
            i(lines[:, 1]),
            i(lines[:, 2]),
        ),
    )


def columns(raw: bytes) -> Columns:
    """Decode the samples, mappings, locations and functions of serialized ``Profile`` bytes."""
    buf = np.frombuffer(raw, np.uint8)
    counts = np.zeros(8, np.int64)
    status = _walk(buf, counts, *_outputs(np.zeros(8, np.int64)), False)
    if status:
        raise Unsupported(_REASONS.get(status, "unreadable field"))
    out = _outputs(counts)
    status = _walk(buf, np.zeros(8, np.int64), *out, True)
    if status:  # what counting does not read: the fields inside labels, lines, mappings, functions
        raise Unsupported(_REASONS.get(status, "unreadable field"))
    meta, loc_ids, values, labels, mappings, functions, locations, lines = out
    return Columns(
        meta[:, 0],
        meta[:, 1],
        loc_ids.view(np.uint64),
        values,
        labels,
        mappings,
        functions,
        locations,
        lines,
        rows_of(locations[:, 0], loc_ids),
        rows_of(functions[:, 0], lines[:, 0]),
        rows_of(mappings[:, 0], locations[:, 1]),
    )


_REASONS = {
    1: "truncated or overlong varint",
    2: "length beyond the enclosing message",
    3: "unsupported wire type (group or reserved)",
    4: "field number 0",
    5: "singular field with an unexpected wire type",
}


def _outputs(c: I64) -> tuple[I64, I64, I64, I64, I64, I64, I64, I64]:
    return (
        np.zeros((c[0], 2), np.int64),
        np.zeros(c[1], np.int64),
        np.zeros(c[2], np.int64),
        np.zeros((c[3], LABEL_W), np.int64),
        np.zeros((c[4], MAPPING_W), np.int64),
        np.zeros((c[5], FUNCTION_W), np.int64),
        np.zeros((c[6], LOCATION_W), np.int64),
        np.zeros((c[7], LINE_W), np.int64),
    )


# Each helper returns the new position, or a negative status. Positions are int64 throughout.


@jit
def _varint(buf, pos, end):  # type: ignore[no-untyped-def]
    # int64 arithmetic only: numba turns mixed uint64/int64 expressions into float64. The bits
    # are the same; callers reinterpret as uint64 where the field is unsigned. The length check
    # sits after the loop: a bound inside it stops LLVM from optimizing the loop (3x slower).
    result = np.int64(0)
    shift = np.int64(0)
    start = pos
    while pos < end:
        b = np.int64(buf[pos])
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if pos - start > 10:
                break
            return result, pos
        shift += 7
    return np.int64(0), np.int64(-1)


@jit
def _length(buf, pos, end):  # type: ignore[no-untyped-def]
    """The end of a length-delimited payload starting at ``pos`` (its length varint), and its start."""
    n, pos = _varint(buf, pos, end)
    if pos < 0:
        return np.int64(-1), pos
    if n < 0 or n > end - pos:
        return np.int64(-2), pos
    return pos + np.int64(n), pos


@jit
def _skip(buf, pos, end, wt):  # type: ignore[no-untyped-def]
    if wt == 0:
        _, pos = _varint(buf, pos, end)
        return pos
    if wt == 2:
        stop, _ = _length(buf, pos, end)
        return stop
    if wt == 1 or wt == 5:
        pos += 8 if wt == 1 else 4
        return pos if pos <= end else np.int64(-2)
    return np.int64(-3)


@jit
def _scalar(buf, pos, end, wt):  # type: ignore[no-untyped-def]
    """A singular varint field's value; wire type must be 0."""
    if wt != 0:
        return np.int64(0), np.int64(-5)
    return _varint(buf, pos, end)


@jit
def _repeated(buf, pos, end, wt, out, at, fill):  # type: ignore[no-untyped-def]
    """A repeated varint field, packed (wt 2) or not (wt 0): appends at ``out[at:]``; returns (pos, count)."""
    if wt == 0:
        v, pos = _varint(buf, pos, end)
        if pos >= 0 and fill:
            out[at] = v
        return pos, np.int64(1)
    if wt != 2:
        return np.int64(-5), np.int64(0)
    stop, pos = _length(buf, pos, end)
    if stop < 0:
        return stop, np.int64(0)
    k = np.int64(0)
    if not fill:  # counting: one varint ends at each byte below 0x80, and the last byte must end one
        if stop > pos and buf[stop - 1] >= 0x80:
            return np.int64(-1), np.int64(0)
        for i in range(pos, stop):
            k += buf[i] < 0x80
        return stop, k
    while pos < stop:
        v, pos = _varint(buf, pos, stop)
        if pos < 0:
            return pos, np.int64(0)
        out[at + k] = v
        k += 1
    return stop, k


@jit
def _fields(buf, pos, end, out, row, nfields, fill):  # type: ignore[no-untyped-def]
    """A message of singular varint fields 1..nfields into ``out[row]``; other fields skipped."""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return pos
        f = tag >> 3
        wt = tag & 7
        if f == 0:
            return np.int64(-4)
        if f >= 1 and f <= nfields:
            v, pos = _scalar(buf, pos, end, wt)
            if pos >= 0 and fill:
                out[row, f - 1] = v
        else:
            pos = _skip(buf, pos, end, wt)
        if pos < 0:
            return pos
    return pos


@jit
def _walk(buf, c, meta, loc_ids, values, labels, mappings, functions, locations, lines, fill):  # type: ignore[no-untyped-def]
    """Walk a Profile; ``c`` counts rows per output. Without ``fill`` it only counts."""
    end = np.int64(buf.size)
    pos = np.int64(0)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return -pos
        f = tag >> 3
        wt = tag & 7
        if f == 0:
            return 4
        if f < 2 or f > 5:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return -pos
            continue
        if wt != 2:
            return 5
        stop, pos = _length(buf, pos, end)
        if stop < 0:
            return -stop
        if f == 2:  # Sample: 1 location_id, 2 value, 3 label
            s = c[0]
            nl = np.int64(0)
            nv = np.int64(0)
            while pos < stop:
                tag, pos = _varint(buf, pos, stop)
                if pos < 0:
                    return -pos
                sf = tag >> 3
                swt = tag & 7
                if sf == 1:
                    pos, k = _repeated(buf, pos, stop, swt, loc_ids, c[1] + nl, fill)
                    nl += k
                elif sf == 2:
                    pos, k = _repeated(buf, pos, stop, swt, values, c[2] + nv, fill)
                    nv += k
                elif sf == 3:
                    if swt != 2:
                        return 5
                    lstop, pos = _length(buf, pos, stop)
                    if lstop < 0:
                        return -lstop
                    if fill:
                        labels[c[3], 0] = s
                        pos = _fields(buf, pos, lstop, labels[:, 1:], c[3], 4, fill)
                    else:
                        pos = lstop
                    c[3] += 1
                elif sf == 0:
                    return 4
                else:
                    pos = _skip(buf, pos, stop, swt)
                if pos < 0:
                    return -pos
            if fill:
                meta[s, 0] = nl
                meta[s, 1] = nv
            c[0] += 1
            c[1] += nl
            c[2] += nv
        elif f == 3:  # Mapping
            if fill:
                pos = _fields(buf, pos, stop, mappings, c[4], MAPPING_W, fill)
            c[4] += 1
        elif f == 5:  # Function
            if fill:
                pos = _fields(buf, pos, stop, functions, c[5], FUNCTION_W, fill)
            c[5] += 1
        else:  # Location: 1 id, 2 mapping_id, 3 address, 4 line, 5 is_folded
            row = c[6]
            n_lines = np.int64(0)
            while pos < stop:
                tag, pos = _varint(buf, pos, stop)
                if pos < 0:
                    return -pos
                lf = tag >> 3
                lwt = tag & 7
                if lf == 4:
                    if lwt != 2:
                        return 5
                    lstop, pos = _length(buf, pos, stop)
                    if lstop < 0:
                        return -lstop
                    pos = _fields(buf, pos, lstop, lines, c[7], LINE_W, fill) if fill else lstop
                    c[7] += 1
                    n_lines += 1
                elif lf == 1 or lf == 2 or lf == 3 or lf == 5:
                    v, pos = _scalar(buf, pos, stop, lwt)
                    if pos >= 0 and fill:
                        locations[row, 3 if lf == 5 else lf - 1] = v
                elif lf == 0:
                    return 4
                else:
                    pos = _skip(buf, pos, stop, lwt)
                if pos < 0:
                    return -pos
            if fill:
                locations[row, 4] = n_lines
            c[6] += 1
        if pos < 0:
            return -pos
        pos = stop
    return 0


@jit
def numbered_in_order(ids):  # type: ignore[no-untyped-def]
    """Whether ``ids`` are 1..n in order, as Go writes them (then an id's row is ``id - 1``)."""
    for i in range(ids.size):  # noqa: SIM110 (numba compiles loops, not generator expressions)
        if ids[i] != i + 1:
            return False
    return True


@jit
def rows_of(def_ids, ref_ids):  # type: ignore[no-untyped-def]
    """Row of each referenced id among ``def_ids`` (one profile's), -1 when absent.

    Go numbers ids 1..n in order, so the row is arithmetic; other producers get a sorted lookup.
    """
    n = def_ids.size
    out = np.full(ref_ids.size, -1, np.int64)
    if numbered_in_order(def_ids):
        for j in range(ref_ids.size):
            v = ref_ids[j]
            if v >= 1 and v <= n:
                out[j] = v - 1
        return out
    order = np.argsort(def_ids)
    ids = def_ids[order]
    for j in range(ref_ids.size):
        k = np.searchsorted(ids, ref_ids[j])
        if k < n and ids[k] == ref_ids[j]:
            out[j] = order[k]
    return out
