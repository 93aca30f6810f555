"""One profile's rows, built in its ingest thread; a writer batch assembled from them by concatenation.

The writer thread is the one part of ingest that cannot run in parallel, so every step that can
be done per profile is done before it, in the thread that decoded the profile: the fact rows
(samples and function rollups of each stored type, ordered by value so they bit-pack), the
``series`` and ``profiles`` rows, and the interned rows (stacks, symbols, label sets) whose ids
were not yet committed — in a steady fleet, none. The writer then concatenates a batch's
columns, drops interned rows repeated within the batch or committed since, and appends.

The rows are those of the batch path (:func:`service.store.normalize.tables`); a test holds the
two equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from service.errors import InvalidRequest
from service.jit import jit
from service.pprof.decode import Envelope
from service.store import digest
from service.store.digest import Prepared
from service.store.ids import KnownIds, ids_of_blobs
from service.store.normalize import (
    Meta,
    Normalized,
    Rows,
    entity_tables,
    header_rows,
    infer_name,
    merge_digests,
    profile_ids_of,
    profile_types_of,
    series_id_of,
)
from service.store.tables import PROFILES, SERIES, rollup_table, samples_table
from service.types import I64, U64, now_ns

__all__ = ["Staged", "assemble", "stage", "warm_up", "with_entities"]


# Interned table → (KnownIds kind, id column, whether the id is stored as an 8-byte BLOB).
INTERNED = {
    "stacks": ("stack", "stack_id", True),
    "locations": ("location", "location_id", False),
    "functions": ("function", "function_id", True),
    "mappings": ("mapping", "mapping_id", False),
    "labelsets": ("labelset", "labelset_id", True),
}


@dataclass(frozen=True, slots=True)
class Staged:
    """The rows of one profile, as columns, ready to be concatenated with a batch's others."""

    item: Normalized
    ts: int
    samples: tuple[I64, U64, U64, U64, I64, I64]  # type index, series_id, stack, labelset, value, scale
    rollup: tuple[I64, U64, U64, I64, I64, I64]  # type index, series_id, function, flat, cum, scale
    series: list[dict[str, object]]
    profiles: list[dict[str, object]]
    entities: dict[str, pa.Table] | None  # interned rows not known to be committed when staged
    generation: int  # of the KnownIds consulted; the writer restages rows older than a retention run
    # The ids of its stacks, locations, functions, mappings and label sets: what "known to be
    # committed?" is asked of (see :func:`with_entities`).
    entity_ids: tuple[U64, ...] = ()


def stage(env: Envelope, prepared: Prepared, meta: Meta, known: KnownIds | None) -> Staged:
    """Build the rows of one validated, digested profile (in the ingest thread or an ingest worker).

    An ingest worker does not know what is committed (``known`` None): its rows come without
    the interned ones, which the serving process adds (:func:`with_entities`).
    """
    generation = known.generation if known is not None else -1  # read before the ids are looked up
    h, d, ids = env.header, prepared.digest, prepared.ids
    pts = profile_types_of(h, meta.name)
    if not pts:
        raise InvalidRequest("profile has no sample types; nothing to store")
    group = meta.group_id
    pids = profile_ids_of(group, len(pts))
    sids = np.array([series_id_of(meta.tenant, pt, meta.labels) for pt in pts], np.uint64)
    sc = _facts(d.values, d.scale, d.alias, ids.stack[d.rep], ids.labelset[d.rep], d.r_fn, d.r_flat, d.r_cum, sids)
    samples, rollup = sc[:6], sc[6:]
    series, profiles = header_rows(h, meta, pts, sids, pids, d.totals, int(d.rep.size), d.scale, d.alias)

    labelsets = ids.labelset[d.rep]
    entity_ids = (d.st_ids, ids.location, ids.function, ids.mapping, labelsets[labelsets != 0])
    entities = None
    if known is not None and _has_unknown(entity_ids, known):
        entities, _ = entity_tables(merge_digests([env], [prepared]), known)
    return Staged(
        item=Normalized(group, pids, [str(pt) for pt in pts], int(samples[0].size)),
        ts=meta.ts,
        samples=samples,
        rollup=rollup,
        series=series,
        profiles=profiles,
        entities=entities,
        generation=generation,
        entity_ids=entity_ids,
    )


def with_entities(staged: Staged, envelope: Callable[[], Envelope], known: KnownIds) -> Staged:
    """Rows an ingest worker staged, completed in the serving process: the interned rows not known
    to be committed (in a steady fleet none, so ``envelope`` is rarely asked for) and the generation."""
    generation = known.generation
    entities = None
    if _has_unknown(staged.entity_ids, known):
        env = envelope()
        prepared = digest.prepare(env)
        entities, _ = entity_tables(merge_digests([env], [prepared]), known)
    return replace(staged, entities=entities, generation=generation)


# Series label limits, Pyroscope's defaults (validation.Limits): a series is its labels, and
# every query lists them, so unbounded ones would make one push cost every later read.
MAX_LABEL_NAMES = 30
MAX_LABEL_NAME_LENGTH = 1024
MAX_LABEL_VALUE_LENGTH = 2048


def check_labels(labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABEL_NAMES:
        raise InvalidRequest(f"series has {len(labels)} labels; at most {MAX_LABEL_NAMES} are allowed")
    for k, v in labels.items():
        if len(k) > MAX_LABEL_NAME_LENGTH:
            raise InvalidRequest(f"label name {k[:64]!r}... is {len(k)} characters; at most {MAX_LABEL_NAME_LENGTH}")
        if len(v) > MAX_LABEL_VALUE_LENGTH:
            raise InvalidRequest(f"value of label {k[:64]!r} is {len(v)} characters; at most {MAX_LABEL_VALUE_LENGTH}")


@dataclass(frozen=True, slots=True)
class StagedPart:
    """One profile of a push, ready for the writer: what it is stored as, its rows, and what that cost."""

    meta: Meta
    staged: Staged
    types: list[str]
    digest_s: float
    stage_s: float


def stage_profile(
    env: Envelope,
    labels: Mapping[str, str],
    ts: int | None,
    *,
    name: str | None,
    tenant: str,
    source: str,
    known: KnownIds | None,
) -> StagedPart:
    """Name, time, validate, hash and stage one decoded profile: everything per profile before the
    writer, the same in a request thread (``known``: the writer's) and in an ingest worker (None)."""
    check_labels(labels)
    h = env.header
    if not h.sample_types:
        raise InvalidRequest("profile has no sample types; nothing to store")
    named = name or infer_name(h.sample_types, h.period_type)
    types = [str(pt) for pt in profile_types_of(h, named)]
    when = ts if ts is not None else (h.time_nanos or now_ns())
    meta = Meta(tenant, dict(labels), named, when, env.content_hash, source)
    t0 = time.perf_counter()
    prepared = digest.prepare(env)
    t1 = time.perf_counter()
    staged = stage(env, prepared, meta, known)
    return StagedPart(meta, staged, types, t1 - t0, time.perf_counter() - t1)


@jit
def _facts(values, scale, alias, stack, labelset, r_fn, r_flat, r_cum, sids):  # type: ignore[no-untyped-def]
    """Fact rows of one profile, one compiled call: each stored type's non-zero rows, by value.

    Rows of a type are ordered by (scaled) value, rollups by flat then cum, so DuckDB bit-packs
    them into few bits; a type aliasing another has no rows of its own.
    """
    m, w = values.shape
    nf = r_fn.size
    ns = 0
    nr = 0
    for t in range(w):
        if alias[t] >= 0:
            continue
        for r in range(m):
            ns += values[r, t] != 0
        for r in range(nf):
            nr += r_flat[r, t] != 0 or r_cum[r, t] != 0
    s_type = np.empty(ns, np.int64)
    s_series = np.empty(ns, np.uint64)
    s_stack = np.empty(ns, np.uint64)
    s_ls = np.empty(ns, np.uint64)
    s_value = np.empty(ns, np.int64)
    s_scale = np.empty(ns, np.int64)
    r_type = np.empty(nr, np.int64)
    r_series = np.empty(nr, np.uint64)
    r_fid = np.empty(nr, np.uint64)
    r_fl = np.empty(nr, np.int64)
    r_cu = np.empty(nr, np.int64)
    r_scale = np.empty(nr, np.int64)
    a = 0
    b = 0
    for t in range(w):
        if alias[t] >= 0:
            continue
        col = values[:, t] // scale[t]
        order = np.argsort(col, kind="mergesort")
        for r in order:
            if col[r] != 0:
                s_type[a] = t
                s_series[a] = sids[t]
                s_stack[a] = stack[r]
                s_ls[a] = labelset[r]
                s_value[a] = col[r]
                s_scale[a] = scale[t]
                a += 1
        by_cum = np.argsort(r_cum[:, t], kind="mergesort")
        by_flat = by_cum[np.argsort(r_flat[by_cum, t], kind="mergesort")]
        for r in by_flat:
            if r_flat[r, t] != 0 or r_cum[r, t] != 0:
                r_type[b] = t
                r_series[b] = sids[t]
                r_fid[b] = r_fn[r]
                r_fl[b] = r_flat[r, t]
                r_cu[b] = r_cum[r, t]
                r_scale[b] = scale[t]
                b += 1
    return s_type, s_series, s_stack, s_ls, s_value, s_scale, r_type, r_series, r_fid, r_fl, r_cu, r_scale


def _has_unknown(entity_ids: tuple[U64, ...], known: KnownIds) -> bool:
    kinds = ("stack", "location", "function", "mapping", "labelset")
    return any(known.unknown(kind, arr).any() for kind, arr in zip(kinds, entity_ids, strict=True))


def _cat(parts: list[tuple[npt.NDArray[np.generic], ...]], width: int) -> tuple[npt.NDArray[np.generic], ...]:
    """Column-wise concatenation of equally shaped tuples of columns (empty columns when there are none)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return tuple(np.zeros(0, np.int64) for _ in range(width))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(width))


def _by_type(cols: tuple[npt.NDArray[np.generic], ...], ts: I64, counts: list[int]) -> list[npt.NDArray[np.generic]]:
    """A batch's fact columns with each row's ``ts`` in place of its type, rows grouped by type.

    Values of one sample type have one magnitude; grouped (each profile's rows stay ordered by
    value within), DuckDB's bit-packing vectors hold one type at a time and stay narrow.
    """
    order = np.argsort(cols[0], kind="stable")
    return [np.repeat(ts, counts)[order], *(c[order] for c in cols[1:])]


def assemble(staged: Sequence[Staged], known: KnownIds) -> Rows:
    """A writer batch's rows from its profiles' staged rows (in the writer thread: concatenation only)."""
    ts = np.array([s.ts for s in staged], np.int64)
    sc = _by_type(_cat([s.samples for s in staged], 6), ts, [s.samples[0].size for s in staged])
    rc = _by_type(_cat([s.rollup for s in staged], 6), ts, [s.rollup[0].size for s in staged])
    tables: dict[str, pa.Table] = {
        "samples": samples_table(sc[1], sc[0], *sc[2:]),  # type: ignore[arg-type]
        "function_rollup": rollup_table(rc[1], rc[0], *rc[2:]),  # type: ignore[arg-type]
        "series": pa.Table.from_pylist([r for s in staged for r in s.series], schema=SERIES),
        "profiles": pa.Table.from_pylist([r for s in staged for r in s.profiles], schema=PROFILES),
    }
    new_ids: dict[str, U64] = {}
    for name, (kind, column, blob) in INTERNED.items():
        parts = [s.entities[name] for s in staged if s.entities is not None and s.entities[name].num_rows]
        if not parts:
            continue
        t = pa.concat_tables(parts)
        ids = ids_of_blobs(t[column]) if blob else t[column].to_numpy()
        uniq, first = np.unique(ids, return_index=True)
        keep = np.sort(first[known.unknown(kind, uniq)])  # each id once, none committed since staging
        if keep.size:
            tables[name] = t.take(pa.array(keep))
            new_ids[kind] = ids[keep]
    return Rows(tables, [s.item for s in staged], new_ids)


def warm_up() -> None:
    """Load (or compile) the kernels of decoding, digesting and staging before traffic (see digest.warm_up)."""
    env = digest.warm_up()
    prepared = digest.prepare(env)
    assert prepared is not None
    stage(env, prepared, Meta("warm-up", {}, "process_cpu", 1, 0, "warm-up"), KnownIds(limit=0))
