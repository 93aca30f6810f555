"""Resolved model → gzipped pprof bytes that ``go tool pprof`` and ``go build -pgo`` accept.

The export rules: string_table[0] = ""; ids 1..n and unique (the model's ids are kept, so the
caller numbers them); one value per sample type; strings interned once.
"""

from __future__ import annotations

import gzip

from service.pprof import profile_pb2 as pb
from service.pprof.model import Profile

__all__ = ["encode", "to_message"]


class _StringTable:
    __slots__ = ("index", "table")

    def __init__(self) -> None:
        self.table: list[bytes] = [b""]
        self.index: dict[str, int] = {"": 0}

    def __call__(self, s: str) -> int:
        i = self.index.get(s)
        if i is None:
            i = self.index[s] = len(self.table)
            self.table.append(s.encode("utf-8", "surrogateescape"))
        return i


def to_message(p: Profile) -> pb.Profile:
    st = _StringTable()
    msg = pb.Profile()
    for t in p.sample_types:
        msg.sample_type.add(type=st(t.type), unit=st(t.unit))
    s = p.samples
    offsets = s.offsets.tolist()
    locs = s.location_ids.tolist()
    values = s.values.tolist()
    label_msgs = [
        [pb.Label(key=st(lb.key), str=st(lb.str) if lb.str else 0, num=lb.num, num_unit=st(lb.num_unit)) for lb in ls]
        for ls in s.labelsets
    ]
    lsi = s.labelset_index.tolist()
    add = msg.sample.add
    for i, vals in enumerate(values):
        smp = add(location_id=locs[offsets[i] : offsets[i + 1]], value=vals)
        if lsi[i]:
            smp.label.extend(label_msgs[lsi[i]])
    for m in p.mappings:
        msg.mapping.add(
            id=m.id,
            memory_start=m.start,
            memory_limit=m.limit,
            file_offset=m.offset,
            filename=st(m.filename),
            build_id=st(m.build_id),
            has_functions=m.has_functions,
            has_filenames=m.has_filenames,
            has_line_numbers=m.has_line_numbers,
            has_inline_frames=m.has_inline_frames,
        )
    for loc in p.locations:
        ml = msg.location.add(id=loc.id, mapping_id=loc.mapping_id, address=loc.address, is_folded=loc.is_folded)
        for ln in loc.lines:
            ml.line.add(function_id=ln.function_id, line=ln.line, column=ln.column)
    for f in p.functions:
        msg.function.add(
            id=f.id, name=st(f.name), system_name=st(f.system_name), filename=st(f.filename), start_line=f.start_line
        )
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
    msg.string_table.extend(st.table)
    return msg


def encode(p: Profile, *, compresslevel: int = 6) -> bytes:
    """Serialize and gzip; pprof files on disk are gzipped by convention."""
    return gzip.compress(to_message(p).SerializeToString(), compresslevel=compresslevel, mtime=0)
