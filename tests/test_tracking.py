"""`training.report_to`: tracker names checked, TensorBoard as before, an MLflow run with the resolved config, the
metrics of metrics.json and the run's files; a store that cannot be written costs one warning, never the run; sweeps
and studies file their runs in one experiment. The MLflow stores are SQLite files in tmp folders."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

import sentiment_lab.sweep
import sentiment_lab.tracking
import sentiment_lab.tune
from conftest import tiny_config
from sentiment_lab.config import build_config
from sentiment_lab.errors import ConfigError
from sentiment_lab.sweep import run_sweep
from sentiment_lab.tracking import TrackingGroup, check_trackers, numeric_metrics, trainer_report_to
from sentiment_lab.training import build_training_arguments, train
from sentiment_lab.tune import tune

mlflow = pytest.importorskip("mlflow", reason='the MLflow tests need the extra: pip install "sentiment-lab[mlflow]"')


def test_tracker_names_are_checked_when_the_config_is_read() -> None:
    assert build_config({"training": {"report_to": "mlflow"}}).training.report_to == ["mlflow"]
    assert build_config({"training": {"report_to": ["mlflow", "tensorboard", "mlflow"]}}).training.report_to == [
        "mlflow",
        "tensorboard",
    ]
    assert build_config({"training": {"report_to": []}}).training.report_to == []
    with pytest.raises(ConfigError, match=r"unknown tracker 'mlfow'.*mlflow.*tensorboard.*\[\] for none"):
        build_config({"training": {"report_to": ["tensorboard", "mlfow"]}})


def test_a_tracker_that_is_not_installed_is_one_config_error(monkeypatch) -> None:
    monkeypatch.setattr(sentiment_lab.tracking, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(
        ConfigError, match=r"'mlflow', not installed here \(mlflow: pip install \"sentiment-lab\[mlflow\]\"\)"
    ):
        check_trackers(["tensorboard", "mlflow"])
    check_trackers(["tensorboard"])


def test_the_trainer_reports_only_to_trackers_the_recipe_does_not_write(
    tiny_model_dir: Path, imdb_dir: Path, tmp_path
) -> None:
    assert trainer_report_to(["tensorboard", "mlflow"]) == "none"
    assert trainer_report_to(["tensorboard", "wandb", "mlflow"]) == ["wandb"]
    cfg = build_config(tiny_config(tiny_model_dir, imdb_dir, report_to=["tensorboard", "mlflow"]))
    precision = type("P", (), {"name": "fp32", "device": "cpu"})()
    assert build_training_arguments(cfg, tmp_path, precision).report_to == []  # transformers' "none"


def test_numeric_metrics_are_the_finite_numbers_of_metrics_json() -> None:
    metrics = {"test": {"accuracy": 0.9, "n": 10, "confusion": [[1, 2], [3, 4]], "per_class": {"pos": {"f1": 0.8}}}}
    metrics |= {"resumed_from": None, "loss": float("nan"), "precision": "fp32", "flag": True}
    assert numeric_metrics(metrics) == {"test.accuracy": 0.9, "test.n": 10.0, "test.per_class.pos.f1": 0.8}


def test_an_mlflow_run_holds_config_metrics_and_files(
    tiny_model_dir: Path, imdb_dir: Path, tiny_splits, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store: ./mlruns/
    cfg = build_config(tiny_config(tiny_model_dir, imdb_dir, report_to=["tensorboard", "mlflow"]))
    group = TrackingGroup("sweep demo", {"sentiment_lab.variant": "lr=1e-3"})
    metrics = train(cfg, tmp_path / "run", splits=tiny_splits, tracking=group)

    assert (tmp_path / "run" / "tensorboard").is_dir()  # TensorBoard as before
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep demo")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["sentiment_lab.variant"] == "lr=1e-3"
    assert run.data.params["training.learning_rate"] == "0.001" and run.data.params["resolved.device"] == "cpu"
    assert run.data.metrics["test.accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert run.data.metrics["baselines.tfidf_logreg.test.accuracy"] > 0
    assert len(client.get_metric_history(run.info.run_id, "loss")) >= 2  # the Trainer's logs, step by step
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"model", "config.yaml", "metrics.json", "history.csv"} <= files
    model_files = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "model")}
    assert {"config.json", "model.safetensors", "sentiment_lab.json", "README.md"} <= model_files
    assert (tmp_path / "mlruns" / "artifacts").is_dir()


def test_a_store_that_cannot_be_written_costs_one_warning_not_the_run(
    tiny_model_dir: Path, imdb_dir: Path, tiny_splits, tmp_path: Path, monkeypatch, caplog
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")
    cfg = build_config(tiny_config(tiny_model_dir, imdb_dir, report_to=["mlflow"]))
    with caplog.at_level(logging.WARNING, logger="sentiment_lab"):
        train(cfg, tmp_path / "run", splits=tiny_splits)
    warnings = [r.getMessage() for r in caplog.records if "MLflow" in r.getMessage()]
    assert len(warnings) == 1 and "training goes on without MLflow" in warnings[0]
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert not (run / "tensorboard").exists()  # not listed, not written


def test_a_sweep_files_its_runs_in_one_experiment(tiny_model_dir: Path, imdb_dir: Path, tmp_path, monkeypatch) -> None:
    base = tiny_config(tiny_model_dir, imdb_dir)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"name": "lr", "base": "base.yaml", "grid": {"training.learning_rate": [1e-3, 3e-4]}, "seeds": [0]}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    groups: list[TrackingGroup] = []

    def record(cfg: Any, run_dir: Path, tracking: TrackingGroup, **kw: Any) -> None:
        groups.append(tracking)

    monkeypatch.setattr(sentiment_lab.sweep, "train", record)
    monkeypatch.setattr(sentiment_lab.sweep, "prepare_data", lambda data: None)
    run_sweep(tmp_path / "sweep.yaml", tmp_path / "out")
    assert [g.experiment for g in groups] == ["sweep out", "sweep out"]
    assert [g.tags["sentiment_lab.variant"] for g in groups] == ["learning_rate=0.001", "learning_rate=0.0003"]


def test_a_study_files_its_trials_in_one_experiment(
    tiny_model_dir: Path, imdb_dir: Path, tmp_path, monkeypatch
) -> None:
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**tiny_config(tiny_model_dir, imdb_dir), "name": "study"}))
    space = {"pruner": "none", "params": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    groups: list[TrackingGroup] = []

    def record(cfg: Any, run_dir: Path, tracking: TrackingGroup, **kw: Any) -> None:
        groups.append(tracking)
        Path(run_dir).mkdir(parents=True)
        split = {"accuracy": 0.5, "f1": 0.5}
        (Path(run_dir) / "metrics.json").write_text(json.dumps({"val": split, "test": split}))

    monkeypatch.setattr(sentiment_lab.tune, "train", record)
    monkeypatch.setattr(sentiment_lab.tune, "prepare_data", lambda data: None)
    tune(tmp_path / "cfg.yaml", 2, space_path=tmp_path / "space.yaml", out_dir=tmp_path / "tune")
    assert [(g.experiment, g.tags["optuna.trial"]) for g in groups] == [("tune study", "0"), ("tune study", "1")]
