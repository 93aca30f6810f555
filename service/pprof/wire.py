"""Column-wise protobuf decoding of pprof's all-varint messages, in numpy.

Samples, locations, functions and mappings (and the labels and lines nested in them) contain
only varints: field tags, lengths, packed varints and sub-messages of varints. So a run of such
messages, concatenated, is one long sequence of varints, which numpy can split and decode at
once. What stays sequential — which varint is a tag, which a length — is walked in lock-step:
every message advances one field per step, so the Python loop runs once per field position
(a handful), never once per message. This is what lets ingest run near the speed of upb's
own parse instead of paying ~1 µs per sample to touch upb objects from Python
(research/dependencies.md §3).

Anything unexpected (another wire type, a length that cuts a varint, a field repeated past
``MAX_FIELDS``) raises :class:`Unsupported`; the caller then decodes with upb, which is exact
and produces pprof's error for real corruption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Fields", "Unsupported", "expand", "scan"]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

MAX_FIELDS = 512  # field occurrences per message handled in lock-step; more goes to upb


class Unsupported(Exception):
    """The bytes are not plain varint messages; decode them another way."""


def expand(starts: I64, counts: I64) -> I64:
    """Concatenate ``range(starts[i], starts[i] + counts[i])``, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    seg = np.repeat(np.arange(counts.size), counts)
    first = np.cumsum(counts) - counts
    return np.asarray(starts[seg] + (np.arange(total) - first[seg]), np.int64)


@dataclass(slots=True)
class _Varints:
    values: U64  # decoded value of each varint
    start: I64  # first byte of each varint
    end: I64  # one past its last byte
    nbytes: int

    def at(self, byte: I64) -> I64:
        """Index of the varint starting at each byte offset (the count at the end); -1 inside a varint."""
        n = self.start.size
        i = np.searchsorted(self.start, byte)
        hit = self.start[np.minimum(i, max(n - 1, 0))] == byte if n else np.zeros(byte.size, bool)
        return np.where(byte == self.nbytes, n, np.where(hit & (i < n), i, -1))


def _varints(buf: npt.NDArray[np.uint8]) -> _Varints:
    """Split ``buf`` into varints and decode them, one pass per byte position (at most 10)."""
    n = buf.size
    last = np.flatnonzero(buf < 0x80)
    if n and (last.size == 0 or last[-1] != n - 1):
        raise Unsupported("bytes end inside a varint")
    start = np.empty(last.size, np.int64)
    if last.size:
        start[0] = 0
        start[1:] = last[:-1] + 1
    length = last - start + 1
    if length.size and int(length.max()) > 10:
        raise Unsupported("varint longer than 10 bytes")
    values = buf[start].astype(np.uint64)
    values &= np.uint64(0x7F)
    longer = np.flatnonzero(length > 1)
    k = 1
    while longer.size:
        values[longer] |= (buf[start[longer] + k] & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        k += 1
        longer = longer[length[longer] > k]
    return _Varints(values, start, last + 1, n)


@dataclass(slots=True)
class Fields:
    """Every field occurrence of every message, ordered by message then position.

    For a varint field ``[v0, v1)`` is the one varint; for a length-delimited field it is the
    varints inside it (packed values, or a sub-message's tokens) and ``[b0, b1)`` its bytes.
    """

    buf: npt.NDArray[np.uint8]
    varints: _Varints
    msg: I64
    field: I64
    wire: I64
    v0: I64
    v1: I64
    b0: I64
    b1: I64
    count: int  # number of messages

    def repeated(self, number: int) -> tuple[U64, I64]:
        """Values of a repeated scalar field (packed or not) and per-message offsets."""
        sel = self.field == number
        n = self.v1[sel] - self.v0[sel]
        values = self.varints.values[expand(self.v0[sel], n)]
        per_msg = np.bincount(self.msg[sel], weights=n, minlength=self.count).astype(np.int64)
        offsets = np.zeros(self.count + 1, np.int64)
        np.cumsum(per_msg, out=offsets[1:])
        return values, offsets

    def scalar(self, number: int, default: int = 0) -> U64:
        """A singular scalar field per message; the last occurrence wins, as protobuf says."""
        out = np.full(self.count, default, np.uint64)
        sel = np.flatnonzero((self.field == number) & (self.wire == 0))
        out[self.msg[sel]] = self.varints.values[self.v0[sel]]  # later occurrences overwrite earlier ones
        return out

    def sub(self, number: int) -> tuple[Fields, I64]:
        """The sub-messages in field ``number`` (scanned) and the parent message of each."""
        sel = np.flatnonzero((self.field == number) & (self.wire == 2))
        return _walk(self.buf, self.varints, self.b0[sel], self.b1[sel]), self.msg[sel]


def scan(blobs: list[bytes]) -> Fields:
    """Decode the field structure of ``blobs``, each one serialized all-varint message."""
    lengths = np.fromiter(map(len, blobs), np.int64, count=len(blobs))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    buf = np.frombuffer(b"".join(blobs), np.uint8)
    return _walk(buf, _varints(buf), starts, ends)


def _walk(buf: npt.NDArray[np.uint8], vs: _Varints, starts: I64, ends: I64) -> Fields:
    count = starts.size
    nv = vs.values.size
    cur = starts.copy()  # byte offset of each message's next field
    cur_v = vs.at(starts)  # and the index of the varint there
    active = np.flatnonzero(cur < ends)
    parts: list[tuple[I64, ...]] = []
    steps = 0
    while active.size:
        steps += 1
        if steps > MAX_FIELDS:
            raise Unsupported(f"more than {MAX_FIELDS} fields in one message")
        end = ends[active]
        tag_v = cur_v[active]
        if (tag_v < 0).any():
            raise Unsupported("field does not start on a varint")
        pay_v = tag_v + 1
        if (pay_v >= nv).any() or (vs.start[np.minimum(pay_v, nv - 1)] >= end).any():
            raise Unsupported("field without a value")
        tag = vs.values[tag_v]
        wire = (tag & np.uint64(7)).astype(np.int64)
        field = (tag >> np.uint64(3)).astype(np.int64)
        is2 = wire == 2
        if not np.all(is2 | (wire == 0)) or (field == 0).any():
            raise Unsupported("wire type other than varint or length-delimited")
        pay_end = vs.end[pay_v]
        length = np.where(is2, vs.values[pay_v], np.uint64(0))
        if (length > np.uint64(1 << 40)).any():
            raise Unsupported("implausible length")
        b1 = np.where(is2, pay_end + length.astype(np.int64), pay_end)
        if (b1 > end).any():
            raise Unsupported("length beyond the message")
        b0 = np.where(is2, pay_end, vs.start[pay_v])
        v1 = pay_v + 1
        sel = np.flatnonzero(is2)
        if sel.size:
            v1[sel] = vs.at(b1[sel])
        if (v1 < 0).any():
            raise Unsupported("length cuts a varint")
        v0 = np.where(is2, pay_v + 1, pay_v)
        parts.append((active, field, wire, v0, v1, b0, b1, np.full(active.size, steps - 1)))
        cur[active] = b1
        cur_v[active] = v1
        active = active[b1 < end]
    if not parts:
        z = np.zeros(0, np.int64)
        return Fields(buf, vs, z, z, z, z, z, z, z, count)
    cols = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    # Order by message, then field position: the k-th field of message m goes to first[m] + k.
    first = np.zeros(count + 1, np.int64)
    np.cumsum(np.bincount(cols[0], minlength=count), out=first[1:])
    pos = first[cols[0]] + cols[7]
    out = [np.empty_like(c) for c in cols[:7]]
    for o, c in zip(out, cols[:7], strict=True):
        o[pos] = c
    return Fields(buf, vs, out[0], out[1], out[2], out[3], out[4], out[5], out[6], count)
