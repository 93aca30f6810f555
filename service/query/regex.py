"""User regexes (selectors, focus/ignore/hide) compiled by RE2: linear time in the input, whatever the pattern.

Python's ``re`` backtracks, so a pattern such as ``(a+)+$`` takes exponential time on a label
value of a few dozen characters: one request could hold a worker for hours. RE2 never
backtracks, bounds its memory, and its syntax is Go's ``regexp`` — what Prometheus, Pyroscope
and ``go tool pprof`` accept — so a selector means here what it means there.
"""

from __future__ import annotations

from typing import Any

import re2

from service.errors import InvalidRequest

__all__ = ["MAX_PATTERN", "compile_regex"]

MAX_PATTERN = 4096  # characters; longer patterns are refused before compiling

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the caller's 400, not a line on our stderr
_OPTIONS.max_mem = 8 << 20  # bytes of compiled program; a larger one is refused as too complex


def compile_regex(pattern: str, invalid: str) -> Any:
    """The compiled pattern (``search``/``fullmatch`` as in ``re``); else InvalidRequest("<invalid>: why")."""
    if len(pattern) > MAX_PATTERN:
        raise InvalidRequest(f"{invalid}: {len(pattern)} characters, longer than {MAX_PATTERN}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidRequest(f"{invalid}: {detail}") from None
