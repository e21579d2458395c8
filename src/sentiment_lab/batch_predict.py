"""Batch prediction over files: a CSV, JSONL or Parquet file in, another out, chunk by chunk (constant memory).

Rows whose text is empty or not text, and malformed CSV lines, are skipped and counted, never fatal. A file of
0 bytes is refused with one error; a file with a header and no rows predicts nothing and writes an output with
only the header (or an empty JSONL file).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv
from tqdm.auto import tqdm

from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.io import atomic_path
from sentiment_lab.predictor import Predictor

FILE_SUFFIXES = (".csv", ".jsonl", ".parquet")
OUTPUT_COLUMNS = ("row", "id", "label", "score", "prob_pos", "needs_review")  # a binary model's output


def output_columns(labels: list[str]) -> tuple[str, ...]:
    """The output columns for a model with these class names: binary as ever, else prob_<NAME> per class."""
    if len(labels) == 2:
        return OUTPUT_COLUMNS
    return ("row", "id", "label", "score", "needs_review", *(f"prob_{name}" for name in labels))


def _file_format(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"{role} file {path} has an unsupported format; use one of {', '.join(FILE_SUFFIXES)}")
    return suffix[1:]


def _read_csv_chunks(path: Path, text_column: str, rows: int) -> Iterator[tuple[list[Any], list[Any] | None, int]]:
    malformed = 0

    def skip_malformed(row: Any) -> str:
        nonlocal malformed
        malformed += 1
        return "skip"

    parse = csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip_malformed)
    read = csv.ReadOptions(block_size=1 << 20)
    try:
        names = csv.open_csv(path, read_options=read, parse_options=parse).schema.names
    except pa.ArrowInvalid as exc:  # e.g. only blank lines: "Empty CSV file or block"
        raise DataError(f"cannot read CSV file {path}: {exc}; it needs a header row with a column of texts") from None
    malformed = 0  # the probe above parsed the first block; its bad lines are counted again below
    if text_column not in names:
        raise DataError(f"{path} has no column '{text_column}'; its columns are {names} (set --text-column)")
    # Every column is read as text: inferring types from the first block breaks on a later one that differs.
    # The text column is read as bytes so a row that is not UTF-8 is skipped rather than failing the file.
    types = {name: pa.string() for name in names} | {text_column: pa.binary()}
    convert = csv.ConvertOptions(column_types=types, strings_can_be_null=False, quoted_strings_can_be_null=False)
    reader = csv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    pending: list[Any] = []
    pending_ids: list[Any] = []
    for batch in reader:
        pending += batch.column(text_column).to_pylist()
        if "id" in names:
            pending_ids += batch.column("id").to_pylist()
        while len(pending) >= rows:
            yield pending[:rows], pending_ids[:rows] if "id" in names else None, malformed
            pending, pending_ids, malformed = pending[rows:], pending_ids[rows:], 0
    if pending or malformed:
        yield pending, pending_ids if "id" in names else None, malformed


def _read_parquet_chunks(path: Path, text_column: str, rows: int) -> Iterator[tuple[list[Any], list[Any] | None, int]]:
    try:
        source = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"cannot read Parquet file {path}: {type(exc).__name__}: {exc}") from None
    names = source.schema_arrow.names
    if text_column not in names:
        raise DataError(f"{path} has no column '{text_column}'; its columns are {names} (set --text-column)")
    columns = [text_column, *(["id"] if "id" in names and text_column != "id" else [])]
    for batch in source.iter_batches(batch_size=rows, columns=columns):
        ids = batch.column("id").to_pylist() if "id" in columns else None
        yield batch.column(text_column).to_pylist(), ids, 0


def _read_jsonl_chunks(path: Path, text_column: str, rows: int) -> Iterator[tuple[list[Any], list[Any] | None, int]]:
    texts: list[Any] = []
    ids: list[Any] = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:  # bad JSON or bad UTF-8: the row is kept in the count and skipped as invalid
                record = None
            record = record if isinstance(record, dict) else {}
            texts.append(record.get(text_column))
            ids.append(record.get("id"))
            if len(texts) == rows:
                yield texts, ids, 0
                texts, ids = [], []
    if texts:
        yield texts, ids, 0


class _ChunkWriter:
    """Appends prediction rows to a CSV, JSONL or Parquet file, one chunk at a time."""

    def __init__(self, path: Path, fmt: str, columns: tuple[str, ...] = OUTPUT_COLUMNS) -> None:
        self.path, self.fmt, self.columns = path, fmt, columns
        types = {"row": pa.int64(), "id": pa.string(), "label": pa.string(), "needs_review": pa.bool_()}
        self.schema = pa.schema([(c, types.get(c, pa.float64())) for c in columns])
        self.writer: Any = None
        if fmt == "parquet":
            self.writer = pq.ParquetWriter(path, self.schema)
        elif fmt == "csv":
            self.writer = csv.CSVWriter(path, self.schema)
        else:
            self.writer = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, rows: dict[str, list[Any]]) -> None:
        if self.fmt == "jsonl":
            for values in zip(*(rows[c] for c in self.columns), strict=True):
                self.writer.write(json.dumps(dict(zip(self.columns, values, strict=True))) + "\n")
        else:
            self.writer.write_table(pa.Table.from_pydict(rows, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def row_text(value: Any) -> tuple[str | None, str]:
    """(the row's text, "") for a usable value, else (None, "invalid") for a missing, non-string or non-UTF-8 value
    or (None, "empty") for an empty or whitespace-only one. Local and Ray batch prediction skip rows alike."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None, "invalid"
    if not isinstance(value, str):
        return None, "invalid"
    if not value.strip():
        return None, "empty"
    return value, ""


def check_files(source: Path, target: Path, text_column: str = "text") -> tuple[str, str]:
    """The input and output formats, or DataError for a file the prediction could not use (checked before a model
    loads): unsupported suffix, missing or empty input, output that is the input."""
    in_fmt, out_fmt = _file_format(source, "input"), _file_format(target, "output")
    if not source.is_file():
        raise DataError(f"input file not found: {source}")
    if target.resolve() == source.resolve():
        raise DataError(f"output {target} is the input file; write the predictions to another file")
    if source.stat().st_size == 0:
        raise DataError(
            f"input file {source} is empty (0 bytes); give a file with a header row and a '{text_column}' column"
        )
    return in_fmt, out_fmt


def predict_file(
    predictor: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    text_column: str = "text",
    chunk_rows: int = 1024,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every row of a CSV, JSONL or Parquet file into another, chunk by chunk (constant memory).

    The output (format from its suffix) holds row (0-based input row; a malformed CSV line is not a row), id
    (when the input has one), label, score, prob_pos and needs_review (a model of K > 2 classes: label, score,
    needs_review and prob_<NAME> per class instead of prob_pos), and is written atomically. Rows whose
    text is empty or not text, and malformed CSV lines, are skipped and counted, not fatal. Returns the counts.
    """
    source, target = Path(input_path), Path(output_path)
    in_fmt, out_fmt = check_files(source, target, text_column)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
    readers = {"csv": _read_csv_chunks, "parquet": _read_parquet_chunks, "jsonl": _read_jsonl_chunks}
    total = pq.ParquetFile(source).metadata.num_rows if in_fmt == "parquet" else None

    counts = {"rows": 0, "predicted": 0, "empty": 0, "invalid": 0, "malformed": 0}
    skipped_examples: list[int] = []
    start = time.perf_counter()
    with atomic_path(target) as tmp, tqdm(total=total, unit="row", desc="predict", disable=not progress) as bar:
        columns = output_columns(predictor.labels)
        writer = _ChunkWriter(tmp, out_fmt, columns)
        try:
            for texts, ids, malformed in readers[in_fmt](source, text_column, chunk_rows):
                counts["malformed"] += malformed
                keep: list[int] = []
                for i, value in enumerate(texts):
                    texts[i], kind = row_text(value)
                    if not kind:
                        keep.append(i)
                        continue
                    counts[kind] += 1
                    if len(skipped_examples) < 10:
                        skipped_examples.append(counts["rows"] + i)
                preds = predictor.predict([texts[i] for i in keep])
                rows = {
                    "row": [counts["rows"] + i for i in keep],
                    "id": [None if ids is None or ids[i] is None else str(ids[i]) for i in keep],
                    "label": [p["label"] for p in preds],
                    "score": [p["score"] for p in preds],
                    "needs_review": [p["needs_review"] for p in preds],
                }
                for column in columns:
                    if column == "prob_pos":
                        rows[column] = [p["prob_pos"] for p in preds]
                    elif column.startswith("prob_"):
                        rows[column] = [p["probs"][column.removeprefix("prob_")] for p in preds]
                writer.write(rows)
                counts["rows"] += len(texts)
                counts["predicted"] += len(keep)
                bar.update(len(texts))
        finally:
            writer.close()
    elapsed = time.perf_counter() - start
    skipped = counts["empty"] + counts["invalid"] + counts["malformed"]
    return {
        "input": str(source),
        "output": str(target),
        **counts,
        "skipped": skipped,
        "skipped_rows_first": skipped_examples,
        "seconds": elapsed,
        "reviews_per_s": counts["predicted"] / elapsed if elapsed > 0 else None,
    }
