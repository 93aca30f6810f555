"""Normalization against hand-computed truth: flat/cum per function, merging, zero dropping, ids."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from service.pprof import profile_pb2 as pb
from service.pprof.batch import ProfileBatch
from service.pprof.decode import content_ids_of, decode_batch, decompress, envelope, parse
from service.pprof.decode_exact import decode_exact
from service.pprof.hashing import ContentIds
from service.store.digest import prepare
from service.store.ids import KnownIds
from service.store.normalize import (
    Meta,
    Rows,
    batch_ids,
    infer_name,
    merge_digests,
    normalize,
    normalize_batch,
    tables,
)
from service.store.staging import assemble, stage
from tests.store.reference_normalize import merge_batch


def recursive_profile() -> pb.Profile:
    """Stacks (leaf first), one value type:

    a) leaf → rec → rec → main   = 10   (rec appears twice: cum once)
    b) leaf → rec → main         = 5    (same stack as c, labels differ)
    c) leaf → rec → main         = 7    (label k=v)
    d) leaf → rec → main         = 3    (label k=v again: merges with c)
    e) <inl> main                = 4    (one location with two lines: inl inlined into main)
    f) rec → main                = 0    (zero: dropped)
    """
    strings = ["", "cpu", "nanoseconds", "main", "rec", "leaf", "inl", "k", "v"]
    p = pb.Profile(string_table=[s.encode() for s in strings])
    p.sample_type.add(type=1, unit=2)
    for fid, name in ((1, 3), (2, 4), (3, 5), (4, 6)):
        p.function.add(id=fid, name=name)
    p.location.add(id=1, address=0x10).line.add(function_id=1, line=1)  # main
    p.location.add(id=2, address=0x20).line.add(function_id=2, line=2)  # rec
    p.location.add(id=3, address=0x30).line.add(function_id=3, line=3)  # leaf
    inl = p.location.add(id=4, address=0x40)
    inl.line.add(function_id=4, line=4)
    inl.line.add(function_id=1, line=9)
    p.sample.add(location_id=[3, 2, 2, 1], value=[10])
    p.sample.add(location_id=[3, 2, 1], value=[5])
    p.sample.add(location_id=[3, 2, 1], value=[7]).label.add(key=7, str=8)
    p.sample.add(location_id=[3, 2, 1], value=[3]).label.add(key=7, str=8)
    p.sample.add(location_id=[4], value=[4])
    p.sample.add(location_id=[2, 1], value=[0])
    return p


def test_rollup_flat_and_cum_by_hand() -> None:
    n = normalize(
        parse(recursive_profile().SerializeToString()),
        tenant="t",
        labels={"service_name": "x"},
        name="process_cpu",
        ts=1,
        content_hash=1,
        source="test",
    )
    names = dict(
        zip(n.tables["functions"]["function_id"].to_pylist(), n.tables["functions"]["name"].to_pylist(), strict=True)
    )
    r = n.tables["function_rollup"]
    got = {
        names[f]: (fl, cu)
        for f, fl, cu in zip(r["function_id"].to_pylist(), r["flat"].to_pylist(), r["cum"].to_pylist(), strict=True)
    }
    assert got == {
        "leaf": (25, 25),
        "rec": (0, 25),  # 10 + 5 + 10, the recursive stack counted once
        "main": (0, 29),  # every non-zero stack, inlined frame included
        "inl": (4, 4),  # innermost line of the leaf location gets the flat value
    }
    # Samples: a, b, c+d merged, e; f dropped.
    assert sorted(
        v * sc
        for v, sc in zip(
            n.tables["samples"]["value"].to_pylist(), n.tables["samples"]["scale"].to_pylist(), strict=True
        )
    ) == [
        4,
        5,
        10,
        10,
    ]
    assert n.tables["stacks"].num_rows == 3  # a, b/c/d, e
    assert n.tables["labelsets"].num_rows == 1
    assert n.tables["profiles"]["total"].to_pylist() == [29]
    assert n.tables["series"]["profile_type"].to_pylist() == ["process_cpu:cpu:nanoseconds::"]


def test_ids_are_content_hashes() -> None:
    """The same content gives the same ids, whatever the profile-local ids were."""
    a = recursive_profile()
    b = recursive_profile()
    for loc in b.location:
        loc.id += 100
    for s in b.sample:
        s.location_id[:] = [i + 100 for i in s.location_id]
    na = normalize(parse(a.SerializeToString()), tenant="t", labels={}, name="x", ts=1, content_hash=1, source="t")
    nb = normalize(parse(b.SerializeToString()), tenant="t", labels={}, name="x", ts=1, content_hash=2, source="t")
    assert sorted(na.tables["stacks"]["stack_id"].to_pylist()) == sorted(nb.tables["stacks"]["stack_id"].to_pylist())
    assert sorted(na.tables["locations"]["location_id"].to_pylist()) == sorted(
        nb.tables["locations"]["location_id"].to_pylist()
    )
    assert na.tables["series"]["series_id"].to_pylist() == nb.tables["series"]["series_id"].to_pylist()
    assert na.items[0].group_id != nb.items[0].group_id  # different bytes: a different profile


def test_stack_order_matters() -> None:
    p = recursive_profile()
    q = recursive_profile()
    q.sample[1].location_id[:] = [1, 2, 3]  # reversed b
    na = normalize(parse(p.SerializeToString()), tenant="t", labels={}, name="x", ts=1, content_hash=1, source="t")
    nq = normalize(parse(q.SerializeToString()), tenant="t", labels={}, name="x", ts=1, content_hash=1, source="t")
    assert set(na.tables["stacks"]["stack_id"].to_pylist()) != set(nq.tables["stacks"]["stack_id"].to_pylist())


def test_a_batch_normalizes_like_its_profiles_one_by_one() -> None:
    """Profiles told apart by owner: no merging across them, same rows as alone (the reference too)."""
    a = parse(recursive_profile().SerializeToString())
    other = recursive_profile()
    other.sample[0].value[:] = [30]
    b = parse(other.SerializeToString())
    metas = [Meta("t", {"i": "1"}, "x", 1, 1, "t"), Meta("t", {"i": "2"}, "x", 2, 2, "t")]
    both = normalize_batch(ProfileBatch.of([a, b]), metas)
    alone = [normalize_batch(ProfileBatch.of([p]), [m]) for p, m in zip((a, b), metas, strict=True)]
    ab = ProfileBatch.of([a, b])
    reference = tables(merge_batch(ab, batch_ids(ab)), ab.headers, metas)

    def facts(rows: Rows, table: str) -> list[tuple[object, ...]]:
        return sorted(zip(*(rows.tables[table][c].to_pylist() for c in rows.tables[table].column_names), strict=True))

    for table in ("samples", "function_rollup", "profiles"):
        assert facts(both, table) == sorted(facts(alone[0], table) + facts(alone[1], table)) == facts(reference, table)
    assert both.items == [alone[0].items[0], alone[1].items[0]] == reference.items


def test_stored_values_times_scale_add_up_to_each_total(corpus) -> None:  # type: ignore[no-untyped-def]
    """CPU nanoseconds are samples x period: stored once, as an alias of the counts with its own scale."""
    from service.pprof.decode import decode

    p = decode((corpus / "go119__cpu_10s.pb.gz").read_bytes())
    rows = normalize(p, tenant="t", labels={}, name=None, ts=1, content_hash=1, source="t")
    prof = rows.tables["profiles"].to_pylist()
    assert [(r["total"], r["scale"], r["alias_of"]) for r in prof] == [(1407, 1, -1), (14_070_000_000, 10_000_000, 0)]
    counts_series = prof[0]["series_id"]
    for table, col in (("samples", "value"), ("function_rollup", "flat")):
        t = rows.tables[table]
        assert set(t["series_id"].to_pylist()) == {counts_series}, table  # no rows of the alias
        stored = sum(v * sc for v, sc in zip(t[col].to_pylist(), t["scale"].to_pylist(), strict=True))
        assert stored == 1407
        assert stored * prof[1]["scale"] == prof[1]["total"]


def test_types_that_are_not_proportional_keep_their_rows(corpus) -> None:  # type: ignore[no-untyped-def]
    from service.pprof.decode import decode

    p = decode((corpus / "go119__heap.pb.gz").read_bytes())
    rows = normalize(p, tenant="t", labels={}, name=None, ts=1, content_hash=1, source="t")
    assert [r["alias_of"] for r in rows.tables["profiles"].to_pylist()] == [-1, -1, -1, -1]
    assert len(set(rows.tables["samples"]["series_id"].to_pylist())) == 4


def test_ids_computed_per_profile_at_ingest_equal_the_batchs(corpus) -> None:  # type: ignore[no-untyped-def]
    """Ingest threads hash each profile's columns; the writer hashes a batch that fell back to upb.

    Both must give every entity the same id, or one profile would be stored twice over.
    """
    files = [
        "go119__cpu_10s.pb.gz",
        "go119__heap.pb.gz",
        "gen__go_cpu_labels.pb.gz",
        "parca__profile-with-labels.pb.gz",
    ]
    envs = [envelope(decompress((corpus / f).read_bytes())) for f in files]
    per_profile = ContentIds.concat([content_ids_of(e) for e in envs])
    fast, errors = decode_batch(envs)
    assert errors == [None] * len(files)
    exact, _ = decode_batch([replace(e, columns=decode_exact(e.view, e.strings, e.raw)) for e in envs])  # type: ignore[arg-type]
    for batch in (fast, exact):
        ids = batch_ids(batch)
        for field in ContentIds.__slots__:
            assert np.array_equal(getattr(ids, field), getattr(per_profile, field)), field


def _sorted(t: pa.Table) -> list[dict]:  # type: ignore[type-arg]
    return sorted(t.to_pylist(), key=repr)


def test_the_normalizer_writes_the_rows_of_the_readable_reference(corpus) -> None:  # type: ignore[no-untyped-def]
    """The compiled per-profile normalizer, on every path the writer takes, writes the rows of the
    plain-numpy reference (tests/store/reference_normalize.py)."""
    files = [
        "go119__cpu_10s.pb.gz",
        "go119__heap.pb.gz",
        "go119__goroutine.pb.gz",
        "go119__mutex.pb.gz",
        "gen__go_cpu_labels.pb.gz",
        "parca__profile-with-labels.pb.gz",
        "series/cpu_00.pb.gz",
        "series/cpu_03.pb.gz",
    ]
    envs = [envelope(decompress((corpus / f).read_bytes())) for f in files]
    metas = [
        Meta(
            "t",
            {"service_name": "svc", "file": f},
            "mutex" if "mutex" in f else infer_name(e.header.sample_types, e.header.period_type),
            10**18 + i,
            i,
            "test",
        )
        for i, (f, e) in enumerate(zip(files, envs, strict=True))
    ]
    prepared = [prepare(e) for e in envs]
    decoded, errors = decode_batch(envs)
    assert errors == [None] * len(files)
    reference = tables(merge_batch(decoded, batch_ids(decoded)), decoded.headers, metas)
    # The writer's paths: a decoded batch (restaged rows), the digests of the ingest threads merged,
    # and rows staged per profile in the ingest threads, assembled per batch.
    batch = normalize_batch(decoded, metas)
    merged = tables(merge_digests(envs, prepared), [e.header for e in envs], metas)
    staged = assemble([stage(e, p, m, KnownIds(limit=0)) for e, p, m in zip(envs, prepared, metas, strict=True)], KnownIds(limit=0))  # fmt: skip
    slow = reference
    for fast in (batch, merged, staged):
        assert fast.items == slow.items
        for name in slow.tables:
            assert _sorted(fast.tables[name]) == _sorted(slow.tables[name]), name
        for kind in slow.new_ids:
            assert sorted(fast.new_ids[kind].tolist()) == sorted(slow.new_ids[kind].tolist()), kind


def test_staged_rows_leave_out_what_is_committed(corpus) -> None:  # type: ignore[no-untyped-def]
    """Once a profile's symbols and stacks are known, a profile sharing them stages no interned rows;
    rows staged before a commit that stored them are dropped when the batch is assembled."""
    data = (corpus / "go119__heap.pb.gz").read_bytes()
    env = envelope(decompress(data))
    metas = [Meta("t", {"i": str(i)}, "memory", 10**18 + i, i, "test") for i in range(3)]
    known = KnownIds()
    early = stage(env, prepare(env), metas[0], known)  # type: ignore[arg-type]
    late = stage(env, prepare(env), metas[1], known)  # type: ignore[arg-type]
    assert early.entities is not None and late.entities is not None
    first = assemble([early, late], known)
    assert first.tables["stacks"].num_rows == len(set(first.tables["stacks"]["stack_id"].to_pylist())) > 0
    for kind, ids in first.new_ids.items():
        known.add(kind, ids)
    assert stage(env, prepare(env), metas[2], known).entities is None  # type: ignore[arg-type]
    again = assemble([late], known)  # staged before the commit above
    assert not any(name in again.tables for name in ("stacks", "locations", "functions", "mappings", "labelsets"))
    assert again.new_ids == {}
