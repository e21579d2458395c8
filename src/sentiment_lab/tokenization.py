"""Tokenization: texts -> token ids with head / tail / head_tail truncation, shared by training and inference.

The settings that turn text into ids (`sidecar.TextSettings`) are saved beside the model so that `predict`,
`serve` and `export` truncate exactly as training did.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

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


TOKENIZE_ROWS = 2048  # texts tokenized at a time (bare_token_ids, tokenize_frame)


def bare_token_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's token ids without special tokens, TOKENIZE_ROWS texts at a time: a fast tokenizer's output for
    all texts at once keeps every text's Encoding (tokens, offsets) alive until it returns; for IMDb's 25,000 test
    reviews that raised the peak by 1.17 GB, against 0.37 GB in pieces (measured 2026-12-03), for the same ids."""
    ids: list[list[int]] = []
    for lo in range(0, len(texts), TOKENIZE_ROWS):
        ids += tokenizer(texts[lo : lo + TOKENIZE_ROWS], add_special_tokens=False, verbose=False)["input_ids"]
    return ids


def encode_texts(tokenizer: Any, texts: list[str], settings: TextSettings) -> dict[str, list[list[int]]]:
    """Token ids (with special tokens, unpadded) and attention masks for a list of texts."""
    texts = preprocess_texts(texts, settings)
    prefix, suffix = special_token_frame(tokenizer)
    budget = token_budget(tokenizer, settings.max_length)
    bare = bare_token_ids(tokenizer, texts)
    input_ids = [prefix + truncate_ids(ids, budget, settings.truncation, settings.head_tokens) + suffix for ids in bare]
    return {"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]}


def chunk_windows(ids: list[int], budget: int, overlap: int, max_windows: int | None = None) -> list[list[int]]:
    """Evenly spaced windows of `budget` ids covering all of `ids`, consecutive ones sharing about `overlap` ids.

    Every window is full length (unlike a fixed stride, which leaves a short last window weighing as much
    as a full one in the average). max_windows: at most that many of them, evenly spaced from the first to the
    last (training's cap on the cost of a very long text; the middle is then only partly covered).
    """
    return [ids[s : s + budget] for s in window_starts(len(ids), budget, overlap, max_windows)]


def window_starts(n: int, budget: int, overlap: int, max_windows: int | None = None) -> list[int]:
    """Where `chunk_windows`' windows of `n` ids start (one window at 0 when the ids fit the budget)."""
    if n <= budget:
        return [0]
    count = math.ceil((n - overlap) / (budget - overlap))
    starts = np.linspace(0, n - budget, count).round().astype(int)
    if max_windows is not None and count > max_windows:
        starts = starts[np.linspace(0, count - 1, max_windows).round().astype(int)]
    return [int(s) for s in starts]


def encode_windows(
    tokenizer: Any,
    texts: list[str],
    settings: TextSettings,
    long_text: str | None = None,
    stride: int | None = None,
    max_windows: int | None = None,
) -> tuple[list[list[int]], np.ndarray]:
    """Model inputs (token ids with special tokens) and, for each, the index of the text it came from.

    `truncate` gives one sequence per text, cut exactly as in training; `chunk` splits a text longer than
    max_length into overlapping windows (`stride` ids shared by neighbours, at most `max_windows` per text) and
    leaves shorter texts as they are. long_text None: the model's own mode (`settings.long_text`).
    """
    if (long_text or settings.long_text) == "truncate":
        return encode_texts(tokenizer, texts, settings)["input_ids"], np.arange(len(texts))
    cut = chunking(tokenizer, texts, settings, stride)
    sequences: list[list[int]] = []
    owners: list[int] = []
    for i, ids in enumerate(cut.ids):
        for window in chunk_windows(ids, cut.budget, cut.overlap, max_windows):
            sequences.append(cut.prefix + window + cut.suffix)
            owners.append(i)
    return sequences, np.asarray(owners, dtype=np.int64)


class Chunking(NamedTuple):
    """How chunk mode cuts texts: each text's ids (preprocessed, no special tokens), the special tokens framing every
    window, the text ids a window holds, and the ids neighbouring windows share."""

    ids: list[list[int]]
    prefix: list[int]
    suffix: list[int]
    budget: int
    overlap: int


def chunking(tokenizer: Any, texts: list[str], settings: TextSettings, stride: int | None = None) -> Chunking:
    """The cut `encode_windows` makes in chunk mode (stride None: `default_stride`), for callers that need the
    windows' places in the text too (explanations)."""
    prefix, suffix = special_token_frame(tokenizer)
    overlap = default_stride(settings, tokenizer) if stride is None else stride
    ids = bare_token_ids(tokenizer, preprocess_texts(texts, settings))
    return Chunking(ids, prefix, suffix, token_budget(tokenizer, settings.max_length), overlap)


def default_stride(settings: TextSettings, tokenizer: Any) -> int:
    """Tokens shared by neighbouring windows in chunk mode: a quarter of the window."""
    return token_budget(tokenizer, settings.max_length) // 4


def count_tokens(tokenizer: Any, texts: list[str]) -> np.ndarray:
    """Tokens per text including the special tokens, without truncation."""
    prefix, suffix = special_token_frame(tokenizer)
    bare = bare_token_ids(tokenizer, texts)
    return np.array([len(ids) + len(prefix) + len(suffix) for ids in bare])


def tokenize_frame(
    df: Any, tokenizer: Any, settings: TextSettings, with_labels: bool = True, max_windows: int | None = None
) -> tuple[Any, np.ndarray]:
    """A `datasets.Dataset` of input_ids/attention_mask(/labels) for a split frame, and for each of its rows the
    position of the frame row it came from.

    In `chunk` mode (`settings.long_text`) a long text gives one row per window (at most `max_windows`), each with
    the text's label: the model learns from all of a long review, and its windows' logits are averaged per review
    when it is scored (`metrics.average_by_owner`), as at inference.

    The texts are tokenized TOKENIZE_ROWS at a time into Arrow: token ids as Python ints take about 36 bytes each,
    and once freed glibc keeps that memory mapped, so tokenizing 22,500 reviews at once held 0.85 GiB of the training
    process for good (docs/performance.md, P1); in pieces the lists stay small and their memory is reused.
    """
    import datasets  # heavy (about 1 s at import) and needed only for training: not loaded by predict/serve

    parts, owners = [], []
    texts = df["text"].tolist()
    labels = df["label"].astype("int64").to_numpy() if with_labels else None
    for start in range(0, len(texts), TOKENIZE_ROWS):
        sequences, part_owners = encode_windows(
            tokenizer, texts[start : start + TOKENIZE_ROWS], settings, max_windows=max_windows
        )
        part_owners = part_owners + start
        columns: dict[str, Any] = {"input_ids": sequences, "attention_mask": [[1] * len(ids) for ids in sequences]}
        if labels is not None:
            columns["labels"] = labels[part_owners].tolist()
        parts.append(datasets.Dataset.from_dict(columns))
        owners.append(part_owners)
    if not parts:  # an empty frame: an empty dataset with the same columns
        empty = {"input_ids": [], "attention_mask": [], **({"labels": []} if with_labels else {})}
        return datasets.Dataset.from_dict(empty), np.zeros(0, dtype=np.int64)
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return dataset, np.concatenate(owners).astype(np.int64)
