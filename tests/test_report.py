"""The study report builds from a small run folder, holds every section, and survives missing data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sentiment_lab.errors import RunDirError, SentimentLabError
from sentiment_lab.report import build_report, overfitting_points, pick_explained, rates_of

SECTION_IDS = ("data", "training", "metrics", "confidence", "errors", "noise", "explanations")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_copy(tiny_run_dir: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    return run


def test_report_builds_with_every_section(run_copy: Path) -> None:
    analysis = build_report(run_copy, n_explanations=2, ig_steps=4, n_boot=200)
    page = (run_copy / "report.html").read_text()
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in page
    for text in ("bootstrap", "ECE", "Temperature scaling", "heuristics", "Confident learning", "integrated gradients"):
        assert text in page
    assert "http://" not in page.replace("http://www.w3.org", "")  # self-contained: no external resources
    assert page.count("data:image/png;base64,") >= 8
    for png in (run_copy / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == PNG
    saved = json.loads((run_copy / "analysis.json").read_text())
    assert saved == json.loads(json.dumps(analysis))
    assert set(SECTION_IDS[:5]) <= set(saved) and "label_noise" in saved
    ci = saved["metrics"]["ci"]["accuracy"]
    assert ci["low"] <= ci["estimate"] <= ci["high"]
    assert ci["estimate"] == pytest.approx(saved["metrics"]["test"]["accuracy"])
    assert len(saved["explanations"]["items"]) == 2
    assert saved["data"]["available"] and saved["label_noise"]["cleanlab"]["n"] == 64
    settings = json.loads((run_copy / "model" / "sentiment_lab.json").read_text())
    assert settings["temperature"] == pytest.approx(saved["confidence"]["calibration"]["temperature"])


def test_report_without_data_says_so(run_copy: Path) -> None:
    cfg = yaml.safe_load((run_copy / "config.yaml").read_text())
    cfg["data"]["path"] = str(run_copy / "no-such-data")
    (run_copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    analysis = build_report(run_copy, n_explanations=0, n_boot=100, store_calibration=False)
    assert not analysis["data"]["available"]
    assert "could not be reloaded" in analysis["data"]["note"]
    assert analysis["data"]["balance"]["test"]["negative"] + analysis["data"]["balance"]["test"]["positive"] == 64
    page = (run_copy / "report.html").read_text()
    assert "could not be reloaded" in page and "training split is unavailable" in page
    assert "explanations were switched off" in page


def test_report_of_a_baseline_run(tmp_path: Path, imdb_dir: Path) -> None:
    from sentiment_lab.baselines import run_baseline
    from sentiment_lab.config import build_config

    cfg = build_config({"name": "b", "data": {"path": str(imdb_dir), "max_train": 64, "max_eval": 32, "max_test": 64}})
    run_baseline(cfg, tmp_path / "base")
    analysis = build_report(tmp_path / "base", n_boot=100, label_noise=False)
    assert analysis["confidence"]["calibration"] is None
    assert not analysis["explanations"]["available"]
    assert not analysis["training"]["available"]
    assert "baseline run" in (tmp_path / "base" / "report.html").read_text()


def test_report_refuses_unfinished_folders(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "half").mkdir()
    with pytest.raises(RunDirError, match="not a finished run folder"):
        build_report(tmp_path / "half")
    with pytest.raises(SentimentLabError, match="target-accuracy"):
        build_report(tmp_path / "half", target_accuracy=1.2)


def test_overfitting_points_on_synthetic_history() -> None:
    nan = float("nan")
    history = pd.DataFrame(
        {
            "step": [10, 20, 30, 40, 50, 60],
            "train_loss": [0.7, 0.6, nan, 0.4, 0.3, nan],
            "val_loss": [nan, nan, 0.5, nan, nan, 0.6],
        }
    )
    found = overfitting_points(history)
    assert len(found) == 1 and found[0]["step"] == 60
    assert found[0]["train_loss"] == pytest.approx(0.35) and found[0]["train_loss_before"] == pytest.approx(0.65)
    history.loc[5, "val_loss"] = 0.45
    assert overfitting_points(history) == []


def test_confusion_rates_hand_computed() -> None:
    rates = rates_of([[90, 10], [20, 80]])
    assert rates == pytest.approx({"tnr": 0.9, "fpr": 0.1, "tpr": 0.8, "fnr": 0.2})


def test_pick_explained_prefers_confident_errors() -> None:
    test = pd.DataFrame(
        {"label": [0, 0, 1, 1, 0, 1], "pred": [1, 1, 0, 1, 0, 1], "prob_pos": [0.9, 0.6, 0.01, 0.8, 0.2, 0.99]}
    )
    picked = pick_explained(test, 3)
    assert picked[:2] == [(2, "confident error"), (0, "confident error")]
    assert picked[2] == (4, "confident correct")
    assert len(pick_explained(test, 10)) == 6


def test_report_command(run_copy: Path, capsys: pytest.CaptureFixture) -> None:
    from sentiment_lab.cli import main

    assert main(["report", str(run_copy), "--explanations", "1", "--ig-steps", "2", "--no-label-noise"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "temperature" in out and "negation" in out
    assert (run_copy / "report.html").is_file()
