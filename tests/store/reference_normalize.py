"""The readable reference of the normalizer: the per-profile arithmetic of ``service.store.digest``
written as plain numpy over a whole batch, for the tests to hold the compiled one equal to.

Samples with equal stack and labels are summed and zero rows dropped; each profile and type is
divided by its gcd (``scale``); a type whose scaled values equal an earlier one's everywhere is
an ``alias`` of it; flat goes to the innermost function of the leaf location (an unsymbolized
leaf gives it to no function) and cum counts a function once per stack, even when recursion
puts it there many times.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.pprof.batch import ProfileBatch
from service.pprof.hashing import ContentIds, mix
from service.pprof.model import expand, offsets_of
from service.store.normalize import Merged

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


def _group(keys: U64) -> tuple[I64, I64]:
    """Sort order and the start of each run of equal keys in it."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if k.size == 0:
        return order, np.zeros(0, np.int64)
    return order, np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))


def merge_batch(b: ProfileBatch, ids: ContentIds) -> Merged:
    n = len(b)
    ntypes = b.num_types()
    width = b.values.shape[1]
    s_owner = b.sample_owner
    loc = b.locations
    stack, sample_ls = ids.stack, ids.labelset
    elem = b.resolve().sample_location
    order, starts = _group(mix(s_owner, stack, sample_ls))
    values = np.add.reduceat(b.values[order], starts, axis=0) if starts.size else b.values[:0]
    rep = order[starts]
    keep = np.flatnonzero(np.any(values != 0, axis=1))
    keep = keep[np.argsort(s_owner[rep[keep]], kind="stable")]  # rows grouped by profile, for per-profile gcds
    values, rep = values[keep], rep[keep]
    owner = s_owner[rep]
    u_stack = stack[rep]

    # Distinct stacks of the batch: frames and functions are worked out once per stack.
    st_ids, st_first, st_of = np.unique(u_stack, return_index=True, return_inverse=True)
    st_of = st_of.reshape(-1)
    st_rep = rep[st_first]
    st_depth = np.diff(b.offsets)[st_rep]
    st_elem = elem[expand(b.offsets[st_rep], st_depth)]  # location row of each frame
    frame_nfn = np.diff(loc.line_offsets)[st_elem]
    st_fn = ids.line_function[expand(loc.line_offsets[st_elem], frame_nfn)]  # inlined lines, innermost first
    st_nfn = np.diff(offsets_of(frame_nfn)[offsets_of(st_depth)])
    # The leaf location's innermost function takes the flat value; an unsymbolized leaf gives it to none.
    leaf_has_fn = (st_depth > 0) & (frame_nfn[np.minimum(offsets_of(st_depth)[:-1], max(frame_nfn.size - 1, 0))] > 0)

    # Scale: per profile and type, the gcd of its values.
    scale = np.ones((n, max(width, 1)), np.int64)
    if values.size:
        first = np.flatnonzero(np.concatenate(([True], owner[1:] != owner[:-1])))
        g = np.gcd.reduceat(np.abs(values), first, axis=0)
        scale[owner[first], :width] = np.where(g > 0, g, 1)
    scaled = values // scale[owner, :width] if values.size else values
    # A type whose scaled values equal an earlier type's in every sample of its profile (Go CPU:
    # samples/count and cpu/nanoseconds) is stored once: the later type aliases the earlier one
    # and keeps only its own scale (readers go through the sample_values/rollup_values views).
    alias = np.full((n, max(width, 1)), -1, np.int64)
    for t in range(1, width):
        for u in range(t):
            differ = (
                np.bincount(owner, weights=scaled[:, t] != scaled[:, u], minlength=n) if values.size else np.zeros(n)
            )
            alias[(differ == 0) & (alias[:, t] < 0) & (alias[:, u] < 0) & (ntypes > t), t] = u
    totals = np.zeros((n, max(width, 1)), np.int64)
    np.add.at(totals[:, :width], owner, values)
    fids, flat, cum, r_owner = rollup(n, scaled, owner, st_of, st_fn, st_nfn, leaf_has_fn)
    return Merged(
        n=n,
        width=width,
        ntypes=ntypes,
        owner=owner,
        rep=rep,
        stack=u_stack,
        labelset=sample_ls[rep],
        values=values,
        scale=scale,
        alias=alias,
        totals=totals,
        st_ids=st_ids,
        st_depth=st_depth,
        st_loc=ids.location[st_elem],
        st_nfn=st_nfn,
        st_fn=st_fn,
        r_fn=fids,
        r_flat=flat,
        r_cum=cum,
        r_owner=r_owner,
        strings=b.strings,
        mappings=b.mappings,
        map_h=ids.mapping,
        functions=b.functions,
        fn_h=ids.function,
        locations=loc,
        loc_h=ids.location,
        loc_map=ids.location_mapping,
        line_fn=ids.line_function,
        labels=(b.label_owner, b.label_key, b.label_str, b.label_num, b.label_unit),
    )


def rollup(
    n: int, scaled: I64, owner: I64, st_of: I64, st_fn: U64, st_nfn: I64, leaf_has_fn: npt.NDArray[np.bool_]
) -> tuple[U64, I64, I64, I64]:
    """Flat and cum per (profile, function) in the samples' scaled units, ordered by profile.

    ``scaled``/``owner``/``st_of``: the batch's merged samples, their profile and distinct-stack
    index; ``st_fn``/``st_nfn``: each distinct stack's functions (innermost first) and their
    count; ``leaf_has_fn``: whether the stack's leaf location has a function. Each stack's
    distinct functions are found once, then samples add into dense (profile, function) slots
    with ``bincount``.
    """
    width = scaled.shape[1]
    fns, fd = np.unique(st_fn, return_inverse=True)
    fd = fd.reshape(-1)
    nf = max(fns.size, 1)
    stack_of = np.repeat(np.arange(st_nfn.size), st_nfn)
    pairs = np.unique(stack_of * nf + fd)  # distinct (stack, function), by stack
    dn = np.bincount(pairs // nf, minlength=st_nfn.size)
    do = offsets_of(dn)
    pf = pairs % nf
    leaf = (
        np.where(leaf_has_fn, fd[np.minimum(offsets_of(st_nfn)[:-1], fd.size - 1)], -1)
        if fd.size
        else np.full(st_nfn.size, -1)
    )
    rows_dn = dn[st_of]
    # Exact in float64 while every sum stays below 2**53; scaled values keep them small.
    exact = not scaled.size or float(np.abs(scaled).sum(axis=0).max()) < 2.0**52
    out_f, out_flat, out_cum, out_owner = [], [], [], []
    step = max(1, (1 << 22) // nf)  # profiles per pass: bounds the dense slot arrays to ~4M
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        rs = np.flatnonzero((owner >= lo) & (owner < hi))
        if rs.size == 0:
            continue
        er = expand(do[st_of[rs]], rows_dn[rs])
        slot = np.repeat(owner[rs] - lo, rows_dn[rs]) * nf + pf[er]
        leaf_rs = rs[leaf[st_of[rs]] >= 0]
        leaf_slot = (owner[leaf_rs] - lo) * nf + leaf[st_of[leaf_rs]]
        size = (hi - lo) * nf
        cum = np.zeros((size, width), np.int64)
        flat = np.zeros((size, width), np.int64)
        for t in range(width):
            if exact:
                cum[:, t] = np.rint(np.bincount(slot, np.repeat(scaled[rs, t], rows_dn[rs]), minlength=size))
                flat[:, t] = np.rint(np.bincount(leaf_slot, scaled[leaf_rs, t], minlength=size))
            else:
                np.add.at(cum[:, t], slot, np.repeat(scaled[rs, t], rows_dn[rs]))
                np.add.at(flat[:, t], leaf_slot, scaled[leaf_rs, t])
        used = np.flatnonzero((cum != 0).any(axis=1) | (flat != 0).any(axis=1))
        out_f.append(fns[used % nf])
        out_owner.append(used // nf + lo)
        out_cum.append(cum[used])
        out_flat.append(flat[used])
    if not out_f:
        z = np.zeros((0, width), np.int64)
        return np.zeros(0, np.uint64), z, z, np.zeros(0, np.int64)
    return np.concatenate(out_f), np.concatenate(out_flat), np.concatenate(out_cum), np.concatenate(out_owner)
