"""Reading a finished run folder: every file, and one clear RunDirError for a missing or damaged one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sentiment_lab.config import build_config, config_to_dict
from sentiment_lab.errors import ConfigError, RunDirError
from sentiment_lab.rundir import LOCK_FILE, load_run, read_run_config


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A small finished run folder written by hand (no training): metrics, predictions, config, history."""
    run = tmp_path / "run"
    run.mkdir()
    raw = config_to_dict(build_config({"name": "fake", "training": {"seed": 7}}))
    raw["resolved"] = {"device": "cpu", "data": {"train": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.75}, "best_step": 2}))
    preds = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": [0, 1, 1, 0], "pred": [0, 1, 0, 0]})
    preds.to_parquet(run / "predictions.parquet", index=False)
    preds.iloc[:2].to_parquet(run / "val_predictions.parquet", index=False)
    pd.DataFrame({"step": [1, 2], "train_loss": [0.7, 0.6]}).to_csv(run / "history.csv", index=False)
    return run


def test_load_run_reads_every_file(run: Path) -> None:
    r = load_run(run)
    assert r.path == run and r.metrics["best_step"] == 2
    assert r.predictions["id"].tolist() == ["a", "b", "c", "d"] and len(r.val_predictions) == 2
    assert r.history["train_loss"].tolist() == [0.7, 0.6]
    assert r.raw_config["resolved"]["device"] == "cpu" and r.raw_config["training"]["seed"] == 7
    assert r.config is not None and r.config.name == "fake" and r.config.training.seed == 7
    assert r.config_problem is None and r.model_dir is None
    assert read_run_config(run) == r.config
    (run / "model").mkdir()
    (run / "model" / "config.json").write_text("{}")
    assert load_run(run).model_dir == run / "model"


def test_optional_files_may_be_missing(run: Path) -> None:
    for name in ("val_predictions.parquet", "history.csv", "config.yaml"):
        (run / name).unlink()
    r = load_run(run)
    assert r.val_predictions is None and r.history is None
    assert r.raw_config == {} and r.config is None and "config.yaml is missing" in r.config_problem
    with pytest.raises(RunDirError, match="config.yaml is missing"):
        read_run_config(run)


def test_invalid_config_is_a_problem_not_a_failure(run: Path) -> None:
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["training"]["epoch"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    r = load_run(run)
    assert r.config is None and "training.epoch" in r.config_problem
    assert r.raw_config["training"]["epoch"] == 3  # compare still sees what the run was trained with
    with pytest.raises(ConfigError, match="training.epoch"):
        read_run_config(run)


def test_missing_files_and_columns(run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="no such run folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(RunDirError, match=r"lacks columns \['prob_pos', 'text'\]"):
        load_run(run, columns=("id", "prob_pos", "text"))
    (run / "metrics.json").unlink()
    with pytest.raises(RunDirError, match="has no metrics.json; it is not a finished run folder"):
        load_run(run)
    (run / LOCK_FILE).write_text(str(os.getppid()))  # a live process that is not us holds the run
    with pytest.raises(RunDirError, match=f"process {os.getppid()} is still writing"):
        load_run(run)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("metrics.json", b'{"test": '),
        ("metrics.json", b"[1, 2]"),
        ("predictions.parquet", b"PAR1 not really"),
        ("val_predictions.parquet", b""),
        ("history.csv", b"\xff\xfe\x00garbage"),
        ("config.yaml", b"training: [unclosed"),
    ],
)
def test_damaged_file_is_named(run: Path, name: str, content: bytes) -> None:
    (run / name).write_bytes(content)
    with pytest.raises(RunDirError, match="damaged") as exc:
        load_run(run)
    assert str(run / name) in str(exc.value)
