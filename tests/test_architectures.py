"""Every main path on each architecture: BERT, DistilBERT and RoBERTa, tiny models built offline (conftest).

One trained run per architecture (`arch_run_dir`: frozen embeddings and bottom layer, LLRD, both dropouts) feeds
training, resume, evaluate, the Predictor (truncate and chunk), explanations, ONNX/INT8 export and the server.
DistilBERT has no token types and its own names (seq_classif_dropout, attention_dropout, transformer.layer);
RoBERTa has <s>/</s>, no token types and positions offset by 2 (its models hold max_length + 2 positions, so an
input longer than max_length fails as roberta-base does past 512).
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from conftest import ARCH_LAYERS, ARCH_MODEL_SETTINGS, arch_config
from sentiment_lab.analysis.explain import explain_texts, load_for_explanation, merge_wordpieces
from sentiment_lab.config import build_config
from sentiment_lab.evaluation import evaluate_model
from sentiment_lab.export import export_onnx
from sentiment_lab.modeling import architecture_names, encoder_layers, load_classifier
from sentiment_lab.predictor import Predictor
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.settings import ServerSettings
from sentiment_lab.tokenization import encode_windows
from sentiment_lab.training import train

SHORT = "A wonderful film, truly moving and great."
LONG = "The plot is dull and the acting is wooden, yet the music is lovely. " * 20  # ~300 tokens: several windows


def _frozen_and_trained(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the parameters ARCH_MODEL_SETTINGS freezes (embeddings, bottom layer) and of the layers above."""
    frozen_modules = [model.base_model.embeddings, encoder_layers(model)[0]]
    frozen = {id(p) for m in frozen_modules for p in m.parameters()}
    upper = {id(p) for layer in encoder_layers(model)[1:] for p in layer.parameters()}
    names = dict(model.named_parameters())
    return [n for n, p in names.items() if id(p) in frozen], [n for n, p in names.items() if id(p) in upper]


def test_training_freezes_decays_and_sets_each_architectures_dropouts(arch_model_dir: Path, arch_run_dir: Path):
    metrics = yaml.safe_load((arch_run_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 8 and metrics["test"]["n"] == 64
    initial, trained = load_classifier(arch_model_dir), load_classifier(arch_run_dir / "model")
    assert trained.config.model_type == arch_model_dir.name
    names = architecture_names(trained.config.model_type)
    assert getattr(trained.config, names.classifier_dropout) == ARCH_MODEL_SETTINGS["dropout"]
    assert getattr(trained.config, names.attention_dropout) == ARCH_MODEL_SETTINGS["attention_dropout"]

    before, after = initial.state_dict(), trained.state_dict()
    frozen, upper = _frozen_and_trained(trained)
    assert frozen and all(torch.equal(before[n], after[n]) for n in frozen)
    assert upper and all(not torch.equal(before[n], after[n]) for n in upper if not n.endswith("bias"))

    # LLRD as the optimizer saw it: the top layer and the head at 1e-3, the layer below at 0.8e-3, nothing frozen.
    optimizer = torch.load(arch_run_dir / "checkpoints" / "checkpoint-4" / "optimizer.pt", weights_only=True)
    per_lr: dict[float, int] = {}
    for group in optimizer["param_groups"]:
        per_lr[round(group["initial_lr"], 12)] = per_lr.get(round(group["initial_lr"], 12), 0) + len(group["params"])
    middle = encoder_layers(trained)[ARCH_LAYERS - 2]
    assert per_lr[8e-4] == len(list(middle.parameters()))
    assert sum(per_lr.values()) == sum(1 for p in trained.parameters()) - len(frozen)
    assert set(per_lr) == {1e-3, 8e-4}


def test_resume_from_a_checkpoint_gives_the_same_model(
    arch_model_dir: Path, arch_run_dir: Path, imdb_dir: Path, tiny_splits, tmp_path: Path
):
    """A run killed after checkpoint-4 and resumed ends with the same model: optimizer (LLRD groups), scheduler and
    data order come back from the checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(arch_run_dir, run)
    shutil.rmtree(run / "checkpoints" / "checkpoint-8")
    shutil.rmtree(run / "model")
    for name in ("metrics.json", "predictions.parquet", "val_predictions.parquet"):
        (run / name).unlink()
    resumed = train(build_config(arch_config(arch_model_dir, imdb_dir, resume=True)), run, splits=tiny_splits)
    assert resumed["resumed_from"] == "checkpoint-4" and resumed["global_step"] == 8
    full = pd.read_parquet(arch_run_dir / "predictions.parquet")
    again = pd.read_parquet(run / "predictions.parquet")
    np.testing.assert_allclose(again["logit_pos"], full["logit_pos"], atol=1e-5)


def test_evaluate_reproduces_the_runs_test_predictions(arch_run_dir: Path, tmp_path: Path):
    metrics = evaluate_model(arch_run_dir, out_dir=tmp_path / "eval")
    ours = pd.read_parquet(arch_run_dir / "predictions.parquet")
    again = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert again["id"].tolist() == ours["id"].tolist()
    np.testing.assert_allclose(again["prob_pos"], ours["prob_pos"], atol=1e-6)
    assert metrics["test"]["accuracy"] == pytest.approx((ours["pred"] == ours["label"]).mean())


def test_predictor_truncates_and_chunks_within_the_models_positions(arch_run_dir: Path):
    truncate = Predictor.load(arch_run_dir, precision="fp32")
    chunk = Predictor.load(arch_run_dir, precision="fp32", long_text="chunk")
    tokenizer, settings = truncate.tokenizer, truncate.settings
    windows, owners = encode_windows(tokenizer, [SHORT, LONG], settings, "chunk")
    assert owners.tolist()[0] == 0 and (owners == 1).sum() >= 4
    for ids in windows:  # every window within max_length, framed by the architecture's own special tokens
        assert len(ids) <= settings.max_length
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    t, c = truncate.logits([SHORT, LONG]), chunk.logits([SHORT, LONG])
    np.testing.assert_allclose(c[0], t[0], atol=1e-6)  # a short text is one window
    assert not np.allclose(c[1], t[1], atol=1e-7)  # the long one is the mean over its windows
    preds = chunk.predict([SHORT, LONG])
    assert [p["label"] for p in preds] == [truncate.labels[int(k)] for k in c.argmax(-1)]
    assert all(0 < p["prob_pos"] < 1 for p in preds)


def test_predictor_fp16_on_a_cpu_warns_that_it_runs_fp32(arch_run_dir: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="sentiment_lab"):
        predictor = Predictor.load(arch_run_dir, precision="fp16", device="cpu")
    assert predictor.precision == "fp32" and predictor.info()["precision"] == "fp32"
    notes = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("predicting in fp32 on cpu instead of fp16" in n for n in notes), notes


def test_explanations_use_the_architectures_special_tokens_and_are_complete(arch_run_dir: Path):
    model, tokenizer, settings = load_for_explanation(arch_run_dir)
    explanations = explain_texts(model, tokenizer, settings, [SHORT, LONG], n_steps=16)
    for e in explanations:
        assert e.tokens[0] == tokenizer.cls_token and e.tokens[-1] == tokenizer.sep_token
        assert len(e.tokens) <= settings.max_length
        assert e.cls_attention.shape == (ARCH_LAYERS, len(e.tokens))
        assert np.allclose(e.cls_attention.sum(axis=1), 1.0, atol=1e-4)
        # completeness: the attributions add up to the log-odds change from the baseline. Scored from ids, a
        # RoBERTa <pad> baseline moved its positions and left a gap larger than the attributions themselves.
        assert np.abs(e.attributions).sum() > 0
        assert e.delta <= 0.05 * abs(float(e.attributions.sum())), (e.delta, e.attributions.sum())
    words, _ = merge_wordpieces(explanations[0].tokens, explanations[0].attributions)
    assert {"wonderful", "film"} <= {w.lower().strip(",.") for w in words}


def test_onnx_and_int8_export_pass_parity_for_each_architecture(arch_run_dir: Path, imdb_dir: Path, tmp_path: Path):
    folder = tmp_path / "model"
    shutil.copytree(arch_run_dir / "model", folder)
    report = export_onnx(folder, quantize="int8", n=8, data_path=imdb_dir)
    assert report["passed"] and report["fp32"]["max_abs_logit_diff"] <= report["atol"]
    assert report["int8"]["matmuls_kept_fp32"] == ARCH_LAYERS  # each layer's FFN down-projection
    texts = [SHORT, LONG, "Great."]  # 64 tokens (the most the model's positions hold) down to one
    reference = Predictor.load(folder, precision="fp32").logits(texts)
    for batch_size in (1, 3):
        onnx = Predictor.load(folder, backend="onnx", batch_size=batch_size)
        np.testing.assert_allclose(onnx.logits(texts), reference, atol=1e-4)
    chunked = Predictor.load(folder, backend="onnx", long_text="chunk").logits(texts)
    torch_chunked = Predictor.load(folder, precision="fp32", long_text="chunk").logits(texts)
    np.testing.assert_allclose(chunked, torch_chunked, atol=1e-4)
    assert np.abs(Predictor.load(folder, backend="onnx", quantized=True).logits(texts) - reference).max() < 0.05


def test_server_predicts_and_explains_with_a_real_predictor(arch_run_dir: Path):
    predictor = Predictor.load(arch_run_dir, precision="fp32", long_text="chunk")
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        r = client.post("/v1/predict", json={"texts": [SHORT, LONG]})
        e = client.post("/v1/explain", json={"text": LONG})
    assert r.status_code == 200 and e.status_code == 200
    for got, want in zip(r.json()["predictions"], predictor.predict([SHORT, LONG]), strict=True):
        assert got["label"] == want["label"] and math.isclose(got["prob_pos"], want["prob_pos"], rel_tol=1e-6)
    body = e.json()
    tokenizer = predictor.tokenizer
    frame = {tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token}  # [UNK] is a word the model read
    assert body["truncated"] is True and body["words"] and not frame & {w["text"] for w in body["words"]}
    assert all(math.isfinite(w["score"]) for w in body["words"])
