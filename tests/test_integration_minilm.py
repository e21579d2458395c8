"""Integration: the real packaged MiniLM-L6, a few steps on 64 IMDb reviews, through the CLI."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, pipeline

from sentiment_lab.cli import main
from sentiment_lab.evaluation import evaluate_model
from sentiment_lab.modeling import resolve_model_name

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
    preds = pd.read_parquet(run / "predictions.parquet")
    assert metrics["test"]["n"] == len(preds) == 32
    assert metrics["test"]["accuracy"] == pytest.approx((preds["pred"] == preds["label"]).mean())
    assert pd.read_csv(run / "history.csv")["val_f1"].notna().sum() == 2

    # Four steps on 64 reviews leave MiniLM at chance (measured: every test review predicted positive, accuracy
    # 0.5), so an accuracy bound cannot tell a working run from a broken one. What four steps must do: move every
    # encoder weight away from the pretrained checkpoint (about 1e-4 per step at this learning rate), and save the
    # model that made the run's predictions.
    base = AutoModel.from_pretrained(resolve_model_name("minilm-l6")).state_dict()
    tuned = AutoModelForSequenceClassification.from_pretrained(run / "model").base_model.state_dict()
    layers = [k for k in base if k.startswith("encoder.layer.")]
    assert layers and [k for k in layers if torch.equal(base[k], tuned[k])] == []

    clf = pipeline("text-classification", model=str(run / "model"))
    labels = {r["label"] for r in clf(["An absolute masterpiece.", "Dull, boring and far too long."])}
    assert labels <= {"NEGATIVE", "POSITIVE"}
    # The reloaded model reproduces the run's own test predictions, review by review.
    again = evaluate_model(run, out_dir=tmp_path / "eval")
    assert again["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    reloaded = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert reloaded["id"].tolist() == preds["id"].tolist()
    np.testing.assert_allclose(reloaded["prob_pos"], preds["prob_pos"], atol=1e-3)
