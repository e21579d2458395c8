"""Ensembles: finished runs -> a run-like folder that averages their calibrated probabilities.

`make_ensemble` checks that the members share their classes and their test items (same ids, same order, same
labels), then writes OUT/ atomically (built beside it, then renamed into place):

- `ensemble.json`: the members (path, name, weight, temperature, a sha256 fingerprint of their model files), the
  class names; it marks the folder as an ensemble (`rundir.ENSEMBLE_FILE`);
- `predictions.parquet` and `val_predictions.parquet` (when every member has one) in a run's schema. The
  probabilities are the weighted mean of softmax(logits / T) of the members, each with the temperature of its
  sidecar (1 when uncalibrated); the "logits" are the log of those probabilities, so softmax gives them back;
- `metrics.json` (written last): the ensemble's metrics, every member's test metrics from its own metrics.json,
  and McNemar's test of the ensemble against the best member by test accuracy;
- `config.yaml`: the first member's, named after the folder, so commands that reload the data work.

`evaluate`, `predict`, `serve`, `report` and `compare` accept the folder; the two that load the members'
models (`Predictor.load`, `evaluate`) first check every member is there and unchanged (`rundir.verify_ensemble`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from sentiment_lab.errors import ConfigError, ModelError, RunDirError
from sentiment_lab.io import json_safe, write_json_atomic, write_parquet_atomic, write_text_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.rundir import (
    CONFIG_FILE,
    ENSEMBLE_FILE,
    FINISHED_MARKER,
    MODEL_DIR,
    PREDICTION_COLUMNS,
    PREDICTIONS_FILE,
    VAL_PREDICTIONS_FILE,
    EnsembleManifest,
    EnsembleMember,
    RunFolder,
    fingerprint_of,
    is_ensemble,
    load_run,
    model_file_digests,
)
from sentiment_lab.runners import (
    average_probabilities,
    calibrated_probs,
    logits_of,
    predictions_frame,
    probability_logits,
)
from sentiment_lab.sidecar import read_sidecar
from sentiment_lab.stats import mcnemar_test, verdict

ALPHA = 0.05  # significance level of the test against the best member
ENSEMBLE_NAME = "ensemble"  # how the ensemble is named next to its members in tables and verdicts


def member_names(paths: Sequence[Path]) -> list[str]:
    """Each member's run folder name; their paths when two members share a name."""
    names = [p.name for p in paths]
    return names if len(set(names)) == len(names) else [str(p) for p in paths]


def check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """The members' weights normalised to sum 1 (equal without weights); ConfigError for a wrong count or value."""
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"--weights gives {len(w)} weights for {n} members; give one per RUN_DIR, in their order")
    if not all(math.isfinite(x) and x > 0 for x in w):
        raise ConfigError(f"--weights must be positive numbers (e.g. 1 1 2), got {w}")
    return [x / sum(w) for x in w]


def member_labels(model_dir: Path) -> list[str]:
    """A member model's class names by id, upper case: its sidecar's labels, else its config.json id2label."""
    stored = read_sidecar(model_dir).labels
    if stored:
        return [s.upper() for s in stored]
    try:
        id2label = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("id2label") or {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {model_dir / 'config.json'} ({exc}); the member's model is damaged") from None
    return [str(id2label[k]).upper() for k in sorted(id2label, key=int)]


def _check_same_items(first: pd.DataFrame, other: pd.DataFrame, name_first: str, name: str, what: str) -> None:
    """Refuse a member whose predictions are not over the first member's items, in the same order, same labels."""
    ids_a, ids_b = first["id"].astype(str).to_numpy(), other["id"].astype(str).to_numpy()
    if len(ids_a) != len(ids_b):
        raise RunDirError(
            f"member {name} has {len(ids_b)} {what} items, {name_first} has {len(ids_a)}; an ensemble needs members "
            "evaluated on the same items (same data settings: data.path, data.max_test, data.split_seed)"
        )
    differ = np.flatnonzero(ids_a != ids_b)
    if len(differ):
        i = int(differ[0])
        raise RunDirError(
            f"member {name}: {len(differ)} of its {len(ids_b)} {what} ids differ from {name_first}'s (first at row "
            f"{i}: {ids_b[i]!r}, {name_first} has {ids_a[i]!r}); an ensemble needs members evaluated on the same "
            "items in the same order"
        )
    labels_differ = int((first["label"].to_numpy() != other["label"].to_numpy()).sum())
    if labels_differ:
        raise RunDirError(
            f"member {name} shares its {what} ids with {name_first} but {labels_differ} labels differ; they were not "
            "evaluated on the same items (different data sources or label maps?)"
        )


def nll(probs: np.ndarray, labels: Any) -> float:
    """Mean negative log-likelihood of the labels under the probabilities."""
    y = np.asarray(labels, dtype=int)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def versus_best_member(
    labels: Any, ensemble_pred: Any, member_preds: dict[str, Any], alpha: float = ALPHA
) -> dict[str, Any]:
    """McNemar's test of the ensemble against its most accurate member on the same items, with a verdict.

    member_preds: each member's predicted class ids, by member name (the first of equally accurate ones wins).
    """
    y = np.asarray(labels, dtype=int)
    correct = {name: np.asarray(p, dtype=int) == y for name, p in member_preds.items()}
    best = max(correct, key=lambda name: float(correct[name].mean()))
    ens = np.asarray(ensemble_pred, dtype=int) == y
    test = mcnemar_test(ens, correct[best])
    acc_e, acc_b = float(ens.mean()), float(correct[best].mean())
    return {
        "best_member": best,
        "best_member_accuracy": acc_b,
        "ensemble_accuracy": acc_e,
        "alpha": alpha,
        "mcnemar": test,
        "verdict": verdict(test["p_value"], ENSEMBLE_NAME, best, acc_e, acc_b, alpha),
    }


def _class_names(first: RunFolder, labels: list[str]) -> list[str] | None:
    """The names metrics.json keys classes by: the first member's (its per-class table); else the labels in lower
    case, or None for two classes (classification_metrics' negative/positive)."""
    per_class = list((first.metrics.get("test") or {}).get("per_class") or {})
    if len(per_class) == len(labels):
        return per_class
    return None if len(labels) == 2 else [n.lower() for n in labels]


def _check_out(out: Path, member_dirs: list[Path], overwrite: bool) -> None:
    """Refuse an --out that holds anything (unless --overwrite replaces an earlier ensemble) or a member's folder."""
    target = out.resolve()
    for run in member_dirs:
        if target == run or target in run.parents:
            raise RunDirError(
                f"--out {out} is (or contains) the member run {run}; writing there would destroy a member. Choose "
                "another --out"
            )
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} exists and is a file; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise RunDirError(f"--out {out} already exists and is not empty; pass --overwrite to replace it")
        if not is_ensemble(out):
            raise RunDirError(
                f"--out {out} holds files but no {ENSEMBLE_FILE}: it is not an ensemble folder, so --overwrite does "
                "not replace it (it could be a trained run). Choose another --out"
            )


def _load_member(path: Path, name: str) -> tuple[RunFolder, Path]:
    """A member's finished run and its model folder; refused when it has no model or no logits."""
    run = load_run(path, (*PREDICTION_COLUMNS, "text"))
    if run.ensemble is not None:
        raise ModelError(
            f"member {name} is itself an ensemble; list its members instead "
            f"({', '.join(m.path for m in run.ensemble.members)})"
        )
    if run.model_dir is None:
        raise ModelError(
            f"member {name} has no {MODEL_DIR}/ folder (a baseline run or an evaluation folder?); an ensemble averages "
            "the probabilities of trained models: give run folders written by `sentiment-lab train`"
        )
    logits_of(run.predictions)  # a clear error when the member's predictions have no logits
    return run, run.model_dir


def make_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Make an ensemble folder of finished runs; returns its metrics (as metrics.json holds them) with `out_dir`.

    weights: one per run (normalised to sum 1); default equal. overwrite: replace an earlier ensemble in `out`
    (never another kind of folder). Refused with one SentimentLabError naming the member and the difference:
    fewer than two runs, a run given twice, runs with different classes or test items, a member without a model.
    """
    if len(run_dirs) < 2:
        raise ConfigError(
            "an ensemble needs at least two run folders, e.g. sentiment-lab ensemble runs/a runs/b --out runs/ens"
        )
    paths = [Path(d) for d in run_dirs]
    resolved = [p.resolve() for p in paths]
    repeated = sorted({str(p) for p, r in zip(paths, resolved, strict=True) if resolved.count(r) > 1})
    if repeated:
        raise ConfigError(f"run folder {repeated[0]} is given more than once; list each member once")
    w = check_weights(weights, len(paths))
    out = Path(out)
    _check_out(out, resolved, overwrite)
    names = member_names(resolved)
    loaded = [_load_member(p, n) for p, n in zip(paths, names, strict=True)]
    runs, model_dirs = [r for r, _ in loaded], [d for _, d in loaded]

    labels = member_labels(model_dirs[0])
    for run, model_dir, name in zip(runs[1:], model_dirs[1:], names[1:], strict=True):
        theirs = member_labels(model_dir)
        if theirs != labels:
            raise ModelError(
                f"member {name} has classes {theirs}, {names[0]} has {labels}; an ensemble needs members trained on "
                "the same classes in the same order"
            )
        _check_same_items(runs[0].predictions, run.predictions, names[0], name, "test")
    # validation predictions only when every member has them, with their texts (a run's schema)
    with_val = all(r.val_predictions is not None and "text" in r.val_predictions for r in runs)
    if with_val:
        for run, name in zip(runs[1:], names[1:], strict=True):
            _check_same_items(runs[0].val_predictions, run.val_predictions, names[0], name, "validation")

    sidecars = [read_sidecar(d) for d in model_dirs]
    temperatures = [s.temperature for s in sidecars]
    members = []
    for model_dir, path, name, weight, t in zip(model_dirs, resolved, names, w, temperatures, strict=True):
        files = model_file_digests(model_dir)
        members.append(
            EnsembleMember(
                name=name,
                path=str(path),
                relative_path=os.path.relpath(path, out.resolve()),
                weight=weight,
                temperature=t,
                fingerprint=fingerprint_of(files),
                files=files,
            )
        )
    manifest = EnsembleManifest(labels=labels, members=members, created=time.strftime("%Y-%m-%d %H:%M:%S"))

    splits = {"test": (PREDICTIONS_FILE, [r.predictions for r in runs])}
    if with_val:
        splits["val"] = (VAL_PREDICTIONS_FILE, [r.val_predictions for r in runs])
    class_names = _class_names(runs[0], labels)
    ordinal = sidecars[0].ordinal
    frames: dict[str, pd.DataFrame] = {}
    metrics: dict[str, Any] = {
        "model": f"ensemble of {len(runs)} runs: {', '.join(names)}",
        "kind": ENSEMBLE_NAME,
        "data": runs[0].metrics.get("data"),
    }
    if len(labels) > 2:  # as a K-class run's metrics.json
        metrics["labels"] = class_names
    for split, (_, member_frames) in splits.items():
        probs = average_probabilities(
            [calibrated_probs(logits_of(f), t) for f, t in zip(member_frames, temperatures, strict=True)], w
        )
        frame = predictions_frame(member_frames[0], probability_logits(probs))
        frames[split] = frame
        metrics[split] = classification_metrics(frame["label"], frame["pred"], class_names, ordinal)
        metrics[split]["loss"] = nll(probs, frame["label"])
    test = frames["test"]
    metrics["members"] = [
        {
            "name": name,
            "path": m.path,
            "weight": m.weight,
            "temperature": m.temperature,
            "test": run.metrics.get("test")
            or classification_metrics(run.predictions["label"], run.predictions["pred"], class_names, ordinal),
        }
        for name, m, run in zip(names, members, runs, strict=True)
    ]
    metrics["vs_best_member"] = versus_best_member(
        test["label"], test["pred"], {n: r.predictions["pred"] for n, r in zip(names, runs, strict=True)}
    )
    metrics = json_safe(metrics)

    raw_config = dict(runs[0].raw_config)
    if raw_config:
        raw_config["name"] = out.name

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_json_atomic(staging / ENSEMBLE_FILE, manifest.model_dump(mode="json"))
        if raw_config:
            write_text_atomic(staging / CONFIG_FILE, yaml.safe_dump(raw_config, sort_keys=False))
        for split, (file, _) in splits.items():
            write_parquet_atomic(staging / file, frames[split])
        write_json_atomic(staging / FINISHED_MARKER, metrics)  # last: the folder is finished
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; the folder gets the usual permissions
        _replace_folder(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return metrics | {"out_dir": str(out)}


def _replace_folder(new: Path, out: Path) -> None:
    """Put the finished folder `new` at `out`; an old `out` (empty, or an earlier ensemble) is moved aside first
    and deleted only once the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
