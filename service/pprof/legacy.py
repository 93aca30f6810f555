"""Legacy (non-protobuf) profiles → the resolved model, exactly as ``go tool pprof`` reads them.

Why: old Go releases, every ``/debug/pprof/*?debug=1`` endpoint and gperftools still emit text
heap/goroutine/threadcreate/contention profiles and the binary CPU format, and ``go tool pprof``
opens them. Refusing them would lose those sources; parsing them our own way would disagree with
pprof. So the rules are those of google/pprof's ``profile/legacy_profile.go`` as vendored in Go 1.19
(the ``go tool pprof`` the tests compare with): its header regexps, heap "unsampling" (down to
Go's amd64 ``math.Exp``), -1 address adjustments, /proc/maps parsing, mapping heuristics and
drop/keep-frame defaults. Java and C++ threadz profiles are recognized and refused. Callers pass
uncompressed bytes (gunzip first, as pprof does).
"""

from __future__ import annotations

import functools
import re
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.errors import ParseError
from service.pprof.model import Label, Location, Mapping, Profile, Samples, ValueType, offsets_of

__all__ = ["looks_legacy", "parse_legacy"]

_M64 = (1 << 64) - 1
_MAX_LINE = 64 * 1024  # bufio.Scanner's token limit: pprof fails on longer lines
_UNRECOGNIZED = "unrecognized profile format"
_WS = b" \t\n\v\f\r"
_S, _NS, _X = rb"[\t\n\f\r ]", rb"[^\t\n\f\r ]", rb"[0-9A-Fa-f]"  # RE2's \s, \S, [[:xdigit:]]

_COUNT_START = re.compile(rb"(" + _NS + rb"+) profile: total \d+")
_COUNT_SAMPLE = re.compile(rb"(\d+) @((?: 0x[0-9a-f]+)+)")
_HEAP_HEADER = re.compile(rb"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] *@ *(heap[_a-z0-9]*)/?(\d*)")
_HEAP_SAMPLE = re.compile(rb"(-?\d+): *(-?\d+) *\[ *(\d+): *(\d+) *] @([ x0-9a-f]*)")
_GROWTH_HEADER = re.compile(rb"heap profile: *(\d+): *(\d+) *\[ *(\d+): *(\d+) *\] @ (?:growthz?|fragmentationz?)")
_CONTENTION_SAMPLE = re.compile(rb"(\d+) *(\d+) @([ x0-9a-f]*)")
_JAVA_SAMPLE = re.compile(rb" *(\d+) +(\d+) +@ +([ x0-9a-f]*)")
_JAVA_ATTRIBUTE = re.compile(rb"([\w ]+)=([\w ]+)")
_HEX = re.compile(rb"0x[0-9a-f]+")
_THREADZ = re.compile(rb"--- threadz \d+ ---|--- Thread " + _X + rb"+ \(name: .*/\d+\) stack: ---")
_HEX_RANGE = _S + rb"*(?:0x)?(" + _X + rb"+)[\t\n\f\r -]?" + _S + rb"*(?:0x)?(" + _X + rb"+):?"
_PERM, _OPT_HEX = rb"(?:" + _S + rb"+([-rwxp]+))?", rb"(?:" + _S + rb"+(" + _X + rb"+))?"
_OPT_STR = rb"(?:" + _S + rb"+(" + _NS + rb"+))?"
_PROC_MAPS = re.compile(
    rb"^" + _HEX_RANGE + _PERM + _OPT_HEX + _S + rb"+" + _X + rb"+:" + _X + rb"+" + _S + rb"+[0-9]+" + _OPT_STR
)
_BRIEF_MAPS = re.compile(rb"^" + _HEX_RANGE + _PERM + _OPT_STR + rb"(?:" + _S + rb"+\(@(" + _X + rb"+)\))?" + _OPT_HEX)
_LOG_PREFIX = re.compile(rb"^[^\[\]]+:[0-9]+]" + _S)
_LIB = re.compile(r"([.]so$|[.]so[._][0-9]+)")
_MAP_SENTINELS = (b"--- Memory map: ---", b"MAPPED_LIBRARIES:")

# The regexps pprof stores in drop_frames/keep_frames of legacy profiles (addLegacyFrameInfo).
_ALLOC_DROP = (
    r"calloc|cfree|malloc|free|memalign|do_memalign|(__)?posix_memalign|pvalloc|valloc|realloc|tcmalloc::.*|tc_calloc|"
    r"tc_cfree|tc_malloc|tc_free|tc_memalign|tc_posix_memalign|tc_pvalloc|tc_valloc|tc_realloc|tc_new|tc_delete|"
    r"tc_newarray|tc_deletearray|tc_new_nothrow|tc_newarray_nothrow|malloc_zone_malloc|malloc_zone_calloc|"
    r"malloc_zone_valloc|malloc_zone_realloc|malloc_zone_memalign|malloc_zone_free|runtime\..*|BaseArena::.*|"
    r"(::)?do_malloc_no_errno|(::)?do_malloc_pages|(::)?do_malloc|DoSampledAllocation|"
    r"MallocedMemBlock::MallocedMemBlock|_M_allocate|__builtin_(vec_)?delete|__builtin_(vec_)?new|"
    r"__gnu_cxx::new_allocator::allocate|__libc_malloc|__malloc_alloc_template::allocate|allocate|cpp_alloc|"
    r"operator new(\[\])?|simple_alloc::allocate"
)
_ALLOC_KEEP = r"runtime\.panic|runtime\.reflectcall|runtime\.call[0-9]*"
_CPU_DROP = "ProfileData::Add|ProfileData::prof_handler|CpuProfiler::prof_handler|__pthread_sighandler|__restore"
_LOCK_DROP = (
    r"RecordLockProfileData|(base::)?RecordLockProfileData.*|(base::)?SubmitMutexProfileData.*|"
    r"(base::)?SubmitSpinLockProfileData.*|(base::Mutex::)?AwaitCommon.*|(base::Mutex::)?Unlock.*|"
    r"(base::Mutex::)?UnlockSlow.*|(base::Mutex::)?ReaderUnlock.*|(base::MutexLock::)?~MutexLock.*|"
    r"(Mutex::)?AwaitCommon.*|(Mutex::)?Unlock.*|(Mutex::)?UnlockSlow.*|(Mutex::)?ReaderUnlock.*|"
    r"(MutexLock::)?~MutexLock.*|(SpinLock::)?Unlock.*|(SpinLock::)?SlowUnlock.*|(SpinLockHolder::)?~SpinLockHolder.*"
)
_HEAPZ_TYPES = {("allocations", "size"), ("objects", "space"), ("inuse_objects", "inuse_space"), ("alloc_objects", "alloc_space"), ("alloc_objects", "alloc_space", "inuse_objects", "inuse_space")}  # fmt: skip
_SPACE = ValueType("space", "bytes")
_CPU_TYPES = (ValueType("samples", "count"), ValueType("cpu", "nanoseconds"))
_CONTENTION_TYPES = (ValueType("contentions", "count"), ValueType("delay", "nanoseconds"))


@dataclass(slots=True)
class _Raw:
    """What a pprof legacy parser holds before ids exist: stacks are address lists, leaf first."""

    sample_types: tuple[ValueType, ...]
    period_type: ValueType
    period: int
    stacks: list[list[int]] = field(default_factory=list)
    values: list[list[int]] = field(default_factory=list)
    blocksizes: list[int] = field(default_factory=list)  # heap profiles: the numeric label "bytes"
    maps: list[bytes] = field(default_factory=list)  # the lines after the memory-map sentinel
    duration_nanos: int = 0


@dataclass(slots=True)
class _Map:
    start: int
    limit: int
    offset: int
    file: str
    build_id: str = ""


def _i64(v: int) -> int:  # Go's int64 arithmetic wraps
    return ((v + (1 << 63)) & _M64) - (1 << 63)


def _f2i(x: float) -> int:  # Go's int64(float64) on amd64: truncation; NaN and overflow give MinInt64
    return int(x) if x == x and -(2.0**63) <= x < 2.0**63 else -(1 << 63)


def _go_int(s: bytes, base0: bool = False) -> int | None:
    """strconv.ParseInt(s, 0 or 10, 64) of a regexp-checked field; None where Go returns an error."""
    t = s.decode("latin-1")
    if base0 and re.fullmatch(r"[+-]?0[0-9_]+", t):
        t = t.replace("0", "0o", 1)  # a leading 0 means octal to Go
    try:
        v = int(t, 0 if base0 else 10)
    except ValueError:
        return None
    return v if -(1 << 63) <= v < (1 << 63) and t == t.strip() else None


def _fma(a: float, b: float, c: float) -> float:
    """a*b+c rounded once: exact dyadic rationals, then CPython's correctly rounded int division."""
    (na, da), (nb, db), (nc, dc) = a.as_integer_ratio(), b.as_integer_ratio(), c.as_integer_ratio()
    d = max(da * db, dc)  # powers of two: the larger is a multiple of the smaller
    return float((na * nb * (d // (da * db)) + nc * (d // dc)) / d)


def _pow2(e: int) -> float:
    return float(struct.unpack("<d", struct.pack("<Q", e << 52))[0])


_EXP_POLY = (1.9841269841269841270e-4, 1.3888888888888888889e-3, 8.3333333333333333333e-3, 4.1666666666666666667e-2, 1.6666666666666666667e-1, 0.5, 1.0)  # fmt: skip


@functools.lru_cache(maxsize=1 << 16)  # heap blocks repeat a few size classes; each call costs ~25 µs
def _go_exp(x: float) -> float:
    """Go's math.Exp on amd64 with FMA (math/exp_amd64.s). It differs from libm's exp in the last
    bit for ~7% of inputs, which now and then moves pprof's truncated heap values by one."""
    if x != x or x > 7.09782712893384e02:
        return x if x != x else float("inf")
    k = round(1.4426950408889634073599246810018920 * x) if x > -1e10 else -(1 << 31)  # CVTSD2SL: half-even
    k = k if -(1 << 31) <= k < (1 << 31) else -(1 << 31)
    if not -52 <= k + 0x3FF < 0x7FF:
        return 0.0 if k + 0x3FF < -52 else float("inf")
    x = _fma(-0.69314718055966295651160180568695068359375, float(k), x)
    x = _fma(-0.28235290563031577122588448175013436025525412068e-12, float(k), x) * 0.0625
    p = 2.4801587301587301587e-5
    for c in _EXP_POLY:
        p = _fma(p, x, c)
    x = x * p
    for _ in range(3):
        x = x * (x + 2.0)
    x, e = _fma(x, x + 2.0, 1.0), k + 0x3FF
    return x * _pow2(e + 0x3FE) * _pow2(1) if e <= 0 else x * _pow2(e)  # subnormals: two steps, as in the asm


def _unsample(count: int, size: int, rate: int) -> tuple[int, int]:
    """scaleHeapSample: divide by 1-exp(-avg/rate), the chance that a Poisson sampler saw the block."""
    if count == 0 or size == 0 or rate <= 1:
        return (count, size) if count and size else (0, 0)
    denom = 1.0 - _go_exp(-(float(size) / float(count)) / float(rate))
    scale = 1.0 / denom if denom else float("inf")
    return _f2i(float(count) * scale), _f2i(float(size) * scale)


def _lines(data: bytes) -> list[bytes]:
    """bufio.ScanLines: split at LF, drop one trailing CR, no empty token after a final LF."""
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in data.split(b"\n")]
    if data.endswith(b"\n") or not data:
        lines.pop()
    if any(len(ln) >= _MAX_LINE for ln in lines):
        raise ParseError(f"bufio.Scanner: token too long (a line of {_MAX_LINE} bytes or more)")
    return lines


def _text(line: bytes) -> str:
    return line[:200].decode("utf-8", "replace")


def _skip(line: bytes) -> bool:  # pprof's isSpaceOrComment
    return line.strip(_WS)[:1] in (b"", b"#")


def _until(lines: list[bytes], i: int, stop: Callable[[bytes], bool]) -> int:
    """Index of the first line from i that is neither blank nor a comment and satisfies ``stop``."""
    return next((j for j in range(i, len(lines)) if not _skip(lines[j]) and stop(lines[j])), len(lines))


def _maps_after(lines: list[bytes], i: int) -> list[bytes]:
    """parseAdditionalSections: skip to the memory-map sentinel; the mappings follow it."""
    j = next((j for j in range(i, len(lines)) if any(s in lines[j] for s in _MAP_SENTINELS)), len(lines))
    return lines[j + 1 :]


def _callers(line: bytes, text: bytes) -> list[int]:
    """The hex addresses, each minus one to land on the call (Go 1.19's text parsers adjust every frame)."""
    addrs = [int(h, 16) for h in _HEX.findall(text)]
    if any(a > _M64 for a in addrs):
        raise ParseError(f"malformed sample: {_text(line)}: failed to parse as hex 64-bit number")
    return [(a - 1) & _M64 for a in addrs]


def _parse_heap(lines: list[bytes]) -> _Raw | None:
    if m := _HEAP_HEADER.search(lines[0]):
        rate = _go_int(m[6]) if m[6] else 0
        if rate is None or m[5] not in (b"heapz_v2", b"heap_v2", b"heapprofile", b"heap"):
            raise ParseError(f"{_UNRECOGNIZED}: heap profile header {_text(lines[0])!r}")
        has_alloc = (m[3] != m[1] and m[3] != b"0") or (m[4] != m[2] and m[4] != b"0")
        v2, rate = m[5] != b"heapprofile", {b"heapprofile": 1, b"heap": rate // 2}.get(m[5], rate)
    elif _GROWTH_HEADER.search(lines[0]):
        rate, has_alloc, v2 = 1, False, False
    else:
        return None
    names = ("alloc_objects", "alloc_space", "inuse_objects", "inuse_space") if has_alloc else ("objects", "space")
    raw = _Raw(tuple(ValueType(n, "count" if n.endswith("objects") else "bytes") for n in names), _SPACE, rate)
    stop = _until(lines, 1, lambda ln: any(s in ln for s in _MAP_SENTINELS))
    for line in (ln.strip(_WS) for ln in lines[1:stop] if not _skip(ln)):
        if (s := _HEAP_SAMPLE.search(line)) is None:
            raise ParseError(f"unexpected number of sample values: got 0, want 6 (in {_text(line)!r})")
        values, blocksize = [], 0
        for what, c, z in ([("allocation", s[3], s[4])] if has_alloc else []) + [("inuse", s[1], s[2])]:
            count, size = _go_int(c), _go_int(z)
            if count is None or size is None:
                raise ParseError(f"malformed sample: {_text(line)}: value out of range")
            if count == 0 and size != 0:
                raise ParseError(f"{what} count was 0 but {what} bytes was {size}")
            if count != 0:
                q = abs(size) // abs(count)
                blocksize = _i64(q if (size < 0) == (count < 0) else -q)  # Go's / truncates toward zero
                count, size = _unsample(count, size, rate) if v2 else (count, size)
            values += [count, size]
        raw.stacks.append(_callers(line, s[5]))
        raw.values.append(values)
        raw.blocksizes.append(blocksize)
    raw.maps = _maps_after(lines, stop)
    return raw


def _parse_count(lines: list[bytes]) -> _Raw | None:
    """Go's goroutine/threadcreate debug=1 text: ``N @ 0x… 0x…`` records."""
    i = _until(lines, 0, lambda ln: True)
    if i == len(lines) or (m := _COUNT_START.fullmatch(lines[i])) is None:
        return None
    kind = ValueType(m[1].decode("utf-8", "replace"), "count")
    raw = _Raw((kind,), kind, 1)
    stop = _until(lines, i + 1, lambda ln: ln.startswith(b"---"))
    for k in (k for k in range(i + 1, stop) if not _skip(lines[k])):
        s = _COUNT_SAMPLE.fullmatch(lines[k])
        n = _go_int(s[1], base0=True) if s else None
        if s is None or n is None or any(int(a, 16) > _M64 for a in s[2].split()):
            raise ParseError(f"malformed profile format (line {k + 1}: {_text(lines[k])!r} is not 'count @ 0xaddr…')")
        raw.stacks.append(_callers(lines[k], s[2]))
        raw.values.append([n])
    raw.maps = _maps_after(lines, stop)
    return raw


def _parse_contention(lines: list[bytes]) -> _Raw | None:
    """``--- contention:``/``--- mutex:`` (Go debug=1) and ``--- contentionz`` (C++) text profiles."""
    if not lines[0].startswith((b"--- contentionz ", b"--- mutex:", b"--- contention:")):
        return None
    raw, cpu_hz = _Raw(_CONTENTION_TYPES, _CONTENTION_TYPES[0], 1), 0
    i = _until(lines, 1, lambda ln: ln.strip(_WS).startswith(b"---") or b"=" not in ln)
    for line in (ln for ln in lines[1:i] if not _skip(ln)):  # "attribute = value" lines
        key, val = (part.strip(_WS) for part in line.split(b"=", 1))
        if key == b"discarded samples":
            continue
        if key not in (b"cycles/second", b"sampling period", b"ms since reset") or (v := _go_int(val, True)) is None:
            return None  # errUnrecognized: pprof tries its next parser
        if key == b"cycles/second":
            cpu_hz = v
        elif key == b"sampling period":
            raw.period = v
        else:
            raw.duration_nanos = _i64(v * 1_000_000)
    stop = _until(lines, i, lambda ln: ln.strip(_WS).startswith(b"---"))
    for line in (ln.strip(_WS) for ln in lines[i:stop] if not _skip(ln)):
        if (s := _CONTENTION_SAMPLE.search(line)) is None:
            return None
        delay, count = _go_int(s[1]), _go_int(s[2])
        if delay is None or count is None:
            raise ParseError(f"malformed sample: {_text(line)}: value out of range")
        if raw.period > 0:
            if cpu_hz > 0:  # cycles → nanoseconds, scaled by the sampling period
                delay = _f2i(float(delay) * float(raw.period) / (float(cpu_hz) / 1e9))
            count = _i64(count * raw.period)
        raw.stacks.append(_callers(line, s[3]))
        raw.values.append([count, delay])
    raw.maps = _maps_after(lines, stop)
    return raw


def _refuse_java(raw: bytes) -> None:
    """Java heapz/contentionz: raise pprof's sample error, else refuse (not supported here)."""
    head, _, body = raw.partition(b"\n")
    kind = {b"--- heapz 1 ---": "heap", b"--- contentionz 1 ---": "contention"}.get(head.strip(_WS))
    if kind is None:
        return
    for line in filter(None, (ln.strip(_WS) for ln in body.split(b"\n")[:-1])):  # newline-terminated lines only
        if _JAVA_ATTRIBUTE.search(line):
            continue
        if (s := _JAVA_SAMPLE.search(line)) is None:
            break
        if kind == "heap" and _go_int(s[2], base0=True) == 0:
            raise ParseError(f"parsing sample {_text(line)}: second value must be non-zero")
    raise ParseError(f"legacy Java {kind}z profiles are not supported; convert them with `go tool pprof -proto`")


def _cpu_header(raw: bytes) -> tuple[str, int, int] | None:
    """gperftools' header words (0, 3, 0 or 1 for Java, period in µs, 0); 32/64-bit, either endian."""
    for fmt in ("<I", ">I", "<Q", ">Q"):
        size = struct.calcsize(fmt)
        w = struct.unpack_from(fmt[0] + "5" + fmt[1], raw) if len(raw) >= 5 * size else (1,)
        if w[0] == 0 and w[1] == 3 and w[2] in (0, 1) and w[3] > 0 and w[4] == 0:
            return fmt, size, w[2]
    return None


def _parse_cpu(data: bytes) -> _Raw | None:
    if (hdr := _cpu_header(data)) is None:
        return None
    fmt, size, java = hdr
    if java:
        raise ParseError("legacy Java CPU profiles are not supported; convert them with `go tool pprof -proto`")
    raw = _Raw(_CPU_TYPES, _CPU_TYPES[1], _i64(struct.unpack_from(fmt, data, 3 * size)[0] * 1000))
    words = np.frombuffer(data, np.dtype(fmt[0] + ("u4" if size == 4 else "u8")), count=len(data) // size)
    pos, rest = 5, b""  # in words; rest = the bytes after the end-of-data record
    while pos * size < len(data):
        left = len(data) - (pos + 2) * size
        if left < 0 or int(words[pos + 1]) > left // 4:
            raise ParseError(f"{_UNRECOGNIZED}: truncated CPU sample record at byte {pos * size}")
        count, nstk = int(words[pos]), int(words[pos + 1])
        addrs = [int(a) for a in words[pos + 2 : pos + 2 + nstk]]
        truncated, pos = len(addrs) < nstk, pos + 2 + nstk
        addrs += [0] * (nstk - len(addrs))  # pprof reads missing words as 0
        if count == 0 and nstk == 1 and addrs[0] == 0:
            rest = data[pos * size :]
            break
        raw.stacks.append(addrs[:1] + [(a - 1) & _M64 for a in addrs[1:]])  # the leaf is not a return address
        raw.values.append([_i64(count), _i64(_i64(count) * raw.period)])
        if truncated:
            break
    for _ in range(2):  # a 2nd frame on (nearly) every sample was pushed by the signal handler: drop it
        n, seconds = len(raw.stacks), Counter(st[1] for st in raw.stacks if len(st) > 1)
        if (addr := next((a for a, c in seconds.items() if c >= n - n // 32), None)) is not None:
            for st in raw.stacks:
                if len(st) > 1 and st[1] == addr:
                    del st[1]
    raw.maps = _lines(rest) if rest else []
    return raw


def _parse_maps(lines: list[bytes]) -> list[_Map]:
    """/proc/self/maps or pprof's brief form; executable entries only; ``attr=value`` defines ``$attr``."""
    out: list[_Map] = []
    attrs: dict[bytes, bytes] = {}
    for line in lines:
        line = line[lp.end() :] if (lp := _LOG_PREFIX.match(line)) else line
        if attrs:  # strings.NewReplacer: leftmost match, earliest definition first
            line = re.sub(b"|".join(map(re.escape, attrs)), lambda m: attrs[m[0]], line)
        g: tuple[bytes | None, ...] | None = None
        if me := _PROC_MAPS.match(line):
            g = (me[1], me[2], me[3], me[5], me[4], None)  # start, limit, perm, file, offset, build id
        elif mb := _BRIEF_MAPS.match(line):
            g = (mb[1], mb[2], mb[3], mb[4], mb[5], mb[6])
        if g is not None and g[2] and b"x" not in g[2]:
            continue  # not executable
        nums = [int(v or b"0", 16) for v in (g[0], g[1], g[4])] if g else [1 << 64]
        if g is None or max(nums) > _M64:
            if len(kv := line.split(b"=", 1)) == 2:
                attrs.setdefault(b"$" + kv[0].strip(_WS), kv[1].strip(_WS))
            continue
        file, build_id = ((v or b"").decode("utf-8", "replace") for v in (g[3], g[5]))
        out.append(_Map(nums[0], nums[1], nums[2], file, build_id))
    return out


def _joins(a: _Map, b: _Map) -> bool:  # pprof's adjacent(): one mapping split in two
    if (a.file and b.file and a.file != b.file) or (a.build_id and b.build_id and a.build_id != b.build_id):
        return False
    return a.limit == b.start and not (a.offset and b.offset and (a.offset + a.limit - a.start) & _M64 != b.offset)


def _assign_mappings(maps: list[_Map], addresses: list[int]) -> tuple[list[_Map], list[int]]:
    """massageMappings + remapMappingIDs: join split mappings, main binary first, a mapping per location."""
    merged: list[_Map] = []
    for m in maps:
        if merged and _joins(merged[-1], m):
            last = merged[-1]
            last.limit, last.file, last.build_id = m.limit, m.file or last.file, m.build_id or last.build_id
        else:
            merged.append(m)
    for i, m in enumerate(merged):
        f = m.file.replace("(deleted)", "").strip()
        if f and not _LIB.search(f) and not f.startswith("["):
            merged[0], merged[i] = merged[i], merged[0]
            break
    if len(merged) > 1 and merged[0].file.startswith("/anon_hugepage") and merged[0].limit == merged[1].start:
        merged.pop(0)
    if merged and (merged[0].start - merged[0].offset) & _M64 == 0x400000:
        merged[0].start, merged[0].offset = 0x400000, 0
    owner: list[int] = []
    fake: int | None = None
    for addr in addresses:
        hit = next((i for i, m in enumerate(merged) if m.start <= addr < m.limit), None) if addr else None
        if hit is None and addr:  # a split mapping whose first part was not listed: extend it down
            hit = next((i for i, m in enumerate(merged) if m.offset and (m.start - m.offset) & _M64 <= addr < m.start), None)  # fmt: skip
            if hit is not None:
                merged[hit].start, merged[hit].offset = merged[hit].start - merged[hit].offset, 0
            elif fake is None:  # no maps at all (Go's handlers): one mapping spanning everything
                fake = len(merged)
                merged.append(_Map(0, _M64, 0, ""))
            hit = fake if hit is None else hit
        owner.append(0 if hit is None else hit + 1)
    return merged, owner


def _build(raw: _Raw, cpu: bool) -> Profile:
    ids: dict[int, int] = {}
    for st in raw.stacks:  # remapLocationIDs: ids by first use, leaf first
        for a in st:
            ids.setdefault(a, len(ids) + 1)
    maps, owner = _assign_mappings(_parse_maps(raw.maps), list(ids))
    if cpu:  # cleanupDuplicateLocations: the leaf repeated as an adjusted caller frame
        for st in raw.stacks:
            if len(st) > 1 and st[0] == (st[1] + 1) & _M64:
                del st[1]
    sets = {b: i + 1 for i, b in enumerate(dict.fromkeys(raw.blocksizes))}
    samples = Samples(
        offsets=offsets_of([len(st) for st in raw.stacks]),
        location_ids=np.array([ids[a] for st in raw.stacks for a in st], np.uint64),
        values=np.array(raw.values, np.int64).reshape(len(raw.values), len(raw.sample_types)),
        labelset_index=np.array([sets[b] for b in raw.blocksizes] or np.zeros(len(raw.stacks)), np.int32),
        labelsets=[(), *((Label("bytes", num=b),) for b in sets)],
    )
    mappings = [Mapping(i + 1, m.start, m.limit, m.offset, m.file, m.build_id) for i, m in enumerate(maps)]
    locations = [Location(i, mid, a, ()) for (a, i), mid in zip(ids.items(), owner, strict=True)]
    names = tuple(t.type for t in raw.sample_types)  # addLegacyFrameInfo
    drop, keep = (_ALLOC_DROP, _ALLOC_KEEP) if names in _HEAPZ_TYPES else (_CPU_DROP, "")
    profile = Profile.build(
        raw.sample_types,
        samples,
        mappings=mappings,
        locations=locations,
        drop_frames=_LOCK_DROP if names == ("contentions", "delay") else drop,
        keep_frames=keep,
        duration_nanos=raw.duration_nanos,
        period_type=raw.period_type,
        period=raw.period,
    )
    return profile  # checked where it becomes columns (service.pprof.decode.from_profile)


def looks_legacy(raw: bytes) -> bool:
    """Cheap sniff (first 4 KiB) for a legacy format pprof would try; it does not promise a parse."""
    head = raw[:4096].split(b"\n")
    first = next((ln.rstrip(b"\r") for ln in head if not _skip(ln)), b"")
    return bool(
        _cpu_header(raw)
        or _HEAP_HEADER.search(head[0])
        or _GROWTH_HEADER.search(head[0])
        or _COUNT_START.fullmatch(first)
        or _THREADZ.search(first)
        or head[0].startswith((b"--- contentionz ", b"--- mutex:", b"--- contention:", b"--- heapz 1 ---"))
    )


def parse_legacy(raw: bytes) -> Profile:
    """Parse a legacy profile as ``go tool pprof`` does, trying its parsers in its order; ParseError if none fits."""
    if (cpu := _parse_cpu(raw)) is not None:
        return _build(cpu, cpu=True)
    if not raw:
        raise ParseError("empty input file")
    lines = _lines(raw)
    for parser in (_parse_heap, _parse_count):
        if (parsed := parser(lines)) is not None:
            return _build(parsed, cpu=False)
    if (i := _until(lines, 0, lambda ln: True)) < len(lines) and _THREADZ.search(lines[i]):
        raise ParseError("legacy threadz profiles are not supported; convert them with `go tool pprof -proto`")
    if (parsed := _parse_contention(lines)) is not None:
        return _build(parsed, cpu=False)
    _refuse_java(raw)
    raise ParseError(f"{_UNRECOGNIZED}: not a legacy heap, goroutine, threadcreate, contention or CPU profile")
