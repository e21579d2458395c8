"""`sentiment-lab predict`: texts as arguments, and CSV/JSONL/Parquet files with bad rows streamed in chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sentiment_lab.batch_predict import predict_file
from sentiment_lab.cli import main
from sentiment_lab.errors import DataError
from sentiment_lab.predictor import Predictor

GOOD = ["A wonderful, moving film.", "Dull, and far too long.", "The cast is great.\nThe plot, less so.", "Meh"]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    return pd.read_csv(path, keep_default_na=False, dtype={"id": str})


def test_predict_texts_prints_a_table(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tiny_model_dir), "A wonderful film.", "Awful."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["label", "score", "prob_pos", "needs_review"]
    assert len(out) == 4 and all(line.split()[0] in ("NEGATIVE", "POSITIVE") for line in out[2:])


def test_predict_texts_json_matches_the_api(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(tiny_model_dir), *GOOD[:2], "--json", "--review-threshold", "0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = Predictor.load(tiny_model_dir, review_threshold=0.1).predict(GOOD[:2])
    assert [{k: v for k, v in p.items() if k != "text"} for p in printed] == expected
    assert not any(p["needs_review"] for p in printed)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["", "fine"], "text 0 is empty"),
        ([], "give texts to label"),
        (["--input", "x.csv"], "--input and --output go together"),
        (["hi", "--backend", "onnx"], "sentiment-lab export"),
        (["hi", "--int8"], "--int8 needs --backend onnx"),
    ],
)
def test_predict_mistakes_exit_2_with_one_line(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["predict", str(tiny_model_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err


def _write_csv_with_bad_rows(path: Path) -> None:
    # Row 2 is empty, row 4 whitespace only, row 5 has too many fields (malformed), row 3 spans two lines.
    path.write_text(
        "id,text,rating\n"
        f'a,"{GOOD[0]}",9\n'
        f'b,"{GOOD[1]}",2\n'
        "c,,5\n"
        f'd,"{GOOD[2]}",7\n'
        'e,"   ",1\n'
        "f,too,many,fields\n"
        f"g,{GOOD[3]},x\n",
        encoding="utf-8",
    )


def test_csv_with_bad_rows_is_predicted_and_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    _write_csv_with_bad_rows(source)
    predictor = Predictor.load(tiny_model_dir)
    summary = predict_file(predictor, source, target, chunk_rows=2, progress=False)
    assert (summary["rows"], summary["predicted"]) == (6, 4)
    assert (summary["empty"], summary["invalid"], summary["malformed"], summary["skipped"]) == (2, 0, 1, 3)
    assert summary["skipped_rows_first"] == [2, 4]
    out = _read(target)
    assert out.columns.tolist() == ["row", "id", "label", "score", "prob_pos", "needs_review"]
    assert out["row"].tolist() == [0, 1, 3, 5] and out["id"].tolist() == ["a", "b", "d", "g"]
    expected = predictor.predict(GOOD)
    assert out["prob_pos"].tolist() == pytest.approx([p["prob_pos"] for p in expected], abs=1e-6)
    assert out["label"].tolist() == [p["label"] for p in expected]


def test_jsonl_with_bad_lines_goes_to_parquet(tiny_model_dir: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    lines = [
        json.dumps({"id": 1, "review": GOOD[0]}),
        "{not json",
        json.dumps({"id": 2, "review": 42}),
        json.dumps({"id": 3}),
        json.dumps(["a", "list"]),
        "",  # blank lines are not rows
        json.dumps({"id": 4, "review": GOOD[1]}),
    ]
    source.write_bytes(("\n".join(lines) + "\n").encode() + b'{"id": 5, "review": "caf\xe9"}\n')  # latin-1 byte
    summary = predict_file(Predictor.load(tiny_model_dir), source, target, text_column="review", progress=False)
    assert (summary["rows"], summary["predicted"], summary["invalid"], summary["empty"]) == (7, 2, 5, 0)
    out = _read(target)
    assert out["row"].tolist() == [0, 5] and out["id"].tolist() == ["1", "4"]
    assert out["needs_review"].dtype == bool


def test_parquet_streams_in_chunks_to_jsonl_via_cli(
    tiny_model_dir: Path, tmp_path: Path, imdb_sample: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [*imdb_sample["text"].head(10).tolist(), None, "", *GOOD]
    source, target = tmp_path / "in.parquet", tmp_path / "out.jsonl"
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), source, row_group_size=4)
    argv = ["predict", str(tiny_model_dir), "--input", str(source), "--output", str(target), "--chunk-rows", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "14 of 16 rows predicted" in out and "skipped 2 rows: 1 empty text, 1 not text" in out
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["row"] for r in rows] == [*range(10), 12, 13, 14, 15] and all(r["id"] is None for r in rows)
    kept = [t for t in texts if t]
    expected = Predictor.load(tiny_model_dir).predict(kept)
    assert [r["prob_pos"] for r in rows] == pytest.approx([p["prob_pos"] for p in expected], abs=1e-6)


def test_missing_column_fails_cleanly_and_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("review\nhello\n")
    with pytest.raises(DataError, match=r"no column 'text'.*--text-column"):
        predict_file(Predictor.load(tiny_model_dir), source, target, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no temp file


@pytest.mark.parametrize(
    ("source_name", "target_name", "match"),
    [
        ("in.txt", "out.csv", "unsupported format"),
        ("in.csv", "out.xlsx", "unsupported format"),
        ("missing.csv", "out.csv", "not found"),
        ("in.csv", "in.csv", "is the input file"),
    ],
)
def test_file_mistakes_are_named(
    tiny_model_dir: Path, tmp_path: Path, source_name: str, target_name: str, match: str
) -> None:
    for name in ("in.txt", "in.csv"):
        (tmp_path / name).write_text("text\nhello\n")
    with pytest.raises(DataError, match=match):
        predict_file(Predictor.load(tiny_model_dir), tmp_path / source_name, tmp_path / target_name, progress=False)


def test_empty_input_file_is_one_error_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_bytes(b"")
    assert main(["predict", str(tiny_model_dir), "--input", str(source), "--output", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: input file {source} is empty (0 bytes); give a file with a header row and "
                                "a 'text' column"]  # fmt: skip
    source.write_text("\n\n")
    with pytest.raises(DataError, match="needs a header row"):
        predict_file(Predictor.load(tiny_model_dir), source, target, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_file_with_no_rows_predicts_nothing(tiny_model_dir: Path, tmp_path: Path, suffix: str) -> None:
    source, target = tmp_path / f"in{suffix}", tmp_path / f"out{suffix}"
    if suffix == ".csv":
        source.write_text("id,text\n")
    elif suffix == ".jsonl":
        source.write_text("\n")
    else:
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), source)
    summary = predict_file(Predictor.load(tiny_model_dir), source, target, progress=False)
    assert (summary["rows"], summary["predicted"], summary["skipped"]) == (0, 0, 0)
    assert target.is_file() and len(_read(target)) == 0 if suffix != ".jsonl" else target.read_text() == ""
