"""`sentiment-lab distill`: layer-drop students, vocabulary pruning, the loss, the teacher-logit cache, refusals, and
tiny end-to-end runs from a run and from an ensemble (tiny models: seconds each)."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import build_tiny_model_dir, tiny_config
from sentiment_lab.config import build_config
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.distill import (
    TEACHER_LOGITS_FILE,
    TEACHER_LOGITS_INFO,
    UNLABELED,
    cached_teacher_logits,
    check_same_classes,
    distill,
    distillation_loss,
    layer_drop,
    load_teacher,
    prune_vocabulary,
    read_unlabeled,
    resolve_layers,
    self_training_rows,
    spread_layers,
)
from sentiment_lab.ensemble import make_ensemble
from sentiment_lab.errors import ConfigError
from sentiment_lab.modeling import encoder_layers, load_classifier, load_tokenizer
from sentiment_lab.predictor import Predictor
from sentiment_lab.training import train


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def four_layer_dir(request, tmp_path_factory, imdb_sample):
    folder = tmp_path_factory.mktemp(f"teacher-{request.param}") / request.param
    return build_tiny_model_dir(folder, imdb_sample["text"].tolist(), arch=request.param, layers=4, max_length=64)


def test_spread_and_explicit_layers():
    assert spread_layers(6, 3) == [0, 2, 5]
    assert spread_layers(6, 1) == [5]
    assert spread_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert spread_layers(12, 4) == [0, 4, 7, 11]
    assert resolve_layers(None, 6) == [0, 2, 5]  # the default: 3
    assert resolve_layers([3, 1], 4) == [1, 3]
    with pytest.raises(ConfigError, match="has only 4 layers; keep 1 to 4"):
        resolve_layers(5, 4)
    with pytest.raises(ConfigError, match=r"names layer 7, .* its 6 layers are 0 to 5"):
        resolve_layers([0, 7], 6)


def test_layer_drop_copies_the_kept_layers(four_layer_dir):
    teacher = load_classifier(four_layer_dir)
    student = layer_drop(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and len(encoder_layers(student)) == 2
    for new, old in enumerate([1, 3]):
        kept, source = encoder_layers(student)[new].state_dict(), encoder_layers(teacher)[old].state_dict()
        assert kept.keys() == source.keys()
        assert all(torch.equal(kept[k], source[k]) for k in kept)
    outside = {k: v for k, v in teacher.state_dict().items() if ".layer." not in k}
    assert outside and all(torch.equal(student.state_dict()[k], v) for k, v in outside.items())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    n_layer = sum(p.numel() for p in encoder_layers(teacher)[0].parameters())
    assert sum(p.numel() for p in student.parameters()) == n_teacher - 2 * n_layer


def test_pruned_vocabulary_tokenizes_the_training_texts_alike(four_layer_dir, imdb_sample, tmp_path):
    texts = imdb_sample["text"].tolist()[:200]
    model, tokenizer = load_classifier(four_layer_dir), load_tokenizer(str(four_layer_dir))
    rows_before = model.get_input_embeddings().weight.detach().clone()
    model, pruned, kept = prune_vocabulary(model, tokenizer, texts, tmp_path / "tok")
    assert len(pruned) == len(kept) < len(tokenizer)
    new_id = {int(old): new for new, old in enumerate(kept)}
    before = tokenizer(texts)["input_ids"]  # with the special tokens
    after = pruned(texts)["input_ids"]
    assert [[new_id[i] for i in ids] for ids in before] == after
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == len(kept) == model.config.vocab_size
    assert torch.equal(rows, rows_before[torch.as_tensor(kept)])
    assert pruned.convert_ids_to_tokens(after[0][:3]) == tokenizer.convert_ids_to_tokens(before[0][:3])


def test_prune_vocab_refuses_a_bpe_tokenizer(tmp_path, imdb_sample):
    folder = build_tiny_model_dir(tmp_path / "roberta", imdb_sample["text"].tolist()[:100], arch="roberta")
    with pytest.raises(ConfigError, match=r"supports WordPiece tokenizers .*RobertaTokenizer \(BPE\)"):
        prune_vocabulary(load_classifier(folder), load_tokenizer(str(folder)), ["a text"], tmp_path / "tok")


def test_loss_is_the_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 1.5]])
    teacher = torch.tensor([[1.0, 0.0], [-2.0, 2.0], [0.0, 3.0]])
    labels = torch.tensor([0, UNLABELED, 1])  # the middle row is unlabelled: the soft loss only
    alpha, t = 0.3, 2.0
    loss = distillation_loss(alpha, t)(logits, labels, teacher, None)

    def softmax(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    z, y = logits.numpy().astype(np.float64), teacher.numpy().astype(np.float64)
    ce = -np.mean([np.log(softmax(z[0])[0]), np.log(softmax(z[2])[1])])
    p_t, p_s = softmax(y / t), softmax(z / t)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s))) / 3
    assert loss.item() == pytest.approx(alpha * ce + (1 - alpha) * t * t * kl, rel=1e-5)
    # validation (no teacher logits): the cross-entropy alone, class-weighted when weights are given
    weight = torch.tensor([1.0, 3.0])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]], weight=weight)
    assert distillation_loss(alpha, t)(logits, labels, None, weight).item() == pytest.approx(expected.item())
    only_unlabelled = distillation_loss(alpha, t)(logits[1:2], labels[1:2], teacher[1:2], None)
    assert torch.isfinite(only_unlabelled) and only_unlabelled.item() > 0


def _splits(val: list[str], test: list[str]) -> DataSplits:
    def frame(texts):
        return pd.DataFrame({"id": range(len(texts)), "text": texts, "label": [0, 1] * (len(texts) // 2)})

    return DataSplits(train=frame(["a train review", "another one"]), val=frame(val), test=frame(test))


def test_unlabelled_texts_in_the_evaluation_sets_are_dropped_and_counted(tmp_path, caplog):
    splits = _splits(["seen in validation", "v2"], ["seen in test", "also in test"])
    texts = ["fresh one", "seen in test", "", "fresh two", "seen in validation", "fresh one", "also in test", "x"]
    pd.DataFrame({"review": texts}).to_parquet(tmp_path / "unsup.parquet")
    raw = {
        "data": {"path": str(tmp_path)},
        "distill": {"unlabeled": "unsup.parquet", "unlabeled_text_column": "review"},
    }
    with caplog.at_level(logging.INFO, logger="sentiment_lab"):
        frame, facts = read_unlabeled(build_config(raw), splits)
    assert facts | {"file": None} == {
        "file": None,
        "rows": 8,
        "empty": 1,
        "repeated": 1,
        "in_evaluation_sets": 3,
        "used": 3,
    }
    assert frame["text"].tolist() == ["fresh one", "fresh two", "x"] and (frame["label"] == UNLABELED).all()
    assert "dropped 3 unlabelled texts that occur in the evaluation sets" in caplog.text
    raw["distill"]["max_unlabeled"] = 2
    assert len(read_unlabeled(build_config(raw), splits)[0]) == 2


@pytest.mark.parametrize(
    ("distill_section", "message"),
    [
        ({"student": "minilm-l6", "layers": 2}, "is a model of its own; remove one of them"),
        ({"max_unlabeled": 10}, "max_unlabeled apply to the unlabeled texts"),
        ({"unlabeled": "u.parquet", "alpha": 1.0}, "alpha 1.0 switches off"),
        ({"unlabeled": "u.parquet", "pseudo_labels": True, "alpha": 0.0}, "alpha 0 switches off"),
        ({"pseudo_labels": True}, "pseudo_labels apply to the unlabeled texts"),
        ({"unlabeled": "u.parquet", "min_confidence": 1.0}, "distill.min_confidence"),
        ({"layers": [1, 1]}, "repeats an index"),
        ({"layers": 0}, "distill.layers"),
        ({"temperature": 0}, "distill.temperature"),
        ({"prune": True}, "unknown key 'distill.prune'"),
    ],
)
def test_config_contradictions_are_refused(distill_section, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"distill": distill_section})


def test_train_refuses_a_distill_config(tmp_path):
    with pytest.raises(ConfigError, match="sentiment-lab distill TEACHER"):
        train(build_config({"distill": {}}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_teacher_classes_must_be_the_datas(tiny_run_dir):
    teacher = load_teacher(tiny_run_dir)
    splits = _splits(["v", "w"], ["t", "u"])
    splits.label_names = ["bad", "good"]
    with pytest.raises(ConfigError, match=r"classes \['NEGATIVE', 'POSITIVE'\] but the data has \['BAD', 'GOOD'\]"):
        check_same_classes(teacher, splits)


def _student_config(imdb_dir, **distill_section):
    raw = tiny_config("unused", imdb_dir)  # model.name is not read: the student is cut from the teacher
    raw["evaluation"] = {"baselines": False}
    raw["distill"] = {"layers": 1, **distill_section}
    return build_config(raw)


@pytest.fixture(scope="module")
def student_run(tmp_path_factory, tiny_run_dir, imdb_dir, tiny_splits):
    """A 1-layer student of the tiny 2-layer teacher, vocabulary pruned, with unlabelled texts (5 in the test set)."""
    folder = tmp_path_factory.mktemp("distill")
    texts = [*tiny_splits.test["text"].tolist()[:5], "an unlabelled review, quite good", "dull and long", ""]
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(folder / "unsup.parquet")
    cfg = _student_config(imdb_dir, prune_vocab=True, unlabeled=str(folder / "unsup.parquet"), alpha=0.5)
    metrics = distill(tiny_run_dir, cfg, folder / "student", splits=tiny_splits)
    return folder / "student", metrics


def test_student_is_an_ordinary_run_folder(student_run, tiny_run_dir):
    from transformers import pipeline

    run, metrics = student_run
    summary = metrics["distill"]
    assert summary["layers"] == [1] and summary["teacher_layers"] == 2
    assert summary["student_parameters"] < summary["teacher_parameters"]
    assert summary["vocab_size"]["after"] < summary["vocab_size"]["before"]
    assert summary["unlabeled"]["in_evaluation_sets"] == 5 and summary["unlabeled"]["used"] == 2
    assert summary["teacher_logits"]["rows"] == 64 + 2 and summary["teacher_logits"]["reused"] is False
    assert (
        summary["teacher_test_accuracy"] == json.loads((tiny_run_dir / "metrics.json").read_text())["test"]["accuracy"]
    )
    assert json.loads((run / "metrics.json").read_text())["distill"]["layers"] == [1]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["distill"]["prune_vocab"] is True and resolved["resolved"]["distill"]["layers"] == [1]
    assert len(pd.read_parquet(run / TEACHER_LOGITS_FILE)) == 66
    assert json.loads((run / TEACHER_LOGITS_INFO).read_text())["identity"] == load_teacher(tiny_run_dir).identity
    assert len(pd.read_parquet(run / "predictions.parquet")) == 64 and metrics["test"]["n"] == 64

    out = pipeline("text-classification", model=str(run / "model"))(["a great film", "a terrible film"])
    assert {o["label"] for o in out} <= {"NEGATIVE", "POSITIVE"}
    predictor = Predictor.load(run)
    assert predictor.model.config.num_hidden_layers == 1 and len(predictor.predict(["fine"])) == 1


def test_teacher_logit_cache_is_reused_or_recomputed(student_run, tiny_run_dir, caplog):
    run, _ = student_run
    cached = pd.read_parquet(run / TEACHER_LOGITS_FILE)
    teacher = load_teacher(tiny_run_dir)
    rows = _frame_of(run, cached)
    logits, facts = cached_teacher_logits(teacher, rows, run, 32)
    assert facts["reused"] and np.array_equal(logits, cached[["logit_0", "logit_1"]].to_numpy(np.float32))

    stale = dataclasses.replace(teacher, identity="another teacher")
    with caplog.at_level(logging.INFO, logger="sentiment_lab"):
        logits_again, facts = cached_teacher_logits(stale, rows.head(3), run, 32)
    assert not facts["reused"] and "stale (the teacher changed)" in caplog.text
    assert np.allclose(logits_again, logits[:3], atol=1e-2)  # the same teacher model: the same logits
    assert json.loads((run / TEACHER_LOGITS_INFO).read_text())["identity"] == "another teacher"
    cached_teacher_logits(teacher, rows, run, 32)  # leave the module's run folder as it was


def _frame_of(run, cached):
    """The (id, text) rows the student run's cache was computed for: the training split, then the unlabelled texts."""
    texts = {}
    config = yaml.safe_load((run / "config.yaml").read_text())
    unsup = pd.read_parquet(config["distill"]["unlabeled"])
    texts.update({f"unlabeled-{i}": t for i, t in zip(unsup["id"].astype(str), unsup["text"], strict=True)})
    splits = prepare_data(build_config({k: v for k, v in config.items() if k != "resolved"}).data)
    texts.update(dict(zip(splits.train["id"].astype(str), splits.train["text"], strict=True)))
    return pd.DataFrame({"id": cached["id"], "text": [texts[i] for i in cached["id"]]})


def test_resume_reuses_a_fresh_cache(student_run, tiny_run_dir, tiny_splits, tmp_path, imdb_dir, monkeypatch):
    import sentiment_lab.training

    judged = []  # the chance-level check sees no loss for a student: T^2 KL is not on the ln K scale of CE
    real = sentiment_lab.training.not_learned_warnings
    monkeypatch.setattr(
        sentiment_lab.training, "not_learned_warnings", lambda loss, *a: judged.append(loss) or real(loss, *a)
    )
    run, _ = student_run
    copy = tmp_path / "student"
    shutil.copytree(run, copy)
    (copy / "metrics.json").unlink()  # an interrupted run
    cfg = build_config(
        {k: v for k, v in yaml.safe_load((copy / "config.yaml").read_text()).items() if k != "resolved"}
        | {"training": {**tiny_config("unused", imdb_dir)["training"], "resume": True}}
    )
    metrics = distill(tiny_run_dir, cfg, copy, splits=tiny_splits)
    assert metrics["distill"]["teacher_logits"]["reused"] is True
    assert judged == [None]  # judged once (on the validation split), with no loss


def test_an_ensemble_teaches_too(tmp_path, tiny_run_dir, tiny_model_dir, imdb_dir, tiny_splits, monkeypatch):
    raw = tiny_config(tiny_model_dir, imdb_dir, seed=1)
    raw["evaluation"] = {"baselines": False}
    train(build_config(raw), tmp_path / "second", splits=tiny_splits)
    make_ensemble([tiny_run_dir, tmp_path / "second"], tmp_path / "ensemble")
    seen = []  # the teacher logits each training batch's loss got (None: validation batches)

    def spy(alpha, temperature):
        loss = distillation_loss(alpha, temperature)
        return lambda logits, labels, teacher, weight: seen.append(teacher) or loss(logits, labels, teacher, weight)

    monkeypatch.setattr("sentiment_lab.distill.distillation_loss", spy)
    metrics = distill(tmp_path / "ensemble", _student_config(imdb_dir), tmp_path / "student", splits=tiny_splits)
    assert sum(t is not None and t.shape == (16, 2) for t in seen) == 4  # 64 reviews, batches of 16, 1 epoch
    summary = metrics["distill"]
    assert summary["teacher_kind"] == "ensemble" and summary["layers"] == [1]
    assert summary["teacher_parameters"] == 2 * load_teacher(tiny_run_dir).parameters
    assert Predictor.load(tmp_path / "student").labels == ["NEGATIVE", "POSITIVE"]


def test_cli_refuses_in_one_line_and_keeps_a_finished_run(tiny_run_dir, student_run, tmp_path, capsys, imdb_dir):
    from sentiment_lab.cli import main

    with pytest.raises(SystemExit) as help_exit:
        main(["distill", "--help"])
    assert help_exit.value.code == 0 and "TEACHER" in capsys.readouterr().out
    run, _ = student_run
    before = (run / "metrics.json").read_text()
    config = tmp_path / "distill.yaml"
    config.write_text("distill:\n  layers: 1\n")
    assert main(["distill", str(tiny_run_dir), "--config", str(config), "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    assert (run / "metrics.json").read_text() == before
    config.write_text("distill:\n  layers: [0, 5]\n")
    args = ["--data", str(imdb_dir), "--out", str(tmp_path / "new")]
    assert main(["distill", str(tiny_run_dir), "--config", str(config), *args]) == 2
    assert "its 2 layers are 0 to 1" in capsys.readouterr().err


def test_a_student_of_its_own_may_have_another_tokenizer(tmp_path, tiny_run_dir, imdb_dir, imdb_sample, tiny_splits):
    """The teacher's logits are computed with the teacher's own tokenizer, per text: a student of its own (here a
    RoBERTa with a byte-level BPE, the teacher a WordPiece BERT) needs nothing of the teacher's but its classes."""
    student = build_tiny_model_dir(tmp_path / "roberta", imdb_sample["text"].tolist(), arch="roberta", max_length=64)
    cfg = _student_config(imdb_dir)
    cfg.distill = cfg.distill.model_copy(update={"layers": None, "student": str(student)})
    metrics = distill(tiny_run_dir, cfg, tmp_path / "run", splits=tiny_splits)
    assert metrics["distill"]["student"] == str(student) and metrics["distill"]["layers"] is None
    assert metrics["distill"]["vocab_size"]["before"] == metrics["distill"]["vocab_size"]["after"]
    assert Predictor.load(tmp_path / "run").tokenizer.__class__.__name__ == "RobertaTokenizer"


def test_report_of_a_student_without_a_latency_table_says_how_to_get_one(student_run, tmp_path):
    from sentiment_lab.report import build_report

    run = tmp_path / "student"
    shutil.copytree(student_run[0], run)
    analysis = build_report(run, n_explanations=0, label_noise=False, n_boot=200)
    section = analysis["compression"]
    assert section["available"] is False and section["distill"]["layers"] == [1]
    page = (run / "report.html").read_text()
    assert "8. Compression" in page and "benchmarks/compression_table.py" in page and "distilled student" in page


def test_compression_benchmark_measures_every_row_and_the_report_shows_it(
    student_run, tiny_run_dir, imdb_dir, tmp_path
):
    """benchmarks/compression_table.py end to end on tiny models: a teacher, its student, the student's INT8 export."""
    import subprocess
    import sys
    from pathlib import Path

    from sentiment_lab.report import build_report
    from sentiment_lab.rundir import COMPRESSION_FILE

    run = tmp_path / "student"
    shutil.copytree(student_run[0], run)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "compression_table.py"
    out = tmp_path / "compression.json"
    cmd = [sys.executable, str(script), "--teacher", str(tiny_run_dir), "--model", f"student L1={run}"]
    cmd += ["--int8", str(run), "--int8-test-n", "16", "--samples", "8", "--latency-n", "3", "--data", str(imdb_dir)]
    done = subprocess.run([*cmd, "--out", str(out), "--attach"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(out.read_text())
    names = [r["name"] for r in table["rows"]]
    assert names == ["teacher", "student L1", "student L1, ONNX INT8"]
    teacher, student, int8 = table["rows"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert student["accuracy"] == pytest.approx(metrics["test"]["accuracy"]) and student["test_n"] == 64
    assert int8["test_n"] == 16 and int8["mcnemar_vs_teacher"]["b"] + int8["mcnemar_vs_teacher"]["c"] <= 16
    assert student["parameters"] == metrics["distill"]["student_parameters"] < teacher["parameters"]
    assert student["train_seconds"] == pytest.approx(
        metrics["train_runtime_s"] + metrics["distill"]["teacher_logits"]["seconds"]
    )
    assert all(r["p50_ms"] > 0 and r["reviews_per_s"] > 0 for r in table["rows"])
    assert student["p50_ratio"] == pytest.approx(student["p50_ms"] / table["reference"]["p50_ms"])
    assert [c["row"] for c in table["checks"]] == ["student L1", "student L1, ONNX INT8"]
    assert table["checks"][0]["C1"]["met"] is True  # a tiny model is far under 20M parameters
    assert out.with_suffix(".png").is_file()
    assert json.loads((run / COMPRESSION_FILE).read_text())["this_run"] == "student L1"
    assert not (tiny_run_dir / COMPRESSION_FILE).exists()  # the teacher is only read

    analysis = build_report(run, n_explanations=0, label_noise=False, n_boot=200)
    assert analysis["compression"]["available"] is True
    assert (run / analysis["compression"]["figure"]).is_file()
    page = (run / "report.html").read_text()
    assert "student L1, ONNX INT8" in page and 'alt="test accuracy against batch-1 latency' in page


def test_an_unreadable_compression_table_stops_the_report_first(student_run, tmp_path):
    from sentiment_lab.errors import RunDirError
    from sentiment_lab.report import build_report
    from sentiment_lab.rundir import COMPRESSION_FILE

    run = tmp_path / "student"
    shutil.copytree(student_run[0], run)
    (run / COMPRESSION_FILE).write_text('{"rows": [')
    with pytest.raises(RunDirError, match=r"compression\.json is unreadable .*compression_table\.py --attach"):
        build_report(run, n_explanations=0, label_noise=False, n_boot=200)
    assert not (run / "report.html").exists()


def test_self_training_keeps_confident_unlabelled_rows_with_the_teachers_class():
    rows = pd.DataFrame(
        {"id": ["a", "b", "u1", "u2", "u3"], "text": list("abcde"), "label": [0, 1, UNLABELED] * 1 + [UNLABELED] * 2}
    )
    # teacher top probabilities: u1 0.98 (class 1), u2 0.62 (class 0), u3 0.95 (class 0)
    logits = np.array([[2.0, -2.0], [-1.0, 1.0], [-2.0, 1.9], [0.25, -0.25], [1.5, -1.44]], dtype=np.float32)
    frame, kept_logits, facts = self_training_rows(rows, logits, 0.9, True, ["negative", "positive"])
    assert frame["id"].tolist() == ["a", "b", "u1", "u3"] and frame["label"].tolist() == [0, 1, 1, 0]
    assert np.array_equal(kept_logits, logits[[0, 1, 2, 4]])
    assert facts == {
        "min_confidence": 0.9,
        "pseudo_labels": True,
        "unlabeled": 3,
        "kept": 2,
        "kept_per_class": {"negative": 1, "positive": 1},
    }
    soft, _, facts = self_training_rows(rows, logits, None, False, ["negative", "positive"])  # soft labels only
    assert soft["label"].tolist() == [0, 1, UNLABELED, UNLABELED, UNLABELED] and facts["kept"] == 3


def test_a_self_trained_student_learns_pseudo_labels(tmp_path, tiny_run_dir, imdb_dir, tiny_splits):
    texts = ["an unlabelled review, quite good", "dull and long", "the best film of the year", "awful"]
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(tmp_path / "unsup.parquet")
    cfg = _student_config(
        imdb_dir, unlabeled=str(tmp_path / "unsup.parquet"), min_confidence=0.5, pseudo_labels=True, alpha=1.0
    )
    metrics = distill(tiny_run_dir, cfg, tmp_path / "student", splits=tiny_splits)
    facts = metrics["distill"]["self_training"]
    assert facts["unlabeled"] == 4 and facts["kept"] == 4 and facts["pseudo_labels"] is True  # every top p >= 0.5
    assert sum(facts["kept_per_class"].values()) == 4
    resolved = yaml.safe_load((tmp_path / "student" / "config.yaml").read_text())
    assert resolved["resolved"]["distill"]["self_training"] == facts
    assert resolved["distill"]["pseudo_labels"] is True and resolved["distill"]["min_confidence"] == 0.5
