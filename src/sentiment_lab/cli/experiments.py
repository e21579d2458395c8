"""Experiment commands: sweep (variants x seeds from one file) and tune (Optuna hyperparameter search)."""

from __future__ import annotations

import argparse
import sys

from sentiment_lab.cli import add_config_args, add_override_args, command, format_table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register sweep and tune."""
    p = sub.add_parser("sweep", help="train every variant x seed of a sweep file (skips finished runs, resumes others)")
    p.add_argument("sweep_file", metavar="SWEEP.yaml", help="sweep file, e.g. sweeps/ablation-lr.yaml")
    p.add_argument("--quick", action="store_true", help="use the file's quick mode (MiniLM, small subsets, CPU)")
    p.add_argument("--out", help="sweep folder (default: runs/sweeps/<name>[-quick])")
    add_override_args(p, " in every run")
    p.add_argument("--dry-run", action="store_true", help="validate the sweep and list its runs; train nothing")

    p = sub.add_parser("tune", help="Optuna hyperparameter search (objective: validation F1) over a YAML space")
    add_config_args(p)
    p.add_argument("--trials", type=int, required=True, help="total finished trials the study should reach")
    p.add_argument("--space", help="search-space YAML (default: the built-in space, see sweeps/tune-space.yaml)")
    p.add_argument("--out", help="tune folder (default: runs/tune/<config name>)")
    p.add_argument(
        "--storage",
        help="Optuna RDB URL shared by all workers (default: sqlite:///OUT/study.db), e.g. postgresql://...",
    )
    p.add_argument("--study-name", help="study name in the storage (default: the config's name)")
    p.add_argument("--seed", type=int, help="sampler seed (leave unset when several workers share a study)")


@command("sweep")
def _sweep(args: argparse.Namespace) -> int:
    from sentiment_lab.sweep import markdown_tables, run_sweep

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
    from sentiment_lab.tune import tune

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
