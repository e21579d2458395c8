"""Evaluate any saved model (a run folder or a plain HF model folder) on a test split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sentiment_lab.config import apply_overrides, build_config, config_to_dict, load_config
from sentiment_lab.data import prepare_data
from sentiment_lab.io import write_json_atomic, write_parquet_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.precision import default_device
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.rundir import locate_model, read_run_config
from sentiment_lab.runners import score_split
from sentiment_lab.sidecar import read_sidecar

log = logging.getLogger("sentiment_lab")


def evaluate_model(
    model_or_run: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    allow_pickle: bool = False,
    precision: str | None = None,
) -> dict[str, Any]:
    """Predict the test split with a saved model; write metrics.json and predictions.parquet to out_dir.

    The data config comes from `config`, else the run folder's config.yaml, else the defaults (IMDb).
    precision: default the config's `training.precision`, resolved for this machine as training resolves it, so
    re-evaluating a run on the machine that trained it reproduces its test predictions (`runners.score_split`).
    allow_pickle: load `.bin` pickle weights when the folder has no safetensors (trusted sources only).
    """
    model_dir, run_dir = locate_model(model_or_run)
    if config or run_dir is None:
        cfg = load_config(config, overrides, data_path)
    else:
        cfg = read_run_config(run_dir)
        if overrides or data_path:
            cfg = build_config(apply_overrides(config_to_dict(cfg), overrides or []), "run config + --set")
            if data_path:
                cfg.data.path = data_path
    out = Path(out_dir) if out_dir else (run_dir / "evaluation" if run_dir else Path("runs") / f"eval-{model_dir.name}")
    splits = prepare_data(cfg.data)
    tokenizer = load_tokenizer(str(model_dir))
    model = load_classifier(model_dir, allow_pickle=allow_pickle)
    settings = read_sidecar(model_dir, tokenizer).text
    resolved = resolve_precision(precision or cfg.training.precision, default_device(), purpose="evaluating")
    if resolved.note:
        log.warning("%s", resolved.note)
    model.to(resolved.device)
    preds, _, elapsed = score_split(model, tokenizer, splits.test, settings, resolved, batch_size)
    metrics = {
        "model": str(model_dir),
        "precision": resolved.name,
        "test": classification_metrics(preds["label"], preds["pred"]),
        "eval_samples_per_s": len(preds) / elapsed if elapsed > 0 else None,
        "threads": torch.get_num_threads(),
    }
    write_parquet_atomic(out / "predictions.parquet", preds)
    write_json_atomic(out / "metrics.json", metrics)
    metrics["out_dir"] = str(out)
    return metrics
