"""Collapsed stacks (``a;b;c 42`` per line, root first) → the decoded columnar form, so Pyroscope's
legacy ``/ingest?format=folded`` lands through the same ingest as every profile (no pprof bytes between).

The profile type comes from the application name's suffix as Pyroscope reads it (``app.cpu``,
``app.inuse_space``, …). CPU samples become nanoseconds when a sample rate is given
(``value * 1e9 / rate``), as Pyroscope scales them, so a folded CPU profile and a pprof one of
the same program share a profile type and a unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xxhash

from service.errors import ParseError
from service.pprof.decode import Envelope
from service.pprof.decode_fast import LABEL_W, Columns
from service.pprof.model import Functions, Header, Locations, Mappings, StringTable, ValueType

__all__ = ["FOLDED_TYPES", "FoldedType", "parse_folded"]


@dataclass(frozen=True, slots=True)
class FoldedType:
    name: str
    sample_type: str
    sample_unit: str
    period_type: str
    period_unit: str


# Application-name suffix -> what a folded profile of it measures (Pyroscope's legacy names).
FOLDED_TYPES = {
    "cpu": FoldedType("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
    "itimer": FoldedType("process_cpu", "cpu", "nanoseconds", "cpu", "nanoseconds"),
    "wall": FoldedType("wall", "wall", "nanoseconds", "wall", "nanoseconds"),
    "alloc_objects": FoldedType("memory", "alloc_objects", "count", "space", "bytes"),
    "alloc_space": FoldedType("memory", "alloc_space", "bytes", "space", "bytes"),
    "inuse_objects": FoldedType("memory", "inuse_objects", "count", "space", "bytes"),
    "inuse_space": FoldedType("memory", "inuse_space", "bytes", "space", "bytes"),
    "goroutines": FoldedType("goroutine", "goroutine", "count", "goroutine", "count"),
    "mutex_count": FoldedType("mutex", "contentions", "count", "contentions", "count"),
    "mutex_duration": FoldedType("mutex", "delay", "nanoseconds", "contentions", "count"),
    "block_count": FoldedType("block", "contentions", "count", "contentions", "count"),
    "block_duration": FoldedType("block", "delay", "nanoseconds", "contentions", "count"),
}
SAMPLES = FoldedType("process_cpu", "samples", "count", "cpu", "nanoseconds")
MAX_LINES = 1_000_000


def parse_folded(text: bytes, kind: FoldedType, *, sample_rate: int, time_nanos: int, duration_nanos: int) -> Envelope:
    """The profile of the collapsed stacks in ``text``; equal stacks are summed, as pprof merges them."""
    scale = 1
    if kind.sample_type in ("cpu", "wall"):
        if sample_rate <= 0:
            kind = SAMPLES if kind.sample_type == "cpu" else kind
        else:
            scale = 10**9 // sample_rate
    stacks: dict[tuple[str, ...], int] = {}
    lines = text.decode("utf-8", "replace").splitlines()
    if len(lines) > MAX_LINES:
        raise ParseError(f"folded profile has {len(lines)} lines; the limit is {MAX_LINES}")
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        stack, _, value = line.rpartition(" ")
        try:
            v = int(value)
        except ValueError:
            raise ParseError(f"folded line {n}: want 'frame;frame;... <integer>', got {line[:80]!r}") from None
        frames = tuple(f for f in stack.split(";") if f)
        if not frames or v < 0:
            raise ParseError(f"folded line {n}: want 'frame;frame;... <integer>', got {line[:80]!r}")
        stacks[frames] = stacks.get(frames, 0) + v
    if not stacks:
        raise ParseError("folded profile has no stacks")
    # One function and one location per distinct frame name, both numbered by first use: the
    # name of id i is strings[i]. Valid by construction, so built as columns straight away.
    ids: dict[str, int] = {}
    location_ids = [ids.setdefault(name, len(ids) + 1) for frames in stacks for name in reversed(frames)]  # leaf first
    n = len(ids)
    fid = np.arange(1, n + 1, dtype=np.uint64)
    zeros, none = np.zeros(n, np.int64), np.zeros(n, np.uint64)
    columns = Columns.of(
        depths=np.array([len(frames) for frames in stacks], np.int64),
        location_ids=np.array(location_ids, np.uint64),
        values=np.array([v * scale for v in stacks.values()], np.int64).reshape(-1, 1),
        labels=np.zeros((0, LABEL_W), np.int64),
        mappings=Mappings.of([], StringTable()),
        functions=Functions(fid, fid.astype(np.int64), zeros, zeros, zeros),
        locations=Locations(fid, none, none, np.zeros(n, bool), np.arange(n + 1, dtype=np.int64), fid, zeros, zeros),
    )
    header = Header(
        sample_types=(ValueType(kind.sample_type, kind.sample_unit),),
        period_type=ValueType(kind.period_type, kind.period_unit),
        period=scale if scale > 1 else 1,
        time_nanos=time_nanos,
        duration_nanos=duration_nanos,
    )
    h = xxhash.xxh3_64(text)
    h.update(repr((kind, scale, time_nanos, duration_nanos)).encode())
    return Envelope(header, ["", *ids], columns, h.intdigest(), len(text))
