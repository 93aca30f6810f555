"""A decoded profile → rows for every table, keyed by content hash.

One pprof becomes one series per sample type (a heap profile: four), all sharing one
``group_id`` so export can reassemble them. Functions, locations, mappings, stacks and label
sets are interned by content hash; samples with equal stack and labels are summed and zero
values dropped; ``function_rollup`` (flat and cum per function) is computed here, at ingest,
so "top functions over a week" never has to read a stack. Values are stored divided by their
per-profile, per-type gcd (``scale``) so they bit-pack small.

Everything is column-wise numpy; Python loops run once per distinct label set only. Symbols
and stacks that the writer has already committed (``KnownIds``) are not emitted again.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingT
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.errors import InvalidRequest
from service.hashing import hash_fields, hash_strings, mix, segment_hashes
from service.pprof.model import LabelSet, Profile
from service.pprof.wire import expand
from service.store.ids import KnownIds, blob_ids
from service.types import ProfileType

__all__ = ["Normalized", "infer_name", "normalize", "profile_types_of", "series_id_of"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
_KIND = {"mapping": 1, "function": 2, "location": 3, "line": 4}


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
    new_ids: dict[str, U64]  # what the writer may remember as stored once this commits

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


def _lookup(keys: U64, ids: U64, values: U64) -> U64:
    """``values[ids == key]`` for each key; 0 where the id is unknown."""
    if ids.size == 0:
        return np.zeros(keys.size, np.uint64)
    order = np.argsort(ids)
    pos = np.minimum(np.searchsorted(ids, keys, sorter=order), ids.size - 1)
    hit = ids[order[pos]] == keys
    return np.where(hit, values[order[pos]], np.uint64(0))


def _group_sum(keys: U64, values: I64) -> tuple[U64, I64, I64]:
    """Sum rows of ``values`` with equal key; returns unique keys, sums and one source row per key."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if k.size == 0:
        return k, values[:0], order
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    return k[starts], np.add.reduceat(values[order], starts, axis=0), order[starts]


def _lists(offsets: I64, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _offsets(counts: I64) -> I64:
    out = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _scale(values: I64) -> I64:
    """Per column, the gcd of the values (1 for an all-zero column): the unit they are multiples of."""
    g = np.gcd.reduce(np.abs(values), axis=0) if values.size else np.zeros(values.shape[1], np.int64)
    return np.where(g > 0, g, 1).astype(np.int64)


def normalize(
    p: Profile,
    *,
    tenant: str,
    labels: MappingT[str, str],
    name: str | None,
    ts: int,
    content_hash: int,
    source: str,
    known: KnownIds | None = None,
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
    known = known or KnownIds(limit=0)

    # Symbol ids: strings hashed once, entities combined column-wise.
    sh = hash_strings(p.strings)
    m, f, loc = p.mappings, p.functions, p.locations
    flags = (m.flags.astype(np.uint64) * np.array([1, 2, 4, 8], np.uint64)).sum(axis=1).astype(np.uint64)
    map_h = mix(np.full(len(m), _KIND["mapping"]), m.start, m.limit, m.offset, sh[m.filename], sh[m.build_id], flags)
    fn_h = mix(np.full(len(f), _KIND["function"]), sh[f.name], sh[f.system_name], sh[f.filename], f.start_line)
    line_fn = _lookup(loc.line_function_id, f.id, fn_h)
    line_h = mix(np.full(line_fn.size, _KIND["line"]), line_fn, loc.line_line, loc.line_column)
    loc_map = _lookup(loc.mapping_id, m.id, map_h)
    loc_h = mix(
        np.full(len(loc), _KIND["location"]),
        loc_map,
        loc.address,
        loc.is_folded,
        segment_hashes(line_h, loc.line_offsets),
    )

    # Samples: stack and label-set id per sample; equal ones summed, all-zero ones dropped.
    s = p.samples
    elem = _lookup(s.location_ids, loc.id, np.arange(len(loc), dtype=np.uint64)).astype(np.int64)
    stack = segment_hashes(loc_h[elem], s.offsets)
    ls_hash = np.fromiter((_labelset_hash(ls) for ls in s.labelsets), np.uint64, count=len(s.labelsets))
    sample_ls = ls_hash[s.labelset_index]
    _, values, rep = _group_sum(mix(stack, sample_ls), s.values)
    keep = np.any(values != 0, axis=1)
    values, rep = values[keep], rep[keep]
    u_stack, u_ls, depth = stack[rep], sample_ls[rep], s.depths()[rep]
    u_off = _offsets(depth)
    u_elem = elem[expand(s.offsets[rep], depth)]  # location index per frame of each kept sample

    # Frames → functions (inlined lines expanded, innermost first).
    nfn = np.diff(loc.line_offsets)[u_elem]
    fn_flat = line_fn[expand(loc.line_offsets[u_elem], nfn)]
    nfn_prefix = _offsets(nfn)
    per_sample_nfn = nfn_prefix[u_off[1:]] - nfn_prefix[u_off[:-1]]
    fn_off = _offsets(per_sample_nfn)

    scale = _scale(values)
    scaled = values // scale
    fids, flat, cum = _rollup(values, fn_flat, fn_off, nfn, u_off, depth)

    new_ids: dict[str, U64] = {}

    def fresh(kind: str, ids: U64) -> npt.NDArray[np.bool_]:
        uniq, first = np.unique(ids, return_index=True)
        sel = np.zeros(ids.size, bool)
        sel[first[known.unknown(kind, uniq)]] = True
        new_ids[kind] = ids[sel]
        return sel

    st_keys, _, st_rep = _group_sum(u_stack, np.zeros((u_stack.size, 0), np.int64))
    st_new = fresh("stack", st_keys)
    st_rep = st_rep[st_new]
    stacks = pa.table(
        {
            "stack_id": blob_ids(st_keys[st_new]),
            "location_ids": _lists(
                _offsets(depth[st_rep]), pa.array(loc_h[u_elem[expand(u_off[st_rep], depth[st_rep])]])
            ),
            "function_ids": _lists(
                _offsets(per_sample_nfn[st_rep]), blob_ids(fn_flat[expand(fn_off[st_rep], per_sample_nfn[st_rep])])
            ),
        }
    )
    loc_new = fresh("location", loc_h)
    nl = np.diff(loc.line_offsets)[loc_new]
    line_sel = expand(loc.line_offsets[:-1][loc_new], nl)
    locations = pa.table(
        {
            "location_id": pa.array(loc_h[loc_new]),
            "mapping_id": pa.array(loc_map[loc_new]),
            "address": pa.array(loc.address[loc_new]),
            "is_folded": pa.array(loc.is_folded[loc_new]),
            "function_ids": _lists(_offsets(nl), blob_ids(line_fn[line_sel])),
            "lines": _lists(_offsets(nl), pa.array(loc.line_line[line_sel])),
            "columns": _lists(_offsets(nl), pa.array(loc.line_column[line_sel])),
        }
    )
    fn_new = fresh("function", fn_h)
    strings = np.array(p.strings, dtype=object)
    functions = pa.table(
        {
            "function_id": blob_ids(fn_h[fn_new]),
            "name": pa.array(strings[f.name[fn_new]], pa.string()),
            "system_name": pa.array(strings[f.system_name[fn_new]], pa.string()),
            "filename": pa.array(strings[f.filename[fn_new]], pa.string()),
            "start_line": pa.array(f.start_line[fn_new]),
        }
    )
    map_new = fresh("mapping", map_h)
    mappings = pa.table(
        {
            "mapping_id": pa.array(map_h[map_new]),
            "memory_start": pa.array(m.start[map_new]),
            "memory_limit": pa.array(m.limit[map_new]),
            "file_offset": pa.array(m.offset[map_new]),
            "filename": pa.array(strings[m.filename[map_new]], pa.string()),
            "build_id": pa.array(strings[m.build_id[map_new]], pa.string()),
            **{
                k: pa.array(m.flags[map_new, i])
                for i, k in enumerate(("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames"))
            },
        }
    )
    used_ls = [i for i in np.unique(s.labelset_index[rep]).tolist() if i != 0]
    ls_ids = ls_hash[used_ls] if used_ls else np.zeros(0, np.uint64)
    ls_new = fresh("labelset", ls_ids)
    new_sets = [s.labelsets[i] for i, new in zip(used_ls, ls_new, strict=True) if new]
    labelsets = pa.table(
        {
            "labelset_id": blob_ids(ls_ids[ls_new]),
            "keys": pa.array([[lb.key for lb in ls] for ls in new_sets], pa.list_(pa.string())),
            "strs": pa.array([[lb.str for lb in ls] for ls in new_sets], pa.list_(pa.string())),
            "nums": pa.array([[lb.num for lb in ls] for ls in new_sets], pa.list_(pa.int64())),
            "num_units": pa.array([[lb.num_unit for lb in ls] for ls in new_sets], pa.list_(pa.string())),
        }
    )

    samples, rollups = [], []
    for t in range(n_types):
        nz = np.flatnonzero(values[:, t])
        samples.append(
            pa.table(
                {
                    "series_id": pa.array(np.full(nz.size, series_ids[t], np.uint64)),
                    "ts": pa.array(np.full(nz.size, ts, np.int64)),
                    "stack_id": blob_ids(u_stack[nz]),
                    "labelset_id": blob_ids(u_ls[nz]),
                    "value": pa.array(scaled[nz, t]),
                    "scale": pa.array(np.full(nz.size, scale[t], np.int64)),
                }
            )
        )
        rnz = np.flatnonzero((flat[:, t] != 0) | (cum[:, t] != 0))
        rollups.append(
            pa.table(
                {
                    "series_id": pa.array(np.full(rnz.size, series_ids[t], np.uint64)),
                    "ts": pa.array(np.full(rnz.size, ts, np.int64)),
                    "function_id": blob_ids(fids[rnz]),
                    "flat": pa.array(flat[rnz, t] // scale[t]),
                    "cum": pa.array(cum[rnz, t] // scale[t]),
                    "scale": pa.array(np.full(rnz.size, scale[t], np.int64)),
                }
            )
        )
    totals = values.sum(axis=0) if values.size else np.zeros(n_types, np.int64)
    types = [st.type for st in p.sample_types]
    units = [st.unit for st in p.sample_types]
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
                "sample_types": [types] * n_types,
                "sample_units": [units] * n_types,
                "default_sample_type": [p.default_sample_type] * n_types,
                "time_nanos": pa.array([p.time_nanos] * n_types, pa.int64()),
                "duration_ns": pa.array([p.duration_nanos] * n_types, pa.int64()),
                "period": pa.array([p.period] * n_types, pa.int64()),
                "total": pa.array(totals.tolist(), pa.int64()),
                "sample_count": pa.array([int(keep.sum())] * n_types, pa.int64()),
                "drop_frames": [p.drop_frames] * n_types,
                "keep_frames": [p.keep_frames] * n_types,
                "comments": pa.array([list(p.comments)] * n_types, pa.list_(pa.string())),
                "doc_url": [p.doc_url] * n_types,
                "source": [source] * n_types,
            }
        ),
        mappings=mappings,
        functions=functions,
        locations=locations,
        stacks=stacks,
        labelsets=labelsets,
        samples=pa.concat_tables(samples),
        function_rollup=pa.concat_tables(rollups),
        new_ids=new_ids,
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
