"""Many decoded profiles as one set of columns.

Ingest decodes and normalizes a whole writer batch at once: numpy's cost per call is paid per
batch, not per profile, which is what brings ingest near the speed of the protobuf parse. The
layout is the single-profile model's, concatenated: each column is grouped by profile in order,
``*_base`` arrays give each profile's range, and string codes index one concatenated
``strings`` list (so equal codes mean equal dictionary entries only within a profile; content
is compared through string hashes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from service.pprof.hashing import mix
from service.pprof.model import (
    Functions,
    Header,
    Label,
    LabelSet,
    Locations,
    Mappings,
    Profile,
    Samples,
    expand,
    offsets_of,
)
from service.types import I64, U64

__all__ = ["Header", "ProfileBatch", "Resolved", "expand", "rows_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Resolved:
    """References of a batch as row indexes (-1: unresolved; for mappings that means unmapped)."""

    sample_location: I64  # per element of ProfileBatch.location_ids
    line_function: I64  # per line of ProfileBatch.locations
    location_mapping: I64  # per location


@dataclass(slots=True)
class ProfileBatch:
    headers: list[Header]
    value_counts: I64  # values each sample had on the wire (must equal its profile's number of types)
    strings: list[str]
    string_base: I64
    # Samples: sample i of the batch belongs to profile ``sample_owner[i]``; values are padded
    # with zeros to the widest profile's number of sample types.
    sample_base: I64
    offsets: I64
    location_ids: U64
    values: I64
    label_owner: I64  # batch sample index of each label
    label_key: I64
    label_str: I64  # 0 = numeric label
    label_num: I64
    label_unit: I64
    mapping_base: I64
    mappings: Mappings
    function_base: I64
    functions: Functions
    location_base: I64
    locations: Locations
    resolved: Resolved | None = None  # filled by resolve()

    def __len__(self) -> int:
        return len(self.headers)

    def resolve(self) -> Resolved:
        """Row indexes for every id reference (computed once per batch)."""
        if self.resolved is not None:
            return self.resolved
        n = len(self)
        s_owner = self.sample_owner
        l_owner = np.repeat(np.arange(n), np.diff(self.location_base))
        line_owner = np.repeat(l_owner, np.diff(self.locations.line_offsets))
        self.resolved = Resolved(
            sample_location=rows_of(
                np.repeat(s_owner, np.diff(self.offsets)), self.location_ids, self.locations.id, self.location_base
            ),
            line_function=rows_of(line_owner, self.locations.line_function_id, self.functions.id, self.function_base),
            location_mapping=rows_of(l_owner, self.locations.mapping_id, self.mappings.id, self.mapping_base),
        )
        return self.resolved

    @property
    def sample_owner(self) -> I64:
        return np.repeat(np.arange(len(self)), np.diff(self.sample_base))

    def num_types(self) -> I64:
        return np.array([len(h.sample_types) for h in self.headers], np.int64)

    @classmethod
    def of(cls, profiles: Sequence[Profile]) -> ProfileBatch:
        """Concatenate resolved profiles (hand-built or converted ones) into a batch."""
        if not profiles:
            return cls.empty()
        width = max((len(p.sample_types) for p in profiles), default=0)
        string_base = offsets_of([len(p.strings) for p in profiles])
        sample_base = offsets_of([len(p.samples) for p in profiles])
        loc_base = offsets_of([len(p.locations) for p in profiles])
        depth = np.concatenate([p.samples.depths() for p in profiles]) if profiles else np.zeros(0, np.int64)
        owners, keys, strs, nums, units = [], [], [], [], []
        strings: list[str] = []
        for i, p in enumerate(profiles):
            st = {s: j for j, s in enumerate(p.strings)}
            extra: list[str] = []

            def code(s: str, st: dict[str, int] = st, extra: list[str] = extra, p: Profile = p) -> int:
                if s not in st:
                    st[s] = len(p.strings) + len(extra)
                    extra.append(s)
                return st[s]

            for k, ls_i in enumerate(p.samples.labelset_index.tolist()):
                for lb in p.samples.labelsets[ls_i]:
                    owners.append(int(sample_base[i]) + k)
                    keys.append(code(lb.key))
                    strs.append(code(lb.str) if lb.str else 0)
                    nums.append(lb.num)
                    units.append(code(lb.num_unit))
            strings.extend(p.strings)
            strings.extend(extra)
            string_base[i + 1 :] += len(extra)

        def g(arrs: list[I64], base: I64) -> I64:
            return np.concatenate([a + base[i] for i, a in enumerate(arrs)]) if arrs else np.zeros(0, np.int64)

        sb = string_base
        label_base = [sb[int(np.searchsorted(sample_base, o, side="right")) - 1] for o in owners]
        return cls(
            headers=[p.header() for p in profiles],
            value_counts=np.repeat(
                np.array([len(p.sample_types) for p in profiles], np.int64), [len(p.samples) for p in profiles]
            ),
            strings=strings,
            string_base=string_base,
            sample_base=sample_base,
            offsets=offsets_of(depth),
            location_ids=np.concatenate([p.samples.location_ids for p in profiles])
            if profiles
            else np.zeros(0, np.uint64),
            values=np.concatenate(
                [np.pad(p.samples.values, ((0, 0), (0, width - p.samples.values.shape[1]))) for p in profiles]
            )
            if profiles
            else np.zeros((0, 0), np.int64),
            label_owner=np.array(owners, np.int64),
            label_key=np.array(keys, np.int64) + np.array(label_base, np.int64),
            label_str=np.where(
                np.array(strs, np.int64) > 0, np.array(strs, np.int64) + np.array(label_base, np.int64), 0
            ),
            label_num=np.array(nums, np.int64),
            label_unit=np.array(units, np.int64) + np.array(label_base, np.int64),
            mapping_base=offsets_of([len(p.mappings) for p in profiles]),
            mappings=_concat(Mappings, [p.mappings for p in profiles], ("filename", "build_id"), sb),
            function_base=offsets_of([len(p.functions) for p in profiles]),
            functions=_concat(Functions, [p.functions for p in profiles], ("name", "system_name", "filename"), sb),
            location_base=loc_base,
            locations=replace(
                _concat(Locations, [p.locations for p in profiles], (), sb, skip=("line_offsets",)),
                line_offsets=offsets_of(np.concatenate([np.diff(p.locations.line_offsets) for p in profiles])),
            ),
        )

    @classmethod
    def empty(cls) -> ProfileBatch:
        z, zu, one = np.zeros(0, np.int64), np.zeros(0, np.uint64), np.zeros(1, np.int64)
        return cls(
            headers=[],
            value_counts=z,
            strings=[],
            string_base=one,
            sample_base=one,
            offsets=one,
            location_ids=zu,
            values=np.zeros((0, 0), np.int64),
            label_owner=z,
            label_key=z,
            label_str=z,
            label_num=z,
            label_unit=z,
            mapping_base=one,
            mappings=Mappings(zu, zu, zu, zu, z, z, np.zeros((0, 4), bool)),
            function_base=one,
            functions=Functions(zu, z, z, z, z),
            location_base=one,
            locations=Locations(zu, zu, zu, np.zeros(0, bool), one, zu, z, z),
        )

    def labelsets(self, i: int) -> tuple[npt.NDArray[np.int32], list[LabelSet]]:
        """Label sets of profile ``i``: an index per sample and the distinct sets (``[0]`` empty)."""
        s0, s1 = int(self.sample_base[i]), int(self.sample_base[i + 1])
        lo = np.searchsorted(self.label_owner, s0)
        hi = np.searchsorted(self.label_owner, s1)
        index = np.zeros(s1 - s0, np.int32)
        sets: dict[LabelSet, int] = {(): 0}
        owner = self.label_owner[lo:hi] - s0
        if owner.size == 0:
            return index, [()]
        strings = self.strings
        cuts = np.flatnonzero(np.diff(owner)) + 1
        for rows in np.split(np.arange(lo, hi), cuts):
            labels = (
                Label(strings[self.label_key[r]], str=strings[self.label_str[r]])
                if self.label_str[r]
                else Label(strings[self.label_key[r]], num=int(self.label_num[r]), num_unit=strings[self.label_unit[r]])
                for r in rows.tolist()
            )
            ls = tuple(sorted(labels, key=lambda lb: (lb.key, lb.str, lb.num, lb.num_unit)))
            index[int(self.label_owner[rows[0]]) - s0] = sets.setdefault(ls, len(sets))
        return index, list(sets)

    def profile(self, i: int) -> Profile:
        """Profile ``i`` of the batch as a single resolved profile (local string codes)."""
        labelset_index, labelsets = self.labelsets(i)
        h = self.headers[i]
        sb = int(self.string_base[i])
        s0, s1 = int(self.sample_base[i]), int(self.sample_base[i + 1])
        o0, o1 = int(self.offsets[s0]), int(self.offsets[s1])
        m0, m1 = int(self.mapping_base[i]), int(self.mapping_base[i + 1])
        f0, f1 = int(self.function_base[i]), int(self.function_base[i + 1])
        l0, l1 = int(self.location_base[i]), int(self.location_base[i + 1])
        lo = self.locations.line_offsets
        m, f, loc = self.mappings, self.functions, self.locations
        return Profile(
            sample_types=h.sample_types,
            samples=Samples(
                self.offsets[s0 : s1 + 1] - o0,
                self.location_ids[o0:o1],
                self.values[s0:s1, : len(h.sample_types)],
                labelset_index,
                labelsets,
            ),
            strings=self.strings[sb : int(self.string_base[i + 1])],
            mappings=Mappings(
                m.id[m0:m1],
                m.start[m0:m1],
                m.limit[m0:m1],
                m.offset[m0:m1],
                m.filename[m0:m1] - sb,
                m.build_id[m0:m1] - sb,
                m.flags[m0:m1],
            ),
            functions=Functions(
                f.id[f0:f1], f.name[f0:f1] - sb, f.system_name[f0:f1] - sb, f.filename[f0:f1] - sb, f.start_line[f0:f1]
            ),
            locations=Locations(
                loc.id[l0:l1],
                loc.mapping_id[l0:l1],
                loc.address[l0:l1],
                loc.is_folded[l0:l1],
                lo[l0 : l1 + 1] - lo[l0],
                loc.line_function_id[lo[l0] : lo[l1]],
                loc.line_line[lo[l0] : lo[l1]],
                loc.line_column[lo[l0] : lo[l1]],
            ),
            drop_frames=h.drop_frames,
            keep_frames=h.keep_frames,
            time_nanos=h.time_nanos,
            duration_nanos=h.duration_nanos,
            period_type=h.period_type,
            period=h.period,
            comments=h.comments,
            default_sample_type=h.default_sample_type,
            doc_url=h.doc_url,
        )


def _concat(
    cls: type[T], parts: Sequence[T], shifted: tuple[str, ...], string_base: I64, skip: tuple[str, ...] = ()
) -> T:
    """Concatenate column dataclasses; string-code columns move to the batch's string numbering."""
    cols: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in skip:
            cols[f.name] = None
            continue
        arrs = [getattr(p, f.name) + (string_base[i] if f.name in shifted else 0) for i, p in enumerate(parts)]
        cols[f.name] = np.concatenate(arrs)
    return cls(**cols)


def rows_of(ref_owner: I64, ref_ids: U64, def_ids: U64, def_base: I64) -> I64:
    """Resolve id references to row indexes: ``-1`` where a profile has no such id.

    References only resolve within their own profile. Most producers (Go's runtime, pprof)
    number ids 1..n in order; for those profiles the row is arithmetic. Others go through a
    sorted join on a (profile, id) hash.
    """
    n = def_base.size - 1
    counts = np.diff(def_base)
    def_owner = np.repeat(np.arange(n), counts)
    local = (np.arange(def_ids.size) - def_base[def_owner] + 1).astype(np.uint64)
    dense = np.ones(n, bool)
    dense[def_owner[def_ids != local]] = False
    out = np.full(ref_ids.size, -1, np.int64)
    d = np.flatnonzero(dense[ref_owner])
    ids = ref_ids[d]
    ok = (ids >= 1) & (ids <= counts[ref_owner[d]].astype(np.uint64))
    out[d[ok]] = def_base[ref_owner[d[ok]]] + ids[ok].astype(np.int64) - 1
    sparse = np.flatnonzero(~dense[ref_owner])
    if sparse.size:
        keys = mix(def_owner, def_ids)
        order = np.argsort(keys)
        k = mix(ref_owner[sparse], ref_ids[sparse])
        pos = np.minimum(np.searchsorted(keys, k, sorter=order), max(keys.size - 1, 0))
        hit = keys[order[pos]] == k if keys.size else np.zeros(k.size, bool)
        out[sparse[hit]] = order[pos[hit]]
    return out
