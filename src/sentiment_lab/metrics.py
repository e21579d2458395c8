"""Classification metrics in the `metrics.json` schema (scikit-learn does the arithmetic)."""

from __future__ import annotations

from typing import Any

import numpy as np

CLASS_NAMES = ("negative", "positive")


def classification_metrics(labels: Any, preds: Any) -> dict[str, Any]:
    """Accuracy, binary (positive class) and macro precision/recall/F1, per-class table, confusion matrix."""
    # scikit-learn takes about 0.5 s to import; predict and serve load this module (softmax) but never score
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    y = np.asarray(labels, dtype=int)
    p = np.asarray(preds, dtype=int)
    prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary", pos_label=1, zero_division=0)
    mprec, mrec, mf1, _ = precision_recall_fscore_support(y, p, average="macro", labels=[0, 1], zero_division=0)
    cp, cr, cf, cs = precision_recall_fscore_support(y, p, average=None, labels=[0, 1], zero_division=0)
    return {
        "n": len(y),
        "accuracy": float(accuracy_score(y, p)) if len(y) else 0.0,
        "f1": float(f1),
        "precision": float(prec),
        "recall": float(rec),
        "f1_macro": float(mf1),
        "precision_macro": float(mprec),
        "recall_macro": float(mrec),
        "per_class": {
            name: {"precision": float(cp[i]), "recall": float(cr[i]), "f1": float(cf[i]), "support": int(cs[i])}
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": confusion_matrix(y, p, labels=[0, 1]).tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def trainer_compute_metrics(eval_pred: Any) -> dict[str, float]:
    """`compute_metrics` for the HF Trainer: the scalar metrics of `classification_metrics`."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    m = classification_metrics(labels, np.argmax(logits, axis=-1))
    return {k: m[k] for k in ("accuracy", "f1", "precision", "recall", "f1_macro")}
