"""Shared fixtures: tiny BERT, DistilBERT and RoBERTa classifiers built in code (2 layers, hidden 32, a vocabulary
learnt from IMDb so words are not all unknown), the IMDb location, small finished run folders."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# `evaluate` turns oneDNN's primitive cache off for its process (precision.bound_onednn_cache); in one pytest process
# that would slow every bf16 training test after it 4x, so the tests keep oneDNN's default (its documented 1,024)
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "1024")
IMDB_DIR = Path(os.environ.get("IMDB_DIR", REPO.parent / "shared" / "data" / "imdb")).resolve()

torch.set_num_threads(min(2, torch.get_num_threads()))


def _tiny_vocab(texts: list[str], size: int = 2000) -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    counts = Counter(w for t in texts for w in t.lower().replace("<br />", " ").split())
    words = [w.strip(".,!?;:()\"'") for w, _ in counts.most_common(size * 2)]
    vocab = list(dict.fromkeys(w for w in words if w and w.isalpha()))[:size]
    return specials + vocab + list("abcdefghijklmnopqrstuvwxyz") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]


LABELS = {"num_labels": 2, "id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
ARCHITECTURES = ("bert", "distilbert", "roberta")
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in roberta-base


def tiny_classifier_config(arch: str, vocab_size: int, layers: int = 2, max_positions: int = 512) -> Any:
    """The config of a hidden-32, 2-head classifier of `arch` (bert, distilbert, roberta) with NEGATIVE/POSITIVE.

    max_positions: the longest input in tokens; RoBERTa adds its offset of 2 (positions start after padding_idx 1).
    """
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    if arch == "bert":
        return BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_positions,
            **LABELS,
        )
    if arch == "distilbert":
        return DistilBertConfig(
            vocab_size=vocab_size,
            dim=32,
            n_layers=layers,
            n_heads=2,
            hidden_dim=64,
            max_position_embeddings=max_positions,
            **LABELS,
        )
    if arch == "roberta":
        return RobertaConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_positions + 2,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            **LABELS,
        )
    raise ValueError(f"unknown architecture {arch!r}; use one of {ARCHITECTURES}")


def _wordpiece_tokenizer(arch: str, folder: Path, texts: list[str], vocab: list[str] | None) -> Any:
    from transformers import BertTokenizer, DistilBertTokenizer

    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(dict.fromkeys(vocab or _tiny_vocab(texts))) + "\n")
    cls = DistilBertTokenizer if arch == "distilbert" else BertTokenizer
    # transformers 5 reads the file from `vocab=`; `vocab_file=` is silently ignored (a 5-token vocabulary).
    return cls(vocab=str(vocab_file), do_lower_case=True, model_max_length=512)


def _bpe_tokenizer(folder: Path, texts: list[str], max_length: int) -> Any:
    """A byte-level BPE (RoBERTa's kind) learnt from `texts`, saved as a RobertaTokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=2000, min_frequency=2, special_tokens=ROBERTA_SPECIALS, show_progress=False
    )
    bpe.save_model(str(folder))  # vocab.json, merges.txt
    return RobertaTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=max_length
    )


def build_tiny_model_dir(
    folder: Path,
    texts: list[str],
    seed: int = 0,
    vocab: list[str] | None = None,
    arch: str = "bert",
    max_length: int = 512,
    layers: int = 2,
) -> Path:
    """Save an untrained hidden-32 classifier of `arch` (2 layers unless told) and its tokenizer as an HF folder.

    bert/distilbert get a WordPiece tokenizer; vocab: its exact vocabulary (default: the most frequent words of
    `texts`, letters and ##letters). roberta gets a byte-level BPE learnt from `texts` and positions for
    `max_length` tokens (+2, RoBERTa's offset), so a longer input fails as it would on roberta-base past 512.
    """
    from transformers import AutoModelForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    if arch == "roberta":
        tokenizer = _bpe_tokenizer(folder, texts, max_length)
    else:
        tokenizer = _wordpiece_tokenizer(arch, folder, texts, vocab)
    torch.manual_seed(seed)
    config = tiny_classifier_config(arch, len(tokenizer), layers=layers, max_positions=max_length)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
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
def tiny_splits(imdb_dir: Path) -> Any:
    """The data of `tiny_config`, prepared once for runs that pass it on (`train(..., splits=)`, as a sweep does)."""
    from sentiment_lab.config import build_config
    from sentiment_lab.data import prepare_data

    return prepare_data(build_config(tiny_config(Path("unused"), imdb_dir)).data)  # only the data section


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


# Everything an architecture changes in the recipe (issue 15). Three layers, so that with the bottom one frozen two
# remain for LLRD to tell apart.
ARCH_LAYERS = 3
ARCH_MODEL_SETTINGS = {
    "freeze_layers": 1,
    "freeze_embeddings": True,
    "llrd": 0.8,
    "dropout": 0.2,
    "attention_dropout": 0.1,
}


@pytest.fixture(scope="session", params=ARCHITECTURES)
def arch_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, imdb_sample) -> Path:
    """An untrained tiny 3-layer classifier of each architecture (bert, distilbert, roberta) for 64-token inputs."""
    arch = request.param
    folder = tmp_path_factory.mktemp(f"tiny-{arch}") / arch
    return build_tiny_model_dir(folder, imdb_sample["text"].tolist(), arch=arch, max_length=64, layers=ARCH_LAYERS)


def arch_config(model_dir: Path, data_dir: Path, **training: object) -> dict:
    """The raw config of an architecture run: `tiny_config` with ARCH_MODEL_SETTINGS, 2 epochs, checkpoints kept."""
    training = {"epochs": 2, "keep_checkpoints": True, "save_total_limit": None, **training}
    raw = tiny_config(model_dir, data_dir, **training)
    raw["model"].update(ARCH_MODEL_SETTINGS)
    raw["evaluation"] = {"baselines": False}  # TF-IDF says nothing about the architecture
    return raw


@pytest.fixture(scope="session")
def arch_run_dir(tmp_path_factory: pytest.TempPathFactory, arch_model_dir: Path, imdb_dir: Path, tiny_splits) -> Path:
    """A finished run of each architecture (`arch_config`: 8 steps, checkpoints 4 and 8 kept).

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    run = tmp_path_factory.mktemp("arch-runs") / f"{arch_model_dir.name}-run"
    train(build_config(arch_config(arch_model_dir, imdb_dir)), run, splits=tiny_splits)
    return run


def load_benchmark(name: str) -> Any:
    """A script of benchmarks/ imported as a module (scripts are not a package; their pure functions are tested)."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))  # as when the script runs: it may import its sibling scripts
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look their module up here
    spec.loader.exec_module(module)
    return module
