"""Experiment trackers of a training run (`training.report_to`): which ones, and the MLflow run.

TensorBoard stays the recipe's own callback (one event file in RUN_DIR/tensorboard/). MLflow is written here with an
`MlflowClient` on an explicit store rather than through transformers' MLflowCallback, which is steered by
environment variables and the process-wide active run: a sweep's runs would then need the environment changed
between runs. Any other tracker transformers supports (wandb, comet_ml, ...) is handed to the Trainer's own
`report_to`.

The MLflow run holds the resolved config as params (dotted keys, as in config.yaml), the Trainer's logs as step
metrics, the numbers of metrics.json as final metrics, and the model folder, config.yaml, metrics.json, history.csv
(and report.html when there is one) as artifacts. The store is MLFLOW_TRACKING_URI when set (MLflow reads it), else
a local SQLite store in ./mlruns/ (mlflow.db, artifacts/): MLflow 3 refuses its old file store by default. A sweep
or a tuning study files its runs in one experiment (`TrackingGroup`). A tracker only watches: when the store cannot
be written, the run goes on without it after one warning, and the run folder is complete all the same.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import get_available_reporting_integrations

from sentiment_lab.errors import ConfigError

log = logging.getLogger("sentiment_lab")

OWN_TRACKERS = ("tensorboard", "mlflow")  # written by the recipe itself; the others go to the Trainer
INSTALL_HINTS = {"mlflow": 'pip install "sentiment-lab[mlflow]"', "tensorboard": "pip install tensorboard"}
DEFAULT_MLFLOW_DIR = "mlruns"
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
BATCH_LIMIT = 100  # params per MLflow log_batch call
# Files of a finished run folder logged as artifacts next to the model folder; missing ones are skipped.
RUN_ARTIFACTS = ("config.yaml", "metrics.json", "history.csv", "report.html")


def check_trackers(report_to: list[str]) -> None:
    """ConfigError naming each tracker of `training.report_to` that is not installed, and how to install it."""
    available = set(get_available_reporting_integrations())
    missing = [name for name in report_to if name not in available]
    if missing:
        hints = "; ".join(f"{name}: {INSTALL_HINTS.get(name, f'pip install {name}')}" for name in missing)
        raise ConfigError(
            f"training.report_to lists {', '.join(map(repr, missing))}, not installed here ({hints}); "
            "install it or remove it from training.report_to"
        )


def trainer_report_to(report_to: list[str]) -> list[str] | str:
    """The trackers the Trainer reports to itself: all but TensorBoard and MLflow, which the recipe writes."""
    others = [name for name in report_to if name not in OWN_TRACKERS]
    return others or "none"


@dataclass(frozen=True)
class TrackingGroup:
    """How a run is filed: the MLflow experiment (default: the config's name) and tags; a sweep or study sets it."""

    experiment: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys (`training.learning_rate`); lists stay values."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics.json as dotted keys (`test.accuracy`, `baselines.tfidf_logreg.test.f1`)."""
    return {
        key: float(value)
        for key, value in flatten(metrics).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def default_mlflow_store() -> tuple[str, str | None]:
    """(tracking URI, artifact location for new experiments): MLFLOW_TRACKING_URI when set, else ./mlruns/."""
    import mlflow  # optional extra, loaded only by runs that list it in training.report_to

    if mlflow.is_tracking_uri_set():  # MLFLOW_TRACKING_URI or mlflow.set_tracking_uri: MLflow's own choice
        return mlflow.get_tracking_uri(), None
    root = Path(DEFAULT_MLFLOW_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class MLflowRun:
    """The MLflow run of one training run. The first failure of the store is one warning; later calls do nothing."""

    def __init__(self, run_dir: Path, experiment: str, tags: dict[str, str]) -> None:
        self.run_dir, self.experiment, self.tags = run_dir, experiment, tags
        self.client: Any = None
        self.run_id: str | None = None
        self.uri: str | None = None

    @property
    def active(self) -> bool:
        return self.run_id is not None

    def _guard(self, action: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # any store failure (permissions, full disk, server down): the training goes on
            first = (str(exc).strip().splitlines() or [""])[0]
            log.warning(
                "MLflow: cannot %s in %s (%s: %s); training goes on without MLflow, the run folder is complete",
                action,
                self.uri or "the tracking store",
                type(exc).__name__,
                first[:300],
            )
            self.run_id = None
            return None

    def start(self, resolved: dict[str, Any]) -> None:
        """Open the run in its experiment and log the resolved config as params."""
        self._guard("start a run", self._start, resolved)

    def _start(self, resolved: dict[str, Any]) -> None:
        # optional extra, as in default_mlflow_store
        from mlflow import MlflowClient
        from mlflow.entities import Param

        self.uri, artifact_location = default_mlflow_store()
        self.client = MlflowClient(tracking_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(self.experiment, artifact_location=artifact_location)
            except Exception:  # another worker of the same sweep or study created it first
                experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {"sentiment_lab.run_dir": str(self.run_dir.resolve()), **self.tags}
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(key, str(value)[:MAX_PARAM_CHARS]) for key, value in flatten(resolved).items()]
        for start in range(0, len(params), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=params[start : start + BATCH_LIMIT])
        log.info("MLflow run %s in %s (experiment %r)", self.run_id, self.uri, self.experiment)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Log numbers at a step (the Trainer's loss, learning rate, validation metrics)."""
        if self.active:
            self._guard("log metrics", self._log_metrics, values, step)

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric  # optional extra, as in default_mlflow_store

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), BATCH_LIMIT):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + BATCH_LIMIT])

    def finish(self, metrics: dict[str, Any], step: int) -> None:
        """Log metrics.json's numbers and the run's files, then close the run as finished."""
        if not self.active:
            return
        self.log_metrics(numeric_metrics(metrics), step)
        if self.active:
            self._guard("log the run's files", self._log_artifacts)
        if self.active:
            self._guard("close the run", self.client.set_terminated, self.run_id, "FINISHED")

    def _log_artifacts(self) -> None:
        model_dir = self.run_dir / "model"
        if model_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(model_dir), artifact_path="model")
        for name in RUN_ARTIFACTS:
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name))

    def abort(self) -> None:
        """Close the run as failed (the training raised)."""
        if self.active:
            self._guard("close the run", self.client.set_terminated, self.run_id, "FAILED")
            self.run_id = None


class MLflowStepMetrics(TrainerCallback):
    """Sends every Trainer log (loss, learning rate, validation metrics) to the MLflow run, step by step."""

    def __init__(self, run: MLflowRun) -> None:
        self.run = run

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            numbers = {k: float(v) for k, v in logs.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            self.run.log_metrics({k: v for k, v in numbers.items() if math.isfinite(v)}, state.global_step)
