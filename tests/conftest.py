"""Shared fixtures: a tiny BERT built in code (2 layers, hidden 32), IMDb location, a small finished run folder."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
IMDB_DIR = Path(os.environ.get("IMDB_DIR", REPO.parent / "shared" / "data" / "imdb")).resolve()

torch.set_num_threads(min(2, torch.get_num_threads()))


def _tiny_vocab(texts: list[str], size: int = 2000) -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    counts = Counter(w for t in texts for w in t.lower().replace("<br />", " ").split())
    words = [w.strip(".,!?;:()\"'") for w, _ in counts.most_common(size * 2)]
    vocab = list(dict.fromkeys(w for w in words if w and w.isalpha()))[:size]
    return specials + vocab + list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


def build_tiny_model_dir(folder: Path, texts: list[str], seed: int = 0, vocab: list[str] | None = None) -> Path:
    """Save an untrained 2-layer, hidden-32 BERT classifier and a WordPiece tokenizer as an HF folder.

    vocab: the exact WordPiece vocabulary (default: the most frequent words of `texts`, letters and ##letters).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab or _tiny_vocab(texts))) + "\n")
    # transformers 5 reads the file from `vocab=`; `vocab_file=` is silently ignored (a 5-token vocabulary).
    tokenizer = BertTokenizer(vocab=str(vocab_file), do_lower_case=True, model_max_length=512)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def imdb_dir() -> Path:
    """The offline IMDb copy (train.parquet, test.parquet)."""
    if not (IMDB_DIR / "train.parquet").is_file():
        pytest.skip(f"IMDb copy not found at {IMDB_DIR} (set IMDB_DIR)")
    return IMDB_DIR


@pytest.fixture(scope="session")
def imdb_sample(imdb_dir: Path) -> pd.DataFrame:
    """400 shuffled IMDb train reviews (both classes)."""
    df = pd.read_parquet(imdb_dir / "train.parquet")
    return df.sample(n=400, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, imdb_sample: pd.DataFrame) -> Path:
    """An untrained tiny BERT classifier folder (safetensors + tokenizer)."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model", imdb_sample["text"].tolist())


def tiny_config(model_dir: Path, data_dir: Path, **training: object) -> dict:
    """A raw config dict that trains the tiny model for a few steps on a small IMDb subset."""
    return {
        "name": "tiny",
        "data": {"path": str(data_dir), "max_train": 64, "max_eval": 32, "max_test": 64},
        "tokenization": {"max_length": 64},
        "model": {"name": str(model_dir)},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": 16,
            "eval_batch_size": 32,
            "epochs": 1,
            "logging_steps": 1,
            "eval_strategy": "epoch",
            "seed": 0,
            **training,
        },
    }


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, imdb_dir: Path) -> Path:
    """A finished run folder: the tiny model trained 2 epochs on 64 reviews, evaluated on 64 test reviews.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    run = tmp_path_factory.mktemp("runs") / "tiny-run"
    train(build_config(tiny_config(tiny_model_dir, imdb_dir, epochs=2)), run)
    return run
