"""Batch prediction on a Ray cluster: CSV/JSONL/Parquet files in, a folder of Parquet shards out.

The same `Predictor` as local `predict`, run by a pool of Ray Data actors that each load the model once
(`map_batches` with a callable class and `ActorPoolStrategy`). Ray reads the input on the workers (a file, a
folder or a glob, on any filesystem pyarrow opens: local or shared paths, s3://, gs://, hdfs://); the driver
streams the small results back in input order, numbers the rows, counts the skipped ones and writes the shards,
so its memory stays flat however large the input. The output has the columns of local `predict` (prob_pos for
a binary model, prob_<NAME> per class otherwise) and appears all at once: shards are written into a temp folder
beside it, which is renamed into place when every row is done. Ray is an optional extra
(`pip install "sentiment-lab[ray]"`), imported only here and only when a job runs.

Rows are skipped and counted as in local `predict`: an empty text ("empty"), a missing, non-string or non-UTF-8
value or a JSONL line that is not an object ("invalid"). Malformed CSV lines are skipped and logged by the worker
that reads them, but not counted: Ray's CSV reader gives the driver no count.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from pyarrow import csv
from pyarrow import fs as pafs
from transformers.utils import logging as hf_logging

from sentiment_lab.batch_predict import FILE_SUFFIXES, output_columns, row_text
from sentiment_lab.errors import ConfigError, DataError, SentimentLabError
from sentiment_lab.predictor import Predictor
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.rundir import ONNX_DIR, ONNX_FILE, ONNX_INT8_FILE, is_ensemble, locate_model, verify_ensemble

log = logging.getLogger("sentiment_lab")

RAY_EXTRA = 'pip install "sentiment-lab[ray]"'
SUMMARY_FILE = "_summary.json"  # underscore: Parquet dataset readers (pandas, pyarrow, Spark) skip it
SHARD_NAME = "part-{:05d}.parquet"
# Types of the output columns as local predict writes them; every probability column is float64.
COLUMN_TYPES = {"row": pa.int64(), "id": pa.string(), "label": pa.string(), "needs_review": pa.bool_()}
SCORER_ONLY = ("kind", "worker", "restarted")  # columns of the scorer's batches that stay with the driver


def result_columns(labels: list[str]) -> list[str]:
    """local predict's prediction columns (all but row and id) for a model of these classes."""
    return [c for c in output_columns(labels) if c not in ("row", "id")]


def output_schema(columns: list[str]) -> pa.Schema:
    """row, id, then the prediction columns, typed as local predict types them."""
    return pa.schema([(c, COLUMN_TYPES.get(c, pa.float64())) for c in ["row", "id", *columns]])


# Logical CPUs: a read task asks for a quarter (reading and parsing is light next to scoring), the task that cuts
# blocks to batch size for a whole one. Each scoring actor runs `threads` threads but asks for 1.25 CPUs fewer
# (at least a quarter), so that a pool filling a node still leaves room for one read and one cutting task there:
# with whole CPUs per actor those tasks never start and the job hangs (measured on 2 cores).
READ_CPUS = 0.25
TASK_RESERVE = READ_CPUS + 1.0
MIN_ACTOR_CPUS = 0.25
GLOB_CHARS = "*?["


class RayClusterError(SentimentLabError):
    """The Ray cluster cannot be reached, or the job failed on it."""


def _import_ray() -> Any:
    try:
        import ray  # optional extra: only `predict --engine ray` needs it, and it takes a second to import
        import ray.data  # Ray Data: a submodule that `import ray` does not load
    except ImportError:
        raise ConfigError(f"--engine ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


# Inputs ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InputFiles:
    """The files of an input spec, their format and the filesystem they live on."""

    spec: str
    paths: list[str]
    fmt: str  # csv | jsonl | parquet
    filesystem: Any  # a pyarrow.fs.FileSystem
    has_id: bool  # every file has the id column

    def display(self, path: str) -> str:
        """A path as the user would write it (with its URI scheme when the spec had one)."""
        scheme = urlparse(self.spec).scheme if "://" in self.spec else ""
        return f"{scheme}://{path}" if scheme else path


def _filesystem(spec: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of a local path or a URI such as s3://bucket/reviews/."""
    if "://" in spec:
        try:
            return pafs.FileSystem.from_uri(spec)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise DataError(f"cannot open the filesystem of {spec}: {exc}") from None
    return pafs.LocalFileSystem(), str(Path(spec).expanduser().resolve())


def _has_glob(spec: str) -> bool:
    return any(c in spec for c in GLOB_CHARS)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _expand_glob(spec: str) -> tuple[Any, list[str]]:
    if "://" not in spec:
        return pafs.LocalFileSystem(), sorted(
            str(Path(p).resolve()) for p in glob.glob(os.path.expanduser(spec), recursive=True) if Path(p).is_file()
        )
    # A remote glob: list everything under the part before the first wildcard, then match the full pattern.
    scheme_less = spec.split("://", 1)[1]
    stem = scheme_less[: min(scheme_less.index(c) for c in GLOB_CHARS if c in scheme_less)]
    base = stem.rsplit("/", 1)[0]
    filesystem, _ = _filesystem(spec.split("://", 1)[0] + "://" + base)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise DataError(f"cannot list {base} for --input {spec}: {exc}") from None
    pattern = _glob_regex(scheme_less)
    return filesystem, sorted(
        i.path
        for i in infos
        if i.type == pafs.FileType.File and not i.base_name.startswith(".") and pattern.match(i.path)  # as a shell
    )


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A shell glob as a regex, as `glob.glob` matches: `*` and `?` stay within a folder, `**/` spans folders."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] in "*?":
            parts.append("[^/]*" if pattern[i] == "*" else "[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            parts.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts) + r"\Z")


def resolve_inputs(spec: str, text_column: str = "text", id_column: str = "id") -> InputFiles:
    """The input files of a file, folder or glob, all of one format and with the text column; DataError otherwise.

    Checked on the driver before Ray starts: a glob that matches nothing, a folder of mixed or unsupported formats,
    an empty (0-byte) file, and a file without the text column are each one error naming the fix.
    """
    if _has_glob(spec):
        filesystem, paths = _expand_glob(spec)
        if not paths:
            raise DataError(f"no input files match {spec!r}; check the pattern (e.g. 'reviews/*.parquet')")
        where = f"the files matching {spec!r}"
    else:
        filesystem, path = _filesystem(spec)
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise DataError(f"input not found: {spec}")
        if info.type == pafs.FileType.Directory:
            infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
            paths = sorted(
                i.path for i in infos if i.type == pafs.FileType.File and not Path(i.path).name.startswith((".", "_"))
            )
            where = f"folder {spec}"
        else:
            paths, where = [path], f"input file {spec}"
    suffixes = sorted({_suffix(p) for p in paths})
    unsupported = [s or "(none)" for s in suffixes if s not in FILE_SUFFIXES]
    if unsupported:
        raise DataError(
            f"{where} holds files of unsupported formats ({', '.join(unsupported)}); prediction reads "
            f"{', '.join(FILE_SUFFIXES)} files: point --input at those only (e.g. a glob such as 'DIR/*.parquet')"
        )
    if not paths:
        raise DataError(f"{where} holds no {', '.join(FILE_SUFFIXES)} files")
    if len(suffixes) > 1:
        counts = ", ".join(f"{sum(_suffix(p) == s for p in paths)} {s}" for s in suffixes)
        raise DataError(
            f"{where} mixes file formats ({counts}); one job reads one format: point --input at one of them, "
            f"e.g. '{spec.rstrip('/')}/*{suffixes[0]}'"
        )
    fmt = suffixes[0][1:]
    has_id = True
    for path in paths:
        names = _column_names(filesystem, path, fmt, text_column)
        if text_column not in names:
            raise DataError(f"{path} has no column '{text_column}'; its columns are {names} (set --text-column)")
        has_id = has_id and id_column in names
    return InputFiles(spec, paths, fmt, filesystem, has_id)


def _column_names(filesystem: Any, path: str, fmt: str, text_column: str) -> list[str]:
    """The columns of one input file, from its header, schema or first JSON line (read on the driver)."""
    if filesystem.get_file_info(path).size == 0:
        raise DataError(
            f"input file {path} is empty (0 bytes); give a file with a header row and a '{text_column}' column"
        )
    try:
        if fmt == "parquet":
            return pq.read_schema(path, filesystem=filesystem).names
        with filesystem.open_input_stream(path) as stream:
            if fmt == "csv":
                return csv.open_csv(stream, parse_options=csv.ParseOptions(newlines_in_values=True)).schema.names
            return _first_record_keys(stream)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataError(f"cannot read {path} as {fmt.upper()}: {exc}") from None


def _first_record_keys(stream: Any, max_lines: int = 100) -> list[str]:
    """The keys of the first JSON object among the first lines of a JSONL stream (bad lines are skipped, as rows)."""
    buffered, seen = b"", 0
    while seen < max_lines:
        chunk = stream.read(1 << 16)
        buffered += chunk
        *complete, buffered = buffered.split(b"\n")
        if not chunk:
            complete.append(buffered)
        for line in complete:
            if not line.strip():
                continue
            seen += 1
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                return list(record)
        if not chunk:
            break
    return []


def _read_dataset(ray: Any, inputs: InputFiles, text_column: str, id_column: str) -> Any:
    """The Ray dataset of the input rows: the text column (and the id column when every file has it)."""
    columns = [text_column, *([id_column] if inputs.has_id and id_column != text_column else [])]
    common = {"filesystem": inputs.filesystem, "num_cpus": READ_CPUS}
    if inputs.fmt == "parquet":
        return ray.data.read_parquet(inputs.paths, **common).select_columns(columns)
    if inputs.fmt == "csv":
        # As local predict: every column as text (types inferred per block break on a later block that differs);
        # the text column as bytes, so a row that is not UTF-8 is counted as invalid instead of failing the file.
        types = {name: pa.string() for name in columns} | {text_column: pa.binary()}
        convert = csv.ConvertOptions(
            column_types=types,
            include_columns=columns,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        parse = csv.ParseOptions(newlines_in_values=True, invalid_row_handler=_skip_malformed_line)
        return ray.data.read_csv(inputs.paths, parse_options=parse, convert_options=convert, **common)
    # JSONL as lines, parsed by the scorer: a line that is not a JSON object is then one invalid row, as in local
    # predict, where Ray's JSON reader would fail the whole file. Blank lines are not rows (as local predict).
    return ray.data.read_text(inputs.paths, drop_empty_lines=True, **common)


def _skip_malformed_line(row: Any) -> str:
    """pyarrow's handler for a CSV line with the wrong number of fields: skip it, and say so in the worker's log."""
    log.warning("skipped a malformed CSV line (%s): %.80r", f"line {row.number}" if row.number else "?", row.text)
    return "skip"


# Scoring -----------------------------------------------------------------------------------------------------------


class BatchScorer:
    """The Ray Data callable class: each actor loads the Predictor once, then labels batch after batch.

    Every input row comes out, in order, with `kind` "" (predicted), "empty" or "invalid", so that the driver
    can number and count the rows; skipped rows carry no prediction.
    """

    def __init__(
        self,
        model_dir: str,
        options: dict[str, Any],
        text_column: str,
        id_column: str | None,
        jsonl: bool,
        threads: int,
    ) -> None:
        # Ray sets OMP_NUM_THREADS to 1 in its workers; the pool sizes each actor's threads itself.
        torch.set_num_threads(threads)
        hf_logging.set_verbosity_error()  # no "Loading weights" bar from every worker
        hf_logging.disable_progress_bar()
        start = time.perf_counter()
        self.predictor = Predictor.load(model_dir, PredictorOptions.model_validate(options))
        self.text_column, self.id_column, self.jsonl = text_column, id_column, jsonl
        self.columns = result_columns(self.predictor.labels)
        self.pid = os.getpid()
        # Ray restarts a worker that died (killed, out of memory) and runs its unfinished batches again.
        with warnings.catch_warnings():  # Ray's own property uses a deprecated attribute of the context
            warnings.simplefilter("ignore", DeprecationWarning)
            self.restarted = bool(_import_ray().get_runtime_context().was_current_actor_reconstructed)
        # Ray forwards a worker's stderr to the driver's (stdout holds the driver's --json summary).
        print(
            f"scoring worker pid {self.pid}: "
            + ("restarted after a worker died; " if self.restarted else "")
            + f"model loaded in {time.perf_counter() - start:.1f} s ({self.predictor.backend}, {threads} threads)",
            file=sys.stderr,
            flush=True,
        )

    def _texts_and_ids(self, batch: pa.Table) -> tuple[list[Any], list[Any]]:
        if not self.jsonl:
            texts = batch.column(self.text_column).to_pylist()
            ids = batch.column(self.id_column).to_pylist() if self.id_column else [None] * len(texts)
            return texts, ids
        texts, ids = [], []
        for line in batch.column("text").to_pylist():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            record = record if isinstance(record, dict) else {}
            texts.append(record.get(self.text_column))
            ids.append(record.get(self.id_column) if self.id_column else None)
        return texts, ids

    def __call__(self, batch: pa.Table) -> dict[str, list[Any]]:
        texts, ids = self._texts_and_ids(batch)
        kinds: list[str] = []
        keep: list[int] = []
        for i, value in enumerate(texts):
            texts[i], kind = row_text(value)
            kinds.append(kind)
            if not kind:
                keep.append(i)
        preds = iter(self.predictor.predict([texts[i] for i in keep]))
        rows = [self._values(next(preds)) if kind == "" else [None] * len(self.columns) for kind in kinds]
        out: dict[str, list[Any]] = {"kind": kinds, "id": [None if v is None else str(v) for v in ids]}
        out |= {"worker": [self.pid] * len(kinds), "restarted": [self.restarted] * len(kinds)}
        return out | {column: [r[j] for r in rows] for j, column in enumerate(self.columns)}

    def _values(self, pred: dict[str, Any]) -> list[Any]:
        """A prediction's values in `self.columns` order (prob_<NAME> from the per-class probabilities)."""
        return [pred[c] if c in pred else pred["probs"][c.removeprefix("prob_")] for c in self.columns]


# The cluster -------------------------------------------------------------------------------------------------------


def _probe(address: str, timeout_s: float) -> None:
    """One TCP connection to HOST:PORT of a cluster address, so that a dead address fails now, not after minutes."""
    if address.startswith("ray://"):
        # Measured with Ray 2.60: the job fails in Ray Data's block reference counter ('Worker' object has no
        # attribute 'core_worker'); Ray's maintainers: Ray Data does not support Ray Client (ray-project/ray#48682).
        raise ConfigError(
            f"--address {address} is Ray Client, which Ray Data does not support; run the command on a node of "
            "the cluster with --address auto, or submit it there: ray job submit --address http://HEAD:8265 -- "
            "sentiment-lab predict ... --engine ray --address auto (docs/scaling.md)"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--address {address!r} is not HOST:PORT; use auto (the cluster this machine belongs to) or "
            "HOST:6379 (the head node's GCS port)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise RayClusterError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one with `ray start --head` on "
            "that machine, check the host and port (the head node listens on 6379), or leave out --address to "
            "run on this machine"
        ) from None


def connect(ray: Any, address: str | None, timeout_s: float = 30.0) -> bool:
    """Connect to the cluster at `address`, or start Ray on this machine; True when this call started Ray.

    A cluster that does not answer within `timeout_s` is one RayClusterError (Ray itself would wait minutes,
    then exit the process). An already initialised Ray (a caller's own `ray.init`) is used as it is.
    """
    if address not in (None, "auto"):
        _probe(address, timeout_s)
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address is None:
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **quiet)
        return True
    result: dict[str, Any] = {}

    def attach() -> None:
        try:
            ray.init(address=address, **quiet)
        except BaseException as exc:  # Ray ends a failed connection with SystemExit; keep it in this thread
            result["error"] = exc

    thread = threading.Thread(target=attach, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive() or "error" in result:
        why = f"{type(result['error']).__name__}: {result['error']}" if "error" in result else f"{timeout_s:g} s"
        raise RayClusterError(
            f"cannot connect to the Ray cluster at {address} ({why}); check that `ray status` works on that "
            "cluster, that this machine runs the same Ray and Python versions and holds the cluster's token "
            "(Ray's token authentication: RAY_AUTH_MODE=token and ~/.ray/auth_token), or leave out --address "
            "to run on this machine"
        )
    return False


def _pool_size(ray: Any, workers: int | None, cpus_per_worker: int | None) -> tuple[int, int]:
    """(actors, threads per actor): by default one actor per node, each with its share of the cluster's CPUs."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
    workers = workers or nodes
    threads = cpus_per_worker or max(1, cpus // workers)
    return workers, threads


# The job -----------------------------------------------------------------------------------------------------------


def check_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """The output folder, or DataError when it is a file or already holds results and overwrite is off."""
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DataError(f"--output {out} is a file; with --engine ray the output is a folder of Parquet shards")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        held = sorted(p.name for p in out.iterdir())
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise DataError(
            f"output folder {out} already holds {len(held)} files ({shown}); pass --overwrite to replace them, "
            "or choose another --output"
        )
    return out


def _check_model(model: str | Path, options: PredictorOptions) -> Path:
    """The model folder, checked on the driver so that a wrong path fails before any worker starts.

    An ensemble folder: every member is checked (there, unchanged, exported when the backend is onnx) and the
    ensemble folder is returned; each worker loads all its members.
    """
    if is_ensemble(model):
        _, runs = verify_ensemble(model)
        for run in runs:
            _check_model(run, options)
        return Path(model).resolve()
    folder, _ = locate_model(model)
    if options.backend == "onnx":
        onnx_file = folder / ONNX_DIR / (ONNX_INT8_FILE if options.quantized else ONNX_FILE)
        if not onnx_file.is_file():
            flag = " --quantize int8" if options.quantized else ""
            raise DataError(f"no ONNX model at {onnx_file}; export it first: sentiment-lab export {model} --onnx{flag}")
    return folder.resolve()


class _ShardWriter:
    """Parquet shards of at most `shard_rows` rows each, in a folder."""

    def __init__(self, folder: Path, shard_rows: int) -> None:
        self.folder, self.shard_rows = folder, shard_rows
        self.shards: list[str] = []
        self.writer: Any = None
        self.rows_in_shard = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self.writer is None:
                self.shards.append(SHARD_NAME.format(len(self.shards)))
                self.writer = pq.ParquetWriter(self.folder / self.shards[-1], table.schema)
            take = min(table.num_rows, self.shard_rows - self.rows_in_shard)
            self.writer.write_table(table.slice(0, take))
            self.rows_in_shard += take
            table = table.slice(take)
            if self.rows_in_shard == self.shard_rows:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.rows_in_shard = None, 0


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished temp folder into place; an old output is renamed away first and removed after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}") if out.exists() else None
    if old:
        out.rename(old)
    tmp.rename(out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _job_error(exc: BaseException) -> SentimentLabError:
    """One error for a failed Ray job: ours when a worker raised one (e.g. a bad model folder), else Ray's."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, SentimentLabError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    first = str(exc).strip().splitlines()
    return RayClusterError(f"the Ray job failed: {type(exc).__name__}: {first[0] if first else ''} (rerun with -v)")


def predict_files_ray(
    model: str | Path,
    input_spec: str,
    output_dir: str | Path,
    options: PredictorOptions | None = None,
    *,
    text_column: str = "text",
    id_column: str = "id",
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: int | None = None,
    batch_rows: int = 256,
    shard_rows: int = 100_000,
    overwrite: bool = False,
    connect_timeout_s: float = 30.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Label every row of the input files with a pool of Ray actors; write Parquet shards into `output_dir`.

    input_spec: a CSV/JSONL/Parquet file, a folder of files of one format, or a glob; local or any URI pyarrow
        opens (on a cluster, every node must reach the input and the model folder at the same path).
    options: the PredictorOptions of local predict (backend, INT8, chunk mode, ...), applied in every actor.
    address: None starts Ray on this machine with its cores; `auto` or `HOST:6379` joins a
        running cluster (one that does not answer within `connect_timeout_s` is an error, not a hang).
    workers: actors (default one per node); cpus_per_worker: threads of each (default the cluster's CPUs / workers).
    batch_rows: rows an actor labels per call. shard_rows: rows per output shard.
    Returns the summary (rows, predicted, skipped by kind, seconds, reviews/s, ...), also written to
    OUTPUT/_summary.json. Output rows are in input order; `row` numbers them across the files in sorted order.
    """
    options = options or PredictorOptions()
    if batch_rows < 1 or shard_rows < 1:
        raise ConfigError(f"batch_rows and shard_rows must be positive, got {batch_rows} and {shard_rows}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if cpus_per_worker is not None and cpus_per_worker < 1:
        raise ConfigError(f"--cpus-per-worker must be at least 1, got {cpus_per_worker}")
    ray = _import_ray()
    inputs = resolve_inputs(input_spec, text_column, id_column)
    out = check_output_dir(output_dir, overwrite)
    model_dir = _check_model(model, options)

    start = time.perf_counter()
    started_ray = connect(ray, address, connect_timeout_s)
    init_s = time.perf_counter() - start
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        n_workers, threads = _pool_size(ray, workers, cpus_per_worker)
        context = ray.data.DataContext.get_current()
        memory_note = context.issue_detectors_config.high_memory_detector_config
        saved = (
            context.execution_options.preserve_order,
            context.enable_progress_bars,
            memory_note.detection_time_interval_s,
        )
        # In order, so that the driver can number the rows as local predict does; the actors still work in parallel.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = progress
        # Ray's note that a worker holds over 1 GiB (a transformer and its runtime: docs/scaling.md), every 30 s
        memory_note.detection_time_interval_s = -1
        logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
        try:
            # Blocks of at most batch_rows rows: a file is read as a few large blocks, and a block goes to one actor.
            rows = _read_dataset(ray, inputs, text_column, id_column).repartition(target_num_rows_per_block=batch_rows)
            dataset = rows.map_batches(
                BatchScorer,
                fn_constructor_kwargs={
                    "model_dir": str(model_dir),
                    "options": options.model_dump(),
                    "text_column": text_column,
                    "id_column": id_column if inputs.has_id or inputs.fmt == "jsonl" else None,
                    "jsonl": inputs.fmt == "jsonl",
                    "threads": threads,
                },
                batch_size=batch_rows,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=n_workers),
                num_cpus=max(MIN_ACTOR_CPUS, threads - TASK_RESERVE),
            )
            with warnings.catch_warnings():
                # Ray's note that a small input keeps some actors idle: true, and no concern of the user's
                warnings.filterwarnings(
                    "ignore", message="The minimum number of concurrent actors", category=UserWarning
                )
                summary = _collect(dataset, tmp, shard_rows)
        finally:
            context.execution_options.preserve_order, context.enable_progress_bars = saved[:2]
            memory_note.detection_time_interval_s = saved[2]
        job_s = time.perf_counter() - start - init_s
        first_at = summary.pop("first_result_at")
        summary.update(
            {
                "input": input_spec,
                "files": [inputs.display(p) for p in inputs.paths],
                "format": inputs.fmt,
                "output": str(out),
                "model": str(model_dir),
                "options": options.model_dump(),
                "address": address or "local",
                "workers": n_workers,
                "threads_per_worker": threads,
                "batch_rows": batch_rows,
                "ray_init_s": init_s,
                "job_s": job_s,
                # from the job's start to the first scored rows at the driver: Ray Data's start, workers loading
                "first_result_s": first_at - start - init_s if first_at else None,
                "seconds": time.perf_counter() - start,
                "reviews_per_s": summary["predicted"] / job_s if job_s > 0 else None,
            }
        )
        if summary["worker_restarts"]:
            log.warning(
                "%d scoring worker(s) stopped mid-job and Ray restarted them; their unfinished batches were scored "
                "again, and every row is in the output once",
                summary["worker_restarts"],
            )
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _replace_folder(tmp, out)
    except SentimentLabError:
        raise
    except Exception as exc:  # Ray wraps a worker's error in its own types; report it as one line
        raise _job_error(exc) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started_ray:
            ray.shutdown()
    return summary


def _collect(dataset: Any, tmp: Path, shard_rows: int) -> dict[str, Any]:
    """Stream the scored rows to the driver in input order, number them, count the skipped, write the shards."""
    tmp.mkdir(parents=True)
    writer = _ShardWriter(tmp, shard_rows)
    counts = {"rows": 0, "predicted": 0, "empty": 0, "invalid": 0}
    skipped_first: list[int] = []
    first_at: float | None = None
    workers: dict[int, bool] = {}  # pid -> a restarted worker
    schema: pa.Schema | None = None
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            first_at = first_at or time.perf_counter()
            workers |= dict(zip(batch.column("worker").to_pylist(), batch.column("restarted").to_pylist(), strict=True))
            kinds = batch.column("kind").to_pylist()
            keep = [i for i, kind in enumerate(kinds) if kind == ""]
            for i, kind in enumerate(kinds):
                if kind:
                    counts[kind] += 1
                    if len(skipped_first) < 10:
                        skipped_first.append(counts["rows"] + i)
            schema = schema or output_schema([c for c in batch.column_names if c not in (*SCORER_ONLY, "id")])
            kept = batch.take(pa.array(keep, type=pa.int64()))
            rows = pa.array([counts["rows"] + i for i in keep], type=pa.int64())
            columns = [rows, *(kept.column(f.name).cast(f.type) for f in list(schema)[1:])]
            writer.write(pa.Table.from_arrays(columns, schema=schema))
            counts["rows"] += len(kinds)
            counts["predicted"] += len(keep)
    finally:
        writer.close()
    if not writer.shards:  # nothing predicted: one empty shard, so the output still has the columns
        schema = schema or output_schema(result_columns(["NEGATIVE", "POSITIVE"]))  # no batch at all: binary
        pq.write_table(schema.empty_table(), tmp / SHARD_NAME.format(0))
        writer.shards.append(SHARD_NAME.format(0))
    return {
        **counts,
        "malformed": None,  # skipped by the CSV reader on the workers and logged there, not counted
        "skipped": counts["empty"] + counts["invalid"],
        "skipped_rows_first": skipped_first,
        "shards": writer.shards,
        "first_result_at": first_at,
        "workers_seen": len(workers),  # workers whose batches reached the driver
        "worker_restarts": sum(workers.values()),
    }
