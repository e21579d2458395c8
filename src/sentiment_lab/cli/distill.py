"""The distill command: a teacher (run, model or ensemble folder) -> a smaller student's run folder."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import command
from sentiment_lab.cli.common import metrics_table
from sentiment_lab.config import load_config
from sentiment_lab.distill import distill


@command("distill")
def _distill(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, args.data)
    metrics = distill(args.teacher, cfg, args.out, overwrite=args.overwrite)
    summary = metrics["distill"]
    metrics["model"] = "student"
    print(metrics_table(metrics))
    teacher_accuracy = summary["teacher_test_accuracy"]
    print(
        f"\nstudent: {summary['student_parameters']:,} parameters (teacher {summary['teacher_parameters']:,}); "
        f"teacher layers kept: {summary['layers'] if summary['layers'] is not None else '-'}; vocabulary "
        f"{summary['vocab_size']['before']:,} -> {summary['vocab_size']['after']:,}; teacher test accuracy "
        f"{teacher_accuracy if teacher_accuracy is not None else 'unknown'}"
    )
    print(f"results: {args.out}/ (metrics.json, predictions.parquet, model/, teacher_logits.parquet)")
    return 0
