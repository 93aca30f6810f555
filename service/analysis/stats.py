"""The statistics detection rests on, each a thin, tested layer over scipy.

Why these tests: per-profile shares of a function are skewed and heavy-tailed (a function
sampled a handful of times per profile), so a rank test (Mann-Whitney U) decides "did it rise",
not a t-test on means. Many functions are tested per run, so p-values are corrected with
Benjamini-Hochberg, which bounds the share of false findings rather than the chance of any.
Where the change happened is a split search as Hunter does it (the least-squares split, scored
by its t statistic), deterministic unlike E-divisive's permutations. Leaks are monotone trends:
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
    "change_interval",
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


def change_point(x: F64, min_size: int = 3, ts: npt.NDArray[np.int64] | None = None) -> tuple[int, float]:
    """The split ``k`` (``x[:k]`` before, ``x[k:]`` after) that best explains ``x`` as one upward
    step, and the pooled-variance t statistic of that step.

    Best means least squares: the split with the largest between-segment sum of squares
    ``n1 * n2 / n * (m2 - m1) ** 2``, the maximum-likelihood change point of a mean shift in
    Gaussian noise. (The largest Welch t is not: a short segment whose few points happen to lie
    close together has a tiny variance and a huge t, and wins far from the real step.) With
    ``ts``, splits fall only between distinct times, so instances scraped at one moment stay on
    one side. Every split with ``min_size`` points on each side is scored at once from
    cumulative sums; (0, 0.0) when the series is too short or never steps up.
    """
    scored = _splits(x, min_size, ts)
    if scored is None:
        return 0, 0.0
    k, between, m_diff, s2 = scored
    i = int(np.argmax(between))
    n = x.size
    se = np.sqrt(s2 * (1 / k[i] + 1 / (n - k[i])))
    return int(k[i]), float(m_diff[i] / se) if se > 0 else float("inf")


def change_interval(
    x: F64, min_size: int = 3, ts: npt.NDArray[np.int64] | None = None, level: float = 0.95
) -> tuple[int, int]:
    """The splits ``[k_lo, k_hi]`` a ``level`` confidence set of the change point holds; (0, 0)
    where there is no step.

    The set is every split whose fit is worse than the best by less than ``c * s2`` (profile
    likelihood). A change point's likelihood ratio is not chi-square: around the true split it
    behaves as the larger of two one-sided sups of ``2 W(t) - |t|``, each exceeding ``c`` with
    probability ``exp(-c / 2)``, so ``c = -2 ln(1 - sqrt(level))`` (7.35 at 95 %, not 3.84).

    The error of a change point grows as variance over step squared, so a small rise found late
    has an interval of hours, a large one a few scrapes: the interval says which a finding is.
    """
    scored = _splits(x, min_size, ts)
    if scored is None:
        return 0, 0
    k, between, _, s2 = scored
    c = -2.0 * np.log(1.0 - np.sqrt(level))
    inside = k[between >= between.max() - c * s2]
    return int(inside.min()), int(inside.max())


def _splits(
    x: F64, min_size: int, ts: npt.NDArray[np.int64] | None
) -> tuple[npt.NDArray[np.int64], F64, F64, float] | None:
    """Upward splits with their between-segment sums of squares, mean differences and the residual
    variance at the best one; ``None`` when there is no upward split."""
    n = x.size
    if n < 2 * min_size:
        return None
    c1 = np.cumsum(x)
    c2 = np.cumsum(x * x)
    k = np.arange(min_size, n - min_size + 1)
    if ts is not None:
        k = k[ts[k] != ts[k - 1]]
        if k.size == 0:
            return None
    n1 = k.astype(np.float64)
    n2 = n - n1
    s1 = c1[k - 1]
    m_diff = (c1[-1] - s1) / n2 - s1 / n1
    between = np.where(m_diff > 0, n1 * n2 / n * m_diff**2, -1.0)
    up = between > 0
    if not up.any():
        return None
    within = max(float(c2[-1] - c1[-1] ** 2 / n) - float(between.max()), 0.0)
    return k[up], between[up], m_diff[up], within / max(n - 2, 1)


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
