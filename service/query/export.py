"""Export: the stored profiles matching a query, merged into one pprof.

The merge happens in DuckDB (content-hash ids make equal stacks equal rows), and the result is
rebuilt into the pprof model with ids renumbered 1..n, so ``go tool pprof`` reads the same
numbers as ``go tool pprof -proto`` merging the raw files. Sample types: every type stored with
the selected profiles, in the source order; when sources disagree, the types common to all (as
pprof's ``CompatibilizeSampleTypes``). The default sample type is the queried one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.pprof.batch import expand
from service.pprof.merge import combine_headers, merge
from service.pprof.model import (
    Functions,
    Header,
    Label,
    LabelSet,
    Locations,
    Mappings,
    Profile,
    Samples,
    StringTable,
    ValueType,
    offsets_of,
)
from service.query.aggregation import Aggregation, aggregation_for, averaged_sample_types
from service.query.selector import Query
from service.query.source import ProfileSource
from service.store.export_rows import ExportRows
from service.store.ids import ids_of_blobs
from service.store.reads import SeriesRow
from service.types import TimeRange

__all__ = ["build_profile", "diff_profile", "export_profile", "flat_lists", "select_series"]

SEP = "\x1f"


def select_series(series: list[SeriesRow], q: Query) -> list[int]:
    return [s.series_id for s in series if s.profile_type == q.profile_type and q.matches(s.labels)]


def export_profile(
    src: ProfileSource, q: Query, series: list[SeriesRow], tr: TimeRange, aggregation: Aggregation | None = None
) -> Profile:
    """The profiles of ``q`` in ``tr`` merged, each series' profiles combined as ``aggregation`` says.

    Without one, each sample type takes its own default (gauges average the scrapes of each series,
    the rest are summed), which is what ``top`` and the flame graph answer for that type: an
    export of twenty heap scrapes is one average heap, not twenty heaps.
    """
    ids = select_series(series, q)
    if not ids:
        return _empty(q)
    latest = aggregation_for(q.profile_type, aggregation) is Aggregation.LAST
    averaged = averaged_sample_types(q.profile_type, aggregation)
    rows = src.export_rows(ids, tr, latest_only=latest, averaged=averaged)
    return build_profile(rows, q)


BASE_LABEL = Label("pprof::base", "true")


def diff_profile(current: Profile, base: Profile) -> Profile:
    """One pprof holding ``current`` and ``base`` negated, base samples labelled ``pprof::base=true``.

    That is what ``go tool pprof -diff_base=BASE CURRENT`` builds before it reports, so pprof
    shows this file as that diff (percentages of the base's total).
    """
    s = base.samples
    negated = Samples(
        s.offsets,
        s.location_ids,
        -s.values,
        (s.labelset_index + 1).astype(np.int32),
        [(), *((*ls, BASE_LABEL) for ls in s.labelsets)],
    )
    return merge([current, dataclasses.replace(base, samples=negated)])


def _empty(q: Query) -> Profile:
    pt = q.profile_type
    return Profile(
        sample_types=(ValueType(pt.sample_type, pt.sample_unit),),
        samples=Samples.empty(1),
        period_type=ValueType(pt.period_type, pt.period_unit) if pt.period_type or pt.period_unit else None,
        default_sample_type=pt.sample_type,
    )


def flat_lists(lists: pa.ChunkedArray | pa.Array) -> tuple[npt.NDArray[np.int64], pa.Array]:
    """Offsets and flattened values of a list column."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    if len(arr) == 0:
        return np.zeros(1, np.int64), pa.array([], arr.type.value_type)
    return arr.offsets.to_numpy().astype(np.int64) - int(arr.offsets[0].as_py()), arr.flatten()


def _renumber(hashes: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """Sorted hashes and, for each input row, its 1-based id in that order (deterministic exports)."""
    order = np.argsort(hashes, kind="stable")
    ids = np.empty(hashes.size, np.int64)
    ids[order] = np.arange(1, hashes.size + 1)
    return hashes[order], ids


def _find(sorted_hashes: npt.NDArray[np.uint64], keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """1-based position of each key in ``sorted_hashes``; 0 where absent."""
    if sorted_hashes.size == 0:
        return np.zeros(keys.size, np.int64)
    pos = np.minimum(np.searchsorted(sorted_hashes, keys), sorted_hashes.size - 1)
    return np.where(sorted_hashes[pos] == keys, pos + 1, 0).astype(np.int64)


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

    # Values: one row per (stack, label set), one column per sample type.
    s = rows.samples
    col = np.fromiter((type_pos.get(k, -1) for k in s["sample_type"].to_pylist()), np.int64, count=s.num_rows)
    keep = col >= 0
    pair = np.stack([ids_of_blobs(s["stack_id"])[keep], ids_of_blobs(s["labelset_id"])[keep]], axis=1)
    upair, inv = np.unique(pair, axis=0, return_inverse=True) if pair.size else (pair, np.zeros(0, np.int64))
    values = np.zeros((upair.shape[0], len(common)), np.int64)
    np.add.at(values, (inv.reshape(-1), col[keep]), s["value"].to_numpy()[keep])
    nz = values.any(axis=1)
    upair, values = upair[nz], values[nz]

    # Symbols renumbered 1..n in hash order.
    st = StringTable()
    fn = rows.functions
    fn_sorted, fn_ids = _renumber(ids_of_blobs(fn["function_id"]))

    def codes(table: pa.Table, column: str) -> npt.NDArray[np.int64]:
        return np.array([st(x) for x in table[column].to_pylist()], np.int64)

    functions = Functions(
        id=fn_ids.astype(np.uint64),
        name=codes(fn, "name"),
        system_name=codes(fn, "system_name"),
        filename=codes(fn, "filename"),
        start_line=fn["start_line"].to_numpy().astype(np.int64),
    )
    mp = rows.mappings
    map_sorted, map_ids = _renumber(mp["mapping_id"].to_numpy().astype(np.uint64))
    mappings = Mappings(
        id=map_ids.astype(np.uint64),
        start=mp["memory_start"].to_numpy().astype(np.uint64),
        limit=mp["memory_limit"].to_numpy().astype(np.uint64),
        offset=mp["file_offset"].to_numpy().astype(np.uint64),
        filename=codes(mp, "filename"),
        build_id=codes(mp, "build_id"),
        flags=np.stack(
            [
                mp[c].to_numpy(zero_copy_only=False).astype(bool)
                for c in ("has_functions", "has_filenames", "has_line_numbers", "has_inline_frames")
            ],
            axis=1,
        ).reshape(-1, 4),
    )
    lt = rows.locations
    loc_sorted, loc_ids = _renumber(lt["location_id"].to_numpy().astype(np.uint64))
    line_off, line_fns = flat_lists(lt["function_ids"])
    _, line_nums = flat_lists(lt["lines"])
    _, line_cols = flat_lists(lt["columns"])
    locations = Locations(
        loc_ids.astype(np.uint64),
        _find(map_sorted, lt["mapping_id"].to_numpy().astype(np.uint64)).astype(np.uint64),
        lt["address"].to_numpy().astype(np.uint64),
        lt["is_folded"].to_numpy(zero_copy_only=False).astype(bool),
        line_off,
        _find(fn_sorted, ids_of_blobs(line_fns)).astype(np.uint64),
        line_nums.to_numpy().astype(np.int64),
        line_cols.to_numpy().astype(np.int64),
    )

    # Stacks → location ids for each kept sample.
    stt = rows.stacks
    st_hash = ids_of_blobs(stt["stack_id"])
    st_order = np.argsort(st_hash, kind="stable")
    st_sorted = st_hash[st_order]
    st_off, st_locs = flat_lists(stt["location_ids"])
    st_new = _find(loc_sorted, st_locs.to_numpy().astype(np.uint64)).astype(np.uint64)
    which = st_order[_find(st_sorted, upair[:, 0]) - 1] if upair.size else np.zeros(0, np.int64)
    depth = st_off[which + 1] - st_off[which]
    offsets = offsets_of(depth)
    location_ids = st_new[expand(st_off[which], depth)]

    # Label sets.
    ls = rows.labelsets
    ls_hash = ids_of_blobs(ls["labelset_id"])
    labelsets: list[LabelSet] = [()]
    for k, sv, nv, uv in zip(*(ls[c].to_pylist() for c in ("keys", "strs", "nums", "num_units")), strict=True):
        labelsets.append(tuple(Label(a, b, c, d) for a, b, c, d in zip(k, sv, nv, uv, strict=True)))
    ls_sorted = np.sort(ls_hash)
    ls_index = np.zeros(upair.shape[0], np.int32)
    if upair.size and ls_sorted.size:
        found = _find(ls_sorted, upair[:, 1])
        order = np.argsort(ls_hash, kind="stable")
        ls_index = np.where(found > 0, order[np.maximum(found - 1, 0)] + 1, 0).astype(np.int32)

    heads = [
        Header(
            time_nanos=t,
            duration_nanos=d,
            period=p,
            comments=tuple(c),
            default_sample_type=dst,
            doc_url=du,
            drop_frames=df,
            keep_frames=kf,
        )
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
        sample_types=tuple(ValueType(*t.split(SEP, 1)) for t in common),
        samples=Samples(offsets, location_ids, values, ls_index, labelsets),
        strings=st.table,
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
