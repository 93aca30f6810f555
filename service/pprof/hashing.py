"""64-bit content hashes, shared by decoding (dedupe inside a profile) and storage (ids).

In ``pprof/`` because the ids are hashes of the decoded model's entities; the store and the collector
import them from here, never the other way round.

Ids are hashes of content, never sequences: ingest is idempotent and two writers on two
machines (the DuckLake path) agree on every id without talking. Everything is built on
MurmurHash3's 64-bit finalizer. Strings (8 bytes at a time) and the ids derived from them —
functions, mappings, lines, locations, stacks (position-dependent) and label sets
(order-independent) — are computed by compiled kernels (:func:`content_ids`) that run in the
ingest thread without the GIL. Internal keys use the same finalizer column-wise in numpy
(:func:`mix`), and rare one-off keys (series, profile groups) hash a canonical text with xxh3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import xxhash

from service.jit import jit
from service.pprof.model import Functions, Locations, Mappings
from service.types import I64, U64

__all__ = [
    "ContentIds",
    "combine",
    "combine_one",
    "content_ids",
    "fmix64",
    "hash_fields",
    "hash_strings",
    "mix",
    "set_hashes",
]

_SEP = b"\x1f"
_K1 = np.uint64(0xFF51AFD7ED558CCD)
_K2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_fields(*fields: object) -> int:
    """xxh3-64 of the fields joined by a separator that cannot occur in their text forms' roles."""
    h = xxhash.xxh3_64()
    for f in fields:
        h.update(str(f).encode("utf-8", "surrogatepass"))
        h.update(_SEP)
    return h.intdigest()


def fmix64(x: U64) -> U64:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output."""
    x = np.asarray(x, np.uint64)
    x = x ^ (x >> np.uint64(33))
    x = x * _K1
    x = x ^ (x >> np.uint64(33))
    x = x * _K2
    return x ^ (x >> np.uint64(33))


def combine(a: U64, b: U64) -> U64:
    """Order-dependent combination of two id columns."""
    with np.errstate(over="ignore"):
        return fmix64(a ^ fmix64(b + _GOLDEN))


def mix(*columns: npt.ArrayLike) -> U64:
    """Order-dependent hash of several numeric columns, row by row."""
    cols = [np.asarray(c).astype(np.uint64, copy=False) for c in columns]
    h = np.full(cols[0].shape, 0x243F6A8885A308D3, np.uint64)
    for c in cols:
        h = combine(h, c)
    return h


def hash_strings(strings: Sequence[str]) -> U64:
    """A hash of each string's UTF-8 bytes: the content hash string columns are keyed by."""
    if not strings:
        return np.zeros(0, np.uint64)
    joined = "\x00".join(strings).encode("utf-8", "surrogatepass")
    buf = np.frombuffer(joined, np.uint8)
    ends = np.flatnonzero(buf == 0)
    if ends.size != len(strings) - 1:  # a string holds a NUL itself: find the ends by length
        sizes = [len(x.encode("utf-8", "surrogatepass")) for x in strings]
        ends = np.cumsum(np.asarray(sizes, np.int64) + 1) - 1
    else:
        ends = np.append(ends, buf.size)
    return _hash_spans(buf, ends.astype(np.int64))


def set_hashes(element_hashes: U64, owner: npt.NDArray[np.int64], owners: int) -> U64:
    """Order-independent hash of each owner's elements (a label set is a set, not a list)."""
    with np.errstate(over="ignore"):
        sums = np.zeros(owners, np.uint64)
        np.add.at(sums, owner, fmix64(element_hashes))
        counts = np.bincount(owner, minlength=owners).astype(np.uint64)
        return np.where(counts > 0, fmix64(sums ^ fmix64(counts)), np.uint64(0))


# Compiled kernels. All arithmetic is uint64 (numba makes mixed uint64/int64 arithmetic float64).
_SEED = np.uint64(0x243F6A8885A308D3)
_KIND_MAPPING = np.uint64(1)
_KIND_FUNCTION = np.uint64(2)
_KIND_LOCATION = np.uint64(3)
_KIND_LINE = np.uint64(4)
_KIND_LABEL = np.uint64(5)


@jit
def _fmix(x):  # type: ignore[no-untyped-def]
    x ^= x >> np.uint64(33)
    x *= _K1
    x ^= x >> np.uint64(33)
    x *= _K2
    return x ^ (x >> np.uint64(33))


@jit
def combine_one(a, b):  # type: ignore[no-untyped-def]
    return _fmix(a ^ _fmix(b + _GOLDEN))


@jit
def _hash_spans(buf, ends):  # type: ignore[no-untyped-def]
    """Hash of each string ``buf[ends[i-1]+1 : ends[i]]`` (strings separated by one byte), 8 bytes at a time."""
    out = np.empty(ends.size, np.uint64)
    start = 0
    for i in range(ends.size):
        end = ends[i]
        h = _SEED ^ (np.uint64(end - start) * _GOLDEN)
        p = start
        while p < end:
            w = np.uint64(0)
            for k in range(min(8, end - p)):
                w |= np.uint64(buf[p + k]) << np.uint64(8 * k)
            h = combine_one(h, w)
            p += 8
        out[i] = h
        start = end + 1
    return out


@jit
def _segment(hashes, rows, lo, hi):  # type: ignore[no-untyped-def]
    """Position-dependent hash of ``hashes[rows[lo:hi]]`` (a row of -1 counts as 0)."""
    acc = np.uint64(0)
    for j in range(lo, hi):
        r = rows[j]
        e = hashes[r] if r >= 0 else np.uint64(0)
        acc += _fmix(e ^ (np.uint64(j - lo + 1) * _GOLDEN))
    return _fmix(acc ^ _fmix(np.uint64(hi - lo + 1)))


@jit
def _content_ids(  # type: ignore[no-untyped-def]
    sh,
    m_start,
    m_limit,
    m_offset,
    m_file,
    m_build,
    m_flags,
    f_name,
    f_system,
    f_file,
    f_start,
    l_mapping,
    l_address,
    l_folded,
    line_offsets,
    line_function,
    line_line,
    line_column,
    s_offsets,
    s_location,
    lab_owner,
    lab_key,
    lab_str,
    lab_num,
    lab_unit,
):
    map_h = np.empty(m_start.size, np.uint64)
    for i in range(m_start.size):
        flags = np.uint64(0)
        for k in range(4):
            if m_flags[i, k]:
                flags |= np.uint64(1 << k)
        h = combine_one(combine_one(combine_one(_SEED, _KIND_MAPPING), m_start[i]), m_limit[i])
        h = combine_one(combine_one(combine_one(h, m_offset[i]), sh[m_file[i]]), sh[m_build[i]])
        map_h[i] = combine_one(h, flags)
    fn_h = np.empty(f_name.size, np.uint64)
    for i in range(f_name.size):
        h = combine_one(combine_one(combine_one(_SEED, _KIND_FUNCTION), sh[f_name[i]]), sh[f_system[i]])
        fn_h[i] = combine_one(combine_one(h, sh[f_file[i]]), np.uint64(f_start[i]))
    n_lines = line_function.size
    line_fn = np.zeros(n_lines, np.uint64)
    line_h = np.empty(n_lines, np.uint64)
    for i in range(n_lines):
        if line_function[i] >= 0:
            line_fn[i] = fn_h[line_function[i]]
        h = combine_one(combine_one(_SEED, _KIND_LINE), line_fn[i])
        line_h[i] = combine_one(combine_one(h, np.uint64(line_line[i])), np.uint64(line_column[i]))
    n_loc = l_address.size
    loc_map = np.zeros(n_loc, np.uint64)
    loc_h = np.empty(n_loc, np.uint64)
    line_rows = np.arange(n_lines)
    for i in range(n_loc):
        if l_mapping[i] >= 0:
            loc_map[i] = map_h[l_mapping[i]]
        h = combine_one(combine_one(combine_one(_SEED, _KIND_LOCATION), loc_map[i]), l_address[i])
        h = combine_one(h, np.uint64(1) if l_folded[i] else np.uint64(0))
        loc_h[i] = combine_one(h, _segment(line_h, line_rows, line_offsets[i], line_offsets[i + 1]))
    n_samples = s_offsets.size - 1
    stack = np.empty(n_samples, np.uint64)
    for i in range(n_samples):
        stack[i] = _segment(loc_h, s_location, s_offsets[i], s_offsets[i + 1])
    # Label sets: order-independent (a sum of finalized label hashes) with the count mixed in.
    sums = np.zeros(n_samples, np.uint64)
    counts = np.zeros(n_samples, np.uint64)
    for j in range(lab_owner.size):
        h = combine_one(combine_one(_SEED, _KIND_LABEL), sh[lab_key[j]])
        h = combine_one(h, sh[lab_str[j]] if lab_str[j] != 0 else np.uint64(0))
        h = combine_one(combine_one(h, np.uint64(lab_num[j])), sh[lab_unit[j]])
        sums[lab_owner[j]] += _fmix(h)
        counts[lab_owner[j]] += np.uint64(1)
    labelset = np.zeros(n_samples, np.uint64)
    for i in range(n_samples):
        if counts[i] > np.uint64(0):
            labelset[i] = _fmix(sums[i] ^ _fmix(counts[i]))
    return map_h, fn_h, line_fn, loc_map, loc_h, stack, labelset


@dataclass(frozen=True, slots=True)
class ContentIds:
    """The content hash of every entity of one profile or batch, in its row order."""

    mapping: U64
    function: U64
    line_function: U64  # the function hash of each line (0: unresolved)
    location_mapping: U64  # the mapping hash of each location (0: unmapped)
    location: U64
    stack: U64  # per sample
    labelset: U64  # per sample (0: no labels)

    @classmethod
    def concat(cls, parts: Sequence[ContentIds]) -> ContentIds:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__slots__))


def content_ids(
    sh: U64,
    mappings: Mappings,
    functions: Functions,
    locations: Locations,
    *,
    location_mapping: I64,
    line_function: I64,
    offsets: I64,
    sample_location: I64,
    labels: tuple[I64, I64, I64, I64, I64],
) -> ContentIds:
    """Hash mappings, functions, lines, locations, stacks and label sets of resolved columns.

    ``sh`` is the hash of each string code; ``location_mapping``, ``line_function`` and
    ``sample_location`` are references resolved to rows (-1: none); ``offsets`` delimit each
    sample's locations; ``labels`` are the label columns (sample, key, str, num, unit).
    """
    m, f, loc = mappings, functions, locations
    return ContentIds(
        *_content_ids(
            sh,
            m.start,
            m.limit,
            m.offset,
            m.filename,
            m.build_id,
            m.flags,
            f.name,
            f.system_name,
            f.filename,
            f.start_line,
            location_mapping,
            loc.address,
            loc.is_folded,
            loc.line_offsets,
            line_function,
            loc.line_line,
            loc.line_column,
            offsets,
            sample_location,
            *labels,
        )
    )
