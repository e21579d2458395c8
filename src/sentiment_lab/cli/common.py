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


def predictor_options(args: argparse.Namespace) -> PredictorOptions:
    """The PredictorOptions of the parsed flags (`parsers.add_predictor_args`: each flag's dest is a field name)."""
    values = {name: getattr(args, name) for name in PredictorOptions.model_fields if hasattr(args, name)}
    if values.get("quantized") and values.get("backend") != "onnx":
        raise ConfigError("--int8 needs --backend onnx (the INT8 model is an ONNX file)")
    return PredictorOptions.build(**values)
