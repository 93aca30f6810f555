"""Legacy (non-protobuf) profiles: ``parse_legacy`` must yield the profile ``go tool pprof`` makes of them.

The reference is always the real ``go tool pprof`` run on the original legacy bytes; our profile is
encoded to protobuf and run through the same tool, and the two outputs must agree.
"""

from __future__ import annotations

import gzip
import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from service.errors import ParseError
from service.pprof.decode import from_profile
from service.pprof.encode import encode
from service.pprof.legacy import looks_legacy, parse_legacy
from service.pprof.model import Profile
from tests.pprof_tool import go_bin, top, totals

ACCEPTED = [
    "gpprof__gobench.heap.legacy.txt",
    "go119__heap_debug1.txt",
    "go119__goroutine_debug1.txt",
    "gpprof__cppbench.cpu.legacy",
]
HEAP_FILES = ["gpprof__gobench.heap.legacy.txt", "go119__heap_debug1.txt"]
HEAP_TYPES = ["alloc_objects", "alloc_space", "inuse_objects", "inuse_space"]
REFUSED = {
    "gpprof__fuzz_7e3c9248.malformed": "parsing sample 0 0 @ 0: second value must be non-zero",
    "go119__threadcreate_debug1.txt": "malformed profile format",
}


def _cpu_words(fmt: str, *words: int) -> bytes:
    return b"".join(struct.pack(fmt, w) for w in words)


# Hand-made inputs for the variants the corpus lacks; each is checked against go tool pprof too.
SYNTHETIC = {
    # Go mutex debug=1: delays are cycles, scaled by the period and cycles/second.
    "mutex": b"--- mutex:\ncycles/second=2596170903\nsampling period=5\n"
    b"3795139439 1599 @ 0x4b469c 0x4b467f 0x461481\n#\t0x4b469b\tsync.(*Mutex).Unlock+0x19b\n\n"
    b"12345 7 @ 0x4b469c 0x461481\n",
    # Go block debug=1 (no sampling period).
    "block": b"--- contention:\ncycles/second=2000000000\n26418044610 1599 @ 0x4b45b1 0x4b4592 0x461481\n",
    # C++ heapz with a memory map: split + offset mappings, a glog prefix, a $attr substitution, an unmapped frame.
    "heap_maps": b"heap profile: 3: 3000 [5: 9000] @ heap_v2/524288\n"
    b"1: 1000 [2: 3000] @ 0x401001 0x3ff000 0x7f0000001234 0x7f1000000100 0x500000\n"
    b"2: 2000 [3: 6000] @ 0x401001 0x7f0000001234\n--- Memory map: ---\nbuild=deadbeef\n"
    b"00401000-00450000 r-xp 00001000 08:01 1234 /usr/bin/app\n"
    b"00450000-00600000 r-xp 00050000 08:01 1234 /usr/bin/app\n"
    b"00600000-00700000 rw-p 00000000 08:01 1234 /usr/bin/app\n"
    b"7f0000000000-7f0000100000 r-xp 00000000 08:01 99 /lib/libc.so.6\n"
    b"I0101 12:00:00.000 file.cc:12] 0x7f1000000000-0x7f1000100000 /lib/libm-2.1.so (@1000) $build\n",
    # Values where libm's exp and Go's amd64 exp differ by one bit, which shifts pprof's truncated results.
    "heap_exp": b"heap profile: 2: 2 [2: 2] @ heap_v2/100000\n64983: 22419135 [0: 0] @ 0x401000\n"
    b"80225: 8740834650 [0: 0] @ 0x402000\n",
    "growth": b"heap profile: 2: 300 [ 0: 0] @ growthz\n1: 100 [0: 0] @ 0x401000 0x402000\n1: 200 [0: 0] @\n",
    # gperftools CPU, 32-bit big endian: a signal-handler frame second on every stack, a duplicated leaf, maps.
    "cpu_be32": _cpu_words(">I", 0, 3, 0, 10000, 0)
    + _cpu_words(">I", 3, 3, 0x401234, 0x7F0500, 0x401300)
    + _cpu_words(">I", 1, 4, 0x401240, 0x7F0500, 0x401240, 0x401300)
    + _cpu_words(">I", 2, 2, 0x7F000010, 0x7F0500)
    + _cpu_words(">I", 0, 1, 0)
    + b"00400000-00450000 r-xp 00000000 08:01 1 /usr/bin/cppbench\n007f0000-007f1000 r-xp 00000000 08:01 2 /lib/x.so\n",
}


def _raw_dump(path: Path) -> str:
    """``go tool pprof -raw``: every sample, location address, mapping and label, after pprof's own merge."""
    proc = subprocess.run(
        [go_bin(), "tool", "pprof", "-raw", "-symbolize=none", str(path)], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"go tool pprof refused {path.name}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode()


def _pprof_refuses(path: Path) -> str:
    proc = subprocess.run([go_bin(), "tool", "pprof", "-raw", str(path)], capture_output=True, timeout=120, check=False)
    assert proc.returncode != 0, f"go tool pprof accepted {path.name}"
    return proc.stderr.decode(errors="replace")


def _encoded(profile: Profile, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.ours.pb.gz"
    out.write_bytes(encode(profile))
    return out


@pytest.mark.parametrize("name", ACCEPTED)
def test_totals_and_top_match_go_tool_pprof(corpus: Path, tmp_path: Path, name: str) -> None:
    original = corpus / name
    ours = _encoded(parse_legacy(original.read_bytes()), tmp_path, name)
    want = totals(original)
    assert want and all(v != 0 for v in want.values()), f"reference totals look empty: {want}"
    assert totals(ours) == want
    assert top(ours) == top(original)


@pytest.mark.parametrize("sample_index", HEAP_TYPES)
@pytest.mark.parametrize("name", HEAP_FILES)
def test_heap_top_matches_for_every_sample_type(corpus: Path, tmp_path: Path, name: str, sample_index: str) -> None:
    original = corpus / name
    ours = _encoded(parse_legacy(original.read_bytes()), tmp_path, name)
    assert top(ours, sample_index) == top(original, sample_index)


@pytest.mark.parametrize("name", ACCEPTED)
def test_raw_dump_is_identical(corpus: Path, tmp_path: Path, name: str) -> None:
    """Stronger than totals: same addresses (the -1 adjustments), mappings, labels, period and sample order."""
    original = corpus / name
    assert _raw_dump(_encoded(parse_legacy(original.read_bytes()), tmp_path, name)) == _raw_dump(original)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_other_legacy_variants_match_go_tool_pprof(tmp_path: Path, name: str) -> None:
    original = tmp_path / name
    original.write_bytes(SYNTHETIC[name])
    assert looks_legacy(SYNTHETIC[name])
    assert _raw_dump(_encoded(parse_legacy(SYNTHETIC[name]), tmp_path, name)) == _raw_dump(original)


@pytest.mark.parametrize("name", ACCEPTED)
def test_the_model_contract_holds(corpus: Path, name: str) -> None:
    p = parse_legacy((corpus / name).read_bytes())
    from_profile(p, content_hash=0, size=0)  # pprof's rules hold: it becomes the decoded columns
    s = p.samples
    assert p.locations.id.tolist() == list(range(1, len(p.locations) + 1))
    assert p.mappings.id.tolist() == list(range(1, len(p.mappings) + 1))
    assert set(p.locations.mapping_id.tolist()) <= {0, *p.mappings.id.tolist()}
    assert set(s.location_ids.tolist()) <= set(p.locations.id.tolist())
    assert s.offsets.dtype == np.int64 and s.location_ids.dtype == np.uint64 and s.values.dtype == np.int64
    assert s.labelset_index.dtype == np.int32 and s.labelsets[0] == ()
    assert s.offsets[0] == 0 and s.offsets[-1] == len(s.location_ids) and len(s.offsets) == len(s) + 1
    assert p.time_nanos == 0 and p.duration_nanos == 0  # legacy formats carry no timestamps


def test_go_heap_rules(corpus: Path) -> None:
    """heap/RATE samples at RATE/2; values are unsampled; every frame is its return address - 1."""
    p = parse_legacy((corpus / "gpprof__gobench.heap.legacy.txt").read_bytes())
    assert [str(t) for t in p.sample_types] == [
        "alloc_objects/count",
        "alloc_space/bytes",
        "inuse_objects/count",
        "inuse_space/bytes",
    ]
    assert (str(p.period_type), p.period) == ("space/bytes", 524288)
    # "1: 524288 [3: 1572864] @ 0x420cef ...": scaled by 1/(1-exp(-1)), truncated.
    assert p.samples.values[0].tolist() == [4, 2488234, 1, 829411]
    assert p.samples.labelsets[p.samples.labelset_index[0]][0].num == 524288
    assert int(p.locations.address[0]) == 0x420CEF - 1
    assert p.drop_frames.startswith("calloc|") and p.keep_frames.startswith(r"runtime\.panic")
    # No memory map in Go's output: one mapping spans the address space.
    assert [(m.start, m.limit) for m in p.mappings.entities(p.strings)] == [(0, 2**64 - 1)]


def test_heap_unsampling_uses_gos_exp() -> None:
    p = parse_legacy(SYNTHETIC["heap_exp"])
    # libm's exp would give 6509516013 and 13171270600; go tool pprof prints these.
    assert p.samples.values.tolist() == [[18868162, 6509516012], [120888, 13171270601]]
    assert [str(t) for t in p.sample_types] == ["objects/count", "space/bytes"]


def test_goroutine_and_cpu_rules(corpus: Path) -> None:
    g = parse_legacy((corpus / "go119__goroutine_debug1.txt").read_bytes())
    assert ([str(t) for t in g.sample_types], str(g.period_type), g.period) == (
        ["goroutine/count"],
        "goroutine/count",
        1,
    )
    assert g.totals().tolist() == [78]  # "goroutine profile: total 78"
    assert int(g.locations.address[0]) == 0x43B2F6 - 1
    c = parse_legacy((corpus / "gpprof__cppbench.cpu.legacy").read_bytes())
    assert [str(t) for t in c.sample_types] == ["samples/count", "cpu/nanoseconds"]
    assert (str(c.period_type), c.period) == ("cpu/nanoseconds", 10_000_000)  # header period is in µs
    assert (c.samples.values[:, 1] == c.samples.values[:, 0] * c.period).all()
    main = next(c.mappings.entities(c.strings))
    assert (main.filename, main.start, main.offset) == ("cppbench_server_main", 0x400000, 0)
    assert c.drop_frames.startswith("ProfileData::Add")


def test_cpu_frame_cleanups() -> None:
    """Callers are return address - 1 (the leaf is not); the handler frame and a repeated leaf go."""
    p = parse_legacy(SYNTHETIC["cpu_be32"])
    address = dict(zip(p.locations.id.tolist(), p.locations.address.tolist(), strict=True))
    s = p.samples
    stacks = [
        [address[i] for i in s.location_ids[a:b].tolist()] for a, b in zip(s.offsets[:-1], s.offsets[1:], strict=True)
    ]
    assert stacks == [[0x401234, 0x4012FF], [0x401240, 0x4012FF], [0x7F000010]]
    assert s.values.tolist() == [[3, 30_000_000], [1, 10_000_000], [2, 20_000_000]]


def test_contention_rules() -> None:
    p = parse_legacy(SYNTHETIC["mutex"])
    assert [str(t) for t in p.sample_types] == ["contentions/count", "delay/nanoseconds"]
    assert p.period == 5
    assert p.samples.values[0].tolist() == [1599 * 5, int(3795139439.0 * 5.0 / 2.596170903)]


@pytest.mark.parametrize(("name", "message"), sorted(REFUSED.items()))
def test_files_pprof_refuses_raise_parse_error(corpus: Path, name: str, message: str) -> None:
    with pytest.raises(ParseError, match=r"^parsing profile: ") as err:
        parse_legacy((corpus / name).read_bytes())
    assert message in str(err.value)
    assert message in _pprof_refuses(corpus / name)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty input file"),
        (b"heap profile: 1: 5 [1: 5] @ heap/1048576\n0: 5 [1: 5] @ 0x401000\n", "inuse count was 0 but inuse bytes"),
        (b"heap profile: 1: 5 [1: 5] @ heap/1048576\nnot a sample\n", "unexpected number of sample values"),
        (b"goroutine profile: total 1\n1 @ 0x401000 trailing\n", "malformed profile format"),
        (b"--- threadz 1 ---\n", "threadz profiles are not supported"),
        (_cpu_words("<Q", 0, 3, 0, 10000, 0, 1, 99), "unrecognized profile format"),
        (b"<!doctype html><html></html>", "unrecognized profile format"),
    ],
)
def test_malformed_inputs_get_a_clear_parse_error(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_legacy(data)
    if data:
        (tmp_path / "bad").write_bytes(data)
        _pprof_refuses(tmp_path / "bad")


def test_looks_legacy(corpus: Path) -> None:
    for name in [*ACCEPTED, *REFUSED]:
        assert looks_legacy((corpus / name).read_bytes()), name
    gzipped = (corpus / "go119__heap.pb.gz").read_bytes()
    assert gzipped[:2] == b"\x1f\x8b" and not looks_legacy(gzipped)
    assert not looks_legacy(gzip.decompress(gzipped))
    assert not looks_legacy((corpus / "gen__cpu_uncompressed.pb").read_bytes())
    assert not looks_legacy(b"<!DOCTYPE html>\n<html><body>404 page not found</body></html>\n")
    assert not looks_legacy(b"")
    rng = random.Random(1234)
    for n in (1, 7, 40, 4096, 100_000):
        assert not looks_legacy(rng.randbytes(n))
