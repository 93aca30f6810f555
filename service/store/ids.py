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

__all__ = ["KnownIds", "RecentGroups", "blob_ids", "ids_of_blobs"]

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


class RecentGroups:
    """The idempotency keys the writer committed above a time watermark: there, stored is exactly known.

    The writer must answer every profile "stored before?" (a retry or a second replica pushing
    the same bytes is a duplicate). Asking the file costs a query per batch, the largest fixed
    cost of a one-profile transaction. But no stored profile is newer than the newest one the file
    held when this memory was (re)built (the ``watermark``), and every profile committed since
    went through the writer: above the watermark a key is stored exactly when it is in this
    memory. Profiles at or below it (a backfill, a late push) are still looked up in the file.

    The writer rebuilds it (:meth:`reset`) after anything else wrote or deleted (a task:
    compaction, retention, a deletion; a reopen). Bounded: past ``limit`` keys, the older half is
    dropped and the watermark moves up to them.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self._limit = limit
        self._ts: dict[int, int] = {}  # group_id -> its profile's time
        self.watermark: int | None = None  # None: not built; every profile is looked up

    def reset(self, watermark: int | None) -> None:
        """Start again above ``watermark`` (the newest stored profile time; None: look everything up)."""
        self._ts = {}
        self.watermark = watermark

    def covers(self, ts: int) -> bool:
        return self.watermark is not None and ts > self.watermark

    def stored(self, group: int) -> bool:
        """Whether ``group`` is stored, for a profile whose time this memory :meth:`covers`."""
        return group in self._ts

    def add(self, group: int, ts: int) -> None:
        """Note a committed profile (those at or below the watermark are looked up anyway)."""
        if not self.covers(ts):
            return
        self._ts[group] = ts
        if len(self._ts) > self._limit:
            cut = int(np.median(np.fromiter(self._ts.values(), np.int64, len(self._ts))))
            self._ts = {g: t for g, t in self._ts.items() if t > cut}
            self.watermark = cut
