"""ONNX / INT8 export of the tiny model: parity with torch, dynamic axes, refusal leaves nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sentiment_lab.cli import main
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.export import export_onnx
from sentiment_lab.predictor import Predictor


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, imdb_dir: Path) -> Path:
    """A copy of the tiny model exported to ONNX fp32 and INT8 (parity on 24 IMDb test reviews)."""
    folder = tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(tiny_model_dir, folder)
    export_onnx(folder, quantize="int8", n=24, data_path=imdb_dir)
    return folder


def test_export_writes_models_and_parity_numbers(exported_dir: Path) -> None:
    onnx_dir = exported_dir / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["model.int8.onnx", "model.onnx", "parity.json"]
    parity = json.loads((onnx_dir / "parity.json").read_text())
    assert parity["passed"] and parity["n"] == 24 and parity["texts"].startswith("IMDb test")
    assert parity["fp32"]["max_abs_logit_diff"] <= parity["atol"]
    assert parity["int8"]["label_agreement"] >= 0.99
    assert parity["int8"]["matmuls_kept_fp32"] == 2  # the FFN down-projection of each of the 2 layers
    assert not [p for p in exported_dir.iterdir() if p.name.startswith(".onnx")]  # no staging folder left


def test_onnx_backends_match_torch_at_any_batch_and_length(exported_dir: Path, imdb_sample: pd.DataFrame) -> None:
    texts = [*imdb_sample["text"].head(9).tolist(), "Great.", "x " * 600]  # 1 token .. past max_length
    reference = Predictor.load(exported_dir, precision="fp32").logits(texts)
    for batch_size in (1, 4, 32):
        onnx = Predictor.load(exported_dir, backend="onnx", batch_size=batch_size)
        np.testing.assert_allclose(onnx.logits(texts), reference, atol=1e-4)
    int8 = Predictor.load(exported_dir, backend="onnx", quantized=True)
    assert int8.info()["onnx_file"] == "model.int8.onnx"
    assert np.abs(int8.logits(texts) - reference).max() < 0.05
    chunked = Predictor.load(exported_dir, backend="onnx", long_text="chunk").logits(texts)
    np.testing.assert_allclose(
        chunked, Predictor.load(exported_dir, precision="fp32", long_text="chunk").logits(texts), atol=1e-4
    )


def test_failed_parity_raises_and_keeps_the_previous_export(exported_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(exported_dir, folder)
    before = {p.name: p.read_bytes() for p in (folder / "onnx").iterdir()}
    with pytest.raises(ModelError, match="export refused: ONNX fp32 logits differ"):
        export_onnx(folder, n=4, atol=1e-30)
    assert {p.name: p.read_bytes() for p in (folder / "onnx").iterdir()} == before
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_int8_disagreement_refuses_and_leaves_no_onnx_folder(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sentiment_lab.export as export_module

    real_runner = export_module.onnx_runner

    def label_flipping_int8(path: Path, threads: int | None = None) -> Any:
        run = real_runner(path, threads)
        return (lambda ids, mask: run(ids, mask)[:, ::-1]) if path.name == "model.int8.onnx" else run

    monkeypatch.setattr(export_module, "onnx_runner", label_flipping_int8)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    with pytest.raises(ModelError, match=r"INT8 agrees with torch on 0\.0% of labels"):
        export_onnx(folder, quantize="int8", n=4)
    assert not (folder / "onnx").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_int8_keeps_ffn_down_projections_fp32(exported_dir: Path) -> None:
    import onnx

    from sentiment_lab.export import ffn_down_projections

    fp32 = exported_dir / "onnx" / "model.onnx"
    excluded = ffn_down_projections(fp32)
    assert len(excluded) == 2
    int8 = onnx.load(str(exported_dir / "onnx" / "model.int8.onnx")).graph
    float_matmuls = {n.name for n in int8.node if n.op_type == "MatMul"}
    assert set(excluded) <= float_matmuls
    assert sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for n in int8.node) >= 8  # q, k, v, ...


def test_export_options_are_checked(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="quantization"):
        export_onnx(tiny_model_dir, quantize="int4")
    with pytest.raises(ModelError, match="no such model"):
        export_onnx(tiny_model_dir.parent / "missing")


def test_export_cli_needs_a_format(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tiny_model_dir)]) == 2
    assert "--onnx" in capsys.readouterr().err


def test_export_cli_prints_parity(
    tiny_model_dir: Path, tmp_path: Path, imdb_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    assert main(["export", str(folder), "--onnx", "--n", "8", "--data", str(imdb_dir)]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "int8" not in out and "parity on IMDb test (8 reviews)" in out
    assert (folder / "onnx" / "model.onnx").is_file() and not (folder / "onnx" / "model.int8.onnx").exists()


@pytest.mark.slow
def test_minilm_exports_with_parity(tmp_path: Path, imdb_dir: Path) -> None:
    """The real MiniLM encoder (untrained head): fp32 ONNX within 1e-3 of torch on 16 reviews."""
    from sentiment_lab.config import ModelConfig
    from sentiment_lab.modeling import build_model, load_tokenizer

    folder = tmp_path / "minilm"
    build_model(ModelConfig(name="minilm-l6")).save_pretrained(folder)
    load_tokenizer("minilm-l6").save_pretrained(folder)
    report = export_onnx(folder, n=16, data_path=imdb_dir)
    assert report["fp32"]["passed"] and report["fp32"]["max_abs_logit_diff"] < 1e-3
