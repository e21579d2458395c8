"""Long reviews in training (`tokenization.long_text: chunk`): windows with the text's label, pooled per review when
scored, the mode stored in the sidecar and used by the Predictor by default (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import tiny_config
from sentiment_lab.config import build_config
from sentiment_lab.errors import ConfigError
from sentiment_lab.metrics import trainer_compute_metrics
from sentiment_lab.modeling import load_tokenizer
from sentiment_lab.predictor import Predictor
from sentiment_lab.runners import batched_logits
from sentiment_lab.sidecar import TextSettings, read_sidecar
from sentiment_lab.tokenization import chunk_windows, encode_windows, tokenize_frame


def test_max_windows_keeps_the_first_and_last_windows_evenly_spaced():
    ids = list(range(1000))
    every = chunk_windows(ids, 100, 25)
    capped = chunk_windows(ids, 100, 25, max_windows=3)
    assert len(every) == 13 and len(capped) == 3
    assert capped[0] == every[0] and capped[-1] == every[-1] and capped[1] in every
    assert chunk_windows(ids, 100, 25, max_windows=50) == every  # a cap above the count changes nothing
    assert chunk_windows(ids[:80], 100, 25, max_windows=1) == [ids[:80]]


def test_chunk_frames_give_one_labelled_row_per_window(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    long_review, short = " ".join(["good film"] * 40), "bad"
    frame = pd.DataFrame({"text": [long_review, short], "label": [1, 0]})
    chunk = TextSettings(max_length=16, long_text="chunk")
    ds, owners = tokenize_frame(frame, tokenizer, chunk)
    n_long = int((owners == 0).sum())
    assert n_long > 2 and len(ds) == n_long + 1 and owners[-1] == 1
    assert ds["labels"] == [1] * n_long + [0]
    assert all(len(ids) <= 16 for ids in ds["input_ids"])
    capped, capped_owners = tokenize_frame(frame, tokenizer, chunk, max_windows=2)
    assert len(capped) == 3 and capped_owners.tolist() == [0, 0, 1]
    truncated, plain_owners = tokenize_frame(frame, tokenizer, TextSettings(max_length=16))
    assert len(truncated) == 2 and plain_owners.tolist() == [0, 1]


def test_tokenizing_in_pieces_gives_the_same_rows_as_at_once(tiny_model_dir, monkeypatch):
    import sentiment_lab.tokenization as tokenization

    tokenizer = load_tokenizer(str(tiny_model_dir))
    frame = pd.DataFrame({"text": [" ".join(["good film"] * (i % 30 + 1)) for i in range(50)], "label": [0, 1] * 25})
    settings = TextSettings(max_length=16, long_text="chunk")
    texts = frame["text"].tolist()
    whole, whole_owners = tokenize_frame(frame, tokenizer, settings)
    scoring = [  # what test scoring and predict tokenize (bare_token_ids under each)
        tokenization.encode_windows(tokenizer, texts, settings),
        tokenization.encode_texts(tokenizer, texts, TextSettings(max_length=16)),
        tokenization.count_tokens(tokenizer, texts),
    ]
    monkeypatch.setattr(tokenization, "TOKENIZE_ROWS", 7)  # 8 pieces, the last one short
    windows, owners = tokenization.encode_windows(tokenizer, texts, settings)
    assert windows == scoring[0][0] and owners.tolist() == scoring[0][1].tolist() and len(windows) > 50
    assert tokenization.encode_texts(tokenizer, texts, TextSettings(max_length=16)) == scoring[1]
    assert tokenization.count_tokens(tokenizer, texts).tolist() == scoring[2].tolist()
    pieces, piece_owners = tokenize_frame(frame, tokenizer, settings)
    assert pieces["input_ids"] == whole["input_ids"] and pieces["labels"] == whole["labels"]
    assert piece_owners.tolist() == whole_owners.tolist() and piece_owners.max() == 49
    empty, empty_owners = tokenize_frame(frame.iloc[:0], tokenizer, settings)
    assert len(empty) == 0 and len(empty_owners) == 0 and "labels" in empty.column_names


def test_validation_metrics_pool_the_windows_of_each_review():
    # review 0 (label 1): windows say 1, 0, 0 on their own, but the mean logit says 1; review 1 (label 0): one window
    logits = np.array([[0.0, 5.0], [0.3, 0.0], [0.3, 0.0], [2.0, 0.0]])
    labels = np.array([1, 1, 1, 0])
    eval_pred = SimpleNamespace(predictions=logits, label_ids=labels)
    assert trainer_compute_metrics(eval_pred)["accuracy"] == pytest.approx(0.5)  # per window: 2 of 4
    assert trainer_compute_metrics(eval_pred, owners=np.array([0, 0, 0, 1]))["accuracy"] == 1.0
    with pytest.raises(ValueError, match="owners"):
        trainer_compute_metrics(eval_pred, owners=np.array([0, 1]))


@pytest.fixture(scope="module")
def chunk_run(tmp_path_factory, tiny_model_dir, imdb_dir) -> Path:
    from sentiment_lab.training import train

    raw = tiny_config(tiny_model_dir, imdb_dir, precision="fp32")
    raw["tokenization"] = {"max_length": 32, "long_text": "chunk", "max_windows": 3}
    run = tmp_path_factory.mktemp("chunk") / "run"
    train(build_config(raw), run)
    return run


def test_a_chunk_run_trains_on_windows_and_scores_whole_reviews(chunk_run):
    resolved = yaml.safe_load((chunk_run / "config.yaml").read_text())
    data = resolved["resolved"]["data"]
    assert data["train"] < data["train_windows"] <= 3 * data["train"]  # IMDb reviews are longer than 30 tokens
    assert read_sidecar(chunk_run / "model").text.long_text == "chunk"

    predictor = Predictor.load(chunk_run, precision="fp32")
    assert predictor.long_text == "chunk" and predictor.info()["long_text"] == "chunk"
    preds = pd.read_parquet(chunk_run / "predictions.parquet")
    texts = preds["text"].tolist()
    logits = predictor.logits(texts)
    np.testing.assert_allclose(logits, preds[["logit_neg", "logit_pos"]].to_numpy(), rtol=1e-4, atol=1e-6)

    # each review's logits are the mean over all its windows (no cap when scoring), not the truncated text's
    sequences, owners = encode_windows(predictor.tokenizer, texts[:4], predictor.settings)
    assert len(sequences) > 3 * 4
    windows = batched_logits(sequences, predictor.tokenizer, predictor.runner, 8)
    expected = np.stack([windows[owners == i].mean(axis=0) for i in range(4)])
    np.testing.assert_allclose(logits[:4], expected, rtol=1e-5, atol=1e-7)
    truncated = Predictor.load(chunk_run, precision="fp32", long_text="truncate")
    assert truncated.long_text == "truncate"
    assert np.abs(truncated.logits(texts[:4]) - expected).max() > 1e-5


def test_validation_accuracy_during_training_is_the_pooled_one(chunk_run):
    metrics = json.loads((chunk_run / "metrics.json").read_text())
    history = pd.read_csv(chunk_run / "history.csv")
    during = history["val_accuracy"].dropna().iloc[-1]  # the Trainer's evaluation after the only epoch
    assert during == pytest.approx(metrics["val"]["accuracy"])  # score_split on the reviews, after training


def test_max_windows_without_chunk_mode_is_refused(tiny_model_dir, imdb_dir):
    raw = tiny_config(tiny_model_dir, imdb_dir)
    raw["tokenization"] = {"max_windows": 4}
    with pytest.raises(ConfigError, match="long_text: chunk"):
        build_config(raw)
    raw["tokenization"] = {"long_text": "windows"}
    with pytest.raises(ConfigError, match="long_text"):
        build_config(raw)


def test_the_long_text_benchmark_compares_the_three_ways_on_the_same_reviews(tmp_path, tiny_model_dir, imdb_dir):
    import subprocess
    import sys

    raw = tiny_config(tiny_model_dir, imdb_dir, precision="fp32")
    raw["evaluation"] = {"baselines": False}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "result.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "long_text_training.py"
    cmd = [sys.executable, str(script), "--config", str(config), "--max-length", "32", "--max-windows", "2"]
    cmd += ["--seeds", "1", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["truncate", "chunk", "truncate, chunk at test only"]
    truncate, chunk, at_test = rows.values()
    assert truncate["train_sequences"] == truncate["train_texts"] == 64
    assert 64 < chunk["train_sequences"] <= 128  # at most 2 windows per review
    assert at_test["run"] == truncate["run"] and at_test["test_chunk_scoring_s"] > 0
    for row in rows.values():
        assert row["test_n"] == 64 and row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    chunk_preds = pd.read_parquet(Path(chunk["run"]) / "predictions.parquet")
    assert chunk["accuracy"] == pytest.approx((chunk_preds["pred"] == chunk_preds["label"]).mean())
    assert {"b", "c", "p_value"} <= set(chunk["mcnemar_vs_truncate"]) and "mcnemar_vs_truncate" not in truncate


def test_scoring_pads_batches_to_a_multiple_so_few_shapes_reach_the_model(tiny_model_dir):
    """Bounding the shapes bounds oneDNN's primitive cache (precision.PAD_MULTIPLE); the logits must not change."""
    from transformers import AutoModelForSequenceClassification

    from sentiment_lab.runners import torch_runner

    tokenizer = load_tokenizer(str(tiny_model_dir))
    sequences = [list(range(5, 5 + n)) for n in (3, 17, 40, 9, 33, 64, 21)]
    seen: list[tuple[int, int]] = []
    runner = torch_runner(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir))

    def recording(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        seen.append(ids.shape)
        return runner(ids, mask)

    padded = batched_logits(sequences, tokenizer, recording, 3, multiple=16)
    assert [shape[1] for shape in seen] == [32, 48, 64]  # longest of 3, 9, 17 | 21, 33, 40 | 64, rounded up
    seen.clear()
    plain = batched_logits(sequences, tokenizer, recording, 3)
    assert [shape[1] for shape in seen] == [17, 40, 64]
    np.testing.assert_allclose(padded, plain, rtol=1e-4, atol=1e-5)  # padding is masked out
