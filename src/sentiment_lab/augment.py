"""Contextual augmentation (`augment:` in a train config, docs/augmentation.md): copies of the training texts in
which some words are masked and replaced by words a masked-LM samples in their context.

Written here rather than taken from nlpaug (ContextualWordEmbsAug does the same idea): nlpaug is unmaintained since
2022, augments one text and one word at a time (a forward pass per word), and rebuilds texts from decoded tokens,
which loses the casing and spacing of the original. Here every chosen word of a text is masked at once (the
masked-LM's own training regime, 15% by default), windows of all texts go through the model in batches, and only
the replaced words' characters change (the tokenizer's offsets locate them).

A word can be replaced when it is one token of the masked-LM's vocabulary and made of letters only (not numbers,
punctuation or the `br` of IMDb's `<br />`); a replacement is a whole word of letters too, never the word itself in
any case, sampled among the model's top_k at that position and given the original's capitalisation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sentiment_lab.config import AugmentConfig, ModelConfig
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.io import write_json_atomic, write_parquet_atomic
from sentiment_lab.modeling import build_masked_lm, load_tokenizer, resolve_model_name
from sentiment_lab.precision import default_device
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.rundir import fingerprint_of, model_file_digests, rows_digest
from sentiment_lab.tokenization import special_token_frame, token_budget

log = logging.getLogger("sentiment_lab")

AUGMENT_ROWS = 1024  # texts tokenized (with offsets) at a time: the offsets of 25,000 reviews at once take GBs
SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE (RoBERTa, GPT-2) and SentencePiece mark a token that starts a word


@dataclass
class Window:
    """A piece of one text's tokens with its chosen words masked, as the masked-LM reads it."""

    text: int  # index of the text in its piece
    start: int  # position of the window's first token in the text's tokens
    ids: list[int]  # the window's token ids, [MASK] at the chosen words
    positions: list[int]  # the masked positions, in the text's tokens
    originals: list[int]  # the token ids the masks replaced


@dataclass
class Augmenter:
    """A masked-LM and its tokenizer, ready to augment texts with `cfg`'s settings."""

    cfg: AugmentConfig
    model: Any
    tokenizer: Any
    name: str  # the folder or Hub id it was loaded from
    words: dict[int, str] = field(default_factory=dict)  # token id -> word, for every id a replacement may be
    # token id -> the other ids of the same word in another case (a cased vocabulary's `Good` for `good`): never
    # a replacement of it
    variants: dict[int, list[int]] = field(default_factory=dict)

    @property
    def vocab_mask(self) -> torch.Tensor:
        mask = torch.zeros(self.model.get_output_embeddings().weight.shape[0], dtype=torch.bool)
        mask[list(self.words)] = True
        return mask


def load_augmenter(cfg: AugmentConfig, max_length: int) -> Augmenter:
    """The masked-LM of `cfg.mlm_model`; a model whose MLM head would be new (a bare encoder) is refused, as is a
    tokenizer without offsets. max_length: the window when cfg.max_length is not set (tokenization.max_length)."""
    name = resolve_model_name(cfg.mlm_model)
    try:
        mlm = build_masked_lm(ModelConfig(name=cfg.mlm_model, attention_dropout=None))
    except ModelError as exc:
        raise ModelError(f"augment.mlm_model: {exc}") from None
    if mlm.new_weights:
        raise ModelError(
            f"augment.mlm_model {cfg.mlm_model} has no trained masked-LM head (new: {', '.join(mlm.new_weights[:3])}"
            f"{', ...' if len(mlm.new_weights) > 3 else ''}), so its word predictions would be noise; pre-train one "
            "first (`sentiment-lab pretrain`, docs/pretraining.md) and name its folder, or name a Hub masked-LM "
            "such as bert-base-uncased"
        )
    tokenizer = load_tokenizer(cfg.mlm_model)
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"augment.mlm_model {cfg.mlm_model} has a slow (Python) tokenizer, which gives no character offsets; "
            "save the model with its fast tokenizer (tokenizer.json)"
        )
    if tokenizer.mask_token_id is None:
        raise ModelError(f"augment.mlm_model {cfg.mlm_model}: its tokenizer has no mask token; name a masked-LM")
    try:
        special_token_frame(tokenizer)
    except ValueError as exc:
        raise ModelError(f"augment.mlm_model {cfg.mlm_model}: {exc}") from None
    window = cfg.max_length or max_length
    limit = getattr(mlm.model.config, "max_position_embeddings", None)
    # RoBERTa-style embeddings number positions from padding_idx + 1 (514 positions hold 512 tokens)
    padding_idx = getattr(getattr(mlm.model.base_model, "embeddings", None), "padding_idx", None)
    if limit and isinstance(padding_idx, int):
        limit -= padding_idx + 1
    if limit and window > limit:
        raise ConfigError(
            f"augment.max_length (or tokenization.max_length) {window} is longer than {cfg.mlm_model} takes "
            f"({limit} positions); set augment.max_length to at most {limit}"
        )
    mlm.model.eval()
    augmenter = Augmenter(cfg.model_copy(update={"max_length": window}), mlm.model, tokenizer, name)
    rows = mlm.model.get_output_embeddings().weight.shape[0]  # ids past the decoder's rows cannot be predicted
    augmenter.words = {i: w for i, w in replacement_words(tokenizer).items() if i < rows}
    augmenter.variants = same_word_ids(augmenter.words)
    if len(augmenter.words) < 2:
        raise ModelError(
            f"augment.mlm_model {cfg.mlm_model}: its vocabulary has fewer than 2 whole words made of letters, so no "
            "word could be replaced by another; name a masked-LM with a word vocabulary"
        )
    return augmenter


def replacement_words(tokenizer: Any) -> dict[int, str]:
    """Token id -> word for every token that is a whole word of letters (what a replacement may be). WordPiece marks
    a word's continuation (`##ing`); byte-level BPE and SentencePiece mark a word's start (`Ġgood`, `▁good`)."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    marks_start = sum(t.startswith(SPACE_MARKERS) for t in tokens if t) > len(tokens) // 10
    words = {}
    for i, token in enumerate(tokens):
        if i in special or not token or token.startswith("##"):
            continue
        if marks_start:
            if not token.startswith(SPACE_MARKERS):
                continue
            # the text the token stands for: byte-level BPE spells bytes as letters (`Ãł` is one byte of `à`)
            token = tokenizer.convert_tokens_to_string([token]).strip()
        if len(token) > 1 and token.isalpha():
            words[i] = token
    return words


def same_word_ids(words: dict[int, str]) -> dict[int, list[int]]:
    """Token id -> the other ids whose word is the same in another case (empty for an uncased vocabulary)."""
    by_word: dict[str, list[int]] = {}
    for i, word in words.items():
        by_word.setdefault(word.lower(), []).append(i)
    return {i: [j for j in ids if j != i] for ids in by_word.values() if len(ids) > 1 for i in ids}


def _word_span(text: str, start: int, end: int) -> tuple[int, int]:
    """A token's character span without the leading space some tokenizers' offsets include (SentencePiece)."""
    while start < end and text[start].isspace():
        start += 1
    return start, end


def _candidates(text: str, encoding: Any, index: int, words: dict[int, str]) -> list[int]:
    """Positions (in the text's tokens) of words that may be replaced: one vocabulary token of letters, not the
    inside of an HTML tag."""
    ids, offsets, word_ids = encoding["input_ids"][index], encoding["offset_mapping"][index], encoding.word_ids(index)
    counts: dict[int, int] = {}
    for w in word_ids:
        if w is not None:
            counts[w] = counts.get(w, 0) + 1
    out = []
    for j, (token_id, (start, end), w) in enumerate(zip(ids, offsets, word_ids, strict=True)):
        if w is None or counts[w] != 1 or token_id not in words:
            continue
        start, end = _word_span(text, start, end)
        span = text[start:end]
        if span.isalpha() and not (start > 0 and text[start - 1] in "</"):
            out.append(j)
    return out


def _match_case(word: str, original: str) -> str:
    """`word` in the original's case: UPPER, Capitalised, or lower (a cased vocabulary's `John` for `said`)."""
    if len(original) > 1 and original.isupper():
        return word.upper()
    if original[:1].isupper():
        return word[:1].upper() + word[1:]
    return word.lower()


def augment_frame(
    frame: pd.DataFrame,
    augmenter: Augmenter,
    seed: int,
    progress: bool = False,
    device: torch.device | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`copies` augmented rows per row of `frame` (every column kept; id `ID~augC`, the text with words replaced,
    `source_id`), without copies in which no word could be replaced; and the counts (logged). device: where the
    masked-LM runs (default: `default_device()`)."""
    cfg, tokenizer = augmenter.cfg, augmenter.tokenizer
    prefix, suffix = special_token_frame(tokenizer)
    budget = token_budget(tokenizer, cfg.max_length)
    texts = frame["text"].tolist()
    vocab_mask = augmenter.vocab_mask
    device = device or default_device()
    precision = resolve_precision("auto", device, purpose="augmentation")
    augmenter.model.to(device)
    start = time.perf_counter()
    rows, replaced_counts, unchanged = [], [], 0
    for copy in range(1, cfg.copies + 1):
        rng = np.random.default_rng([seed, copy])
        for lo in range(0, len(texts), AUGMENT_ROWS):
            piece = texts[lo : lo + AUGMENT_ROWS]
            enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            # (text, position in its tokens) of each masked word, and the windows that hold them
            chosen: list[list[int]] = []
            windows: list[Window] = []
            for i, text in enumerate(piece):
                cand = _candidates(text, enc, i, augmenter.words)
                k = min(len(cand), max(1, round(cfg.replace_fraction * len(cand)))) if cand else 0
                picks = sorted(rng.choice(cand, size=k, replace=False).tolist()) if k else []
                chosen.append(picks)
                ids = enc["input_ids"][i]
                for w0 in sorted({p // budget * budget for p in picks}):
                    inside = [p for p in picks if w0 <= p < w0 + budget]
                    masked = list(ids[w0 : w0 + budget])
                    for p in inside:
                        masked[p - w0] = tokenizer.mask_token_id
                    windows.append(Window(i, w0, masked, inside, [ids[p] for p in inside]))
            predicted = _top_words(augmenter, windows, prefix, suffix, vocab_mask, precision, device)
            for i, text in enumerate(piece):
                picks = chosen[i]
                if not picks:
                    unchanged += 1
                    continue
                ids, offsets = enc["input_ids"][i], enc["offset_mapping"][i]
                new_text = text
                for p in reversed(picks):  # right to left: earlier offsets stay valid
                    values, indices = predicted[(i, p)]
                    probs = torch.softmax(values, dim=-1).numpy().astype(np.float64)
                    choice = int(indices[rng.choice(len(probs), p=probs / probs.sum())])
                    s, e = _word_span(text, *offsets[p])
                    new_text = new_text[:s] + _match_case(augmenter.words[choice], text[s:e]) + new_text[e:]
                row = frame.iloc[lo + i].to_dict()
                row.update(id=f"{row['id']}~aug{copy}", text=new_text, source_id=str(row["id"]))
                rows.append(row)
                replaced_counts.append(len(picks))
            if progress:
                log.info("augment: copy %d, %d of %d texts", copy, min(lo + AUGMENT_ROWS, len(texts)), len(texts))
    columns = [*frame.columns, "source_id"]
    out = pd.DataFrame(rows, columns=columns)
    if len(out):
        out = out.astype({"id": str})
    facts = {
        "mlm_model": augmenter.name,
        "copies": cfg.copies,
        "texts": len(texts),
        "rows_added": len(out),
        "no_replaceable_word": unchanged,  # copies not added: the text had no word to replace
        "words_replaced": int(sum(replaced_counts)),
        "words_replaced_per_row": float(np.mean(replaced_counts)) if replaced_counts else 0.0,
        "seconds": round(time.perf_counter() - start, 1),
    }
    log.info(
        "augment: %d training texts -> %d augmented rows (%d x copies; %.1f words replaced per row, %d copies "
        "without a replaceable word) in %.0f s",
        facts["texts"],
        facts["rows_added"],
        cfg.copies,
        facts["words_replaced_per_row"],
        unchanged,
        facts["seconds"],
    )
    return out, facts


def _top_words(
    augmenter: Augmenter,
    windows: list[Window],
    prefix: list[int],
    suffix: list[int],
    vocab_mask: torch.Tensor,
    precision: Any,
    device: torch.device,
) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """At every masked position of `windows`, keyed (text, position): the masked-LM's top_k scores and token ids
    among the replacement words, the original word excluded in every case (only these are kept: a full row of
    scores per position would take GBs for a thousand reviews)."""
    model, cfg = augmenter.model, augmenter.cfg
    pad = augmenter.tokenizer.pad_token_id or 0  # hidden by the attention mask; the model's own pad id all the same
    out: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    order = sorted(range(len(windows)), key=lambda n: len(windows[n].ids))  # similar lengths pad little
    autocast = precision.autocast_dtype
    excluded = ~vocab_mask.to(device)
    for b in range(0, len(order), cfg.batch_size):
        batch = [windows[n] for n in order[b : b + cfg.batch_size]]
        width = max(len(w.ids) for w in batch) + len(prefix) + len(suffix)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for r, w in enumerate(batch):
            seq = prefix + w.ids + suffix
            ids[r, : len(seq)] = torch.tensor(seq)
            attention[r, : len(seq)] = 1
        with torch.inference_mode(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits
            rows = torch.tensor([r for r, w in enumerate(batch) for _ in w.positions], device=device)
            cols = torch.tensor([len(prefix) + p - w.start for w in batch for p in w.positions], device=device)
            scores = logits[rows, cols].float().masked_fill(excluded, -torch.inf)
            # never the word itself, in any case: (row, id) of every original and of its other-case spellings
            same = [
                (n, j)
                for n, o in enumerate(o for w in batch for o in w.originals)
                for j in [o, *augmenter.variants.get(o, [])]
            ]
            scores[[n for n, _ in same], [j for _, j in same]] = -torch.inf
            top = torch.topk(scores, min(cfg.top_k, len(excluded) - int(excluded.sum()) - 1), dim=-1)
        keys = [(w.text, p) for w in batch for p in w.positions]
        for n, key in enumerate(keys):
            out[key] = (top.values[n].cpu(), top.indices[n].cpu())
    return out


AUGMENTED_FILE = "augmented.parquet"  # the augmented rows a run trained on (beside config.yaml)
AUGMENTED_INFO = "augmented.json"  # what they were made from and the counts (written after the Parquet file)


def cached_augmentation(
    run_dir: Path,
    frame: pd.DataFrame,
    augmenter: Augmenter,
    seed: int,
    write: bool = True,
    device: torch.device | None = None,
) -> tuple[pd.DataFrame, dict]:
    """`augment_frame`'s rows and counts, kept in RUN_DIR (AUGMENTED_FILE) for the user to read and for a resumed
    run, which reuses them when they were made from the same rows (ids, texts, labels), masked-LM (its files' digest
    for a folder), settings and seed. write: False on the other ranks of a distributed run (rank 0 writes)."""
    folder = Path(augmenter.name)
    identity = fingerprint_of(model_file_digests(folder)) if folder.is_dir() else augmenter.name
    key = {
        "mlm_model": augmenter.name,
        "identity": identity,
        "settings": augmenter.cfg.model_dump(),
        "seed": seed,
        "rows": rows_digest(frame, ("id", "text", "label")),
    }
    data_file, info_file = run_dir / AUGMENTED_FILE, run_dir / AUGMENTED_INFO
    if data_file.exists() and info_file.exists():
        try:
            info = json.loads(info_file.read_text())
            if info.get("key") == key:
                rows = pd.read_parquet(data_file)
                log.info("augment: reusing %s (%d rows)", data_file, len(rows))
                return rows, {**info["facts"], "reused": True}
        except (OSError, ValueError) as exc:
            log.warning("cannot read the augmented rows in %s (%s); making them again", run_dir, exc)
    rows, facts = augment_frame(frame, augmenter, seed, progress=True, device=device)
    if write:
        info_file.unlink(missing_ok=True)  # the Parquet file is complete only once its info is written
        write_parquet_atomic(data_file, rows)
        write_json_atomic(info_file, {"key": key, "facts": facts})
    return rows, {**facts, "reused": False}
