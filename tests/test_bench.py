"""`sentiment-lab bench` on the tiny model: every exported backend measured on the same reviews, JSON + table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sentiment_lab.benchmarking import available_backends, bench, bench_table
from sentiment_lab.cli import main
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.export import export_onnx
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.predictor import PredictorOptions


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory, tiny_run_dir: Path, imdb_dir: Path) -> Path:
    """A copy of the tiny run folder whose model is exported to ONNX fp32 and INT8."""
    run = tmp_path_factory.mktemp("bench") / "run"
    shutil.copytree(tiny_run_dir, run)
    export_onnx(run, quantize="int8", n=8, data_path=imdb_dir)
    return run


def test_bench_measures_every_backend_on_the_same_reviews(exported_run: Path, imdb_dir: Path) -> None:
    results = bench(exported_run, n=12, latency_n=5, data_path=imdb_dir, options=PredictorOptions(batch_size=4))
    bf16 = ["torch-bf16"] if resolve_precision("auto").name == "bf16" else []  # where the CPU has native bf16
    assert list(results["backends"]) == ["torch", *bf16, "onnx", "onnx-int8"]
    assert results["out"] == str(exported_run / "bench.json")
    saved = json.loads((exported_run / "bench.json").read_text())
    assert saved["n"] == 12 and saved["latency_n"] == 5 and saved["batch_size"] == 4
    assert saved["long_text"] == "truncate"  # the mode the model resolved to, not the unset option
    for name, m in saved["backends"].items():
        lat = m["latency_ms"]
        assert m["reviews_per_s"] > 0 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"], name
        assert 0.0 <= m["accuracy"] <= 1.0
    assert saved["backends"]["onnx"]["agreement_with_first"] == 1.0  # fp32 ONNX predicts exactly as torch
    assert saved["backends"]["onnx"]["accuracy"] == saved["backends"]["torch"]["accuracy"]
    table = bench_table(results).splitlines()
    assert [line.split()[0] for line in table[2:]] == ["torch", *bf16, "onnx", "onnx-int8"]


def test_bench_only_runs_what_is_exported(tiny_model_dir: Path, imdb_dir: Path) -> None:
    bf16 = ["torch-bf16"] if resolve_precision("auto").name == "bf16" else []
    assert available_backends(tiny_model_dir) == ["torch", *bf16]
    with pytest.raises(ModelError, match="--onnx --quantize int8"):
        bench(tiny_model_dir, backends=["onnx-int8"], data_path=imdb_dir)
    with pytest.raises(ConfigError, match="unknown backend"):
        bench(tiny_model_dir, backends=["tensorrt"], data_path=imdb_dir)


def test_bench_cli_prints_a_table_and_writes_json(
    exported_run: Path, imdb_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.json"
    argv = ["bench", str(exported_run), "--n", "6", "--latency-n", "3", "--backends", "torch,onnx-int8"]
    assert main([*argv, "--data", str(imdb_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "reviews/s (b32)" in printed and "onnx-int8" in printed and f"results: {out}" in printed
    assert list(json.loads(out.read_text())["backends"]) == ["torch", "onnx-int8"]


def test_interleaved_latencies_take_turns_on_every_review_after_warmup() -> None:
    from sentiment_lab.benchmarking import interleaved_latencies_ms

    seen: list[tuple[str, str]] = []
    calls = {name: (lambda text, name=name: seen.append((name, text))) for name in ("a", "b")}
    latencies = interleaved_latencies_ms(calls, ["r1", "r2", "r3"], warmup=["w"])
    assert seen == [("a", "w"), ("b", "w")] + [(n, r) for r in ("r1", "r2", "r3") for n in ("a", "b")]
    assert {name: len(v) for name, v in latencies.items()} == {"a": 3, "b": 3}
    assert all(ms >= 0 for v in latencies.values() for ms in v)
