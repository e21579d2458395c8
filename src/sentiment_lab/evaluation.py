"""Evaluate any saved model (a run folder or a plain HF model folder) on a test split."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml

from sentiment_lab.config import ExperimentConfig, build_config, load_config
from sentiment_lab.data import prepare_data
from sentiment_lab.errors import ModelError
from sentiment_lab.inference import compute_logits
from sentiment_lab.io import write_json_atomic, write_parquet_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.tokenization import load_text_settings
from sentiment_lab.training import predictions_frame


def locate_model(path: str | Path) -> tuple[Path, Path | None]:
    """(model folder, run folder or None) for a run folder or a model folder."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"no such model or run folder: {p}")
    if (p / "model" / "config.json").is_file():
        return p / "model", p
    if (p / "config.json").is_file():
        return p, None
    raise ModelError(f"{p} is neither a run folder (with model/) nor a Hugging Face model folder (with config.json)")


def run_config(run_dir: Path) -> ExperimentConfig:
    """The experiment config stored in a run folder, without its `resolved` facts."""
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    raw.pop("resolved", None)
    return build_config(raw, str(run_dir / "config.yaml"))


def evaluate_model(
    model_or_run: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    out_dir: str | Path | None = None,
    batch_size: int = 64,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Predict the test split with a saved model; write metrics.json and predictions.parquet to out_dir.

    The data config comes from `config`, else the run folder's config.yaml, else the defaults (IMDb).
    allow_pickle: load `.bin` pickle weights when the folder has no safetensors (trusted sources only).
    """
    model_dir, run_dir = locate_model(model_or_run)
    if config or run_dir is None:
        cfg = load_config(config, overrides, data_path)
    else:
        cfg = run_config(run_dir)
        if overrides or data_path:
            from sentiment_lab.config import apply_overrides, config_to_dict

            cfg = build_config(apply_overrides(config_to_dict(cfg), overrides or []), "run config + --set")
            if data_path:
                cfg.data.path = data_path
    out = Path(out_dir) if out_dir else (run_dir / "evaluation" if run_dir else Path("runs") / f"eval-{model_dir.name}")
    splits = prepare_data(cfg.data)
    tokenizer = load_tokenizer(str(model_dir))
    model = load_classifier(model_dir, allow_pickle=allow_pickle)
    settings = load_text_settings(model_dir, tokenizer)
    start = time.perf_counter()
    logits = compute_logits(model, tokenizer, splits.test["text"].tolist(), settings, batch_size, progress=True)
    elapsed = time.perf_counter() - start
    preds = predictions_frame(splits.test, logits)
    metrics = {
        "model": str(model_dir),
        "test": classification_metrics(preds["label"], preds["pred"]),
        "eval_samples_per_s": len(preds) / elapsed if elapsed > 0 else None,
        "threads": torch.get_num_threads(),
    }
    write_parquet_atomic(out / "predictions.parquet", preds)
    write_json_atomic(out / "metrics.json", metrics)
    metrics["out_dir"] = str(out)
    return metrics
