"""Ensembles: the averaged calibrated probabilities, the refusals, members changed after the fact, and every stage
that accepts an ensemble folder (Predictor, evaluate, serve, report, compare, the CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from sentiment_lab.cli import main
from sentiment_lab.compare import compare_runs
from sentiment_lab.ensemble import make_ensemble
from sentiment_lab.errors import ConfigError, DataError, ModelError, RunDirError
from sentiment_lab.evaluation import evaluate_model
from sentiment_lab.io import write_json_atomic
from sentiment_lab.metrics import classification_metrics, softmax
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.precision import default_device
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.predictor import Predictor
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.ray_predict import _check_model
from sentiment_lab.report import build_report
from sentiment_lab.rundir import ENSEMBLE_FILE, locate_model, read_run_config
from sentiment_lab.runners import logits_of, predictions_frame, score_split
from sentiment_lab.server.app import create_app
from sentiment_lab.server.explainer import model_explainer
from sentiment_lab.server.settings import ServerSettings
from sentiment_lab.sidecar import read_sidecar, update_sidecar

TEXTS = ["A wonderful, moving film with a great cast.", "Dull and far too long; I left early.", "It was fine."]


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "report.html", "figures"))
    return dst


def _rescore(run: Path, splits) -> None:
    """Write the run's val/test predictions and metrics from its (changed) model, as training does."""
    model_dir = run / "model"
    tokenizer, model = load_tokenizer(str(model_dir)), load_classifier(model_dir)
    settings = read_sidecar(model_dir, tokenizer).text
    precision = resolve_precision(read_run_config(run).training.precision, default_device(), purpose="evaluating")
    model.to(precision.device)
    metrics = json.loads((run / "metrics.json").read_text())
    for split, name in (("val", "val_predictions.parquet"), ("test", "predictions.parquet")):
        preds, _, _ = score_split(model, tokenizer, getattr(splits, split), settings, precision, progress=False)
        preds.to_parquet(run / name, index=False)
        metrics[split] = classification_metrics(preds["label"], preds["pred"])
    write_json_atomic(run / "metrics.json", metrics)


def _perturb(run: Path, seed: int, scale: float = 0.2) -> None:
    """Redraw part of the run's weights, so that its predictions differ from the original's."""
    model = load_classifier(run / "model")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.add_(torch.randn_like(p) * scale)
    model.save_pretrained(run / "model")


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path, tiny_splits) -> list[Path]:
    """Three finished runs on the same test items: the tiny run (a) and two perturbed copies (b with temperature 2,
    c with temperature 0.5), each re-scored. Shared: tests must not modify them (copy first)."""
    root = tmp_path_factory.mktemp("ensemble-members")
    a = _copy_run(tiny_run_dir, root / "a")
    out = [a]
    for name, seed, temperature in (("b", 1, 2.0), ("c", 2, 0.5)):
        run = _copy_run(tiny_run_dir, root / name)
        _perturb(run, seed)
        _rescore(run, tiny_splits)
        update_sidecar(run / "model", temperature=temperature)
        out.append(run)
    return out


def _calibrated(run: Path, file: str = "predictions.parquet") -> np.ndarray:
    t = read_sidecar(run / "model").temperature
    return softmax(logits_of(pd.read_parquet(run / file)).astype(np.float64) / t)


def test_ensemble_averages_the_members_calibrated_probabilities(members: list[Path], tmp_path: Path) -> None:
    a, b = members[:2]
    out = tmp_path / "ens"
    metrics = make_ensemble([a, b], out)
    preds = pd.read_parquet(out / "predictions.parquet")
    expected = (_calibrated(a) + _calibrated(b)) / 2
    assert not np.allclose(_calibrated(a), _calibrated(b), atol=1e-3)  # the members really differ
    np.testing.assert_allclose(preds["prob_pos"], expected[:, 1], rtol=1e-6)
    np.testing.assert_allclose(softmax(logits_of(preds)), expected, rtol=1e-6)  # logits: log of the probabilities
    assert preds["pred"].tolist() == expected.argmax(axis=1).tolist()
    assert preds["id"].tolist() == pd.read_parquet(a / "predictions.parquet")["id"].tolist()
    assert "text" in preds
    val = pd.read_parquet(out / "val_predictions.parquet")
    expected_val = (_calibrated(a, "val_predictions.parquet") + _calibrated(b, "val_predictions.parquet")) / 2
    np.testing.assert_allclose(val["prob_pos"], expected_val[:, 1], rtol=1e-6)

    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == pytest.approx(float((preds["pred"] == preds["label"]).mean()))
    assert [m["name"] for m in saved["members"]] == ["a", "b"]
    assert saved["members"][1]["test"] == json.loads((b / "metrics.json").read_text())["test"]
    vb = saved["vs_best_member"]
    assert vb["best_member"] in ("a", "b") and "mcnemar" in vb and vb["verdict"]
    assert metrics["out_dir"] == str(out)

    manifest = json.loads((out / ENSEMBLE_FILE).read_text())
    assert [m["temperature"] for m in manifest["members"]] == [1.0, 2.0]
    assert [m["weight"] for m in manifest["members"]] == [0.5, 0.5]
    assert manifest["members"][0]["path"] == str(a.resolve())
    assert {"model.safetensors", "sentiment_lab.json", "config.json"} <= set(manifest["members"][0]["files"])
    assert manifest["labels"] == ["NEGATIVE", "POSITIVE"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["name"] == "ens" and config["data"] == yaml.safe_load((a / "config.yaml").read_text())["data"]
    assert not (out / "model").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_weighted_ensemble_of_three(members: list[Path], tmp_path: Path) -> None:
    make_ensemble(members, tmp_path / "ens", weights=[1, 1, 2])
    preds = pd.read_parquet(tmp_path / "ens" / "predictions.parquet")
    expected = 0.25 * _calibrated(members[0]) + 0.25 * _calibrated(members[1]) + 0.5 * _calibrated(members[2])
    np.testing.assert_allclose(preds["prob_pos"], expected[:, 1], rtol=1e-6)
    weights = [m["weight"] for m in json.loads((tmp_path / "ens" / ENSEMBLE_FILE).read_text())["members"]]
    assert weights == [0.25, 0.25, 0.5]


def test_refusals_name_the_member_and_the_difference(members: list[Path], tmp_path: Path) -> None:
    a, b = members[:2]
    with pytest.raises(ConfigError, match="at least two run folders"):
        make_ensemble([a], tmp_path / "x")
    with pytest.raises(ConfigError, match="given more than once"):
        make_ensemble([a, b, a.parent / "." / "a"], tmp_path / "x")
    with pytest.raises(ConfigError, match="2 weights for 3 members"):
        make_ensemble(members, tmp_path / "x", weights=[1, 2])
    with pytest.raises(ConfigError, match="positive"):
        make_ensemble([a, b], tmp_path / "x", weights=[1, 0])

    other = _copy_run(b, tmp_path / "other-labels")
    update_sidecar(other / "model", labels=["BAD", "GOOD"])
    with pytest.raises(ModelError, match=r"member other-labels has classes \['BAD', 'GOOD'\], a has"):
        make_ensemble([a, other], tmp_path / "x")

    shifted = _copy_run(b, tmp_path / "other-ids")
    preds = pd.read_parquet(shifted / "predictions.parquet")
    preds.loc[3, "id"] = "not-a-test-id"
    preds.to_parquet(shifted / "predictions.parquet", index=False)
    with pytest.raises(RunDirError, match="member other-ids: 1 of its 64 test ids differ from a's.*row 3"):
        make_ensemble([a, shifted], tmp_path / "x")
    preds.iloc[:60].to_parquet(shifted / "predictions.parquet", index=False)
    with pytest.raises(RunDirError, match="member other-ids has 60 test items, a has 64"):
        make_ensemble([a, shifted], tmp_path / "x")

    baseline = _copy_run(b, tmp_path / "no-model")
    shutil.rmtree(baseline / "model")
    with pytest.raises(ModelError, match="member no-model has no model/"):
        make_ensemble([a, baseline], tmp_path / "x")
    no_logits = _copy_run(b, tmp_path / "no-logits")
    preds = pd.read_parquet(no_logits / "predictions.parquet")
    preds.drop(columns=["logit_neg", "logit_pos"]).to_parquet(no_logits / "predictions.parquet", index=False)
    with pytest.raises(ModelError, match="no logit columns"):
        make_ensemble([a, no_logits], tmp_path / "x")
    make_ensemble([a, b], tmp_path / "inner")
    with pytest.raises(ModelError, match="member inner is itself an ensemble; list its members instead"):
        make_ensemble([a, tmp_path / "inner"], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written by a refused ensemble


def test_out_is_never_lost(members: list[Path], tmp_path: Path) -> None:
    a, b = members[:2]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists.*--overwrite"):
        make_ensemble([a, b], taken)
    with pytest.raises(RunDirError, match="not an ensemble folder"):
        make_ensemble([a, b], taken, overwrite=True)
    assert (taken / "notes.txt").read_text() == "mine"
    with pytest.raises(RunDirError, match="would destroy a member"):
        make_ensemble([a, b], a, overwrite=True)
    with pytest.raises(RunDirError, match="would destroy a member"):
        make_ensemble([a, b], a.parent, overwrite=True)
    assert (a / "model").is_dir()

    ens = tmp_path / "ens"
    make_ensemble([a, b], ens)
    make_ensemble([a, b], ens, weights=[3, 1], overwrite=True)  # an earlier ensemble is replaced
    assert json.loads((ens / ENSEMBLE_FILE).read_text())["members"][0]["weight"] == 0.75


def test_a_member_deleted_or_changed_is_refused_at_load(members: list[Path], tmp_path: Path) -> None:
    a = members[0]
    b = _copy_run(members[1], tmp_path / "b")
    ens = tmp_path / "ens"
    make_ensemble([a, b], ens)
    Predictor.load(ens, precision="fp32")  # unchanged: loads

    update_sidecar(b / "model", temperature=3.0)  # e.g. `report` recalibrated the member
    with pytest.raises(ModelError, match=rf"member {b.resolve()} changed.*model/sentiment_lab.json changed"):
        Predictor.load(ens)
    update_sidecar(b / "model", temperature=2.0)  # back as it was: accepted again
    Predictor.load(ens, precision="fp32")

    _perturb(b, seed=7)  # retrained weights
    with pytest.raises(ModelError, match=r"model/model.safetensors changed.*re-run `sentiment-lab ensemble`"):
        Predictor.load(ens)
    with pytest.raises(ModelError, match=rf"member {b.resolve()} changed"):
        evaluate_model(ens, out_dir=tmp_path / "eval")
    assert not (tmp_path / "eval").exists()

    shutil.rmtree(b)
    with pytest.raises(ModelError, match=rf"member {b.resolve()} is missing"):
        Predictor.load(ens)


def test_members_moved_together_with_the_ensemble_still_load(members: list[Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    a, b = _copy_run(members[0], runs / "a"), _copy_run(members[1], runs / "b")
    make_ensemble([a, b], runs / "ens")
    moved = tmp_path / "moved"
    runs.rename(moved)
    predictor = Predictor.load(moved / "ens", precision="fp32")
    assert [m.model_dir.parent.resolve() for m in predictor.members] == [
        (moved / "a").resolve(),
        (moved / "b").resolve(),
    ]


def test_predictor_averages_the_members_predictors(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    make_ensemble(members, ens, weights=[2, 1, 1])
    predictor = Predictor.load(ens, precision="fp32")
    singles = [Predictor.load(m, precision="fp32") for m in members]
    assert [m.temperature for m in predictor.members] == [1.0, 2.0, 0.5]
    expected = 0.5 * singles[0].probabilities(TEXTS) + 0.25 * singles[1].probabilities(TEXTS)
    expected += 0.25 * singles[2].probabilities(TEXTS)
    preds = predictor.predict(TEXTS)
    got = np.array([[p["probs"]["NEGATIVE"], p["probs"]["POSITIVE"]] for p in preds])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert [p["prob_pos"] for p in preds] == pytest.approx(expected[:, 1].tolist())
    assert [p["label"] for p in preds] == [predictor.labels[i] for i in expected.argmax(axis=1)]
    assert [p["needs_review"] for p in preds] == [bool(s < 0.70) for s in expected.max(axis=1)]
    np.testing.assert_allclose(softmax(predictor.logits(TEXTS)), expected, rtol=1e-9)
    assert predictor.predict([]) == []
    info = predictor.info()
    assert len(info["members"]) == 3 and [m["weight"] for m in info["members"]] == [0.5, 0.25, 0.25]
    assert info["max_length"] == 64 and info["labels"] == ["NEGATIVE", "POSITIVE"]


def test_serve_an_ensemble_without_explanations(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    make_ensemble(members[:2], ens)
    predictor = Predictor.load(ens, precision="fp32")
    assert model_explainer(predictor) is None  # integrated gradients need one model
    app = create_app(predictor.predict, ServerSettings(), predictor.info(), model_explainer(predictor))
    with TestClient(app) as client:
        r = client.post("/v1/predict", json={"texts": TEXTS})
        assert r.status_code == 200
        assert [p["prob_pos"] for p in r.json()["predictions"]] == pytest.approx(
            [p["prob_pos"] for p in predictor.predict(TEXTS)]
        )
        r = client.post("/v1/explain", json={"text": TEXTS[0]})
        assert r.status_code == 404 and "ensemble" in r.json()["detail"]
        assert len(client.get("/v1/model").json()["model"]["members"]) == 2


def test_single_model_commands_refuse_an_ensemble_naming_its_members(members: list[Path], tmp_path: Path) -> None:
    make_ensemble(members[:2], tmp_path / "ens")
    with pytest.raises(ModelError, match=rf"is an ensemble.*give one of its members \({members[0].resolve()}"):
        locate_model(tmp_path / "ens")  # export, explain, bench, push


def test_evaluate_an_ensemble_scores_every_member(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    made = make_ensemble(members[:2], ens)
    metrics = evaluate_model(ens, out_dir=tmp_path / "eval")
    again = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    saved = pd.read_parquet(ens / "predictions.parquet")
    assert again["id"].tolist() == saved["id"].tolist()
    # the members' predictions came from the same scoring path (runners.score_split) at the same precision
    np.testing.assert_allclose(again["prob_pos"], saved["prob_pos"], rtol=1e-6)
    assert metrics["test"]["accuracy"] == pytest.approx(made["test"]["accuracy"])
    assert [m["name"] for m in metrics["members"]] == ["a", "b"]
    for m, run in zip(metrics["members"], members, strict=False):
        trained = json.loads((run / "metrics.json").read_text())["test"]
        assert m["test"]["accuracy"] == pytest.approx(trained["accuracy"])
    assert metrics["vs_best_member"]["verdict"]
    assert metrics["model"] == str(ens) and metrics["kind"] == "ensemble"


def test_report_of_an_ensemble(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    make_ensemble(members[:2], ens)
    analysis = build_report(ens, n_explanations=2, n_boot=100, label_noise=False)
    page = (ens / "report.html").read_text()
    assert "An <b>ensemble</b> of 2 runs" in page and "The ensemble and its members" in page
    assert "McNemar" in page and analysis["metrics"]["vs_best_member"]["verdict"] in page
    assert "an ensemble has no training of its own" in page
    assert "integrated gradients follow the gradients of one" in page
    assert "Temperature scaling" in page and "reported and not stored" in page
    assert analysis["confidence"]["calibration"]["stored_in"] is None
    assert not analysis["explanations"]["available"]
    assert (ens / "analysis.json").is_file()
    assert read_sidecar(members[1] / "model").temperature == 2.0  # the members are untouched
    Predictor.load(ens, precision="fp32")  # and still match their fingerprints


def test_compare_runs_with_their_ensemble(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    make_ensemble(members[:2], ens)
    res = compare_runs([members[0], members[1], ens], tmp_path / "cmp", n_boot=100)
    assert [r["run"] for r in res["runs"]] == ["a", "b", "ens"]
    assert res["runs"][2]["model"] == "ensemble of 2 runs: a, b"
    keys = {d["key"]: d["values"] for d in res["config_differences"]}
    assert keys["ensemble.members"] == [None, None, ["a", "b"]]
    assert len(res["pairs"]) == 3
    assert (tmp_path / "cmp" / "comparison.html").is_file()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ensemble_end_to_end(members: list[Path], tmp_path: Path, capsys) -> None:
    a, b = members[:2]
    out = tmp_path / "ens"
    code, stdout, _ = _cli(capsys, "ensemble", str(a), str(b), "--out", str(out), "--weights", "1", "3")
    assert code == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert f"ensemble  -       -            {saved['test']['accuracy']:.4f}" in stdout
    assert "ensemble vs best member" in stdout and saved["vs_best_member"]["verdict"] in stdout
    assert "0.2500" in stdout and "0.7500" in stdout  # the weights

    code, stdout, _ = _cli(capsys, "predict", str(out), TEXTS[0], "--json", "--precision", "fp32")
    assert code == 0 and json.loads(stdout)[0]["label"] in ("NEGATIVE", "POSITIVE")

    code, stdout, _ = _cli(capsys, "evaluate", str(out), "--out", str(tmp_path / "eval"))
    assert code == 0 and "ensemble vs best member" in stdout

    before = (out / "metrics.json").read_bytes()
    for argv, needle in (
        (["ensemble", str(a), "--out", str(tmp_path / "one")], "at least two run folders"),
        (["ensemble", str(a), str(b), "--out", str(out)], "already exists"),
        (["ensemble", str(a), str(b), "--out", str(tmp_path / "w"), "--weights", "1"], "1 weights for 2 members"),
        (["ensemble", str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "w")], "no such run folder"),
        (["export", str(out), "--onnx"], "is an ensemble"),
    ):
        code, _, err = _cli(capsys, *argv)
        assert code == 2, err
        lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err
    assert (out / "metrics.json").read_bytes() == before
    assert not (tmp_path / "one").exists() and not (tmp_path / "w").exists()


def test_ray_predict_checks_every_member_on_the_driver(members: list[Path], tmp_path: Path) -> None:
    ens = tmp_path / "ens"
    make_ensemble(members[:2], ens)
    assert _check_model(ens, PredictorOptions()) == ens.resolve()
    with pytest.raises(DataError, match=rf"no ONNX model at {members[0]}.*export it first"):
        _check_model(ens, PredictorOptions(backend="onnx"))


def _fake_three_class_member(src: Path, dst: Path, seed: int, temperature: float) -> Path:
    """A run folder with three classes as far as an ensemble reads it: sidecar labels and K-class predictions."""
    run = _copy_run(src, dst)
    rng = np.random.default_rng(seed)
    for name in ("predictions.parquet", "val_predictions.parquet"):
        frame = pd.read_parquet(run / name)
        frame["label"] = rng.integers(0, 3, len(frame))
        preds = predictions_frame(frame, rng.normal(size=(len(frame), 3)).astype(np.float32))
        preds.to_parquet(run / name, index=False)
    metrics = json.loads((run / "metrics.json").read_text())
    names = ["negative", "neutral", "positive"]
    metrics["test"] = classification_metrics(preds["label"], preds["pred"], names)
    write_json_atomic(run / "metrics.json", metrics)
    update_sidecar(run / "model", labels=[n.upper() for n in names], temperature=temperature)
    return run


def test_three_class_ensemble_keeps_the_k_class_schema(members: list[Path], tmp_path: Path) -> None:
    a = _fake_three_class_member(members[0], tmp_path / "a", 0, 1.0)
    b = _fake_three_class_member(members[0], tmp_path / "b", 1, 1.5)
    b_preds = pd.read_parquet(b / "predictions.parquet")
    b_preds["label"] = pd.read_parquet(a / "predictions.parquet")["label"]  # the same items: the same labels
    b_preds.to_parquet(b / "predictions.parquet", index=False)
    b_val = pd.read_parquet(b / "val_predictions.parquet")
    b_val["label"] = pd.read_parquet(a / "val_predictions.parquet")["label"]
    b_val.to_parquet(b / "val_predictions.parquet", index=False)
    metrics = make_ensemble([a, b], tmp_path / "ens")
    preds = pd.read_parquet(tmp_path / "ens" / "predictions.parquet")
    expected = (_calibrated(a) + _calibrated(b)) / 2
    np.testing.assert_allclose(preds[["prob_0", "prob_1", "prob_2"]], expected, rtol=1e-6)
    np.testing.assert_allclose(preds["confidence"], expected.max(axis=1), rtol=1e-6)
    assert {"logit_0", "logit_1", "logit_2"} <= set(preds.columns) and "prob_pos" not in preds
    assert metrics["labels"] == ["negative", "neutral", "positive"]
    assert list(metrics["test"]["per_class"]) == ["negative", "neutral", "positive"]
    analysis = build_report(tmp_path / "ens", n_explanations=0, n_boot=50, label_noise=False)
    assert (
        analysis["metrics"]["multiclass"]
        and "The ensemble and its members" in (tmp_path / "ens" / "report.html").read_text()
    )
