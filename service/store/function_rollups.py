"""Flat and cum per (profile, function), computed at ingest for ``function_rollup``.

pprof's rules: flat goes to the innermost function of the leaf location (an unsymbolized leaf
gives it to no function); cum counts a function once per sample, even when recursion puts it
in the stack many times. Worked on distinct stacks, so the cost is one pass over samples plus
one over each distinct stack's frames, never a sort over samples x depth.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.pprof.batch import expand
from service.pprof.model import offsets_of

__all__ = ["rollup"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


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
