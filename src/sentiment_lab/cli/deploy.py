"""Deployment commands: predict (texts or files), export (ONNX, INT8), bench (throughput and latency per backend)."""

from __future__ import annotations

import argparse
import json

from sentiment_lab.cli import add_predictor_args, command, format_table
from sentiment_lab.errors import ConfigError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register predict, export and bench."""
    p = sub.add_parser(
        "predict",
        help="label texts, or a CSV/JSONL/Parquet file, with a saved model",
        description="Label review texts given as arguments (prints a table), or stream a whole file with "
        "--input/--output. Rows with empty or non-text values are skipped and counted.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="review texts to label")
    p.add_argument("--input", help="CSV, JSONL or Parquet file to label (needs --output)")
    p.add_argument("--output", help="predictions file (.csv, .jsonl or .parquet), written atomically")
    p.add_argument("--text-column", default="text", help="column (or JSON key) holding the review text")
    p.add_argument("--chunk-rows", type=int, default=1024, help="rows read and predicted at a time")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_predictor_args(p)

    p = sub.add_parser(
        "export",
        help="export a model to ONNX (and INT8), checked for parity with torch",
        description="Write MODEL_DIR/onnx/model.onnx (and model.int8.onnx) and parity.json. The export is kept "
        "only if, on N held-out reviews, ONNX fp32 logits match torch within --atol and INT8 labels agree "
        "with torch on at least --min-agreement of them.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("--onnx", action="store_true", help="export to ONNX (the only format so far)")
    p.add_argument("--quantize", choices=("int8",), help="also write a dynamically quantized INT8 model")
    p.add_argument("--n", type=int, default=200, help="held-out reviews of the parity check")
    p.add_argument("--data", help="IMDb folder for the held-out reviews (default: IMDB_DIR; else a built-in list)")
    p.add_argument("--atol", type=float, default=1e-3, help="largest accepted |ONNX - torch| logit difference")
    p.add_argument("--min-agreement", type=float, default=0.99, help="smallest accepted INT8 label agreement")
    p.add_argument(
        "--per-tensor", action="store_true", help="INT8 with one scale per weight tensor (default: per channel)"
    )

    p = sub.add_parser(
        "bench",
        help="throughput and latency of each backend on IMDb test reviews, with accuracy",
        description="Reviews/s at --batch-size and batch-1 latency p50/p95/p99 for torch fp32, onnx fp32 and "
        "onnx int8 (when exported), and accuracy on the same reviews. Writes a JSON file.",
    )
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    p.add_argument("--n", type=int, default=256, help="IMDb test reviews for throughput and accuracy")
    p.add_argument("--latency-n", type=int, default=100, help="single-review calls timed for latency")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--backends", help="comma-separated subset of torch,torch-bf16,onnx,onnx-int8 (default: all available)"
    )
    p.add_argument("--long-text", choices=("truncate", "chunk"), default="truncate")
    p.add_argument("--data", help="IMDb folder (default: IMDB_DIR)")
    p.add_argument("--out", help="JSON results file (default: RUN_DIR/bench.json, or MODEL_DIR/bench.json)")
    p.add_argument("--threads", type=int, help="intra-op threads for every backend (default: torch's count)")


def _load_predictor(args: argparse.Namespace) -> object:
    from sentiment_lab.inference import Predictor

    if args.int8 and args.backend != "onnx":
        raise ConfigError("--int8 needs --backend onnx (the INT8 model is an ONNX file)")
    return Predictor.load(
        args.model,
        backend=args.backend,
        batch_size=args.batch_size,
        long_text=args.long_text,
        review_threshold=args.review_threshold,
        quantized=args.int8,
        stride=args.stride,
        allow_pickle=args.allow_pickle,
        precision=args.precision,
        compile=args.compile,
    )


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    from sentiment_lab.inference import check_texts, predict_file

    if args.input or args.output:
        if not (args.input and args.output):
            raise ConfigError("--input and --output go together: predict --input reviews.csv --output preds.csv")
        if args.texts:
            raise ConfigError("give either texts or --input FILE, not both")
        summary = predict_file(_load_predictor(args), args.input, args.output, args.text_column, args.chunk_rows)
        if args.json:
            print(json.dumps(summary, indent=2))
            return 0
        print(
            f"{summary['predicted']} of {summary['rows']} rows predicted in {summary['seconds']:.1f} s "
            f"-> {summary['output']}"
        )
        if summary["skipped"]:
            first = ", ".join(map(str, summary["skipped_rows_first"]))
            print(
                f"skipped {summary['skipped']} rows: {summary['empty']} empty text, {summary['invalid']} not text "
                f"(missing, non-string or not UTF-8), {summary['malformed']} malformed CSV lines"
                + (f"; first skipped rows: {first}" if first else "")
            )
        return 0
    if not args.texts:
        raise ConfigError('give texts to label (predict MODEL "a great film") or --input FILE --output FILE')
    check_texts(args.texts)  # before the model loads: a bad argument fails at once
    predictor = _load_predictor(args)
    preds = predictor.predict(args.texts)  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps([{"text": t, **p} for t, p in zip(args.texts, preds, strict=True)], indent=2))
        return 0
    rows = [
        [p["label"], p["score"], p["prob_pos"], "yes" if p["needs_review"] else "", _clip(t)]
        for t, p in zip(args.texts, preds, strict=True)
    ]
    print(format_table(rows, ["label", "score", "prob_pos", "needs_review", "text"]))
    return 0


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@command("export")
def _export(args: argparse.Namespace) -> int:
    from sentiment_lab.export import export_onnx

    if not args.onnx:
        raise ConfigError("choose an export format: sentiment-lab export MODEL_DIR --onnx [--quantize int8]")
    report = export_onnx(
        args.model,
        quantize=args.quantize,
        n=args.n,
        data_path=args.data,
        atol=args.atol,
        min_agreement=args.min_agreement,
        per_channel=not args.per_tensor,
    )
    rows = [
        [
            name,
            f"{report[name]['max_abs_logit_diff']:.1e}",
            f"{100 * report[name]['label_agreement']:.2f}%",
            f"{report[name]['size_mb']:.1f}",
            "pass",
        ]
        for name in ("fp32", "int8")
        if name in report
    ]
    print(format_table(rows, ["model", "max |logit diff|", "label agreement", "MB", "parity"]))
    print(f"parity on {report['texts']}; written to {report['onnx_dir']}/ (model.onnx, parity.json)")
    return 0


@command("bench")
def _bench(args: argparse.Namespace) -> int:
    from sentiment_lab.benchmarking import bench, bench_table

    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    results = bench(
        args.model,
        n=args.n,
        latency_n=args.latency_n,
        batch_size=args.batch_size,
        backends=backends,
        long_text=args.long_text,
        data_path=args.data,
        out=args.out,
        threads=args.threads,
    )
    print(bench_table(results))
    print(f"{results['n']} IMDb test reviews, {results['threads']} threads; results: {results['out']}")
    return 0
