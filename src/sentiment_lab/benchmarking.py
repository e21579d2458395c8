"""`sentiment-lab bench`: throughput, latency and accuracy of each inference backend on the same IMDb reviews.

Throughput is end to end (tokenization included) at a fixed batch size; latency is one review per call,
the serving case. Every backend predicts the same reviews, so accuracies and agreement compare directly.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sentiment_lab.errors import ConfigError, DataError, ModelError
from sentiment_lab.export import held_out_reviews
from sentiment_lab.io import json_safe, write_json_atomic
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.predictor import Predictor, PredictorOptions
from sentiment_lab.rundir import ONNX_DIR, ONNX_FILE, ONNX_INT8_FILE, locate_model
from sentiment_lab.tables import format_table

# torch fp32, torch under bf16 autocast, ONNX Runtime fp32, ONNX Runtime INT8
BACKEND_NAMES = ("torch", "torch-bf16", "onnx", "onnx-int8")


def available_backends(model_dir: Path) -> list[str]:
    """The backends a model folder can run: torch always (bf16 where the hardware has it), ONNX once exported."""
    names = ["torch"]
    if resolve_precision("auto").name == "bf16":
        names.append("torch-bf16")
    if (model_dir / ONNX_DIR / ONNX_FILE).is_file():
        names.append("onnx")
    if (model_dir / ONNX_DIR / ONNX_INT8_FILE).is_file():
        names.append("onnx-int8")
    return names


def single_call_latencies_ms(call: Callable[[str], Any], texts: list[str], warmup: list[str]) -> list[float]:
    """Milliseconds of `call(text)` for each text, one at a time (the serving case), after calls on `warmup`."""
    return interleaved_latencies_ms({"call": call}, texts, warmup)["call"]


def interleaved_latencies_ms(
    calls: dict[str, Callable[[str], Any]], texts: list[str], warmup: list[str]
) -> dict[str, list[float]]:
    """Milliseconds of each call on each text, one text at a time, the calls taking turns on every text.

    Taking turns review by review means a shared machine that slows down for a while slows every call alike,
    so ratios between calls hold even where absolute times drift.
    """
    for call in calls.values():
        for text in warmup:
            call(text)
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    for text in texts:
        for name, call in calls.items():
            start = time.perf_counter()
            call(text)
            latencies[name].append(1000 * (time.perf_counter() - start))
    return latencies


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean of latencies in ms (NaN when there are none)."""
    if not latencies_ms:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan")}
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(np.mean(latencies_ms))}


def measure_backend(
    predictor: Predictor, texts: list[str], labels: np.ndarray, latency_n: int, warmup: int = 3
) -> dict[str, Any]:
    """Reviews/s over all texts in the predictor's batches, batch-1 latency percentiles, accuracy."""
    predictor.logits(texts[: predictor.batch_size])  # warm-up: allocators, thread pools, lazy init
    start = time.perf_counter()
    logits = predictor.logits(texts)
    elapsed = time.perf_counter() - start
    latencies = single_call_latencies_ms(lambda text: predictor.logits([text]), texts[:latency_n], texts[:warmup])
    preds = logits.argmax(axis=-1)
    if predictor.positive_index == 0:  # a binary model that names POSITIVE first: labels count 1 = positive
        preds = 1 - preds
    return {
        "reviews_per_s": len(texts) / elapsed,
        "seconds": elapsed,
        "latency_ms": latency_summary(latencies),
        "accuracy": float(np.mean(preds == labels)),
        "preds": preds,
    }


def bench(
    model_dir: str | Path,
    n: int = 256,
    latency_n: int = 100,
    backends: list[str] | None = None,
    data_path: str | Path | None = None,
    out: str | Path | None = None,
    options: PredictorOptions | None = None,
) -> dict[str, Any]:
    """Benchmark every available backend (or `backends`) on n IMDb test reviews; writes and returns the results.

    options: how every backend predicts (batch size, long texts, threads, ...); each backend replaces its backend,
    INT8 and precision fields. threads: intra-op threads of torch and ONNX Runtime alike (default: torch's count).
    """
    options = options or PredictorOptions()
    threads = options.threads
    if n < 1 or latency_n < 0:
        raise ConfigError(f"n must be positive and latency_n non-negative (got n={n}, latency_n={latency_n})")
    folder, run_dir = locate_model(model_dir)
    available = available_backends(folder)
    chosen = backends or available
    for name in chosen:
        if name not in BACKEND_NAMES:
            raise ConfigError(f"unknown backend {name!r}; use some of {', '.join(BACKEND_NAMES)}")
        if name not in available:
            flag = " --quantize int8" if name == "onnx-int8" else ""
            raise ModelError(f"{name} is not exported for {folder}; run: sentiment-lab export {model_dir} --onnx{flag}")
    reviews = held_out_reviews(n, data_path)
    if reviews is None:
        raise DataError("bench needs the IMDb test reviews: pass --data /path/to/imdb or set IMDB_DIR")
    texts, labels = reviews["text"].tolist(), reviews["label"].to_numpy()
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        results = _bench_backends(folder, chosen, texts, labels, latency_n, options)
    finally:
        torch.set_num_threads(previous_threads)
    target = Path(out) if out else (run_dir or folder) / "bench.json"
    write_json_atomic(target, json_safe(results))
    results["out"] = str(target)
    return results


def _bench_backends(
    folder: Path,
    chosen: list[str],
    texts: list[str],
    labels: np.ndarray,
    latency_n: int,
    options: PredictorOptions,
) -> dict[str, Any]:
    import onnxruntime  # heavy (about 0.5 s): only its version is needed, and only here

    results: dict[str, Any] = {
        "model_dir": str(folder),
        "n": len(texts),
        "latency_n": min(latency_n, len(texts)),
        "batch_size": options.batch_size,
        "long_text": options.long_text,
        "threads": torch.get_num_threads(),
        # A busy shared machine distorts timings: the load average says how busy it was.
        "machine": {"cpu": cpu_name(), "python": platform.python_version(), "load_1m": os.getloadavg()[0]},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "backends": {},
    }
    reference = None
    for name in chosen:
        start = time.perf_counter()
        backend_options = PredictorOptions.build(
            **options.model_dump()
            | {
                "backend": "onnx" if name.startswith("onnx") else "torch",
                "quantized": name == "onnx-int8",
                "precision": "bf16" if name == "torch-bf16" else "fp32",
            }
        )
        predictor = Predictor.load(folder, backend_options)
        load_s = time.perf_counter() - start
        measured = measure_backend(predictor, texts, labels, latency_n)
        preds = measured.pop("preds")
        reference = preds if reference is None else reference
        measured["agreement_with_first"] = float(np.mean(preds == reference))
        measured["load_s"] = load_s
        results["backends"][name] = measured
        results["max_length"] = predictor.settings.max_length
        results["long_text"] = predictor.long_text  # what the option resolved to (None asks for the model's own)
    return results


def bench_table(results: dict[str, Any]) -> str:
    """The results as a text table, one row per backend."""
    rows = [
        [
            name,
            f"{m['reviews_per_s']:.1f}",
            f"{m['latency_ms']['p50']:.1f}",
            f"{m['latency_ms']['p95']:.1f}",
            f"{m['latency_ms']['p99']:.1f}",
            m["accuracy"],
            f"{100 * m['agreement_with_first']:.1f}%",
        ]
        for name, m in results["backends"].items()
    ]
    batch = results["batch_size"]
    headers = ["backend", f"reviews/s (b{batch})", "p50 ms", "p95 ms", "p99 ms", "accuracy", "agrees w/ first"]
    return format_table(rows, headers)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run a command (a training, say) in its own process: wall seconds and its peak resident memory, or SystemExit
    with the end of its stderr when it fails. wait4 gives this child's own rusage (getrusage(RUSAGE_CHILDREN) would
    be the maximum over every child so far)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr_lines: list[str] = []
    if proc.stderr is not None:  # read while it runs: a full pipe would block the child
        for line in proc.stderr:
            stderr_lines = [*stderr_lines[-200:], line]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{''.join(stderr_lines)[-3000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}
