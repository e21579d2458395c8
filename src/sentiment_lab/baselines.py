"""Non-neural baselines (scikit-learn): majority class and TF-IDF 1-2-grams + logistic regression.

`run_baseline` writes the same run-folder format as `train` so every later stage can read it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from sentiment_lab.config import ExperimentConfig, config_to_dict
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.rundir import check_run_dir, environment_info, reset_run_dir, run_lock


def tfidf_pipeline(seed: int = 42) -> Any:
    """TF-IDF (1-2-grams, sublinear tf) feeding a logistic regression (multinomial for more than two classes:
    scikit-learn's lbfgs default)."""

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True, strip_accents="unicode"),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )


def fit_baselines(splits: DataSplits, seed: int = 42, ordinal: bool = False) -> dict[str, dict[str, Any]]:
    """Fit both baselines on the train split; metrics and test probabilities for each.

    Each result has `metrics` and `test_probs`/`val_probs` (n, K); two classes also `test_prob_pos`/`val_prob_pos`.
    ordinal: add the ordinal metrics (MAE, within-one), as `data.ordinal` does for the model.
    """
    out: dict[str, dict[str, Any]] = {}
    names = splits.label_names
    binary = len(names) == 2
    majority = int(splits.train["label"].mode().iloc[0])
    out["majority"] = {
        "metrics": {
            split: classification_metrics(df["label"], np.full(len(df), majority), names, ordinal)
            for split, df in (("val", splits.val), ("test", splits.test))
            if not df.empty
        },
        "test_probs": np.eye(len(names))[np.full(len(splits.test), majority)],
    }
    if binary:
        out["majority"]["test_prob_pos"] = np.full(len(splits.test), float(majority))
    start = time.perf_counter()
    pipe = tfidf_pipeline(seed).fit(splits.train["text"], splits.train["label"])
    fit_s = time.perf_counter() - start
    metrics: dict[str, Any] = {"train_runtime_s": fit_s}
    result: dict[str, Any] = {"metrics": metrics}
    for split in ("val", "test"):
        df = getattr(splits, split)
        if df.empty:  # no validation split
            result[f"{split}_probs"] = result[f"{split}_prob_pos"] = None
            continue
        # columns of every class id, also one the training labels lack (its probability 0)
        probs = np.zeros((len(df), len(names)))
        probs[:, pipe.classes_] = pipe.predict_proba(df["text"])
        result[f"{split}_probs"] = probs
        if binary:  # the 0.5 threshold on the positive class, as before
            result[f"{split}_prob_pos"] = probs[:, 1]
            preds = (probs[:, 1] >= 0.5).astype(int)
        else:
            result.pop(f"{split}_prob_pos", None)
            preds = probs.argmax(axis=1)
        metrics[split] = classification_metrics(df["label"], preds, names, ordinal)
    out["tfidf_logreg"] = result
    return out


def run_baseline(cfg: ExperimentConfig, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Fit the baselines on the configured data and write a run folder (TF-IDF is its main model)."""
    run_dir = Path(out_dir)
    check_run_dir(run_dir, overwrite=overwrite)
    splits = prepare_data(cfg.data)
    if overwrite:
        reset_run_dir(run_dir)
    with run_lock(run_dir):
        resolved = config_to_dict(cfg)
        resolved["resolved"] = {
            "model_path": "tfidf_logreg",
            "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
            "cleaning": splits.cleaning,
            "environment": environment_info(),
        }
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
        results = fit_baselines(splits, cfg.training.seed, cfg.data.ordinal)
        tfidf = results["tfidf_logreg"]
        for split, name in (("val", "val_predictions.parquet"), ("test", "predictions.parquet")):
            df = getattr(splits, split)
            if df.empty:  # no validation split: no val_predictions.parquet, as `train` does
                continue
            frame = pd.DataFrame(
                {"id": df["id"].to_numpy(), "text": df["text"].to_numpy(), "label": df["label"].to_numpy()}
            )
            if len(splits.label_names) == 2:
                prob = tfidf[f"{split}_prob_pos"]
                frame["pred"], frame["prob_pos"] = (prob >= 0.5).astype(int), prob
            else:  # the columns of a K-class model's predictions, without logits
                probs = tfidf[f"{split}_probs"]
                frame["pred"], frame["confidence"] = probs.argmax(axis=1), probs.max(axis=1)
                for i in range(probs.shape[1]):
                    frame[f"prob_{i}"] = probs[:, i]
            write_parquet_atomic(run_dir / name, frame)
        metrics = {
            "model": "tfidf_logreg",
            **{split: tfidf["metrics"][split] for split in ("val", "test") if split in tfidf["metrics"]},
            "train_runtime_s": tfidf["metrics"]["train_runtime_s"],
            "train_samples_per_s": len(splits.train) / tfidf["metrics"]["train_runtime_s"],
            "data": resolved["resolved"]["data"],
            "baselines": {"majority": results["majority"]["metrics"]},
        }
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics
