"""Evaluate any saved model (a run folder or a plain HF model folder) on a test split, also of another dataset.

Cross-dataset: the data's classes are matched to the model's by name (ignoring case). Where they differ, a label
map (`--label-map`) says which model class each data class counts as, or that its rows are dropped; metrics are
then computed in the model's classes.

An ensemble folder: every member (checked unchanged first) scores the split through the same `score_split`; the
predictions are the weighted mean of their calibrated probabilities, and metrics.json adds each member's metrics
on the same items and McNemar's test against the best member.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sentiment_lab.config import DataConfig, apply_overrides, build_config, config_to_dict, load_config
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.ensemble import ENSEMBLE_NAME, versus_best_member
from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.io import write_json_atomic, write_parquet_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.precision import ResolvedPrecision, bound_onednn_cache, default_device
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.rundir import MODEL_DIR, is_ensemble, locate_model, read_run_config, verify_ensemble
from sentiment_lab.runners import (
    average_probabilities,
    calibrated_probs,
    predictions_frame,
    probability_logits,
    score_split,
)
from sentiment_lab.sidecar import read_sidecar

log = logging.getLogger("sentiment_lab")

LABEL_FIELDS = ("label_map", "label_names", "num_labels", "ordinal")  # the training data's classes, not OTHER's


def parse_label_map(text: str | dict[str, Any]) -> dict[str, str | None]:
    """`--label-map`: DATA class -> MODEL class, as `a=b,c=d` or a JSON object; an empty target (`neutral=`, or
    JSON null) drops that class's rows. Names or ids on either side."""
    if isinstance(text, dict):
        raw: Any = text
    elif text.strip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f'--label-map is not valid JSON ({exc}); e.g. \'{{"neutral": null, "pos": "positive"}}\''
            ) from None
    else:
        raw = {}
        for item in filter(str.strip, text.split(",")):
            if "=" not in item:
                raise ConfigError(
                    f"--label-map item {item.strip()!r} has no '='; give DATA_CLASS=MODEL_CLASS pairs separated by "
                    "commas, e.g. 'very negative=negative,neutral=' (an empty model class drops those rows)"
                )
            key, _, value = item.partition("=")
            raw[key.strip()] = value.strip()
    if not isinstance(raw, dict) or not all(isinstance(v, str | int) or v is None for v in raw.values()):
        raise ConfigError("--label-map must map data class names to model class names (or to nothing: drop the rows)")
    return {str(k).strip(): (str(v).strip() or None) if v is not None else None for k, v in raw.items()}


def _is_generic(names: list[str]) -> bool:
    """Names that carry no meaning: transformers' LABEL_0.. or the data's class_0.."""
    return all(re.fullmatch(rf"(label|class)_{i}", n.lower()) for i, n in enumerate(names))


def match_labels(
    model_names: list[str], data_names: list[str], label_map: dict[str, str | None] | None = None
) -> list[int | None]:
    """For each data class id, the model class id it counts as (None: its rows are dropped).

    Without a label map the names must agree (ignoring case and order); binary data on a binary model, and
    classes named only by id (LABEL_0, class_0) with as many on both sides, match by id as before. Otherwise one
    DataError names both label sets and the `--label-map` fix.
    """
    model_lower = [n.lower() for n in model_names]
    data_lower = [n.lower() for n in data_names]

    def model_id(value: str) -> int | None:
        v = value.lower()
        if v in model_lower:
            return model_lower.index(v)
        return int(v) if v.isdigit() and int(v) < len(model_names) else None

    if not label_map:
        if sorted(data_lower) == sorted(model_lower):
            return [model_lower.index(n) for n in data_lower]
        same_k = len(model_names) == len(data_names)
        if same_k and (len(data_names) == 2 or _is_generic(model_names) or _is_generic(data_names)):
            return list(range(len(data_names)))
        example = ",".join(f"{d}={model_names[0].lower()}" for d in data_names[:2])
        raise DataError(
            f"the model's classes {model_names} are not the data's {data_names}; say which model class each data "
            f"class counts as with --label-map (e.g. --label-map \"{example},...\"; 'CLASS=' with nothing after it "
            "drops that class's rows)"
        )
    unknown = [k for k in label_map if k.lower() not in data_lower and not (k.isdigit() and int(k) < len(data_names))]
    if unknown:
        raise DataError(
            f"--label-map names data classes {unknown} that the data does not have; its classes are {data_names}"
        )
    lowered = {
        (data_lower[int(k)] if k.isdigit() and k.lower() not in data_lower else k.lower()): v
        for k, v in label_map.items()
    }
    out: list[int | None] = []
    unmapped, bad_targets = [], []
    for name in data_lower:
        if name in lowered:
            target = lowered[name]
            if target is None:
                out.append(None)
            elif (mid := model_id(target)) is None:
                bad_targets.append(target)
            else:
                out.append(mid)
        elif name in model_lower:  # same name on both sides: no need to map it
            out.append(model_lower.index(name))
        else:
            unmapped.append(name)
    if bad_targets:
        raise DataError(f"--label-map maps to {bad_targets}, which are not classes of the model: {model_names}")
    if unmapped:
        raise DataError(
            f"--label-map leaves data classes {unmapped} without a model class (the model has {model_names}); map "
            "each, e.g. '{0}=<model class>', or drop its rows with '{0}='".format(unmapped[0])
        )
    return out


def evaluate_model(
    model_or_run: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    allow_pickle: bool = False,
    precision: str | None = None,
    label_map: str | dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict the test split with a saved model or an ensemble; write metrics.json and predictions.parquet to out_dir.

    The data config comes from `config`, else the run folder's config.yaml, else the defaults (IMDb). With
    `data_path` and a run's config, the run's class settings (label_map, label_names, num_labels, ordinal) are
    not carried to the other data: they described the training data.
    label_map: DATA class -> MODEL class (`parse_label_map`); needed when the two label sets differ.
    precision: default the config's `training.precision`, resolved for this machine as training resolves it, so
    re-evaluating a run on the machine that trained it reproduces its test predictions (`runners.score_split`).
    allow_pickle: load `.bin` pickle weights when the folder has no safetensors (trusted sources only).
    """
    bound_onednn_cache()  # bulk bf16 scoring of dynamic shapes: precision.py, "oneDNN ... primitive"
    manifest = None
    if is_ensemble(model_or_run):
        manifest, members = verify_ensemble(model_or_run)  # every member there and unchanged, before any work
        run_dir: Path | None = Path(model_or_run)
        model_dirs = [m / MODEL_DIR for m in members]
        shown = str(run_dir)
    else:
        model_dir, run_dir = locate_model(model_or_run)
        model_dirs, shown = [model_dir], str(model_dir)
    if config or run_dir is None:
        cfg = load_config(config, overrides, data_path)
    else:
        cfg = read_run_config(run_dir)
        if overrides or data_path:
            raw = config_to_dict(cfg)
            if data_path:
                for key in LABEL_FIELDS:
                    raw["data"][key] = DataConfig().model_dump(mode="json")[key]
            cfg = build_config(apply_overrides(raw, overrides or []), "run config + --set")
            if data_path:
                cfg.data.path = data_path
    out = (
        Path(out_dir)
        if out_dir
        else (run_dir / "evaluation" if run_dir else Path("runs") / f"eval-{model_dirs[0].name}")
    )
    splits = prepare_data(cfg.data)
    resolved = resolve_precision(precision or cfg.training.precision, default_device(), purpose="evaluating")
    if resolved.note:
        log.warning("%s", resolved.note)
    parsed_map = parse_label_map(label_map) if label_map else None
    scored = [_score(d, splits, parsed_map, resolved, batch_size, allow_pickle) for d in model_dirs]
    first = scored[0]
    for d, s in zip(model_dirs[1:], scored[1:], strict=True):
        if [n.lower() for n in s.model_names] != [n.lower() for n in first.model_names]:
            raise DataError(
                f"ensemble member {d.parent} has classes {s.model_names}, {model_dirs[0].parent} has "
                f"{first.model_names}; re-run `sentiment-lab ensemble` with runs trained on the same classes"
            )
    model_names = first.model_names
    names = None if len(model_names) == 2 else [n.lower() for n in model_names]  # binary: negative/positive
    if manifest is None:
        preds = first.preds
    else:
        weights = [m.weight for m in manifest.members]
        probs = average_probabilities([calibrated_probs(s.logits, s.temperature) for s in scored], weights)
        preds = predictions_frame(first.test, probability_logits(probs))
    elapsed = sum(s.seconds for s in scored)
    metrics = {
        "model": shown,
        "precision": resolved.name,
        "test": classification_metrics(preds["label"], preds["pred"], names, first.ordinal),
        "eval_samples_per_s": len(preds) / elapsed if elapsed > 0 else None,
        "threads": torch.get_num_threads(),
    }
    if manifest is not None:
        metrics["kind"] = ENSEMBLE_NAME
        metrics["members"] = [
            {
                "name": m.name,
                "path": m.path,
                "weight": m.weight,
                "temperature": m.temperature,
                "test": classification_metrics(s.preds["label"], s.preds["pred"], names, first.ordinal),
            }
            for m, s in zip(manifest.members, scored, strict=True)
        ]
        metrics["vs_best_member"] = versus_best_member(
            preds["label"],
            preds["pred"],
            {m.name: s.preds["pred"] for m, s in zip(manifest.members, scored, strict=True)},
        )
    if first.to_model != list(range(len(splits.label_names))):  # another dataset's classes: say how they were counted
        metrics["labels"] = model_names
        metrics["label_mapping"] = {
            d: (model_names[m] if m is not None else None)
            for d, m in zip(splits.label_names, first.to_model, strict=True)
        }
        metrics["dropped"] = first.dropped
    write_parquet_atomic(out / "predictions.parquet", preds)
    write_json_atomic(out / "metrics.json", metrics)
    metrics["out_dir"] = str(out)
    return metrics


@dataclass
class _Scored:
    """One model's scoring of the test split: its class names, how the data's classes map to them, predictions."""

    model_names: list[str]
    ordinal: bool
    to_model: list[int | None]
    dropped: dict[str, int]
    test: pd.DataFrame  # the test rows in the model's class ids
    preds: pd.DataFrame  # runners.predictions_frame of them (raw, uncalibrated probabilities)
    logits: np.ndarray
    temperature: float
    seconds: float


def _score(
    model_dir: Path,
    splits: DataSplits,
    label_map: dict[str, str | None] | None,
    resolved: ResolvedPrecision,
    batch_size: int,
    allow_pickle: bool,
) -> _Scored:
    """Load one model, match its classes to the data's, and score the test split (`runners.score_split`)."""
    tokenizer = load_tokenizer(str(model_dir))
    model = load_classifier(model_dir, allow_pickle=allow_pickle)
    sidecar = read_sidecar(model_dir, tokenizer)
    model_names = sidecar.labels or [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    to_model = match_labels(model_names, splits.label_names, label_map)
    test, dropped = _in_model_classes(splits.test, to_model, splits.label_names)
    model.to(resolved.device)
    preds, logits, elapsed = score_split(model, tokenizer, test, sidecar.text, resolved, batch_size)
    return _Scored(model_names, sidecar.ordinal, to_model, dropped, test, preds, logits, sidecar.temperature, elapsed)


def _in_model_classes(
    test: pd.DataFrame, to_model: list[int | None], data_names: list[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The test rows with labels in the model's class ids; rows of dropped classes removed and counted by name."""
    if to_model == list(range(len(data_names))):
        return test, {}
    target = np.array([-1 if m is None else m for m in to_model])[test["label"].to_numpy()]
    dropped = {data_names[i]: int((test["label"] == i).sum()) for i, m in enumerate(to_model) if m is None}
    kept = test[target >= 0].assign(label=target[target >= 0]).reset_index(drop=True)
    if kept.empty:
        raise DataError(f"every test row belongs to a dropped class ({dropped}); nothing is left to evaluate")
    return kept, dropped
