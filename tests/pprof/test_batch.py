"""Batch decoding: many profiles as one set of columns, each judged on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import MalformedProfile
from service.pprof.batch import ProfileBatch
from service.pprof.decode import decode_batch, decompress, envelope
from service.pprof.encode import encode
from tests.pprof.test_decode import minimal
from tests.pprof_tool import totals

FILES = ["go119__cpu_10s.pb.gz", "go119__heap.pb.gz", "gen__go_cpu_labels.pb.gz", "parca__profile-with-labels.pb.gz"]


def test_batch_profiles_equal_profiles_decoded_alone(corpus: Path, tmp_path: Path) -> None:
    envs = [envelope(decompress((corpus / f).read_bytes())) for f in FILES]
    batch, errors = decode_batch(envs)
    assert errors == [None] * len(FILES)
    for i, f in enumerate(FILES):
        alone, _ = decode_batch([envs[i]])
        a, b = batch.profile(i), alone.profile(0)
        assert np.array_equal(a.samples.values, b.samples.values)
        assert np.array_equal(a.samples.location_ids, b.samples.location_ids)
        assert [a.samples.labelsets[x] for x in a.samples.labelset_index] == [
            b.samples.labelsets[x] for x in b.samples.labelset_index
        ]
        out = tmp_path / f
        out.write_bytes(encode(a))
        assert totals(out) == totals(corpus / f)  # go tool pprof reads the batch's slice of it unchanged


def test_a_bad_profile_is_refused_alone() -> None:
    good = minimal()
    bad = minimal()
    bad.sample[1].value.append(3)
    unknown = minimal()
    unknown.sample[0].location_id.append(99)
    envs = [envelope(p.SerializeToString()) for p in (good, bad, good, unknown)]
    batch, errors = decode_batch(envs)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], MalformedProfile)
    assert str(errors[1]) == "malformed profile: mismatch: sample has 3 values vs. 2 types"
    assert str(errors[3]) == "malformed profile: sample has nil location (location id 99 not found)"
    assert len(batch) == 2
    assert [batch.profile(i).totals().tolist() for i in range(2)] == [[7, 70_000_000]] * 2


def test_ids_not_numbered_one_to_n_resolve_too() -> None:
    """Producers other than Go may number ids sparsely; references still resolve within the profile."""
    p = minimal()
    for loc in p.location:
        loc.id += 1000
    for s in p.sample:
        s.location_id[:] = [i + 1000 for i in s.location_id]
    for f in p.function:
        f.id *= 7
    for loc in p.location:
        loc.line[0].function_id *= 7
    envs = [envelope(minimal().SerializeToString()), envelope(p.SerializeToString())]
    batch, errors = decode_batch(envs)
    assert errors == [None, None]
    r = batch.resolve()
    assert (r.sample_location >= 0).all() and (r.line_function >= 0).all()
    names = [[batch.strings[batch.functions.name[r.line_function[j]]] for j in range(len(r.line_function))]]
    assert names[0][:3] == names[0][3:]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_batches(n: int) -> None:
    b = ProfileBatch.of([]) if n == 0 else decode_batch([envelope(minimal().SerializeToString())])[0]
    assert len(b) == n
