import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from conftest import tiny_config
from sentiment_lab.cli import main
from sentiment_lab.config import load_config
from sentiment_lab.tune import DEFAULT_SPACE, TuneError, check_space, load_space, pruning_callback, redact, tune

REPO = Path(__file__).resolve().parents[1]

SPACE = {
    "sampler": "tpe",
    "n_startup_trials": 2,
    "pruner": "median",
    "params": {
        "training.learning_rate": {"type": "float", "low": 1.0e-4, "high": 3.0e-3, "log": True},
        "training.epochs": {"type": "categorical", "choices": [1, 2]},
    },
}

# Each worker imports everything, then waits until the other is ready too: both really run at the same time.
WORKER = """
import sys, time
from pathlib import Path
from sentiment_lab.tune import tune
import sentiment_lab.training
ready = Path(sys.argv[3])
(ready / sys.argv[4]).touch()
while len(list(ready.iterdir())) < 2:
    time.sleep(0.05)
tune(sys.argv[1], int(sys.argv[5]), space_path=sys.argv[2], out_dir=sys.argv[6], storage=sys.argv[7])
"""


@pytest.fixture(scope="module")
def tune_files(tmp_path_factory, tiny_model_dir, imdb_sample):
    folder = tmp_path_factory.mktemp("tune")
    data = folder / "data"
    data.mkdir()
    imdb_sample.iloc[:300].to_parquet(data / "train.parquet")
    imdb_sample.iloc[300:].to_parquet(data / "test.parquet")
    cfg = tiny_config(tiny_model_dir, data)
    cfg["name"] = "tiny-tune"
    cfg["evaluation"] = {"baselines": False}
    (folder / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (folder / "space.yaml").write_text(yaml.safe_dump(SPACE))
    return folder


def test_two_workers_share_one_sqlite_study(tune_files, tmp_path):
    out = tmp_path / "tune"
    url = f"sqlite:///{out / 'study.db'}"
    out.mkdir()
    (tmp_path / "ready").mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    n = 4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    args = [str(tune_files / "cfg.yaml"), str(tune_files / "space.yaml"), str(tmp_path / "ready")]
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), *args, f"w{i}", str(n), str(out), url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    study = optuna.load_study(study_name="tiny-tune", storage=url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n  # none lost, none extra
    assert all(t.user_attrs.get("surplus") for t in trials if t not in finished)
    assert len({t.number for t in finished}) == n
    run_dirs = [t.user_attrs["run_dir"] for t in finished]
    assert len(set(run_dirs)) == n  # no two trials trained into one folder
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # both workers did work
    for t in finished:
        if t.state == TrialState.COMPLETE:
            metrics = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
            assert t.value == pytest.approx(metrics["val"]["f1"])  # objective: validation F1

    # Outputs: trials table, a best config that trains as-is, both plots, a summary.
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == n and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    assert {"val_f1", "params_training.learning_rate", "params_training.epochs", "run_dir"} <= set(table.columns)
    summary = json.loads((out / "tune.json").read_text())
    best = study.best_trial
    assert summary["best"]["trial"] == best.number and summary["best"]["value"] == pytest.approx(best.value)
    cfg = load_config(out / "best_config.yaml")
    assert cfg.training.learning_rate == pytest.approx(best.params["training.learning_rate"])
    assert cfg.training.epochs == best.params["training.epochs"] and not cfg.training.resume
    for png in ("optimization_history.png", "param_importances.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resuming with the same budget runs nothing; a larger budget runs exactly the missing trials.
    tune(tune_files / "cfg.yaml", n, space_path=tune_files / "space.yaml", out_dir=out, storage=url)
    assert len(optuna.load_study(study_name="tiny-tune", storage=url).get_trials()) == len(trials)
    summary = tune(tune_files / "cfg.yaml", n + 1, space_path=tune_files / "space.yaml", out_dir=out, storage=url)
    assert summary["trials"]["COMPLETE"] + summary["trials"]["PRUNED"] == n + 1

    # The study remembers its space: continuing it with another one is refused.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPACE, "n_startup_trials": 3}))
    with pytest.raises(TuneError, match="different search space"):
        tune(tune_files / "cfg.yaml", n, space_path=other, out_dir=out, storage=url)


def test_pruning_callback_reports_and_prunes():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    callback = pruning_callback(good)
    callback.on_evaluate(None, None, None, metrics={"eval_f1": 0.9})
    callback.on_evaluate(None, None, None, metrics={"eval_f1": 0.92})
    assert good.storage.get_trial(good._trial_id).intermediate_values == {1: 0.9, 2: 0.92}
    study.tell(good, 0.92)

    bad = study.ask()
    callback = pruning_callback(bad)
    callback.on_evaluate(None, None, None, metrics={"eval_loss": 0.3})  # no F1: nothing reported
    with pytest.raises(optuna.TrialPruned, match="below the median"):
        callback.on_evaluate(None, None, None, metrics={"eval_f1": 0.4})


def test_default_space_file_matches_code_and_is_valid():
    assert yaml.safe_load((REPO / "sweeps" / "tune-space.yaml").read_text()) == DEFAULT_SPACE
    space = load_space(REPO / "sweeps" / "tune-space.yaml")
    assert space.params["training.learning_rate"].log
    check_space(space, REPO / "configs" / "quickstart.yaml", [])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"training.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5}}, "larger than high"),
        ({"training.learning_rate": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}, "low > 0"),
        ({"training.batch_size": {"type": "categorical"}}, "choices"),
        ({"training.lr": {"type": "float", "low": 1e-5, "high": 1e-3}}, "'training.lr'"),
        ({"model.dropout": {"type": "float", "low": 0.0, "high": 1.5}}, "model.dropout"),
        ({"training.epochs": {"type": "int", "low": 1, "hi": 3}}, "unknown key"),
    ],
)
def test_bad_search_space_is_refused(tmp_path, params, message):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"params": params}))
    with pytest.raises(TuneError, match=message):
        check_space(load_space(tmp_path / "space.yaml"), REPO / "configs" / "quickstart.yaml", [])


def test_cli_errors_and_redaction(tmp_path, capsys):
    assert main(["tune", str(REPO / "configs" / "quickstart.yaml"), "--trials", "-1"]) == 2
    assert "--trials must be 0 or more" in capsys.readouterr().err
    bad = ["tune", str(REPO / "configs" / "quickstart.yaml"), "--trials", "1", "--out", str(tmp_path)]
    assert main([*bad, "--storage", "nosuchdb://x/y"]) == 2
    assert "cannot open the Optuna storage" in capsys.readouterr().err
    assert redact("postgresql://user:secret@db.example/optuna") == "postgresql://user:***@db.example/optuna"
