"""Tokenization: texts -> token ids with head / tail / head_tail truncation, shared by training and inference.

The settings that turn text into ids are saved beside the model (`sentiment_lab.json`) so that
`predict`, `serve` and `export` truncate exactly as training did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sentiment_lab.config import ExperimentConfig

SETTINGS_FILE = "sentiment_lab.json"


@dataclass
class TextSettings:
    """Everything needed to turn a raw review into model inputs exactly as in training."""

    max_length: int = 512
    truncation: str = "head"
    head_tokens: int | None = None
    lowercase: bool = False
    strip_html: bool = False

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> TextSettings:
        t = cfg.tokenization
        return cls(t.max_length, t.truncation, t.head_tokens, cfg.data.lowercase, cfg.data.strip_html)


def save_text_settings(model_dir: str | Path, settings: TextSettings, extra: dict[str, Any] | None = None) -> None:
    """Write `sentiment_lab.json` into a model folder, keeping keys other stages stored there."""
    from sentiment_lab.io import write_json_atomic

    path = Path(model_dir) / SETTINGS_FILE
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(asdict(settings))
    data.update(extra or {})
    write_json_atomic(path, data)


def load_text_settings(model_dir: str | Path, tokenizer: Any | None = None) -> TextSettings:
    """Read a model folder's settings; a plain HF folder gets head truncation at the model's max length."""
    path = Path(model_dir) / SETTINGS_FILE
    if path.exists():
        data = json.loads(path.read_text())
        return TextSettings(**{k: data[k] for k in TextSettings.__dataclass_fields__ if k in data})
    limit = getattr(tokenizer, "model_max_length", 512) if tokenizer is not None else 512
    return TextSettings(max_length=min(int(limit), 512))


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence ([CLS] ... [SEP], <s> ... </s>)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(bare) + 1):
        if with_special[i : i + len(bare)] == bare:
            return with_special[:i], with_special[i + len(bare) :]
    raise ValueError("cannot locate the special tokens of this tokenizer")


def truncate_ids(ids: list[int], budget: int, strategy: str, head_tokens: int | None = None) -> list[int]:
    """Cut a token list to `budget` ids: keep the head, the tail, or the first H and last budget-H."""
    if len(ids) <= budget:
        return ids
    if strategy == "head":
        return ids[:budget]
    if strategy == "tail":
        return ids[len(ids) - budget :]
    if strategy == "head_tail":
        head = budget // 4 if head_tokens is None else min(head_tokens, budget)
        return ids[:head] + ids[len(ids) - (budget - head) :]
    raise ValueError(f"unknown truncation strategy {strategy!r}")


def encode_texts(tokenizer: Any, texts: list[str], settings: TextSettings) -> dict[str, list[list[int]]]:
    """Token ids (with special tokens, unpadded) and attention masks for a list of texts."""
    from sentiment_lab.data import preprocess_text

    if settings.lowercase or settings.strip_html:
        texts = [preprocess_text(t, settings.lowercase, settings.strip_html) for t in texts]
    prefix, suffix = special_token_frame(tokenizer)
    budget = settings.max_length - len(prefix) - len(suffix)
    bare = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    input_ids = [prefix + truncate_ids(ids, budget, settings.truncation, settings.head_tokens) + suffix for ids in bare]
    return {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}


def count_tokens(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text including the special tokens, without truncation."""
    prefix, suffix = special_token_frame(tokenizer)
    bare = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return np.array([len(ids) + len(prefix) + len(suffix) for ids in bare])


def tokenize_frame(df: Any, tokenizer: Any, settings: TextSettings, with_labels: bool = True) -> Any:
    """A `datasets.Dataset` of input_ids/attention_mask(/labels) for a split frame."""
    import datasets

    enc = encode_texts(tokenizer, df["text"].tolist(), settings)
    columns: dict[str, Any] = dict(enc)
    if with_labels:
        columns["labels"] = df["label"].astype("int64").tolist()
    return datasets.Dataset.from_dict(columns)
