"""Hyperparameter search with Optuna: a search space in YAML, objective = validation F1 (or another validation
metric, never a test one), median pruning.

The study lives in an Optuna storage: by default a SQLite file `TUNE_DIR/study.db`; any RDB URL (PostgreSQL,
MySQL) lets several workers on several machines share one study. `--trials N` is the study's total number of
finished (complete or pruned) trials, so re-running the same command after an interruption continues the study
and runs only the missing trials, and N workers started on one study together run exactly N trials.

Each trial is a normal run folder `TUNE_DIR/trials/trial-NNNN/`. Outputs (rewritten by every worker when it
stops): `best_config.yaml` (ready for `sentiment-lab train`), `trials.csv`, `optimization_history.png`,
`param_importances.png` and `tune.json` (summary).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import make_url
from transformers import TrainerCallback

from sentiment_lab.config import (
    apply_overrides,
    build_config,
    config_to_dict,
    load_config,
    override_value,
    read_config,
    read_yaml,
    validation_problems,
)
from sentiment_lab.data import prepare_data
from sentiment_lab.errors import ConfigError, SentimentLabError
from sentiment_lab.io import json_safe, write_csv_atomic, write_json_atomic, write_text_atomic
from sentiment_lab.rendering import pyplot, save_figure
from sentiment_lab.tracking import TrackingGroup
from sentiment_lab.training import train

log = logging.getLogger("sentiment_lab")

DEFAULT_SPACE: dict[str, Any] = {
    "sampler": "tpe",
    "pruner": "median",
    "params": {
        "training.learning_rate": {"type": "float", "low": 1.0e-5, "high": 2.0e-4, "log": True},
        "training.batch_size": {"type": "categorical", "choices": [8, 16, 32]},
        "training.epochs": {"type": "int", "low": 1, "high": 4},
        "training.weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "training.warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "model.llrd": {"type": "float", "low": 0.8, "high": 1.0},  # 1.0 = every layer at the base rate
    },
}


class TuneError(SentimentLabError):
    """The search space, storage or study cannot be used as given."""


class _BudgetReached(Exception):
    """Raised inside a trial that another worker's trials already made surplus."""


class ParamSpec(BaseModel):
    """One searched hyperparameter: a float/int range (optionally log-scaled or stepped) or a list of choices."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is larger than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("give either `log: true` or `step`, not both")
        return self

    def values_to_check(self) -> list[Any]:
        """The extreme values (or every choice): each must make a valid config."""
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class SearchSpace(BaseModel):
    """The search: sampler, pruner and the parameters (dotted config keys)."""

    model_config = ConfigDict(extra="forbid")

    # Validation metric to maximise. Binary F1 (the default) rewards predicting "positive" for everything
    # (F1 0.667 on balanced data); f1_macro does not.
    metric: Literal["f1", "f1_macro", "accuracy"] = "f1"
    sampler: Literal["tpe", "random"] = "tpe"
    n_startup_trials: int = Field(5, ge=0)  # TPE: random trials before the model kicks in
    seed: int | None = None  # sampler seed; leave unset when several workers share a study
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(2, ge=0)  # finished trials before anything is pruned
    pruner_warmup_evals: int = Field(0, ge=0)  # evaluations of a trial before it can be pruned
    params: dict[str, ParamSpec] = Field(min_length=1)


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read a search-space YAML file, or the default space (the issue's list) when path is None."""
    raw = read_yaml(path) if path else copy.deepcopy(DEFAULT_SPACE)
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as err:
        problems = "\n  ".join(validation_problems(err))
        raise TuneError(f"invalid search space {path or '(default)'}:\n  " + problems) from None


def check_space(space: SearchSpace, config_path: str | Path, overrides: list[str]) -> None:
    """Refuse a space whose keys or extreme values do not make a valid config, before any trial starts."""
    raw = apply_overrides(read_config(config_path), overrides)
    for key, spec in space.params.items():
        for value in spec.values_to_check():
            try:
                build_config(apply_overrides(raw, [f"{key}={override_value(value)}"]), str(config_path))
            except ConfigError as exc:
                raise TuneError(
                    f"search space parameter {key!r} = {value!r} does not make a valid config: {exc}"
                ) from None


def suggest(trial: Any, space: SearchSpace) -> dict[str, Any]:
    """Sample every parameter of the space for one trial."""
    values = {}
    for key, spec in space.params.items():
        if spec.type == "categorical":
            values[key] = trial.suggest_categorical(key, spec.choices)
        elif spec.type == "int":
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1), log=spec.log)
        else:
            values[key] = trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return values


def _pruning_callback_class() -> type:

    class OptunaPruningCallback(TrainerCallback):
        """Reports each evaluation's F1 to the trial (step = evaluation number) and stops a hopeless trial."""

        def __init__(self, trial: Any, metric: str = "eval_f1") -> None:
            self.trial = trial
            self.metric = metric
            self.evaluations = 0

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:

            if not metrics or self.metric not in metrics:
                return
            # Trials differ in batch size and length, so global steps do not line up; the n-th evaluation does.
            self.evaluations += 1
            self.trial.report(float(metrics[self.metric]), self.evaluations)
            if self.trial.should_prune():
                raise optuna.TrialPruned(
                    f"{self.metric} {metrics[self.metric]:.4f} at evaluation {self.evaluations} is below the median"
                )

    return OptunaPruningCallback


def pruning_callback(trial: Any, metric: str = "eval_f1") -> Any:
    """A TrainerCallback that reports `metric` to an Optuna trial after each evaluation and raises TrialPruned."""
    return _pruning_callback_class()(trial, metric)


def open_storage(url: str) -> Any:
    """An RDBStorage with a heartbeat, so trials of a killed worker are marked failed and retried once."""

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several local workers write one SQLite file: wait for the write lock instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    error: Exception | None = None
    for _ in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=30,
                    grace_period=120,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                    **kwargs,
                )
        except Exception as exc:  # sqlalchemy raises many types for bad URLs, missing drivers, refused connections
            error = exc
            if type(exc).__name__ not in ("IntegrityError", "OperationalError"):
                break
            # Workers started together race to create the schema of a new database; the loser retries.
            time.sleep(0.5 + random.random())
    raise TuneError(
        f"cannot open the Optuna storage {redact(url)}: {type(error).__name__}: {str(error).splitlines()[0]}. "
        "Give an RDB URL such as sqlite:///path/study.db or postgresql://user:pass@host/db "
        "(PostgreSQL needs `pip install psycopg2-binary`)"
    )


def redact(url: str) -> str:
    """A storage URL with its password hidden, for logs and files."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _sampler(space: SearchSpace, seed: int | None) -> Any:

    seed = space.seed if seed is None else seed
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: running trials of other workers count as bad guesses, so workers do not pile up on one point.
        return optuna.samplers.TPESampler(n_startup_trials=space.n_startup_trials, seed=seed, constant_liar=True)


def _pruner(space: SearchSpace) -> Any:

    if space.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=space.pruner_startup_trials, n_warmup_steps=space.pruner_warmup_evals
    )


def _claimed(study: Any, below: int | None = None) -> int:
    """Trials that count towards the budget: finished, running, or queued for a retry (optionally numbered below)."""

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states) if below is None or t.number < below)


def tune(
    config_path: str | Path,
    n_trials: int,
    space_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    sampler_seed: int | None = None,
) -> dict[str, Any]:
    """Run (or continue) a study until it has `n_trials` finished trials; write the outputs; return tune.json.

    storage: an RDB URL shared by all workers (default sqlite:///OUT/study.db). n_trials=0 only rewrites outputs.
    """

    if n_trials < 0:
        raise TuneError(f"--trials must be 0 or more, got {n_trials}")
    overrides = list(overrides or [])
    base_cfg = load_config(config_path, overrides, data_path)  # validates the config before any study exists
    if not base_cfg.data.has_validation_split:
        raise TuneError(
            f"{config_path} has no validation split (data.val_fraction 0) and tuning optimises a validation "
            "metric (the test set is never used for choices); set data.val_fraction > 0 with --set"
        )
    space = load_space(space_path)
    check_space(space, config_path, overrides)
    out = Path(out_dir) if out_dir else Path("runs") / "tune" / base_cfg.name
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or base_cfg.name
    space_json = space.model_dump(mode="json")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=open_storage(url),
        sampler=_sampler(space, sampler_seed),
        pruner=_pruner(space),
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", space_json)
        study.set_user_attr("objective", f"val_{space.metric}")
    elif recorded != space_json:
        raise TuneError(
            f"study {name!r} in {redact(url)} was created with a different search space; use the original space "
            "file, or pass --study-name to start a new study"
        )

    use_callback = space.pruner != "none"
    cache: dict[str, Any] = {}

    def objective(trial: Any) -> float:

        # Trial numbers are assigned atomically by the storage: a trial with n_trials others before it is surplus.
        if _claimed(study, below=trial.number) >= n_trials:
            trial.set_user_attr("surplus", True)
            raise _BudgetReached
        params = suggest(trial, space)
        items = overrides + [f"{k}={override_value(v)}" for k, v in params.items()]
        cfg = load_config(config_path, items, data_path)
        cfg.name = f"{name}/trial-{trial.number:04d}"
        run_dir = out / "trials" / f"trial-{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        data_key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        if data_key not in cache:
            cache.clear()
            cache[data_key] = prepare_data(cfg.data)
        kwargs = {"callbacks": [pruning_callback(trial, f"eval_{space.metric}")]} if use_callback else {}
        # One MLflow experiment per study, shared by all its workers; the trial number as a tag.
        group = TrackingGroup(f"tune {name}", {"optuna.study": name, "optuna.trial": str(trial.number)})
        train(cfg, run_dir, splits=cache[data_key], tracking=group, **kwargs)
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        trial.set_user_attr("val_accuracy", metrics["val"]["accuracy"])
        trial.set_user_attr("train_runtime_s", metrics.get("train_runtime_s"))
        return float(metrics["val"][space.metric])  # a validation metric: the test set is never looked at

    try:
        while _claimed(study) < n_trials:
            try:
                study.optimize(objective, n_trials=1, catch=())
            except _BudgetReached:
                break
    finally:
        summary = write_outputs(study, out, config_path, overrides, data_path, url)
    return summary


def _trials_frame(study: Any, objective: str) -> Any:
    frame = study.trials_dataframe(
        attrs=("number", "value", "state", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    )
    if frame.empty:
        return frame
    if "user_attrs_surplus" in frame:
        frame = frame[frame["user_attrs_surplus"] != True].drop(columns="user_attrs_surplus")  # noqa: E712
    frame = frame.rename(columns={"value": objective})
    frame.columns = [c.removeprefix("user_attrs_") for c in frame.columns]
    if "duration" in frame:
        frame["duration"] = frame["duration"].dt.total_seconds()
        frame = frame.rename(columns={"duration": "duration_s"})
    return frame


def _save_plot(ax: Any, path: Path) -> None:
    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    save_figure(fig, path)


def write_outputs(
    study: Any,
    out: Path,
    config_path: str | Path,
    overrides: list[str],
    data_path: str | None = None,
    storage_url: str | None = None,
) -> dict[str, Any]:
    """best_config.yaml, trials.csv, the two plots and tune.json for a study (safe to call from every worker)."""
    pyplot()  # optuna's plots draw with pyplot: the off-screen backend first

    objective = study.user_attrs.get("objective", "val_f1")
    frame = _trials_frame(study, objective)
    write_csv_atomic(out / "trials.csv", frame)
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for state in frame.get("state", []):
        counts[state] = counts.get(state, 0) + 1
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "storage": redact(storage_url) if storage_url else None,
        "objective": objective,
        "direction": "maximize",
        "trials": counts,
        "best": None,
        "files": ["trials.csv"],
        "plots_skipped": {},
    }
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if complete:
        best = study.best_trial
        summary["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        }
        items = overrides + [f"{k}={override_value(v)}" for k, v in best.params.items()]
        cfg = load_config(config_path, items, data_path)
        cfg.name = f"{study.study_name}-best"
        header = (
            f"# Best of Optuna study {study.study_name!r}: trial {best.number}, {objective} {best.value:.4f}.\n"
            f"# Base config {config_path}; train it with: sentiment-lab train {out / 'best_config.yaml'}\n"
        )
        write_text_atomic(out / "best_config.yaml", header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        summary["files"].append("best_config.yaml")
    plots = {
        "optimization_history.png": optuna.visualization.matplotlib.plot_optimization_history,
        "param_importances.png": optuna.visualization.matplotlib.plot_param_importances,
    }
    for filename, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = plot(study, target_name=objective)
            _save_plot(ax, out / filename)
            summary["files"].append(filename)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            # Importances need at least two complete trials whose parameters vary.
            summary["plots_skipped"][filename] = f"{type(exc).__name__}: {exc}"
    summary = json_safe(summary)
    write_json_atomic(out / "tune.json", summary)
    return summary
