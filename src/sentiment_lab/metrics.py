"""Classification metrics in the `metrics.json` schema (scikit-learn does the arithmetic)."""

from __future__ import annotations

from typing import Any

import numpy as np

CLASS_NAMES = ("negative", "positive")


def classification_metrics(
    labels: Any, preds: Any, label_names: list[str] | tuple[str, ...] | None = None, ordinal: bool = False
) -> dict[str, Any]:
    """Accuracy, precision/recall/F1, per-class table, confusion matrix (rows true, columns predicted).

    Two classes: F1, precision and recall are those of the positive class (id 1), plus their macro averages.
    More classes: `f1`, `precision` and `recall` are the macro averages (every class weighs the same), with
    `f1_macro`, `precision_macro`, `recall_macro` and `f1_weighted` beside them.
    label_names: class names by id (default negative/positive, or class_0.. from the ids seen).
    ordinal: the ids are ordered (stars): adds `mae` (mean |pred - label| in classes) and `within_one` (the share
    predicted at most one class away).
    """
    # scikit-learn takes about 0.5 s to import; predict and serve load this module (softmax) but never score
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        mean_absolute_error,
        precision_recall_fscore_support,
    )

    y = np.asarray(labels, dtype=int)
    p = np.asarray(preds, dtype=int)
    if label_names is None:
        k = max(2, int(max(y.max(initial=0), p.max(initial=0))) + 1)
        label_names = CLASS_NAMES if k == 2 else tuple(f"class_{i}" for i in range(k))
    ids = list(range(len(label_names)))
    mprec, mrec, mf1, _ = precision_recall_fscore_support(y, p, average="macro", labels=ids, zero_division=0)
    _, _, wf1, _ = precision_recall_fscore_support(y, p, average="weighted", labels=ids, zero_division=0)
    cp, cr, cf, cs = precision_recall_fscore_support(y, p, average=None, labels=ids, zero_division=0)
    if len(ids) == 2:
        prec, rec, f1, _ = precision_recall_fscore_support(y, p, average="binary", pos_label=1, zero_division=0)
    else:
        prec, rec, f1 = mprec, mrec, mf1
    out = {
        "n": len(y),
        "accuracy": float(accuracy_score(y, p)) if len(y) else 0.0,
        "f1": float(f1),
        "precision": float(prec),
        "recall": float(rec),
        "f1_macro": float(mf1),
        "precision_macro": float(mprec),
        "recall_macro": float(mrec),
        "f1_weighted": float(wf1),
        "per_class": {
            name: {"precision": float(cp[i]), "recall": float(cr[i]), "f1": float(cf[i]), "support": int(cs[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(y, p, labels=ids).tolist(),
    }
    if ordinal:
        out["mae"] = float(mean_absolute_error(y, p)) if len(y) else 0.0
        out["within_one"] = float(np.mean(np.abs(p - y) <= 1)) if len(y) else 0.0
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def trainer_compute_metrics(eval_pred: Any, owners: np.ndarray | None = None) -> dict[str, float]:
    """`compute_metrics` for the HF Trainer: the scalar metrics of `classification_metrics` (any number of classes).

    The number of classes is the logits' width, so `f1` is the positive class's for two and the macro F1 beyond.
    owners: for evaluation rows that are windows of texts (`tokenization.long_text: chunk`), the text of each row;
    the metrics are then those of the texts, each scored by the mean of its windows' logits.
    """
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    if owners is not None:
        if len(owners) != len(logits):
            raise ValueError(f"{len(logits)} evaluation rows but {len(owners)} window owners")
        texts, first = np.unique(owners, return_index=True)  # every window of a text carries the text's label
        logits = average_by_owner(logits, owners, len(texts))
        labels = labels[first]
    k = logits.shape[-1]
    names = CLASS_NAMES if k == 2 else tuple(f"class_{i}" for i in range(k))
    m = classification_metrics(labels, np.argmax(logits, axis=-1), label_names=names)
    return {key: m[key] for key in ("accuracy", "f1", "precision", "recall", "f1_macro")}


def average_by_owner(logits: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Mean logits of the windows of each text."""
    sums = np.zeros((n, logits.shape[-1]), dtype=np.float64)
    np.add.at(sums, owners, logits)
    return (sums / np.bincount(owners, minlength=n)[:, None]).astype(np.float32)


# A training loss this close to ln(K) means the classifier still outputs the class prior. Trained sentiment models end
# far lower (binary IMDb ~0.2-0.4 = 0.3-0.6 ln 2; SST-5 ~1.0-1.2 = 0.6-0.75 ln 5), so 0.9 does not flag hard tasks.
CHANCE_LOSS_SHARE = 0.9
ONE_CLASS_SHARE = 0.99  # predictions: this share or more in one class ...
ONE_CLASS_LABEL_SHARE = 0.9  # ... while that class is below this share of the true labels


def not_learned_warnings(
    final_train_loss: float | None, labels: Any, preds: Any, label_names: list[str] | tuple[str, ...], split: str
) -> list[str]:
    """Warnings for a model that did not leave chance level: a final training loss near ln(K), or one class
    predicted for (nearly) every text of `split` whose true labels are mixed. Fine-tuning a pretrained encoder on a
    small or hard training set can sit at the prior for the first hundred or so steps and then learn (Mosbach et
    al. 2021, "On the stability of fine-tuning BERT"; docs/active_learning.md measured it): the fix is more steps."""
    k = len(label_names)
    fix = "train more optimizer steps (training.epochs or training.max_steps)"
    found = []
    chance = float(np.log(k))
    if (
        final_train_loss is not None
        and np.isfinite(final_train_loss)
        and final_train_loss >= CHANCE_LOSS_SHARE * chance
    ):
        found.append(
            f"the training loss ended at {final_train_loss:.3f}, chance level for {k} classes is ln {k} = "
            f"{chance:.3f}: the model did not learn; {fix}"
        )
    y = np.asarray(labels, dtype=int)
    p = np.asarray(preds, dtype=int)
    if len(p):
        top = int(np.bincount(p, minlength=k).argmax())
        predicted = float(np.mean(p == top))
        if predicted >= ONE_CLASS_SHARE and float(np.mean(y == top)) < ONE_CLASS_LABEL_SHARE:
            found.append(
                f"the model predicts {label_names[top]!r} for {predicted:.0%} of the {split} texts "
                f"({np.mean(y == top):.0%} of them are {label_names[top]!r}): it did not learn; {fix}"
            )
    return found
