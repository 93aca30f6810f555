"""numba compilation for the few hot loops that numpy cannot express without a Python loop.

Decoding protobuf and hashing variable-length things (strings, stacks) are sequential per
element; numba turns them into machine code that releases the GIL, so request threads do
this work in parallel. Compiled code is cached on disk next to each module (``__pycache__``)
and loaded in milliseconds by later processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit

__all__ = ["jit"]

F = TypeVar("F", bound=Callable[..., Any])


def jit(f: F) -> F:
    """Compile ``f`` lazily on first call (or load it from the cache), without the GIL."""
    return cast(F, njit(cache=True, nogil=True)(f))
