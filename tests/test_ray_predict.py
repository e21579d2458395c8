"""`predict --engine ray`: input resolution and its mistakes (no Ray needed), then jobs on a local 2-CPU Ray with
the tiny model: same rows and probabilities as local predict, skipped rows counted, output replaced only with
--overwrite."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pandas as pd
import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification

from sentiment_lab.batch_predict import OUTPUT_COLUMNS, output_columns, predict_file
from sentiment_lab.cli import main
from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.predictor import Predictor
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.ray_predict import SUMMARY_FILE, connect, predict_files_ray, resolve_inputs

ray = pytest.importorskip("ray", reason='the Ray tests need the ray extra: pip install "sentiment-lab[ray]"')

TEXTS = [
    "A wonderful, moving film with a brilliant cast.",
    "Two hours I will never get back. Dreadful.",
    "",
    "Not bad at all, I enjoyed the ending.",
    "   ",
    "The plot was thin but the music carried it.",
]


def _reviews(n: int) -> pd.DataFrame:
    """n reviews with ids r0, r1, ...; rows 2, 8, 14, ... are empty and rows 4, 10, 16, ... blank."""
    texts = [TEXTS[i % len(TEXTS)] for i in range(n)]
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], "text": [t + f" ({i})" if t.strip() else t for i, t in enumerate(texts)]}
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# Mistakes found before Ray starts -----------------------------------------------------------------------------------


def test_a_glob_that_matches_nothing_is_one_error(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    line = _cli_error(
        capsys,
        [
            "predict",
            str(tiny_model_dir),
            "--engine",
            "ray",
            "--input",
            str(tmp_path / "*.parquet"),
            "--output",
            str(tmp_path / "out"),
        ],
    )
    assert "no input files match" in line
    assert not (tmp_path / "out").exists()


def test_a_folder_of_mixed_formats_is_one_error(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _reviews(4).to_parquet(folder / "a.parquet")
    _reviews(4).to_csv(folder / "b.csv", index=False)
    line = _cli_error(
        capsys,
        ["predict", str(tiny_model_dir), "--engine", "ray", "--input", str(folder), "--output", str(tmp_path / "o")],
    )
    assert "mixes file formats (1 .csv, 1 .parquet)" in line and "*.csv" in line


def test_a_file_without_the_text_column_is_one_error(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "reviews.csv"
    _reviews(4).rename(columns={"text": "review"}).to_csv(source, index=False)
    line = _cli_error(
        capsys,
        ["predict", str(tiny_model_dir), "--engine", "ray", "--input", str(source), "--output", str(tmp_path / "o")],
    )
    assert "has no column 'text'" in line and "--text-column" in line


def test_input_mistakes_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty \(0 bytes\)"):
        resolve_inputs(str(tmp_path / "empty.jsonl"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported formats"):
        resolve_inputs(str(tmp_path))
    with pytest.raises(DataError, match="input not found"):
        resolve_inputs(str(tmp_path / "missing.parquet"))


def test_a_folder_or_glob_of_one_format_resolves_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b.parquet", "a.parquet", "_summary.json", ".hidden.parquet"):
        _reviews(3).to_parquet(tmp_path / name) if name.endswith(".parquet") else (tmp_path / name).write_text("{}")
    folder = resolve_inputs(str(tmp_path))
    assert [Path(p).name for p in folder.paths] == ["a.parquet", "b.parquet"] and folder.fmt == "parquet"
    assert folder.has_id
    assert resolve_inputs(str(tmp_path / "[ab].parquet")).paths == folder.paths
    (tmp_path / "nested").mkdir()
    _reviews(3).to_parquet(tmp_path / "nested" / "c.parquet")
    uri = resolve_inputs(f"file://{tmp_path}/*.parquet")  # a URI: listed through pyarrow's filesystem
    assert uri.paths == folder.paths and uri.display(uri.paths[0]).startswith("file://")
    assert len(resolve_inputs(f"file://{tmp_path}/**/*.parquet").paths) == 3


def test_an_output_folder_with_results_is_refused_without_overwrite(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    source = tmp_path / "reviews.parquet"
    _reviews(4).to_parquet(source)
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"old")
    line = _cli_error(
        capsys, ["predict", str(tiny_model_dir), "--engine", "ray", "--input", str(source), "--output", str(out)]
    )
    assert "already holds 1 files" in line and "--overwrite" in line
    assert (out / "part-00000.parquet").read_bytes() == b"old"


def test_a_cluster_that_does_not_answer_is_one_error_not_a_hang(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "reviews.parquet"
    _reviews(4).to_parquet(source)
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    line = _cli_error(
        capsys,
        [
            "predict",
            str(tiny_model_dir),
            "--engine",
            "ray",
            "--address",
            address,
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o"),
        ],
    )
    assert f"no Ray cluster answers at {address}" in line and "ray start --head" in line
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="not HOST:PORT"):
        connect(ray, "localhost")
    with pytest.raises(ConfigError, match="Ray Client, which Ray Data does not support.*--address auto"):
        connect(ray, "ray://127.0.0.1:10001")


def test_ray_flags_need_the_ray_engine(tiny_model_dir: Path, capsys) -> None:
    line = _cli_error(capsys, ["predict", str(tiny_model_dir), "great", "--workers", "2"])
    assert "--workers go with --engine ray" in line
    line = _cli_error(capsys, ["predict", str(tiny_model_dir), "great", "--engine", "ray"])
    assert "--engine ray labels files" in line


def test_without_ray_installed_one_error_names_the_extra(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "sentiment-lab\[ray\]"'):
        predict_files_ray(tiny_model_dir, str(tmp_path / "x.parquet"), tmp_path / "out")


# Jobs on a local Ray ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    """One 2-CPU Ray for the module (starting Ray takes seconds); the jobs reuse it and leave it running."""
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _local_predictions(
    model: Path, source: Path, tmp_path: Path, options: PredictorOptions, chunk: int
) -> pd.DataFrame:
    target = tmp_path / f"local-{source.stem}.parquet"
    predict_file(Predictor.load(model, options), source, target, chunk_rows=chunk, progress=False)
    return pd.read_parquet(target)


def test_ray_output_matches_local_predict_row_for_row(local_ray, tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "reviews.parquet"
    frame = _reviews(40)
    frame.loc[7, "text"] = None  # not text: skipped as invalid
    frame.to_parquet(source)
    options = PredictorOptions(precision="fp32")
    summary = predict_files_ray(
        tiny_model_dir, str(source), tmp_path / "out", options, workers=2, batch_rows=8, progress=False
    )
    got = pd.read_parquet(tmp_path / "out")
    want = _local_predictions(tiny_model_dir, source, tmp_path, options, chunk=8)
    assert list(got.columns) == list(OUTPUT_COLUMNS)
    assert got["row"].tolist() == want["row"].tolist()  # every predicted row once, in input order
    assert got["id"].tolist() == want["id"].tolist() and got["label"].tolist() == want["label"].tolist()
    assert (got["prob_pos"] - want["prob_pos"]).abs().max() < 1e-6
    assert summary["rows"] == 40 and summary["workers"] == 2
    assert summary["empty"] == 13 and summary["invalid"] == 1 and summary["predicted"] == len(want) == 26
    assert summary["skipped_rows_first"][:3] == [2, 4, 7]
    written = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())
    assert written["predicted"] == len(got) and written["shards"] == ["part-00000.parquet"]


def test_folder_of_jsonl_and_chunk_mode_as_local(local_ray, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [json.dumps({"id": i, "text": t}) for i, t in enumerate(_reviews(10)["text"])]
    (folder / "a.jsonl").write_text("\n".join([*lines[:5], "{not json", ""]) + "\n")
    (folder / "b.jsonl").write_text("\n".join([*lines[5:], '"a string, not an object"']) + "\n")
    options = PredictorOptions(long_text="chunk", stride=4, precision="fp32")
    summary = predict_files_ray(tiny_model_dir, str(folder), tmp_path / "out", options, workers=1, progress=False)
    got = pd.read_parquet(tmp_path / "out")
    # 12 rows (a blank line is no row): the bad JSON line is row 5, the string is row 11, both invalid
    assert summary["rows"] == 12 and summary["invalid"] == 2 and 5 in summary["skipped_rows_first"]
    assert 11 in summary["skipped_rows_first"] and 5 not in got["row"].tolist()
    both = tmp_path / "both.jsonl"
    both.write_text("\n".join([*lines[:5], "{not json", *lines[5:], '"a string, not an object"']) + "\n")
    want = _local_predictions(tiny_model_dir, both, tmp_path, options, chunk=256)
    assert got["row"].tolist() == want["row"].tolist() and got["id"].tolist() == want["id"].tolist()
    assert (got["prob_pos"] - want["prob_pos"]).abs().max() < 1e-6


def test_overwrite_replaces_old_shards_and_csv_goes_through_the_cli(
    local_ray, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    source = tmp_path / "reviews.csv"
    _reviews(12).to_csv(source, index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00007.parquet").write_bytes(b"stale shard of an older job")
    argv = ["predict", str(tiny_model_dir), "--engine", "ray", "--input", str(source), "--output", str(out)]
    assert main([*argv, "--workers", "1", "--overwrite", "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "of 12 rows predicted" in printed and "1 Ray worker x" in printed and "skipped" in printed
    assert sorted(p.name for p in out.iterdir()) == [SUMMARY_FILE, "part-00000.parquet"]
    assert pd.read_parquet(out)["id"].tolist()[0] == "r0"
    assert not list(tmp_path.glob(".out.*"))  # no temp or old folder left behind


def test_a_model_of_three_classes_gets_local_predicts_columns(local_ray, tiny_model_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "three"
    shutil.copytree(tiny_model_dir, model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    config.num_labels = 3
    config.id2label, config.label2id = {0: "neg", 1: "neutral", 2: "pos"}, {"neg": 0, "neutral": 1, "pos": 2}
    AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    source = tmp_path / "reviews.parquet"
    _reviews(12).to_parquet(source)
    options = PredictorOptions(precision="fp32")
    predict_files_ray(model_dir, str(source), tmp_path / "out", options, workers=1, progress=False)
    got = pd.read_parquet(tmp_path / "out")
    want = _local_predictions(model_dir, source, tmp_path, options, chunk=256)
    assert list(got.columns) == list(want.columns) == [*output_columns(["NEG", "NEUTRAL", "POS"])]
    assert got["label"].tolist() == want["label"].tolist()
    assert (got["prob_NEUTRAL"] - want["prob_NEUTRAL"]).abs().max() < 1e-6
