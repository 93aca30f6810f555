"""pprof's ``CheckValid`` rules on the resolved model, with pprof's messages.

We are as strict as ``go tool pprof`` and no stricter: a profile pprof opens must be
storable, one it refuses must be refused with a message that names the entity and id.
One deliberate leniency matches pprof: a location whose ``mapping_id`` names no mapping is
treated as unmapped (pprof decodes it to a nil mapping and carries on).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from service.errors import MalformedProfile
from service.pprof.model import Profile

__all__ = ["check_valid"]


def _ids(kind: str, ids: Iterable[int], zero_word: str) -> set[int]:
    seen: set[int] = set()
    for i in ids:
        if i == 0:
            raise MalformedProfile(f"found {kind} with reserved {zero_word}=0")
        if i in seen:
            raise MalformedProfile(f"multiple {kind}s with same id: {i}")
        seen.add(i)
    return seen


def check_valid(p: Profile) -> None:
    n_types = len(p.sample_types)
    if len(p.samples) and n_types == 0:
        raise MalformedProfile("missing sample type information")
    if p.samples.values.shape[1] != n_types:
        raise MalformedProfile(f"mismatch: sample has {p.samples.values.shape[1]} values vs. {n_types} types")
    _ids("mapping", (m.id for m in p.mappings), "ID")
    functions = _ids("function", (f.id for f in p.functions), "ID")
    locations = _ids("location", (loc.id for loc in p.locations), "id")
    for loc in p.locations:
        for ln in loc.lines:
            if ln.function_id not in functions:
                raise MalformedProfile(
                    f"location id: {loc.id} has a line with nil function (function id {ln.function_id} not found)"
                )
    used = np.unique(p.samples.location_ids)
    if used.size:
        known = np.fromiter(locations, np.uint64, count=len(locations))
        missing = used[~np.isin(used, known)]
        if missing.size:
            raise MalformedProfile(f"sample has nil location (location id {int(missing[0])} not found)")
