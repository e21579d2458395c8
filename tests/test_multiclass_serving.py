"""Serving and analysis of K-class models (issue 16): Predictor, predict --input, the API, explanations, ONNX
parity, calibration, the report's N x N confusion heatmap and compare, on tiny models and hand-made run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy.stats import binomtest
from sklearn.metrics import f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import build_tiny_model_dir
from sentiment_lab.analysis import calibration as cal
from sentiment_lab.analysis.error_tags import confident_errors, tag_reviews, top2_margin
from sentiment_lab.analysis.explain import explain_texts, load_for_explanation
from sentiment_lab.batch_predict import predict_file
from sentiment_lab.cli import main
from sentiment_lab.compare import compare_runs
from sentiment_lab.errors import InputError, SentimentLabError
from sentiment_lab.export import BUILTIN_REVIEWS, export_onnx
from sentiment_lab.metrics import classification_metrics, softmax
from sentiment_lab.predictor import Predictor
from sentiment_lab.report import build_report
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.settings import ServerSettings
from sentiment_lab.sidecar import ModelSidecar, TextSettings, write_sidecar
from sentiment_lab.stats import bootstrap_ci, mcnemar_from_counts

THREE = ["negative", "neutral", "positive"]
FIVE = ["very negative", "negative", "neutral", "positive", "very positive"]
TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "It was fine, I suppose.", "Meh"]


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny binary BERT folder (NEGATIVE/POSITIVE) with a sidecar."""
    folder = build_tiny_model_dir(tmp_path_factory.mktemp("binary") / "model", BUILTIN_REVIEWS * 3)
    write_sidecar(folder, ModelSidecar(text=TextSettings(max_length=64)))
    return folder


def k_class_dir(binary: Path, target: Path, names: list[str]) -> Path:
    """The tiny model re-headed for len(names) classes, saved with its tokenizer and a sidecar naming them."""
    upper = [n.upper() for n in names]
    model = AutoModelForSequenceClassification.from_pretrained(
        binary,
        num_labels=len(names),
        id2label=dict(enumerate(upper)),
        label2id={n: i for i, n in enumerate(upper)},
        ignore_mismatched_sizes=True,
    )
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(binary).save_pretrained(target)
    write_sidecar(target, ModelSidecar(text=TextSettings(max_length=64), labels=names))
    return target


@pytest.fixture(scope="module")
def three_dir(binary_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return k_class_dir(binary_dir, tmp_path_factory.mktemp("three") / "model", THREE)


@pytest.mark.parametrize("names", [THREE, FIVE], ids=["K=3", "K=5"])
def test_predictor_gives_every_class_probability(binary_dir: Path, tmp_path: Path, names: list[str]) -> None:
    predictor = Predictor.load(k_class_dir(binary_dir, tmp_path / "model", names))
    upper = [n.upper() for n in names]
    assert predictor.labels == upper and predictor.positive_index is None
    preds = predictor.predict(TEXTS)
    for p in preds:
        assert set(p) == {"label", "score", "probs", "needs_review"}  # no prob_pos beyond two classes
        assert list(p["probs"]) == upper
        assert sum(p["probs"].values()) == pytest.approx(1.0, abs=1e-6)
        assert p["label"] == max(p["probs"], key=p["probs"].get)
        assert p["score"] == pytest.approx(max(p["probs"].values()))
        assert p["needs_review"] == (p["score"] < predictor.review_threshold)
    assert predictor.info()["labels"] == upper


def test_binary_predictions_keep_prob_pos_and_add_probs(binary_dir: Path) -> None:
    pred = Predictor.load(binary_dir).predict(TEXTS[:1])[0]
    assert list(pred) == ["label", "score", "prob_pos", "needs_review", "probs"]
    assert pred["probs"]["POSITIVE"] == pytest.approx(pred["prob_pos"])
    assert pred["score"] == pytest.approx(max(pred["prob_pos"], 1 - pred["prob_pos"]))


def test_predict_input_writes_a_column_per_class(
    three_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "text": [TEXTS[0], "", TEXTS[1]]}).to_csv(source, index=False)
    summary = predict_file(Predictor.load(three_dir), source, tmp_path / "out.csv", progress=False)
    out = pd.read_csv(tmp_path / "out.csv")
    assert out.columns.tolist() == [
        "row",
        "id",
        "label",
        "score",
        "needs_review",
        *(f"prob_{n.upper()}" for n in THREE),
    ]
    assert summary["predicted"] == 2 and out["row"].tolist() == [0, 2]
    probs = out[[f"prob_{n.upper()}" for n in THREE]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out["score"], probs.max(axis=1))
    # the CLI table: label, score, needs_review and the top classes
    assert main(["predict", str(three_dir), TEXTS[0]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["label", "score", "needs_review", "top", "classes"]
    assert lines[2].split()[0] in {n.upper() for n in THREE} and lines[2].count("0.") >= 3


def test_api_predicts_and_explains_any_class(three_dir: Path) -> None:
    predictor = Predictor.load(three_dir, precision="fp32")
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        pred = client.post("/v1/predict", json={"texts": TEXTS[:2]}).json()["predictions"]
        default = client.post("/v1/explain", json={"text": TEXTS[0]})
        by_name = client.post("/v1/explain", json={"text": TEXTS[0], "target": "neutral"})
        by_id = client.post("/v1/explain", json={"text": TEXTS[0], "target": 2})
        bad = client.post("/v1/explain", json={"text": TEXTS[0], "target": "mixed"})
        bad_id = client.post("/v1/explain", json={"text": TEXTS[0], "target": 3})
        info = client.get("/v1/model").json()
    assert pred[0]["prob_pos"] is None and list(pred[0]["probs"]) == ["NEGATIVE", "NEUTRAL", "POSITIVE"]
    assert sum(pred[0]["probs"].values()) == pytest.approx(1.0, abs=1e-6)
    assert default.status_code == 200 and default.json()["target"] == pred[0]["label"] == default.json()["label"]
    assert by_name.json()["target"] == "NEUTRAL" and by_id.json()["target"] == "POSITIVE"
    assert len(by_name.json()["words"]) == len(default.json()["words"]) > 0
    for r in (bad, bad_id):
        assert r.status_code == 422
        assert "0 negative, 1 neutral, 2 positive" in r.json()["detail"].lower()
    assert info["model"]["labels"] == ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def test_binary_model_asked_for_class_3_names_its_classes(binary_dir: Path) -> None:
    model, tokenizer, settings = load_for_explanation(binary_dir)
    with pytest.raises(InputError, match=r"class 3 is not one of this model's 2 classes \(0 NEGATIVE, 1 POSITIVE\)"):
        explain_texts(model, tokenizer, settings, TEXTS[:1], n_steps=4, target=3)
    toward_negative = explain_texts(model, tokenizer, settings, TEXTS[:1], n_steps=4, target="negative")[0]
    assert toward_negative.target_class == 0 and toward_negative.prob_pos is not None


def test_explanations_of_three_classes_are_complete(three_dir: Path) -> None:
    model, tokenizer, settings = load_for_explanation(three_dir)
    for target in (None, "neutral"):
        e = explain_texts(model, tokenizer, settings, TEXTS[:1], n_steps=8, target=target)[0]
        assert e.prob_pos is None and e.probs.sum() == pytest.approx(1.0, abs=1e-5)
        # attributions sum to the change of the target class's log-odds (completeness), within IG's tolerance
        assert e.delta <= max(0.05 * abs(float(e.attributions.sum())), 1e-3) + 1e-3
        assert e.to_dict()["target_name"] == ("NEUTRAL" if target else e.label_names[e.pred])


def test_onnx_parity_of_a_three_class_model(three_dir: Path, tmp_path: Path) -> None:
    report = export_onnx(three_dir, n=4)
    assert report["passed"] and report["fp32"]["label_agreement"] == 1.0
    assert report["fp32"]["max_abs_logit_diff"] <= 1e-3
    onnx = Predictor.load(three_dir, backend="onnx").predict(TEXTS)
    torch_preds = Predictor.load(three_dir, precision="fp32").predict(TEXTS)
    assert [p["label"] for p in onnx] == [p["label"] for p in torch_preds]


# Hand-made run folders --------------------------------------------------------------------------------------------


def _frame(labels: np.ndarray, logits: np.ndarray, offset: int = 0) -> pd.DataFrame:
    probs = softmax(logits)
    frame = pd.DataFrame(
        {
            "id": [f"r{offset + i}" for i in range(len(labels))],
            "text": [f"{TEXTS[i % len(TEXTS)]} review {i}" for i in range(len(labels))],
            "label": labels,
            "pred": logits.argmax(axis=1),
            "confidence": probs.max(axis=1),
        }
    )
    for k in range(logits.shape[1]):
        frame[f"prob_{k}"] = probs[:, k]
    for k in range(logits.shape[1]):
        frame[f"logit_{k}"] = logits[:, k]
    return frame


def overconfident_logits(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z) (so z is calibrated) and the logits 4 * z: 4x too sharp, calibrated at T = 4."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, (n, k))
    labels = np.array([rng.choice(k, p=p) for p in softmax(z)])
    return labels, 4 * z


def make_run(path: Path, names: list[str], seed: int = 0, n: int = 600) -> Path:
    """A finished K-class run folder in the issue-16 format: predictions, validation predictions, metrics.json."""
    path.mkdir(parents=True)
    labels, logits = overconfident_logits(n, len(names), seed)
    val_labels, val_logits = overconfident_logits(n, len(names), seed + 100)
    test = _frame(labels, logits)
    test.to_parquet(path / "predictions.parquet")
    _frame(val_labels, val_logits, offset=n).to_parquet(path / "val_predictions.parquet")
    metrics = {"test": classification_metrics(labels, test["pred"], names, ordinal=True), "model": "hand-made"}
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_calibration_of_three_class_logits(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", THREE)
    res = cal.calibrate_run(run, target_accuracy=0.9, store=False)
    assert 3.0 < res["temperature"] < 5.3  # the logits were made 4x too sharp
    assert res["bins_low"] == pytest.approx(1 / 3) and res["num_classes"] == 3
    for split in ("val", "test"):
        assert res[split]["ece_after"] < res[split]["ece_before"]
        assert res[split]["nll_after"] < res[split]["nll_before"]
    test = pd.read_parquet(run / "predictions.parquet")
    conf, _, _ = cal.scaled_confidence_and_correct(cal.logits_of(test), test["label"], res["temperature"])
    assert conf.min() >= 1 / 3 - 1e-9 and (res["abstain_threshold"] is None or 1 / 3 <= res["abstain_threshold"] <= 1)
    assert res["abstention_test"]["n_review"] == (
        None if res["abstain_threshold"] is None else int((conf < res["abstain_threshold"]).sum())
    )
    assert cal.confidence_buckets(3)[0] == 0.3 and cal.confidence_buckets(2) == cal.CONFIDENCE_BUCKETS


def test_report_of_a_three_class_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", THREE)
    analysis = build_report(run, n_explanations=0, label_noise=False, n_boot=200)
    m = analysis["metrics"]
    assert m["multiclass"] and m["class_names"] == THREE and m["rates"] is None
    assert set(m["ci"]) == {"accuracy", "f1_macro"}
    assert len(m["test"]["confusion_matrix"]) == 3 and "mae" in m["test"] and "f1_weighted" in m["test"]
    assert (run / m["figure"]).is_file() and (run / "figures" / "reliability.png").is_file()
    assert analysis["confidence"]["buckets"][0]["bucket"] == "30-40%"
    assert analysis["errors"]["kinds"] == ["all"] and analysis["errors"]["all"][0]["label_name"] in THREE
    page = (run / "report.html").read_text()
    for text in ("F1 macro", "F1 weighted", "MAE (classes)", "neutral", "Misclassified reviews", "3 classes"):
        assert text in page


def test_compare_three_class_runs_and_refuse_other_label_sets(tmp_path: Path) -> None:
    a, b = make_run(tmp_path / "a", THREE, seed=0), make_run(tmp_path / "b", THREE, seed=0)
    res = compare_runs([a, b], tmp_path / "cmp", n_boot=200)
    assert res["f1_kind"] == "macro F1" and res["pairs"][0]["mcnemar"]["p_value"] == 1.0
    other = make_run(tmp_path / "c", ["bad", "okay", "good"], seed=0)
    with pytest.raises(SentimentLabError, match="classes negative, neutral, positive.*classes bad, okay, good"):
        compare_runs([a, other], tmp_path / "cmp2")


def test_page_shows_a_bar_per_class(three_dir: Path, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip("Chromium not found (apt-get install -y chromium)")
    from test_server_uvicorn import uvicorn_thread  # a live server for the browser, as test_web_page does

    predictor = Predictor.load(three_dir, precision="fp32")
    expected = predictor.predict([TEXTS[0]])[0]
    app = create_app(predictor.predict, ServerSettings(max_wait_ms=0), predictor.info(), model_explainer(predictor))
    with sync_api.sync_playwright() as pw, uvicorn_thread(app) as (url, _):
        browser = pw.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 800})
        page.goto(url + "/")
        sync_api.expect(page.locator("#explain-toggle")).to_be_visible()
        page.fill("#review", TEXTS[0])
        page.click("#predict")
        sync_api.expect(page.locator("#label")).to_have_text(expected["label"])
        sync_api.expect(page.locator("#highlights-section")).to_be_visible()
        names = page.locator("#class-probs .class-name").all_inner_texts()
        values = page.locator("#class-probs .class-value").all_inner_texts()
        single_bar = page.locator("#result > .bar").is_visible()
        target = page.locator("#target-name").inner_text()
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        browser.close()
    order = sorted(expected["probs"], key=lambda n: -expected["probs"][n])
    assert names == order and not single_bar
    assert values == [f"{round(expected['probs'][n] * 1000) / 10}%".replace(".0%", "%") for n in order]
    assert target == expected["label"]


def test_error_tags_and_statistics_for_k_classes() -> None:
    probs = np.array([[0.5, 0.4, 0.1], [0.8, 0.1, 0.1], [0.3, 0.35, 0.35]])
    np.testing.assert_allclose(top2_margin(probs), [0.1, 0.7, 0.0], atol=1e-12)
    tags = tag_reviews(["fine", "fine", "fine"], confidence=probs.max(axis=1), margin=top2_margin(probs))
    assert tags["low_margin"].tolist() == [True, False, True]  # the gap, not the 60% of two classes
    frame = pd.DataFrame({"label": [0, 2, 1], "pred": [1, 2, 0], "confidence": [0.9, 0.8, 0.6], "text": ["a"] * 3})
    assert confident_errors(frame, "all")["confidence"].tolist() == [0.9, 0.6]
    # macro F1 as scikit-learn computes it, with a CI around it
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, 3, 300))
    ci = bootstrap_ci(y, p, "f1_macro", n_boot=300)
    assert ci["estimate"] == pytest.approx(f1_score(y, p, average="macro"))
    assert ci["low"] < ci["estimate"] < ci["high"]
    # McNemar (statsmodels) equals the exact binomial test on the discordant pairs
    assert mcnemar_from_counts(9, 3)["p_value"] == pytest.approx(binomtest(3, 12, 0.5).pvalue, rel=1e-12)
