"""A synthetic fleet built from real corpus profiles.

Real Go profiles (CPU, heap, goroutine) are the bases; each base gets variants whose samples
are dropped or multiplied by a small integer (so content differs as it does between scrapes), and
every stored profile gets its own ``time_nanos``, appended as a protobuf field to variant bytes
that carry none (pprof refuses a time set twice), so no profile is re-encoded.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.pprof.decode import decode
from service.pprof.encode import to_message

BASES = [
    ("go119__cpu_10s.pb.gz", "process_cpu"),
    ("go119__cpu_before_regression_5s.pb.gz", "process_cpu"),
    ("go119__cpu_after_regression_5s.pb.gz", "process_cpu"),
    ("series/cpu_00.pb.gz", "process_cpu"),
    ("series/cpu_03.pb.gz", "process_cpu"),
    ("go119__heap.pb.gz", "memory"),
    ("go119__goroutine.pb.gz", "goroutine"),
]


@dataclass(frozen=True, slots=True)
class FleetProfile:
    target: int
    scrape: int
    name: str
    ts_ns: int
    data: bytes  # gzipped pprof


def varint(v: int) -> bytes:
    """A protobuf varint (negative values as their 64-bit two's complement)."""
    out = bytearray()
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def variants(corpus: Path, per_base: int, rng: np.random.Generator) -> list[tuple[str, list[bytes]]]:
    out = []
    for fname, name in BASES:
        base = decode((corpus / fname).read_bytes())
        base.time_nanos = 0  # absent on the wire, so the one appended per profile is the only one
        raws = []
        for _ in range(per_base):
            v = base.samples.values
            # An integer factor per sample keeps what real profiles keep between their types
            # (cpu = samples x period, alloc_space = alloc_objects x size) while the content varies.
            factor = rng.choice(4, size=(v.shape[0], 1), p=[0.1, 0.5, 0.3, 0.1])
            base.samples.values = (v * factor).astype(np.int64)
            raws.append(to_message(base).SerializeToString())
            base.samples.values = v
        out.append((name, raws))
    return out


def build(corpus: Path, targets: int, scrapes: int, per_base: int = 8, seed: int = 1) -> list[FleetProfile]:
    """``targets`` x ``scrapes`` profiles, 15 s apart, each target cycling through the bases."""
    rng = np.random.default_rng(seed)
    per_name = variants(corpus, per_base, rng)
    t0 = 1_780_000_000 * 10**9
    fleet = []
    for t in range(targets):
        name, raws = per_name[t % len(per_name)]
        for s in range(scrapes):
            ts = t0 + s * 15 * 10**9 + t * 10**6
            raw = raws[int(rng.integers(len(raws)))] + b"\x48" + varint(ts)  # field 9 (time_nanos), varint
            fleet.append(FleetProfile(t, s, name, ts, gzip.compress(raw, compresslevel=6, mtime=0)))
    return fleet
