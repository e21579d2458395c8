"""Statistics against hand-computed cases: bootstrap CIs, McNemar (exact and chi-square), paired bootstrap, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sentiment_lab.errors import SentimentLabError
from sentiment_lab.stats import (
    accuracy,
    bootstrap_ci,
    f1_binary,
    holm_adjust,
    mcnemar_from_counts,
    mcnemar_test,
    paired_bootstrap_diff,
    verdict,
)


def test_accuracy_and_f1_hand_computed() -> None:
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    p = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    # TP 3, FN 1, FP 1, TN 3: accuracy 6/8, F1 = 2*3 / (2*3 + 1 + 1) = 0.75
    assert accuracy(y, p) == pytest.approx(0.75)
    assert f1_binary(y, p) == pytest.approx(0.75)
    assert f1_binary(np.zeros(4, int), np.zeros(4, int)) == 0.0


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
def test_bootstrap_ci_contains_estimate_and_matches_loop(metric: str) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, y, 1 - y)
    ci = bootstrap_ci(y, p, metric, n_boot=500, seed=3)
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert ci["high"] - ci["low"] < 0.2
    # the vectorised fast path equals resampling with the plain function
    fn = accuracy if metric == "accuracy" else f1_binary
    slow = bootstrap_ci(y, p, lambda a, b: fn(a, b), n_boot=500, seed=3)
    assert slow["low"] == pytest.approx(ci["low"]) and slow["high"] == pytest.approx(ci["high"])


def test_bootstrap_ci_refuses_empty_and_mismatched() -> None:
    with pytest.raises(SentimentLabError, match="no predictions"):
        bootstrap_ci([], [])
    with pytest.raises(SentimentLabError, match="one length"):
        bootstrap_ci([0, 1], [0])


def test_mcnemar_exact_on_known_table() -> None:
    # b = 10, c = 2: two-sided exact p = 2 * P(X <= 2 | n=12, 0.5) = 2 * (1 + 12 + 66) / 4096
    res = mcnemar_from_counts(10, 2)
    assert res["method"] == "exact binomial"
    assert res["p_value"] == pytest.approx(2 * 79 / 4096)


def test_mcnemar_chi_square_with_continuity_correction() -> None:
    res = mcnemar_from_counts(30, 15)
    assert res["method"].startswith("chi-square")
    assert res["statistic"] == pytest.approx((15 - 1) ** 2 / 45)
    # chi-square with 1 df: p = erfc(sqrt(x / 2))
    assert res["p_value"] == pytest.approx(math.erfc(math.sqrt(res["statistic"] / 2)))


def test_mcnemar_from_flags_counts_discordant_pairs() -> None:
    a = np.array([1, 1, 1, 0, 0, 1], bool)
    b = np.array([1, 0, 0, 1, 0, 1], bool)
    res = mcnemar_test(a, b)
    assert (res["b"], res["c"]) == (2, 1)
    assert mcnemar_test(a, a)["p_value"] == 1.0


def test_paired_bootstrap_difference() -> None:
    a = np.array([1] * 90 + [0] * 10)
    b = np.array([1] * 70 + [0] * 30)
    res = paired_bootstrap_diff(a, b, n_boot=1000)
    assert res["estimate"] == pytest.approx(0.2)
    assert res["low"] <= 0.2 <= res["high"] and res["low"] > 0
    assert res["p_value"] < 0.01
    same = paired_bootstrap_diff(a, a, n_boot=100)
    assert same["estimate"] == 0 and same["p_value"] == 1.0


def test_holm_adjustment_hand_computed() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_verdict_wording() -> None:
    assert verdict(0.2, "a", "b", 0.9, 0.8).startswith("no significant difference at alpha 0.05")
    assert verdict(0.01, "a", "b", 0.8, 0.9).startswith("b is significantly more accurate than a")
