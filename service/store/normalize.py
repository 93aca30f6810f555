"""Decoded profiles → rows for every table, keyed by content hash, a whole batch at a time.

One pprof becomes one series per sample type (a heap profile: four), all sharing one
``group_id`` so export can reassemble them. Functions, locations, mappings, stacks and label
sets are interned by content hash. The per-profile arithmetic — samples with equal stack and
labels summed and zero values dropped, values divided by their per-type gcd (``scale``) so they
bit-pack small, a type proportional to an earlier one stored as an alias of it, flat and cum
per function for ``function_rollup`` so "top functions over a week" never reads a stack — is
:mod:`service.store.digest`'s, done per profile; this module turns a batch of digests into the
rows of every table.

The tables are built column-wise over the whole writer batch (profiles told apart by an owner
column), so numpy's per-call cost is paid once per batch. Python loops run once per profile
and once per new label set. Symbols and stacks the writer has already committed
(``KnownIds``) are not emitted again.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingT
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.errors import InvalidRequest
from service.pprof.batch import ProfileBatch, expand
from service.pprof.decode import Envelope, entities
from service.pprof.hashing import ContentIds, content_ids, hash_fields, hash_strings
from service.pprof.model import Functions, Header, Locations, Mappings, Profile, offsets_of
from service.store.digest import Digest, Prepared, digest_of
from service.store.ids import KnownIds, blob_ids
from service.store.tables import EMPTY_ROLLUP, EMPTY_SAMPLES, LABELSETS, PROFILES, SERIES, rollup_table, samples_table
from service.types import I64, U64, ProfileType

__all__ = [
    "Meta",
    "Normalized",
    "Rows",
    "batch_ids",
    "entity_tables",
    "header_rows",
    "infer_name",
    "merge_digests",
    "normalize",
    "normalize_batch",
    "profile_ids_of",
    "profile_types_of",
    "series_id_of",
    "tables",
]

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


def _lists(counts: I64, values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets_of(counts), pa.int32()), values)


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


@dataclass(slots=True)
class Merged:
    """A batch after the per-profile arithmetic (its digests), before the tables.

    Rows are merged samples (equal stack and labels summed) with a non-zero value, grouped by
    profile; stacks may repeat across profiles (the tables keep one of each).
    """

    n: int
    width: int
    ntypes: I64
    owner: I64  # per row: its profile
    rep: I64  # per row: the batch sample it came from (for its labels)
    stack: U64
    labelset: U64
    values: I64  # (rows, width) unscaled
    scale: I64  # (n, max(width, 1))
    alias: I64  # (n, max(width, 1))
    totals: I64  # (n, max(width, 1)) unscaled
    st_ids: U64
    st_depth: I64
    st_loc: U64
    st_nfn: I64
    st_fn: U64
    r_fn: U64
    r_flat: I64
    r_cum: I64
    r_owner: I64
    strings: list[str]
    mappings: Mappings  # string codes into ``strings``
    map_h: U64
    functions: Functions
    fn_h: U64
    locations: Locations
    loc_h: U64
    loc_map: U64
    line_fn: U64
    labels: tuple[I64, I64, I64, I64, I64]  # batch sample, key, str (0: numeric), num, unit


def normalize_batch(
    b: ProfileBatch, metas: Sequence[Meta], known: KnownIds | None = None, ids: ContentIds | None = None
) -> Rows:
    """Rows for a decoded batch (the writer's path when rows were not staged in the ingest threads):
    each profile digested alone, as at ingest, by :func:`service.store.digest.digest_of`."""
    ids = ids or batch_ids(b)
    r = b.resolve()
    ntypes = b.num_types()
    lo = b.locations.line_offsets
    ds = []
    for i in range(len(b)):
        s0, s1 = int(b.sample_base[i]), int(b.sample_base[i + 1])
        o0, o1 = int(b.offsets[s0]), int(b.offsets[s1])
        l0, l1 = int(b.location_base[i]), int(b.location_base[i + 1])
        f0, f1 = int(b.function_base[i]), int(b.function_base[i + 1])
        a, z = int(lo[l0]), int(lo[l1])
        ds.append(
            digest_of(
                b.values[s0:s1, : ntypes[i]],
                ids.stack[s0:s1],
                ids.labelset[s0:s1],
                b.offsets[s0 : s1 + 1] - o0,
                r.sample_location[o0:o1] - l0,
                ids.location[l0:l1],
                lo[l0 : l1 + 1] - a,
                ids.line_function[a:z],
                r.line_function[a:z] - f0,
                ids.function[f0:f1],
            )
        )
    mg = _merged(
        ds,
        ids,
        ntypes,
        b.sample_base,
        b.strings,
        b.mappings,
        b.functions,
        b.locations,
        (b.label_owner, b.label_key, b.label_str, b.label_num, b.label_unit),
    )
    return tables(mg, b.headers, metas, known)


def merge_digests(envs: Sequence[Envelope], prepared: Sequence[Prepared]) -> Merged:
    """The batch of profiles normalized one by one in the ingest threads (:mod:`service.store.digest`)."""
    ent = entities(envs)
    return _merged(
        [p.digest for p in prepared],
        ContentIds.concat([p.ids for p in prepared]),
        np.array([len(e.header.sample_types) for e in envs], np.int64),
        ent.sample_base,
        ent.strings,
        ent.mappings,
        ent.functions,
        ent.locations,
        ent.labels,
    )


def _merged(
    ds: Sequence[Digest],
    ids: ContentIds,
    ntypes: I64,
    sample_base: I64,
    strings: list[str],
    mappings: Mappings,
    functions: Functions,
    locations: Locations,
    labels: tuple[I64, I64, I64, I64, I64],
) -> Merged:
    """Profiles' digests and their symbols (in batch numbering) as one merged batch."""
    n = len(ds)
    width = int(ntypes.max()) if n else 0
    w1 = max(width, 1)
    rows = np.array([d.rep.size for d in ds], np.int64)
    owner = np.repeat(np.arange(n), rows)
    rep = (np.concatenate([d.rep for d in ds]) if n else np.zeros(0, np.int64)) + np.repeat(sample_base[:-1], rows)
    values = np.zeros((int(rows.sum()), width), np.int64)
    scale = np.ones((n, w1), np.int64)
    alias = np.full((n, w1), -1, np.int64)
    totals = np.zeros((n, w1), np.int64)
    r_flat = np.zeros((sum(d.r_fn.size for d in ds), width), np.int64)
    r_cum = np.zeros_like(r_flat)
    at = r_at = 0
    for i, d in enumerate(ds):
        k = d.values.shape[1]
        values[at : at + d.rep.size, :k] = d.values
        r_flat[r_at : r_at + d.r_fn.size, :k] = d.r_flat
        r_cum[r_at : r_at + d.r_fn.size, :k] = d.r_cum
        scale[i, :k], alias[i, :k], totals[i, :k] = d.scale, d.alias, d.totals
        at += d.rep.size
        r_at += d.r_fn.size

    def cat(name: str, dtype: type) -> npt.NDArray[Any]:
        return np.concatenate([getattr(d, name) for d in ds]) if n else np.zeros(0, dtype)

    return Merged(
        n=n,
        width=width,
        ntypes=ntypes,
        owner=owner,
        rep=rep,
        stack=ids.stack[rep],
        labelset=ids.labelset[rep],
        values=values,
        scale=scale,
        alias=alias,
        totals=totals,
        st_ids=cat("st_ids", np.uint64),
        st_depth=cat("st_depth", np.int64),
        st_loc=cat("st_loc", np.uint64),
        st_nfn=cat("st_nfn", np.int64),
        st_fn=cat("st_fn", np.uint64),
        r_fn=cat("r_fn", np.uint64),
        r_flat=r_flat,
        r_cum=r_cum,
        r_owner=np.repeat(np.arange(n), [d.r_fn.size for d in ds]),
        strings=strings,
        mappings=mappings,
        map_h=ids.mapping,
        functions=functions,
        fn_h=ids.function,
        locations=locations,
        loc_h=ids.location,
        loc_map=ids.location_mapping,
        line_fn=ids.line_function,
        labels=labels,
    )


def tables(mg: Merged, headers: Sequence[Header], metas: Sequence[Meta], known: KnownIds | None = None) -> Rows:
    """The rows of every table for a merged batch; ids the writer already committed are left out."""
    n, width, ntypes = mg.n, mg.width, mg.ntypes
    ptypes = [profile_types_of(h, m.name) for h, m in zip(headers, metas, strict=True)]
    series_ids = np.zeros((n, max(width, 1)), np.uint64)
    groups: list[int] = []
    for i, (m, pts) in enumerate(zip(metas, ptypes, strict=True)):
        if not pts:
            raise InvalidRequest("profile has no sample types; nothing to store")
        series_ids[i, : len(pts)] = [series_id_of(m.tenant, pt, m.labels) for pt in pts]
        groups.append(m.group_id)
    ts = np.array([m.ts for m in metas], np.int64)
    owner, values, scale, alias = mg.owner, mg.values, mg.scale, mg.alias
    scaled = values // scale[owner, :width] if values.size else values
    rows, new_ids = entity_tables(mg, known)

    # Facts, one row per (sample, type) with a non-zero value.
    samples, rollups = [], []
    r_owner = mg.r_owner
    for t in range(width):
        nz = np.flatnonzero((values[:, t] != 0) & (ntypes[owner] > t) & (alias[owner, t] < 0))
        nz = nz[np.lexsort((scaled[nz, t], owner[nz]))]  # by value within a profile: narrower bit-packing
        o = owner[nz]
        samples.append(
            samples_table(series_ids[o, t], ts[o], mg.stack[nz], mg.labelset[nz], scaled[nz, t], scale[o, t])
        )
        flat, cum = mg.r_flat, mg.r_cum
        rnz = np.flatnonzero(((flat[:, t] != 0) | (cum[:, t] != 0)) & (ntypes[r_owner] > t) & (alias[r_owner, t] < 0))
        rnz = rnz[np.lexsort((cum[rnz, t], flat[rnz, t], r_owner[rnz]))]
        ro = r_owner[rnz]
        rollups.append(rollup_table(series_ids[ro, t], ts[ro], mg.r_fn[rnz], flat[rnz, t], cum[rnz, t], scale[ro, t]))
    rows["samples"] = pa.concat_tables(samples) if samples else EMPTY_SAMPLES
    rows["function_rollup"] = pa.concat_tables(rollups) if rollups else EMPTY_ROLLUP

    # Per-profile rows: series and profiles.
    kept = np.bincount(owner, minlength=n)
    stored = (values != 0) & (alias[owner, :width] < 0)
    rows_per = np.bincount(owner, weights=stored.sum(axis=1), minlength=n).astype(np.int64)
    items = []
    series_rows: list[dict[str, object]] = []
    profile_rows: list[dict[str, object]] = []
    for i, (h, m, pts) in enumerate(zip(headers, metas, ptypes, strict=True)):
        pids = profile_ids_of(groups[i], len(pts))
        sr, pr = header_rows(h, m, pts, series_ids[i], pids, mg.totals[i], int(kept[i]), scale[i], alias[i])
        series_rows += sr
        profile_rows += pr
        items.append(Normalized(groups[i], pids, [str(pt) for pt in pts], int(rows_per[i])))
    rows["series"] = pa.Table.from_pylist(series_rows, schema=SERIES)
    rows["profiles"] = pa.Table.from_pylist(profile_rows, schema=PROFILES)
    return Rows(rows, items, new_ids)


def entity_tables(mg: Merged, known: KnownIds | None = None) -> tuple[dict[str, pa.Table], dict[str, U64]]:
    """Rows of the interned tables (stacks, symbols, label sets) of a merged batch, each id once.

    Ids in ``known`` (committed before) are left out; the ids of the rows returned are what the
    writer may remember once they are committed.
    """
    known = known or KnownIds(limit=0)
    mp, fn, loc = mg.mappings, mg.functions, mg.locations
    new_ids: dict[str, U64] = {}

    def fresh(kind: str, ids: U64) -> npt.NDArray[np.bool_]:
        uniq, first = np.unique(ids, return_index=True)
        sel = np.zeros(ids.size, bool)
        sel[first[known.unknown(kind, uniq)]] = True
        new_ids[kind] = ids[sel]
        return sel

    rows: dict[str, pa.Table] = {}
    sr = np.flatnonzero(fresh("stack", mg.st_ids))
    st_off, fn_off = offsets_of(mg.st_depth), offsets_of(mg.st_nfn)
    rows["stacks"] = pa.table(
        {
            "stack_id": blob_ids(mg.st_ids[sr]),
            "location_ids": _lists(mg.st_depth[sr], pa.array(mg.st_loc[expand(st_off[sr], mg.st_depth[sr])])),
            "function_ids": _lists(mg.st_nfn[sr], blob_ids(mg.st_fn[expand(fn_off[sr], mg.st_nfn[sr])])),
        }
    )
    ln = fresh("location", mg.loc_h)
    nl = np.diff(loc.line_offsets)[ln]
    line_sel = expand(loc.line_offsets[:-1][ln], nl)
    rows["locations"] = pa.table(
        {
            "location_id": pa.array(mg.loc_h[ln]),
            "mapping_id": pa.array(mg.loc_map[ln]),
            "address": pa.array(loc.address[ln]),
            "is_folded": pa.array(loc.is_folded[ln]),
            "function_ids": _lists(nl, blob_ids(mg.line_fn[line_sel])),
            "lines": _lists(nl, pa.array(loc.line_line[line_sel])),
            "columns": _lists(nl, pa.array(loc.line_column[line_sel])),
        }
    )
    strings = mg.strings

    def text(codes: I64) -> pa.Array:
        return pa.array([strings[c] for c in codes.tolist()], pa.string())

    fnew = fresh("function", mg.fn_h)
    rows["functions"] = pa.table(
        {
            "function_id": blob_ids(mg.fn_h[fnew]),
            "name": text(fn.name[fnew]),
            "system_name": text(fn.system_name[fnew]),
            "filename": text(fn.filename[fnew]),
            "start_line": pa.array(fn.start_line[fnew]),
        }
    )
    mnew = fresh("mapping", mg.map_h)
    rows["mappings"] = pa.table(
        {
            "mapping_id": pa.array(mg.map_h[mnew]),
            "memory_start": pa.array(mp.start[mnew]),
            "memory_limit": pa.array(mp.limit[mnew]),
            "file_offset": pa.array(mp.offset[mnew]),
            "filename": text(mp.filename[mnew]),
            "build_id": text(mp.build_id[mnew]),
            **{
                k: pa.array(mp.flags[mnew, i])
                for i, k in enumerate(("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames"))
            },
        }
    )
    rows["labelsets"] = _labelsets(mg, fresh)
    return rows, new_ids


def header_rows(
    h: Header,
    m: Meta,
    pts: Sequence[ProfileType],
    series_ids: U64,
    profile_ids: Sequence[int],
    totals: I64,
    sample_count: int,
    scale: I64,
    alias: I64,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The ``series`` and ``profiles`` rows of one profile, one per sample type."""
    labels = sorted(m.labels.items())
    types, units = [st.type for st in h.sample_types], [st.unit for st in h.sample_types]
    series, profiles = [], []
    for t, pt in enumerate(pts):
        sid = int(series_ids[t])
        series.append({
            "series_id": sid, "tenant": m.tenant, "profile_type": str(pt), "name": m.name,
            "sample_type": pt.sample_type, "sample_unit": pt.sample_unit, "period_type": pt.period_type,
            "period_unit": pt.period_unit, "labels": labels, "first_seen": m.ts, "last_seen": m.ts,
        })  # fmt: skip
        profiles.append({
            "profile_id": profile_ids[t], "series_id": sid, "ts": m.ts, "group_id": m.group_id, "type_index": t,
            "sample_types": types, "sample_units": units, "default_sample_type": h.default_sample_type,
            "time_nanos": h.time_nanos, "duration_ns": h.duration_nanos, "period": h.period,
            "total": int(totals[t]), "sample_count": sample_count, "scale": int(scale[t]),
            "alias_of": int(alias[t]), "drop_frames": h.drop_frames, "keep_frames": h.keep_frames,
            "comments": list(h.comments), "doc_url": h.doc_url, "source": m.source,
        })  # fmt: skip
    return series, profiles


def _labelsets(mg: Merged, fresh: object) -> pa.Table:
    """Rows for label sets not stored yet; resolved from one sample that carries each."""
    ids, first = np.unique(mg.labelset, return_index=True)
    nonempty = ids != 0
    ids, first = ids[nonempty], first[nonempty]
    new = fresh("labelset", ids)  # type: ignore[operator]
    samples = mg.rep[first[new]]
    l_owner, l_key, l_str, l_num, l_unit = mg.labels
    lo = np.searchsorted(l_owner, samples)
    hi = np.searchsorted(l_owner, samples, side="right")
    strings = mg.strings
    keys, strs, nums, units = [], [], [], []
    for a, z in zip(lo.tolist(), hi.tolist(), strict=True):
        rows = sorted(
            range(a, z),
            key=lambda r: (
                strings[l_key[r]],
                strings[l_str[r]] if l_str[r] else "",
                int(l_num[r]),
                strings[l_unit[r]],
            ),
        )
        keys.append([strings[l_key[r]] for r in rows])
        strs.append([strings[l_str[r]] if l_str[r] else "" for r in rows])
        nums.append([int(l_num[r]) for r in rows])
        units.append([strings[l_unit[r]] for r in rows])
    return pa.table(
        {"labelset_id": blob_ids(ids[new]), "keys": keys, "strs": strs, "nums": nums, "num_units": units},
        schema=LABELSETS,
    )
