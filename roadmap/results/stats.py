"""The intervals every table uses: of a mean, of a difference of means, of a ratio of times."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats


def t_interval(std: float, n: int) -> float:
    """Half-width of the 95% confidence interval of a mean of ``n`` values with sample std
    ``std`` (Student's t)."""
    if n < 2 or not math.isfinite(std):
        return math.nan
    return stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)


def welch_interval(m1, s1, n1, m0, s0, n0) -> float:
    """Half-width of the 95% interval of the difference of two means (Welch)."""
    if n1 < 2 or n0 < 2:
        return math.nan
    v1, v0 = s1 ** 2 / n1, s0 ** 2 / n0
    se = math.sqrt(v1 + v0)
    if se == 0:
        return 0.0
    df = (v1 + v0) ** 2 / (v1 ** 2 / (n1 - 1) + v0 ** 2 / (n0 - 1))
    return stats.t.ppf(0.975, df) * se


def ratio_interval(ours: Sequence[float], theirs: Sequence[float]) -> tuple[float, float, float]:
    """Geometric mean of the paired ratios theirs/ours (seconds, so > 1: ours is faster) and
    its 95% t-interval."""
    logs = [math.log(b / a) for a, b in zip(ours, theirs, strict=True)]
    mean = statistics.fmean(logs)
    half = t_interval(statistics.stdev(logs), len(logs)) if len(logs) > 1 else math.nan
    if math.isnan(half):
        return math.exp(mean), math.nan, math.nan
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)
