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
    """TF-IDF (1-2-grams, sublinear tf) feeding a logistic regression."""

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95, sublinear_tf=True, strip_accents="unicode"),
        LogisticRegression(C=4.0, max_iter=2000, random_state=seed),
    )


def fit_baselines(splits: DataSplits, seed: int = 42) -> dict[str, dict[str, Any]]:
    """Fit both baselines on the train split; metrics and test probabilities for each."""
    out: dict[str, dict[str, Any]] = {}
    majority = int(splits.train["label"].mode().iloc[0])
    out["majority"] = {
        "metrics": {
            split: classification_metrics(df["label"], np.full(len(df), majority))
            for split, df in (("val", splits.val), ("test", splits.test))
        },
        "test_prob_pos": np.full(len(splits.test), float(majority)),
    }
    start = time.perf_counter()
    pipe = tfidf_pipeline(seed).fit(splits.train["text"], splits.train["label"])
    fit_s = time.perf_counter() - start
    metrics: dict[str, Any] = {"train_runtime_s": fit_s}
    probs = {}
    for split in ("val", "test"):
        df = getattr(splits, split)
        probs[split] = pipe.predict_proba(df["text"])[:, 1]
        metrics[split] = classification_metrics(df["label"], (probs[split] >= 0.5).astype(int))
    out["tfidf_logreg"] = {"metrics": metrics, "test_prob_pos": probs["test"], "val_prob_pos": probs["val"]}
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
        results = fit_baselines(splits, cfg.training.seed)
        tfidf = results["tfidf_logreg"]
        for split, name in (("val", "val_predictions.parquet"), ("test", "predictions.parquet")):
            df = getattr(splits, split)
            prob = tfidf[f"{split}_prob_pos"]
            frame = pd.DataFrame(
                {
                    "id": df["id"].to_numpy(),
                    "text": df["text"].to_numpy(),
                    "label": df["label"].to_numpy(),
                    "pred": (prob >= 0.5).astype(int),
                    "prob_pos": prob,
                }
            )
            write_parquet_atomic(run_dir / name, frame)
        metrics = {
            "model": "tfidf_logreg",
            "val": tfidf["metrics"]["val"],
            "test": tfidf["metrics"]["test"],
            "train_runtime_s": tfidf["metrics"]["train_runtime_s"],
            "train_samples_per_s": len(splits.train) / tfidf["metrics"]["train_runtime_s"],
            "data": resolved["resolved"]["data"],
            "baselines": {"majority": results["majority"]["metrics"]},
        }
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics
