"""The normalizer: one profile's samples merged, scaled and rolled up, compiled, in the ingest thread.

For one decoded profile (its columns and content ids) this merges samples with equal stack and
labels, drops zero rows, finds each type's gcd (``scale``) and the types that are proportional
to an earlier one (``alias``), lists the distinct stacks with their frames and functions, and
computes flat and cum per function (pprof's rules: flat to the innermost function of the leaf
location, cum once per function per stack). It runs per profile without the GIL so request
threads do it in parallel; the writer thread then only concatenates, filters ids it already
stored and appends. A readable numpy version of the same arithmetic lives in the tests
(``tests/store/reference_normalize.py``), which hold the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.jit import jit
from service.pprof import decode_fast
from service.pprof.decode import Envelope, check, content_ids_of, envelope
from service.pprof.encode import to_message
from service.pprof.hashing import ContentIds, combine_one
from service.pprof.model import Function, Label, Line, Location, Mapping, Profile, Samples, ValueType, offsets_of
from service.types import I64, U64

__all__ = ["Digest", "Prepared", "digest", "digest_of", "prepare", "warm_up"]


@dataclass(frozen=True, slots=True)
class Digest:
    """One profile, normalized: merged rows, scale and aliases, distinct stacks, rollup."""

    rep: I64  # per merged row: the profile's sample it came from (first of its stack and labels)
    values: I64  # (rows, types), unscaled sums; rows with a non-zero value only
    scale: I64  # (types,)
    alias: I64  # (types,) earlier type this one is proportional to, or -1
    totals: I64  # (types,) unscaled
    st_ids: U64  # distinct stacks of the rows
    st_depth: I64
    st_loc: U64  # location hashes of each stack's frames, leaf first
    st_nfn: I64
    st_fn: U64  # function hashes of each stack's frames, inlined lines expanded, innermost first
    r_fn: U64  # functions with a flat or cum value
    r_flat: I64  # (functions, types), scaled
    r_cum: I64


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the ingest thread hands the writer for a profile it decoded from its columns."""

    ids: ContentIds
    digest: Digest


def prepare(env: Envelope) -> Prepared:
    """Validate, hash and normalize one profile in the caller's thread.

    A profile that breaks a rule raises pprof's error here, before it reaches the writer.
    """
    check(env)
    ids = content_ids_of(env)
    return Prepared(ids, digest(env.columns, ids, len(env.header.sample_types)))


def warm_up() -> Envelope:
    """Load (or compile, on a fresh checkout) every kernel the ingest path uses, before traffic.

    The first call of each compiled function loads it from the on-disk cache, or compiles it
    when there is none (seconds); doing that at start keeps the first scrapes on time.
    """
    types = (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))
    p = Profile.build(
        types,
        Samples.of([([1, 2], [1, 10], (Label("k", str="v"),)), ([2], [2, 20], ())], 2),
        mappings=[Mapping(1, 0x1000, 0x2000, 0, "bin", "")],
        locations=[Location(1, 1, 0x1001, (Line(1, 3),)), Location(2, 1, 0x1002, (Line(2, 4), Line(1, 5)))],
        functions=[Function(1, "main.a"), Function(2, "main.b")],
        period_type=types[1],
        period=10,
    )
    env = envelope(to_message(p).SerializeToString())
    prepare(env)
    return env  # for the next stage's kernels (service.store.staging.warm_up)


def digest(c: decode_fast.Columns, ids: ContentIds, n_types: int) -> Digest:
    """Normalize one valid profile (see :func:`service.pprof.decode.check`) from its decoded columns."""
    return digest_of(
        c.values.reshape(-1, n_types) if n_types else np.zeros((c.sample_locations.size, 0), np.int64),
        ids.stack,
        ids.labelset,
        offsets_of(c.sample_locations),
        c.sample_location,
        ids.location,
        offsets_of(c.locations[:, 4]),
        ids.line_function,
        c.line_function,
        ids.function,
    )


def digest_of(
    values: I64,
    stack: U64,
    labelset: U64,
    s_offsets: I64,
    s_location: I64,
    loc_h: U64,
    line_offsets: I64,
    line_fn: U64,
    line_row: I64,
    fn_h: U64,
) -> Digest:
    """Normalize one profile given as arrays: ``values`` (samples, types), each sample's stack and
    label-set hash, its location rows (``s_location`` between ``s_offsets``), each location's hash and
    lines (between ``line_offsets``: function hash and row), and each function row's hash."""
    return Digest(
        *_digest(
            np.ascontiguousarray(values),
            stack,
            labelset,
            s_offsets,
            s_location,
            loc_h,
            line_offsets,
            line_fn,
            line_row,
            fn_h,
        )
    )


@jit
def _gcd(a, b):  # type: ignore[no-untyped-def]
    while b:
        a, b = b, a % b
    return a


@jit
def _digest(values, stack, labelset, s_offsets, s_location, loc_h, line_offsets, line_fn, line_row, fn_h):  # type: ignore[no-untyped-def]
    n, w = values.shape
    # 1. Merge samples with equal stack and label set; keep rows with a non-zero value.
    keys = np.empty(n, np.uint64)
    for i in range(n):
        keys[i] = combine_one(stack[i], labelset[i])
    order = np.argsort(keys, kind="mergesort")
    sums = np.zeros((n, w), np.int64)
    reps = np.empty(n, np.int64)
    m = 0
    i = 0
    while i < n:
        j = i
        k = keys[order[i]]
        reps[m] = order[i]
        while j < n and keys[order[j]] == k:
            for t in range(w):
                sums[m, t] += values[order[j], t]
            j += 1
        nz = False
        for t in range(w):
            if sums[m, t] != 0:
                nz = True
        if nz:
            m += 1
        else:
            for t in range(w):
                sums[m, t] = 0
        i = j
    rows = sums[:m].copy()
    rep = reps[:m].copy()
    # 2. Scale (gcd per type), totals, aliases of proportional types.
    scale = np.ones(w, np.int64)
    totals = np.zeros(w, np.int64)
    for t in range(w):
        g = 0
        for r in range(m):
            g = _gcd(g, abs(rows[r, t]))
            totals[t] += rows[r, t]
        if g > 0:
            scale[t] = g
    scaled = np.empty((m, w), np.int64)
    for r in range(m):
        for t in range(w):
            scaled[r, t] = rows[r, t] // scale[t]
    alias = np.full(w, -1, np.int64)
    for t in range(1, w):
        for u in range(t):
            if alias[t] >= 0 or alias[u] >= 0:
                continue
            same = True
            for r in range(m):
                if scaled[r, t] != scaled[r, u]:
                    same = False
                    break
            if same:
                alias[t] = u
    # 3. Distinct stacks of the rows, their frames and functions, and the scaled sum per stack.
    row_stack = np.empty(m, np.uint64)
    for r in range(m):
        row_stack[r] = stack[rep[r]]
    st_order = np.argsort(row_stack, kind="mergesort")
    st_of = np.empty(m, np.int64)
    n_st = 0
    for q in range(m):
        r = st_order[q]
        if q == 0 or row_stack[r] != row_stack[st_order[q - 1]]:
            n_st += 1
        st_of[r] = n_st - 1
    st_rep = np.empty(n_st, np.int64)
    st_sum = np.zeros((n_st, w), np.int64)
    for r in range(m):
        st_rep[st_of[r]] = rep[r]
        for t in range(w):
            st_sum[st_of[r], t] += scaled[r, t]
    st_ids = np.empty(n_st, np.uint64)
    st_depth = np.empty(n_st, np.int64)
    st_nfn = np.zeros(n_st, np.int64)
    total_depth = 0
    total_fn = 0
    for s in range(n_st):
        smp = st_rep[s]
        st_ids[s] = stack[smp]
        st_depth[s] = s_offsets[smp + 1] - s_offsets[smp]
        total_depth += st_depth[s]
        for e in range(s_offsets[smp], s_offsets[smp + 1]):
            loc = s_location[e]
            st_nfn[s] += line_offsets[loc + 1] - line_offsets[loc]
        total_fn += st_nfn[s]
    st_loc = np.empty(total_depth, np.uint64)
    st_fn = np.empty(total_fn, np.uint64)
    leaf_has_fn = np.zeros(n_st, np.bool_)
    a = 0
    f = 0
    for s in range(n_st):
        smp = st_rep[s]
        first = True
        for e in range(s_offsets[smp], s_offsets[smp + 1]):
            loc = s_location[e]
            st_loc[a] = loc_h[loc]
            a += 1
            if first:
                leaf_has_fn[s] = line_offsets[loc + 1] > line_offsets[loc]
                first = False
            for ln in range(line_offsets[loc], line_offsets[loc + 1]):
                st_fn[f] = line_fn[ln]
                f += 1
    # 4. Rollup: cum counts a function once per stack, flat goes to the leaf's innermost function.
    # Functions are told apart by content: rows with equal hashes are one function.
    fns = np.unique(fn_h)
    nf = fns.size
    canon = np.empty(fn_h.size, np.int64)
    for r in range(fn_h.size):
        canon[r] = np.searchsorted(fns, fn_h[r])
    flat = np.zeros((nf, w), np.int64)
    cum = np.zeros((nf, w), np.int64)
    seen = np.full(nf, -1, np.int64)
    for s in range(n_st):
        smp = st_rep[s]
        first = True
        for e in range(s_offsets[smp], s_offsets[smp + 1]):
            loc = s_location[e]
            for ln in range(line_offsets[loc], line_offsets[loc + 1]):
                fi = canon[line_row[ln]]
                if first and leaf_has_fn[s]:
                    for t in range(w):
                        flat[fi, t] += st_sum[s, t]
                first = False
                if seen[fi] != s:
                    seen[fi] = s
                    for t in range(w):
                        cum[fi, t] += st_sum[s, t]
    used = 0
    for fi in range(nf):
        for t in range(w):
            if flat[fi, t] != 0 or cum[fi, t] != 0:
                used += 1
                break
    r_fn = np.empty(used, np.uint64)
    r_flat = np.empty((used, w), np.int64)
    r_cum = np.empty((used, w), np.int64)
    u = 0
    for fi in range(nf):
        nz = False
        for t in range(w):
            if flat[fi, t] != 0 or cum[fi, t] != 0:
                nz = True
        if nz:
            r_fn[u] = fns[fi]
            for t in range(w):
                r_flat[u, t] = flat[fi, t]
                r_cum[u, t] = cum[fi, t]
            u += 1
    return rep, rows, scale, alias, totals, st_ids, st_depth, st_loc, st_nfn, st_fn, r_fn, r_flat, r_cum
