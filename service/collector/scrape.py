"""One scrape: fetch a pprof endpoint, then turn the bytes into what is stored, or say why not.

Every way a scrape can fail has its own kind, so ``/api/v1/targets`` and ``/metrics`` tell a
refused connection from a typo'd DNS name, an HTML login page, a gzip bomb, or a block
profile that is empty because nobody called ``runtime.SetBlockProfileRate``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass, replace

import numpy as np

from service.collector.delta import CUMULATIVE_TYPES, Deltas
from service.collector.http import BodyTooLarge, HostClient, ProtocolError
from service.collector.targets import TargetSpec
from service.errors import DecompressError, ParseError, ProfileError, ProfileTooLarge
from service.pprof.decode import Envelope, check, decompress, derived, read
from service.pprof.encode import to_message
from service.pprof.model import Function, Line, Location, Mapping, Profile, Samples, ValueType
from service.types import DecodeLimits

__all__ = ["KINDS", "Fetched", "Prepared", "ScrapeFailed", "fetch", "prepare", "stored_name", "warm_up"]

# Error kinds, in the order an operator would check them.
KINDS = (
    "dns",
    "connection_refused",
    "connect",
    "timeout",
    "http_status",
    "not_pprof",
    "malformed",
    "too_large",
    "profiling_disabled",
    "store",
    "internal",
)

# Names of endpoints whose profiles are stored under a standard Pyroscope name.
_STORED_AS = {"godeltaprof_memory": "memory", "godeltaprof_mutex": "mutex", "godeltaprof_block": "block"}
_DISABLED_HINT = {
    "block": "runtime.SetBlockProfileRate is probably not called in the target (block profiling is off by default)",
    "mutex": "runtime.SetMutexProfileFraction is probably not called in the target (mutex profiling is off by default)",
}


class ScrapeFailed(Exception):
    """A scrape that ended without a stored profile, with the kind of failure and what happened."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    seconds: float  # time spent on the request


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a scrape turned into: the profile to store (or ``None``: a delta baseline), and notes."""

    envelope: Envelope | None
    samples: int
    outcome: str  # "stored", "baseline", "rebaseline_restart"
    notes: tuple[str, ...]


def stored_name(spec: TargetSpec) -> str:
    """The profile name a scraped endpoint's series are stored under."""
    return _STORED_AS.get(spec.profile, spec.profile)


async def fetch(client: HostClient, spec: TargetSpec, max_bytes: int) -> Fetched:
    """GET the endpoint within the target's timeout, reading at most ``max_bytes``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    try:
        async with asyncio.timeout(spec.timeout_s):
            r = await client.get(spec.url, spec.params, max_bytes)
        if r.status != 200:
            head = r.body[:200].decode("utf-8", "replace").strip() or "(empty body)"
            raise ScrapeFailed("http_status", f"HTTP {r.status} from {spec.url}: {head}")
        data = r.body
        if r.headers.get("content-encoding", "").lower() == "gzip":
            data = decompress(data, DecodeLimits(max_bytes, max_bytes))  # transport gzip, bounded too
    except ScrapeFailed:
        raise
    except TimeoutError:
        raise ScrapeFailed("timeout", f"no complete answer within {spec.timeout_s:g} s") from None
    except BodyTooLarge:
        raise ScrapeFailed("too_large", f"response exceeds the limit of {max_bytes} bytes") from None
    except ProfileError as exc:
        raise ScrapeFailed("too_large" if isinstance(exc, ProfileTooLarge) else "malformed", str(exc)) from None
    except ProtocolError as exc:
        raise ScrapeFailed("connect", f"bad HTTP response: {exc}") from None
    except OSError as exc:
        raise _connect_failure(exc) from None
    return Fetched(data, loop.time() - t0)


def _connect_failure(exc: OSError) -> ScrapeFailed:
    if isinstance(exc, socket.gaierror):
        return ScrapeFailed("dns", f"cannot resolve host: {exc}")
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return ScrapeFailed("connection_refused", "connection refused (is the target running and listening?)")
    if isinstance(exc, ssl.SSLError):
        return ScrapeFailed("connect", f"TLS: {exc}")
    return ScrapeFailed("connect", f"cannot connect: {exc or type(exc).__name__}")


def prepare(
    spec: TargetSpec,
    data: bytes,
    *,
    limits: DecodeLimits,
    deltas: Deltas,
    scraped_at_ns: int,
    max_samples: int,
    max_stack_depth: int,
) -> Prepared:
    """Check a scraped profile, apply the limits and the delta; never raises anything but ScrapeFailed.

    Most scrapes (CPU, goroutine) are stored as they came: their counts and depths are read off
    the decoded columns, and the envelope goes to the store as is. A profile that must change
    (a delta, kept sample types, truncated stacks) is changed by selecting from its columns.
    """
    try:
        env = read(data, limits)
    except ProfileTooLarge as exc:
        raise ScrapeFailed("too_large", str(exc)) from None
    except DecompressError as exc:
        raise ScrapeFailed("malformed", str(exc)) from None
    except ParseError as exc:
        raise ScrapeFailed("not_pprof", str(exc)) from None
    except ProfileError as exc:
        raise ScrapeFailed("malformed", str(exc)) from None
    try:
        return _prepare(spec, env, deltas, scraped_at_ns, max_samples, max_stack_depth)
    except ProfileError as exc:
        raise ScrapeFailed("malformed", str(exc)) from None


def _prepare(
    spec: TargetSpec, env: Envelope, deltas: Deltas, scraped_at_ns: int, max_samples: int, max_stack_depth: int
) -> Prepared:
    depths = env.columns.sample_locations
    name = stored_name(spec)
    if depths.size == 0 and name in _DISABLED_HINT:
        raise ScrapeFailed("profiling_disabled", f"the {name} profile is empty: {_DISABLED_HINT[name]}")
    if depths.size > max_samples:
        raise ScrapeFailed("too_large", f"{depths.size} samples, more than the limit of {max_samples}")
    deep = int((depths > max_stack_depth).sum())
    cumulative = not spec.delta and any(st.type in CUMULATIVE_TYPES for st in env.header.sample_types)
    if spec.keep_sample_types is None and not deep and not cumulative:
        return Prepared(env, int(depths.size), "stored", ())
    check(env)  # what is changed must be valid first
    notes: list[str] = []
    if spec.keep_sample_types is not None:
        env = _keep(env, spec.keep_sample_types)
    if deep:
        note = f"truncated {deep} stack(s) deeper than {max_stack_depth} frames to their {max_stack_depth} innermost"
        env = _truncate(env, max_stack_depth, f"profstore: {note}")
        notes.append(note)
    if not spec.delta:
        result = deltas.apply(spec.key, env, scraped_at_ns)
        if result.envelope is None:
            return Prepared(None, 0, result.outcome, (*notes, result.detail))
        env = result.envelope
    return Prepared(env, int(env.columns.sample_locations.size), "stored", tuple(notes))


def warm_up() -> None:
    """Run a baseline and a delta once, so their compiled kernels are loaded before the first scrape.

    (Compiling holds the GIL: done during a scrape, it would stall the event loop for seconds.)
    """
    types = (ValueType("contentions", "count"), ValueType("delay", "nanoseconds"))
    p = Profile.build(
        types,
        Samples.of([([1, 2], [1, 10], ()), ([2], [2, 20], ())], 2),
        mappings=[Mapping(1, 0x1000, 0x2000, 0, "bin", "")],
        locations=[Location(1, 1, 0x1001, (Line(1, 3),)), Location(2, 1, 0x1002, (Line(2, 4),))],
        functions=[Function(1, "main.a"), Function(2, "main.b")],
        period_type=types[0],
        period=1,
    )
    spec = TargetSpec("warm-up", "127.0.0.1:1", "mutex", "http://127.0.0.1:1/", {}, False, 15, 10, {}, None)
    deltas = Deltas()
    for i in (1, 2):
        p.samples.values = p.samples.values * i
        prepare(
            spec, to_message(p).SerializeToString(), limits=DecodeLimits(), deltas=deltas,
            scraped_at_ns=i, max_samples=1000, max_stack_depth=1,
        )  # fmt: skip


def _keep(env: Envelope, keep: tuple[tuple[str, str], ...]) -> Envelope:
    """Only the sample types asked for; the scrape fails when none of them is in the profile."""
    h, c = env.header, env.columns
    wanted = set(keep)
    cols = [i for i, st in enumerate(h.sample_types) if (st.type, st.unit) in wanted]
    if not cols:
        have = ", ".join(str(st) for st in h.sample_types)
        want = ", ".join(f"{t}/{u}" for t, u in keep)
        raise ScrapeFailed("malformed", f"keep_sample_types ({want}) matches none of the profile's types ({have})")
    values = c.values.reshape(c.sample_locations.size, -1)[:, cols]
    nz = np.flatnonzero(np.any(values != 0, axis=1))
    types = tuple(h.sample_types[i] for i in cols)
    default = h.default_sample_type if h.default_sample_type in {st.type for st in types} else ""
    header = replace(h, sample_types=types, default_sample_type=default)
    return derived(env, c.select(nz, values[nz]), header=header, salt=("keep", cols))


def _truncate(env: Envelope, depth: int, comment: str) -> Envelope:
    """Keep each stack's ``depth`` innermost frames (pprof lists a stack leaf first)."""
    h, c = env.header, env.columns
    n = c.sample_locations.size
    cut = c.select(np.arange(n), c.values.reshape(n, -1), depths=np.full(n, depth, np.int64))
    header = replace(h, comments=(*h.comments, comment))
    return derived(env, cut, header=header, salt=("truncate", depth))
