"""Inference: logits and predictions for many texts, length-sorted batches, truncation identical to training.

`compute_logits` is the torch path training and evaluation use. `Predictor` wraps a saved model folder for
`predict`, `serve` and `bench`: a torch or ONNX Runtime backend, the calibrated temperature and review threshold
stored in `sentiment_lab.json`, and `long_text="chunk"`, which averages the logits of overlapping windows so
nothing of a long review is ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment_lab.errors import ConfigError, DataError, InputError, ModelError
from sentiment_lab.metrics import softmax
from sentiment_lab.modeling import ID2LABEL
from sentiment_lab.tokenization import SETTINGS_FILE, TextSettings, encode_texts, special_token_frame

DEFAULT_REVIEW_THRESHOLD = 0.70  # the seed policy: below 70% confidence a person looks at the review
ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
BACKENDS = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LONG_TEXT_MODES = ("truncate", "chunk")

# (input_ids, attention_mask), both int64 (batch, seq) -> logits float32 (batch, labels)
Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def chunk_windows(ids: list[int], budget: int, overlap: int) -> list[list[int]]:
    """Evenly spaced windows of `budget` ids covering all of `ids`, consecutive ones sharing about `overlap` ids.

    Every window is full length (unlike a fixed stride, which leaves a short last window weighing as much
    as a full one in the average).
    """
    if len(ids) <= budget:
        return [ids]
    count = math.ceil((len(ids) - overlap) / (budget - overlap))
    starts = np.linspace(0, len(ids) - budget, count).round().astype(int)
    return [ids[s : s + budget] for s in starts]


def encode_windows(
    tokenizer: Any, texts: list[str], settings: TextSettings, long_text: str = "truncate", stride: int | None = None
) -> tuple[list[list[int]], np.ndarray]:
    """Model inputs (token ids with special tokens) and, for each, the index of the text it came from.

    `truncate` gives one sequence per text, cut exactly as in training; `chunk` splits a text longer than
    max_length into overlapping windows (`stride` ids shared by neighbours) and leaves shorter texts as they are.
    """
    if long_text == "truncate":
        return encode_texts(tokenizer, texts, settings)["input_ids"], np.arange(len(texts))
    from sentiment_lab.data import preprocess_text

    if settings.lowercase or settings.strip_html:
        texts = [preprocess_text(t, settings.lowercase, settings.strip_html) for t in texts]
    prefix, suffix = special_token_frame(tokenizer)
    budget = settings.max_length - len(prefix) - len(suffix)
    overlap = default_stride(settings, tokenizer) if stride is None else stride
    sequences: list[list[int]] = []
    owners: list[int] = []
    for i, ids in enumerate(tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]):
        for window in chunk_windows(ids, budget, overlap):
            sequences.append(prefix + window + suffix)
            owners.append(i)
    return sequences, np.asarray(owners, dtype=np.int64)


def default_stride(settings: TextSettings, tokenizer: Any) -> int:
    """Tokens shared by neighbouring windows in chunk mode: a quarter of the window."""
    prefix, suffix = special_token_frame(tokenizer)
    return (settings.max_length - len(prefix) - len(suffix)) // 4


def batched_logits(
    sequences: list[list[int]], tokenizer: Any, runner: Runner, batch_size: int, progress: bool = False
) -> np.ndarray:
    """Run sequences through `runner` in batches of similar length (little padding); logits in input order."""
    order = np.argsort([len(ids) for ids in sequences], kind="stable")
    out: np.ndarray | None = None
    batches: Any = range(0, len(order), batch_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="predict", unit="batch")
    for start in batches:
        idx = order[start : start + batch_size]
        batch = tokenizer.pad(
            {"input_ids": [sequences[i] for i in idx], "attention_mask": [[1] * len(sequences[i]) for i in idx]},
            return_tensors="np",
        )
        logits = runner(batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64))
        if out is None:
            out = np.zeros((len(sequences), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 2), dtype=np.float32)


def average_by_owner(logits: np.ndarray, owners: np.ndarray, n: int) -> np.ndarray:
    """Mean logits of the windows of each text."""
    sums = np.zeros((n, logits.shape[-1]), dtype=np.float64)
    np.add.at(sums, owners, logits)
    return (sums / np.bincount(owners, minlength=n)[:, None]).astype(np.float32)


def torch_runner(model: Any, autocast_dtype: torch.dtype | None = None) -> Runner:
    """A runner for a transformers classifier on whatever device it sits."""
    device = next(model.parameters()).device
    model.eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        autocast = (
            torch.autocast(device_type=device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else nullcontext()
        )
        with torch.inference_mode(), autocast:
            out = model(
                input_ids=torch.from_numpy(input_ids).to(device),
                attention_mask=torch.from_numpy(attention_mask).to(device),
            )
        return out.logits.float().cpu().numpy()

    return run


def compiled_runner(model: Any, tokenizer: Any) -> Runner:
    """A torch runner through torch.compile, compiled now for batch 1 and batch > 1 (torch specialises on 1).

    Inductor with `freezing` folds the (inference-only) weights into the graph and pre-packs them for oneDNN;
    dynamic shapes keep one graph for every review length.
    """
    runner = torch_runner(torch.compile(model, dynamic=True, options={"freezing": True}))
    ids = tokenizer("compile warm-up")["input_ids"]
    try:
        for n in (1, 2):
            runner(np.array([ids] * n, dtype=np.int64), np.ones((n, len(ids)), dtype=np.int64))
    except Exception as exc:  # a missing C++ compiler, an unsupported op: the eager model still works
        raise ModelError(
            f"torch.compile failed on this machine ({type(exc).__name__}: {str(exc)[:300]}); run without --compile"
        ) from None
    return runner


def onnx_runner(path: str | Path, threads: int | None = None, spin: bool = True) -> Runner:
    """A runner for an exported ONNX classifier on ONNX Runtime's CPU provider.

    spin=False stops ONNX Runtime's threads from busy-waiting after each call, which otherwise takes the cores
    from whatever runs next in the process (a benchmark timing other backends in turn, for one).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Same thread count as torch by default, so backends compare like for like.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        return session.run(None, feed)[0].astype(np.float32)

    return run


def compute_logits(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    settings: TextSettings,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits (n, 2) in input order; batches are sorted by length so little padding is computed."""
    sequences, _ = encode_windows(tokenizer, texts, settings)
    return batched_logits(sequences, tokenizer, torch_runner(model, autocast_dtype), batch_size, progress)


def check_texts(texts: Any) -> list[str]:
    """The texts as a list, or InputError naming the first unusable one (not a string, empty, whitespace)."""
    if isinstance(texts, str):
        raise InputError("predict() takes a list of texts, not one string; wrap it: predict([text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a string; give review texts as strings")
        if not t.strip():
            raise InputError(f"text {i} is empty or whitespace only; remove it or give the review's text")
    return texts


def _read_model_extras(model_dir: Path) -> dict[str, Any]:
    path = model_dir / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); restore it or delete it to use the defaults") from None


def _check_threshold(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{what} must be a probability between 0 and 1 (e.g. 0.7), got {value!r}")
    return float(value)


def _label_order(config: Any) -> tuple[list[str], int]:
    """Label names by class index and the index of the positive class (0=NEGATIVE, 1=POSITIVE unless named)."""
    if config.num_labels != 2:
        raise ModelError(f"the model has {config.num_labels} labels; sentiment-lab predicts binary sentiment (2)")
    names = [str(config.id2label.get(i, "")).upper() for i in range(2)]
    if sorted(names) == ["NEGATIVE", "POSITIVE"]:
        return names, names.index("POSITIVE")
    return [ID2LABEL[0], ID2LABEL[1]], 1  # generic LABEL_0/LABEL_1: the project's convention


class Predictor:
    """Predictions for raw review texts from a saved model folder (or run folder) with a torch or ONNX backend."""

    def __init__(
        self,
        model_dir: Path,
        backend: str,
        tokenizer: Any,
        settings: TextSettings,
        runner: Runner,
        labels: list[str],
        positive_index: int = 1,
        temperature: float = 1.0,
        review_threshold: float = DEFAULT_REVIEW_THRESHOLD,
        batch_size: int = 32,
        long_text: str = "truncate",
        stride: int | None = None,
        onnx_file: Path | None = None,
        model: Any = None,
        precision: str = "fp32",
        compiled: bool = False,
    ) -> None:
        self.model_dir = model_dir
        self.backend = backend
        self.tokenizer = tokenizer
        self.settings = settings
        self.runner = runner
        self.labels = labels
        self.positive_index = positive_index
        self.temperature = temperature
        self.review_threshold = review_threshold
        self.batch_size = batch_size
        self.long_text = long_text
        self.stride = stride
        self.onnx_file = onnx_file
        self.model = model  # the torch module behind the torch backend (export traces it); None for ONNX
        self.precision = precision  # what the torch backend computes in (fp32, bf16, fp16); onnx: fp32 or int8
        self.compiled = compiled  # torch backend run through torch.compile

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        backend: str = "torch",
        batch_size: int = 32,
        long_text: str = "truncate",
        review_threshold: float | None = None,
        *,
        quantized: bool = False,
        stride: int | None = None,
        threads: int | None = None,
        allow_pickle: bool = False,
        precision: str = "auto",
        device: str | None = None,
        compile: bool = False,
    ) -> Predictor:
        """Load a model folder (or a run folder's model/) for prediction.

        backend: `torch` (the safetensors weights) or `onnx` (MODEL_DIR/onnx/model.onnx, or model.int8.onnx
        with quantized=True; written by `sentiment-lab export`).
        long_text: `truncate` (as in training) or `chunk` (average overlapping windows; `stride` ids shared).
        review_threshold: needs_review when the top probability is below it; default the folder's calibrated
        `abstain_threshold`, else 0.70.
        threads: ONNX Runtime intra-op threads (default: torch's thread count).
        allow_pickle: load `.bin` pickle weights when the folder has no safetensors (only for trusted sources).
        precision: torch backend weights and compute: `auto` is bf16 on CPUs with native bf16 and on CUDA (fp16
        where CUDA has no bf16), fp32 elsewhere; or fp32 / bf16 / fp16.
        device: torch backend device (default: cuda when available, else cpu).
        compile: torch backend through `torch.compile` (Inductor, frozen weights, dynamic shapes), compiled here
        for one and for several texts (tens of seconds). Measured on a 2-core CPU: batch-1 p50 18.7 ms vs 22.1 ms
        eager bf16 (docs/performance.md). Needs a C++ compiler on CPU.
        """
        from transformers import AutoConfig

        from sentiment_lab.evaluation import locate_model
        from sentiment_lab.modeling import load_classifier, load_tokenizer
        from sentiment_lab.tokenization import load_text_settings
        from sentiment_lab.training import resolve_precision

        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if long_text not in LONG_TEXT_MODES:
            raise ConfigError(f"unknown long_text mode {long_text!r}; use one of {', '.join(LONG_TEXT_MODES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if compile and backend != "torch":
            raise ConfigError("compile=True needs backend='torch' (ONNX Runtime optimises its own graph)")
        if quantized and backend != "onnx":
            raise ConfigError("quantized=True needs backend='onnx' (the INT8 model is an ONNX file)")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        folder, _ = locate_model(model_dir)
        tokenizer = load_tokenizer(str(folder))
        settings = load_text_settings(folder, tokenizer)
        budget = settings.max_length - sum(len(part) for part in special_token_frame(tokenizer))
        if stride is not None and not 0 <= stride < budget:
            raise ConfigError(
                f"stride must be between 0 and {budget - 1} tokens (the window holds {budget}), got {stride}"
            )

        extras = _read_model_extras(folder)
        temperature = extras.get("temperature", 1.0)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
            raise ModelError(f"{folder / SETTINGS_FILE}: temperature must be a positive number, got {temperature!r}")
        if review_threshold is not None:
            threshold = _check_threshold(review_threshold, "review_threshold")
        elif extras.get("abstain_threshold") is not None:
            threshold = _check_threshold(extras["abstain_threshold"], f"{folder / SETTINGS_FILE}: abstain_threshold")
        else:
            threshold = DEFAULT_REVIEW_THRESHOLD

        onnx_file = model = None
        if backend == "onnx":
            onnx_file = folder / ONNX_DIR / (ONNX_INT8_FILE if quantized else ONNX_FILE)
            if not onnx_file.is_file():
                flag = " --quantize int8" if quantized else ""
                raise ModelError(
                    f"no ONNX model at {onnx_file}; export it first: sentiment-lab export {model_dir} --onnx{flag}"
                )
            runner = onnx_runner(onnx_file, threads)
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
        else:
            model = load_classifier(folder, allow_pickle=allow_pickle)
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            precision = resolve_precision(precision)
            # Inference only: half-precision weights, not autocast, which re-casts every weight on every call
            # (measured: batch-1 latency halved on CPU; autocast gained nothing there).
            model.to(PRECISION_DTYPES[precision])
            runner = compiled_runner(model, tokenizer) if compile else torch_runner(model)
            config = model.config
        labels, positive = _label_order(config)
        return cls(
            folder,
            backend,
            tokenizer,
            settings,
            runner,
            labels,
            positive,
            float(temperature),
            threshold,
            batch_size,
            long_text,
            stride,
            onnx_file,
            model if backend == "torch" else None,
            precision if backend == "torch" else ("int8" if quantized else "fp32"),
            compiled=compile,
        )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, 2) in input order; in chunk mode the mean over each text's windows."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, 2), dtype=np.float32)
        sequences, owners = encode_windows(self.tokenizer, texts, self.settings, self.long_text, self.stride)
        window_logits = batched_logits(sequences, self.tokenizer, self.runner, self.batch_size)
        if self.long_text == "truncate":
            return window_logits
        return average_by_owner(window_logits, owners, len(texts))

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One {label, score, prob_pos, needs_review} per text, in input order; empty texts raise InputError."""
        logits = self.logits(texts)
        probs = softmax(logits.astype(np.float64) / self.temperature)
        top = probs.argmax(axis=-1)
        score = probs.max(axis=-1)
        return [
            {
                "label": self.labels[int(k)],
                "score": float(s),
                "prob_pos": float(p[self.positive_index]),
                "needs_review": bool(s < self.review_threshold),
            }
            for k, s, p in zip(top, score, probs, strict=True)
        ]

    def info(self) -> dict[str, Any]:
        """What the predictor does: model folder, backend, truncation, temperature, review threshold, labels."""
        return {
            "model_dir": str(self.model_dir),
            "backend": self.backend,
            "precision": self.precision,
            "onnx_file": self.onnx_file.name if self.onnx_file else None,
            "max_length": self.settings.max_length,
            "truncation": self.settings.truncation,
            "long_text": self.long_text,
            "stride": self.stride if self.stride is not None else default_stride(self.settings, self.tokenizer),
            "temperature": self.temperature,
            "review_threshold": self.review_threshold,
            "labels": list(self.labels),
            "batch_size": self.batch_size,
            "compiled": self.compiled,
        }


# Batch prediction over files -------------------------------------------------------------------------------------

FILE_SUFFIXES = (".csv", ".jsonl", ".parquet")
OUTPUT_COLUMNS = ("row", "id", "label", "score", "prob_pos", "needs_review")


def _file_format(path: Path, role: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise DataError(f"{role} file {path} has an unsupported format; use one of {', '.join(FILE_SUFFIXES)}")
    return suffix[1:]


def _read_csv_chunks(path: Path, text_column: str, rows: int) -> Iterator[tuple[list[Any], list[Any] | None, int]]:
    import pyarrow as pa
    from pyarrow import csv

    malformed = 0

    def skip_malformed(row: Any) -> str:
        nonlocal malformed
        malformed += 1
        return "skip"

    parse = csv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip_malformed)
    read = csv.ReadOptions(block_size=1 << 20)
    names = csv.open_csv(path, read_options=read, parse_options=parse).schema.names
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
    import pyarrow.parquet as pq

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

    def __init__(self, path: Path, fmt: str) -> None:
        import pyarrow as pa

        self.path, self.fmt = path, fmt
        self.schema = pa.schema(
            [
                ("row", pa.int64()),
                ("id", pa.string()),
                ("label", pa.string()),
                ("score", pa.float64()),
                ("prob_pos", pa.float64()),
                ("needs_review", pa.bool_()),
            ]
        )
        self.writer: Any = None
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(path, self.schema)
        elif fmt == "csv":
            from pyarrow import csv

            self.writer = csv.CSVWriter(path, self.schema)
        else:
            self.writer = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, rows: dict[str, list[Any]]) -> None:
        import pyarrow as pa

        if self.fmt == "jsonl":
            for values in zip(*(rows[c] for c in OUTPUT_COLUMNS), strict=True):
                self.writer.write(json.dumps(dict(zip(OUTPUT_COLUMNS, values, strict=True))) + "\n")
        else:
            self.writer.write_table(pa.Table.from_pydict(rows, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


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
    (when the input has one), label, score, prob_pos and needs_review, and is written atomically. Rows whose
    text is empty or not text, and malformed CSV lines, are skipped and counted, not fatal. Returns the counts.
    """
    import time

    from sentiment_lab.io import atomic_path

    source, target = Path(input_path), Path(output_path)
    in_fmt, out_fmt = _file_format(source, "input"), _file_format(target, "output")
    if not source.is_file():
        raise DataError(f"input file not found: {source}")
    if target.resolve() == source.resolve():
        raise DataError(f"output {target} is the input file; write the predictions to another file")
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
    readers = {"csv": _read_csv_chunks, "parquet": _read_parquet_chunks, "jsonl": _read_jsonl_chunks}
    total = None
    if in_fmt == "parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(source).metadata.num_rows
    from tqdm.auto import tqdm

    counts = {"rows": 0, "predicted": 0, "empty": 0, "invalid": 0, "malformed": 0}
    skipped_examples: list[int] = []
    start = time.perf_counter()
    with atomic_path(target) as tmp, tqdm(total=total, unit="row", desc="predict", disable=not progress) as bar:
        writer = _ChunkWriter(tmp, out_fmt)
        try:
            for texts, ids, malformed in readers[in_fmt](source, text_column, chunk_rows):
                counts["malformed"] += malformed
                keep: list[int] = []
                for i, value in enumerate(texts):
                    if isinstance(value, bytes):
                        try:
                            value = texts[i] = value.decode("utf-8")
                        except UnicodeDecodeError:
                            value = None
                    if not isinstance(value, str):
                        counts["invalid"] += 1
                    elif not value.strip():
                        counts["empty"] += 1
                    else:
                        keep.append(i)
                        continue
                    if len(skipped_examples) < 10:
                        skipped_examples.append(counts["rows"] + i)
                preds = predictor.predict([texts[i] for i in keep])
                writer.write(
                    {
                        "row": [counts["rows"] + i for i in keep],
                        "id": [None if ids is None or ids[i] is None else str(ids[i]) for i in keep],
                        "label": [p["label"] for p in preds],
                        "score": [p["score"] for p in preds],
                        "prob_pos": [p["prob_pos"] for p in preds],
                        "needs_review": [p["needs_review"] for p in preds],
                    }
                )
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
