"""The inference engine: texts -> logits in length-sorted batches, truncation identical to training.

A *runner* turns a padded batch of token ids into logits: `torch_runner` (a transformers classifier on any device,
with optional autocast), `compiled_runner` (the same through torch.compile) and `onnx_runner` (ONNX Runtime).
`compute_logits` and `score_split` are the torch path of `train` and `evaluate`; the `Predictor` (predictor.py)
puts a runner behind `predict`, `serve` and `bench`. In `chunk` mode a long review becomes overlapping windows
whose logits are averaged, so nothing of it is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sentiment_lab.errors import ModelError
from sentiment_lab.metrics import average_by_owner, softmax
from sentiment_lab.precision import ResolvedPrecision, pad_multiple
from sentiment_lab.sidecar import TextSettings
from sentiment_lab.tokenization import encode_windows

# (input_ids, attention_mask), both int64 (batch, seq) -> logits float32 (batch, labels)
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def batched_logits(
    sequences: list[list[int]],
    tokenizer: Any,
    runner: Runner,
    batch_size: int,
    progress: bool = False,
    multiple: int | None = None,
) -> np.ndarray:
    """Run sequences through `runner` in batches of similar length (little padding); logits in input order.

    `multiple`: pad each batch's length up to a multiple of it (`precision.pad_multiple`: bounds the shapes oneDNN
    caches a primitive for)."""
    order = np.argsort([len(ids) for ids in sequences], kind="stable")
    out: np.ndarray | None = None
    batches: Any = range(0, len(order), batch_size)
    if progress:
        batches = tqdm(batches, desc="predict", unit="batch")
    for start in batches:
        idx = order[start : start + batch_size]
        batch = tokenizer.pad(
            {"input_ids": [sequences[i] for i in idx], "attention_mask": [[1] * len(sequences[i]) for i in idx]},
            return_tensors="np",
            pad_to_multiple_of=multiple,
        )
        logits = runner(batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64))
        if out is None:
            out = np.zeros((len(sequences), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 2), dtype=np.float32)


def torch_runner(model: Any, autocast_dtype: torch.dtype | None = None) -> Runner:
    """A runner for a transformers classifier on whatever device it sits."""
    device = next(model.parameters()).device
    model.eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        autocast = (
            torch.autocast(device_type=device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = model(
                input_ids=torch.from_numpy(input_ids).to(device),
                attention_mask=torch.from_numpy(attention_mask).to(device),
            )
        return out.logits.float().cpu().numpy()

    return run


def embedding_runner(model: Any) -> Runner:
    """A runner that gives each sequence's encoder representation instead of its logits: the mean of the last hidden
    states over its real tokens (padding excluded), float32 (batch, hidden). Active learning's `diverse` clusters it."""
    device = next(model.parameters()).device
    model.eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        mask = torch.from_numpy(attention_mask).to(device)
        with torch.inference_mode():
            out = model(
                input_ids=torch.from_numpy(input_ids).to(device), attention_mask=mask, output_hidden_states=True
            )
        hidden = out.hidden_states[-1].float()
        weights = mask.unsqueeze(-1).float()
        return ((hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).cpu().numpy()

    return run


def compiled_runner(model: Any, tokenizer: Any) -> Runner:
    """A torch runner through torch.compile, compiled now for batch 1 and batch > 1 (torch specialises on 1).

    Inductor with `freezing` folds the (inference-only) weights into the graph and pre-packs them for oneDNN;
    dynamic shapes keep one graph for every review length.
    """
    runner = torch_runner(torch.compile(model, dynamic=True, options={"freezing": True}))
    ids = tokenizer("compile warm-up")["input_ids"]
    try:
        for n in (1, 2):
            runner(np.array([ids] * n, dtype=np.int64), np.ones((n, len(ids)), dtype=np.int64))
    except Exception as exc:  # a missing C++ compiler, an unsupported op: the eager model still works
        raise ModelError(
            f"torch.compile failed on this machine ({type(exc).__name__}: {str(exc)[:300]}); run without --compile"
        ) from None
    return runner


def onnx_runner(path: str | Path, threads: int | None = None, spin: bool = True) -> Runner:
    """A runner for an exported ONNX classifier on ONNX Runtime's CPU provider.

    spin=False stops ONNX Runtime's threads from busy-waiting after each call, which otherwise takes the cores
    from whatever runs next in the process (a benchmark timing other backends in turn, for one).
    """
    import onnxruntime as ort  # heavy (about 0.5 s) and needed only for the ONNX backend

    options = ort.SessionOptions()
    # Same thread count as torch by default, so backends compare like for like.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return session.run(None, feed)[0].astype(np.float32)

    return run


def compute_logits(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    settings: TextSettings,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits (n, labels) in input order; batches are sorted by length so little padding is computed.

    A model trained in chunk mode (`settings.long_text`) reads a long text as windows and gets their mean logits.
    """
    sequences, owners = encode_windows(tokenizer, texts, settings)
    runner = torch_runner(model, autocast_dtype)
    multiple = pad_multiple(settings.max_length, reduced=autocast_dtype is not None)
    logits = batched_logits(sequences, tokenizer, runner, batch_size, progress, multiple)
    return average_by_owner(logits, owners, len(texts))  # truncate: one window per text, returned unchanged


def predictions_frame(df: pd.DataFrame, logits: np.ndarray) -> pd.DataFrame:
    """id, text, label, pred, the probabilities and the raw logits for every review of a split.

    Two classes: prob_pos, logit_neg, logit_pos. K > 2: confidence (the top probability), prob_0 .. prob_{K-1},
    logit_0 .. logit_{K-1}. `logits_of` reads the logits back for any K.
    """
    probs = softmax(logits)
    columns = {
        "id": df["id"].to_numpy(),
        "text": df["text"].to_numpy(),
        "label": df["label"].to_numpy(),
        "pred": logits.argmax(axis=-1),
    }
    k = logits.shape[-1]
    if k == 2:
        columns |= {"prob_pos": probs[:, 1], "logit_neg": logits[:, 0], "logit_pos": logits[:, 1]}
    else:
        columns["confidence"] = probs.max(axis=-1)
        columns |= {f"prob_{i}": probs[:, i] for i in range(k)}
        columns |= {f"logit_{i}": logits[:, i] for i in range(k)}
    return pd.DataFrame(columns)


def calibrated_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities softmax(logits / T) in float64: a model's calibrated output (T from its sidecar)."""
    return softmax(np.asarray(logits, dtype=np.float64) / temperature)


def average_probabilities(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """An ensemble's class probabilities (n, K): the weighted mean of its members' calibrated probabilities.

    weights: one per member (any positive scale; normalised here); None weighs every member the same.
    """
    return np.average(np.stack([np.asarray(p, dtype=np.float64) for p in probs]), axis=0, weights=weights)


def probability_logits(probs: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `probs`: their log (an ensemble's "logits"; 0 becomes the smallest float's log)."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny))


def logits_of(frame: pd.DataFrame) -> np.ndarray:
    """The logits (n, K) of a predictions frame: logit_neg/logit_pos for two classes, logit_0.. for more."""
    if {"logit_neg", "logit_pos"} <= set(frame.columns):
        return frame[["logit_neg", "logit_pos"]].to_numpy()
    k = 0
    while f"logit_{k}" in frame.columns:
        k += 1
    if k < 2:
        raise ModelError(
            "the predictions have no logit columns (logit_neg/logit_pos, or logit_0 .. logit_{K-1}); they were not "
            "written by train or evaluate: re-run evaluate on the model"
        )
    return frame[[f"logit_{i}" for i in range(k)]].to_numpy()


def score_split(
    model: Any,
    tokenizer: Any,
    df: pd.DataFrame,
    settings: TextSettings,
    precision: ResolvedPrecision,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[pd.DataFrame, np.ndarray, float]:
    """Predictions of a labelled split: (predictions frame, logits, seconds). The one scoring path of `train`
    (validation and test after training) and `evaluate`, so both give the same numbers for the same model:
    fp32 weights under autocast to the resolved precision."""
    start = time.perf_counter()
    logits = compute_logits(
        model, tokenizer, df["text"].tolist(), settings, batch_size, precision.autocast_dtype, progress
    )
    return predictions_frame(df, logits), logits, time.perf_counter() - start
