"""Decoded profiles → rows for every table, keyed by content hash, a whole batch at a time.

One pprof becomes one series per sample type (a heap profile: four), all sharing one
``group_id`` so export can reassemble them. Functions, locations, mappings, stacks and label
sets are interned by content hash; samples with equal stack and labels are summed and zero
values dropped; ``function_rollup`` (flat and cum per function) is computed here, at ingest, so
"top functions over a week" never has to read a stack. Values are stored divided by their
per-profile, per-type gcd (``scale``) so they bit-pack small, and a type proportional to an
earlier one of the same profile is stored as an alias of it.

Everything is column-wise numpy over the whole writer batch (profiles told apart by an owner
column), so numpy's per-call cost is paid once per batch. Python loops run once per profile
and once per new label set. Symbols and stacks the writer has already committed
(``KnownIds``) are not emitted again.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingT
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.errors import InvalidRequest
from service.hashing import ContentIds, content_ids, hash_fields, hash_strings, mix
from service.pprof.batch import ProfileBatch, expand
from service.pprof.decode import Envelope
from service.pprof.model import Header, Profile
from service.store.ids import KnownIds, blob_ids
from service.store.rollup import rollup
from service.store.tables import EMPTY_ROLLUP, EMPTY_SAMPLES, LABELSETS, PROFILES, SERIES
from service.types import ProfileType

__all__ = [
    "Meta",
    "Normalized",
    "Rows",
    "batch_ids",
    "envelope_ids",
    "infer_name",
    "normalize",
    "normalize_batch",
    "profile_ids_of",
    "profile_types_of",
    "series_id_of",
]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
TABLES = (
    "series",
    "profiles",
    "mappings",
    "functions",
    "locations",
    "stacks",
    "labelsets",
    "samples",
    "function_rollup",
)


@dataclass(frozen=True, slots=True)
class Meta:
    """What the caller says about one profile: where it belongs and when."""

    tenant: str
    labels: MappingT[str, str]
    name: str
    ts: int
    content_hash: int
    source: str

    @property
    def group_id(self) -> int:
        """The idempotency key: the same bytes for the same series labels and time are one profile."""
        return hash_fields(
            "group",
            self.tenant,
            self.name,
            *(f"{k}={v}" for k, v in sorted(self.labels.items())),
            self.ts,
            self.content_hash,
        )


@dataclass(frozen=True, slots=True)
class Normalized:
    """What one profile became: its idempotency key, ids and series."""

    group_id: int
    profile_ids: list[int]
    series: list[str]
    sample_rows: int


@dataclass(slots=True)
class Rows:
    """The rows a batch adds, one Arrow table per table, and the ids the writer may remember once committed."""

    tables: dict[str, pa.Table]
    items: list[Normalized]
    new_ids: dict[str, U64]


def infer_name(sample_types: Sequence[object], period_type: object | None) -> str:
    """The Pyroscope profile name for a profile, from its sample and period types.

    contentions+delay is both Go's mutex and block profile; nothing in the bytes tells them
    apart, so the caller must say which.
    """
    types = {getattr(st, "type", "") for st in sample_types}
    period = getattr(period_type, "type", "") if period_type else ""
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
    guess = period or (getattr(sample_types[-1], "type", "") if sample_types else "")
    return "".join(ch if ch.isalnum() or ch in "_.-" else "_" for ch in guess) or "unknown"


def profile_types_of(h: Header, name: str) -> list[ProfileType]:
    pt = h.period_type
    return [ProfileType(name, st.type, st.unit, pt.type if pt else "", pt.unit if pt else "") for st in h.sample_types]


def profile_ids_of(group_id: int, num_types: int) -> list[int]:
    """One profile id per sample type of an ingested pprof."""
    return [hash_fields(group_id, t) for t in range(num_types)]


def series_id_of(tenant: str, profile_type: ProfileType, labels: MappingT[str, str]) -> int:
    return hash_fields(tenant, profile_type, *(f"{k}={v}" for k, v in sorted(labels.items())))


def _group(keys: U64) -> tuple[I64, I64]:
    """Sort order and the start of each run of equal keys in it."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    if k.size == 0:
        return order, np.zeros(0, np.int64)
    return order, np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))


def _lists(counts: I64, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(_offsets(counts), pa.int32()), values)


def _offsets(counts: I64) -> I64:
    out = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


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
) -> Rows:
    """One resolved profile (hand-built, converted, or decoded alone)."""
    name = name or infer_name(p.sample_types, p.period_type)
    return normalize_batch(ProfileBatch.of([p]), [Meta(tenant, labels, name, ts, content_hash, source)], known)


def batch_ids(b: ProfileBatch) -> ContentIds:
    """Content ids of a whole batch (when they were not computed per profile at ingest)."""
    r = b.resolve()
    return content_ids(
        hash_strings(b.strings),
        b.mappings,
        b.functions,
        b.locations,
        location_mapping=r.location_mapping,
        line_function=r.line_function,
        offsets=b.offsets,
        sample_location=r.sample_location,
        labels=(b.label_owner, b.label_key, b.label_str, b.label_num, b.label_unit),
    )


def envelope_ids(env: Envelope) -> ContentIds | None:
    """Content ids of one profile from its decoded columns; ``None`` when upb decodes it."""
    c = env.columns
    if c is None:
        return None
    mappings, functions, locations = c.parts()
    offsets = np.zeros(c.sample_locations.size + 1, np.int64)
    np.cumsum(c.sample_locations, out=offsets[1:])
    lab = c.labels
    return content_ids(
        hash_strings(env.strings),
        mappings,
        functions,
        locations,
        location_mapping=c.location_mapping,
        line_function=c.line_function,
        offsets=offsets,
        sample_location=c.sample_location,
        labels=(lab[:, 0], lab[:, 1], lab[:, 2], lab[:, 3], lab[:, 4]),
    )


def normalize_batch(
    b: ProfileBatch, metas: Sequence[Meta], known: KnownIds | None = None, ids: ContentIds | None = None
) -> Rows:
    n = len(b)
    known = known or KnownIds(limit=0)
    ntypes = b.num_types()
    width = b.values.shape[1]
    ptypes = [profile_types_of(h, m.name) for h, m in zip(b.headers, metas, strict=True)]
    series_ids = np.zeros((n, max(width, 1)), np.uint64)
    groups: list[int] = []
    for i, (m, pts) in enumerate(zip(metas, ptypes, strict=True)):
        if not pts:
            raise InvalidRequest("profile has no sample types; nothing to store")
        series_ids[i, : len(pts)] = [series_id_of(m.tenant, pt, m.labels) for pt in pts]
        groups.append(m.group_id)
    ts = np.array([m.ts for m in metas], np.int64)

    # Content ids: computed per profile in the ingest threads, or here for the whole batch.
    ids = ids or batch_ids(b)
    mp, fn, loc = b.mappings, b.functions, b.locations
    s_owner = b.sample_owner
    map_h, fn_h, line_fn, loc_map, loc_h = (
        ids.mapping,
        ids.function,
        ids.line_function,
        ids.location_mapping,
        ids.location,
    )
    stack, sample_ls = ids.stack, ids.labelset
    r = b.resolve()
    elem = r.sample_location
    order, starts = _group(mix(s_owner, stack, sample_ls))
    values = np.add.reduceat(b.values[order], starts, axis=0) if starts.size else b.values[:0]
    rep = order[starts]
    keep = np.flatnonzero(np.any(values != 0, axis=1))
    keep = keep[np.argsort(s_owner[rep[keep]], kind="stable")]  # rows grouped by profile, for per-profile gcds
    values, rep = values[keep], rep[keep]
    owner = s_owner[rep]
    u_stack, u_ls = stack[rep], sample_ls[rep]

    # Distinct stacks of the batch: frames and functions are worked out once per stack.
    st_ids, st_first, st_of = np.unique(u_stack, return_index=True, return_inverse=True)
    st_of = st_of.reshape(-1)
    st_rep = rep[st_first]
    st_depth = np.diff(b.offsets)[st_rep]
    st_elem = elem[expand(b.offsets[st_rep], st_depth)]  # location row of each frame
    frame_nfn = np.diff(loc.line_offsets)[st_elem]
    st_fn = line_fn[expand(loc.line_offsets[st_elem], frame_nfn)]  # inlined lines expanded, innermost first
    st_nfn = np.diff(_offsets(frame_nfn)[_offsets(st_depth)])
    # The leaf location's innermost function takes the flat value; an unsymbolized leaf gives it to none.
    leaf_has_fn = (st_depth > 0) & (frame_nfn[np.minimum(_offsets(st_depth)[:-1], max(frame_nfn.size - 1, 0))] > 0)

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

    new_ids: dict[str, U64] = {}

    def fresh(kind: str, ids: U64) -> npt.NDArray[np.bool_]:
        uniq, first = np.unique(ids, return_index=True)
        sel = np.zeros(ids.size, bool)
        sel[first[known.unknown(kind, uniq)]] = True
        new_ids[kind] = ids[sel]
        return sel

    tables: dict[str, pa.Table] = {}
    sr = np.flatnonzero(fresh("stack", st_ids))
    tables["stacks"] = pa.table(
        {
            "stack_id": blob_ids(st_ids[sr]),
            "location_ids": _lists(
                st_depth[sr], pa.array(loc_h[st_elem[expand(_offsets(st_depth)[sr], st_depth[sr])]])
            ),
            "function_ids": _lists(st_nfn[sr], blob_ids(st_fn[expand(_offsets(st_nfn)[sr], st_nfn[sr])])),
        }
    )
    ln = fresh("location", loc_h)
    nl = np.diff(loc.line_offsets)[ln]
    line_sel = expand(loc.line_offsets[:-1][ln], nl)
    tables["locations"] = pa.table(
        {
            "location_id": pa.array(loc_h[ln]),
            "mapping_id": pa.array(loc_map[ln]),
            "address": pa.array(loc.address[ln]),
            "is_folded": pa.array(loc.is_folded[ln]),
            "function_ids": _lists(nl, blob_ids(line_fn[line_sel])),
            "lines": _lists(nl, pa.array(loc.line_line[line_sel])),
            "columns": _lists(nl, pa.array(loc.line_column[line_sel])),
        }
    )
    strings = np.array(b.strings, dtype=object)
    fnew = fresh("function", fn_h)
    tables["functions"] = pa.table(
        {
            "function_id": blob_ids(fn_h[fnew]),
            "name": pa.array(strings[fn.name[fnew]], pa.string()),
            "system_name": pa.array(strings[fn.system_name[fnew]], pa.string()),
            "filename": pa.array(strings[fn.filename[fnew]], pa.string()),
            "start_line": pa.array(fn.start_line[fnew]),
        }
    )
    mnew = fresh("mapping", map_h)
    tables["mappings"] = pa.table(
        {
            "mapping_id": pa.array(map_h[mnew]),
            "memory_start": pa.array(mp.start[mnew]),
            "memory_limit": pa.array(mp.limit[mnew]),
            "file_offset": pa.array(mp.offset[mnew]),
            "filename": pa.array(strings[mp.filename[mnew]], pa.string()),
            "build_id": pa.array(strings[mp.build_id[mnew]], pa.string()),
            **{
                k: pa.array(mp.flags[mnew, i])
                for i, k in enumerate(("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames"))
            },
        }
    )
    tables["labelsets"] = _labelsets(b, u_ls, rep, fresh, strings)

    # Facts, one row per (sample, type) with a non-zero value.
    fids, flat, cum, r_owner = rollup(n, scaled, owner, st_of, st_fn, st_nfn, leaf_has_fn)
    samples, rollups = [], []
    for t in range(width):
        nz = np.flatnonzero((values[:, t] != 0) & (ntypes[owner] > t) & (alias[owner, t] < 0))
        nz = nz[np.lexsort((scaled[nz, t], owner[nz]))]  # by value within a profile: narrower bit-packing
        o = owner[nz]
        samples.append(
            pa.table(
                {
                    "series_id": pa.array(series_ids[o, t]),
                    "ts": pa.array(ts[o]),
                    "stack_id": blob_ids(u_stack[nz]),
                    "labelset_id": blob_ids(u_ls[nz]),
                    "value": pa.array(scaled[nz, t]),
                    "scale": pa.array(scale[o, t]),
                }
            )
        )
        rnz = np.flatnonzero(((flat[:, t] != 0) | (cum[:, t] != 0)) & (ntypes[r_owner] > t) & (alias[r_owner, t] < 0))
        rnz = rnz[np.lexsort((cum[rnz, t], flat[rnz, t], r_owner[rnz]))]
        ro = r_owner[rnz]
        rollups.append(
            pa.table(
                {
                    "series_id": pa.array(series_ids[ro, t]),
                    "ts": pa.array(ts[ro]),
                    "function_id": blob_ids(fids[rnz]),
                    "flat": pa.array(flat[rnz, t]),
                    "cum": pa.array(cum[rnz, t]),
                    "scale": pa.array(scale[ro, t]),
                }
            )
        )
    tables["samples"] = pa.concat_tables(samples) if samples else EMPTY_SAMPLES
    tables["function_rollup"] = pa.concat_tables(rollups) if rollups else EMPTY_ROLLUP

    # Per-profile rows: series and profiles.
    totals = np.zeros((n, max(width, 1)), np.int64)
    np.add.at(totals[:, :width], owner, values)
    kept = np.bincount(owner, minlength=n)
    stored = (values != 0) & (alias[owner, :width] < 0)
    rows_per = np.bincount(owner, weights=stored.sum(axis=1), minlength=n).astype(np.int64)
    items = []
    series_rows: list[dict[str, object]] = []
    profile_rows: list[dict[str, object]] = []
    for i, (h, m, pts) in enumerate(zip(b.headers, metas, ptypes, strict=True)):
        pids = profile_ids_of(groups[i], len(pts))
        labels = sorted(m.labels.items())
        types, units = [st.type for st in h.sample_types], [st.unit for st in h.sample_types]
        for t, pt in enumerate(pts):
            sid = int(series_ids[i, t])
            series_rows.append({
                "series_id": sid, "tenant": m.tenant, "profile_type": str(pt), "name": m.name,
                "sample_type": pt.sample_type, "sample_unit": pt.sample_unit, "period_type": pt.period_type,
                "period_unit": pt.period_unit, "labels": labels, "first_seen": m.ts, "last_seen": m.ts,
            })  # fmt: skip
            profile_rows.append({
                "profile_id": pids[t], "series_id": sid, "ts": m.ts, "group_id": groups[i], "type_index": t,
                "sample_types": types, "sample_units": units, "default_sample_type": h.default_sample_type,
                "time_nanos": h.time_nanos, "duration_ns": h.duration_nanos, "period": h.period,
                "total": int(totals[i, t]), "sample_count": int(kept[i]), "scale": int(scale[i, t]),
                "alias_of": int(alias[i, t]), "drop_frames": h.drop_frames,
                "keep_frames": h.keep_frames, "comments": list(h.comments), "doc_url": h.doc_url, "source": m.source,
            })  # fmt: skip
        items.append(Normalized(groups[i], pids, [str(pt) for pt in pts], int(rows_per[i])))
    tables["series"] = pa.Table.from_pylist(series_rows, schema=SERIES)
    tables["profiles"] = pa.Table.from_pylist(profile_rows, schema=PROFILES)
    return Rows(tables, items, new_ids)


def _labelsets(b: ProfileBatch, u_ls: U64, rep: I64, fresh: object, strings: npt.NDArray[np.object_]) -> pa.Table:
    """Rows for label sets not stored yet; resolved from one sample that carries each."""
    ids, first = np.unique(u_ls, return_index=True)
    nonempty = ids != 0
    ids, first = ids[nonempty], first[nonempty]
    new = fresh("labelset", ids)  # type: ignore[operator]
    samples = rep[first[new]]
    lo = np.searchsorted(b.label_owner, samples)
    hi = np.searchsorted(b.label_owner, samples, side="right")
    keys, strs, nums, units = [], [], [], []
    for a, z in zip(lo.tolist(), hi.tolist(), strict=True):
        rows = sorted(
            range(a, z),
            key=lambda r: (
                strings[b.label_key[r]],
                strings[b.label_str[r]] if b.label_str[r] else "",
                int(b.label_num[r]),
                strings[b.label_unit[r]],
            ),
        )
        keys.append([strings[b.label_key[r]] for r in rows])
        strs.append([strings[b.label_str[r]] if b.label_str[r] else "" for r in rows])
        nums.append([int(b.label_num[r]) for r in rows])
        units.append([strings[b.label_unit[r]] for r in rows])
    return pa.table(
        {"labelset_id": blob_ids(ids[new]), "keys": keys, "strs": strs, "nums": nums, "num_units": units},
        schema=LABELSETS,
    )
