"""What a journal record holds: one push's profiles, as decoded, with what the caller said of them.

The record must rebuild exactly the rows the acknowledged push would have had, including its
idempotency key, so it keeps the decoded profile (header, strings, columns: what the writer
normalizes) and the :class:`~service.store.normalize.Meta` it was stored under, not the request
bytes: a collector delta or a part of a split push never was bytes of its own. Pickled (numpy
columns are copied as buffers, about 60 µs for a small profile) and LZ4-compressed by pyarrow
(about 60 µs, 90 KB -> 21 KB). The first byte is the format, so a newer release can read an
older journal or say clearly that it cannot.

A record that cannot be stored after it was acknowledged (a bug, never bad input: that is refused
before the acknowledgement) is written out by :func:`reject` as the pprof file ``go tool pprof``
and ``profstore ingest`` read, beside a JSON file of its labels, time and error.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
from pathlib import Path

import pyarrow as pa

from service.pprof.decode import Envelope, resolve
from service.pprof.encode import encode
from service.store.normalize import Meta

__all__ = ["decode", "encode_record", "reject"]

FORMAT = 1
_HEAD = struct.Struct("<BQ")  # format, uncompressed size


def encode_record(parts: list[tuple[Envelope, Meta]]) -> bytes:
    """One push (all its parts) as a journal payload."""
    items = [(dataclasses.replace(env, raw=None, view=None), dataclasses.astuple(meta)) for env, meta in parts]
    raw = pickle.dumps(items, protocol=5)
    return _HEAD.pack(FORMAT, len(raw)) + pa.compress(raw, codec="lz4", asbytes=True)


def decode(payload: bytes) -> list[tuple[Envelope, Meta]]:
    fmt, size = _HEAD.unpack_from(payload)
    if fmt != FORMAT:
        raise ValueError(f"journal record format {fmt}; this release reads format {FORMAT}")
    raw = pa.decompress(payload[_HEAD.size :], decompressed_size=size, codec="lz4", asbytes=True)
    return [(env, Meta(*meta)) for env, meta in pickle.loads(raw)]


def reject(directory: Path, env: Envelope, meta: Meta, error: str) -> Path:
    """Keep a profile that could not be stored after its acknowledgement, readable by people and tools."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"{meta.ts}-{meta.group_id:016x}"
    stem.with_suffix(".pb.gz").write_bytes(encode(resolve(env)))
    about = {
        "tenant": meta.tenant,
        "labels": dict(meta.labels),
        "name": meta.name,
        "ts": meta.ts,
        "source": meta.source,
        "error": error,
    }
    stem.with_suffix(".json").write_text(json.dumps(about, indent=1) + "\n")
    return stem.with_suffix(".pb.gz")
