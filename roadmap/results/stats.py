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


def pooled_std(stds: Sequence[float], ns: Sequence[int]) -> tuple[float, int]:
    """The seed standard deviation pooled over several groups (steps) and its degrees of
    freedom: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)), over the groups with n_i >= 2."""
    pairs = [(s, n) for s, n in zip(stds, ns, strict=True)
             if n is not None and n >= 2 and s is not None and math.isfinite(s)]
    df = sum(n - 1 for _, n in pairs)
    if df == 0:
        return math.nan, 0
    return math.sqrt(sum((n - 1) * s ** 2 for s, n in pairs) / df), df


def pooled_change(delta: float, std: float, df: int, n1: int, n0: int) -> tuple[float, float]:
    """(95% half-width, two-sided p) of a difference of two means of ``n1`` and ``n0`` seeds
    under the pooled ``std`` with ``df`` degrees of freedom (Student's t)."""
    if df < 1 or n1 < 1 or n0 < 1 or not (math.isfinite(std) and math.isfinite(delta)):
        return math.nan, math.nan
    se = std * math.sqrt(1 / n1 + 1 / n0)
    if se == 0:
        return 0.0, 0.0 if delta else 1.0
    return stats.t.ppf(0.975, df) * se, 2 * stats.t.sf(abs(delta) / se, df)


def false_discovery(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q) of the finite ``p_values`` (NaN stays NaN)."""
    finite = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    q = [math.nan] * len(p_values)
    if finite:
        adjusted = stats.false_discovery_control([p_values[i] for i in finite], method="bh")
        for i, value in zip(finite, adjusted, strict=True):
            q[i] = float(value)
    return q
