"""Integration: the real packaged MiniLM-L6, a few steps on 64 IMDb reviews, through the CLI."""

import json
from pathlib import Path

import pandas as pd
import pytest

from sentiment_lab.cli import main

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_minilm_train_save_reload(tmp_path, imdb_dir, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            str(REPO / "configs" / "quickstart.yaml"),
            "--data",
            str(imdb_dir),
            "--out",
            str(run),
            "--set",
            "data.max_train=64",
            "--set",
            "data.max_eval=32",
            "--set",
            "data.max_test=32",
            "--set",
            "training.max_steps=4",
            "--set",
            "training.eval_strategy=steps",
            "--set",
            "training.eval_steps=2",
            "--set",
            "tokenization.max_length=128",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["best_step"] in (2, 4)
    assert metrics["test"]["n"] == 32 and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert pd.read_csv(run / "history.csv")["val_f1"].notna().sum() == 2

    from transformers import pipeline

    clf = pipeline("text-classification", model=str(run / "model"))
    labels = {r["label"] for r in clf(["An absolute masterpiece.", "Dull, boring and far too long."])}
    assert labels <= {"NEGATIVE", "POSITIVE"}
    # The reloaded model reproduces the run's own test predictions.
    from sentiment_lab.evaluation import evaluate_model

    again = evaluate_model(run, out_dir=tmp_path / "eval")
    assert again["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
