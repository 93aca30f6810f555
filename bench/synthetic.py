"""Synthetic profile streams from real profiles, for evaluating detection (bench/regressions.py, tests).

CPU: the six back-to-back CPU profiles of ``corpus/series`` (one real Go program) are pooled into
one distribution over call stacks. Each synthetic scrape draws its stack mix from a Dirichlet
around that pool, whose spread is fitted so that 2-second profiles vary as much as the six real
ones do (Pearson dispersion), and then draws ``n`` samples from that mix (multinomial), which is
how a sampling profiler's counts come about. A slowdown of a function by ``x`` multiplies the
weight of the stacks where it is the leaf by ``1 + x`` (it burns more CPU per call, as often).

Gauges (in-use memory, goroutines): a level per site from a real profile, noise per scrape
(a garbage collector's sawtooth for memory, a Poisson count for goroutines) and a leak that
adds a fixed amount per minute at one site.
"""

from __future__ import annotations

import gzip
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.analysis.panel import Panel, unit_key
from service.pprof import profile_pb2 as pb
from service.store.reads import SeriesRow
from service.types import ProfileType

__all__ = ["StackModel", "cpu_model", "draw_many", "gauge_model", "panel_of", "to_pprof"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
CPU_TYPE = ProfileType.parse("process_cpu:cpu:nanoseconds:cpu:nanoseconds")
PERIOD = 10_000_000  # 100 Hz


@dataclass(slots=True)
class StackModel:
    names: list[str]
    stacks: list[tuple[int, ...]]  # function indexes, leaf first
    p: F64  # probability (or level) per stack
    kappa: float = float("inf")  # Dirichlet concentration of the per-scrape mix
    leaf: I64 = field(init=False)
    contains: F64 = field(init=False)  # (stacks, functions) 1 where the function is on the stack

    def __post_init__(self) -> None:
        self.leaf = np.array([s[0] for s in self.stacks], np.int64)
        self.contains = np.zeros((len(self.stacks), len(self.names)))
        for i, s in enumerate(self.stacks):
            self.contains[i, list(set(s))] = 1.0

    def index(self, name: str) -> int:
        return self.names.index(name)

    def flat_shares(self) -> F64:
        return np.bincount(self.leaf, weights=self.p, minlength=len(self.names)) / self.p.sum()

    def separation(self, f: int, x: float, n: int, recent: int, baseline: int) -> float:
        """How many standard errors a ``+x`` slowdown of function ``f`` moves its mean flat share,
        ``recent`` scrapes of ``n`` samples against ``baseline`` scrapes: what any test of shares has
        to work with. One scrape's share varies as a Dirichlet-multinomial share does,
        ``p (1 - p) (n + kappa) / (n (kappa + 1))``: sampling noise plus the workload's own drift."""
        p = float(self.flat_shares()[f])
        rise = p * (1 + x) / (1 + p * x) - p
        drift = 1.0 if not np.isfinite(self.kappa) else (n + self.kappa) / (self.kappa + 1)
        var = p * (1 - p) / n * drift
        return rise / float(np.sqrt(var * (1 / recent + 1 / baseline)))

    def callers(self) -> dict[str, list[str]]:
        out: dict[str, set[str]] = {}
        for s in self.stacks:
            for a, b in itertools.pairwise(s):
                if a != b:
                    out.setdefault(self.names[a], set()).add(self.names[b])
        return {k: sorted(v) for k, v in out.items()}

    def weights(self, slow: dict[int, float] | None) -> F64:
        """Stack weights with each ``function index -> x`` slowed down by ``1 + x`` where it is the leaf."""
        w = self.p.copy()
        for f, x in (slow or {}).items():
            w[self.leaf == f] *= 1.0 + x
        return w

    def draw(self, rng: np.random.Generator, n: int, slow: dict[int, float] | None = None) -> F64:
        """Sample counts per stack of one scrape with ``n`` samples at the unslowed load."""
        w = self.weights(slow)
        n_now = rng.poisson(n * w.sum() / self.p.sum())
        mix = w / w.sum()
        if np.isfinite(self.kappa):
            mix = rng.dirichlet(mix * self.kappa + 1e-9)
        return rng.multinomial(n_now, mix).astype(np.float64)


def draw_many(
    model: StackModel, rng: np.random.Generator, count: int, n: int, slow: dict[int, float] | None = None
) -> F64:
    """``count`` scrapes at once: (count, stacks) sample counts, as :meth:`StackModel.draw` each."""
    if count == 0:
        return np.zeros((0, len(model.stacks)))
    w = model.weights(slow)
    n_now = rng.poisson(n * w.sum() / model.p.sum(), count)
    mix = np.broadcast_to(w / w.sum(), (count, w.size))
    if np.isfinite(model.kappa):
        mix = rng.dirichlet(w / w.sum() * model.kappa + 1e-9, count)
    return rng.multinomial(n_now, mix).astype(np.float64)


def _frames(prof: pb.Profile) -> list[tuple[tuple[str, ...], list[int]]]:
    """Each sample's frames (function names, leaf first, inlined frames expanded) and values."""
    st = [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in prof.string_table]
    fname = {f.id: st[f.name] for f in prof.function}
    loc = {lc.id: [fname[ln.function_id] for ln in lc.line] for lc in prof.location}
    out = []
    for s in prof.sample:
        names = tuple(n for lid in s.location_id for n in loc[lid])
        if names:
            out.append((names, list(s.value)))
    return out


def _read(path: Path) -> pb.Profile:
    m = pb.Profile()
    data = path.read_bytes()
    m.ParseFromString(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)
    return m


def cpu_model(corpus: Path) -> StackModel:
    """The pooled stack distribution of ``corpus/series/cpu_0*.pb.gz`` and its fitted spread."""
    per_file: list[dict[tuple[str, ...], float]] = []
    for path in sorted((corpus / "series").glob("cpu_0*.pb.gz")):
        counts: dict[tuple[str, ...], float] = {}
        for names, v in _frames(_read(path)):
            counts[names] = counts.get(names, 0.0) + v[0]
        per_file.append(counts)
    keys = sorted({k for c in per_file for k in c})
    names = sorted({n for k in keys for n in k})
    col = {n: i for i, n in enumerate(names)}
    stacks = [tuple(col[n] for n in k) for k in keys]
    mat = np.array([[c.get(k, 0.0) for k in keys] for c in per_file])  # (files, stacks)
    model = StackModel(names, stacks, mat.sum(axis=0))
    # Pearson dispersion of function flat shares across the real profiles, vs a pure multinomial.
    flat = mat @ np.eye(len(names))[model.leaf]  # (files, functions)
    n_i = mat.sum(axis=1)
    pooled = flat.sum(axis=0) / n_i.sum()
    keep = pooled > 0.01
    share = flat[:, keep] / n_i[:, None]
    p = pooled[keep]
    phi = float(np.mean((n_i[:, None] * (share - p) ** 2 / (p * (1 - p))).sum(axis=0) / (len(n_i) - 1)))
    n_bar = float(n_i.mean())
    model.kappa = (n_bar - phi) / (phi - 1) if phi > 1 else float("inf")
    return model


def gauge_model(path: Path, value_index: int) -> StackModel:
    """Levels per stack of one gauge profile (in-use bytes: value 3 of a Go heap profile; goroutines: 0)."""
    levels: dict[tuple[str, ...], float] = {}
    for names, v in _frames(_read(path)):
        levels[names] = levels.get(names, 0.0) + v[value_index]
    keys = sorted(k for k, v in levels.items() if v > 0)
    names = sorted({n for k in keys for n in k})
    col = {n: i for i, n in enumerate(names)}
    return StackModel(names, [tuple(col[n] for n in k) for k in keys], np.array([levels[k] for k in keys]))


def panel_of(
    model: StackModel,
    counts: F64,
    ts: I64,
    unit: I64,
    *,
    profile_type: ProfileType = CPU_TYPE,
    service: str = "svc",
    versions: list[str] | None = None,
    duration_s: float = 15.0,
) -> Panel:
    """Detection's input straight from per-scrape stack counts (``counts``: scrapes x stacks).

    ``versions`` (per scrape) gives each scrape's ``version`` label: each (instance, version) is
    its own series, as the store would have it.
    """
    n_units = int(unit.max()) + 1 if unit.size else 0
    series: list[SeriesRow] = []
    index: dict[tuple[int, str], int] = {}
    series_index = np.zeros(ts.size, np.int64)
    for i in range(ts.size):
        v = versions[i] if versions else ""
        key = (int(unit[i]), v)
        if key not in index:
            labels = {"service_name": service, "instance": f"host-{key[0]}:6060"}
            if v:
                labels["version"] = v
            index[key] = len(series)
            series.append(SeriesRow(len(series) + 1, profile_type, labels, 0, 0))
        series_index[i] = index[key]
    units = [unit_key({"service_name": service, "instance": f"host-{u}:6060"}, ("version",)) for u in range(n_units)]
    flat = counts @ np.eye(len(model.names))[model.leaf]
    cum = counts @ model.contains
    p = Panel(
        profile_type, service, series, units, ts, series_index, unit, counts.sum(axis=1), list(model.names), flat, cum,
        np.full(ts.size, duration_s),
    )  # fmt: skip
    p.callers = model.callers()
    return p


def to_pprof(model: StackModel, counts: F64, ts_ns: int, *, kind: str = "cpu", duration_ns: int = 15 * 10**9) -> bytes:
    """One scrape as a gzipped pprof: ``cpu`` ([samples, cpu ns]), ``heap`` ([inuse_objects, inuse_space]) or ``goroutine``."""
    m = pb.Profile()
    strings = [""]
    code: dict[str, int] = {"": 0}

    def s(x: str) -> int:
        if x not in code:
            code[x] = len(strings)
            strings.append(x)
        return code[x]

    types = {
        "cpu": ([("samples", "count"), ("cpu", "nanoseconds")], ("cpu", "nanoseconds"), PERIOD),
        "heap": ([("inuse_objects", "count"), ("inuse_space", "bytes")], ("space", "bytes"), 524288),
        "goroutine": ([("goroutine", "count")], ("goroutine", "count"), 1),
    }[kind]
    for t, u in types[0]:
        m.sample_type.add(type=s(t), unit=s(u))
    m.period_type.type, m.period_type.unit = s(types[1][0]), s(types[1][1])
    m.period = types[2]
    for i, name in enumerate(model.names):
        m.function.add(id=i + 1, name=s(name), system_name=s(name))
        m.location.add(id=i + 1).line.add(function_id=i + 1)
    for stack, c in zip(model.stacks, counts.tolist(), strict=True):
        if c <= 0:
            continue
        v = round(c)
        values = {"cpu": [v, v * PERIOD], "heap": [max(1, v // 1024), v], "goroutine": [v]}[kind]
        m.sample.add(location_id=[f + 1 for f in stack], value=values)
    m.time_nanos = ts_ns
    m.duration_nanos = duration_ns
    m.string_table.extend(x.encode() for x in strings)
    return gzip.compress(m.SerializeToString(), 1)
