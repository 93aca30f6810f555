"""Value types shared by every layer: profile types, series keys, time ranges.

They are frozen and validate when built, so a malformed one never travels far.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from service.errors import InvalidRequest

__all__ = ["DEFAULT_TENANT", "ProfileType", "TimeRange", "check_tenant", "now_ns", "parse_time"]

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


def now_ns() -> int:
    return time.time_ns()


_RELATIVE = re.compile(r"^now(?:\s*([-+])\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w))?$")
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9, "w": 7 * 86400 * 10**9}


def parse_time(text: str, what: str, now: int | None = None) -> int:
    """Parse a user time into unix nanoseconds.

    Accepted: RFC 3339 (``2026-11-26T14:00:00Z``), unix seconds or milliseconds (told apart by
    magnitude, as Pyroscope does, also µs and ns), ``now``, ``now-1h`` and ``now+5m`` (ms, s, m, h, d, w).
    """
    t = text.strip()
    now = now_ns() if now is None else now
    m = _RELATIVE.match(t)
    if m:
        if m.group(1) is None:
            return now
        span = int(float(m.group(2)) * _UNIT_NS[m.group(3)])
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
            raise InvalidRequest(f"from ({self.start} ns) is after until ({self.end} ns): the range is reversed")

    @classmethod
    def parse(cls, from_: str | None, until: str | None, default_span_ns: int = 3600 * 10**9) -> TimeRange:
        now = now_ns()
        end = parse_time(until, "until", now) if until else now
        start = parse_time(from_, "from", now) if from_ else end - default_span_ns
        return cls(start, end)
