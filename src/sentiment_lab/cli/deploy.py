"""Deployment commands: predict (texts, files, or files on Ray), export (ONNX, INT8), bench (throughput and latency
per backend), push (a run's model to the Hugging Face Hub)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sentiment_lab.batch_predict import check_files, predict_file
from sentiment_lab.benchmarking import bench, bench_table
from sentiment_lab.cli import command
from sentiment_lab.cli.common import predictor_options
from sentiment_lab.errors import ConfigError
from sentiment_lab.export import export_onnx
from sentiment_lab.predictor import Predictor, check_texts
from sentiment_lab.push import push_run
from sentiment_lab.ray_predict import predict_files_ray
from sentiment_lab.tables import format_table

LOCAL_CHUNK_ROWS = 1024  # rows read and predicted at a time by local predict
RAY_BATCH_ROWS = 256  # rows per call of a Ray worker: small enough that a few thousand rows spread over the pool


def _load_predictor(args: argparse.Namespace) -> Predictor:
    return Predictor.load(args.model, predictor_options(args))


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _predict_ray(args)
    ray_only = [
        f
        for f, v in (
            ("--address", args.address),
            ("--workers", args.workers),
            ("--cpus-per-worker", args.cpus_per_worker),
        )
        if v
    ]
    if ray_only:
        raise ConfigError(
            f"{', '.join(ray_only)} go with --engine ray (predict MODEL --engine ray --input ... --output DIR)"
        )
    if args.input or args.output:
        if not (args.input and args.output):
            raise ConfigError("--input and --output go together: predict --input reviews.csv --output preds.csv")
        if args.texts:
            raise ConfigError("give either texts or --input FILE, not both")
        check_files(Path(args.input), Path(args.output), args.text_column)  # before the model loads
        summary = predict_file(
            _load_predictor(args), args.input, args.output, args.text_column, args.chunk_rows or LOCAL_CHUNK_ROWS
        )
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
    preds = predictor.predict(args.texts)
    if args.json:
        print(json.dumps([{"text": t, **p} for t, p in zip(args.texts, preds, strict=True)], indent=2))
        return 0
    if len(predictor.labels) == 2:
        rows = [
            [p["label"], p["score"], p["prob_pos"], "yes" if p["needs_review"] else "", _clip(t)]
            for t, p in zip(args.texts, preds, strict=True)
        ]
        print(format_table(rows, ["label", "score", "prob_pos", "needs_review", "text"]))
        return 0
    rows = [
        [p["label"], p["score"], "yes" if p["needs_review"] else "", _top_classes(p["probs"]), _clip(t)]
        for t, p in zip(args.texts, preds, strict=True)
    ]
    print(format_table(rows, ["label", "score", "needs_review", "top classes", "text"]))
    return 0


def _top_classes(probs: dict[str, float], k: int = 3) -> str:
    """The k most probable classes, compactly: "NEUTRAL 0.61, POSITIVE 0.22, NEGATIVE 0.10"."""
    best = sorted(probs.items(), key=lambda item: -item[1])[:k]
    return ", ".join(f"{name} {p:.2f}" for name, p in best)


def _predict_ray(args: argparse.Namespace) -> int:
    if not (args.input and args.output) or args.texts:
        raise ConfigError(
            "--engine ray labels files, not texts: predict MODEL --engine ray --input PATH_OR_GLOB --output DIR"
        )
    summary = predict_files_ray(
        args.model,
        args.input,
        args.output,
        predictor_options(args),
        text_column=args.text_column,
        address=args.address,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        batch_rows=args.chunk_rows or RAY_BATCH_ROWS,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),  # Ray's progress lines every 10 s would flood a log file
    )
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    rate = summary["reviews_per_s"] or 0.0
    print(
        f"{summary['predicted']} of {summary['rows']} rows predicted in {summary['seconds']:.1f} s "
        f"({rate:.1f} reviews/s on {_count(summary['workers'], 'Ray worker')} x "
        f"{_count(summary['threads_per_worker'], 'thread')}, after {summary['ray_init_s']:.1f} s to start Ray) -> "
        f"{summary['output']}/ ({_count(len(summary['shards']), 'Parquet shard')})"
    )
    if summary["skipped"]:
        first = ", ".join(map(str, summary["skipped_rows_first"]))
        print(
            f"skipped {summary['skipped']} rows: {summary['empty']} empty text, {summary['invalid']} not text "
            f"(missing, non-string, not UTF-8 or not a JSON object); first skipped rows: {first}"
        )
    if summary["format"] == "csv":
        print("malformed CSV lines (if any) were skipped and logged by the workers; Ray does not count them")
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _clip(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@command("export")
def _export(args: argparse.Namespace) -> int:
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
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else None
    results = bench(
        args.model,
        n=args.n,
        latency_n=args.latency_n,
        backends=backends,
        data_path=args.data,
        out=args.out,
        options=predictor_options(args),
    )
    print(bench_table(results))
    print(f"{results['n']} IMDb test reviews, {results['threads']} threads; results: {results['out']}")
    return 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"


@command("push")
def _push(args: argparse.Namespace) -> int:
    result = push_run(
        args.run_dir,
        args.repo_id,
        private=args.private,
        include_report=args.report,
        include_onnx=args.onnx,
        dry_run=args.dry_run,
        message=args.message,
    )
    rows = [[f["path_in_repo"], _megabytes(f["bytes"]), f["from"]] for f in result["files"]]
    print(format_table(rows, ["path in repo", "size", "from"]))
    files = f"{len(result['files'])} files ({_megabytes(result['bytes'])})"
    if args.dry_run:
        visibility = "private" if args.private else "public"
        print(f"dry run: {files} would be committed to {visibility} repo {args.repo_id}; nothing was uploaded")
        print(f"\n--- model card ({result['files'][0]['path_in_repo']}) ---\n{result['card']}")
        return 0
    print(f"pushed {files} to {result['url']} in one commit")
    return 0
