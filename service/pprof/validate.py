"""pprof's ``CheckValid`` rules on decoded columns: whether (:func:`valid`, compiled) and which, worded (:func:`check_valid`).

We are as strict as ``go tool pprof`` and no stricter: a profile pprof opens must be storable,
one it refuses must be refused with a message that names the entity and id. One deliberate
leniency matches pprof: a location whose ``mapping_id`` names no mapping is treated as
unmapped (pprof decodes it to a nil mapping and carries on).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.errors import MalformedProfile
from service.jit import jit
from service.pprof.decode_fast import Columns, numbered_in_order

__all__ = ["check_valid", "valid"]


def _ids(kind: str, ids: npt.NDArray[np.uint64], zero_word: str) -> npt.NDArray[np.uint64]:
    """The sorted ids, after checking that none is 0 and none repeats."""
    if (ids == 0).any():
        raise MalformedProfile(f"found {kind} with reserved {zero_word}=0")
    s = np.sort(ids)
    dup = np.flatnonzero(s[1:] == s[:-1])
    if dup.size:
        raise MalformedProfile(f"multiple {kind}s with same id: {int(s[dup[0]])}")
    return s


def check_valid(c: Columns, n_types: int) -> None:
    """Raise pprof's message for the first rule one profile's decoded columns break (the error path)."""
    if c.sample_locations.size and n_types == 0:
        raise MalformedProfile("missing sample type information")
    bad = np.flatnonzero(c.sample_values != n_types)
    if bad.size:
        raise MalformedProfile(f"mismatch: sample has {int(c.sample_values[bad[0]])} values vs. {n_types} types")
    mappings, functions_, locations_ = c.parts()
    _ids("mapping", mappings.id, "ID")
    functions = _ids("function", functions_.id, "ID")
    locations = _ids("location", locations_.id, "id")
    fn = locations_.line_function_id
    unknown = np.flatnonzero(~np.isin(fn, functions))
    if unknown.size:
        owner = int(np.searchsorted(locations_.line_offsets, unknown[0], side="right") - 1)
        raise MalformedProfile(
            f"location id: {int(locations_.id[owner])} has a line with nil function "
            f"(function id {int(fn[unknown[0]])} not found)"
        )
    used = np.unique(c.location_ids)
    missing = used[~np.isin(used, locations)]
    if missing.size:
        raise MalformedProfile(f"sample has nil location (location id {int(missing[0])} not found)")


def valid(c: Columns, n_types: int, n_strings: int) -> bool:
    """Whether one profile's decoded columns keep every rule (the one validator of the ingest path).

    Only *whether*: a profile that breaks a rule is decoded again by the exact decoder, which
    raises the message (:func:`check_valid`), so each rule is worded in one place. Compiled, and
    run per profile in the thread that decoded it.
    """
    return bool(
        _valid(
            c.sample_values,
            n_types,
            n_strings,
            c.mappings,
            c.functions,
            c.labels,
            c.locations,
            c.sample_location,
            c.line_function,
        )
    )


@jit
def _ids_ok(ids):  # type: ignore[no-untyped-def]
    if numbered_in_order(ids):
        return True
    n = ids.size
    s = np.sort(ids)
    for i in range(n):  # noqa: SIM110 (numba compiles loops, not generator expressions)
        if s[i] == 0 or (i > 0 and s[i] == s[i - 1]):
            return False
    return True


@jit
def _valid(value_counts, n_types, n_strings, mappings, functions, labels, locations, sample_location, line_function):  # type: ignore[no-untyped-def]
    for i in range(value_counts.size):
        if value_counts[i] != n_types:
            return False
    for i in range(mappings.shape[0]):
        for k in (4, 5):
            if mappings[i, k] < 0 or mappings[i, k] >= n_strings:
                return False
    for i in range(functions.shape[0]):
        for k in (1, 2, 3):
            if functions[i, k] < 0 or functions[i, k] >= n_strings:
                return False
    for i in range(labels.shape[0]):
        for k in (1, 2, 4):
            if labels[i, k] < 0 or labels[i, k] >= n_strings:
                return False
    if not (_ids_ok(mappings[:, 0]) and _ids_ok(functions[:, 0]) and _ids_ok(locations[:, 0])):
        return False
    for i in range(line_function.size):
        if line_function[i] < 0:
            return False
    for i in range(sample_location.size):  # noqa: SIM110 (numba compiles loops, not generator expressions)
        if sample_location[i] < 0:
            return False
    return True
