"""Statistics for comparing predictions: bootstrap confidence intervals, McNemar's test, paired bootstrap.

All functions take per-review arrays (labels, predictions, or 0/1 "was correct" flags) so they work on any run.
scipy does the distribution arithmetic; resampling uses a seeded numpy Generator so results repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats

from sentiment_lab.errors import SentimentLabError

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Share of predictions equal to the label."""
    return float(np.mean(labels == preds)) if len(labels) else 0.0


def f1_binary(labels: np.ndarray, preds: np.ndarray) -> float:
    """F1 of the positive class (0 when it has no true or predicted positives)."""
    tp = float(np.sum((preds == 1) & (labels == 1)))
    fp = float(np.sum((preds == 1) & (labels == 0)))
    fn = float(np.sum((preds == 0) & (labels == 1)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "f1": f1_binary}


def _as_int_arrays(labels: Any, preds: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=int)
    p = np.asarray(preds, dtype=int)
    if y.shape != p.shape or y.ndim != 1:
        raise SentimentLabError(f"labels and predictions must be 1-D arrays of one length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise SentimentLabError("no predictions to compute a confidence interval from (empty prediction file?)")
    return y, p


def bootstrap_ci(
    labels: Any,
    preds: Any,
    metric: str | MetricFn = "accuracy",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap CI of a metric over reviews: {estimate, low, high, confidence, n_boot}.

    metric: "accuracy", "f1" or a function (labels, preds) -> float.
    """
    y, p = _as_int_arrays(labels, preds)
    fn = METRICS[metric] if isinstance(metric, str) else metric
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    if fn is accuracy:  # vectorised: the common case, thousands of resamples in milliseconds
        samples = (y[idx] == p[idx]).mean(axis=1)
    elif fn is f1_binary:
        yy, pp = y[idx], p[idx]
        tp = ((pp == 1) & (yy == 1)).sum(axis=1)
        wrong = (pp != yy).sum(axis=1)
        samples = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
    else:
        samples = np.array([fn(y[i], p[i]) for i in idx])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return {
        "estimate": fn(y, p),
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "n_boot": n_boot,
    }


def mcnemar_test(correct_a: Any, correct_b: Any, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test on paired correctness flags of two models over the same reviews.

    b = A right and B wrong, c = A wrong and B right. exact=None uses the exact binomial test when b + c < 25
    (the usual rule), otherwise the chi-square test with continuity correction.
    """
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise SentimentLabError(f"McNemar needs paired flags of one length, got {a.shape} and {b_.shape}")
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    return mcnemar_from_counts(b, c, exact)


def mcnemar_from_counts(b: int, c: int, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test from the two discordant counts b and c of a paired 2x2 table."""
    n = b + c
    use_exact = n < 25 if exact is None else exact
    if n == 0:
        return {"b": b, "c": c, "method": "none (no discordant pairs)", "statistic": 0.0, "p_value": 1.0}
    if use_exact:
        p = stats.binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue
        return {"b": b, "c": c, "method": "exact binomial", "statistic": float(min(b, c)), "p_value": float(p)}
    chi2 = (abs(b - c) - 1) ** 2 / n
    p = stats.chi2.sf(chi2, df=1)
    return {
        "b": b,
        "c": c,
        "method": "chi-square with continuity correction",
        "statistic": float(chi2),
        "p_value": float(p),
    }


def paired_bootstrap_diff(
    correct_a: Any, correct_b: Any, n_boot: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Bootstrap CI of accuracy(A) - accuracy(B), resampling reviews jointly so the pairing is kept.

    p_value: two-sided share of resamples on the other side of zero (doubled), a bootstrap sign test.
    """
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape or len(a) == 0:
        raise SentimentLabError(
            f"paired bootstrap needs two non-empty flag arrays of one length ({a.shape}, {b.shape})"
        )
    diff = a - b
    rng = np.random.default_rng(seed)
    samples = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    estimate = float(diff.mean())
    other_side = np.mean(samples <= 0) if estimate > 0 else np.mean(samples >= 0)
    p = 1.0 if estimate == 0 else min(1.0, 2 * float(other_side))
    return {"estimate": estimate, "low": float(low), "high": float(high), "confidence": confidence, "p_value": p}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control when many pairs are tested)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def verdict(p_value: float, name_a: str, name_b: str, acc_a: float, acc_b: float, alpha: float = 0.05) -> str:
    """A plain-language reading of a test: which model is better, or no significant difference."""
    if p_value >= alpha:
        return f"no significant difference at alpha {alpha:g} (p = {p_value:.3g})"
    better, worse = (name_a, name_b) if acc_a > acc_b else (name_b, name_a)
    return f"{better} is significantly more accurate than {worse} at alpha {alpha:g} (p = {p_value:.3g})"
