"""Inference: logits for many texts with length-sorted batches, truncation identical to training."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from sentiment_lab.tokenization import TextSettings, encode_texts


def compute_logits(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    settings: TextSettings,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits (n, 2) in input order; batches are sorted by length so little padding is computed."""
    enc = encode_texts(tokenizer, texts, settings)
    order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
    device = next(model.parameters()).device
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    batches = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch")
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    model.eval()
    with torch.inference_mode(), autocast:
        for start in batches:
            idx = order[start : start + batch_size]
            batch = tokenizer.pad(
                {
                    "input_ids": [enc["input_ids"][i] for i in idx],
                    "attention_mask": [enc["attention_mask"][i] for i in idx],
                },
                return_tensors="pt",
            )
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
            out[idx] = logits.float().cpu().numpy()
    return out
