"""evaluate and training share one scoring path and one precision: re-evaluating a run reproduces its predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sentiment_lab.evaluation import evaluate_model


def test_reevaluating_a_run_reproduces_its_test_predictions(tiny_run_dir: Path, tmp_path: Path) -> None:
    metrics = evaluate_model(tiny_run_dir, out_dir=tmp_path / "eval")
    trained = pd.read_parquet(tiny_run_dir / "predictions.parquet")
    again = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert again["id"].tolist() == trained["id"].tolist()
    # The same function (runners.score_split) at the same resolved precision: equal to the last bit, not "close".
    np.testing.assert_array_equal(again[["logit_neg", "logit_pos"]], trained[["logit_neg", "logit_pos"]])
    assert trained["logit_pos"].nunique() > 1  # a model that answers the same for every review would prove nothing
    run_precision = json.loads((tiny_run_dir / "metrics.json").read_text())["precision"]
    assert metrics["precision"] == run_precision


def test_evaluate_in_another_precision_says_so(tiny_run_dir: Path, tmp_path: Path) -> None:
    metrics = evaluate_model(tiny_run_dir, out_dir=tmp_path / "eval", precision="fp32")
    assert metrics["precision"] == "fp32"
    trained = pd.read_parquet(tiny_run_dir / "predictions.parquet")
    again = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    np.testing.assert_allclose(again["prob_pos"], trained["prob_pos"], atol=2e-2)  # bf16 vs fp32 rounding at most
