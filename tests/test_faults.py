"""Faults: a training run killed with SIGKILL resumes to the same step count; bad data files fail clearly;
atomic writes leave the old file or the new one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import tiny_config
from sentiment_lab.config import DataConfig
from sentiment_lab.data import load_raw_splits
from sentiment_lab.errors import DataError, RunDirError
from sentiment_lab.io import write_json_atomic
from sentiment_lab.rundir import check_run_dir, complete_checkpoints

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sentiment_lab", *args]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path, tiny_model_dir, imdb_dir):
    raw = tiny_config(
        tiny_model_dir,
        imdb_dir,
        epochs=3,
        eval_strategy="steps",
        eval_steps=4,
        save_total_limit=3,
        batch_size=8,
        keep_checkpoints=True,
    )
    raw["data"].update({"max_train": 96, "max_eval": 16, "max_test": 16})
    raw["evaluation"] = {"baselines": False}
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"

    proc = subprocess.Popen(cli("train", str(cfg), "--out", str(run)), cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not complete_checkpoints(run) and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = complete_checkpoints(run)
    assert saved, "no checkpoint was written before the kill"
    assert not (run / "metrics.json").exists()

    # Re-running without resume is refused; with resume it continues from the newest complete checkpoint.
    again = subprocess.run(cli("train", str(cfg), "--out", str(run)), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 2 and "resume" in again.stderr
    resumed = subprocess.run(
        cli("train", str(cfg), "--out", str(run), "--set", "training.resume=true"),
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "SENTIMENT_LAB_ALLOCATOR": "tuned"},
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from"] is not None
    assert metrics["global_step"] == 3 * 96 // 8  # the same optimizer steps as an uninterrupted run
    # Asked for the tuned glibc allocator, the command re-executed itself with it and recorded it in the config.
    environment = yaml.safe_load((run / "config.yaml").read_text())["resolved"]["environment"]
    if sys.platform == "linux" and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        assert "MALLOC_TRIM_THRESHOLD_=68719476736" in environment["malloc_env"]


def test_unwritable_run_folder_fails_before_training(tmp_path, tiny_model_dir, imdb_dir):
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder's parent should be")
    with pytest.raises(RunDirError, match="not writable"):
        check_run_dir(blocker / "run")
    with pytest.raises(RunDirError, match="not writable"):
        train(build_config(tiny_config(tiny_model_dir, imdb_dir)), blocker / "run")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(RunDirError, match="not writable"):
                check_run_dir(locked / "run")
        finally:
            locked.chmod(0o700)


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"v": float("nan")})  # fails while serialising: nothing replaced
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp files left


def good_frame(n: int = 10) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})


def test_truncated_parquet(tmp_path):
    good_frame().to_parquet(tmp_path / "test.parquet")
    data = (tmp_path / "test.parquet").read_bytes()
    (tmp_path / "train.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read data file .*train.parquet"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_ragged_csv_names_the_line(tmp_path):
    (tmp_path / "train.csv").write_text('text,label\n"good",1\n"bad",0,extra\n')
    good_frame().to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv.*line 3"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_wrong_encoding(tmp_path):
    (tmp_path / "train.csv").write_bytes("text,label\ncaf\xe9 cr\xe8me,1\n".encode("latin-1"))
    good_frame().to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv is not UTF-8"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_float_label_column(tmp_path):
    df = good_frame()
    df["label"] = df["label"].astype(float) + 0.5
    df.to_parquet(tmp_path / "train.parquet")
    good_frame().to_parquet(tmp_path / "test.parquet")
    with pytest.raises(DataError, match=r"train.parquet: 10 of 10 rows have labels outside the mapping"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_zero_byte_file(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b"")
    good_frame().to_json(tmp_path / "test.jsonl", orient="records", lines=True)
    with pytest.raises(DataError, match=r"train.jsonl is empty \(0 bytes\)"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_full_disk_fails_before_training(tmp_path, tiny_model_dir, imdb_dir, monkeypatch):
    import shutil

    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=100 * 1024 * 1024))  # 100 MiB left
    with pytest.raises(RunDirError, match=r"only 100 MiB free on the disk of .*needs at least 500 MiB"):
        train(build_config(tiny_config(tiny_model_dir, imdb_dir)), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_second_process_on_a_run_folder_refuses_and_a_stale_lock_is_taken_over(tmp_path, tiny_model_dir, imdb_dir):
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    cfg = build_config(tiny_config(tiny_model_dir, imdb_dir, resume=True, epochs=1))
    run = tmp_path / "run"
    run.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a live first process
    try:
        (run / ".lock").write_text(str(owner.pid))
        with pytest.raises(RunDirError, match=f"in use by process {owner.pid}"):
            train(cfg, run)
        assert not (run / "metrics.json").exists() and (run / ".lock").read_text() == str(owner.pid)
        # Without resume, and even with --overwrite, the message names the owner and nothing is deleted.
        (run / "notes.txt").write_text("the owner's work")
        for kwargs in ({}, {"overwrite": True}):
            plain = build_config(tiny_config(tiny_model_dir, imdb_dir, epochs=1))
            with pytest.raises(RunDirError, match=f"in use by process {owner.pid}"):
                train(plain, run, **kwargs)
        assert (run / "notes.txt").read_text() == "the owner's work"
        (run / "notes.txt").unlink()
    finally:
        owner.kill()
        owner.wait()
    # The owner died without removing its lock (SIGKILL): the next run detects the stale lock and trains.
    metrics = train(cfg, run)
    assert metrics["global_step"] > 0 and not (run / ".lock").exists()


def test_run_folder_has_no_temp_files_and_valid_artifacts(tiny_run_dir):
    # Every artifact goes through a temp file and os.replace: a finished run holds no `.NAME.*.tmp` leftovers.
    assert not [p for p in tiny_run_dir.rglob("*.tmp")]
    json.loads((tiny_run_dir / "metrics.json").read_text())
    pd.read_parquet(tiny_run_dir / "predictions.parquet")
