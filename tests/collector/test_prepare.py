"""What a scrape turns into before it is stored: limits with verdicts, kept sample types, deltas."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.collector.delta import Deltas
from service.collector.scrape import ScrapeFailed, prepare
from service.collector.targets import TargetSpec
from service.pprof.decode import decode, decompress, resolve
from service.pprof.encode import encode
from service.pprof.model import Samples
from service.types import DecodeLimits
from tests.pprof_tool import totals


def _spec(profile: str, *, delta: bool = False, keep: tuple[tuple[str, str], ...] | None = None) -> TargetSpec:
    return TargetSpec(
        job="j", instance="127.0.0.1:1", profile=profile, url="http://127.0.0.1:1/x", params={}, delta=delta,
        interval_s=15, timeout_s=10, labels={"service_name": "s", "job": "j", "instance": "127.0.0.1:1"},
        keep_sample_types=keep,
    )  # fmt: skip


def _prepare(spec: TargetSpec, data: bytes, deltas: Deltas | None = None, **limits: int):  # type: ignore[no-untyped-def]
    return prepare(
        spec, data, limits=DecodeLimits(), deltas=Deltas() if deltas is None else deltas, scraped_at_ns=1_000_000_000,
        max_samples=limits.get("max_samples", 1_000_000), max_stack_depth=limits.get("max_stack_depth", 1024),
    )  # fmt: skip


def test_too_many_samples_is_refused_with_the_numbers(corpus: Path) -> None:
    data = (corpus / "go119__cpu_10s.pb.gz").read_bytes()
    n = len(decode(data).samples)
    with pytest.raises(ScrapeFailed) as exc:
        _prepare(_spec("process_cpu", delta=True), data, max_samples=n - 1)
    assert exc.value.kind == "too_large"
    assert exc.value.message == f"{n} samples, more than the limit of {n - 1}"
    got = _prepare(_spec("process_cpu", delta=True), data, max_samples=n).envelope
    assert got is not None and got.raw == decompress(data)  # stored as scraped


def test_deep_stacks_keep_their_innermost_frames_and_are_marked(corpus: Path, tmp_path: Path) -> None:
    data = (corpus / "go119__cpu_10s.pb.gz").read_bytes()
    original = decode(data)
    depths = original.samples.depths()
    limit = int(np.percentile(depths, 50))
    got = _prepare(_spec("process_cpu", delta=True), data, max_stack_depth=limit)
    assert got.envelope is not None and got.envelope.raw != decompress(data)
    deep = int((depths > limit).sum())
    assert got.notes == (f"truncated {deep} stack(s) deeper than {limit} frames to their {limit} innermost",)
    p = resolve(got.envelope)
    assert p.comments[-1] == f"profstore: {got.notes[0]}"
    assert int(p.samples.depths().max()) == limit
    s, o = p.samples, original.samples
    for i in np.flatnonzero(depths > limit)[:20]:  # leaf first: the first `limit` locations are kept
        assert (
            s.location_ids[s.offsets[i] : s.offsets[i] + limit].tolist()
            == o.location_ids[o.offsets[i] : o.offsets[i] + limit].tolist()
        )
    path = tmp_path / "truncated.pb.gz"
    path.write_bytes(encode(p))
    orig = tmp_path / "orig.pb.gz"
    orig.write_bytes(data)
    assert totals(path) == totals(orig)  # truncation drops frames, never values


def test_keep_sample_types(corpus: Path) -> None:
    data = (corpus / "go119__heap.pb.gz").read_bytes()
    got = _prepare(_spec("memory", keep=(("inuse_space", "bytes"),)), data)
    p = resolve(got.envelope)  # type: ignore[arg-type]
    assert [str(t) for t in p.sample_types] == ["inuse_space/bytes"]
    h = decode(data)
    col = [str(t) for t in h.sample_types].index("inuse_space/bytes")
    assert int(p.samples.values.sum()) == int(h.samples.values[:, col].sum())
    assert got.outcome == "stored"  # no cumulative type left: nothing to delta
    with pytest.raises(ScrapeFailed, match="matches none of the profile's types"):
        _prepare(_spec("memory", keep=(("cpu", "nanoseconds"),)), data)


def test_cumulative_endpoints_start_with_a_baseline_then_store_deltas(corpus: Path) -> None:
    data = (corpus / "go119__mutex.pb.gz").read_bytes()
    deltas = Deltas()
    first = _prepare(_spec("mutex"), data, deltas)
    assert (first.envelope, first.outcome) == (None, "baseline")
    p = decode(data)
    p.samples = Samples(
        p.samples.offsets, p.samples.location_ids, p.samples.values * 3, p.samples.labelset_index, p.samples.labelsets
    )
    second = prepare(
        _spec("mutex"), encode(p), limits=DecodeLimits(), deltas=deltas, scraped_at_ns=16_000_000_000,
        max_samples=1_000_000, max_stack_depth=1024,
    )  # fmt: skip
    assert second.outcome == "stored" and second.envelope is not None
    d = resolve(second.envelope)
    assert d.samples.values.sum(axis=0).tolist() == (decode(data).samples.values.sum(axis=0) * 2).tolist()
    assert (d.time_nanos, d.duration_nanos) == (1_000_000_000, 15_000_000_000)


def test_endpoints_that_delta_themselves_are_stored_as_scraped(corpus: Path) -> None:
    data = (corpus / "go119__mutex.pb.gz").read_bytes()
    got = _prepare(_spec("godeltaprof_mutex", delta=True), data)
    assert got.outcome == "stored" and got.envelope is not None and got.envelope.raw == decompress(data)
