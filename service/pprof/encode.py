"""Resolved model → gzipped pprof bytes that ``go tool pprof`` and ``go build -pgo`` accept.

The export rules: string_table[0] = ""; ids 1..n and unique (the model's ids are kept, so the
caller numbers them); one value per sample type; strings interned once. Symbols are written
with one Python step per entity; the caller keeps them few by exporting merged profiles.
"""

from __future__ import annotations

import gzip

from service.pprof import profile_pb2 as pb
from service.pprof.model import Profile, StringTable

__all__ = ["encode", "to_message"]


def to_message(p: Profile) -> pb.Profile:
    st = StringTable()
    code = [st(s) for s in p.strings]  # the profile's dictionary → codes of the output table
    msg = pb.Profile()
    for t in p.sample_types:
        msg.sample_type.add(type=st(t.type), unit=st(t.unit))
    s = p.samples
    offsets = s.offsets.tolist()
    locs = s.location_ids.tolist()
    label_msgs = [
        [pb.Label(key=st(lb.key), str=st(lb.str) if lb.str else 0, num=lb.num, num_unit=st(lb.num_unit)) for lb in ls]
        for ls in s.labelsets
    ]
    lsi = s.labelset_index.tolist()
    add = msg.sample.add
    for i, vals in enumerate(s.values.tolist()):
        smp = add(location_id=locs[offsets[i] : offsets[i + 1]], value=vals)
        if lsi[i]:
            smp.label.extend(label_msgs[lsi[i]])
    m = p.mappings
    for mid, start, limit, off, fn, bid, flags in zip(
        m.id.tolist(),
        m.start.tolist(),
        m.limit.tolist(),
        m.offset.tolist(),
        m.filename.tolist(),
        m.build_id.tolist(),
        m.flags.tolist(),
        strict=True,
    ):
        msg.mapping.add(
            id=mid,
            memory_start=start,
            memory_limit=limit,
            file_offset=off,
            filename=code[fn],
            build_id=code[bid],
            has_functions=flags[0],
            has_filenames=flags[1],
            has_line_numbers=flags[2],
            has_inline_frames=flags[3],
        )
    loc = p.locations
    lo = loc.line_offsets.tolist()
    lf, ll, lc = loc.line_function_id.tolist(), loc.line_line.tolist(), loc.line_column.tolist()
    for i, (lid, mid, addr, folded) in enumerate(
        zip(
            loc.id.tolist(),
            loc.mapping_id.tolist(),
            loc.address.tolist(),
            loc.is_folded.tolist(),
            strict=True,
        )
    ):
        ml = msg.location.add(id=lid, mapping_id=mid, address=addr, is_folded=folded)
        for j in range(lo[i], lo[i + 1]):
            ml.line.add(function_id=lf[j], line=ll[j], column=lc[j])
    f = p.functions
    for fid, name, sysname, fname, start in zip(
        f.id.tolist(),
        f.name.tolist(),
        f.system_name.tolist(),
        f.filename.tolist(),
        f.start_line.tolist(),
        strict=True,
    ):
        msg.function.add(id=fid, name=code[name], system_name=code[sysname], filename=code[fname], start_line=start)
    msg.drop_frames = st(p.drop_frames)
    msg.keep_frames = st(p.keep_frames)
    msg.time_nanos = p.time_nanos
    msg.duration_nanos = p.duration_nanos
    if p.period_type is not None:
        msg.period_type.type = st(p.period_type.type)
        msg.period_type.unit = st(p.period_type.unit)
    msg.period = p.period
    msg.comment.extend(st(c) for c in p.comments)
    msg.default_sample_type = st(p.default_sample_type)
    msg.doc_url = st(p.doc_url)
    msg.string_table.extend(s.encode("utf-8", "surrogateescape") for s in st.table)
    return msg


def encode(p: Profile, *, compresslevel: int = 6) -> bytes:
    """Serialize and gzip; pprof files on disk are gzipped by convention."""
    return gzip.compress(to_message(p).SerializeToString(), compresslevel=compresslevel, mtime=0)
