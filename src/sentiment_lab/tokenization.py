"""Tokenization: texts -> token ids with head / tail / head_tail truncation, shared by training and inference.

The settings that turn text into ids (`sidecar.TextSettings`) are saved beside the model so that `predict`,
`serve` and `export` truncate exactly as training did.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sentiment_lab.sidecar import TextSettings

_BR = re.compile(r"<br\s*/?>", flags=re.IGNORECASE)


def preprocess_text(text: str, lowercase: bool = False, strip_html: bool = False) -> str:
    """Apply the optional preprocessing steps (both off by default), in data cleaning and before tokenizing."""
    if strip_html:
        text = _BR.sub(" ", text)
    if lowercase:
        text = text.lower()
    return text


def preprocess_texts(texts: list[str], settings: TextSettings) -> list[str]:
    """`preprocess_text` with a model's settings, over a list (the list itself when nothing applies)."""
    if not (settings.lowercase or settings.strip_html):
        return texts
    return [preprocess_text(t, settings.lowercase, settings.strip_html) for t in texts]


def special_token_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after a single sequence ([CLS] ... [SEP], <s> ... </s>)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(bare) + 1):
        if with_special[i : i + len(bare)] == bare:
            return with_special[:i], with_special[i + len(bare) :]
    raise ValueError("cannot locate the special tokens of this tokenizer")


def token_budget(tokenizer: Any, max_length: int) -> int:
    """Tokens of text a sequence of `max_length` holds once the tokenizer's special tokens are added."""
    prefix, suffix = special_token_frame(tokenizer)
    return max_length - len(prefix) - len(suffix)


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
    texts = preprocess_texts(texts, settings)
    prefix, suffix = special_token_frame(tokenizer)
    budget = token_budget(tokenizer, settings.max_length)
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
    import datasets  # heavy (about 1 s at import) and needed only for training: not loaded by predict/serve

    enc = encode_texts(tokenizer, df["text"].tolist(), settings)
    columns: dict[str, Any] = dict(enc)
    if with_labels:
        columns["labels"] = df["label"].astype("int64").tolist()
    return datasets.Dataset.from_dict(columns)
