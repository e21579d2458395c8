"""Predictor on the tiny model: input order, truncation as in training, chunk mode, review flag, bad input."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sentiment_lab.errors import ConfigError, InputError, ModelError
from sentiment_lab.metrics import softmax
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.precision import cpu_has_native_bf16
from sentiment_lab.predictor import Predictor
from sentiment_lab.runners import compute_logits
from sentiment_lab.sidecar import TextSettings, read_sidecar, update_sidecar
from sentiment_lab.tokenization import chunk_windows, encode_windows


@pytest.fixture(scope="module")
def short_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model reading real words, with a 32-token window and head_tail truncation (reviews are long for it).

    The weights are redrawn large, so that logits depend on the words of the input.
    """
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("short") / "model"
    shutil.copytree(tiny_model_dir, folder)
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    assert len(tokenizer) > 100
    model = load_classifier(folder)
    model.resize_token_embeddings(len(tokenizer))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    update_sidecar(folder, text=TextSettings(max_length=32, truncation="head_tail", head_tokens=8))
    return folder


@pytest.fixture(scope="module")
def reviews(imdb_sample: pd.DataFrame) -> list[str]:
    return imdb_sample["text"].head(24).tolist()


def _one_by_one(model_dir: Path, texts: list[str]) -> np.ndarray:
    """Reference logits: each text alone through the model (no batching, no padding)."""
    tokenizer = load_tokenizer(str(model_dir))
    model = load_classifier(model_dir)
    settings = read_sidecar(model_dir, tokenizer).text
    ids, _ = encode_windows(tokenizer, texts, settings)
    with torch.inference_mode():
        return np.concatenate([model(input_ids=torch.tensor([x])).logits.numpy() for x in ids])


def test_predict_keeps_input_order(short_model_dir: Path, reviews: list[str]) -> None:
    texts = [reviews[0][:40], *reviews[1:12], "Great.", reviews[12][:200]]  # mixed lengths: sorting reorders
    predictor = Predictor.load(short_model_dir, precision="fp32", batch_size=4)
    np.testing.assert_allclose(predictor.logits(texts), _one_by_one(short_model_dir, texts), atol=1e-5)
    preds = predictor.predict(texts)
    assert [p["prob_pos"] for p in preds] == pytest.approx(
        softmax(predictor.logits(texts).astype(np.float64))[:, 1].tolist()
    )


def test_truncation_matches_training(short_model_dir: Path, reviews: list[str]) -> None:
    tokenizer = load_tokenizer(str(short_model_dir))
    model = load_classifier(short_model_dir)
    settings = read_sidecar(short_model_dir, tokenizer).text
    assert settings.truncation == "head_tail"
    expected = compute_logits(model, tokenizer, reviews, settings, batch_size=5)
    np.testing.assert_allclose(Predictor.load(short_model_dir, precision="fp32").logits(reviews), expected, atol=1e-5)


def test_precision_auto_follows_the_hardware_and_bf16_keeps_the_labels(short_model_dir: Path, reviews: list[str]):
    auto = Predictor.load(short_model_dir)
    # On a CPU, auto is bf16 exactly where the CPU computes bf16 natively (AVX-512-bf16 or AMX).
    assert (
        auto.precision == ("bf16" if cpu_has_native_bf16() else "fp32") and auto.info()["precision"] == auto.precision
    )
    assert auto.model.dtype == (torch.bfloat16 if auto.precision == "bf16" else torch.float32)
    fp32 = Predictor.load(short_model_dir, precision="fp32").logits(reviews)
    bf16 = Predictor.load(short_model_dir, precision="bf16").logits(reviews)
    assert np.abs(bf16 - fp32).max() < 0.1  # bf16 keeps ~3 significant digits
    with pytest.raises(ConfigError, match="unknown precision"):
        Predictor.load(short_model_dir, precision="int4")


def test_compiled_predictor_matches_eager(short_model_dir: Path, reviews: list[str]) -> None:
    texts = [reviews[0][:40], *reviews[1:9], "Great."]  # several lengths and batch sizes: one dynamic graph
    eager = Predictor.load(short_model_dir, precision="fp32", batch_size=4)
    compiled = Predictor.load(short_model_dir, precision="fp32", batch_size=4, compile=True)
    assert compiled.info()["compiled"] and not eager.info()["compiled"]
    np.testing.assert_allclose(compiled.logits(texts), eager.logits(texts), atol=1e-4)
    np.testing.assert_allclose(compiled.logits(texts[:1]), eager.logits(texts[:1]), atol=1e-4)
    assert compiled.model is not None and not hasattr(compiled.model, "_orig_mod")  # export/explain get the eager one
    with pytest.raises(ConfigError, match="compile=True needs backend='torch'"):
        Predictor.load(short_model_dir, backend="onnx", compile=True)


def test_compile_failure_is_one_clear_error(short_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoCompiler(torch.nn.Module):  # what a compiled module does on a machine without a C++ compiler
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **inputs: torch.Tensor) -> None:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

    def broken_compile(model: torch.nn.Module, **kwargs: object) -> torch.nn.Module:
        return NoCompiler(model)

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(ModelError, match=r"torch.compile failed on this machine .*C\+\+ compiler.*without --compile"):
        Predictor.load(short_model_dir, compile=True)


def test_chunk_equals_truncate_on_short_texts(short_model_dir: Path) -> None:
    texts = ["A wonderful film.", "Dull and far too long, I left early.", "ok", "the plot is thin but the cast is fun"]
    plain = Predictor.load(short_model_dir, precision="fp32").logits(texts)
    chunked = Predictor.load(short_model_dir, precision="fp32", long_text="chunk").logits(texts)
    assert len({tuple(row) for row in plain.round(4)}) == len(texts)  # the model does read the words
    np.testing.assert_array_equal(plain, chunked)


def test_chunk_averages_windows_over_the_whole_review(short_model_dir: Path, reviews: list[str]) -> None:
    long_review = max(reviews, key=len)
    tokenizer = load_tokenizer(str(short_model_dir))
    settings = read_sidecar(short_model_dir, tokenizer).text
    windows, owners = encode_windows(tokenizer, [long_review, "short"], settings, "chunk", stride=6)
    assert (owners == 0).sum() > 2 and (owners == 1).sum() == 1
    model = load_classifier(short_model_dir)
    with torch.inference_mode():
        per_window = np.concatenate([model(input_ids=torch.tensor([w])).logits.numpy() for w in windows])
    chunked = Predictor.load(short_model_dir, precision="fp32", long_text="chunk", stride=6, batch_size=3).logits(
        [long_review, "short"]
    )
    np.testing.assert_allclose(chunked[0], per_window[owners == 0].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(chunked[1], per_window[owners == 1][0], atol=1e-5)
    truncated = Predictor.load(short_model_dir, precision="fp32").logits([long_review])
    assert np.abs(chunked[0] - truncated[0]).max() > 1e-3


@pytest.mark.parametrize(
    ("n", "budget", "overlap"), [(10, 10, 2), (11, 10, 2), (100, 10, 0), (517, 30, 7), (64, 30, 29)]
)
def test_chunk_windows_cover_everything_with_full_windows(n: int, budget: int, overlap: int) -> None:
    ids = list(range(n))
    windows = chunk_windows(ids, budget, overlap)
    assert sorted({i for w in windows for i in w}) == ids
    assert all(len(w) == min(n, budget) for w in windows)
    for a, b in itertools.pairwise(windows):
        assert a[-1] - b[0] + 1 >= overlap - 1  # evenly spaced starts round by at most one id


def test_review_flag_follows_temperature_and_threshold(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    texts = ["A wonderful film.", "Dull and far too long."]
    default = Predictor.load(folder)
    assert default.review_threshold == 0.70
    assert all(p["needs_review"] for p in default.predict(texts))  # an untrained model is never 70% sure
    logits = default.logits(texts)

    update_sidecar(folder, temperature=0.002, abstain_threshold=0.9)
    calibrated = Predictor.load(folder)
    assert calibrated.info()["temperature"] == 0.002 and calibrated.info()["review_threshold"] == 0.9
    probs = softmax(logits.astype(np.float64) / 0.002)
    for pred, row in zip(calibrated.predict(texts), probs, strict=True):
        assert pred["score"] == pytest.approx(row.max()) and pred["prob_pos"] == pytest.approx(row[1])
        assert pred["label"] == ("POSITIVE" if row[1] > row[0] else "NEGATIVE")
        assert pred["needs_review"] == (row.max() < 0.9)
    overridden = Predictor.load(folder, review_threshold=0.0)
    assert not any(p["needs_review"] for p in overridden.predict(texts))


def test_bad_calibration_values_are_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    sidecar = folder / "sentiment_lab.json"
    sidecar.write_text(json.dumps({"max_length": 64, "temperature": -1}))
    with pytest.raises(ModelError, match="temperature"):
        Predictor.load(folder)
    sidecar.write_text(json.dumps({"max_length": 64, "temperature": 1.0, "abstain_threshold": 3}))
    with pytest.raises(ModelError, match="abstain_threshold"):
        Predictor.load(folder)
    sidecar.write_text('{"max_length": 64,')  # cut short: one friendly error, not a JSONDecodeError traceback
    with pytest.raises(ModelError, match="not JSON.*restore it, or delete it"):
        Predictor.load(folder)


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (["fine", ""], "text 1 is empty"),
        (["   \n\t"], "text 0 is empty"),
        (["fine", None], "text 1 is a NoneType"),
        ([3], "not a string"),
        ("a bare string", "list of texts"),
    ],
)
def test_unusable_texts_raise_input_error(tiny_model_dir: Path, texts: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        Predictor.load(tiny_model_dir).predict(texts)  # type: ignore[arg-type]


def test_empty_list_gives_no_predictions(tiny_model_dir: Path) -> None:
    assert Predictor.load(tiny_model_dir).predict([]) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "tensorrt"}, ConfigError, "unknown backend"),
        ({"long_text": "summarize"}, ConfigError, "long_text"),
        ({"batch_size": 0}, ConfigError, "batch_size"),
        ({"review_threshold": 1.5}, ConfigError, "review_threshold"),
        ({"long_text": "chunk", "stride": 10_000}, ConfigError, "stride"),
        ({"quantized": True}, ConfigError, "onnx"),
        ({"backend": "onnx"}, ModelError, "sentiment-lab export"),
    ],
)
def test_bad_options_name_the_fix(tiny_model_dir: Path, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Predictor.load(tiny_model_dir, **kwargs)


def test_loads_a_run_folder_and_reports_info(tiny_run_dir: Path) -> None:
    predictor = Predictor.load(tiny_run_dir)
    info = predictor.info()
    assert Path(info["model_dir"]) == tiny_run_dir / "model"
    assert info["backend"] == "torch" and info["labels"] == ["NEGATIVE", "POSITIVE"]
    assert info["max_length"] == 64 and info["truncation"] == "head"
    assert {"temperature", "review_threshold"} <= set(info)
    # The run's own test predictions were made by the same model and truncation. They came from training's
    # evaluation (bf16 autocast where the CPU has it) and the predictor may cast its weights to bf16: the two
    # round differently, by up to a few 1e-4 in probability.
    saved = pd.read_parquet(tiny_run_dir / "predictions.parquet").head(16)
    probs = [p["prob_pos"] for p in predictor.predict(saved["text"].tolist())]
    np.testing.assert_allclose(probs, saved["prob_pos"], atol=1e-3)
    stored = json.loads((tiny_run_dir / "model" / "sentiment_lab.json").read_text())
    assert stored["format_version"] == 1 and stored["text"]["max_length"] == 64
    assert stored["labels"] == ["NEGATIVE", "POSITIVE"]
