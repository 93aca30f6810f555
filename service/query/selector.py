"""Prometheus-style label selectors: ``process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name="x",env=~"prod|eu"}``.

Errors name the position and what was expected, as Prometheus' parser does. Regexes are
fully anchored (``=~"a"`` matches ``a``, not ``abc``), as in Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import InvalidRequest
from service.query.regex import compile_regex
from service.types import ProfileType, resolve_profile_type

__all__ = ["Matcher", "Query", "format_selector", "parse_labels", "parse_query", "parse_selector"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_OPS = ("=~", "!~", "!=", "=")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "`": "`"}


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: str
    value: str
    _rx: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            object.__setattr__(
                self, "_rx", compile_regex(self.value, f"invalid regex {self.value[:200]!r} for label {self.name!r}")
            )

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"

    def matches(self, labels: Mapping[str, str]) -> bool:
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        hit = self._rx.fullmatch(v) is not None
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True, slots=True)
class Query:
    profile_type: ProfileType
    matchers: tuple[Matcher, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class _Scanner:
    def __init__(self, text: str, offset: int = 0) -> None:
        self.text, self.pos, self.offset = text, 0, offset

    def fail(self, expected: str) -> InvalidRequest:
        got = repr(self.text[self.pos]) if self.pos < len(self.text) else "end of input"
        return InvalidRequest(
            f"invalid selector {self.text!r}: at position {self.pos + self.offset}: expected {expected}, got {got}"
        )

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str) -> None:
        if self.peek() != ch:
            raise self.fail(repr(ch))
        self.pos += 1

    def name(self) -> str:
        self.skip_ws()
        m = _LABEL_NAME.match(self.text, self.pos)
        if not m:
            raise self.fail("a label name")
        self.pos = m.end()
        return m.group()

    def op(self) -> str:
        self.skip_ws()
        for op in _OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise self.fail("one of =, !=, =~, !~")

    def string(self) -> str:
        q = self.peek()
        if q not in ('"', "'", "`"):
            raise self.fail("a quoted label value")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == q:
                self.pos += 1
                return "".join(out)
            if ch == "\\" and q != "`":
                nxt = self.text[self.pos + 1 : self.pos + 2]
                if nxt not in _ESCAPES:
                    raise self.fail('a valid escape (\\n, \\t, \\\\, \\")')
                out.append(_ESCAPES[nxt])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        raise self.fail(f"closing {q}")


def parse_selector(text: str, offset: int = 0) -> tuple[Matcher, ...]:
    """Parse ``{a="b", c=~"d"}`` (braces required; ``{}`` matches everything)."""
    sc = _Scanner(text, offset)
    sc.expect("{")
    matchers: list[Matcher] = []
    while sc.peek() != "}":
        name = sc.name()
        op = sc.op()
        matchers.append(Matcher(name, op, sc.string()))
        if sc.peek() == ",":
            sc.pos += 1
        elif sc.peek() != "}":
            raise sc.fail("',' or '}'")
    sc.pos += 1
    if sc.peek():
        raise sc.fail("end of selector")
    return tuple(matchers)


def parse_labels(text: str) -> dict[str, str]:
    """Series labels for ingest: a selector of ``=`` matchers only, each name at most once."""
    labels: dict[str, str] = {}
    for m in parse_selector(text.strip() or "{}"):
        if m.op != "=":
            raise InvalidRequest(f"invalid labels {text!r}: label {m.name!r} uses {m.op}; series labels take only =")
        if m.name in labels:
            raise InvalidRequest(f"invalid labels {text!r}: label {m.name!r} given twice")
        labels[m.name] = m.value
    return labels


def format_selector(matchers: tuple[Matcher, ...]) -> str:
    """The matchers as a selector a user could type again: ``{service_name="demo",env=~"prod|eu"}``."""
    return "{" + ",".join(str(m) for m in matchers) + "}"


def parse_query(text: str, stored: Collection[ProfileType] | None = None) -> Query:
    """Parse ``<profile type>{<selector>}``; the selector may be omitted.

    The profile type may be a short name (``heap``) or a partial ID (``memory:inuse_space``): the
    query carries the full type it resolves to, completed from the ``stored`` types first (see
    :func:`~service.types.resolve_profile_type`).
    """
    brace = text.find("{")
    head = text if brace < 0 else text[:brace]
    matchers = () if brace < 0 else parse_selector(text[brace:], brace)
    return Query(resolve_profile_type(head.strip(), stored), matchers)
