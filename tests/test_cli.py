"""The CLI: help, user mistakes (one `error:` line, exit 2, nothing lost) and the core commands end to end."""

import argparse
import json
import os
import re

import pandas as pd
import pytest
import yaml

from sentiment_lab.cli import build_parser, command_function, main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(tmp_path, raw):
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


@pytest.fixture
def tiny_raw(tiny_model_dir, imdb_dir):
    from conftest import tiny_config

    return tiny_config(tiny_model_dir, imdb_dir)


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every sub-command of a parser, nested ones included: ("train",), ("data",), ("data", "stats"), ..."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += [(*prefix, name), *command_paths(sub, (*prefix, name))]
    return paths


COMMAND_PATHS = command_paths(build_parser())
TOP_LEVEL = [p[0] for p in COMMAND_PATHS if len(p) == 1]


def test_every_command_has_a_function_and_is_listed_in_help(capsys):
    assert len(TOP_LEVEL) >= 13 and ("data", "stats") in COMMAND_PATHS
    for name in TOP_LEVEL:  # a parser without a function would fail only when the command is run
        assert callable(command_function(name)), name
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sentiment-lab ")
    for name in TOP_LEVEL:
        assert re.search(rf"^ +{name} +\S", out, flags=re.MULTILINE), f"{name} missing from --help:\n{out}"


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=" ".join)
def test_command_help(capsys, path):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sentiment-lab {' '.join(path)} "), out


def assert_one_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_unknown_config_key(capsys, tmp_path, tiny_raw):
    tiny_raw["training"]["epoch"] = 3
    code, _, err = run_cli(capsys, "train", str(write_config(tmp_path, tiny_raw)), "--out", str(tmp_path / "run"))
    assert_one_error(code, err, "unknown key 'training.epoch'")
    assert not (tmp_path / "run").exists()


def test_out_of_range_override(capsys, tmp_path, tiny_raw):
    cfg = write_config(tmp_path, tiny_raw)
    code, _, err = run_cli(
        capsys, "train", str(cfg), "--set", "training.learning_rate=-1", "--out", str(tmp_path / "r")
    )
    assert_one_error(code, err, "training.learning_rate")


def test_missing_data_path(capsys, tmp_path, tiny_raw):
    cfg = write_config(tmp_path, tiny_raw)
    code, _, err = run_cli(capsys, "train", str(cfg), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert_one_error(code, err, "does not exist", "nope")
    assert not (tmp_path / "r").exists()


def test_wrong_column_and_bad_labels(capsys, tmp_path, tiny_raw):
    data = tmp_path / "data"
    data.mkdir()
    df = pd.DataFrame({"review": ["good film", "bad film"] * 10, "label": ["pos", "meh"] * 10})
    df.to_csv(data / "train.csv", index=False)
    df.to_csv(data / "test.csv", index=False)
    cfg = write_config(tmp_path, tiny_raw)
    code, _, err = run_cli(capsys, "train", str(cfg), "--data", str(data), "--out", str(tmp_path / "r"))
    assert_one_error(code, err, "no column(s) ['text']", "data.text_column")
    code, _, err = run_cli(
        capsys, "train", str(cfg), "--data", str(data), "--set", "data.text_column=review", "--out", str(tmp_path / "r")
    )
    assert_one_error(code, err, "10 of 20 rows", "'meh'")


def test_unknown_model(capsys, tmp_path, tiny_raw, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    tiny_raw["model"]["name"] = "no-such-org/no-such-model"
    code, _, err = run_cli(capsys, "train", str(write_config(tmp_path, tiny_raw)), "--out", str(tmp_path / "r"))
    assert_one_error(code, err, "cannot load model 'no-such-org/no-such-model'")


def test_a_run_that_did_not_learn_ends_with_a_warning(capsys, tmp_path, tiny_raw):
    tiny_raw["training"]["learning_rate"] = 1e-9  # the freshly initialised head stays at the class prior
    code, out, err = run_cli(capsys, "train", str(write_config(tmp_path, tiny_raw)), "--out", str(tmp_path / "r"))
    assert code == 0, err
    warning = [line for line in out.splitlines() if line.startswith("warning: the training loss ended at")]
    assert len(warning) == 1 and "chance level for 2 classes" in warning[0] and "training.max_steps" in warning[0]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["warnings"][0] == warning[0].removeprefix("warning: ")
    assert "Did not learn:" in _report_of(tmp_path / "r")


def _report_of(run_dir):
    from sentiment_lab.report import build_report

    build_report(run_dir, n_explanations=0, label_noise=False, n_boot=100)
    return (run_dir / "report.html").read_text()


def test_finished_run_dir_refused(capsys, tiny_run_dir, tiny_raw, tmp_path):
    before = (tiny_run_dir / "metrics.json").read_bytes()
    code, _, err = run_cli(capsys, "train", str(write_config(tmp_path, tiny_raw)), "--out", str(tiny_run_dir))
    assert_one_error(code, err, "already holds a finished run", "--overwrite")
    assert (tiny_run_dir / "metrics.json").read_bytes() == before


def test_evaluate_run_dir(capsys, tiny_run_dir, tmp_path, monkeypatch):
    out = tmp_path / "eval"
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    code, stdout, _ = run_cli(capsys, "evaluate", str(tiny_run_dir), "--out", str(out))
    assert code == 0
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0"  # bulk scoring runs without oneDNN's shape cache
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    assert re.search(rf"\btest +{test['accuracy']:.4f} +{test['f1']:.4f} ", stdout), stdout  # the printed table
    assert f"results: {out}/" in stdout
    original = json.loads((tiny_run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(original["test"]["accuracy"])
    assert len(pd.read_parquet(out / "predictions.parquet")) == metrics["test"]["n"]


def test_evaluate_missing_model(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nothing"))
    assert_one_error(code, err, "no such model or run folder")


def test_baseline_run_folder(capsys, tmp_path, imdb_dir):
    out = tmp_path / "base"
    code, stdout, _ = run_cli(
        capsys,
        "baseline",
        "--data",
        str(imdb_dir),
        "--set",
        "data.max_train=400",
        "--set",
        "data.max_test=200",
        "--set",
        "data.max_eval=100",
        "--out",
        str(out),
    )
    assert code == 0 and "tfidf_logreg" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["n"] == 200 and metrics["test"]["accuracy"] > 0.6
    assert metrics["baselines"]["majority"]["test"]["accuracy"] == pytest.approx(0.5)
    assert len(pd.read_parquet(out / "predictions.parquet")) == 200


def test_data_stats(capsys, imdb_dir, tiny_model_dir):
    code, stdout, _ = run_cli(
        capsys,
        "data",
        "stats",
        "--data",
        str(imdb_dir),
        "--set",
        f"model.name={tiny_model_dir}",
        "--set",
        "data.max_train=200",
        "--set",
        "data.max_eval=50",
        "--set",
        "data.max_test=50",
    )
    assert code == 0
    assert "words mean/med/min/max" in stdout and "train" in stdout and ">256 tok" in stdout


def test_tuned_allocator_is_opt_in_for_training_on_glibc_once():
    import platform
    import sys

    from sentiment_lab.cli.allocator import ALLOCATOR_SWITCH, TUNED_ALLOCATOR_ENV, wants_tuned_allocator

    glibc = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
    asked = {ALLOCATOR_SWITCH: "tuned"}
    assert wants_tuned_allocator("train", asked) is glibc
    assert wants_tuned_allocator("sweep", asked) is glibc
    assert not wants_tuned_allocator("train", {})  # glibc's own settings unless asked for
    assert not wants_tuned_allocator("train", {ALLOCATOR_SWITCH: "default"})
    assert not wants_tuned_allocator("predict", asked)  # inference keeps glibc's defaults
    assert not wants_tuned_allocator("train", {**asked, **TUNED_ALLOCATOR_ENV})  # already set: no second re-exec
