"""Small statistics over seeds: mean ± sample std, paired comparisons (effect size, CI, t-test), Pearson r."""
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


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """Seed-by-seed comparison of ``a`` against ``b`` (same seeds, same order), in the units of the inputs.

    Returns the differences d = a - b, their mean and sample std, the count of seeds where a > b
    (``wins``) and a < b (``losses``), the effect size Cohen's d_z = mean(d) / std(d), the
    ``confidence`` (95 %) interval of the mean difference, mean(d) +- t_{(1+c)/2, n-1} * std(d) / sqrt(n),
    and the paired t-test (``scipy.stats.ttest_rel``: t and its two-sided p). With fewer than 2 pairs
    the spread-based fields are None; with zero spread t, p and d_z are None and the interval is
    the single point mean(d).
    """
    from scipy import stats as sps

    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None]
    diffs = [x - y for x, y in pairs]
    mean, std = mean_std(diffs)
    n = len(diffs)
    out = {"n": n, "diffs": diffs, "mean_diff": mean, "std_diff": std,
           "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "t": None, "p": None,
           "d_z": None, "ci_low": None, "ci_high": None, "confidence": confidence}
    if std is None:
        return out
    half = sps.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    out.update(ci_low=mean - half, ci_high=mean + half)
    if std > 0:
        res = sps.ttest_rel([x for x, _ in pairs], [y for _, y in pairs])
        out.update(t=float(res.statistic), p=float(res.pvalue), d_z=mean / std)
    return out


def pearson_ci(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict:
    """Pearson r of paired values with its two-sided p (``scipy.stats.pearsonr``) and a Fisher-z interval.

    Returns {"n", "r", "p", "ci_low", "ci_high"}; r and p are None with fewer than 3 pairs or a
    constant input; the interval, tanh(atanh(r) +- z_{(1+c)/2} / sqrt(n - 3)), needs n >= 4 (it is
    the single point r when |r| = 1).
    """
    from scipy import stats as sps

    pairs = [(float(u), float(v)) for u, v in zip(x, y) if u is not None and v is not None]
    out: dict = {"n": len(pairs), "r": None, "p": None, "ci_low": None, "ci_high": None}
    if len(pairs) < 3 or len({u for u, _ in pairs}) < 2 or len({v for _, v in pairs}) < 2:
        return out
    res = sps.pearsonr([u for u, _ in pairs], [v for _, v in pairs])
    r = max(-1.0, min(1.0, float(res.statistic)))
    out.update(r=r, p=float(res.pvalue))
    if len(pairs) >= 4 and abs(r) >= 1 - 1e-12:  # a perfect line: the interval collapses to r
        out.update(ci_low=r, ci_high=r)
    elif len(pairs) >= 4:
        half = sps.norm.ppf(0.5 + confidence / 2) / math.sqrt(len(pairs) - 3)
        out.update(ci_low=math.tanh(math.atanh(r) - half), ci_high=math.tanh(math.atanh(r) + half))
    return out


#: a correlation over fewer points than this is not reported (two points always give ±1)
MIN_CORRELATION_POINTS = 3
NOT_ENOUGH_POINTS = "not enough points"


def _paired_finite(x: Sequence[float], y: Sequence[float]) -> tuple[list[float], list[float]]:
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None
             and math.isfinite(float(a)) and math.isfinite(float(b))]
    return [a for a, _ in pairs], [b for _, b in pairs]


def _correlation(x: Sequence[float], y: Sequence[float], scipy_name: str) -> float | None:
    """``scipy.stats.<scipy_name>`` statistic of the present pairs; None with fewer than
    :data:`MIN_CORRELATION_POINTS` pairs or when either side is constant."""
    import scipy.stats

    a, b = _paired_finite(x, y)
    if len(a) < MIN_CORRELATION_POINTS or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(getattr(scipy.stats, scipy_name)(a, b).statistic)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation (``scipy.stats.pearsonr``) of the pairs where both values are present (see _correlation)."""
    return _correlation(x, y, "pearsonr")


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (``scipy.stats.spearmanr``, average ranks for ties) of the present pairs."""
    return _correlation(x, y, "spearmanr")


def describe_correlation(value: float | None, points: int) -> str:
    """``"+0.800 (4 points)"``, or :data:`NOT_ENOUGH_POINTS` with the count when it cannot be claimed."""
    if points < MIN_CORRELATION_POINTS:
        return f"{NOT_ENOUGH_POINTS} ({points}; a correlation needs at least {MIN_CORRELATION_POINTS})"
    if value is None:
        return f"undefined ({points} points, one side constant)"
    return f"{value:+.3f} ({points} points)"
