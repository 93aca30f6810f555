"""A decoded profile → rows for every table, keyed by content hash.

One pprof becomes one series per sample type (a heap profile: four), all sharing one
``group_id`` so export can reassemble them. Functions, locations, mappings, stacks and label
sets are interned by content hash; samples with equal stack and labels are summed and zero
values dropped; ``function_rollup`` (flat and cum per function) is computed here, at ingest,
so "top functions over a week" never has to read a stack.

Everything per sample is numpy; Python loops run once per location, function or label set.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingT
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.errors import InvalidRequest
from service.pprof.model import LabelSet, Profile
from service.store.hashing import combine, hash_fields, stack_hashes
from service.types import ProfileType

__all__ = ["Normalized", "infer_name", "normalize", "profile_types_of", "series_id_of"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


@dataclass(slots=True)
class Normalized:
    """The rows one ingested profile adds; ``group_id`` doubles as its idempotency key."""

    group_id: int
    profile_ids: list[int]
    series: pa.Table
    profiles: pa.Table
    mappings: pa.Table
    functions: pa.Table
    locations: pa.Table
    stacks: pa.Table
    labelsets: pa.Table
    samples: pa.Table
    function_rollup: pa.Table

    @property
    def sample_rows(self) -> int:
        return self.samples.num_rows


def infer_name(p: Profile) -> str:
    """The Pyroscope profile name for a profile, from its sample and period types.

    contentions+delay is both Go's mutex and block profile; nothing in the bytes tells them
    apart, so the caller must say which.
    """
    types = {st.type for st in p.sample_types}
    period = p.period_type.type if p.period_type else ""
    if "cpu" in types and period in ("cpu", ""):
        return "process_cpu"
    if period == "wall" or "wall" in types:
        return "wall"
    if types & {"alloc_objects", "alloc_space", "inuse_objects", "inuse_space"}:
        return "memory"
    if "goroutine" in types or "goroutines" in types:
        return "goroutine"
    if "threadcreate" in types:
        return "threadcreate"
    if "contentions" in types or "delay" in types:
        raise InvalidRequest(
            "name is required: a contentions/delay profile can be Go's mutex or block profile; pass name=mutex or name=block"
        )
    if period == "cpu":
        return "process_cpu"
    guess = period or (p.sample_types[p.default_type_index()].type if p.sample_types else "")
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in guess) or "unknown"


def profile_types_of(p: Profile, name: str) -> list[ProfileType]:
    pt = p.period_type
    return [ProfileType(name, st.type, st.unit, pt.type if pt else "", pt.unit if pt else "") for st in p.sample_types]


def series_id_of(tenant: str, profile_type: ProfileType, labels: MappingT[str, str]) -> int:
    return hash_fields(tenant, profile_type, *(f"{k}={v}" for k, v in sorted(labels.items())))


def _group_sum(keys: U64, values: I64) -> tuple[U64, I64, I64]:
    """Sum rows of ``values`` with equal key; returns unique keys, sums and one source row per key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if k.size == 0:
        return k, values[:0], order
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    sums = np.add.reduceat(values[order], starts, axis=0)
    return k[starts], sums, order[starts]


def _expand(starts: I64, counts: I64) -> I64:
    """Concatenate ``range(starts[i], starts[i] + counts[i])`` for all i, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    seg = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return np.asarray(starts[seg] + (np.arange(total) - first[seg]), np.int64)


def _list_array(offsets: I64, values: npt.NDArray[np.generic], typ: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values, type=typ))


def normalize(
    p: Profile,
    *,
    tenant: str,
    labels: MappingT[str, str],
    name: str | None,
    ts: int,
    content_hash: int,
    source: str,
) -> Normalized:
    name = name or infer_name(p)
    ptypes = profile_types_of(p, name)
    if not ptypes:
        raise InvalidRequest("profile has no sample types; nothing to store")
    n_types = len(ptypes)
    label_items = sorted(labels.items())
    group_id = hash_fields("group", tenant, name, *(f"{k}={v}" for k, v in label_items), ts, content_hash)
    series_ids = [series_id_of(tenant, pt, labels) for pt in ptypes]
    profile_ids = [hash_fields(group_id, i) for i in range(n_types)]

    # Symbols, hashed once each.
    map_hash = {
        m.id: hash_fields(
            "m",
            m.start,
            m.limit,
            m.offset,
            m.filename,
            m.build_id,
            m.has_functions,
            m.has_filenames,
            m.has_line_numbers,
            m.has_inline_frames,
        )
        for m in p.mappings
    }
    fn_hash = {f.id: hash_fields("f", f.name, f.system_name, f.filename, f.start_line) for f in p.functions}
    locs = p.locations
    loc_ids = np.fromiter((loc.id for loc in locs), np.uint64, count=len(locs))
    loc_hash = np.fromiter(
        (
            hash_fields(
                "l",
                map_hash.get(loc.mapping_id, 0),
                loc.address,
                loc.is_folded,
                *(f"{fn_hash[ln.function_id]}:{ln.line}:{ln.column}" for ln in loc.lines),
            )
            for loc in locs
        ),
        np.uint64,
        count=len(locs),
    )
    loc_nfn = np.fromiter((len(loc.lines) for loc in locs), np.int64, count=len(locs))
    loc_fn_off = np.cumsum(loc_nfn) - loc_nfn
    loc_fns = np.fromiter(
        (fn_hash[ln.function_id] for loc in locs for ln in loc.lines), np.uint64, count=int(loc_nfn.sum())
    )

    # Samples: local location index per element, then stack and label-set ids per sample.
    s = p.samples
    sorter = np.argsort(loc_ids)
    elem = (
        sorter[np.searchsorted(loc_ids, s.location_ids, sorter=sorter)]
        if s.location_ids.size
        else np.zeros(0, np.int64)
    )
    stack = stack_hashes(loc_hash[elem], s.offsets)
    ls_hash = np.fromiter((_labelset_hash(ls) for ls in s.labelsets), np.uint64, count=len(s.labelsets))
    sample_ls = ls_hash[s.labelset_index]
    keys, values, rep = _group_sum(combine(stack, sample_ls), s.values)
    keep = np.any(values != 0, axis=1)
    keys, values, rep = keys[keep], values[keep], rep[keep]
    u_stack, u_ls = stack[rep], sample_ls[rep]
    depth = s.depths()[rep]
    u_off = np.zeros(rep.size + 1, np.int64)
    np.cumsum(depth, out=u_off[1:])
    u_elem = elem[_expand(s.offsets[rep], depth)]  # location index per frame of each kept sample

    # Frames → functions (inlined frames expanded, innermost first).
    nfn = loc_nfn[u_elem]
    fn_flat = loc_fns[_expand(loc_fn_off[u_elem], nfn)]
    nfn_prefix = np.zeros(nfn.size + 1, np.int64)
    np.cumsum(nfn, out=nfn_prefix[1:])
    per_sample_nfn = nfn_prefix[u_off[1:]] - nfn_prefix[u_off[:-1]]
    fn_off = np.zeros(rep.size + 1, np.int64)
    np.cumsum(per_sample_nfn, out=fn_off[1:])

    # Stacks: one row per distinct stack.
    st_keys, _, st_rep = _group_sum(u_stack, np.zeros((u_stack.size, 0), np.int64))
    st_loc_off = np.zeros(st_rep.size + 1, np.int64)
    np.cumsum(depth[st_rep], out=st_loc_off[1:])
    st_fn_off = np.zeros(st_rep.size + 1, np.int64)
    np.cumsum(per_sample_nfn[st_rep], out=st_fn_off[1:])
    stacks = pa.table(
        {
            "stack_id": pa.array(st_keys, pa.uint64()),
            "location_ids": _list_array(
                st_loc_off, loc_hash[u_elem[_expand(u_off[st_rep], depth[st_rep])]], pa.uint64()
            ),
            "function_ids": _list_array(
                st_fn_off, fn_flat[_expand(fn_off[st_rep], per_sample_nfn[st_rep])], pa.uint64()
            ),
        }
    )

    # function_rollup: flat = the leaf location's innermost function; cum = once per stack.
    rollup = _rollup(values, fn_flat, fn_off, nfn, u_off, depth)

    n = keys.size
    samples = []
    rollups = []
    for t in range(n_types):
        nz = values[:, t] != 0
        samples.append(
            pa.table(
                {
                    "series_id": pa.array(np.full(int(nz.sum()), series_ids[t], np.uint64)),
                    "ts": pa.array(np.full(int(nz.sum()), ts, np.int64)),
                    "stack_id": pa.array(u_stack[nz]),
                    "labelset_id": pa.array(u_ls[nz]),
                    "value": pa.array(values[nz, t]),
                }
            )
        )
        fids, flat, cum = rollup
        rnz = (flat[:, t] != 0) | (cum[:, t] != 0)
        rollups.append(
            pa.table(
                {
                    "series_id": pa.array(np.full(int(rnz.sum()), series_ids[t], np.uint64)),
                    "ts": pa.array(np.full(int(rnz.sum()), ts, np.int64)),
                    "function_id": pa.array(fids[rnz]),
                    "flat": pa.array(flat[rnz, t]),
                    "cum": pa.array(cum[rnz, t]),
                }
            )
        )
    totals = values.sum(axis=0) if n else np.zeros(n_types, np.int64)

    used_ls = sorted({int(i) for i in np.unique(s.labelset_index[rep])} - {0})
    used_maps = {loc.mapping_id for loc in locs if loc.mapping_id in map_hash}
    return Normalized(
        group_id=group_id,
        profile_ids=profile_ids,
        series=pa.table(
            {
                "series_id": pa.array(series_ids, pa.uint64()),
                "tenant": [tenant] * n_types,
                "profile_type": [str(pt) for pt in ptypes],
                "name": [name] * n_types,
                "sample_type": [pt.sample_type for pt in ptypes],
                "sample_unit": [pt.sample_unit for pt in ptypes],
                "period_type": [pt.period_type for pt in ptypes],
                "period_unit": [pt.period_unit for pt in ptypes],
                "labels": pa.array([label_items] * n_types, pa.map_(pa.string(), pa.string())),
                "first_seen": pa.array([ts] * n_types, pa.int64()),
                "last_seen": pa.array([ts] * n_types, pa.int64()),
            }
        ),
        profiles=pa.table(
            {
                "profile_id": pa.array(profile_ids, pa.uint64()),
                "series_id": pa.array(series_ids, pa.uint64()),
                "ts": pa.array([ts] * n_types, pa.int64()),
                "group_id": pa.array([group_id] * n_types, pa.uint64()),
                "type_index": pa.array(range(n_types), pa.int16()),
                "sample_types": [[st.type for st in p.sample_types]] * n_types,
                "sample_units": [[st.unit for st in p.sample_types]] * n_types,
                "default_sample_type": [p.default_sample_type] * n_types,
                "time_nanos": pa.array([p.time_nanos] * n_types, pa.int64()),
                "duration_ns": pa.array([p.duration_nanos] * n_types, pa.int64()),
                "period": pa.array([p.period] * n_types, pa.int64()),
                "total": pa.array(totals.tolist(), pa.int64()),
                "sample_count": pa.array([n] * n_types, pa.int64()),
                "drop_frames": [p.drop_frames] * n_types,
                "keep_frames": [p.keep_frames] * n_types,
                "comments": [list(p.comments)] * n_types,
                "doc_url": [p.doc_url] * n_types,
                "source": [source] * n_types,
            }
        ),
        mappings=pa.table(
            {
                "mapping_id": pa.array([map_hash[m.id] for m in p.mappings if m.id in used_maps], pa.uint64()),
                "memory_start": pa.array([m.start for m in p.mappings if m.id in used_maps], pa.uint64()),
                "memory_limit": pa.array([m.limit for m in p.mappings if m.id in used_maps], pa.uint64()),
                "file_offset": pa.array([m.offset for m in p.mappings if m.id in used_maps], pa.uint64()),
                "filename": [m.filename for m in p.mappings if m.id in used_maps],
                "build_id": [m.build_id for m in p.mappings if m.id in used_maps],
                "has_functions": [m.has_functions for m in p.mappings if m.id in used_maps],
                "has_filenames": [m.has_filenames for m in p.mappings if m.id in used_maps],
                "has_line_numbers": [m.has_line_numbers for m in p.mappings if m.id in used_maps],
                "has_inline_frames": [m.has_inline_frames for m in p.mappings if m.id in used_maps],
            }
        ),
        functions=pa.table(
            {
                "function_id": pa.array([fn_hash[f.id] for f in p.functions], pa.uint64()),
                "name": [f.name for f in p.functions],
                "system_name": [f.system_name for f in p.functions],
                "filename": [f.filename for f in p.functions],
                "start_line": pa.array([f.start_line for f in p.functions], pa.int64()),
            }
        ),
        locations=pa.table(
            {
                "location_id": pa.array(loc_hash, pa.uint64()),
                "mapping_id": pa.array([map_hash.get(loc.mapping_id, 0) for loc in locs], pa.uint64()),
                "address": pa.array([loc.address for loc in locs], pa.uint64()),
                "is_folded": [loc.is_folded for loc in locs],
                "function_ids": pa.array(
                    [[fn_hash[ln.function_id] for ln in loc.lines] for loc in locs], pa.list_(pa.uint64())
                ),
                "lines": pa.array([[ln.line for ln in loc.lines] for loc in locs], pa.list_(pa.int64())),
                "columns": pa.array([[ln.column for ln in loc.lines] for loc in locs], pa.list_(pa.int64())),
            }
        ),
        labelsets=pa.table(
            {
                "labelset_id": pa.array([int(ls_hash[i]) for i in used_ls], pa.uint64()),
                "keys": [[lb.key for lb in s.labelsets[i]] for i in used_ls],
                "strs": [[lb.str for lb in s.labelsets[i]] for i in used_ls],
                "nums": pa.array([[lb.num for lb in s.labelsets[i]] for i in used_ls], pa.list_(pa.int64())),
                "num_units": [[lb.num_unit for lb in s.labelsets[i]] for i in used_ls],
            },
            schema=_LABELSETS,
        ),
        stacks=stacks,
        samples=pa.concat_tables(samples),
        function_rollup=pa.concat_tables(rollups),
    )


_LABELSETS = pa.schema(
    [
        ("labelset_id", pa.uint64()),
        ("keys", pa.list_(pa.string())),
        ("strs", pa.list_(pa.string())),
        ("nums", pa.list_(pa.int64())),
        ("num_units", pa.list_(pa.string())),
    ]
)


def _labelset_hash(ls: LabelSet) -> int:
    if not ls:
        return 0
    return hash_fields("ls", *(f"{lb.key}\x00{lb.str}\x00{lb.num}\x00{lb.num_unit}" for lb in ls))


def _rollup(values: I64, fn_flat: U64, fn_off: I64, nfn: I64, loc_off: I64, depth: I64) -> tuple[U64, I64, I64]:
    """Flat and cum per function over the (already merged) samples of one profile.

    Flat goes to the innermost function of the leaf location (pprof's rule); a leaf without
    symbols attributes flat to no function. Cum counts a function once per sample even when
    recursion puts it in the stack many times.
    """
    n_types = values.shape[1]
    n = values.shape[0]
    if fn_flat.size == 0:
        return np.zeros(0, np.uint64), np.zeros((0, n_types), np.int64), np.zeros((0, n_types), np.int64)
    fns, fn_local = np.unique(fn_flat, return_inverse=True)
    sample_of = np.repeat(np.arange(n), np.diff(fn_off))
    pair = np.unique(sample_of.astype(np.uint64) * np.uint64(fns.size) + fn_local.astype(np.uint64))
    ps = (pair // np.uint64(fns.size)).astype(np.int64)
    pf = (pair % np.uint64(fns.size)).astype(np.int64)
    cum = np.zeros((fns.size, n_types), np.int64)
    np.add.at(cum, pf, values[ps])
    flat = np.zeros((fns.size, n_types), np.int64)
    leaf_nfn = np.where(depth > 0, nfn[np.minimum(loc_off[:-1], max(nfn.size - 1, 0))], 0)
    has_leaf = leaf_nfn > 0
    np.add.at(flat, fn_local[fn_off[:-1][has_leaf]], values[has_leaf])
    return fns, flat, cum
