"""The run folder: the contract between stages. Checks before a run starts, a pid lock, checkpoint discovery,
and the one reader of a finished run (`load_run`, `read_run_config`) that every later stage uses.

A run is finished when `metrics.json` exists (it is written last, atomically). An ensemble folder (written by
`sentiment-lab ensemble`) is run-like: the same files without `model/`, plus `ensemble.json` naming its member
runs and a fingerprint of each member's model files; `verify_ensemble` checks the members before they are loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sentiment_lab.config import ExperimentConfig, build_config, read_yaml
from sentiment_lab.errors import ConfigError, ModelError, RunDirError
from sentiment_lab.precision import ONEDNN_CACHE_ENV

FINISHED_MARKER = "metrics.json"
MODEL_DIR = "model"  # the run's Hugging Face model folder
ONNX_DIR = "onnx"  # inside a model folder: what `sentiment-lab export` writes
ADAPTER_DIR = "adapter"  # inside a LoRA run's model folder: adapter_config.json, adapter_model.safetensors (+ head)
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
MIN_FREE_BYTES = 500 * 1024 * 1024
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
CONFIG_FILE = "config.yaml"  # the resolved config: the experiment plus a `resolved:` section of facts
PREDICTIONS_FILE = "predictions.parquet"  # one row per test review
VAL_PREDICTIONS_FILE = "val_predictions.parquet"
HISTORY_FILE = "history.csv"  # losses and validation scores per logged step (trained runs only)
PREDICTION_COLUMNS = ("id", "label", "pred")  # in every predictions file; probabilities, logits and text vary
ENSEMBLE_FILE = "ensemble.json"  # marks an ensemble folder: its members, their weights, temperatures, fingerprints
ENSEMBLE_FORMAT = 1
COMPRESSION_FILE = "compression.json"  # benchmarks/compression_table.py --attach: the table of a student or ensemble
# Files of a model folder that say nothing about its predictions (the model card, a benchmark), left out of a
# member's fingerprint; so are sub-folders (onnx/) and hidden files (the temp files of atomic writes).
UNFINGERPRINTED = ("README.md", "bench.json")


def is_finished(run_dir: str | Path) -> bool:
    """True when the folder holds a completed run."""
    return (Path(run_dir) / FINISHED_MARKER).is_file()


def locate_model(path: str | Path) -> tuple[Path, Path | None]:
    """(model folder, run folder or None) for a run folder or a model folder.

    An ensemble folder holds no model of its own: ModelError naming its members (commands that need one model
    take a member; `predict`, `serve` and `evaluate` accept the ensemble itself).
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"no such model or run folder: {p}")
    if is_ensemble(p):
        members = ", ".join(m.path for m in read_ensemble(p).members)
        raise ModelError(
            f"{p} is an ensemble ({ENSEMBLE_FILE}), not one model; this command needs a single model: give one of "
            f"its members ({members}). predict, serve, evaluate, report and compare take the ensemble itself"
        )
    if (p / MODEL_DIR / "config.json").is_file():
        return p / MODEL_DIR, p
    if (p / "config.json").is_file():
        return p, None
    raise ModelError(f"{p} is neither a run folder (with model/) nor a Hugging Face model folder (with config.json)")


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints that were fully written (trainer_state.json is saved last), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None; incomplete ones are ignored."""
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def check_run_dir(run_dir: str | Path, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse a finished or foreign run folder before any work starts (nothing is deleted here)."""
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise RunDirError(f"run folder {run} exists and is a file; choose another --out")
    owner = live_lock_owner(run)
    if owner:  # first: --overwrite must never empty a folder another process is training into
        raise _in_use(run, owner)
    if is_finished(run) and not overwrite:
        raise RunDirError(
            f"run folder {run} already holds a finished run (metrics.json); pass --overwrite to replace it "
            "or --out to write elsewhere"
        )
    if run.is_dir() and any(run.iterdir()) and not (overwrite or resume or is_finished(run)):
        raise RunDirError(
            f"run folder {run} holds an unfinished run; pass --set training.resume=true to continue it "
            "from its last checkpoint, or --overwrite to start again"
        )
    _check_writable(run)


def _check_writable(run: Path) -> None:
    probe_dir = run if run.exists() else next((p for p in run.parents if p.exists()), Path("."))
    try:  # write a real file: permission bits, read-only mounts and files-in-the-way all fail here
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        raise RunDirError(
            f"cannot write the run folder {run}: {probe_dir} is not writable ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    free = shutil.disk_usage(probe_dir).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(
            f"only {free // (1024 * 1024)} MiB free on the disk of {probe_dir}; a run needs at least "
            f"{MIN_FREE_BYTES // (1024 * 1024)} MiB for checkpoints and the model. Free space or choose another --out"
        )


def reset_run_dir(run_dir: str | Path) -> None:
    """Empty a run folder for --overwrite."""
    run = Path(run_dir)
    if run.is_dir():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(run: Path, owner: int) -> RunDirError:
    return RunDirError(
        f"run folder {run} is in use by process {owner} (lock file {run / LOCK_FILE}); wait for it or choose "
        "another --out"
    )


def live_lock_owner(run_dir: str | Path) -> int | None:
    """The pid in RUN_DIR/.lock when that process is alive (and not us); None for no lock or a stale one."""
    try:
        owner = int((Path(run_dir) / LOCK_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return owner if owner and owner != os.getpid() and _pid_alive(owner) else None


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `RUN_DIR/.lock` (with our pid) for the duration; a live owner makes a second process refuse."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = live_lock_owner(run)
            if owner:
                raise _in_use(run, owner) from None
            lock.unlink(missing_ok=True)  # stale lock from a dead process
    else:
        raise RunDirError(f"cannot take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def environment_info() -> dict[str, str | None]:
    """Library versions and the git commit, recorded in every resolved config."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("sentiment-lab", "torch", "transformers", "datasets", "accelerate", "scikit-learn", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        versions["git_commit"] = (commit + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    versions["platform"] = platform.platform()
    # glibc allocator settings change CPU training speed (SENTIMENT_LAB_ALLOCATOR=tuned sets them; docs/performance.md)
    malloc = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")]
    versions["malloc_env"] = " ".join(malloc) or None
    versions["onednn_primitive_cache"] = os.environ.get(ONEDNN_CACHE_ENV)  # precision.bound_onednn_cache, P1
    return versions


# Reading a finished run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFolder:
    """A finished run folder, read: what the stages after `train` (report, compare, ...) need from it."""

    path: Path
    metrics: dict[str, Any]  # metrics.json
    predictions: pd.DataFrame  # predictions.parquet: the test split
    val_predictions: pd.DataFrame | None  # val_predictions.parquet, when the run wrote one
    history: pd.DataFrame | None  # history.csv; None for baseline runs and evaluation folders
    raw_config: dict[str, Any]  # config.yaml as written, `resolved:` included; {} without a config.yaml
    config: ExperimentConfig | None  # the validated experiment (no `resolved:`); None when absent or invalid
    config_problem: str | None  # why `config` is None
    model_dir: Path | None  # the run's model folder; None for baseline runs and ensembles
    ensemble: EnsembleManifest | None = None  # ensemble.json of an ensemble folder (members not verified)


def load_run(run_dir: str | Path, columns: Iterable[str] = PREDICTION_COLUMNS) -> RunFolder:
    """Read a finished run folder; a missing or unreadable file raises RunDirError naming it and the fix.

    columns: the test-prediction columns the caller needs (e.g. prob_pos, text); their absence is an error.
    A config.yaml that fails validation is not: `config` is then None and `config_problem` says why.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(
            f"no such run folder: {run} (give a folder written by `sentiment-lab train` or `sentiment-lab baseline`)"
        )
    for name in (FINISHED_MARKER, PREDICTIONS_FILE):
        if not (run / name).is_file():
            owner = live_lock_owner(run)
            if owner:
                raise RunDirError(f"{run} has no {name} yet: process {owner} is still writing the run; wait for it")
            raise RunDirError(
                f"{run} has no {name}; it is not a finished run folder (write one with `sentiment-lab train` or "
                "`sentiment-lab baseline`, or finish an interrupted run with --set training.resume=true)"
            )
    metrics = _read_file(run / FINISHED_MARKER, lambda p: json.loads(p.read_text(encoding="utf-8")))
    if not isinstance(metrics, dict):
        raise RunDirError(f"{run / FINISHED_MARKER} holds no JSON object; {_DAMAGED_FIX}")
    predictions = _read_file(run / PREDICTIONS_FILE, pd.read_parquet)
    missing = set(columns) - set(predictions.columns)
    if missing:
        raise RunDirError(
            f"{run / PREDICTIONS_FILE} lacks columns {sorted(missing)} (it has {sorted(predictions.columns)}); "
            "evaluate the model again (`sentiment-lab evaluate`) to write complete predictions"
        )
    raw: dict[str, Any] = {}
    config, problem = None, f"{run / CONFIG_FILE} is missing"
    if (run / CONFIG_FILE).is_file():
        raw = _read_raw_config(run / CONFIG_FILE)
        try:
            config, problem = _experiment_config(raw, run / CONFIG_FILE), None
        except ConfigError as exc:  # e.g. written by an older version: the run's files are still usable
            problem = str(exc)
    model_dir = run / MODEL_DIR
    return RunFolder(
        path=run,
        metrics=metrics,
        predictions=predictions,
        val_predictions=_read_optional(run / VAL_PREDICTIONS_FILE, pd.read_parquet),
        history=_read_optional(run / HISTORY_FILE, pd.read_csv),
        raw_config=raw,
        config=config,
        config_problem=problem,
        model_dir=model_dir if (model_dir / "config.json").is_file() else None,
        ensemble=read_ensemble(run) if is_ensemble(run) else None,
    )


def read_run_config(run_dir: str | Path) -> ExperimentConfig:
    """The experiment config stored in a run folder, validated, without its `resolved:` facts.

    Raises RunDirError when config.yaml is missing or unreadable, ConfigError when it fails validation.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(
            f"{path} is missing; the run's experiment is unknown. Give the config explicitly (e.g. --config) or "
            "use a folder written by `sentiment-lab train`"
        )
    return _experiment_config(_read_raw_config(path), path)


_DAMAGED_FIX = (
    "the file is damaged: restore it, or write the run again (`sentiment-lab train`, `baseline` or `evaluate`)"
)


def _read_file(path: Path, read: Callable[[Path], Any]) -> Any:
    try:
        return read(path)
    except (OSError, ValueError) as exc:  # JSON, Parquet and CSV parse errors are ValueErrors
        raise RunDirError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_DAMAGED_FIX}") from None


def _read_optional(path: Path, read: Callable[[Path], Any]) -> Any:
    return _read_file(path, read) if path.is_file() else None


def _read_raw_config(path: Path) -> dict[str, Any]:
    try:
        return read_yaml(path)
    except ConfigError as exc:  # not YAML, not a mapping, too large: the file itself is broken
        raise RunDirError(f"{exc}; {_DAMAGED_FIX}") from None


def _experiment_config(raw: dict[str, Any], path: Path) -> ExperimentConfig:
    experiment = {k: v for k, v in raw.items() if k != "resolved"}
    return build_config(experiment, str(path))


# Ensemble folders --------------------------------------------------------------------------------------------------


class EnsembleMember(BaseModel):
    """One member run of an ensemble, as it was when the ensemble was made."""

    model_config = ConfigDict(extra="forbid")

    name: str  # the run folder's name (its path when two members share a name)
    path: str  # absolute path of the run folder
    relative_path: str  # the same, relative to the ensemble folder: tried when `path` is gone (folders moved together)
    weight: float = Field(gt=0.0, le=1.0, allow_inf_nan=False)  # the members' weights sum to 1
    temperature: float = Field(gt=0.0, allow_inf_nan=False)  # from the member's sidecar
    fingerprint: str  # sha256 over `files`
    files: dict[str, str]  # file of the member's model/ -> its sha256


class EnsembleManifest(BaseModel):
    """The contents of `ensemble.json`."""

    model_config = ConfigDict(extra="forbid")

    format_version: Literal[1] = ENSEMBLE_FORMAT
    method: Literal["mean_calibrated_probabilities"] = "mean_calibrated_probabilities"
    labels: list[str] = Field(min_length=2)  # class names by id, shared by every member
    members: list[EnsembleMember] = Field(min_length=2)
    created: str | None = None


def is_ensemble(path: str | Path) -> bool:
    """True when the folder is an ensemble folder (holds ensemble.json)."""
    return (Path(path) / ENSEMBLE_FILE).is_file()


def model_file_digests(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every file of a model folder that decides its predictions (weights, config, tokenizer, sidecar).

    Sub-folders (onnx/), hidden files and UNFINGERPRINTED files are left out.
    """
    digests = {}
    for p in sorted(Path(model_dir).iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.name not in UNFINGERPRINTED:
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digests[p.name] = h.hexdigest()
    return digests


def rows_digest(frame: pd.DataFrame, columns: tuple[str, ...] = ("id", "text")) -> str:
    """One sha256 over `columns` of every row, in order (each value length-prefixed, so no two tables collide):
    the key a run-folder cache is valid for (teacher logits, augmented rows)."""
    h = hashlib.sha256()
    for values in zip(*(frame[c].astype(str) for c in columns), strict=True):
        h.update("".join(f"{len(v)}:{v}" for v in values).encode())
    return h.hexdigest()


def fingerprint_of(digests: dict[str, str]) -> str:
    """One sha256 over a model folder's file digests (names and contents)."""
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def read_ensemble(ensemble_dir: str | Path) -> EnsembleManifest:
    """ensemble.json, validated; a damaged or foreign file raises RunDirError naming it and the fix."""
    path = Path(ensemble_dir) / ENSEMBLE_FILE
    data = _read_file(path, lambda p: json.loads(p.read_text(encoding="utf-8")))
    fix = "re-run `sentiment-lab ensemble` to write it again"
    if not isinstance(data, dict):
        raise RunDirError(f"{path} holds no JSON object; {fix}")
    if isinstance(data.get("format_version"), int) and data["format_version"] > ENSEMBLE_FORMAT:
        raise RunDirError(
            f"{path} has format {data['format_version']}, written by a newer sentiment-lab (this one reads format "
            f"{ENSEMBLE_FORMAT}); upgrade sentiment-lab"
        )
    try:
        return EnsembleManifest.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        raise RunDirError(f"{path} is not a valid ensemble file ('{where}': {e['msg']}); {fix}") from None


def verify_ensemble(ensemble_dir: str | Path) -> tuple[EnsembleManifest, list[Path]]:
    """The ensemble's manifest and its member run folders, each checked to be there and unchanged.

    A member that is gone, or whose model files differ from their fingerprint (weights retrained, sidecar
    recalibrated, ...), raises one ModelError naming the member, what changed and the fix.
    """
    folder = Path(ensemble_dir)
    manifest = read_ensemble(folder)
    rebuild = "re-run `sentiment-lab ensemble` to make the ensemble from the members as they are now"
    found = []
    for m in manifest.members:
        run = next((p for p in (Path(m.path), folder / m.relative_path) if (p / MODEL_DIR).is_dir()), None)
        if run is None:
            raise ModelError(
                f"ensemble {folder}: member {m.path} is missing (its model/ folder was deleted or moved since the "
                f"ensemble was made); restore it, or {rebuild}"
            )
        now = model_file_digests(run / MODEL_DIR)
        if fingerprint_of(now) != m.fingerprint:
            changes = [f"model/{f} changed" for f in sorted(set(now) & set(m.files)) if now[f] != m.files[f]]
            changes += [f"model/{f} removed" for f in sorted(set(m.files) - set(now))]
            changes += [f"model/{f} added" for f in sorted(set(now) - set(m.files))]
            what = "; ".join(changes) or "its files no longer match the recorded fingerprint"
            raise ModelError(
                f"ensemble {folder}: member {m.path} changed since the ensemble was made ({what}; fingerprint "
                f"{m.fingerprint[:12]} then, {fingerprint_of(now)[:12]} now); {rebuild}"
            )
        found.append(run)
    return manifest, found
