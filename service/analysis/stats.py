"""The statistics detection rests on, each a thin, tested layer over scipy.

Why these tests: per-profile shares of a function are skewed and heavy-tailed (a function
sampled a handful of times per profile), so a rank test (Mann-Whitney U) decides "did it rise",
not a t-test on means. Many functions are tested per run, so p-values are corrected with
Benjamini-Hochberg, which bounds the share of false findings rather than the chance of any.
Where the change happened is a split search as Hunter does it (the split with the largest
Welch t statistic), deterministic unlike E-divisive's permutations. Leaks are monotone trends:
Mann-Kendall (Kendall's tau against time) says whether one exists, Theil-Sen says how fast,
both robust to the sawtooth a garbage collector draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "Estimate",
    "Trend",
    "benjamini_hochberg",
    "change_point",
    "hinge_point",
    "mann_kendall",
    "mann_whitney_greater",
    "mean_ci",
]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Trend:
    tau: float
    p_value: float
    slope: float  # per unit of the x axis (Theil-Sen median of pairwise slopes)
    slope_lo: float
    slope_hi: float


def mann_whitney_greater(current: F64, baseline: F64) -> float:
    """P-value of "``current`` tends to be larger than ``baseline``" (one-sided Mann-Whitney U).

    Constant samples (a function absent from every profile of both windows) have no ranks to
    compare and give 1.0 rather than scipy's warning and NaN.
    """
    if current.size == 0 or baseline.size == 0:
        return 1.0
    if np.all(current == current[0]) and np.all(baseline == current[0]):
        return 1.0
    method = "asymptotic" if current.size + baseline.size > 64 else "auto"
    return float(stats.mannwhitneyu(current, baseline, alternative="greater", method=method).pvalue)


def benjamini_hochberg(p: F64) -> F64:
    """Adjusted p-values (step-up, as R's ``p.adjust(method="BH")``); reject where adjusted <= alpha."""
    if p.size == 0:
        return p.astype(np.float64)
    return np.asarray(stats.false_discovery_control(np.clip(p, 0.0, 1.0), method="bh"), np.float64)


def mean_ci(x: F64, level: float = 0.95) -> Estimate:
    """Mean with a Student-t confidence interval (a single value has a zero-width interval)."""
    m = float(np.mean(x)) if x.size else 0.0
    if x.size < 2:
        return Estimate(m, m, m)
    half = float(stats.t.ppf(0.5 + level / 2, x.size - 1) * np.std(x, ddof=1) / np.sqrt(x.size))
    return Estimate(m, m - half, m + half)


def change_point(x: F64, min_size: int = 3) -> tuple[int, float]:
    """The split ``k`` (``x[:k]`` before, ``x[k:]`` after) with the largest upward Welch t, and that t.

    Every split with at least ``min_size`` points on each side is scored at once from cumulative
    sums; (0, 0.0) when the series is too short to split.
    """
    n = x.size
    if n < 2 * min_size:
        return 0, 0.0
    c1 = np.cumsum(x)
    c2 = np.cumsum(x * x)
    k = np.arange(min_size, n - min_size + 1)
    n1 = k.astype(np.float64)
    n2 = n - n1
    s1, q1 = c1[k - 1], c2[k - 1]
    s2, q2 = c1[-1] - s1, c2[-1] - q1
    m1, m2 = s1 / n1, s2 / n2
    v1 = np.maximum(q1 - n1 * m1 * m1, 0.0) / np.maximum(n1 - 1, 1)
    v2 = np.maximum(q2 - n2 * m2 * m2, 0.0) / np.maximum(n2 - 1, 1)
    se = np.sqrt(v1 / n1 + v2 / n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, (m2 - m1) / se, np.where(m2 > m1, np.inf, 0.0))
    i = int(np.argmax(t))
    return int(k[i]), float(t[i])


def hinge_point(t: F64, y: F64, min_size: int = 3) -> int:
    """Where a flat series starts to climb: the ``k`` minimizing the squared error of
    ``y = a + b * max(0, t - t[k])`` (a leak's start; a change in level is :func:`change_point`)."""
    n = t.size
    if n < 2 * min_size:
        return 0
    best, best_k = np.inf, 0
    for k in range(min_size, n - min_size + 1):
        h = np.maximum(0.0, t - t[k])
        a = np.column_stack([np.ones(n), h])
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        sse = float(np.sum((a @ coef - y) ** 2))
        if sse < best:
            best, best_k = sse, k
    return best_k


def mann_kendall(t: F64, y: F64) -> Trend:
    """Monotone trend of ``y`` over ``t``: Kendall's tau and its p-value (two-sided), and the
    Theil-Sen slope with its 95 % interval. Constant ``y`` is no trend (p = 1)."""
    if y.size < 3 or np.all(y == y[0]):
        return Trend(0.0, 1.0, 0.0, 0.0, 0.0)
    tau = stats.kendalltau(t, y)
    slope, _, lo, hi = stats.theilslopes(y, t, alpha=0.95)
    return Trend(float(tau.statistic), float(tau.pvalue), float(slope), float(lo), float(hi))
