"""pprof's ``CheckValid`` rules on the resolved model, with pprof's messages.

We are as strict as ``go tool pprof`` and no stricter: a profile pprof opens must be storable,
one it refuses must be refused with a message that names the entity and id. One deliberate
leniency matches pprof: a location whose ``mapping_id`` names no mapping is treated as
unmapped (pprof decodes it to a nil mapping and carries on).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.errors import MalformedProfile
from service.pprof.batch import ProfileBatch, Resolved
from service.pprof.hashing import mix
from service.pprof.model import Profile

__all__ = ["check_valid", "invalid_profiles"]


def _ids(kind: str, ids: npt.NDArray[np.uint64], zero_word: str) -> npt.NDArray[np.uint64]:
    """The sorted ids, after checking that none is 0 and none repeats."""
    if (ids == 0).any():
        raise MalformedProfile(f"found {kind} with reserved {zero_word}=0")
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        raise MalformedProfile(f"multiple {kind}s with same id: {int(s[dup[0]])}")
    return s


def check_valid(p: Profile) -> None:
    n_types = len(p.sample_types)
    if len(p.samples) and n_types == 0:
        raise MalformedProfile("missing sample type information")
    if p.samples.values.shape[1] != n_types:
        raise MalformedProfile(f"mismatch: sample has {p.samples.values.shape[1]} values vs. {n_types} types")
    _ids("mapping", p.mappings.id, "ID")
    functions = _ids("function", p.functions.id, "ID")
    locations = _ids("location", p.locations.id, "id")
    fn = p.locations.line_function_id
    unknown = np.flatnonzero(~np.isin(fn, functions))
    if unknown.size:
        owner = int(np.searchsorted(p.locations.line_offsets, unknown[0], side="right") - 1)
        raise MalformedProfile(
            f"location id: {int(p.locations.id[owner])} has a line with nil function "
            f"(function id {int(fn[unknown[0]])} not found)"
        )
    used = np.unique(p.samples.location_ids)
    missing = used[~np.isin(used, locations)]
    if missing.size:
        raise MalformedProfile(f"sample has nil location (location id {int(missing[0])} not found)")


def invalid_profiles(b: ProfileBatch, r: Resolved) -> list[int]:
    """Which profiles of a decoded batch break a rule, found column-wise for the whole batch.

    Only *which*: the exact message comes from decoding that one profile alone, so the rules'
    wording lives in one place (the exact decoder and :func:`check_valid`).
    """
    n = len(b)
    bad = np.zeros(n, bool)
    if n == 0:
        return []

    def owners(base: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return np.repeat(np.arange(n), np.diff(base))

    s_owner, m_owner, f_owner, l_owner = (
        owners(x) for x in (b.sample_base, b.mapping_base, b.function_base, b.location_base)
    )
    bad[s_owner[b.value_counts != b.num_types()[s_owner]]] = True

    def codes(c: npt.NDArray[np.int64], owner: npt.NDArray[np.int64]) -> None:
        bad[owner[(c < b.string_base[owner]) | (c >= b.string_base[owner + 1])]] = True

    for col in (b.mappings.filename, b.mappings.build_id):
        codes(col, m_owner)
    for col in (b.functions.name, b.functions.system_name, b.functions.filename):
        codes(col, f_owner)
    label_owner = s_owner[b.label_owner]
    codes(b.label_key, label_owner)
    codes(b.label_unit, label_owner)
    has_str = b.label_str != 0
    codes(b.label_str[has_str], label_owner[has_str])

    def unique_nonzero(owner: npt.NDArray[np.int64], ids: npt.NDArray[np.uint64], base: npt.NDArray[np.int64]) -> None:
        local = (np.arange(ids.size) - base[owner] + 1).astype(np.uint64)
        irregular = np.unique(owner[ids != local])  # profiles not numbered 1..n: check them the long way
        if irregular.size == 0:
            return
        sel = np.isin(owner, irregular)
        o, i = owner[sel], ids[sel]
        bad[o[i == 0]] = True
        k = mix(o, i)
        order = np.argsort(k)
        bad[o[order[np.flatnonzero(k[order][1:] == k[order][:-1])]]] = True

    unique_nonzero(m_owner, b.mappings.id, b.mapping_base)
    unique_nonzero(f_owner, b.functions.id, b.function_base)
    unique_nonzero(l_owner, b.locations.id, b.location_base)
    line_owner = np.repeat(l_owner, np.diff(b.locations.line_offsets))
    bad[line_owner[r.line_function < 0]] = True
    elem_owner = np.repeat(s_owner, np.diff(b.offsets))
    bad[elem_owner[r.sample_location < 0]] = True
    return np.flatnonzero(bad).tolist()
