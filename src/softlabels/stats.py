"""Small statistics over seeds: mean ± sample std and the paired t-test (no SciPy needed)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n-1); std is None for one value, both None for none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def student_t_sf_two_sided(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with an integer ``df`` >= 1 (exact finite series)."""
    if df < 1:
        raise ValueError("df must be >= 1")
    t = abs(float(t))
    if math.isinf(t):
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    # Abramowitz & Stegun 26.7.3 / 26.7.4: A(t|df) = P(|T| < t).
    if df % 2 == 1:
        total, term = 0.0, c
        if df > 1:
            total = term
            for k in range(3, df - 1, 2):
                term *= c * c * (k - 1) / k
                total += term
        a = 2.0 / math.pi * (theta + s * total)
    else:
        total, term = 1.0, 1.0
        for k in range(2, df - 1, 2):
            term *= c * c * (k - 1) / k
            total += term
        a = s * total
    return min(1.0, max(0.0, 1.0 - a))


def paired_comparison(a: Sequence[float], b: Sequence[float]) -> dict:
    """Seed-by-seed comparison of ``a`` against ``b`` (same seeds, same order).

    Returns the differences a - b, their mean and std, the count of seeds where a > b, the
    paired t statistic and its two-sided p-value (None when fewer than 2 pairs or zero spread).
    """
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None]
    diffs = [x - y for x, y in pairs]
    mean, std = mean_std(diffs)
    out = {"n": len(diffs), "diffs": diffs, "mean_diff": mean, "std_diff": std,
           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "t": None, "p": None}
    if std is not None and std > 0:
        t = mean / (std / math.sqrt(len(diffs)))
        out.update(t=t, p=student_t_sf_two_sided(t, len(diffs) - 1))
    return out


#: a correlation over fewer points than this is not reported (two points always give ±1)
MIN_CORRELATION_POINTS = 3
NOT_ENOUGH_POINTS = "not enough points"


def _paired_finite(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None
             and math.isfinite(float(a)) and math.isfinite(float(b))]
    return [a for a, _ in pairs], [b for _, b in pairs]


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation (``scipy.stats.pearsonr``) of the pairs where both values are present.

    None with fewer than :data:`MIN_CORRELATION_POINTS` pairs or when either side is constant.
    """
    from scipy.stats import pearsonr

    a, b = _paired_finite(x, y)
    if len(a) < MIN_CORRELATION_POINTS or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(pearsonr(a, b).statistic)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (``scipy.stats.spearmanr``, average ranks for ties) of the present pairs.

    None with fewer than :data:`MIN_CORRELATION_POINTS` pairs or when either side is constant.
    """
    from scipy.stats import spearmanr

    a, b = _paired_finite(x, y)
    if len(a) < MIN_CORRELATION_POINTS or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def describe_correlation(value: float | None, points: int) -> str:
    """``"+0.800 (4 points)"``, or :data:`NOT_ENOUGH_POINTS` with the count when it cannot be claimed."""
    if points < MIN_CORRELATION_POINTS:
        return f"{NOT_ENOUGH_POINTS} ({points}; a correlation needs at least {MIN_CORRELATION_POINTS})"
    if value is None:
        return f"undefined ({points} points, one side constant)"
    return f"{value:+.3f} ({points} points)"
