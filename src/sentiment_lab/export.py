"""Export: a saved classifier -> ONNX (dynamic batch and sequence axes) -> INT8, kept only if a parity check passes.

MODEL_DIR/onnx/ receives model.onnx, model.int8.onnx (with `quantize="int8"`) and parity.json. Everything is
built in a temp folder beside it and renamed into place only after the parity check passes: on N held-out
reviews the ONNX fp32 logits match torch within `atol`, and the INT8 model agrees with torch on at least
`min_agreement` of the labels. A failed check raises and leaves the previous export (or none) untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sentiment_lab.config import load_config
from sentiment_lab.data import clean_split, load_raw_splits, stratified_subset
from sentiment_lab.errors import ConfigError, DataError, ModelError
from sentiment_lab.io import write_json_atomic
from sentiment_lab.predictor import Predictor
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.rundir import ONNX_DIR, ONNX_FILE, ONNX_INT8_FILE, locate_model
from sentiment_lab.runners import onnx_runner

log = logging.getLogger("sentiment_lab")

PARITY_FILE = "parity.json"
QUANTIZE_MODES = ("int8",)
# Used when no IMDb copy is at hand: both polarities, short and long, plain and with markup.
BUILTIN_REVIEWS = [
    "A wonderful, moving film. The acting is superb and the story stayed with me for days.",
    "Terrible. I walked out after forty minutes and wanted my money back.",
    "Not bad, not great either; the second half drags but the ending almost saves it.",
    "I expected to hate it, yet I laughed from start to finish. A small gem.",
    "The plot makes no sense, the dialogue is wooden and the effects look cheap.",
    "One of the best performances of the decade.<br /><br />Go and see it on a big screen.",
    "Boring, predictable and far too long.",
    "My kids loved it and, to my surprise, so did I.",
    "An insult to the book it is based on. Avoid.",
    "Beautifully shot, with a score that lifts every scene; the cast is flawless.",
    "I have seen worse, but I cannot remember when.",
    "It starts slowly, then builds into something gripping and genuinely frightening.",
    "The director clearly had no idea what film he was making: thriller, comedy, romance? None of them works. "
    "Every character is a cliché, the twist is visible from the first scene, and the last act is so rushed "
    "that it feels as if the money simply ran out. I kept checking my watch.",
    "What a delight! Sharp writing, warm characters and a finale that made the whole audience cheer. "
    "It never talks down to its viewers and it trusts them with silence. I would happily watch it again "
    "tomorrow, and I will be recommending it to everyone I know.",
    "Meh.",
    "Great.",
]


def held_out_reviews(n: int, data_path: str | Path | None = None, seed: int = 0) -> pd.DataFrame | None:
    """n IMDb test reviews (id, text, label), stratified, from `data_path` or the local copy (IMDB_DIR); else None."""
    cfg = load_config(None, data_path=str(data_path) if data_path else None).data
    if not cfg.path:
        return None  # no local copy: never reach for the Hub from export or bench
    _, test = load_raw_splits(cfg)
    test, _ = clean_split(test, cfg)
    return stratified_subset(test, n, seed).reset_index(drop=True)


def parity_texts(n: int, data_path: str | Path | None = None) -> tuple[list[str], str]:
    """The held-out texts of the parity check and where they came from."""
    reviews = held_out_reviews(n, data_path)
    if reviews is not None:
        return reviews["text"].tolist(), f"IMDb test ({len(reviews)} reviews)"
    return list(BUILTIN_REVIEWS), f"built-in list ({len(BUILTIN_REVIEWS)} reviews; no IMDb copy found)"


def export_to_onnx(model: Any, tokenizer: Any, path: Path, max_length: int, opset: int | None = None) -> None:
    """torch.onnx (dynamo exporter) with dynamic batch and sequence axes; inputs input_ids, attention_mask."""
    sample = tokenizer(["a short review", "a slightly longer review of a film"], padding=True, return_tensors="pt")
    inputs = {"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"]}
    axes = {0: torch.export.Dim("batch", min=1, max=4096), 1: torch.export.Dim("sequence", min=1, max=max_length)}
    model.eval()
    try:
        with warnings.catch_warnings():
            # Notices about torch internals and axis renaming that say nothing about this export.
            warnings.filterwarnings("ignore", message=r"# The axis name")
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            torch.onnx.export(
                model,
                (),
                str(path),
                kwargs=inputs,
                input_names=list(inputs),
                output_names=["logits"],
                dynamic_shapes={name: axes for name in inputs},
                opset_version=opset,
                dynamo=True,
                external_data=False,  # one self-contained file (encoders up to 2 GB)
                verbose=False,
            )
    except Exception as exc:
        raise ModelError(
            f"torch.onnx could not export {type(model).__name__}: {type(exc).__name__}: {str(exc).splitlines()[0]}. "
            "Run with -v for the full trace"
        ) from exc


ACTIVATIONS = ("Gelu", "FastGelu", "Relu", "Erf")


def ffn_down_projections(model_path: Path) -> list[str]:
    """Names of the MatMul nodes fed by an activation: each encoder layer's FFN down-projection.

    Their inputs (GELU outputs) have large outliers, so one dynamic uint8 scale per tensor loses the small
    values; on the quick-start MiniLM they caused most of the INT8 label flips (see the export notes).
    """
    import onnx  # heavy (about 1 s) and needed only when exporting

    graph = onnx.load(str(model_path), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    return [
        node.name
        for node in graph.node
        if node.op_type == "MatMul" and node.input[0] in producer and producer[node.input[0]].op_type in ACTIVATIONS
    ]


def quantize_int8(source: Path, target: Path, per_channel: bool = True) -> list[str]:
    """Dynamic INT8 quantization of the encoder's MatMul weights with ONNX Runtime; returns the nodes kept fp32.

    Only weight MatMuls are quantized, minus the FFN down-projections: embeddings (Gather), pooler and
    classifier (Gemm) and the outlier-prone FFN outputs stay fp32, because the logit margin of a small
    fine-tuned model is thin. Per-channel scales give each output neuron's weights their own range.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic  # heavy, only for --quantize

    excluded = ffn_down_projections(source)
    quantize_dynamic(
        source,
        target,
        op_types_to_quantize=["MatMul"],
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        extra_options={"MatMulConstBOnly": True},  # weights only; activation x activation stays fp32
    )
    return excluded


def _compare(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    diff = np.abs(reference - other)
    return {
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "label_agreement": float(np.mean(reference.argmax(-1) == other.argmax(-1))),
    }


def export_onnx(
    model_dir: str | Path,
    quantize: str | None = None,
    n: int = 200,
    data_path: str | Path | None = None,
    atol: float = 1e-3,
    min_agreement: float = 0.99,
    per_channel: bool = True,
    opset: int | None = None,
) -> dict[str, Any]:
    """Export MODEL_DIR to MODEL_DIR/onnx/ (and INT8) after a parity check on n held-out reviews; returns the check.

    Raises ModelError, leaving the previous onnx/ folder as it was, when the parity check fails.
    """
    # onnx and onnxruntime: heavy imports (about 1 s), needed only when exporting
    import onnx
    import onnxruntime

    if quantize not in (None, *QUANTIZE_MODES):
        raise ConfigError(f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE_MODES)}")
    if n < 1:
        raise ConfigError(f"the parity check needs at least 1 review, got n={n}")
    if not 0 < min_agreement <= 1 or atol <= 0:
        raise ConfigError("min_agreement must be in (0, 1] and atol positive")
    folder, _ = locate_model(model_dir)
    reference = Predictor.load(folder, backend="torch", precision="fp32")  # parity is checked against fp32
    texts, source = parity_texts(n, data_path)

    staging = Path(tempfile.mkdtemp(prefix=f".{ONNX_DIR}.", suffix=".tmp", dir=folder))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700; the export folder gets the usual permissions
    try:
        start = time.perf_counter()
        export_to_onnx(reference.model, reference.tokenizer, staging / ONNX_FILE, reference.settings.max_length, opset)
        onnx.checker.check_model(str(staging / ONNX_FILE))
        report: dict[str, Any] = {
            "texts": source,
            "n": len(texts),
            "atol": atol,
            "min_agreement": min_agreement,
            "export_s": time.perf_counter() - start,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        }
        torch_logits = reference.logits(texts)
        fp32 = _with_runner(reference, onnx_runner(staging / ONNX_FILE))
        report["fp32"] = _compare(torch_logits, fp32.logits(texts))
        # Batch-1 runs of the longest and shortest texts exercise the dynamic axes at their extremes.
        lengths = [len(t) for t in texts]
        edge = [texts[int(np.argmax(lengths))], texts[int(np.argmin(lengths))]]
        edge_diff = max(float(np.abs(fp32.logits([t]) - torch_logits[texts.index(t)]).max()) for t in edge)
        report["fp32"]["max_abs_logit_diff"] = max(report["fp32"]["max_abs_logit_diff"], edge_diff)
        report["fp32"]["passed"] = report["fp32"]["max_abs_logit_diff"] <= atol
        if quantize == "int8":
            start = time.perf_counter()
            kept_fp32 = quantize_int8(staging / ONNX_FILE, staging / ONNX_INT8_FILE, per_channel)
            int8 = _with_runner(reference, onnx_runner(staging / ONNX_INT8_FILE))
            report["int8"] = _compare(torch_logits, int8.logits(texts))
            report["int8"].update(
                {
                    "per_channel": per_channel,
                    "matmuls_kept_fp32": len(kept_fp32),
                    "quantize_s": time.perf_counter() - start,
                    "size_mb": (staging / ONNX_INT8_FILE).stat().st_size / 1e6,
                    "passed": report["int8"]["label_agreement"] >= min_agreement,
                }
            )
        report["fp32"]["size_mb"] = (staging / ONNX_FILE).stat().st_size / 1e6
        report["passed"] = all(report[k]["passed"] for k in ("fp32", "int8") if k in report)
        if not report["passed"]:
            raise ModelError(_failure_message(report))
        write_json_atomic(staging / PARITY_FILE, report)
        _swap_into_place(staging, folder / ONNX_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report["onnx_dir"] = str(folder / ONNX_DIR)
    return report


def _with_runner(reference: Predictor, runner: Any) -> Predictor:
    """A predictor sharing the reference's tokenizer and settings but running another model."""
    return Predictor(
        reference.model_dir,
        PredictorOptions(backend="onnx", batch_size=reference.batch_size),
        reference.tokenizer,
        reference.settings,
        runner,
        reference.labels,
        reference.positive_index,
    )


def _failure_message(report: dict[str, Any]) -> str:
    parts = []
    fp32 = report["fp32"]
    if not fp32["passed"]:
        parts.append(
            f"ONNX fp32 logits differ from torch by up to {fp32['max_abs_logit_diff']:.2e} "
            f"(> atol {report['atol']:.0e})"
        )
    int8 = report.get("int8")
    if int8 and not int8["passed"]:
        parts.append(
            f"INT8 agrees with torch on {100 * int8['label_agreement']:.1f}% of labels "
            f"(< {100 * report['min_agreement']:.0f}%)"
        )
    return (
        f"export refused: {'; '.join(parts)} on {report['texts']}. Nothing was written. Try without --quantize "
        "(fp32 only), with --per-tensor toggled, or loosen --atol / --min-agreement if you accept the difference"
    )


def _swap_into_place(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames, so readers see the old folder or the new one."""
    old = None
    if target.exists():
        if not target.is_dir():
            raise DataError(f"{target} exists and is not a folder; move it away and export again")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
