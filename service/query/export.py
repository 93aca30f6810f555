"""Export: the stored profiles matching a query, merged into one pprof.

The merge happens in DuckDB (content-hash ids make equal stacks equal rows), and the result is
rebuilt into the pprof model with ids renumbered 1..n, so ``go tool pprof`` reads the same
numbers as ``go tool pprof -proto`` merging the raw files. Sample types: every type stored with
the selected profiles, in the source order; when sources disagree, the types common to all (as
pprof's ``CompatibilizeSampleTypes``). The default sample type is the queried one.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.pprof.merge import Header, combine_headers
from service.pprof.model import Function, Label, LabelSet, Line, Location, Mapping, Profile, Samples, ValueType
from service.query.selector import Query
from service.store.reads import ExportRows, SeriesRow, export_rows
from service.types import TimeRange

__all__ = ["build_profile", "export_profile", "select_series"]

SEP = "\x1f"


def select_series(series: list[SeriesRow], q: Query) -> list[int]:
    return [s.series_id for s in series if s.profile_type == q.profile_type and q.matches(s.labels)]


def export_profile(cur: object, q: Query, series: list[SeriesRow], tr: TimeRange) -> Profile:
    ids = select_series(series, q)
    if not ids:
        return _empty(q)
    return build_profile(export_rows(cur, ids, tr), q)  # type: ignore[arg-type]


def _empty(q: Query) -> Profile:
    pt = q.profile_type
    return Profile(
        sample_types=(ValueType(pt.sample_type, pt.sample_unit),),
        samples=Samples.empty(1),
        period_type=ValueType(pt.period_type, pt.period_unit) if pt.period_type or pt.period_unit else None,
        default_sample_type=pt.sample_type,
    )


def _index(ids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Position of each of ``keys`` in the sorted unique array ``ids``."""
    return np.searchsorted(ids, keys)


def build_profile(rows: ExportRows, q: Query) -> Profile:
    h = rows.headers
    if h.num_rows == 0:
        return _empty(q)
    # Sample types: the first source's order, restricted to the types every source has.
    per_group = [
        [f"{t}{SEP}{u}" for t, u in zip(ts, us, strict=True)]
        for ts, us in zip(h["sample_types"].to_pylist(), h["sample_units"].to_pylist(), strict=True)
    ]
    common = [t for t in per_group[0] if all(t in g for g in per_group[1:])]
    type_pos = {t: i for i, t in enumerate(common)}
    sample_types = tuple(ValueType(*t.split(SEP, 1)) for t in common)

    # Values: one row per (stack, label set), one column per sample type.
    s = rows.samples
    st_key = s["sample_type"].to_pylist()
    col = np.fromiter((type_pos.get(k, -1) for k in st_key), np.int64, count=len(st_key))
    keep = col >= 0
    stack = s["stack_id"].to_numpy()[keep]
    lset = s["labelset_id"].to_numpy()[keep]
    val = s["value"].to_numpy()[keep]
    col = col[keep]
    pair = np.stack([stack, lset], axis=1)
    upair, inv = np.unique(pair, axis=0, return_inverse=True) if pair.size else (pair, np.zeros(0, np.int64))
    values = np.zeros((upair.shape[0], len(common)), np.int64)
    np.add.at(values, (inv.ravel(), col), val)
    nz = values.any(axis=1)
    upair, values = upair[nz], values[nz]

    # Symbols renumbered 1..n in hash order (stable, so exports are deterministic).
    loc_t = rows.locations.sort_by("location_id")
    loc_hash = loc_t["location_id"].to_numpy()
    fn_t = rows.functions.sort_by("function_id")
    fn_hash = fn_t["function_id"].to_numpy()
    map_t = rows.mappings.sort_by("mapping_id")
    map_hash = map_t["mapping_id"].to_numpy()
    functions = tuple(
        Function(i + 1, n, sn, f, sl)
        for i, (n, sn, f, sl) in enumerate(
            zip(
                fn_t["name"].to_pylist(),
                fn_t["system_name"].to_pylist(),
                fn_t["filename"].to_pylist(),
                fn_t["start_line"].to_pylist(),
                strict=True,
            )
        )
    )
    mappings = tuple(
        Mapping(i + 1, *vals)
        for i, vals in enumerate(
            zip(
                *(
                    map_t[c].to_pylist()
                    for c in (
                        "memory_start",
                        "memory_limit",
                        "file_offset",
                        "filename",
                        "build_id",
                        "has_functions",
                        "has_filenames",
                        "has_line_numbers",
                        "has_inline_frames",
                    )
                ),
                strict=True,
            )
        )
    )
    fn_pos = {h: i + 1 for i, h in enumerate(fn_hash.tolist())}
    loc_map = (_index(map_hash, loc_t["mapping_id"].to_numpy()) + 1).tolist()
    mapped = loc_t["mapping_id"].to_numpy() != 0
    locations = tuple(
        Location(
            i + 1,
            loc_map[i] if mapped[i] and map_hash.size else 0,
            addr,
            tuple(Line(fn_pos[f], ln, c) for f, ln, c in zip(fs, lns, cs, strict=True)),
            folded,
        )
        for i, (addr, folded, fs, lns, cs) in enumerate(
            zip(
                loc_t["address"].to_pylist(),
                loc_t["is_folded"].to_pylist(),
                loc_t["function_ids"].to_pylist(),
                loc_t["lines"].to_pylist(),
                loc_t["columns"].to_pylist(),
                strict=True,
            )
        )
    )

    # Stacks → location id lists for each kept sample.
    st_t = rows.stacks.sort_by("stack_id")
    st_hash = st_t["stack_id"].to_numpy()
    lists = st_t["location_ids"].combine_chunks() if st_t.num_rows else pa.array([], pa.list_(pa.uint64()))
    st_off = lists.offsets.to_numpy().astype(np.int64)
    st_locs = _index(loc_hash, pc.list_flatten(lists).to_numpy()).astype(np.uint64) + np.uint64(1)
    which = _index(st_hash, upair[:, 0]) if upair.size else np.zeros(0, np.int64)
    depth = st_off[which + 1] - st_off[which]
    offsets = np.zeros(which.size + 1, np.int64)
    np.cumsum(depth, out=offsets[1:])
    seg = np.repeat(np.arange(which.size), depth)
    within = np.arange(int(offsets[-1])) - offsets[:-1][seg]
    location_ids = st_locs[st_off[which][seg] + within] if seg.size else np.zeros(0, np.uint64)

    # Label sets.
    ls_t = rows.labelsets
    ls_hash = ls_t["labelset_id"].to_numpy()
    order = np.argsort(ls_hash)
    labelsets: list[LabelSet] = [()]
    for k, sv, nv, uv in zip(*(ls_t[c].to_pylist() for c in ("keys", "strs", "nums", "num_units")), strict=True):
        labelsets.append(tuple(Label(a, b, c, d) for a, b, c, d in zip(k, sv, nv, uv, strict=True)))
    ls_sorted = ls_hash[order]
    ls_idx = np.zeros(upair.shape[0], np.int32)
    has = upair[:, 1] != 0 if upair.size else np.zeros(0, bool)
    if has.any():
        ls_idx[has] = order[np.searchsorted(ls_sorted, upair[has, 1])] + 1

    heads = [
        Header(t, d, p, tuple(c), dst, du, df, kf)
        for t, d, p, c, dst, du, df, kf in zip(
            *(
                h[c].to_pylist()
                for c in (
                    "time_nanos",
                    "duration_ns",
                    "period",
                    "comments",
                    "default_sample_type",
                    "doc_url",
                    "drop_frames",
                    "keep_frames",
                )
            ),
            strict=True,
        )
    ]
    hd = combine_headers(heads)
    pt = q.profile_type
    return Profile(
        sample_types=sample_types,
        samples=Samples(offsets, location_ids.astype(np.uint64), values, ls_idx, labelsets),
        mappings=mappings,
        locations=locations,
        functions=functions,
        drop_frames=hd.drop_frames,
        keep_frames=hd.keep_frames,
        time_nanos=hd.time_nanos,
        duration_nanos=hd.duration_nanos,
        period_type=ValueType(pt.period_type, pt.period_unit) if pt.period_type or pt.period_unit else None,
        period=hd.period,
        comments=hd.comments,
        default_sample_type=pt.sample_type,
        doc_url=hd.doc_url,
    )
