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
from service.pprof.model import Profile

__all__ = ["check_valid"]


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
