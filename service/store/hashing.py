"""64-bit content ids.

Ids are hashes of a canonical encoding, never sequences: ingest is idempotent and two writers
on two machines (the DuckLake path) agree on every id without talking. Entities with few rows
per profile (functions, locations, mappings, label sets, series) hash a canonical byte string
with xxh3; stacks — one per sample — are hashed in numpy from their location ids, with a
position-dependent mix so that order matters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import xxhash

__all__ = ["combine", "fmix64", "hash_fields", "stack_hashes"]

U64 = npt.NDArray[np.uint64]
_SEP = b"\x1f"
_K1 = np.uint64(0xFF51AFD7ED558CCD)
_K2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def hash_fields(*fields: object) -> int:
    """xxh3-64 of the fields joined by a separator that cannot occur in their text forms' roles."""
    h = xxhash.xxh3_64()
    for f in fields:
        h.update(str(f).encode("utf-8", "surrogatepass"))
        h.update(_SEP)
    return h.intdigest()


def fmix64(x: U64) -> U64:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads every input bit over the output."""
    x = x ^ (x >> np.uint64(33))
    x = x * _K1
    x = x ^ (x >> np.uint64(33))
    x = x * _K2
    return x ^ (x >> np.uint64(33))


def combine(a: U64, b: U64) -> U64:
    """Order-dependent combination of two id columns."""
    return fmix64(a ^ fmix64(b + _GOLDEN))


def stack_hashes(element_hashes: U64, offsets: npt.NDArray[np.int64]) -> U64:
    """Hash each segment ``element_hashes[offsets[i]:offsets[i+1]]`` into one id.

    Each element is mixed with its position, the mixed values are summed with wrap-around
    (a prefix sum, so empty segments work), and the sum is finalized together with the length.
    """
    depth = np.diff(offsets).astype(np.uint64)
    with np.errstate(over="ignore"):
        pos = (np.arange(element_hashes.size, dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))).astype(
            np.uint64
        )
        mixed = fmix64(element_hashes ^ ((pos + np.uint64(1)) * _GOLDEN))
        prefix = np.zeros(element_hashes.size + 1, np.uint64)
        np.cumsum(mixed, out=prefix[1:])
        sums = prefix[offsets[1:]] - prefix[offsets[:-1]]
        return fmix64(sums ^ fmix64(depth + np.uint64(1)))
