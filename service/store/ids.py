"""Content-hash ids as DuckDB wants them, and the writer's memory of which are already stored.

Ids that repeat in fact tables travel as 8-byte BLOBs (DuckDB dictionary-compresses those);
the conversions to and from numpy ``uint64`` are zero-copy views.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.types import U64

__all__ = ["KnownIds", "blob_ids", "ids_of_blobs"]

BLOB8 = pa.binary(8)


def blob_ids(ids: U64) -> pa.FixedSizeBinaryArray:
    ids = np.ascontiguousarray(ids, dtype=np.uint64)
    return pa.FixedSizeBinaryArray.from_buffers(BLOB8, ids.size, [None, pa.py_buffer(ids.view(np.uint8))])


def ids_of_blobs(arr: pa.Array | pa.ChunkedArray) -> U64:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], BLOB8)
    if len(arr) == 0:
        return np.zeros(0, np.uint64)
    fixed = arr.cast(BLOB8)
    return np.frombuffer(fixed.buffers()[1], np.uint64, count=len(fixed), offset=fixed.offset * 8).copy()


class KnownIds:
    """Ids of symbols and stacks known to be committed, so a fleet's repeated symbols are not re-sent.

    Ingest threads ask (:meth:`unknown`) while the writer adds after each commit, so each kind is
    an immutable sorted array that :meth:`add` replaces whole: a reader holds one consistent
    snapshot without a lock, and the lookup is a binary search that runs without the GIL. A miss
    costs an anti-join in the writer, never correctness. Bounded: past ``limit`` ids of a kind
    the memory is dropped and rebuilt from new traffic.
    """

    def __init__(self, limit: int = 500_000) -> None:
        self._arrays: dict[str, U64] = {}
        self._limit = limit
        self._lock = threading.Lock()  # one adder at a time; readers need none
        # Bumped by clear(): rows staged against an older generation may omit ids deleted since.
        self.generation = 0

    def unknown(self, kind: str, ids: U64) -> npt.NDArray[np.bool_]:
        known = self._arrays.get(kind)
        if known is None or known.size == 0 or ids.size == 0:
            return np.ones(ids.size, bool)
        at = np.minimum(np.searchsorted(known, ids), known.size - 1)
        return known[at] != ids

    def clear(self) -> None:
        """Forget everything: retention deleted rows, so "known to be committed" no longer holds."""
        with self._lock:
            self._arrays = {}
            self.generation += 1

    def add(self, kind: str, ids: U64) -> None:
        if ids.size == 0 or self._limit <= 0:
            return
        with self._lock:
            known = self._arrays.get(kind, np.zeros(0, np.uint64))
            new = np.unique(np.asarray(ids, np.uint64))
            new = new[self.unknown(kind, new)]
            if known.size + new.size > self._limit:
                known = np.zeros(0, np.uint64)
            self._arrays[kind] = np.insert(known, np.searchsorted(known, new), new)
