"""Content-hash ids as DuckDB wants them, and the writer's memory of which are already stored.

Ids that repeat in fact tables travel as 8-byte BLOBs (DuckDB dictionary-compresses those);
the conversions to and from numpy ``uint64`` are zero-copy views.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["KnownIds", "blob_ids", "ids_of_blobs"]

U64 = npt.NDArray[np.uint64]
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

    Only the writer adds, after a commit; a miss costs an anti-join, never correctness. Bounded:
    past ``limit`` ids per kind the memory is dropped and rebuilt from new traffic.
    """

    def __init__(self, limit: int = 500_000) -> None:
        self._sets: dict[str, set[int]] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def unknown(self, kind: str, ids: U64) -> npt.NDArray[np.bool_]:
        known = self._sets.get(kind)
        if not known:
            return np.ones(ids.size, bool)
        return np.fromiter((i not in known for i in ids.tolist()), bool, count=ids.size)

    def add(self, kind: str, ids: U64) -> None:
        with self._lock:
            s = self._sets.setdefault(kind, set())
            if len(s) + ids.size > self._limit:
                s.clear()
            s.update(ids.tolist())
