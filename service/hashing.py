"""64-bit content hashes, shared by decoding (dedupe inside a profile) and storage (ids).

Ids are hashes of content, never sequences: ingest is idempotent and two writers on two
machines (the DuckLake path) agree on every id without talking. Strings are hashed with xxh3,
once per profile; everything built from them and from numbers (functions, mappings,
locations, stacks, label sets) is combined column-wise in numpy with MurmurHash3's 64-bit
finalizer — position-dependent for sequences (a stack), order-independent for sets (labels).
Rare one-off keys (series, profile groups) hash a canonical text with xxh3.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import xxhash

__all__ = ["combine", "fmix64", "hash_fields", "hash_strings", "mix", "segment_hashes", "set_hashes"]

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
    x = np.asarray(x, np.uint64)
    x = x ^ (x >> np.uint64(33))
    x = x * _K1
    x = x ^ (x >> np.uint64(33))
    x = x * _K2
    return x ^ (x >> np.uint64(33))


def combine(a: U64, b: U64) -> U64:
    """Order-dependent combination of two id columns."""
    with np.errstate(over="ignore"):
        return fmix64(a ^ fmix64(b + _GOLDEN))


def mix(*columns: npt.ArrayLike) -> U64:
    """Order-dependent hash of several numeric columns, row by row."""
    cols = [np.asarray(c).astype(np.uint64, copy=False) for c in columns]
    h = np.full(cols[0].shape, 0x243F6A8885A308D3, np.uint64)
    for c in cols:
        h = combine(h, c)
    return h


def hash_strings(strings: list[bytes] | list[str]) -> U64:
    """xxh3-64 of each string's UTF-8 bytes: the content hash string columns are keyed by."""
    enc = [s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s for s in strings]
    return np.fromiter(map(xxhash.xxh3_64_intdigest, enc), np.uint64, count=len(enc))


def set_hashes(element_hashes: U64, owner: npt.NDArray[np.int64], owners: int) -> U64:
    """Order-independent hash of each owner's elements (a label set is a set, not a list)."""
    with np.errstate(over="ignore"):
        sums = np.zeros(owners, np.uint64)
        np.add.at(sums, owner, fmix64(element_hashes))
        counts = np.bincount(owner, minlength=owners).astype(np.uint64)
        return np.where(counts > 0, fmix64(sums ^ fmix64(counts)), np.uint64(0))


def segment_hashes(element_hashes: U64, offsets: npt.NDArray[np.int64]) -> U64:
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
