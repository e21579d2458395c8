"""Arguments shared by several commands, and how their values become library objects."""

from __future__ import annotations

import argparse
from typing import Any

from sentiment_lab.errors import ConfigError
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.tables import format_table


def metrics_table(metrics: dict[str, Any]) -> str:
    """Test (and validation) metrics of a run next to its baselines."""
    rows = []
    for split in ("val", "test"):
        if split in metrics:
            m = metrics[split]
            rows.append(
                [metrics.get("model", "model"), split, m["accuracy"], m["f1"], m["precision"], m["recall"], m["n"]]
            )
    for name, b in (metrics.get("baselines") or {}).items():
        m = b["test"]
        rows.append([name, "test", m["accuracy"], m["f1"], m["precision"], m["recall"], m["n"]])
    return format_table(rows, ["model", "split", "accuracy", "f1", "precision", "recall", "n"])


def ensemble_table(metrics: dict[str, Any]) -> str:
    """An ensemble's test metrics above its members' (weight, temperature), then McNemar against the best member."""
    f1 = "f1 macro" if "labels" in metrics and len(metrics["labels"]) > 2 else "f1"
    rows = [["ensemble", "-", "-", *_scores(metrics["test"])]]
    rows += [[m["name"], m["weight"], m["temperature"], *_scores(m["test"])] for m in metrics["members"]]
    table = format_table(rows, ["model", "weight", "temperature", "accuracy", f1, "loss", "n"])
    vb = metrics.get("vs_best_member")
    if not vb:
        return table
    t = vb["mcnemar"]
    return (
        f"{table}\nensemble vs best member {vb['best_member']}: McNemar b = {t['b']}, c = {t['c']}, "
        f"p = {t['p_value']:.3g} ({t['method']}); {vb['verdict']}"
    )


def _scores(m: dict[str, Any]) -> list[Any]:
    loss = m.get("loss")
    return [m["accuracy"], m["f1"], loss if loss is not None else "-", m["n"]]


def predictor_options(args: argparse.Namespace) -> PredictorOptions:
    """The PredictorOptions of the parsed flags (`parsers.add_predictor_args`: each flag's dest is a field name)."""
    values = {name: getattr(args, name) for name in PredictorOptions.model_fields if hasattr(args, name)}
    if values.get("quantized") and values.get("backend") != "onnx":
        raise ConfigError("--int8 needs --backend onnx (the INT8 model is an ONNX file)")
    return PredictorOptions.build(**values)
