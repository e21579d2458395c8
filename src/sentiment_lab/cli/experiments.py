"""Experiment commands: sweep (variants x seeds from one file) and tune (Optuna hyperparameter search)."""

from __future__ import annotations

import argparse
import sys

from sentiment_lab.cli import command
from sentiment_lab.sweep import markdown_tables, run_sweep
from sentiment_lab.tables import format_table
from sentiment_lab.tune import tune


@command("sweep")
def _sweep(args: argparse.Namespace) -> int:
    try:
        index = run_sweep(args.sweep_file, args.out, args.quick, args.overrides, args.data, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to skip finished runs and resume the others", file=sys.stderr)
        return 130
    if args.dry_run:
        rows = [[r["name"], r["status"], r["command"]] for r in index["runs"]]
        print(format_table(rows, ["run", "status", "command"]))
        return 0
    print(markdown_tables(index))
    failed = [r for r in index["runs"] if r["status"] == "failed"]
    for r in failed:
        print(f"run {r['name']} failed: {r.get('error')}", file=sys.stderr)
    out = args.out or f"runs/sweeps/{index['name']}{'-quick' if index['quick'] else ''}"
    extra = ", comparison.html" if index.get("comparison") else ""
    print(f"results: {out}/ (sweep.json, sweep.md{extra}, one run folder per run)")
    return 1 if failed else 0


@command("tune")
def _tune(args: argparse.Namespace) -> int:
    try:
        summary = tune(
            args.config,
            args.trials,
            space_path=args.space,
            out_dir=args.out,
            storage=args.storage,
            study_name=args.study_name,
            overrides=args.overrides,
            data_path=args.data,
            sampler_seed=args.seed,
        )
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to continue the study", file=sys.stderr)
        return 130
    counts = ", ".join(f"{n} {state.lower()}" for state, n in summary["trials"].items() if n)
    print(f"study {summary['study_name']} ({summary['storage']}): {counts or 'no trials'}")
    best = summary["best"]
    if best:
        rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in best["params"].items()]
        print(f"best trial {best['trial']}: {summary['objective']} {best['value']:.4f} ({best['run_dir']})")
        print(format_table(rows, ["parameter", "value"]))
    for name, why in summary["plots_skipped"].items():
        print(f"{name} not drawn: {why}")
    print("files: " + ", ".join(summary["files"]))
    return 0
