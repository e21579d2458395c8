"""Calibration: ECE and buckets on hand-made cases, temperature scaling, abstention, storing into the model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_lab.analysis import calibration as cal
from sentiment_lab.errors import SentimentLabError
from sentiment_lab.predictor import Predictor
from sentiment_lab.sidecar import read_sidecar


def test_ece_hand_computed() -> None:
    # ten bins of width 0.05 over [0.5, 1]
    # bin [0.50, 0.55): confidences 0.52, 0.52 with 1 of 2 correct -> |0.5 - 0.52| on 2 reviews
    # bin [0.95, 1.00]: 0.97 x 3 and 1.0 (the closed right edge), all correct -> |1 - 0.9775| on 4 reviews
    conf = np.array([0.52, 0.52, 0.97, 0.97, 0.97, 1.0])
    ok = np.array([1, 0, 1, 1, 1, 1], bool)
    bins = cal.reliability_bins(conf, ok)
    assert bins["n"].tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 4]
    expected = (2 * 0.02 + 4 * abs(1.0 - (0.97 * 3 + 1.0) / 4)) / 6
    assert cal.expected_calibration_error(conf, ok) == pytest.approx(expected)
    assert cal.expected_calibration_error(np.array([0.75] * 4), np.array([1, 1, 1, 0], bool)) == pytest.approx(0.0)


def test_confidence_buckets_match_the_study_layout() -> None:
    conf = np.array([0.55, 0.65, 0.65, 0.85, 0.99, 1.0])
    ok = np.array([0, 1, 0, 1, 1, 0], bool)
    rows = cal.confidence_bucket_table(conf, ok)
    assert [r["bucket"] for r in rows] == ["50-60%", "60-70%", "70-80%", "80-90%", "90-100%"]
    assert [r["n"] for r in rows] == [1, 2, 0, 1, 2]
    assert [r["errors"] for r in rows] == [1, 1, 0, 0, 1]
    assert rows[2]["error_rate"] is None
    assert sum(r["share_of_errors"] for r in rows) == pytest.approx(1.0)


def _miscalibrated(n: int = 4000, scale: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a calibrated model multiplied by `scale`: over-confident by exactly that temperature."""
    rng = np.random.default_rng(seed)
    margin = rng.normal(0, 2.0, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(int)  # labels drawn from the calibrated probability
    logits = np.stack([np.zeros(n), scale * margin], axis=1)
    return logits, labels


def test_temperature_scaling_lowers_nll_on_overconfident_logits() -> None:
    logits, labels = _miscalibrated()
    t = cal.fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    assert cal.nll(logits, labels, t) < cal.nll(logits, labels) - 0.05
    before = cal.confidence_and_correct(cal.scaled_prob_pos(logits, 1.0), labels)
    after = cal.confidence_and_correct(cal.scaled_prob_pos(logits, t), labels)
    assert cal.expected_calibration_error(after[0], after[2]) < cal.expected_calibration_error(before[0], before[2])
    assert (before[1] == after[1]).all()  # the predicted class never changes


def test_temperature_below_one_for_underconfident_logits() -> None:
    logits, labels = _miscalibrated(scale=0.4)
    assert cal.fit_temperature(logits, labels) < 1.0


def test_coverage_curve_and_abstention_threshold() -> None:
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    ok = np.array([1, 1, 1, 0, 1, 0], bool)
    curve = cal.coverage_curve(conf, ok)
    assert curve["coverage"].tolist() == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert curve["accuracy"].tolist() == pytest.approx([1, 1, 1, 0.75, 0.8, 4 / 6])
    assert cal.abstention_threshold(conf, ok, 0.97) == 0.9  # lowest threshold with 100% kept accuracy
    assert cal.abstention_threshold(conf, ok, 0.8) == 0.7  # coverage 5/6 at 80%
    assert cal.abstention_threshold(conf, ~ok | (conf > 2), 0.97) is None
    out = cal.policy_outcome(conf, ok, 0.9)
    assert out["coverage"] == pytest.approx(0.5) and out["n_review"] == 3 and out["errors_caught"] == 2
    with pytest.raises(SentimentLabError, match="target accuracy"):
        cal.abstention_threshold(conf, ok, 1.5)


def test_calibrate_run_stores_keys_the_predictor_reads(tiny_run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    before = read_sidecar(run / "model")
    res = cal.calibrate_run(run, target_accuracy=0.97)
    stored = read_sidecar(run / "model")
    assert stored.temperature == pytest.approx(res["temperature"])
    assert stored.target_accuracy == 0.97
    assert stored.abstain_threshold == res["abstain_threshold"]
    assert stored.text == before.text and stored.labels == before.labels  # what training stored is kept
    assert res["val"]["nll_after"] <= res["val"]["nll_before"] + 1e-9
    predictor = Predictor.load(run / "model")
    assert predictor.temperature == pytest.approx(res["temperature"])
    if res["abstain_threshold"] is not None:
        assert predictor.review_threshold == pytest.approx(res["abstain_threshold"])


def test_calibrate_run_without_store_leaves_model_untouched(tiny_run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    before = (run / "model" / "sentiment_lab.json").read_text()
    assert cal.calibrate_run(run, store=False)["stored_in"] is None
    assert (run / "model" / "sentiment_lab.json").read_text() == before


def test_logits_missing_is_a_clear_error(tmp_path: Path) -> None:
    frame = pd.DataFrame({"label": [0, 1], "pred": [0, 1], "prob_pos": [0.2, 0.9]})
    with pytest.raises(SentimentLabError, match="baseline run"):
        cal.logits_of(frame)
    with pytest.raises(SentimentLabError, match="val_predictions.parquet is missing"):
        cal.calibrate_run(tmp_path)
