"""Deployment commands: predict (texts or files), export (ONNX, INT8), bench (throughput and latency per backend)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sentiment_lab.batch_predict import check_files, predict_file
from sentiment_lab.benchmarking import bench, bench_table
from sentiment_lab.cli import command
from sentiment_lab.cli.common import predictor_options
from sentiment_lab.errors import ConfigError
from sentiment_lab.export import export_onnx
from sentiment_lab.predictor import Predictor, check_texts
from sentiment_lab.tables import format_table


def _load_predictor(args: argparse.Namespace) -> Predictor:
    return Predictor.load(args.model, predictor_options(args))


@command("predict")
def _predict(args: argparse.Namespace) -> int:
    if args.input or args.output:
        if not (args.input and args.output):
            raise ConfigError("--input and --output go together: predict --input reviews.csv --output preds.csv")
        if args.texts:
            raise ConfigError("give either texts or --input FILE, not both")
        check_files(Path(args.input), Path(args.output), args.text_column)  # before the model loads
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
    preds = predictor.predict(args.texts)
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
