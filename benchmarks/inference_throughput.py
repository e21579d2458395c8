"""I1/I2: inference throughput and latency, the standard Hugging Face pipeline vs sentiment-lab, same reviews.

Reference: `transformers.pipeline("text-classification", truncation=True, max_length=--max-length)`, fp32,
reviews/s at batch 32 (padding to the longest review of each batch, batches in input order) and batch-1
latency. Ours: `sentiment_lab.predictor.Predictor` (length-sorted batches, the model folder's own truncation)
for each backend: torch (bf16/fp16 autocast on CUDA, fp32 on CPU), ONNX Runtime fp32 and INT8 (CPU only;
exported into MODEL_DIR/onnx/ with the parity gate of `sentiment-lab export` when missing, unless --no-export).
Every backend predicts the same stratified, seeded IMDb test reviews and runs in its own process, so peak RSS
is its own; throughput is end to end (tokenization included), after a one-batch warm-up.

    python benchmarks/inference_throughput.py runs/quickstart/model --samples 200 --latency-n 30   # quick
    python benchmarks/inference_throughput.py runs/quickstart/model                                  # 2,000 reviews
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# The sibling benchmark's helpers (this folder is on sys.path when the script runs).
from train_throughput import environment, peak_rss_mb, run_role

REPO = Path(__file__).resolve().parents[1]
OURS = ("torch", "torch-fp32", "torch-compile", "onnx", "onnx-int8")
TARGETS = {"I1_ratio": 4.0, "I1_accuracy_pp": 0.3, "I1_agreement": 0.99, "I2_p50_ratio": 0.33}


def load_reviews(args: argparse.Namespace):
    """The benchmark's reviews: --samples IMDb test reviews, stratified, seeded (as `sentiment-lab bench`)."""
    from sentiment_lab.export import held_out_reviews

    reviews = held_out_reviews(args.samples, args.data, seed=args.seed)
    if reviews is None:
        sys.exit("no IMDb copy found: pass --data /path/to/imdb (train/test Parquet) or set IMDB_DIR")
    return reviews["text"].tolist(), reviews["label"].to_numpy()


def run_reference(args: argparse.Namespace) -> dict:
    """The published recipe: a text-classification pipeline, fp32, truncation at max_length, batch 32 / batch 1."""
    import numpy as np
    import torch
    from transformers import pipeline

    from sentiment_lab.benchmarking import latency_summary, single_call_latencies_ms
    from sentiment_lab.predictor import label_order
    from sentiment_lab.rundir import locate_model

    texts, labels = load_reviews(args)
    folder, _ = locate_model(args.model_dir)
    cuda = torch.cuda.is_available()
    start = time.perf_counter()
    pipe = pipeline(
        "text-classification",
        model=str(folder),
        truncation=True,
        max_length=args.max_length,
        dtype=torch.float32,
        device="cuda" if cuda else "cpu",
    )
    load_s = time.perf_counter() - start
    _, positive = label_order(pipe.model.config)
    label2id = pipe.model.config.label2id

    pipe(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up, as measure_backend does
    start = time.perf_counter()
    outputs = pipe(texts, batch_size=args.batch_size)
    elapsed = time.perf_counter() - start
    latencies = single_call_latencies_ms(pipe, texts[: args.latency_n], texts[:3])  # as measure_backend does
    preds = np.array([int(label2id[o["label"]] == positive) for o in outputs])
    return {
        "reviews_per_s": len(texts) / elapsed,
        "seconds": elapsed,
        "latency_ms": latency_summary(latencies),
        "accuracy": float(np.mean(preds == labels)),
        "preds": preds.tolist(),
        "load_s": load_s,
        "device": str(pipe.device),
        "precision": "fp32",
        "max_length": args.max_length,
        "truncation": "head",
        "batching": "input order, padded to the longest of each batch",
    }


def run_ours(args: argparse.Namespace) -> dict:
    """sentiment-lab's Predictor for one backend, measured by `sentiment_lab.benchmarking.measure_backend`."""
    from sentiment_lab.benchmarking import measure_backend
    from sentiment_lab.predictor import Predictor

    texts, labels = load_reviews(args)
    start = time.perf_counter()
    # torch: the Predictor's defaults (precision auto: bf16 autocast on CPUs with native bf16 and on CUDA);
    # torch-fp32: the same without autocast, to show what bf16 gives.
    predictor = Predictor.load(
        args.model_dir,
        backend="onnx" if args.role.startswith("onnx") else "torch",
        batch_size=args.batch_size,
        quantized=args.role == "onnx-int8",
        precision="fp32" if args.role == "torch-fp32" else "auto",
        compile=args.role == "torch-compile",  # `--compile`: torch.compile, compiled inside load
    )
    device = str(next(predictor.model.parameters()).device.type) if predictor.model is not None else "cpu"
    precision = predictor.precision
    if args.same_length:  # the reference's input exactly: the first max_length tokens
        predictor.settings = predictor.settings.model_copy(update={"max_length": args.max_length, "truncation": "head"})
    load_s = time.perf_counter() - start
    result = measure_backend(predictor, texts, labels, args.latency_n)
    result.update(
        {
            "preds": result["preds"].tolist(),
            "load_s": load_s,
            "device": device,
            "precision": precision,
            "max_length": predictor.settings.max_length,
            "truncation": predictor.settings.truncation,
            "batching": "length-sorted, padded to the longest of each batch",
        }
    )
    return result


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    result = run_reference(args) if args.role == "reference" else run_ours(args)
    result.update(
        {
            "role": args.role,
            "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
            "wall_s": time.perf_counter() - start,
        }
    )
    print("RESULT " + json.dumps(result), flush=True)


def ensure_onnx(args: argparse.Namespace, folder: Path) -> list[str]:
    """ONNX backends available in MODEL_DIR/onnx/, exporting them (parity-gated) when missing and allowed."""
    from sentiment_lab.benchmarking import available_backends
    from sentiment_lab.errors import SentimentLabError

    have = available_backends(folder)
    if "onnx-int8" in have or args.no_export:
        return [b for b in have if b.startswith("onnx")]
    print(f"exporting ONNX into {folder / 'onnx'} (parity check on {args.export_n} reviews) ...", flush=True)
    import transformers

    from sentiment_lab.export import export_onnx

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    for quantize in ("int8", None):
        try:
            export_onnx(folder, quantize=quantize, n=args.export_n, data_path=args.data)
            break
        except (SentimentLabError, OSError) as exc:
            print(f"  export{' --quantize int8' if quantize else ''} refused or failed: {exc}", flush=True)
            if "onnx" in have:  # fp32 already there; do not replace it
                break
    return [b for b in available_backends(folder) if b.startswith("onnx")]


def choose_backends(args: argparse.Namespace, folder: Path) -> list[str]:
    import torch

    if args.backends:
        chosen = [b.strip() for b in args.backends.split(",") if b.strip()]
        unknown = [b for b in chosen if b not in OURS]
        if unknown:
            sys.exit(f"unknown backend(s) {unknown}; use some of {', '.join(OURS)}")
        onnx_wanted = [b for b in chosen if b.startswith("onnx")]
        available = ensure_onnx(args, folder) if onnx_wanted else []
        missing = [b for b in onnx_wanted if b not in available]
        if missing:
            sys.exit(f"{missing} not exported for {folder}; run: sentiment-lab export {folder} --onnx --quantize int8")
        return chosen
    if torch.cuda.is_available():
        print("CUDA: measuring the torch backend only (the ONNX backends run on ONNX Runtime's CPU provider)")
        return ["torch", "torch-fp32"]
    return ["torch", "torch-fp32", *ensure_onnx(args, folder)]


def summarize(results: dict) -> dict:
    """Ratios vs the reference and the I1/I2 conditions, per backend of ours."""
    import numpy as np

    ref = results["reference"]
    ref_preds = np.array(ref["preds"])
    summary = {}
    for name, r in results.items():
        if name == "reference":
            continue
        ratio = r["reviews_per_s"] / ref["reviews_per_s"]
        delta_pp = 100 * (r["accuracy"] - ref["accuracy"])
        agreement = float(np.mean(np.array(r["preds"]) == ref_preds))
        p50_ratio = r["latency_ms"]["p50"] / ref["latency_ms"]["p50"]
        summary[name] = {
            "I1_throughput_ratio": ratio,
            "I1_accuracy_delta_pp": delta_pp,
            "I1_agreement_with_reference": agreement,
            "I1_met": bool(
                ratio >= TARGETS["I1_ratio"]
                and abs(delta_pp) <= TARGETS["I1_accuracy_pp"]
                and agreement >= TARGETS["I1_agreement"]
            ),
            "I2_p50_latency_ratio": p50_ratio,
            "I2_p95_latency_ratio": r["latency_ms"]["p95"] / ref["latency_ms"]["p95"],
            "I2_met": bool(p50_ratio <= TARGETS["I2_p50_ratio"]),
            "peak_rss_ratio": r["peak_rss_mb"] / ref["peak_rss_mb"],
        }
    return summary


def print_report(results: dict, summary: dict, report: dict, out: Path) -> None:
    ref = results["reference"]
    print(
        f"\n{'':10} {'device':6} {'precision':>14} {'max_len':>7} {'reviews/s':>10} {'x ref':>6} {'p50 ms':>8} "
        f"{'p95 ms':>8} {'p50 x ref':>9} {'accuracy':>8} {'agree':>7} {'peak RSS MiB':>12}"
    )
    for name, r in results.items():
        s = summary.get(name)
        ratio = f"{s['I1_throughput_ratio']:.2f}" if s else "1.00"
        lat_ratio = f"{s['I2_p50_latency_ratio']:.2f}" if s else "1.00"
        agree = f"{100 * s['I1_agreement_with_reference']:.1f}%" if s else "-"
        print(
            f"{name:10} {r['device'][:6]:6} {r['precision'][:14]:>14} {r['max_length']:7d} {r['reviews_per_s']:10.2f} "
            f"{ratio:>6} {r['latency_ms']['p50']:8.1f} {r['latency_ms']['p95']:8.1f} {lat_ratio:>9} "
            f"{r['accuracy']:8.4f} {agree:>7} {r['peak_rss_mb']:12.0f}"
        )
    print(
        f"\nreviews/s at batch {report['params']['batch_size']} over {report['n_reviews']} reviews; latency: "
        f"batch 1 over {report['latency_n']} reviews"
    )
    for name, s in summary.items():
        print(
            f"{name:10} I1 {s['I1_throughput_ratio']:.2f}x reviews/s (target >= {TARGETS['I1_ratio']:.1f}x), "
            f"accuracy {s['I1_accuracy_delta_pp']:+.2f} pp (target within {TARGETS['I1_accuracy_pp']} pp), "
            f"agreement {100 * s['I1_agreement_with_reference']:.1f}% (target >= {100 * TARGETS['I1_agreement']:.0f}%)"
            f": {'MET' if s['I1_met'] else 'not met'}"
        )
        print(
            f"{'':10} I2 p50 latency {s['I2_p50_latency_ratio']:.2f}x (target <= {TARGETS['I2_p50_ratio']}x), "
            f"p95 {s['I2_p95_latency_ratio']:.2f}x: {'MET' if s['I2_met'] else 'not met'}"
        )
    ours_lengths = {f"{r['max_length']} ({r['truncation']})" for n, r in results.items() if n != "reference"}
    if any(r["max_length"] != ref["max_length"] for r in results.values()):
        print(
            f"note: the reference truncates at {ref['max_length']} tokens (head), ours at the model folder's own "
            f"setting, {', '.join(sorted(ours_lengths))} tokens: part of the difference is the input length "
            "(--same-length truncates ours at --max-length too)"
        )
    env = report["environment"]
    print(f"measured on: {env['device']} ({env['cpu']}, {env['threads']} threads, load {env['load_1m']:.2f})")
    print(f"environment: {env}\nwritten: {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", nargs="?", metavar="MODEL_DIR", help="a run folder's model/ or a plain HF folder")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--samples", type=int, default=2000, help="IMDb test reviews for throughput and accuracy")
    p.add_argument("--latency-n", type=int, default=100, help="single-review calls timed for latency")
    p.add_argument("--max-length", type=int, default=512, help="the reference pipeline's truncation length")
    p.add_argument(
        "--same-length",
        action="store_true",
        help="truncate ours as the reference does, head at --max-length (default: the model's own setting)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--backends",
        help="comma-separated subset of torch,torch-fp32,torch-compile,onnx,onnx-int8 (default: all but "
        "torch-compile on CPU, the torch ones on CUDA)",
    )
    p.add_argument("--no-export", action="store_true", help="do not export ONNX into MODEL_DIR/onnx/ when missing")
    p.add_argument("--export-n", type=int, default=200, help="reviews of the export's parity check")
    p.add_argument("--seed", type=int, default=0, help="seed of the stratified review sample")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "inference_throughput.json"))
    p.add_argument("--role", choices=["reference", *OURS], help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.model_dir:
        p.error(
            "no MODEL_DIR given: pass a trained model folder, e.g. runs/quickstart/model after `make demo` "
            "(a run folder's model/ or a plain Hugging Face classifier folder)"
        )
    if args.samples < 1 or args.latency_n < 1 or args.batch_size < 1:
        p.error("--samples, --latency-n and --batch-size must be positive")
    if args.role:
        child(args)
        return

    from sentiment_lab.errors import SentimentLabError
    from sentiment_lab.rundir import locate_model

    try:
        folder, _ = locate_model(args.model_dir)
    except SentimentLabError as exc:
        sys.exit(f"{exc}\n(train one with `make demo`, then pass runs/quickstart/model)")
    args.model_dir = str(folder)
    results = {}
    for role in ("reference", *choose_backends(args, folder)):
        skip = ("role", "out", "backends", "no_export", "export_n", "same_length")
        cmd = [sys.executable, __file__, args.model_dir, "--role", role] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in (*skip, "model_dir")
        ]
        cmd += ["--same-length"] if args.same_length else []
        results[role] = run_role(role, cmd)

    import onnxruntime

    summary = summarize(results)
    env = environment() | {
        "onnxruntime": onnxruntime.__version__,
        "python": sys.version.split()[0],
        "load_1m": os.getloadavg()[0],  # a busy shared machine distorts timings
    }
    report = {
        "params": {k: v for k, v in vars(args).items() if k != "role"},
        "environment": env,
        "n_reviews": len(results["reference"]["preds"]),
        "latency_n": min(args.latency_n, len(results["reference"]["preds"])),
        "targets": TARGETS,
        "results": {k: {kk: vv for kk, vv in r.items() if kk != "preds"} for k, r in results.items()},
        "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(results, summary, report, out)


if __name__ == "__main__":
    main()
