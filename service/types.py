"""Value types shared by every layer: profile types, series keys, time ranges.

They are frozen and validate when built, so a malformed one never travels far.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from service.errors import InvalidRequest, UnknownProfileType

__all__ = [
    "DEFAULT_TENANT",
    "I64",
    "KNOWN_PROFILE_TYPES",
    "PROFILE_TYPE_ALIASES",
    "U64",
    "DecodeLimits",
    "ProfileType",
    "TimeRange",
    "check_tenant",
    "format_time",
    "now_ns",
    "parse_duration",
    "parse_time",
    "resolve_profile_type",
    "unknown_type_message",
]

# The column types of every layer: int64 values, offsets and row indexes; uint64 ids and hashes.
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Size caps on a profile body. The uncompressed cap is what stops gzip bombs: a 50 KiB body can inflate to GiBs.

    Here, not in ``pprof/``, because settings build it and settings sit below ``pprof`` in the import layers.
    """

    max_compressed_bytes: int = 64 << 20
    max_uncompressed_bytes: int = 256 << 20


# The tenant of a request without X-Scope-OrgID, as Pyroscope names it with multitenancy off.
DEFAULT_TENANT = "anonymous"

# Tenant ids as Pyroscope (Cortex's tenant package) accepts them: at most 150 of these characters.
_TENANT = re.compile(r"^[a-zA-Z0-9!\-_.*'()]{1,150}$")


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant id; else InvalidRequest saying why.

    ``|`` joins tenants for a cross-tenant query in Pyroscope; profstore never mixes tenants' data,
    so it is refused with its own message.
    """
    if "|" in tenant:
        raise InvalidRequest(f"tenant {tenant!r}: cross-tenant queries (a|b) are not supported; name one tenant")
    if tenant in (".", "..") or not _TENANT.match(tenant):
        raise InvalidRequest(
            f"invalid tenant id {tenant[:160]!r}: want 1-150 characters of letters, digits and !-_.*'() "
            "(not '.' or '..')"
        )
    return tenant


_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.\-]*$")


@dataclass(frozen=True, slots=True)
class ProfileType:
    """``name:sample_type:unit:period_type:period_unit`` as Pyroscope spells it."""

    name: str
    sample_type: str
    sample_unit: str
    period_type: str
    period_unit: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidRequest(f"invalid profile name {self.name!r}: want letters, digits, '_', '.', '-'")
        for part in (self.sample_type, self.sample_unit, self.period_type, self.period_unit):
            if ":" in part or "{" in part:
                raise InvalidRequest(f"invalid profile type part {part!r}: ':' and '{{' are not allowed")

    @classmethod
    def parse(cls, text: str) -> ProfileType:
        parts = text.split(":")
        if len(parts) != 5:
            raise InvalidRequest(
                f"invalid profile type {text!r}: want name:sample_type:unit:period_type:period_unit, "
                "e.g. process_cpu:cpu:nanoseconds:cpu:nanoseconds"
            )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.name}:{self.sample_type}:{self.sample_unit}:{self.period_type}:{self.period_unit}"


# The types Go's runtime profiles are stored as (names as Pyroscope gives them). A partial ID
# (``memory:inuse_space``) that no stored type completes is completed from this list.
KNOWN_PROFILE_TYPES = (
    "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "process_cpu:samples:count:cpu:nanoseconds",
    "memory:inuse_space:bytes:space:bytes",
    "memory:inuse_objects:count:space:bytes",
    "memory:alloc_space:bytes:space:bytes",
    "memory:alloc_objects:count:space:bytes",
    "goroutine:goroutine:count:goroutine:count",
    "threadcreate:threadcreate:count:threadcreate:count",
    "mutex:contentions:count:contentions:count",
    "mutex:delay:nanoseconds:contentions:count",
    "block:contentions:count:contentions:count",
    "block:delay:nanoseconds:contentions:count",
)

# The short names people know from ``go tool pprof`` (``-sample_index``, the /debug/pprof paths)
# and from Pyroscope's UI. Block and mutex mean the delay, which is what pprof shows by default
# for them (the last sample type); heap means in-use space, pprof's default for a heap profile.
PROFILE_TYPE_ALIASES = {
    "cpu": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "process_cpu": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
    "heap": "memory:inuse_space:bytes:space:bytes",
    "memory": "memory:inuse_space:bytes:space:bytes",
    "inuse_space": "memory:inuse_space:bytes:space:bytes",
    "inuse_objects": "memory:inuse_objects:count:space:bytes",
    "allocs": "memory:alloc_space:bytes:space:bytes",
    "alloc_space": "memory:alloc_space:bytes:space:bytes",
    "alloc_objects": "memory:alloc_objects:count:space:bytes",
    "goroutine": "goroutine:goroutine:count:goroutine:count",
    "goroutines": "goroutine:goroutine:count:goroutine:count",
    "threadcreate": "threadcreate:threadcreate:count:threadcreate:count",
    "mutex": "mutex:delay:nanoseconds:contentions:count",
    "block": "block:delay:nanoseconds:contentions:count",
}


def resolve_profile_type(text: str, stored: Collection[ProfileType] | None = None) -> ProfileType:
    """The full profile type ``text`` names: a full ID, a short name (``heap``) or a partial ID.

    A partial ID (``memory:inuse_space``, ``block:contentions``) is completed from the ``stored``
    types first, so a stored type outside the fixed table is found too; then from
    :data:`KNOWN_PROFILE_TYPES`. Anything else is :class:`UnknownProfileType`, with the closest
    name and the stored types: the valid choices are what this tenant holds (``None``: not looked
    up, so the message lists the short names instead).
    """
    t = text.strip()
    if not t:
        raise UnknownProfileType(
            'the query names no profile type: want <profile type>{<selector>}, e.g. cpu{service_name="demo"} '
            "or process_cpu:cpu:nanoseconds:cpu:nanoseconds{}"
        )
    if t.lower() in PROFILE_TYPE_ALIASES:
        return ProfileType.parse(PROFILE_TYPE_ALIASES[t.lower()])
    parts = t.split(":")
    if len(parts) == 5:
        return ProfileType.parse(t)
    if len(parts) < 5 and all(parts):
        for pool in (sorted({str(s) for s in stored or ()}), KNOWN_PROFILE_TYPES):
            hits = [full for full in pool if full.split(":")[: len(parts)] == parts]
            if len(hits) == 1:
                return ProfileType.parse(hits[0])
            if hits:
                raise UnknownProfileType(f'ambiguous profile type "{t}": it can be {", ".join(hits)}; name one')
    raise UnknownProfileType(unknown_type_message(t, stored))


def unknown_type_message(text: str, stored: Collection[ProfileType] | None) -> str:
    """``unknown profile type "cpux"; did you mean "cpu" (process_cpu:…)? stored: …``."""
    full = sorted({str(s) for s in stored or ()})
    names = {**{f: f for f in KNOWN_PROFILE_TYPES}, **{f: f for f in full}, **PROFILE_TYPE_ALIASES}
    for f in [*full, *KNOWN_PROFILE_TYPES]:
        names.setdefault(":".join(f.split(":")[:2]), f)
    close = difflib.get_close_matches(text, list(names), n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f' did you mean "{close[0]}"' + (f" ({names[close[0]]})" if names[close[0]] != close[0] else "") + "?"
    if stored is None:
        return f'unknown profile type "{text}";{hint} short names: {", ".join(PROFILE_TYPE_ALIASES)}'
    return f'unknown profile type "{text}";{hint} stored: {", ".join(full) if full else "none yet"}'


def now_ns() -> int:
    return time.time_ns()


def format_time(ns: int) -> str:
    """Unix nanoseconds as RFC 3339 in UTC (``2026-12-06T13:27:13Z``; milliseconds when there are any)."""
    sec, rest = divmod(ns, 10**9)
    try:
        text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return f"{ns} ns"  # beyond the years datetime can print
    ms = rest // 10**6
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


_UNIT_NS = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
    "w": 7 * 86400 * 10**9,
    "y": 365 * 86400 * 10**9,
}
_PART = r"\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y)"
_DURATION = re.compile(rf"(?:{_PART})+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w|y)")
_SECONDS = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def parse_duration(text: str, what: str, *, bare_seconds: bool = True) -> int:
    """A duration in nanoseconds: ``15s``, ``1m``, ``1h30m``, ``500ms`` as Prometheus and Grafana write them
    (units ns, us, ms, s, m, h, d, w, y); with ``bare_seconds``, a plain number is seconds, as ``step`` always took.

    The sign of a plain number is kept: whether a negative value makes sense is the caller's to say.
    """
    t = text.strip()
    ns: int | None = None
    if bare_seconds and _SECONDS.fullmatch(t):
        ns = int(Decimal(t) * 10**9)
    elif _DURATION.fullmatch(t):
        ns = sum(int(Decimal(n) * _UNIT_NS[u]) for n, u in _DURATION_PART.findall(t))
    if ns is None:
        plain = " or a number of seconds" if bare_seconds else ""
        raise InvalidRequest(f"invalid {what} {text!r}: want a duration like 15s, 1m, 1h30m or 500ms{plain}")
    if abs(ns) >= 2**63:  # past what a timestamp holds (292 years): no range is that long
        raise InvalidRequest(f"invalid {what} {text[:100]!r}: longer than 292 years")
    return ns


_RELATIVE = re.compile(r"^now(?:\s*([-+])\s*(\S+))?$")


def parse_time(text: str, what: str, now: int | None = None) -> int:
    """Parse a user time into unix nanoseconds.

    Accepted: RFC 3339 (``2026-11-26T14:00:00Z``), unix seconds or milliseconds (told apart by
    magnitude, as Pyroscope does, also µs and ns), ``now``, ``now-1h``, ``now-1h30m`` and ``now+5m``
    (any duration :func:`parse_duration` reads, with a unit).
    """
    t = text.strip()
    now = now_ns() if now is None else now
    m = _RELATIVE.match(t)
    if m:
        if m.group(1) is None:
            return now
        try:
            span = parse_duration(m.group(2), what, bare_seconds=False)
        except InvalidRequest:
            raise InvalidRequest(
                f"invalid {what} {text!r}: want now-<duration> such as now-1h, now-1h30m or now-15m"
            ) from None
        return now - span if m.group(1) == "-" else now + span
    if re.fullmatch(r"-?\d+(\.\d+)?", t):
        v = Decimal(t)
        digits = len(t.split(".")[0].lstrip("-"))
        scale = 10**9 if digits <= 11 else 10**6 if digits <= 14 else 10**3 if digits <= 17 else 1
        return int(v * scale)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"invalid {what} {text!r}: want RFC 3339 (2026-11-26T14:00:00Z), unix seconds or milliseconds, or now-1h"
        ) from None
    if dt.tzinfo is None:
        raise InvalidRequest(f"invalid {what} {text!r}: RFC 3339 times need a zone (Z or +01:00)")
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A closed range [start, end] in unix nanoseconds."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise InvalidRequest(_reversed(self.start, self.end, ("start", "end")))

    @classmethod
    def parse(
        cls,
        from_: str | None,
        until: str | None,
        default_span_ns: int = 3600 * 10**9,
        names: tuple[str, str] = ("from", "until"),
    ) -> TimeRange:
        """The range of two user times; ``names`` are the parameters the user sent them as, for the errors."""
        now = now_ns()
        end = parse_time(until, names[1], now) if until else now
        start = parse_time(from_, names[0], now) if from_ else end - default_span_ns
        if start > end:
            raise InvalidRequest(_reversed(start, end, names))
        return cls(start, end)


def _reversed(start: int, end: int, names: tuple[str, str]) -> str:
    return f"{names[0]} ({format_time(start)}) is after {names[1]} ({format_time(end)}): the range is reversed"
