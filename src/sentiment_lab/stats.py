"""Statistics for comparing predictions: bootstrap confidence intervals, McNemar's test, paired bootstrap, Holm.

All functions take per-review arrays (labels, predictions, or 0/1 "was correct" flags) so they work on any run and
any number of classes. `scipy.stats.bootstrap` resamples (percentile method, seeded, so results repeat);
statsmodels computes McNemar's test (`contingency_tables.mcnemar`) and the Holm adjustment (`multipletests`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

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


def f1_macro(labels: np.ndarray, preds: np.ndarray) -> float:
    """Macro F1: the unweighted mean of every class's F1 over the classes in the labels or predictions."""
    return float(np.mean([f1_binary(labels == k, preds == k) for k in np.union1d(labels, preds)]))


METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "f1": f1_binary, "f1_macro": f1_macro}


def _accuracy_along(labels: np.ndarray, preds: np.ndarray, axis: int = -1) -> np.ndarray:
    return (labels == preds).mean(axis=axis)


def _f1_along(labels: np.ndarray, preds: np.ndarray, axis: int = -1) -> np.ndarray:
    tp = ((preds == 1) & (labels == 1)).sum(axis=axis)
    wrong = (preds != labels).sum(axis=axis)
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)


def _f1_macro_along(labels: np.ndarray, preds: np.ndarray, axis: int = -1, classes: Any = None) -> np.ndarray:
    scores = [_f1_along(labels == k, preds == k, axis) for k in classes]
    return np.mean(scores, axis=0)


def _percentile_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    vectorized: bool,
    n_boot: int,
    confidence: float,
    seed: int,
) -> Any:
    """scipy's paired percentile bootstrap over reviews (every array resampled with the same indices)."""
    return stats.bootstrap(
        data,
        statistic,
        n_resamples=n_boot,
        confidence_level=confidence,
        method="percentile",
        paired=True,
        vectorized=vectorized,
        rng=np.random.default_rng(seed),
    )


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

    metric: "accuracy", "f1" (of class 1), "f1_macro" (any number of classes) or a function (labels, preds) -> float.
    """
    y, p = _as_int_arrays(labels, preds)
    fn = METRICS[metric] if isinstance(metric, str) else metric
    estimate = fn(y, p)
    if len(y) < 2:  # one review: every resample is that review
        low = high = float(estimate)
    else:
        if fn is accuracy:  # vectorised: the common case, thousands of resamples in milliseconds
            statistic, vectorized = _accuracy_along, True
        elif fn is f1_binary:
            statistic, vectorized = _f1_along, True
        elif fn is f1_macro:
            classes = np.union1d(y, p)  # a class missing from a resample still counts (F1 0), as in sklearn

            def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
                return _f1_macro_along(a, b, axis, classes)

            vectorized = True
        else:

            def statistic(a: np.ndarray, b: np.ndarray) -> float:
                return fn(a, b)

            vectorized = False
        res = _percentile_bootstrap((y, p), statistic, vectorized, n_boot, confidence, seed)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {
        "estimate": estimate,
        "low": low,
        "high": high,
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
    """McNemar's test (statsmodels) from the two discordant counts b and c of a paired 2x2 table."""
    n = b + c
    use_exact = n < 25 if exact is None else exact
    if n == 0:
        return {"b": b, "c": c, "method": "none (no discordant pairs)", "statistic": 0.0, "p_value": 1.0}
    # only the discordant cells enter the test; the concordant ones are given as 0
    res = mcnemar([[0, b], [c, 0]], exact=use_exact, correction=True)
    method = "exact binomial" if use_exact else "chi-square with continuity correction"
    return {"b": b, "c": c, "method": method, "statistic": float(res.statistic), "p_value": float(res.pvalue)}


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
    estimate = float(diff.mean())
    if len(diff) < 2:
        return {"estimate": estimate, "low": estimate, "high": estimate, "confidence": confidence, "p_value": 1.0}
    res = _percentile_bootstrap((diff,), np.mean, True, n_boot, confidence, seed)
    samples = res.bootstrap_distribution
    other_side = np.mean(samples <= 0) if estimate > 0 else np.mean(samples >= 0)
    p = 1.0 if estimate == 0 else min(1.0, 2 * float(other_side))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"estimate": estimate, "low": low, "high": high, "confidence": confidence, "p_value": p}


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control when many pairs are tested)."""
    p = np.asarray(p_values, dtype=float)
    if len(p) == 0:
        return []
    return [float(v) for v in multipletests(p, method="holm")[1]]


def verdict(p_value: float, name_a: str, name_b: str, acc_a: float, acc_b: float, alpha: float = 0.05) -> str:
    """A plain-language reading of a test: which model is better, or no significant difference."""
    if p_value >= alpha:
        return f"no significant difference at alpha {alpha:g} (p = {p_value:.3g})"
    better, worse = (name_a, name_b) if acc_a > acc_b else (name_b, name_a)
    return f"{better} is significantly more accurate than {worse} at alpha {alpha:g} (p = {p_value:.3g})"
