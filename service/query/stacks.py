"""The merged stacks of a query, with frames named as ``go tool pprof`` names its nodes.

Top tables, flame graphs and diffs all start here: the stored samples of the selected series in
a range, summed per stack (or averaged per series for gauges, see :class:`Aggregation`), and
each stack's frames as codes into one list of names, leaf first. Names follow pprof's default
``functions`` granularity: a symbolized frame is its function name (inlined functions are
frames of their own); an unsymbolized one is ``[binary]`` after its mapping's file, or
``<unknown>`` without one. pprof's ``focus``/``ignore``/``hide`` filters work on these names.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.pprof.batch import expand
from service.pprof.model import offsets_of
from service.query.aggregation import Aggregation
from service.query.export import flat_lists
from service.query.plan import Plan
from service.query.regex import compile_regex
from service.query.source import ProfileSource
from service.store.ids import ids_of_blobs
from service.types import I64, TimeRange

__all__ = ["StackNames", "StackSet", "load_stacks", "merge_stacks", "under_roots"]


@dataclass(frozen=True, slots=True)
class StackSet:
    """Stacks as frames, leaf first, with one value each.

    A frame is one line of a location (inlined functions are lines of their own); frames of
    one location in one stack share an ``inst`` number, the last of them being the location's
    outermost line. Names and file names are codes into ``names``; ``loc_file`` is the mapping
    file of each frame's location (pprof's filters match it too).
    """

    names: list[str]
    named: npt.NDArray[np.bool_]  # per name code: a function's name (not a binary's or a file's)
    offsets: I64  # (stacks + 1)
    frames: I64  # name codes
    files: I64  # function file name codes (-1: none)
    loc_file: I64  # mapping file name codes (-1: none)
    inst: I64  # per frame: which location of its stack it belongs to
    values: I64

    @property
    def depth(self) -> I64:
        return np.diff(self.offsets)

    @property
    def total(self) -> int:
        return int(self.values.sum())

    def owners(self) -> I64:
        """The stack of each frame."""
        return np.repeat(np.arange(self.values.size), self.depth)

    def outermost(self) -> npt.NDArray[np.bool_]:
        """Per frame: is it the last (outermost) line of its location? The others were inlined into it."""
        last = np.ones(self.frames.size, bool)
        if self.frames.size > 1:
            last[:-1] = self.inst[:-1] != self.inst[1:]
        return last

    def filter(self, focus: str | None = None, ignore: str | None = None, hide: str | None = None) -> StackSet:
        """pprof's ``FilterSamplesByName``: a location matches when one of its lines' function name or file
        name, or its mapping's file, matches. Stacks with no focused location or with an ignored one are
        dropped; hidden lines are removed, then locations left without lines, then stacks left empty."""
        out = self
        keep = np.ones(self.values.size, bool)
        if focus:
            keep &= out._any_location(_matcher(focus, "focus"))
        if ignore:
            keep &= ~out._any_location(_matcher(ignore, "ignore"))
        if not keep.all():
            out = out._keep(keep)
        if hide:
            m = _matcher(hide, "hide")
            hidden = (
                (m(out.names) & out.named)[out.frames]
                | _hits(m, out.names, out.files)
                | _hits(m, out.names, out.loc_file)
            )
            depth = np.bincount(out.owners()[~hidden], minlength=out.values.size)
            kept = ~hidden
            out = StackSet(
                out.names, out.named, offsets_of(depth), out.frames[kept], out.files[kept], out.loc_file[kept], out.inst[kept], out.values
            )  # fmt: skip
            out = out._keep(depth > 0)
        return out

    def under_call_site(self, path: list[str]) -> StackSet:
        """Stacks that begin, root first, with the frames ``path`` (Pyroscope's ``StackTraceSelector``
        call site): the flame graph of what runs below that call path."""
        keep = self.depth >= len(path)
        names = np.array(self.names, dtype=object)
        for i, name in enumerate(path):
            pos = np.where(keep, self.offsets[1:] - 1 - i, 0)
            keep &= (names[self.frames[pos]] == name) if self.frames.size else False
        return self._keep(keep)

    def _any_location(self, m: _Match) -> npt.NDArray[np.bool_]:
        hit = (
            (m(self.names) & self.named)[self.frames]
            | _hits(m, self.names, self.files)
            | _hits(m, self.names, self.loc_file)
        )
        return np.bincount(self.owners(), weights=hit, minlength=self.values.size) > 0

    def take(self, rows: I64, values: I64) -> StackSet:
        """Stacks ``rows`` (in that order, each once) with new values: a merge of stacks named before."""
        depth = self.depth[rows]
        at = expand(self.offsets[:-1][rows], depth)
        return StackSet(
            self.names, self.named, offsets_of(depth), self.frames[at], self.files[at], self.loc_file[at], self.inst[at], values
        )  # fmt: skip

    def _keep(self, sel: npt.NDArray[np.bool_]) -> StackSet:
        depth = self.depth[sel]
        at = expand(self.offsets[:-1][sel], depth)
        return StackSet(
            self.names, self.named, offsets_of(depth), self.frames[at], self.files[at], self.loc_file[at], self.inst[at], self.values[sel]
        )  # fmt: skip


_EMPTY = StackSet([], np.zeros(0, bool), np.zeros(1, np.int64), *(np.zeros(0, np.int64) for _ in range(5)))


def under_roots(groups: list[tuple[list[str], StackSet]]) -> StackSet:
    """Several stack sets as one, each stack under its group's frames, outermost first (pprof's ``-tagroot``).

    A flame graph grouped by ``service_name`` then starts with one ``service_name=…`` node per
    service, each holding that service's own tree, and the totals still add up.
    """
    names: list[str] = []
    code: dict[str, int] = {}
    named: list[bool] = []

    def intern(name: str, is_function: bool) -> int:
        c = code.get(name)
        if c is None:
            c = code[name] = len(names)
            names.append(name)
            named.append(is_function)
        return c

    parts: list[tuple[I64, ...]] = []
    depths: list[I64] = []
    values: list[I64] = []
    inst_base = 0
    for roots, s in groups:
        remap = np.array([intern(n, bool(f)) for n, f in zip(s.names, s.named, strict=True)] + [-1], np.int64)
        root_codes = np.array([intern(r, False) for r in reversed(roots)], np.int64)  # leaf first: outermost last
        n_st, k = s.values.size, root_codes.size
        # Each stack's own frames, then its group's; positions in the combined frame arrays.
        new_off = offsets_of(s.depth + k)
        own = expand(new_off[:-1], s.depth)
        tail = expand(new_off[:-1] + s.depth, np.full(n_st, k, np.int64))
        size = int(new_off[-1])
        frames = np.empty(size, np.int64)
        files = np.full(size, -1, np.int64)
        loc_file = np.full(size, -1, np.int64)
        inst = np.empty(size, np.int64)
        frames[own], files[own], loc_file[own] = remap[s.frames], remap[s.files], remap[s.loc_file]
        frames[tail] = np.tile(root_codes, n_st)
        inst_own = s.inst + inst_base
        inst[own] = inst_own
        top = int(inst_own.max()) + 1 if inst_own.size else inst_base
        inst[tail] = top + np.arange(n_st * k)  # a root frame is a location of its own
        inst_base = top + n_st * k
        parts.append((frames, files, loc_file, inst))
        depths.append(s.depth + k)
        values.append(s.values)

    def cat(i: int) -> I64:
        return np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64)

    depth = np.concatenate(depths) if depths else np.zeros(0, np.int64)
    value = np.concatenate(values) if values else np.zeros(0, np.int64)
    return StackSet(names, np.array(named, bool), offsets_of(depth), cat(0), cat(1), cat(2), cat(3), value)


class _Match:
    """A regex evaluated once per distinct name."""

    def __init__(self, rx: Any) -> None:
        self._rx = rx

    def __call__(self, names: list[str]) -> npt.NDArray[np.bool_]:
        return np.fromiter((self._rx.search(n) is not None for n in names), bool, count=len(names))


def _matcher(pattern: str, what: str) -> _Match:
    return _Match(compile_regex(pattern, f"invalid {what} regex {pattern[:200]!r}"))


def _hits(m: _Match, names: list[str], codes: I64) -> npt.NDArray[np.bool_]:
    """Per frame: does the (optional, -1 for none) name behind ``codes`` match?"""
    if codes.size == 0:
        return np.zeros(0, bool)
    match = np.append(m(names), False)  # code -1 reads the appended False
    return match[codes]


def merge_stacks(
    src: ProfileSource, series_ids: list[int], tr: TimeRange, aggregation: Aggregation, p: Plan
) -> pa.Table:
    """``stack_id, value``: the stacks of ``series_ids`` in ``tr`` combined as ``aggregation`` says, read as ``p`` plans."""
    return src.merged_stacks(series_ids, tr, aggregation.value, p.parts())


class StackNames:
    """The named frames of every stack queries have met, by stack id, shared by all requests.

    Naming a merge's stacks takes lookups of stacks, locations, functions and mappings that cost
    1 to 4 ms each whatever their size: a third of a one-hour query. Ids are content hashes, so a
    stack id names the same frames forever and a cached naming never goes stale; the cache only
    has to stay bounded, and starts over when it would pass ``max_frames``.
    """

    def __init__(self, max_frames: int = 4_000_000) -> None:
        self._max = max_frames
        self._lock = threading.Lock()
        # One immutable snapshot, replaced whole: sorted ids, each id's row in the set, the set.
        self._snap: tuple[npt.NDArray[np.uint64], I64, StackSet] = (
            np.zeros(0, np.uint64),
            np.zeros(0, np.int64),
            _EMPTY,
        )

    def name(self, src: ProfileSource, merged: pa.Table) -> StackSet:
        """The stacks of ``merged`` with their frames, row for row, values rounded to whole units
        (stacks whose value rounds to 0 are left out)."""
        ids = ids_of_blobs(merged["stack_id"])
        values = np.rint(merged["value"].to_numpy()).astype(np.int64)
        snap = self._snap  # immutable: one consistent view, whatever other requests do meanwhile
        rows = _rows_of(snap[0], snap[1], ids)
        if (rows < 0).any():
            fresh = _named(src, merged.filter(pa.array(rows < 0)))
            with self._lock:
                snap = self._snap = _extended(self._snap, ids[rows < 0], fresh, self._max)
            rows = _rows_of(snap[0], snap[1], ids)
            if (rows < 0).any():  # the cache started over without some of these stacks: name them all here
                return _nonzero(_named(src, merged))
        return _nonzero(_compact(snap[2].take(rows, values)))


def _compact(s: StackSet) -> StackSet:
    """``s`` with only the names its frames use: what comes after (filters, top, diff) walks the
    names list in Python, and the cache's list holds every name any query has met."""
    codes = np.concatenate([s.frames, s.files, s.loc_file])
    used = np.unique(codes[codes >= 0])
    remap = np.full(len(s.names) + 1, -1, np.int64)  # the extra last slot keeps code -1 at -1
    remap[used] = np.arange(used.size)
    names = [s.names[i] for i in used.tolist()]
    return StackSet(
        names, s.named[used], s.offsets, remap[s.frames], remap[s.files], remap[s.loc_file], s.inst, s.values
    )


def _rows_of(known: npt.NDArray[np.uint64], rows: I64, ids: npt.NDArray[np.uint64]) -> I64:
    """Row of each id in a snapshot, -1 when it is not there."""
    at = np.minimum(np.searchsorted(known, ids), max(known.size - 1, 0))
    found = (known[at] == ids) if known.size else np.zeros(ids.size, bool)
    return np.where(found, rows[at] if known.size else -1, -1)


def _extended(
    snap: tuple[npt.NDArray[np.uint64], I64, StackSet], ids: npt.NDArray[np.uint64], fresh: StackSet, max_frames: int
) -> tuple[npt.NDArray[np.uint64], I64, StackSet]:
    """The snapshot with ``fresh`` (the stacks ``ids``) added; a concurrent request may have added some already."""
    known, rows, cached = snap
    if cached.frames.size + fresh.frames.size > max_frames:
        known, rows, cached = np.zeros(0, np.uint64), np.zeros(0, np.int64), _EMPTY
    new = _rows_of(known, rows, ids) < 0
    fresh = fresh._keep(new)
    merged = _concat(cached, fresh)
    all_ids = np.concatenate([known, ids[new]])
    all_rows = np.concatenate([rows, cached.values.size + np.arange(fresh.values.size)])
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], all_rows[order], merged


def _concat(a: StackSet, b: StackSet) -> StackSet:
    """``b``'s stacks after ``a``'s, in ``a``'s names (extended by ``b``'s new ones); values are dropped."""
    names = list(a.names)
    code = {n: i for i, n in enumerate(names)}
    named = list(a.named.tolist())
    remap = np.empty(len(b.names) + 1, np.int64)
    remap[-1] = -1  # code -1 (no file) stays -1
    for i, (n, f) in enumerate(zip(b.names, b.named.tolist(), strict=True)):
        c = code.get(n)
        if c is None:
            c = code[n] = len(names)
            names.append(n)
            named.append(f)
        else:
            named[c] = named[c] or f  # a string can be a function's name in one profile and a file in another
        remap[i] = c
    shift = int(a.inst.max()) + 1 if a.inst.size else 0
    return StackSet(
        names,
        np.array(named, bool),
        np.concatenate([a.offsets, a.offsets[-1] + b.offsets[1:]]),
        np.concatenate([a.frames, remap[b.frames]]),
        np.concatenate([a.files, remap[b.files]]),
        np.concatenate([a.loc_file, remap[b.loc_file]]),
        np.concatenate([a.inst, b.inst + shift]),
        np.zeros(a.values.size + b.values.size, np.int64),
    )


def _named(src: ProfileSource, merged: pa.Table) -> StackSet:
    """Look up the stacks, locations, functions and mappings of ``merged`` and name its frames, row for row."""
    rows = src.stack_rows(merged["stack_id"])
    return _name_frames(merged, rows.stacks, rows.locations, rows.functions, rows.mappings)


def _nonzero(s: StackSet) -> StackSet:
    keep = s.values != 0
    return s if keep.all() else s._keep(keep)


def load_stacks(
    src: ProfileSource,
    series_ids: list[int],
    tr: TimeRange,
    aggregation: Aggregation,
    p: Plan,
    names: StackNames,
) -> StackSet:
    """Merge the stacks of ``series_ids`` in ``tr`` (reading what plan ``p`` says) and name their frames."""
    return names.name(src, merge_stacks(src, series_ids, tr, aggregation, p))


def _lookup(keys: npt.NDArray[np.uint64], table: npt.NDArray[np.uint64]) -> I64:
    """Row of each key in ``table`` (every key is present: ids were selected from it)."""
    order = np.argsort(table, kind="stable")
    return order[np.searchsorted(table[order], keys)]


def _name_frames(
    merged: pa.Table, stacks: pa.Table, locations: pa.Table, functions: pa.Table, mappings: pa.Table
) -> StackSet:
    names: list[str] = []
    code: dict[str, int] = {}

    def intern(name: str) -> int:
        c = code.get(name)
        if c is None:
            c = code[name] = len(names)
            names.append(name)
        return c

    fn_codes = np.array([intern(n or "<unknown>") for n in functions["name"].to_pylist()], np.int64)
    fn_files = np.array([intern(f) if f else -1 for f in functions["filename"].to_pylist()], np.int64)
    map_files = dict(zip(mappings["mapping_id"].to_pylist(), mappings["filename"].to_pylist(), strict=True))
    loc_maps = [map_files.get(m, "") for m in locations["mapping_id"].to_pylist()]
    # An unsymbolized location is one frame named after its binary, as pprof names it.
    bare = np.array([intern(f"[{os.path.basename(f)}]" if f else "<unknown>") for f in loc_maps], np.int64)
    loc_map_file = np.array([intern(f) if f else -1 for f in loc_maps], np.int64)

    # Frames of each location, innermost first: one per line, or one for the whole location.
    line_off, line_fn = flat_lists(locations["function_ids"])
    n_lines = np.diff(line_off)
    line_rows = _lookup(ids_of_blobs(line_fn), ids_of_blobs(functions["function_id"]))
    loc_depth = np.maximum(n_lines, 1)
    loc_off = offsets_of(loc_depth)
    loc_frames = np.empty(int(loc_depth.sum()), np.int64)
    loc_files = np.full(loc_frames.size, -1, np.int64)
    has = n_lines > 0
    at = expand(loc_off[:-1][has], n_lines[has])
    loc_frames[at] = fn_codes[line_rows]
    loc_files[at] = fn_files[line_rows]
    loc_frames[loc_off[:-1][~has]] = bare[~has]

    # Frames of each merged stack: its locations (leaf first), each expanded into its frames.
    st_pos = _lookup(ids_of_blobs(merged["stack_id"]), ids_of_blobs(stacks["stack_id"]))
    st_off, st_locs = flat_lists(stacks["location_ids"])
    loc_rows = _lookup(st_locs.to_numpy().astype(np.uint64), locations["location_id"].to_numpy().astype(np.uint64))
    depth_locs = np.diff(st_off)[st_pos]
    rows = loc_rows[expand(st_off[:-1][st_pos], depth_locs)]  # location rows, stack by stack
    at = expand(loc_off[:-1][rows], loc_depth[rows])
    inst = np.repeat(np.arange(rows.size), loc_depth[rows])
    per_stack = np.bincount(
        np.repeat(np.arange(st_pos.size), depth_locs), weights=loc_depth[rows], minlength=st_pos.size
    ).astype(np.int64)
    values = np.rint(merged["value"].to_numpy()).astype(np.int64)
    named = np.zeros(len(names), bool)
    named[fn_codes] = True
    return StackSet(
        names, named, offsets_of(per_stack), loc_frames[at], loc_files[at], np.repeat(loc_map_file[rows], loc_depth[rows]), inst, values
    )  # fmt: skip
