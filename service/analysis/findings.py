"""What detection reports, and the knobs it reads: plain values shared by detection, storage and the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import xxhash

from service.analysis.stats import Estimate
from service.config import AnalysisSettings

__all__ = ["Finding", "Tuning"]


@dataclass(frozen=True, slots=True)
class Tuning:
    """Detection settings in nanoseconds and fractions (built from :class:`service.config.AnalysisSettings`)."""

    alpha: float = 0.0001  # false discovery rate over all tests of a run (Benjamini-Hochberg); see config
    min_share: float = 0.005  # a function's cum share of the recent window to be tested at all
    min_relative: float = 0.005  # smallest relative rise reported; +1 % of cost is +(1 - share) % of share
    min_delta: float = 0.0001  # smallest rise of a share, absolute (0.01 percentage points)
    persist_ns: int = 300 * 10**9  # the shift must hold this long (went-away filter)
    min_profiles: int = 8  # per window, else the window is too thin to test
    volatile: tuple[str, ...] = ("version", "commit", "revision", "image")  # attribution labels
    leak_min_bytes_per_min: float = 256 * 1024
    leak_min_count_per_min: float = 1.0
    leak_min_growth: float = 0.05  # growth over the leak window relative to its starting level

    @classmethod
    def of(cls, a: AnalysisSettings) -> Tuning:
        return cls(
            alpha=a.alpha,
            min_share=a.min_share,
            min_relative=a.min_relative,
            min_delta=a.min_delta,
            persist_ns=int(a.persist_s * 1e9),
            min_profiles=a.min_profiles,
            volatile=tuple(a.attribution_labels),
            leak_min_bytes_per_min=a.leak_min_bytes_per_min,
            leak_min_count_per_min=a.leak_min_count_per_min,
            leak_min_growth=a.leak_min_growth,
        )


@dataclass(frozen=True, slots=True)
class Finding:
    """One regression or leak; ``key`` identifies it across runs (same kind, place and function)."""

    kind: str  # "regression" or "leak"
    tenant: str
    service: str
    profile_type: str
    function: str  # the function for a regression; the top growing site for a leak
    metric: str  # "flat_share", "cum_share" or "total"
    change_ts: int
    baseline: Estimate
    current: Estimate
    relative: float
    p_value: float
    p_adjusted: float
    instances: list[str]
    attribution: dict[str, dict[str, list[str]]]
    series_ids: list[int]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> int:
        """Same kind, place, function and metric: the same finding. A leak is one per service and
        type; its top site may change from run to run as the estimates move."""
        function = "" if self.kind == "leak" else self.function
        text = "\x1f".join((self.kind, self.tenant, self.service, self.profile_type, function, self.metric))
        return xxhash.xxh3_64_intdigest(text.encode())
