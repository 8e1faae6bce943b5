"""softlabels.stats: paired comparisons (effect size, confidence interval, t-test) and Pearson r, by hand."""
from __future__ import annotations

import math

import pytest

from softlabels.stats import paired_comparison, pearson_ci, student_t_sf_two_sided


def test_paired_comparison_known_answer():
    # d = (1, 2, 0): mean 1, sample std 1, n 3 -> t = 1 / (1 / sqrt 3) = sqrt 3, d_z = 1
    res = paired_comparison([86.0, 87.0, 88.0], [85.0, 85.0, 88.0])
    assert res["diffs"] == [1.0, 2.0, 0.0] and res["mean_diff"] == 1.0 and res["std_diff"] == 1.0
    assert (res["wins"], res["losses"], res["n"]) == (2, 0, 3)
    assert res["t"] == pytest.approx(math.sqrt(3)) and res["d_z"] == pytest.approx(1.0)
    # two-sided p from the exact finite series for df = 2: 1 - t / sqrt(t^2 + 2) = 1 - sqrt(3/5)
    assert res["p"] == pytest.approx(1 - math.sqrt(3 / 5), rel=1e-9)
    assert res["p"] == pytest.approx(student_t_sf_two_sided(math.sqrt(3), 2), rel=1e-9)
    # 95 % CI: 1 +- t_{0.975, 2} / sqrt 3 with the table value t_{0.975, 2} = 4.302653
    half = 4.302653 / math.sqrt(3)
    assert res["ci_low"] == pytest.approx(1 - half, abs=1e-5) and res["ci_high"] == pytest.approx(1 + half, abs=1e-5)
    assert res["confidence"] == 0.95


def test_paired_comparison_five_seeds_and_other_confidence():
    a, b = [85.1, 84.2, 86.0, 85.5, 84.9], [84.0, 84.5, 85.0, 84.1, 84.4]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / 4)
    res = paired_comparison(a, b)
    assert res["mean_diff"] == pytest.approx(mean) and res["std_diff"] == pytest.approx(sd)
    assert res["d_z"] == pytest.approx(mean / sd)
    assert res["t"] == pytest.approx(mean / (sd / math.sqrt(5)))
    half = 2.776445 * sd / math.sqrt(5)  # t_{0.975, 4}
    assert (res["ci_low"], res["ci_high"]) == (pytest.approx(mean - half, abs=1e-5), pytest.approx(mean + half, abs=1e-5))
    # the interval excludes 0 exactly when p < 0.05
    assert (res["ci_low"] > 0 or res["ci_high"] < 0) == (res["p"] < 0.05)
    wide = paired_comparison(a, b, confidence=0.99)
    assert wide["ci_low"] < res["ci_low"] and wide["ci_high"] > res["ci_high"]
    half99 = 4.604095 * sd / math.sqrt(5)  # t_{0.995, 4}
    assert wide["ci_high"] == pytest.approx(mean + half99, abs=1e-5)


def test_paired_comparison_degenerate_inputs():
    flat = paired_comparison([1.0, 1.0], [0.0, 0.0])  # zero spread: no t, p or d_z; a one-point interval
    assert flat["t"] is None and flat["p"] is None and flat["d_z"] is None
    assert flat["ci_low"] == flat["ci_high"] == 1.0
    one = paired_comparison([1.0], [0.5])
    assert one["mean_diff"] == 0.5 and one["std_diff"] is None and one["ci_low"] is None and one["t"] is None
    assert paired_comparison([1.0, None, 3.0], [0.0, 2.0, 1.0])["n"] == 2  # missing values drop the pair
    assert paired_comparison([], [])["mean_diff"] is None


def test_pearson_ci_known_answer():
    x, y = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0]
    # by hand: centred x (-2..2), y (-1, -2, 1, 0, 2); sum xy 8, sum x^2 10, sum y^2 10 -> r = 0.8
    res = pearson_ci(x, y)
    assert res["r"] == pytest.approx(0.8) and res["n"] == 5
    # p from t = r sqrt(n - 2) / sqrt(1 - r^2) with 3 degrees of freedom
    t = 0.8 * math.sqrt(3) / math.sqrt(1 - 0.64)
    assert res["p"] == pytest.approx(student_t_sf_two_sided(t, 3), rel=1e-6)
    half = 1.959964 / math.sqrt(2)  # Fisher z, n - 3 = 2
    assert res["ci_low"] == pytest.approx(math.tanh(math.atanh(0.8) - half), abs=1e-6)
    assert res["ci_high"] == pytest.approx(math.tanh(math.atanh(0.8) + half), abs=1e-6)
    assert pearson_ci([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["r"] == pytest.approx(-1.0)
    assert pearson_ci([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["ci_low"] is None  # n < 4
    assert pearson_ci([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])["r"] is None  # constant input
    line = pearson_ci([1.0, 2.0, 3.0, 4.0], [8.0, 6.0, 4.0, 2.0])
    assert line["r"] == pytest.approx(-1.0) and line["ci_low"] == line["ci_high"] == line["r"]
