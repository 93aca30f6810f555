"""What happened to every target x profile type: the last outcome, never silence.

A target is ``unknown`` until its first scrape ends, ``up`` after a scrape that stored a
profile (or set a delta baseline), ``down`` after one that failed, with the kind and the
message of the failure and how many failed in a row. A run that did not happen is counted as
skipped, with its reason: the previous run still going (``overlap``) or too many scrapes already
waiting to be stored (``store_backlog``).

On a lake, where the live nodes share the targets out, a target that another node scrapes is
``elsewhere`` on this one, with the name of that node: a run left to its owner is not a skipped
run (nothing was lost), so it is not counted as one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from service.collector.targets import TargetSpec

__all__ = ["SKIP_OVERLAP", "SKIP_STORE_BACKLOG", "HealthBook", "TargetHealth"]

# Why a run was skipped.
SKIP_OVERLAP = "overlap"  # the previous run of the same target x type was still going
SKIP_STORE_BACKLOG = "store_backlog"  # the collector's max_pending_stores scrapes were waiting for the writer


@dataclass(frozen=True, slots=True)
class TargetHealth:
    spec: TargetSpec
    health: str = "unknown"  # unknown | up | down | elsewhere (another node of the lake scrapes it)
    last_scrape_ns: int | None = None
    last_duration_s: float | None = None
    last_outcome: str | None = None  # stored | baseline | rebaseline_restart | an error kind
    last_error: str | None = None
    last_error_kind: str | None = None
    consecutive_failures: int = 0
    scrapes: int = 0
    failures: int = 0
    skipped: int = 0  # runs skipped: the previous one was still going, or the store backlog was full
    skipped_store_backlog: int = 0  # of those, skipped because the store backlog was full
    last_skip_reason: str | None = None  # overlap | store_backlog
    last_bytes: int = 0
    last_samples: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    owner: str | None = None  # the node that scrapes it, as of its last due run here (None: not shared out)


class HealthBook:
    """Thread-safe: scrapes finish in worker threads and on the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, TargetHealth] = {}

    def sync(self, specs: list[TargetSpec]) -> None:
        """Track exactly these targets; a changed spec keeps its history, a removed one is dropped."""
        with self._lock:
            old = self._by_key
            self._by_key = {s.key: replace(old[s.key], spec=s) if s.key in old else TargetHealth(s) for s in specs}

    def ok(
        self, key: str, *, at_ns: int, seconds: float, outcome: str, size: int, samples: int, notes: tuple[str, ...]
    ) -> None:
        self._update(key, lambda h: replace(
            h, health="up", last_scrape_ns=at_ns, last_duration_s=seconds, last_outcome=outcome,
            consecutive_failures=0, scrapes=h.scrapes + 1, last_bytes=size, last_samples=samples, notes=notes,
        ))  # fmt: skip

    def failed(self, key: str, *, at_ns: int, seconds: float, kind: str, message: str) -> None:
        self._update(key, lambda h: replace(
            h, health="down", last_scrape_ns=at_ns, last_duration_s=seconds, last_outcome=kind,
            last_error=message, last_error_kind=kind, consecutive_failures=h.consecutive_failures + 1,
            scrapes=h.scrapes + 1, failures=h.failures + 1, notes=(),
        ))  # fmt: skip

    def skipped(self, key: str, *, reason: str = SKIP_OVERLAP) -> None:
        backlog = int(reason == SKIP_STORE_BACKLOG)
        self._update(key, lambda h: replace(
            h, skipped=h.skipped + 1, skipped_store_backlog=h.skipped_store_backlog + backlog, last_skip_reason=reason,
        ))  # fmt: skip

    def elsewhere(self, key: str, *, owner: str) -> None:
        """A due run left to ``owner``, another node; the history of this node's own scrapes stays."""
        self._update(key, lambda h: h if (h.health, h.owner) == ("elsewhere", owner) else replace(
            h, health="elsewhere", owner=owner,
        ))  # fmt: skip

    def owned(self, key: str, *, owner: str) -> None:
        """A due run that this node (``owner``) makes: a target it takes over is ``unknown`` until the run ends."""
        self._update(key, lambda h: h if h.owner == owner else replace(
            h, health="unknown" if h.health == "elsewhere" else h.health, owner=owner,
        ))  # fmt: skip

    def _update(self, key: str, change: Callable[[TargetHealth], TargetHealth]) -> None:
        """``change`` the target's health under the lock; a target dropped meanwhile (by :meth:`sync`) stays dropped."""
        with self._lock:
            h = self._by_key.get(key)
            if h is not None:
                self._by_key[key] = change(h)

    def snapshot(self) -> list[TargetHealth]:
        with self._lock:
            return list(self._by_key.values())
