import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import TrainerCallback

from conftest import tiny_config
from sentiment_lab.config import build_config
from sentiment_lab.errors import ConfigError, RunDirError
from sentiment_lab.modeling import load_classifier, load_tokenizer
from sentiment_lab.rundir import complete_checkpoints, last_checkpoint, run_lock
from sentiment_lab.runners import compute_logits
from sentiment_lab.sidecar import read_sidecar
from sentiment_lab.training import ShuffledLengthBuckets, train

METRIC_KEYS = {"accuracy", "f1", "precision", "recall", "f1_macro", "precision_macro", "recall_macro"}


def test_run_folder_contract(tiny_run_dir):
    metrics = json.loads((tiny_run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert METRIC_KEYS <= set(metrics[split])
        assert set(metrics[split]["per_class"]) == {"negative", "positive"}
        assert len(metrics[split]["confusion_matrix"]) == 2
    assert metrics["test"]["n"] == 64 and metrics["val"]["n"] == 32
    for key in ("train_runtime_s", "train_samples_per_s", "eval_samples_per_s", "best_step"):
        assert key in metrics
    assert set(metrics["baselines"]) == {"majority", "tfidf_logreg"}

    preds = pd.read_parquet(tiny_run_dir / "predictions.parquet")
    assert {"id", "label", "pred", "prob_pos"} <= set(preds.columns) and len(preds) == 64
    assert ((preds["prob_pos"] >= 0.5).astype(int) == preds["pred"]).all()
    cm = metrics["test"]["confusion_matrix"]
    assert cm[1][1] == int(((preds["label"] == 1) & (preds["pred"] == 1)).sum())

    history = pd.read_csv(tiny_run_dir / "history.csv")
    assert {"step", "epoch", "train_loss", "lr", "val_loss", "val_f1"} <= set(history.columns)
    assert history["val_f1"].notna().sum() == 2  # evaluated after each of the 2 epochs

    resolved = yaml.safe_load((tiny_run_dir / "config.yaml").read_text())
    assert resolved["training"]["epochs"] == 2
    assert resolved["resolved"]["environment"]["transformers"]
    assert "git_commit" in resolved["resolved"]["environment"]

    model_dir = tiny_run_dir / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "sentiment_lab.json").is_file()
    assert not (model_dir / "training_args.bin").exists()
    assert "Test metrics" in (model_dir / "README.md").read_text()
    assert (tiny_run_dir / "train.log").read_text().count("step ") > 0
    assert any((tiny_run_dir / "tensorboard").iterdir())
    assert not (tiny_run_dir / ".lock").exists()
    assert not (tiny_run_dir / "checkpoints").exists()  # finished: only model/ is kept


def test_saved_model_loads_with_plain_pipeline(tiny_run_dir):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(tiny_run_dir / "model"))
    out = clf(["a great film", "a terrible film"])
    assert {o["label"] for o in out} <= {"NEGATIVE", "POSITIVE"}


def test_finished_run_refused_without_overwrite(tiny_run_dir, tiny_model_dir, imdb_dir):
    before = (tiny_run_dir / "metrics.json").read_text()
    with pytest.raises(RunDirError, match="--overwrite"):
        train(build_config(tiny_config(tiny_model_dir, imdb_dir)), tiny_run_dir)
    assert (tiny_run_dir / "metrics.json").read_text() == before


def test_bad_input_leaves_no_run_folder(tmp_path, tiny_model_dir):
    from sentiment_lab.errors import DataError

    run = tmp_path / "run"
    with pytest.raises(DataError):
        train(build_config(tiny_config(tiny_model_dir, tmp_path / "missing")), run)
    assert not run.exists()


@pytest.mark.parametrize("group_by_length", [False, True])
def test_resume_continues_at_saved_step(tmp_path, tiny_model_dir, imdb_dir, group_by_length):
    """Train 2 epochs saving each epoch; drop the final state to simulate a crash after epoch 1; resume.

    With length-grouped batches the resumed run must replay the same batch order, or its result would differ.
    """
    run = tmp_path / "run"
    raw = tiny_config(
        tiny_model_dir, imdb_dir, epochs=2, save_total_limit=5, keep_checkpoints=True, group_by_length=group_by_length
    )
    full = train(build_config(raw), run)
    steps = [int(p.name.split("-")[1]) for p in complete_checkpoints(run)]
    assert steps == [4, 8]
    # Simulate a kill after the first checkpoint: remove what came later, plus a half-written checkpoint.
    shutil.rmtree(run / "checkpoints" / "checkpoint-8")
    for name in ("metrics.json", "predictions.parquet", "val_predictions.parquet"):
        (run / name).unlink()
    shutil.rmtree(run / "model")
    (run / "checkpoints" / "checkpoint-12").mkdir()  # incomplete: no trainer_state.json
    assert last_checkpoint(run).name == "checkpoint-4"
    # the seconds spent up to the checkpoint are in it; pretend the killed session took 1,000 s
    state_file = run / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    clock = state["stateful_callbacks"]["CumulativeTrainTime"]["args"]
    assert 0 < clock["before_s"] < full["train_runtime_s"]
    clock["before_s"] = 1000.0
    state_file.write_text(json.dumps(state))

    with pytest.raises(RunDirError, match="resume"):
        train(build_config(raw), run)
    raw["training"]["resume"] = True
    resumed = train(build_config(raw), run)
    assert resumed["resumed_from"] == "checkpoint-4"
    assert resumed["global_step"] == full["global_step"] == 8
    assert 1000.0 < resumed["train_runtime_s"] < 1000.0 + full["train_runtime_s"] + 60  # both sessions counted
    assert resumed["test"]["accuracy"] == pytest.approx(full["test"]["accuracy"], abs=1e-6)


def test_length_buckets_are_homogeneous_batches_in_random_order():
    torch.manual_seed(0)
    lengths = [(i * 37) % 100 for i in range(100)]  # 100 distinct lengths in scrambled order
    sampler = ShuffledLengthBuckets(lengths, batch_size=8, mega_batch_mult=50)
    epochs = [list(sampler) for _ in range(2)]
    for order in epochs:
        assert sorted(order) == list(range(100))  # every review once per epoch
        batches = [sorted(lengths[i] for i in order[k : k + 8]) for k in range(0, 100, 8)]
        # One mega-batch holds everything: each full batch is 8 consecutive lengths, the short one comes last.
        assert all(b == list(range(b[0], b[0] + 8)) and b[0] % 8 == 0 for b in batches[:-1])
        assert batches[-1] == [96, 97, 98, 99]
        assert batches[0] == list(range(88, 96))  # the longest full batch first, then random order
        firsts = [b[0] for b in batches[1:-1]]
        assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # not walked by length
    assert epochs[0] != epochs[1]


def test_length_grouped_training_uses_the_shuffled_buckets(tmp_path, tiny_model_dir, imdb_dir, monkeypatch):
    seen: list[int] = []
    original = ShuffledLengthBuckets.__iter__

    def spy(self):
        for i in original(self):
            seen.append(i)
            yield i

    monkeypatch.setattr(ShuffledLengthBuckets, "__iter__", spy)
    metrics = train(build_config(tiny_config(tiny_model_dir, imdb_dir, group_by_length=True)), tmp_path / "run")
    assert metrics["global_step"] == 4 and sorted(seen) == list(range(64))


def test_lock_refuses_second_owner(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / ".lock").write_text(str(proc.pid))
        with pytest.raises(RunDirError, match=f"in use by process {proc.pid}"), run_lock(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait()
    with run_lock(tmp_path):  # the owner is dead now: the stale lock is taken over
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_extra_callbacks_see_every_evaluation_and_can_stop_a_run(tmp_path, tiny_model_dir, imdb_dir):
    from transformers import TrainerCallback

    class StopAfterFirstEval(TrainerCallback):
        """What a tuning pruner does: look at the validation metrics, then abort the run."""

        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.seen.append(metrics["eval_f1"])
            raise KeyboardInterrupt  # any exception leaves through train(), releasing the lock

    callback = StopAfterFirstEval()
    cfg = build_config(tiny_config(tiny_model_dir, imdb_dir, epochs=2))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", callbacks=[callback])
    assert len(callback.seen) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()  # an aborted run never looks finished
    assert not (tmp_path / "run" / ".lock").exists()


class SpoilAfterCheckpoint4(TrainerCallback):
    """Pushes the classifier's bias hard toward NEGATIVE once checkpoint-4 is saved (at the start of step 5), so every
    later validation loss is far worse: the best checkpoint is known to be 4 and the last one is not it."""

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 4:
            with torch.no_grad():
                model.classifier.bias += torch.tensor([10.0, -10.0])


@pytest.fixture(scope="module")
def early_stopped_run(tmp_path_factory, tiny_model_dir, imdb_dir, tiny_splits):
    """Up to 4 epochs (16 steps) with patience 1 on the validation loss, spoilt after the first evaluation."""
    raw = tiny_config(
        tiny_model_dir,
        imdb_dir,
        epochs=4,
        metric_for_best_model="loss",
        early_stopping_patience=1,
        keep_checkpoints=True,
        save_total_limit=None,
        precision="fp32",
    )
    raw["evaluation"] = {"baselines": False}
    run = tmp_path_factory.mktemp("early") / "run"
    train(build_config(raw), run, splits=tiny_splits, callbacks=[SpoilAfterCheckpoint4()])
    return run


def test_best_checkpoint_not_the_last_is_restored_and_evaluated(early_stopped_run):
    metrics = json.loads((early_stopped_run / "metrics.json").read_text())
    assert metrics["best_step"] == 4 < metrics["global_step"] == 8
    history = pd.read_csv(early_stopped_run / "history.csv").dropna(subset=["val_loss"]).set_index("step")
    assert history.loc[4, "val_loss"] < 0.8 < 5 < history.loc[8, "val_loss"]

    # The saved model and its validation predictions are checkpoint-4's, not checkpoint-8's.
    saved = pd.read_parquet(early_stopped_run / "val_predictions.parquet")
    model_dir = early_stopped_run / "model"
    tokenizer, settings = load_tokenizer(str(model_dir)), read_sidecar(model_dir).text
    texts = saved["text"].tolist()
    logits = {
        step: compute_logits(
            load_classifier(early_stopped_run / "checkpoints" / f"checkpoint-{step}"), tokenizer, texts, settings
        )
        for step in (4, 8)
    }
    ours = saved[["logit_neg", "logit_pos"]].to_numpy()
    np.testing.assert_allclose(ours, logits[4], atol=1e-5)
    assert np.abs(ours - logits[8]).max() > 5
    assert metrics["val"]["loss"] == pytest.approx(history.loc[4, "val_loss"], abs=1e-4)


def test_early_stopping_ends_training_before_max_steps(early_stopped_run):
    state = json.loads((early_stopped_run / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["max_steps"] == 16  # 4 epochs of 4 steps were planned
    assert json.loads((early_stopped_run / "metrics.json").read_text())["global_step"] == 8
    assert sorted(p.name for p in (early_stopped_run / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert pd.read_csv(early_stopped_run / "history.csv")["val_loss"].notna().sum() == 2


def test_fp16_on_a_cpu_falls_back_to_fp32_and_says_so(tmp_path, tiny_model_dir, imdb_dir, tiny_splits, caplog):
    run = tmp_path / "run"
    raw = tiny_config(tiny_model_dir, imdb_dir, precision="fp16")
    raw["evaluation"] = {"baselines": False}
    with caplog.at_level(logging.WARNING, logger="sentiment_lab"):
        metrics = train(build_config(raw), run, splits=tiny_splits)
    note = "fp16 needs a CUDA GPU; training in fp32 on cpu instead of fp16"
    warned = [r.getMessage() for r in caplog.records if r.name == "sentiment_lab" and r.levelno == logging.WARNING]
    # the console (the CLI prints sentiment_lab warnings on stderr); 64 reviews for 4 steps also leave the tiny model
    # at chance, which is warned about too
    assert [m for m in warned if "did not learn" not in m] == [note]
    assert f"WARNING sentiment_lab: {note}" in (run / "train.log").read_text()
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["training"]["precision"] == "fp16"  # what was asked ...
    assert resolved["resolved"]["precision"] == "fp32" and resolved["resolved"]["precision_note"] == note  # ... and got
    assert metrics["precision"] == "fp32"


def test_deterministic_runs_with_one_seed_predict_identically(tmp_path, tiny_model_dir, imdb_dir, tiny_splits):
    class DeterminismSpy(TrainerCallback):
        def __init__(self) -> None:
            self.seen: list[bool] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(torch.are_deterministic_algorithms_enabled())

    def run(name: str, seed: int) -> pd.DataFrame:
        raw = tiny_config(tiny_model_dir, imdb_dir, seed=seed, deterministic=True, precision="fp32")
        raw["evaluation"] = {"baselines": False}
        spy = DeterminismSpy()
        train(build_config(raw), tmp_path / name, splits=tiny_splits, callbacks=[spy])
        assert spy.seen == [True] * 4  # on for every step of the run ...
        assert not torch.are_deterministic_algorithms_enabled()  # ... and off again after it
        assert yaml.safe_load((tmp_path / name / "config.yaml").read_text())["resolved"]["deterministic"] is True
        return pd.read_parquet(tmp_path / name / "predictions.parquet")

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    assert first["prob_pos"].nunique() > 32  # real per-review outputs, not one constant a broken run could repeat
    assert first["prob_pos"].tolist() == again["prob_pos"].tolist()  # bit for bit
    assert first["prob_pos"].tolist() != other["prob_pos"].tolist()  # the comparison can tell runs apart


def test_training_without_a_validation_split_keeps_the_last_model(tmp_path, tiny_model_dir, imdb_dir):
    """data.val_fraction 0 (seed 004 trains on every training review): nothing is evaluated during training."""
    raw = tiny_config(tiny_model_dir, imdb_dir, epochs=2)
    raw["data"]["val_fraction"] = 0
    run = tmp_path / "no-val"
    metrics = train(build_config(raw), run)
    assert "val" not in metrics and metrics["best_step"] == metrics["global_step"] == 8
    assert metrics["data"]["train"] == 64 and metrics["data"]["val"] == 0
    assert not (run / "val_predictions.parquet").exists() and (run / "predictions.parquet").is_file()
    assert "val_accuracy" not in pd.read_csv(run / "history.csv").columns
    card = (run / "model" / "README.md").read_text()
    assert "no validation split" in card and "Validation accuracy" not in card
    raw["training"]["early_stopping_patience"] = 2
    with pytest.raises(ConfigError, match="early_stopping_patience needs a validation split"):
        build_config(raw)
