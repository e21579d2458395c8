"""benchmarks/gpu_check.py (`make gpu-check`) where there is no CUDA: one line, a JSON saying so, exit status 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_says_so_writes_cuda_false_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU for torch, even on a machine that has one
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and str(out) in lines[0]
    report = json.loads(out.read_text())
    assert report["cuda"] is False and report["ok"] is True and report["torch"]
    assert not list(out.parent.glob(".*.tmp"))  # written atomically
