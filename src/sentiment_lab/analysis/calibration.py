"""Confidence and calibration: confidence buckets, reliability bins, ECE, temperature scaling, abstention.

Confidence is the top-label probability: max(p, 1 - p) of a binary classifier, in [0.5, 1]; the largest of the K
class probabilities otherwise, in [1/K, 1]. ECE, reliability bins and the abstention threshold all work on it.
Temperature scaling divides the K logits by one scalar T fitted on the validation set (Guo et al., 2017);
it changes confidences, never the predicted class.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment_lab.errors import ModelError, SentimentLabError
from sentiment_lab.metrics import softmax
from sentiment_lab.rundir import MODEL_DIR, PREDICTIONS_FILE, VAL_PREDICTIONS_FILE, RunFolder
from sentiment_lab.runners import logits_of as read_logits
from sentiment_lab.sidecar import DEFAULT_REVIEW_THRESHOLD, SIDECAR_FILE, read_sidecar, update_sidecar

CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # the DistilBERT study's 50-60 ... 90-100% buckets
DEFAULT_TARGET_ACCURACY = 0.97


def logits_of(frame: pd.DataFrame) -> np.ndarray:
    """The (n, K) logits of a predictions frame, or a clear error when the run has none (a baseline run)."""
    try:
        return np.asarray(read_logits(frame), dtype=np.float64)
    except ModelError:
        raise SentimentLabError(
            "the predictions have no logit_neg/logit_pos (or logit_0 .. logit_{K-1}) columns (a baseline run?); "
            "temperature scaling needs a neural run folder written by `sentiment-lab train`"
        ) from None


def has_logits(frame: pd.DataFrame) -> bool:
    """Whether a predictions frame holds the model's logits (a trained run, not a baseline)."""
    return {"logit_neg", "logit_pos"} <= set(frame.columns) or {"logit_0", "logit_1"} <= set(frame.columns)


def class_probs(frame: pd.DataFrame) -> np.ndarray:
    """The (n, K) class probabilities of a predictions frame: [1 - prob_pos, prob_pos], or prob_0 .. prob_{K-1}."""
    if "prob_pos" in frame.columns:
        p = frame["prob_pos"].to_numpy(dtype=np.float64)
        return np.stack([1 - p, p], axis=1)
    k = 0
    while f"prob_{k}" in frame.columns:
        k += 1
    if k >= 2:
        return frame[[f"prob_{i}" for i in range(k)]].to_numpy(dtype=np.float64)
    return softmax(logits_of(frame))


def num_classes(frame: pd.DataFrame) -> int:
    """K of a predictions frame: 2 with prob_pos; else its prob_i (or logit_i) columns; else the ids it holds."""
    columns = set(frame.columns)
    if "prob_pos" in columns or "logit_pos" in columns:
        return 2
    for prefix in ("prob_", "logit_"):
        k = 0
        while f"{prefix}{k}" in columns:
            k += 1
        if k >= 2:
            return k
    ids = [int(frame[c].max()) for c in ("label", "pred") if c in columns and len(frame)]
    return max([1, *ids]) + 1


def class_names_of(run: RunFolder) -> list[str]:
    """The class names of a finished run, by id (lower case, as metrics.json keys them).

    From the test metrics' per-class table (keyed by name, in id order), else the resolved config's
    `label_names`, else the model sidecar's labels; a binary run without any: negative, positive.
    """
    k = num_classes(run.predictions)
    per_class = (run.metrics.get("test") or {}).get("per_class") or {}
    candidates = [
        list(per_class),
        list((run.raw_config.get("resolved") or {}).get("label_names") or []),
        [n.lower() for n in (read_sidecar(run.model_dir).labels or [])] if run.model_dir is not None else [],
    ]
    for names in candidates:
        if len(names) == k:
            return [str(n) for n in names]
    return ["negative", "positive"] if k == 2 else [f"class_{i}" for i in range(k)]


def is_ordinal(run: RunFolder) -> bool:
    """Whether the run's classes are ordered (data.ordinal, or the model sidecar's `ordinal`)."""
    if run.config is not None and getattr(run.config.data, "ordinal", False):
        return True
    if run.model_dir is not None and getattr(read_sidecar(run.model_dir), "ordinal", False):
        return True
    return "mae" in (run.metrics.get("test") or {})


def lowest_confidence(k: int) -> float:
    """The lowest possible top-label probability of K classes (1/K): where reliability bins start."""
    return 1.0 / k


def frame_confidence_and_correct(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, predicted class, correct flag) of a predictions frame of any K (binary: from prob_pos)."""
    if "prob_pos" in frame.columns:
        return confidence_and_correct(frame["prob_pos"], frame["label"])
    return top_confidence_and_correct(class_probs(frame), frame["label"])


def top_confidence_and_correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, predicted class, correct flag) from (n, K) class probabilities and labels."""
    p = np.asarray(probs, dtype=float)
    y = np.asarray(labels, dtype=int)
    pred = p.argmax(axis=1)
    return p.max(axis=1), pred, pred == y


def confidence_and_correct(prob_pos: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, predicted class, correct flag) from positive-class probabilities and labels."""
    p = np.asarray(prob_pos, dtype=float)
    y = np.asarray(labels, dtype=int)
    pred = (p >= 0.5).astype(int)
    return np.maximum(p, 1 - p), pred, pred == y


def nll(logits: np.ndarray, labels: Any, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    y = np.asarray(labels, dtype=int)
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, labels: Any, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T) (bounded 1-D search on log T)."""
    from scipy.optimize import minimize_scalar  # lazy: scipy.optimize adds about half a second at import

    y = np.asarray(labels, dtype=int)
    if len(y) == 0:
        raise SentimentLabError("cannot fit a temperature on an empty validation set")
    # NLL is smooth and unimodal in log T for a fixed set of logits, so a bounded scalar search is exact enough.
    res = minimize_scalar(
        lambda log_t: nll(logits, y, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(res.x))


def scaled_prob_pos(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Positive-class probability after dividing the logits by T."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)[:, 1]


def scaled_confidence_and_correct(
    logits: np.ndarray, labels: Any, temperature: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, predicted class, correct flag) of softmax(logits / T) for any K (binary: as from prob_pos)."""
    if logits.shape[1] == 2:
        return confidence_and_correct(scaled_prob_pos(logits, temperature), labels)
    return top_confidence_and_correct(softmax(np.asarray(logits, dtype=np.float64) / temperature), labels)


def rescale_prob_pos(prob_pos: float, temperature: float) -> float:
    """A positive-class probability recomputed with the logits divided by T (two classes: sigmoid(logit / T))."""
    p = min(max(float(prob_pos), 1e-12), 1 - 1e-12)
    return float(scaled_prob_pos(np.array([[0.0, np.log(p) - np.log1p(-p)]]), temperature)[0])


def reliability_bins(confidence: Any, correct: Any, n_bins: int = 10, low: float = 0.5) -> pd.DataFrame:
    """Equal-width confidence bins over [low, 1]: count, mean confidence, accuracy and their gap per bin."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    edges = np.linspace(low, 1.0, n_bins + 1)
    # right-closed last bin so confidence 1.0 is counted; values below `low` fall into the first bin
    which = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    rows = []
    for k in range(n_bins):
        mask = which == k
        n = int(mask.sum())
        rows.append(
            {
                "bin_low": float(edges[k]),
                "bin_high": float(edges[k + 1]),
                "n": n,
                "confidence": float(conf[mask].mean()) if n else float("nan"),
                "accuracy": float(ok[mask].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(confidence: Any, correct: Any, n_bins: int = 10, low: float = 0.5) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width confidence bins."""
    bins = reliability_bins(confidence, correct, n_bins, low)
    filled = bins[bins["n"] > 0]
    total = filled["n"].sum()
    if total == 0:
        return 0.0
    return float((filled["n"] * (filled["accuracy"] - filled["confidence"]).abs()).sum() / total)


def confidence_buckets(k: int = 2) -> tuple[float, ...]:
    """Bucket edges of the confidence table: 50-60 ... 90-100% for two classes; from the tenth below 1/K otherwise."""
    if k == 2:
        return CONFIDENCE_BUCKETS
    start = int(10 / k) / 10  # K = 3: 30%, K = 5: 20%
    return tuple(round(start + 0.1 * i, 1) for i in range(round((1.0 - start) * 10) + 1))


def confidence_bucket_table(confidence: Any, correct: Any, k: int = 2) -> list[dict[str, Any]]:
    """Reviews, errors and error rate per confidence bucket 50-60 ... 90-100% (the DistilBERT study's table).

    k: the number of classes; K > 2 buckets start at the tenth below 1/K (30-40% for three classes).
    """
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    rows = []
    for lo, hi in itertools.pairwise(confidence_buckets(k)):
        mask = (conf >= lo) & ((conf < hi) if hi < 1.0 else (conf <= hi))
        n, errors = int(mask.sum()), int((mask & ~ok).sum())
        rows.append(
            {
                "bucket": f"{100 * lo:.0f}-{100 * hi:.0f}%",
                "n": n,
                "errors": errors,
                "error_rate": errors / n if n else None,
                "share_of_errors": errors / max(int((~ok).sum()), 1),
            }
        )
    return rows


def coverage_curve(confidence: Any, correct: Any) -> pd.DataFrame:
    """For each distinct threshold t: coverage (share with confidence >= t) and accuracy of those kept."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    order = np.argsort(-conf, kind="stable")
    sorted_conf, sorted_ok = conf[order], ok[order]
    kept = np.arange(1, len(conf) + 1)
    acc = np.cumsum(sorted_ok) / kept
    # one row per distinct confidence: keeping every review with confidence >= that value
    last_of_value = np.r_[sorted_conf[1:] != sorted_conf[:-1], True]
    return pd.DataFrame(
        {
            "threshold": sorted_conf[last_of_value],
            "coverage": kept[last_of_value] / len(conf),
            "accuracy": acc[last_of_value],
            "kept": kept[last_of_value],
        }
    )


def abstention_threshold(
    confidence: Any, correct: Any, target_accuracy: float = DEFAULT_TARGET_ACCURACY
) -> float | None:
    """The lowest confidence threshold whose kept reviews reach `target_accuracy` (max coverage), or None."""
    if not 0.5 <= target_accuracy <= 1.0:
        raise SentimentLabError(f"target accuracy must be between 0.5 and 1 (e.g. 0.97), got {target_accuracy}")
    curve = coverage_curve(confidence, correct)
    reached = curve[curve["accuracy"] >= target_accuracy - 1e-12]
    if reached.empty:
        return None
    return float(reached.sort_values("coverage", ascending=False)["threshold"].iloc[0])


def policy_outcome(confidence: Any, correct: Any, threshold: float | None) -> dict[str, Any]:
    """Coverage, accuracy on kept reviews and share sent to human review when abstaining below `threshold`."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=bool)
    if threshold is None:
        return {"threshold": None, "coverage": None, "accuracy_kept": None, "to_review": None, "n_review": None}
    keep = conf >= threshold
    return {
        "threshold": float(threshold),
        "coverage": float(keep.mean()) if len(conf) else 0.0,
        "accuracy_kept": float(ok[keep].mean()) if keep.any() else None,
        "to_review": float(1 - keep.mean()) if len(conf) else 0.0,
        "n_review": int((~keep).sum()),
        "errors_caught": int((~keep & ~ok).sum()),
        "errors_total": int((~ok).sum()),
    }


def calibrate_run(
    run_dir: str | Path,
    target_accuracy: float = DEFAULT_TARGET_ACCURACY,
    store: bool = True,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Fit T on the validation logits, measure ECE/NLL before and after on test, pick the abstention threshold.

    The threshold is chosen on the (scaled) validation set and evaluated on test, so test numbers are honest.
    store: write temperature, abstain_threshold and target_accuracy into RUN_DIR/model/sentiment_lab.json,
    where `Predictor` reads them.
    """
    run = Path(run_dir)
    val_path, test_path = run / VAL_PREDICTIONS_FILE, run / PREDICTIONS_FILE
    for p in (val_path, test_path):
        if not p.is_file():
            raise SentimentLabError(f"{p} is missing; calibration needs a finished run folder (sentiment-lab train)")
    val, test = pd.read_parquet(val_path), pd.read_parquet(test_path)
    val_logits, test_logits = logits_of(val), logits_of(test)
    if val_logits.shape[1] != test_logits.shape[1]:
        raise SentimentLabError(
            f"{val_path} has {val_logits.shape[1]} classes and {test_path} {test_logits.shape[1]}; both must come "
            "from the same model (re-run evaluate)"
        )
    k = test_logits.shape[1]
    low = lowest_confidence(k)
    temperature = fit_temperature(val_logits, val["label"])

    out: dict[str, Any] = {
        "temperature": temperature,
        "n_bins": n_bins,
        "target_accuracy": target_accuracy,
        **({"num_classes": k, "bins_low": low} if k > 2 else {}),
    }
    for split, frame, logits in (("val", val, val_logits), ("test", test, test_logits)):
        before = scaled_confidence_and_correct(logits, frame["label"], 1.0)
        after = scaled_confidence_and_correct(logits, frame["label"], temperature)
        out[split] = {
            "n": len(frame),
            "nll_before": nll(logits, frame["label"]),
            "nll_after": nll(logits, frame["label"], temperature),
            "ece_before": expected_calibration_error(before[0], before[2], n_bins, low),
            "ece_after": expected_calibration_error(after[0], after[2], n_bins, low),
        }
    val_conf, _, val_ok = scaled_confidence_and_correct(val_logits, val["label"], temperature)
    test_conf, _, test_ok = scaled_confidence_and_correct(test_logits, test["label"], temperature)
    threshold = abstention_threshold(val_conf, val_ok, target_accuracy)
    out["abstain_threshold"] = threshold
    out["abstention_test"] = policy_outcome(test_conf, test_ok, threshold)
    out["seed_policy_test"] = policy_outcome(test_conf, test_ok, DEFAULT_REVIEW_THRESHOLD)
    out["stored_in"] = None
    if store and (run / MODEL_DIR).is_dir():
        model_dir = run / MODEL_DIR
        # An unreachable target stores no threshold: the Predictor then keeps its 70% default.
        update_sidecar(model_dir, temperature=temperature, target_accuracy=target_accuracy, abstain_threshold=threshold)
        out["stored_in"] = str(model_dir / SIDECAR_FILE)
    return out
