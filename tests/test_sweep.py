import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sentiment_lab.sweep
from conftest import tiny_config
from sentiment_lab.cli import main
from sentiment_lab.rundir import complete_checkpoints
from sentiment_lab.sweep import SweepError, grid_variants, load_sweep, plan_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, imdb_sample):
    """A 300/100 train/test Parquet folder: reading it is instant, unlike the full IMDb copy."""
    folder = tmp_path_factory.mktemp("small-imdb")
    imdb_sample.iloc[:300].to_parquet(folder / "train.parquet")
    imdb_sample.iloc[300:].to_parquet(folder / "test.parquet")
    return folder


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tiny_sweep(tmp_path: Path, model_dir: Path, data_dir: Path) -> Path:
    base = tiny_config(model_dir, data_dir, epochs=2, keep_checkpoints=True, save_total_limit=None)
    base["evaluation"] = {"baselines": False}
    write_yaml(tmp_path / "base.yaml", base)
    sweep = {
        "name": "tiny-lr",
        "base": "base.yaml",
        "grid": {"training.learning_rate": [1.0e-3, 3.0e-4]},
        "seeds": [0, 1],
    }
    return write_yaml(tmp_path / "sweep.yaml", sweep)


def test_sweep_interrupt_skip_resume_and_config_drift(tmp_path, tiny_model_dir, small_data, monkeypatch):
    sweep_file = tiny_sweep(tmp_path, tiny_model_dir, small_data)
    out = tmp_path / "out"
    real_train = sentiment_lab.sweep.train
    calls = []

    def train_then_interrupt(cfg, run_dir, **kw):
        calls.append(Path(run_dir).name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third run
        return real_train(cfg, run_dir, **kw)

    monkeypatch.setattr(sentiment_lab.sweep, "train", train_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep_file, out)
    index = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in index["runs"]] == ["trained", "trained", "interrupted", "pending"]
    assert [r["name"] for r in index["runs"]] == [
        "learning_rate=0.001-seed0",
        "learning_rate=0.001-seed1",
        "learning_rate=0.0003-seed0",
        "learning_rate=0.0003-seed1",
    ]
    monkeypatch.setattr(sentiment_lab.sweep, "train", real_train)

    # The second run "dies" after its first checkpoint: no metrics.json, no model, only checkpoint of epoch 1.
    killed = out / "learning_rate=0.001-seed1"
    ckpts = complete_checkpoints(killed)
    assert len(ckpts) == 2
    (killed / "metrics.json").unlink()
    shutil.rmtree(killed / "model")
    shutil.rmtree(ckpts[-1])
    first = out / "learning_rate=0.001-seed0" / "metrics.json"
    first_mtime = first.stat().st_mtime_ns

    index = run_sweep(sweep_file, out)
    assert [r["status"] for r in index["runs"]] == ["skipped", "resumed", "trained", "trained"]
    assert first.stat().st_mtime_ns == first_mtime  # the finished run was not touched
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["resumed_from"] == ckpts[0].name
    assert resumed["global_step"] == 2 * int(ckpts[0].name.split("-")[1])
    for run in index["runs"]:
        cfg = yaml.safe_load((out / run["run_dir"] / "config.yaml").read_text())
        assert cfg["training"]["seed"] == run["seed"]
        assert cfg["training"]["learning_rate"] == float(run["name"].split("=")[1].split("-seed")[0])
        assert run["metrics"]["test_n"] == 64
    summary = {s["variant"]: s for s in index["summary"]}
    assert set(summary) == {"learning_rate=0.001", "learning_rate=0.0003"}
    for s in summary.values():
        assert s["seeds"] == 2
        assert 0.0 <= s["test_accuracy_mean"] <= 1.0
        assert s["test_accuracy_std"] is not None and s["params_trainable"] > 0
    assert index["comparison"] == "comparison.html" and (out / "comparison.html").is_file()
    table = (out / "sweep.md").read_text()
    assert "learning_rate=0.0003" in table and "±" in table

    # Nothing left to do: a third run trains nothing.
    monkeypatch.setattr(sentiment_lab.sweep, "train", lambda *a, **k: pytest.fail("trained a finished run"))
    index = run_sweep(sweep_file, out)
    assert {r["status"] for r in index["runs"]} == {"skipped"}

    # Editing the base config under finished runs is refused, naming the key that changed.
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["tokenization"]["max_length"] = 32
    write_yaml(tmp_path / "base.yaml", base)
    with pytest.raises(SweepError, match=r"tokenization\.max_length"):
        run_sweep(sweep_file, out)


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_model_dir, small_data, monkeypatch):
    sweep_file = tiny_sweep(tmp_path, tiny_model_dir, small_data)
    seen = []

    def flaky_train(cfg, run_dir, **kw):
        seen.append(Path(run_dir).name)
        if len(seen) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # the others "run" without training

    monkeypatch.setattr(sentiment_lab.sweep, "train", flaky_train)
    index = run_sweep(sweep_file, tmp_path / "out")
    assert len(seen) == 4
    assert index["runs"][0]["status"] == "failed"
    assert "out of memory" in index["runs"][0]["error"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["runs"][0]["status"] == "failed"


def test_grid_names_and_override_order(tmp_path, tiny_model_dir, small_data):
    variants = grid_variants({"model.llrd": [None, 0.95], "model.dropout": [0.1, 0.3]})
    assert [v.name for v in variants] == [
        "llrd=off_dropout=0.1",
        "llrd=off_dropout=0.3",
        "llrd=0.95_dropout=0.1",
        "llrd=0.95_dropout=0.3",
    ]
    base = tiny_config(tiny_model_dir, small_data)
    write_yaml(tmp_path / "base.yaml", base)
    sweep = {
        "name": "order",
        "base": "base.yaml",
        "set": {"tokenization.max_length": 48, "training.epochs": 3},
        "variants": [{"name": "a", "set": {"tokenization.max_length": 40}}],
        "seeds": [7],
        "quick": {"set": {"tokenization.max_length": 32, "training.epochs": 1}},
    }
    write_yaml(tmp_path / "sweep.yaml", sweep)
    _, _, runs = plan_sweep(tmp_path / "sweep.yaml", tmp_path / "o", overrides=["training.batch_size=4"])
    cfg = runs[0].config
    assert (cfg.tokenization.max_length, cfg.training.epochs, cfg.training.batch_size) == (40, 3.0, 4)
    assert cfg.training.seed == 7 and runs[0].run_dir == tmp_path / "o" / "a-seed7"
    _, out, runs = plan_sweep(tmp_path / "sweep.yaml", quick=True)
    assert out == Path("runs/sweeps/order-quick")
    assert (runs[0].config.tokenization.max_length, runs[0].config.training.epochs) == (40, 1.0)


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"name": "x", "base": "base.yaml", "seeds": [1]}, "give `variants:`"),
        ({"name": "x", "base": "base.yaml", "grid": {"training.epochs": [1]}, "variants": [{"name": "a"}]}, "not both"),
        ({"name": "x", "base": "base.yaml", "grid": {"training.epochs": [1]}, "seed": [1]}, "unknown key 'seed'"),
        ({"name": "x", "base": "missing.yaml", "grid": {"training.epochs": [1]}}, "base config 'missing.yaml'"),
        ({"name": "x", "base": "base.yaml", "grid": {"training.learnig_rate": [1e-3]}}, "learnig_rate"),
        ({"name": "x", "base": "base.yaml", "grid": {"training.epochs": [-1]}}, "training.epochs"),
        ({"name": "x", "base": "base.yaml", "variants": [{"name": "a b"}]}, "may contain only"),
    ],
)
def test_bad_sweep_files_name_the_problem(tmp_path, sweep, message):
    write_yaml(tmp_path / "base.yaml", {"name": "b"})
    write_yaml(tmp_path / "sweep.yaml", sweep)
    with pytest.raises(SweepError, match=message):
        plan_sweep(tmp_path / "sweep.yaml")


def test_quick_without_quick_section_and_cli_errors(tmp_path, capsys):
    write_yaml(tmp_path / "base.yaml", {"name": "b"})
    write_yaml(tmp_path / "sweep.yaml", {"name": "x", "base": "base.yaml", "grid": {"training.epochs": [1]}})
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--quick", "--dry-run"]) == 2
    assert "has no `quick:` section" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--dry-run", "--out", str(tmp_path / "o")]) == 0
    assert "epochs=1-seed42" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def quick_include_sweep(tmp_path: Path, quick: dict) -> Path:
    """sweeps/sweep.yaml on ../base.yaml whose quick section is `quick`; shared/quick.yaml holds a quick overlay."""
    for folder in ("shared", "sweeps"):
        (tmp_path / folder).mkdir()
    write_yaml(tmp_path / "base.yaml", {"name": "b"})
    shared = {"seeds": [5, 6], "set": {"tokenization.max_length": 32, "training.epochs": 1, "data.max_train": 64}}
    write_yaml(tmp_path / "shared" / "quick.yaml", shared)
    sweep = {"name": "inc", "base": "../base.yaml", "grid": {"training.batch_size": [4]}, "quick": quick}
    return write_yaml(tmp_path / "sweeps" / "sweep.yaml", sweep)


def test_quick_include_applies_and_local_keys_win(tmp_path, monkeypatch):
    sweep = quick_include_sweep(
        tmp_path, {"include": "../shared/quick.yaml", "set": {"tokenization.max_length": 40}, "seeds": [9]}
    )
    monkeypatch.chdir(tmp_path / "shared")  # the include is relative to the sweep file, not the working folder
    _, _, runs = plan_sweep(sweep, out_dir=tmp_path / "o", quick=True)
    cfg = runs[0].config
    assert [r.seed for r in runs] == [9]  # the sweep's own seeds beat the included ones
    assert (cfg.tokenization.max_length, cfg.training.epochs, cfg.data.max_train) == (40, 1.0, 64)
    assert runs[0].overrides[:3] == ["tokenization.max_length=40", "training.epochs=1", "data.max_train=64"]
    _, _, full = plan_sweep(sweep, out_dir=tmp_path / "o")
    assert full[0].config.tokenization.max_length == 256  # the include is for --quick only


def test_quick_include_alone_gives_its_seeds_and_set(tmp_path):
    sweep = quick_include_sweep(tmp_path, {"include": "../shared/quick.yaml"})
    _, _, runs = plan_sweep(sweep, out_dir=tmp_path / "o", quick=True)
    assert [r.seed for r in runs] == [5, 6]
    assert {r.config.tokenization.max_length for r in runs} == {32}


def test_quick_include_missing_or_invalid_is_named(tmp_path):
    sweep = quick_include_sweep(tmp_path, {"include": "nope.yaml"})
    with pytest.raises(SweepError, match=r"quick include 'nope\.yaml' not found .*relative to the sweep file"):
        load_sweep(sweep)
    write_yaml(tmp_path / "shared" / "quick.yaml", {"base": "other.yaml", "set": {}})
    write_yaml(sweep, {**yaml.safe_load(sweep.read_text()), "quick": {"include": "../shared/quick.yaml"}})
    with pytest.raises(SweepError, match=r"invalid quick file .*quick\.yaml:\n  unknown key 'base'"):
        plan_sweep(sweep, quick=True)


SHIPPED = {
    "seed-distilbert-3configs.yaml": 9,
    "ablation-lr.yaml": 12,
    "ablation-maxlen.yaml": 12,
    "ablation-batch.yaml": 9,
    "ablation-epochs.yaml": 12,
    "ablation-freeze.yaml": 9,
    "ablation-llrd.yaml": 12,
}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_sweeps_plan_full_and_quick(name, tmp_path):
    path = REPO / "sweeps" / name
    spec = load_sweep(path)
    # A fresh output folder: run folders a checkout keeps from earlier sweeps must not decide the plan.
    _, _, full = plan_sweep(path, out_dir=tmp_path / "full")
    assert len(full) == SHIPPED[name]
    assert {r.config.model.name for r in full} == {"distilbert"}
    _, _, quick = plan_sweep(path, out_dir=tmp_path / "quick", quick=True)
    assert len(quick) == SHIPPED[name] // len(spec.seeds)
    for run in quick:
        assert run.config.model.name == "minilm-l6"
        assert run.config.data.max_train <= 500 and run.config.tokenization.padding == "dynamic"
    # The quick mode keeps what the sweep ablates.
    ablated = {name: [r.config for r in quick]}
    if name == "ablation-maxlen.yaml":
        cfgs = ablated[name]
        assert [(c.tokenization.max_length, c.tokenization.truncation) for c in cfgs] == [
            (128, "head"),
            (256, "head"),
            (512, "head"),
            (512, "head_tail"),
        ]
    if name == "seed-distilbert-3configs.yaml":
        recipe = [(c.training.learning_rate, c.training.batch_size, c.training.epochs) for c in ablated[name]]
        assert recipe == [(2e-5, 16, 3.0), (5e-5, 16, 3.0), (3e-5, 8, 4.0)]
    if name == "ablation-freeze.yaml":
        assert [c.model.freeze_layers for c in ablated[name]] == [0, 2, 4]


def test_summary_of_index_has_no_nan(tmp_path):
    from sentiment_lab.sweep import summarize

    records = [
        {"variant": "a", "seed": 1, "metrics": {"val_f1": 0.5, "test_accuracy": 0.6, "test_f1": 0.7}},
        {"variant": "b", "seed": 1},
    ]
    frame = pd.DataFrame(summarize([{**r, "metrics": {**r.get("metrics", {})}} for r in records]))
    assert list(frame["variant"]) == ["a"]
    assert frame.loc[0, "test_accuracy_std"] is None


def fake_train(cfg, run_dir, **kw):
    """Stands in for training: the run folder as train() leaves it (config.yaml first, metrics.json last)."""
    from sentiment_lab.config import config_to_dict

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    if os.environ.get("FAKE_TRAIN_KILL_AT") == run.name:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-run: a started folder without metrics.json
    split = {"accuracy": 0.5, "f1": 0.5, "n": 64}
    metrics = {"val": split, "test": split, "data": {"train": 64}, "global_step": 8, "resumed_from": None}
    (run / "metrics.json").write_text(json.dumps(metrics))


_SWEEP_IN_A_PROCESS = """
import sys
sys.path.insert(0, sys.argv[3])
import sentiment_lab.sweep
from test_sweep import fake_train
sentiment_lab.sweep.train = fake_train
from sentiment_lab.sweep import run_sweep
run_sweep(sys.argv[1], sys.argv[2])
"""


def test_sweep_killed_with_sigkill_resumes_where_it_stopped(tmp_path, tiny_model_dir, small_data, monkeypatch):
    sweep_file = tiny_sweep(tmp_path, tiny_model_dir, small_data)
    out = tmp_path / "out"
    names = ["learning_rate=0.001-seed0", "learning_rate=0.001-seed1", "learning_rate=0.0003-seed0"]
    env = {**os.environ, "FAKE_TRAIN_KILL_AT": names[2]}
    killed = subprocess.run(
        [sys.executable, "-c", _SWEEP_IN_A_PROCESS, str(sweep_file), str(out), str(REPO / "tests")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [(out / n / "metrics.json").is_file() for n in names] == [True, True, False]
    assert (out / names[2] / "config.yaml").is_file()  # the third run had started
    assert not list(out.rglob("*.tmp"))  # no half-written artifact left behind

    monkeypatch.delenv("FAKE_TRAIN_KILL_AT", raising=False)
    trained = []

    def record(cfg, run_dir, **kw):
        trained.append((Path(run_dir).name, cfg.training.resume))
        fake_train(cfg, run_dir)

    monkeypatch.setattr(sentiment_lab.sweep, "train", record)
    monkeypatch.setattr("sentiment_lab.sweep._write_comparison", lambda *a, **k: None)  # fake runs: no predictions
    index = run_sweep(sweep_file, out)
    assert [r["status"] for r in index["runs"]] == ["skipped", "skipped", "resumed", "trained"]
    assert trained == [(names[2], True), ("learning_rate=0.0003-seed1", False)]
    assert json.loads((out / "sweep.json").read_text())["runs"][2]["status"] == "resumed"


# The published ablation tables of the seed studies: BERT-base (seed 004) learning rate / max length / batch on its
# recipe; DistilBERT LLRD (seed 002) freeze / epochs / batch on its recipe, trained on 10% of its 18,750 reviews.
STUDY_SWEEPS = {
    "bert-base-ablation-lr.yaml": ("bert-base", "training.learning_rate", [1e-5, 2e-5, 3e-5, 5e-5]),
    "bert-base-ablation-maxlen.yaml": ("bert-base", "tokenization.max_length", [128, 256, 512]),
    "bert-base-ablation-batch.yaml": ("bert-base", "training.batch_size", [8, 16, 32]),
    "distilbert-llrd-ablation-freeze.yaml": ("distilbert", "model.freeze_layers", [0, 2, 4]),
    "distilbert-llrd-ablation-epochs.yaml": ("distilbert", "training.epochs", [1, 2, 3, 5]),
    "distilbert-llrd-ablation-batch.yaml": ("distilbert", "training.batch_size", [8, 16, 32]),
}


def _value(cfg, dotted: str):
    for key in dotted.split("."):
        cfg = getattr(cfg, key)
    return cfg


def test_every_shipped_sweep_is_planned_by_a_test():
    shipped = {p.name for p in (REPO / "sweeps").glob("*.yaml")} - {"quick.yaml"}
    shipped = {name for name in shipped if not name.startswith("tune-space")}
    assert shipped == set(SHIPPED) | set(STUDY_SWEEPS)


@pytest.mark.parametrize("name", sorted(STUDY_SWEEPS))
def test_study_ablation_sweeps_plan_full_and_quick(name, tmp_path):
    model, key, values = STUDY_SWEEPS[name]
    path = REPO / "sweeps" / name
    spec = load_sweep(path)
    assert spec.seeds == [42, 43, 44] and spec.quick is not None and spec.quick.include == "quick.yaml"
    _, _, full = plan_sweep(path, out_dir=tmp_path / "full")
    assert len(full) == len(values) * 3
    assert [_value(r.config, key) for r in full[::3]] == values
    for run in full:
        cfg = run.config
        assert cfg.model.name == model
        assert (cfg.training.group_by_length, cfg.training.eval_batch_size, cfg.training.logging_steps) == (
            False,
            32,
            100,
        )
        if model == "bert-base":  # the seed-004 recipe: every training review, no validation split, no early stop
            assert (cfg.data.val_fraction, cfg.data.max_train, cfg.training.early_stopping_patience) == (0, None, None)
        else:  # the seed-002 recipe on 10% of its 18,750 training reviews
            assert (cfg.data.val_fraction, cfg.data.max_train) == (0.25, 1875)
            assert (cfg.model.llrd, cfg.model.dropout) == (0.95, 0.3)
    _, _, quick = plan_sweep(path, out_dir=tmp_path / "quick", quick=True)
    assert len(quick) == len(values)
    assert [_value(r.config, key) for r in quick] == values  # the quick mode keeps what the sweep ablates
    for run in quick:
        cfg = run.config
        assert cfg.model.name == "minilm-l6" and cfg.data.max_train == 400
        assert cfg.tokenization.padding == "dynamic" and cfg.training.eval_strategy == "epoch"
        assert cfg.data.val_fraction == (0 if model == "bert-base" else 0.25)
