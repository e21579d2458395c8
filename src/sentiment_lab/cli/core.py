"""Core commands: train, evaluate, baseline, data stats."""

from __future__ import annotations

import argparse
import json

from sentiment_lab.cli import add_allow_pickle_arg, add_config_args, command, format_table, metrics_table


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register train, evaluate, baseline and data."""
    p = sub.add_parser("train", help="fine-tune a model from a YAML config, then evaluate it on the test set")
    add_config_args(p)
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    p = sub.add_parser("evaluate", help="evaluate a saved model or run folder on the test set")
    p.add_argument("model", metavar="MODEL_OR_RUN_DIR")
    add_config_args(p, config_required=False)
    p.add_argument("--out", help="output folder (default: RUN_DIR/evaluation)")
    p.add_argument("--batch-size", type=int, default=64)
    add_allow_pickle_arg(p)

    p = sub.add_parser("baseline", help="majority-class and TF-IDF + logistic regression baselines")
    add_config_args(p, config_required=False)
    p.add_argument("--out", help="run folder (default: runs/<config name>-baseline)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    p = sub.add_parser("data", help="dataset utilities")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    s = data_sub.add_parser("stats", help="counts, words and tokens per review, share truncated")
    add_config_args(s, config_required=False)
    s.add_argument("--no-tokens", action="store_true", help="skip token counts (no tokenizer needed)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("train")
def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sentiment_lab.config import load_config
    from sentiment_lab.training import train

    cfg = load_config(args.config, args.overrides, args.data)
    out = args.out or str(Path("runs") / cfg.name)
    metrics = train(cfg, out, overwrite=args.overwrite)
    metrics["model"] = cfg.model.name
    print(metrics_table(metrics))
    print(
        f"\ntrained {metrics['global_step']} steps in {metrics['train_runtime_s']:.0f} s "
        f"({metrics['train_samples_per_s']:.1f} samples/s); best step {metrics['best_step']}"
    )
    print(f"results: {out}/ (metrics.json, predictions.parquet, history.csv, model/)")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from sentiment_lab.evaluation import evaluate_model

    metrics = evaluate_model(
        args.model, args.config, args.overrides, args.data, args.out, args.batch_size, allow_pickle=args.allow_pickle
    )
    print(metrics_table(metrics))
    print(f"results: {metrics['out_dir']}/ (metrics.json, predictions.parquet)")
    return 0


@command("baseline")
def _baseline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sentiment_lab.baselines import run_baseline
    from sentiment_lab.config import load_config

    cfg = load_config(args.config, args.overrides, args.data)
    out = args.out or str(Path("runs") / f"{cfg.name}-baseline")
    metrics = run_baseline(cfg, out, overwrite=args.overwrite)
    print(metrics_table(metrics))
    print(f"TF-IDF fit in {metrics['train_runtime_s']:.1f} s; results: {out}/")
    return 0


@command("data")
def _data(args: argparse.Namespace) -> int:
    from sentiment_lab.config import load_config
    from sentiment_lab.data import dataset_stats, prepare_data

    cfg = load_config(args.config, args.overrides, args.data)
    splits = prepare_data(cfg.data)
    tokenizer = None
    if not args.no_tokens:
        from sentiment_lab.modeling import load_tokenizer

        tokenizer = load_tokenizer(cfg.model.name)
    stats = dataset_stats(splits, tokenizer, cfg.tokenization.max_length)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    rows = []
    for name, s in stats["splits"].items():
        w, t = s["words"], s.get("tokens")
        rows.append(
            [
                name,
                s["n"],
                s["per_class"]["negative"],
                s["per_class"]["positive"],
                f"{w['mean']:.0f}/{w['median']:.0f}/{w['min']}/{w['max']}",
                f"{t['mean']:.0f}/{t['median']:.0f}/{t['min']}/{t['max']}" if t else "-",
                f"{100 * s['truncated_share']:.1f}%" if "truncated_share" in s else "-",
            ]
        )
    headers = ["split", "n", "neg", "pos", "words mean/med/min/max", "tokens mean/med/min/max"]
    print(format_table(rows, [*headers, f">{cfg.tokenization.max_length} tok"]))
    for split, c in stats["cleaning"].items():
        print(
            f"{split} source: {c['rows']} rows, {c['empty']} empty, {c['duplicates']} duplicate texts "
            f"(empty: {cfg.data.empty_policy}, duplicates: {cfg.data.duplicate_policy}); {c['kept']} kept"
        )
    return 0
