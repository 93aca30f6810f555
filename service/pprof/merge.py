"""Merging profiles as pprof's ``profile.Merge`` does.

Rules: profiles must have identical period type and identical sample types (same order);
the merged header takes the earliest non-zero ``time_nanos``, the summed ``duration_nanos``,
the largest ``period``, comments de-duplicated, and default sample type, doc URL and
drop/keep frames from the first profile that has them. Mappings, functions and locations are
de-duplicated by content; samples with equal locations and labels are summed and zero
samples dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.errors import IncompatibleProfiles
from service.pprof.model import Function, LabelSet, Location, Mapping, Profile, Samples, ValueType

__all__ = ["Header", "combine_headers", "merge"]


@dataclass(frozen=True, slots=True)
class Header:
    time_nanos: int
    duration_nanos: int
    period: int
    comments: tuple[str, ...]
    default_sample_type: str
    doc_url: str
    drop_frames: str
    keep_frames: str


def combine_headers(headers: Sequence[Header]) -> Header:
    times = [h.time_nanos for h in headers if h.time_nanos]
    comments: dict[str, None] = {}
    for h in headers:
        comments.update(dict.fromkeys(h.comments))

    def first(attr: str) -> str:
        return next((getattr(h, attr) for h in headers if getattr(h, attr)), "")

    return Header(
        time_nanos=min(times) if times else 0,
        duration_nanos=sum(h.duration_nanos for h in headers),
        period=max((h.period for h in headers), default=0),
        comments=tuple(comments),
        default_sample_type=first("default_sample_type"),
        doc_url=first("doc_url"),
        drop_frames=headers[0].drop_frames if headers else "",
        keep_frames=headers[0].keep_frames if headers else "",
    )


def _header(p: Profile) -> Header:
    return Header(
        p.time_nanos,
        p.duration_nanos,
        p.period,
        p.comments,
        p.default_sample_type,
        p.doc_url,
        p.drop_frames,
        p.keep_frames,
    )


def _check_compatible(a: Profile, b: Profile) -> None:
    if a.period_type != b.period_type:
        raise IncompatibleProfiles(f"incompatible period types {a.period_type} and {b.period_type}")
    if a.sample_types != b.sample_types:
        fmt = lambda ts: "[" + " ".join(map(str, ts)) + "]"  # noqa: E731
        raise IncompatibleProfiles(f"incompatible sample types {fmt(a.sample_types)} and {fmt(b.sample_types)}")


def merge(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` into one new profile with ids renumbered 1..n."""
    if not profiles:
        raise IncompatibleProfiles("no profiles to merge")
    for p in profiles[1:]:
        _check_compatible(profiles[0], p)
    mappings: dict[tuple[object, ...], Mapping] = {}
    functions: dict[tuple[object, ...], Function] = {}
    locations: dict[tuple[object, ...], Location] = {}
    labelsets: dict[LabelSet, int] = {(): 0}
    sample_sums: dict[tuple[tuple[int, ...], int], np.ndarray] = {}
    for p in profiles:
        mid: dict[int, int] = {0: 0}
        for m in p.mappings:
            key = (m.limit - m.start + 4095) // 4096, m.offset, m.build_id or m.filename
            nm = mappings.setdefault(key, Mapping(len(mappings) + 1, *_mapping_fields(m)))
            mid[m.id] = nm.id
        fid: dict[int, int] = {}
        for f in p.functions:
            key = (f.start_line, f.name, f.system_name, f.filename)
            nf = functions.setdefault(
                key, Function(len(functions) + 1, f.name, f.system_name, f.filename, f.start_line)
            )
            fid[f.id] = nf.id
        starts = {mm.id: mm.start for mm in p.mappings}
        lid: dict[int, int] = {}
        for loc in p.locations:
            lines = tuple(type(ln)(fid[ln.function_id], ln.line, ln.column) for ln in loc.lines)
            m = mid.get(loc.mapping_id, 0)
            key = (loc.address - starts.get(loc.mapping_id, 0) if loc.address else 0, m, lines, loc.is_folded)
            nl = locations.setdefault(key, Location(len(locations) + 1, m, loc.address, lines, loc.is_folded))
            lid[loc.id] = nl.id
        s = p.samples
        ls_map = [labelsets.setdefault(ls, len(labelsets)) for ls in s.labelsets]
        offs = s.offsets.tolist()
        locs = s.location_ids.tolist()
        lsi = s.labelset_index.tolist()
        for i in range(len(s)):
            k = (tuple(lid[x] for x in locs[offs[i] : offs[i + 1]]), ls_map[lsi[i]])
            acc = sample_sums.get(k)
            sample_sums[k] = s.values[i].copy() if acc is None else acc + s.values[i]
    keys = [k for k, v in sample_sums.items() if v.any()]
    n_types = len(profiles[0].sample_types)
    depth = np.fromiter((len(k[0]) for k in keys), np.int64, count=len(keys))
    offsets = np.zeros(len(keys) + 1, np.int64)
    np.cumsum(depth, out=offsets[1:])
    h = combine_headers([_header(p) for p in profiles])
    return Profile(
        sample_types=tuple(ValueType(t.type, t.unit) for t in profiles[0].sample_types),
        samples=Samples(
            offsets=offsets,
            location_ids=np.fromiter((x for k in keys for x in k[0]), np.uint64, count=int(offsets[-1])),
            values=np.array([sample_sums[k] for k in keys], np.int64).reshape(len(keys), n_types),
            labelset_index=np.fromiter((k[1] for k in keys), np.int32, count=len(keys)),
            labelsets=list(labelsets),
        ),
        mappings=tuple(mappings.values()),
        locations=tuple(locations.values()),
        functions=tuple(functions.values()),
        drop_frames=h.drop_frames,
        keep_frames=h.keep_frames,
        time_nanos=h.time_nanos,
        duration_nanos=h.duration_nanos,
        period_type=profiles[0].period_type,
        period=h.period,
        comments=h.comments,
        default_sample_type=h.default_sample_type,
        doc_url=h.doc_url,
    )


def _mapping_fields(m: Mapping) -> tuple[int, int, int, str, str, bool, bool, bool, bool]:
    return (
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
