"""Means and 95% confidence intervals across seeds (Student t).

With one value there is no spread to estimate, so every interval is NaN rather than
a made-up width; callers print "n = 1, no interval".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean over n values with a two-sided confidence interval (NaN when n < 2)."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int
    method: str = "t"

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.ci_low) or math.isnan(self.ci_high))

    @property
    def includes_zero(self) -> bool:
        return self.has_interval and self.ci_low <= 0.0 <= self.ci_high


def _clean(values) -> np.ndarray:
    array = np.asarray(list(values), dtype=float)
    return array[~np.isnan(array)]


def mean_ci(values, confidence: float = CONFIDENCE) -> Estimate:
    """Mean, sample std (ddof=1) and t interval mean +- t(1-a/2, n-1) * std / sqrt(n)."""
    array = _clean(values)
    n = len(array)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, math.nan, 1)
    std = float(array.std(ddof=1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n)
    return Estimate(mean, std, mean - half, mean + half, n)


def paired_diff_ci(a_by_seed: dict, b_by_seed: dict, confidence: float = CONFIDENCE) -> Estimate:
    """Mean of per-seed differences a[s] - b[s] with a paired t interval.

    Pairing removes seed-to-seed noise shared by both sides (same data order and
    head init), so it is used whenever both sides ran the same seeds.
    """
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    diffs = [a_by_seed[s] - b_by_seed[s] for s in seeds]
    estimate = mean_ci(diffs, confidence)
    return Estimate(estimate.mean, estimate.std, estimate.ci_low, estimate.ci_high,
                    estimate.n, method="paired")


def welch_diff_ci(a, b, confidence: float = CONFIDENCE) -> Estimate:
    """mean(a) - mean(b) with a Welch t interval (unequal variances).

    Needs at least two values on each side; otherwise the difference is returned
    without an interval. `n` is the smaller side's count, `std` the standard error.
    """
    a, b = _clean(a), _clean(b)
    if len(a) == 0 or len(b) == 0:
        return Estimate(math.nan, math.nan, math.nan, math.nan, 0, method="welch")
    diff = float(a.mean() - b.mean())
    n = min(len(a), len(b))
    if n < 2:
        return Estimate(diff, math.nan, math.nan, math.nan, n, method="welch")
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(var_a + var_b)
    if se == 0.0:
        return Estimate(diff, 0.0, diff, diff, n, method="welch")
    # Welch-Satterthwaite degrees of freedom.
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, df=df) * se
    return Estimate(diff, se, diff - half, diff + half, n, method="welch")
