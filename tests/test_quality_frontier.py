"""benchmarks/quality_frontier.py (issue 18, Q3): measurement files become points with Wilson CIs, one figure."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def measurement(path: Path, accuracy: float, tfidf: float, wall: str) -> Path:
    test = {"n": 25000, "accuracy": accuracy}
    baselines = {"tfidf_logreg": {"train_runtime_s": 13.5, "test": {"n": 25000, "accuracy": tfidf}}}
    path.write_text(json.dumps({"wall_clock_total": wall, "metrics": {"test": test, "baselines": baselines}}))
    return path


@pytest.mark.parametrize(("text", "seconds"), [("1:10:55 (load, train)", 4255.0), ("52:03.11", 3123.11)])
def test_wall_seconds_reads_time_v_elapsed(text, seconds):
    assert load_benchmark("quality_frontier").wall_seconds(text) == pytest.approx(seconds)


def test_full_points_have_wilson_cis_and_one_tfidf_per_result(tmp_path):
    bench = load_benchmark("quality_frontier")
    a = measurement(tmp_path / "a.json", 0.92848, 0.90312, "1:10:55 (...)")
    b = measurement(tmp_path / "b.json", 0.9351, 0.90312, "1:55:00 (...)")
    points = bench.full_points([("full", a), ("best", b)])
    assert [p["name"] for p in points] == ["TF-IDF", "full", "best"]  # same split, same TF-IDF: drawn once
    full = points[1]
    assert full["ci_low"] < full["accuracy"] < full["ci_high"]
    assert full["ci_high"] - full["ci_low"] == pytest.approx(0.0064, abs=0.0003)  # +-1.96 sqrt(p(1-p)/n)
    assert points[2]["wall_s"] == 6900.0


def test_frontier_figure_and_bad_argument(tmp_path):
    full = measurement(tmp_path / "full.json", 0.92848, 0.90312, "1:10:55 (...)")
    levers = tmp_path / "levers.json"
    row = {"accuracy": 0.835, "ci_low": 0.813, "ci_high": 0.858, "test_n": 1000, "wall_s": 300.0}
    rows = [
        {**row, "name": "baseline"},
        {**row, "name": "chunk", "accuracy": 0.881, "ci_low": 0.861, "ci_high": 0.901, "wall_s": 480.0},
    ]
    levers.write_text(json.dumps({"rows": rows, "params": {"config": "configs/quickstart.yaml", "overrides": []}}))
    script = [sys.executable, str(REPO / "benchmarks" / "quality_frontier.py"), "--levers", str(levers)]
    out = tmp_path / "frontier.png"
    done = subprocess.run(
        [*script, "--full", f"cpu-minilm-full={full}", "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cpu-minilm-full  92.85%" in done.stdout
    bad = subprocess.run([*script, "--full", str(full), "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "error: --full" in bad.stderr and "NAME=FILE" in bad.stderr
