"""Explanations: integrated gradients (completeness), [CLS] attention shape, word merging, the explain command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import build_tiny_model_dir
from sentiment_lab.analysis import explain as ex
from sentiment_lab.errors import InputError

WORDS = "a an the film movie story cast script great wonderful moving good fine not never boring dull worst ever made "
WORDS += "truly and at all bad awful"


@pytest.fixture(scope="module")
def explain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT classifier whose WordPiece vocabulary holds the test words (so no [UNK] inputs)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", "<", ">", "/", *WORDS.split()]
    return build_tiny_model_dir(tmp_path_factory.mktemp("explain") / "model", [], vocab=vocab)


@pytest.fixture(scope="module")
def tiny(explain_model_dir: Path) -> tuple:
    return ex.load_for_explanation(explain_model_dir)


def test_attributions_and_attention_shapes(tiny: tuple) -> None:
    model, tokenizer, settings = tiny
    texts = ["a wonderful film, not boring at all", "the worst movie ever made"]
    exps = ex.explain_texts(model, tokenizer, settings, texts, n_steps=8, labels=[1, 0])
    for e, text in zip(exps, texts, strict=True):
        n = len(e.tokens)
        assert e.tokens[0] == "[CLS]" and e.tokens[-1] == "[SEP]"
        assert e.attributions.shape == (n,)
        assert e.cls_attention.shape == (model.config.num_hidden_layers, n)
        # each layer's [CLS] row is a softmax over the tokens, so it sums to one
        assert np.allclose(e.cls_attention.sum(axis=1), 1.0, atol=1e-4)
        assert "[UNK]" not in e.tokens
        assert 0.5 <= e.confidence <= 1 and e.text == text
        assert np.abs(e.attributions).sum() > 0
    assert exps[0].label == 1
    assert exps[0].tokens[1:4] == ["a", "wonderful", "film"]


def test_integrated_gradients_completeness(tiny: tuple) -> None:
    """Attributions sum to logit(input) - logit(baseline) for the predicted class (gap shrinks with steps)."""
    model, tokenizer, settings = tiny
    text = "a truly great and moving story"
    e = ex.explain_texts(model, tokenizer, settings, [text], n_steps=64)[0]
    assert e.delta < 1e-2 * max(1.0, float(np.abs(e.attributions).sum()))
    assert e.ig_steps == 64
    # few steps: refinement doubles them until 95% of the log-odds change is explained (or four times the steps)
    rough = ex.explain_texts(model, tokenizer, settings, [text], n_steps=2)[0]
    assert rough.ig_steps in (2, 4, 8)
    assert rough.delta <= 0.05 * abs(rough.attributions.sum() + rough.delta) + 1e-3 or rough.ig_steps == 8


def test_attention_implementation_is_restored(tiny: tuple) -> None:
    model, tokenizer, settings = tiny
    before = model.config._attn_implementation
    ex.explain_texts(model, tokenizer, settings, ["fine"], n_steps=2)
    assert model.config._attn_implementation == before


def test_truncation_matches_training_settings(tiny: tuple) -> None:
    model, tokenizer, settings = tiny
    short = settings.model_copy(update={"max_length": 10})
    e = ex.explain_texts(model, tokenizer, short, ["word " * 50], n_steps=2)[0]
    assert len(e.tokens) == 10


def test_bad_inputs_are_clear_errors(tiny: tuple) -> None:
    model, tokenizer, settings = tiny
    with pytest.raises(InputError, match="empty"):
        ex.explain_texts(model, tokenizer, settings, ["  "])
    with pytest.raises(InputError, match="at least 2 steps"):
        ex.explain_texts(model, tokenizer, settings, ["ok"], n_steps=1)


def test_merge_wordpieces_and_bpe() -> None:
    words, scores = ex.merge_wordpieces(["[CLS]", "un", "##settling", "film", "[SEP]"], np.array([0, 1, 2, 3, 0.0]))
    assert words == ["[CLS]", "unsettling", "film", "[SEP]"] and scores.tolist() == [0, 3, 3, 0]
    words, scores = ex.merge_wordpieces(["<s>", "Un", "settling", "Ġfilm", "</s>"], np.array([0, 1, 2, 3, 0.0]))
    assert words == ["<s>", "Unsettling", "film", "</s>"] and scores.tolist() == [0, 3, 3, 0]


def test_highlighted_html_escapes_and_colours() -> None:
    e = ex.Explanation(
        text="good <b>",
        tokens=["[CLS]", "good", "<b>", "[SEP]"],
        attributions=np.array([0.0, 0.8, -0.4, 0.0]),
        cls_attention=np.zeros((2, 4)),
        pred=1,
        prob_pos=0.9,
        label_names=["NEGATIVE", "POSITIVE"],
        delta=0.0,
    )
    html = ex.highlighted_html(e)
    assert "<b>" not in html and "&lt;b&gt;" in html and "[CLS]" not in html
    assert "rgba(22,163,74,1.00)" in html and "rgba(220,38,38,0.50)" in html  # green for, red against, by strength
    assert e.top_tokens() == {"for": [("good", 0.8)], "against": [("<b>", -0.4)]}


def test_explain_command_writes_html_json_png(explain_model_dir: Path, tmp_path: Path) -> None:
    from sentiment_lab.cli import main

    out = tmp_path / "exp"
    args = ["explain", str(explain_model_dir), "a wonderful film", "dull and boring", "--out", str(out)]
    rc = main([*args, "--ig-steps", "4"])
    assert rc == 0
    page = (out / "explanation.html").read_text()
    assert page.count('class="exp"') == 2 and "data:image/png;base64," in page
    for i in (1, 2):
        assert (out / f"attention_{i}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "explanation.json").is_file()


def test_explain_command_refuses_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sentiment_lab.cli import main

    assert main(["explain", str(tmp_path / "nope"), "text"]) == 2
    assert "no such model" in capsys.readouterr().err


def test_baseline_is_the_most_neutral_filler(tiny: tuple) -> None:
    import torch

    model, tokenizer, settings = tiny
    text = "a great and moving film"
    e = ex.explain_texts(model, tokenizer, settings, [text], n_steps=4)[0]
    ids = tokenizer(text)["input_ids"]
    probs = {}
    for tok in ("[PAD]", "[UNK]", "[MASK]"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        row = torch.tensor([[t if t in tokenizer.all_special_ids else tid for t in ids]])
        with torch.no_grad():
            probs[tok] = float(torch.softmax(model(input_ids=row).logits[0], -1)[1])
    assert e.baseline_token == min(probs, key=lambda k: abs(probs[k] - 0.5))
    assert e.baseline_prob_pos == pytest.approx(probs[e.baseline_token], abs=1e-5)


def test_explain_command_takes_a_target_class(
    explain_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from sentiment_lab.cli import main

    out = tmp_path / "exp"
    assert main(["explain", str(explain_model_dir), "a wonderful film", "--out", str(out), "--target", "NEGATIVE"]) == 0
    saved = json.loads((out / "explanation.json").read_text())
    assert saved["explanations"][0]["target_name"].upper() == "NEGATIVE"
    assert main(["explain", str(explain_model_dir), "a wonderful film", "--out", str(out), "--target", "3"]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "class 3 is not one of this model's 2 classes" in err


def test_a_chunk_mode_model_is_explained_on_every_window_of_the_whole_text(explain_model_dir, tmp_path) -> None:
    """The attributions are those of the prediction the Predictor makes (the windows' logits averaged), laid on the
    whole text: every token shown once, the shared ones carrying both windows' parts, still summing to the change."""
    import shutil

    from sentiment_lab.predictor import Predictor
    from sentiment_lab.sidecar import read_sidecar, write_sidecar

    folder = tmp_path / "chunk-model"
    shutil.copytree(explain_model_dir, folder)
    sidecar = read_sidecar(folder)
    text_settings = sidecar.text.model_copy(update={"max_length": 12, "long_text": "chunk"})  # 10 text tokens a window
    write_sidecar(folder, sidecar.model_copy(update={"text": text_settings}))
    model, tokenizer, chunk = ex.load_for_explanation(folder)
    text = " ".join((WORDS.split() * 2)[:24])  # 24 words of one WordPiece each
    shown, windows, positions = ex.explanation_inputs(tokenizer, [text], chunk)[0]
    assert len(windows) == 3 and all(len(w) == 12 for w in windows)  # overlap 2: starts 0, 7, 14
    assert [tokenizer.convert_ids_to_tokens(shown)[p] for p in positions[1][1:11]] == text.split()[7:17]
    e = ex.explain_texts(model, tokenizer, chunk, [text], n_steps=64)[0]
    assert e.tokens == ["[CLS]", *text.split(), "[SEP]"] and e.meta == {"windows": 3}
    assert e.attributions.shape == (26,) and e.cls_attention.shape == (model.config.num_hidden_layers, 26)
    assert np.allclose(e.cls_attention.sum(axis=1), 1.0, atol=1e-4)  # each window weighs 1/3 of a softmax row
    assert e.delta < 1e-2 * max(1.0, float(np.abs(e.attributions).sum()))  # completeness over all windows
    assert np.allclose(e.probs, Predictor.load(folder, precision="fp32").probabilities([text])[0], atol=1e-5)
    truncated = ex.explain_texts(model, tokenizer, chunk.model_copy(update={"long_text": "truncate"}), [text], 2)[0]
    assert len(truncated.tokens) == 12 and "windows" not in truncated.meta
