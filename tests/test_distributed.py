"""The DDP code path on CPU: `torchrun --nproc_per_node 2` (gloo) trains the tiny model into one run folder."""

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

from conftest import build_tiny_model_dir, tiny_config

TORCHRUN = Path(sys.executable).with_name("torchrun")

WORKER = """
import json, os, sys
import torch.distributed as dist
from sentiment_lab.config import build_config
from sentiment_lab.training import train

cfg = build_config(json.loads(open(sys.argv[1]).read()))
metrics = train(cfg, sys.argv[2])
rank = int(os.environ["RANK"])
world = dist.get_world_size() if dist.is_initialized() else 1
with open(os.path.join(sys.argv[3], f"rank{rank}.json"), "w") as fh:
    json.dump({"rank": rank, "world": world, "returned_metrics": bool(metrics)}, fh)
"""


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed next to this Python")
def test_torchrun_two_processes_write_one_run_folder(tmp_path, imdb_sample):
    data = tmp_path / "data"
    data.mkdir()
    imdb_sample.iloc[:300].to_parquet(data / "train.parquet")
    imdb_sample.iloc[300:].to_parquet(data / "test.parquet")
    model = build_tiny_model_dir(tmp_path / "model", imdb_sample["text"].tolist())
    raw = tiny_config(model, data, epochs=2, batch_size=8, keep_checkpoints=True)
    (tmp_path / "cfg.json").write_text(json.dumps(raw))
    (tmp_path / "worker.py").write_text(WORKER)
    reports = tmp_path / "reports"
    reports.mkdir()
    run = tmp_path / "run"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", str(tmp_path / "worker.py")]
    cmd += [str(tmp_path / "cfg.json"), str(run), str(reports)]
    # Own session: on a hang, the whole group (torchrun and both workers) is killed, not just torchrun.
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{stderr[-4000:]}")
    assert proc.returncode == 0, stderr[-4000:]

    # Both ranks trained in one 2-process group; only rank 0 produced (and returned) the results.
    ranks = {json.loads(p.read_text())["rank"]: json.loads(p.read_text()) for p in reports.glob("rank*.json")}
    assert set(ranks) == {0, 1}
    assert all(r["world"] == 2 for r in ranks.values())
    assert ranks[0]["returned_metrics"] and not ranks[1]["returned_metrics"]

    # One set of artifacts, the usual schema.
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):
        assert {"accuracy", "f1", "precision", "recall", "confusion_matrix", "n", "loss"} <= set(metrics[split])
    assert metrics["data"] == {"train": 64, "val": 32, "test": 64}
    assert metrics["test"]["n"] == 64
    # 64 reviews, 2 processes x batch 8 = 16 per optimizer step: 4 steps an epoch.
    assert metrics["global_step"] == 8
    assert len(pd.read_parquet(run / "predictions.parquet")) == 64
    assert len(pd.read_parquet(run / "val_predictions.parquet")) == 32
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 2
    assert (run / "model" / "model.safetensors").is_file()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    history = pd.read_csv(run / "history.csv")
    assert history["step"].is_unique and history["val_f1"].notna().sum() == 2
    log_text = (run / "train.log").read_text()
    assert log_text.count("step 8: {'eval_loss'") == 1  # each log line written once, not once per process

    # No stray temp files from two writers racing for the same names; no lock left behind.
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp") or p.name == ".lock"]
    assert leftovers == []
    shutil.rmtree(run)
