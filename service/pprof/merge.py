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
from dataclasses import replace

import numpy as np

from service.errors import IncompatibleProfiles
from service.pprof.model import Function, Header, LabelSet, Line, Location, Mapping, Profile, Samples

__all__ = ["Header", "combine_headers", "merge"]


def combine_headers(headers: Sequence[Header]) -> Header:
    times = [h.time_nanos for h in headers if h.time_nanos]
    comments: dict[str, None] = {}
    for h in headers:
        comments.update(dict.fromkeys(h.comments))

    def first(attr: str) -> str:
        return next((getattr(h, attr) for h in headers if getattr(h, attr)), "")

    return Header(
        sample_types=headers[0].sample_types if headers else (),
        period_type=headers[0].period_type if headers else None,
        time_nanos=min(times) if times else 0,
        duration_nanos=sum(h.duration_nanos for h in headers),
        period=max((h.period for h in headers), default=0),
        comments=tuple(comments),
        default_sample_type=first("default_sample_type"),
        doc_url=first("doc_url"),
        drop_frames=headers[0].drop_frames if headers else "",
        keep_frames=headers[0].keep_frames if headers else "",
    )


def _check_compatible(a: Profile, b: Profile) -> None:
    if a.period_type != b.period_type:
        raise IncompatibleProfiles(f"incompatible period types {a.period_type} and {b.period_type}")
    if a.sample_types != b.sample_types:
        fmt = lambda ts: "[" + " ".join(map(str, ts)) + "]"  # noqa: E731
        raise IncompatibleProfiles(f"incompatible sample types {fmt(a.sample_types)} and {fmt(b.sample_types)}")


def merge(profiles: Sequence[Profile]) -> Profile:
    """Merge ``profiles`` into one new profile with ids renumbered 1..n.

    This is the reference implementation of the rules, over entities; storage merges the same
    way in DuckDB, where content-hash ids make equal entities equal rows.
    """
    if not profiles:
        raise IncompatibleProfiles("no profiles to merge")
    for p in profiles[1:]:
        _check_compatible(profiles[0], p)
    mappings: dict[tuple[object, ...], Mapping] = {}
    functions: dict[tuple[object, ...], Function] = {}
    locations: dict[tuple[object, ...], Location] = {}
    sums: dict[tuple[tuple[int, ...], LabelSet], np.ndarray] = {}
    for p in profiles:
        mid: dict[int, int] = {0: 0}
        starts: dict[int, int] = {}
        for m in p.mappings.entities(p.strings):
            key = ((m.limit - m.start + 4095) // 4096, m.offset, m.build_id or m.filename)
            new = mappings.setdefault(key, replace(m, id=len(mappings) + 1))
            mid[m.id], starts[m.id] = new.id, m.start
        fid: dict[int, int] = {}
        for f in p.functions.entities(p.strings):
            new_f = functions.setdefault(
                (f.start_line, f.name, f.system_name, f.filename), replace(f, id=len(functions) + 1)
            )
            fid[f.id] = new_f.id
        lid: dict[int, int] = {}
        for loc in p.locations.entities():
            lines = tuple(Line(fid[ln.function_id], ln.line, ln.column) for ln in loc.lines)
            mapping = mid.get(loc.mapping_id, 0)
            lkey = (loc.address - starts.get(loc.mapping_id, 0) if loc.address else 0, mapping, lines, loc.is_folded)
            new_l = locations.setdefault(lkey, Location(len(locations) + 1, mapping, loc.address, lines, loc.is_folded))
            lid[loc.id] = new_l.id
        s = p.samples
        offs, ids, lsi = s.offsets.tolist(), s.location_ids.tolist(), s.labelset_index.tolist()
        for i in range(len(s)):
            k = (tuple(lid[x] for x in ids[offs[i] : offs[i + 1]]), s.labelsets[lsi[i]])
            acc = sums.get(k)
            sums[k] = s.values[i].copy() if acc is None else acc + s.values[i]
    n_types = len(profiles[0].sample_types)
    rows = [(locs, vals.tolist(), labels) for (locs, labels), vals in sums.items() if vals.any()]
    h = combine_headers([p.header() for p in profiles])
    return Profile.build(
        profiles[0].sample_types,
        Samples.of(rows, n_types),
        mappings=list(mappings.values()),
        locations=list(locations.values()),
        functions=list(functions.values()),
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
