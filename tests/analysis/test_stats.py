"""Each statistical piece against hand-computed values and textbook examples."""

from __future__ import annotations

import numpy as np
import pytest

from service.analysis.stats import (
    benjamini_hochberg,
    change_interval,
    change_point,
    hinge_point,
    mann_kendall,
    mann_whitney_greater,
    mean_ci,
)


def test_mann_whitney_exact_small_case() -> None:
    # Every value of x above every value of y: U = 9, and the one-sided exact p is 1 / C(6, 3) = 0.05.
    assert mann_whitney_greater(np.array([4.0, 5.0, 6.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(0.05)
    assert mann_whitney_greater(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])) == pytest.approx(1.0)


def test_mann_whitney_constant_samples_are_no_evidence() -> None:
    assert mann_whitney_greater(np.zeros(50), np.zeros(80)) == 1.0
    assert mann_whitney_greater(np.zeros(0), np.ones(3)) == 1.0


def test_benjamini_hochberg_hand_computed() -> None:
    # Sorted p: 0.01, 0.02, 0.03, 0.04, 0.05 with m = 5 -> p * m / rank = 0.05 each; the step-up
    # minimum from the top keeps them all at 0.05.
    p = np.array([0.05, 0.01, 0.03, 0.02, 0.04])
    assert benjamini_hochberg(p) == pytest.approx([0.05] * 5)
    # 0.001 * 3 / 1 = 0.003; 0.02 * 3 / 2 = 0.03; 0.5 * 3 / 3 = 0.5.
    assert benjamini_hochberg(np.array([0.5, 0.001, 0.02])) == pytest.approx([0.5, 0.003, 0.03])


def test_mean_ci_student_t() -> None:
    est = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    # mean 2.5, sd 1.29099, t(0.975, 3) = 3.18245 -> half width 3.18245 * 1.29099 / 2 = 2.05426
    assert (est.mean, est.lo, est.hi) == pytest.approx((2.5, 2.5 - 2.05426, 2.5 + 2.05426), abs=1e-4)
    one = mean_ci(np.array([7.0]))
    assert (one.lo, one.hi) == (7.0, 7.0)


def test_change_point_finds_the_step() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(10, 1, 60), rng.normal(12, 1, 40)])
    k, t = change_point(x)
    assert k == pytest.approx(60, abs=2)
    assert t > 5
    # A step down is not a rise: the best upward split of a falling series has t <= small.
    _, t_down = change_point(x[::-1].copy())
    assert t_down < 3
    assert change_point(np.ones(4)) == (0, 0.0)


def test_change_interval_holds_the_step_and_narrows_as_it_grows() -> None:
    # Over 200 noisy series the 95 % set holds the true split about 95 % of the time (the
    # chi-square's 3.84 held it 81 % of the time); a step of one standard deviation is pinned to
    # a dozen points, one of a third to a hundred.
    rng = np.random.default_rng(7)
    held, widths = 0, {1.0: [], 0.33: []}
    for i in range(200):
        step = 1.0 if i % 2 else 0.33
        x = np.concatenate([rng.normal(0, 1, 80), rng.normal(step, 1, 80)])
        lo, hi = change_interval(x)
        held += lo <= 80 <= hi
        widths[step].append(hi - lo)
    assert held >= 180
    assert np.median(widths[1.0]) < 30 < np.median(widths[0.33])
    assert change_interval(np.ones(10)) == (0, 0)


def test_change_point_is_not_fooled_by_a_tight_short_segment() -> None:
    # Four nearly equal values at the end have almost no variance: the largest Welch t sits there,
    # 36 points after the real step. Least squares weighs the step by how many points it explains.
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(10, 1, 60), rng.normal(11, 1, 36), [11.5, 11.51, 11.49, 11.5]])
    k, t = change_point(x, min_size=4)
    assert k == pytest.approx(60, abs=5)
    assert t > 3


def test_change_point_splits_only_between_times() -> None:
    # Two instances scraped at each moment: a split never separates one moment's profiles.
    ts = np.repeat(np.arange(50, dtype=np.int64), 2)
    x = np.where(ts >= 30, 2.0, 1.0) + np.tile([0.1, -0.1], 50)
    k, _ = change_point(x, ts=ts)
    assert k == 60 and ts[k] != ts[k - 1]
    assert change_point(x, ts=np.zeros(100, np.int64)) == (0, 0.0)


def test_hinge_point_finds_where_growth_starts() -> None:
    t = np.arange(120, dtype=np.float64)
    y = np.where(t < 70, 100.0, 100.0 + 2.0 * (t - 70))
    assert hinge_point(t, y) == 70


def test_mann_kendall_and_theil_sen() -> None:
    t = np.arange(10, dtype=np.float64)
    y = 3.0 * t + np.array([0, 1, -1, 0, 1, -1, 0, 1, -1, 0], dtype=np.float64)
    tr = mann_kendall(t, y)
    assert tr.slope == pytest.approx(3.0, abs=0.25)
    assert tr.tau > 0.9
    assert tr.p_value < 1e-4
    assert tr.slope_lo <= tr.slope <= tr.slope_hi
    flat = mann_kendall(t, np.full(10, 5.0))
    assert (flat.p_value, flat.slope) == (1.0, 0.0)
