"""compare: tables, McNemar per pair, seed groups, and refusal of runs evaluated on different items."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sentiment_lab.compare import compare_runs, flatten
from sentiment_lab.errors import SentimentLabError


def _copy(src: Path, dst: Path, seed: int | None = None, flip: int = 0) -> Path:
    """A copy of a run; `flip` turns the first N correct test predictions wrong; `seed` rewrites training.seed."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model", "tensorboard", "checkpoints"))
    if seed is not None:
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        cfg["training"]["seed"] = seed
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    if flip:
        preds = pd.read_parquet(dst / "predictions.parquet")
        right = preds.index[preds["label"] == preds["pred"]][:flip]
        preds.loc[right, "pred"] = 1 - preds.loc[right, "label"]
        preds.to_parquet(dst / "predictions.parquet", index=False)
    return dst


def test_compare_two_runs(tiny_run_dir: Path, tmp_path: Path) -> None:
    a = _copy(tiny_run_dir, tmp_path / "a")
    b = _copy(tiny_run_dir, tmp_path / "b", flip=5)
    res = compare_runs([a, b], tmp_path / "out", n_boot=200)
    pair = res["pairs"][0]
    # b differs only by 5 reviews that a gets right: b = 5 discordant pairs in a's favour, c = 0
    assert (pair["mcnemar"]["b"], pair["mcnemar"]["c"]) == (5, 0)
    assert pair["mcnemar"]["method"] == "exact binomial"
    assert pair["mcnemar"]["p_value"] == pytest.approx(2 / 2**5)
    assert pair["accuracy_diff"]["estimate"] == pytest.approx(5 / 64)
    assert res["runs"][0]["accuracy"]["estimate"] - res["runs"][1]["accuracy"]["estimate"] == pytest.approx(5 / 64)
    assert pair["verdict"] == "no significant difference at alpha 0.05 (p = 0.0625)"
    page = (tmp_path / "out" / "comparison.html").read_text()
    assert "McNemar" in page and "data:image/png;base64," in page and pair["verdict"] in page
    assert json.loads((tmp_path / "out" / "comparison.json").read_text())["n_test"] == 64


def test_compare_groups_seeds_and_highlights_config(tiny_run_dir: Path, tmp_path: Path) -> None:
    runs = [_copy(tiny_run_dir, tmp_path / f"s{s}", seed=s, flip=s) for s in (1, 2, 3)]
    res = compare_runs(runs, tmp_path / "out", n_boot=100)
    assert [d["key"] for d in res["config_differences"]] == ["training.seed"]
    assert len(res["pairs"]) == 3 and all("p_holm" in p["mcnemar"] for p in res["pairs"])
    (group,) = res["seed_groups"]
    assert group["seeds"] == [1, 2, 3]
    accs = [r["accuracy"]["estimate"] for r in res["runs"]]
    assert group["accuracy"]["mean"] == pytest.approx(sum(accs) / 3)
    assert group["accuracy"]["std"] > 0
    assert 'class="text diff"' in (tmp_path / "out" / "comparison.html").read_text()


def test_compare_refuses_different_test_sets(tiny_run_dir: Path, tmp_path: Path) -> None:
    a = _copy(tiny_run_dir, tmp_path / "a")
    b = _copy(tiny_run_dir, tmp_path / "b")
    preds = pd.read_parquet(b / "predictions.parquet")
    preds.iloc[:60].to_parquet(b / "predictions.parquet", index=False)
    with pytest.raises(SentimentLabError, match="not evaluated on the same test items"):
        compare_runs([a, b], tmp_path / "out")


def test_compare_refuses_same_ids_with_different_labels(tiny_run_dir: Path, tmp_path: Path) -> None:
    a = _copy(tiny_run_dir, tmp_path / "a")
    b = _copy(tiny_run_dir, tmp_path / "b")
    preds = pd.read_parquet(b / "predictions.parquet")
    preds.loc[0, "label"] = 1 - preds.loc[0, "label"]
    preds.to_parquet(b / "predictions.parquet", index=False)
    with pytest.raises(SentimentLabError, match="labels differ"):
        compare_runs([a, b], tmp_path / "out")


def test_compare_argument_errors(tiny_run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(SentimentLabError, match="at least two"):
        compare_runs([tiny_run_dir])
    with pytest.raises(SentimentLabError, match="twice"):
        compare_runs([tiny_run_dir, tiny_run_dir])
    with pytest.raises(SentimentLabError, match="no such run folder"):
        compare_runs([tiny_run_dir, tmp_path / "nope"], tmp_path / "out")


def test_compare_command_refuses_with_exit_2(tiny_run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sentiment_lab.cli import main

    b = _copy(tiny_run_dir, tmp_path / "b")
    pd.read_parquet(b / "predictions.parquet").iloc[:10].to_parquet(b / "predictions.parquet", index=False)
    assert main(["compare", str(tiny_run_dir), str(b), "--out", str(tmp_path / "out")]) == 2
    assert "not evaluated on the same test items" in capsys.readouterr().err


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
