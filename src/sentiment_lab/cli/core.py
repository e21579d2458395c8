"""Core commands: train, evaluate, baseline, data stats."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sentiment_lab.baselines import run_baseline
from sentiment_lab.cli import command
from sentiment_lab.cli.common import ensemble_table, metrics_table
from sentiment_lab.config import load_config
from sentiment_lab.data import dataset_stats, prepare_data
from sentiment_lab.evaluation import evaluate_model
from sentiment_lab.modeling import load_tokenizer
from sentiment_lab.tables import format_table
from sentiment_lab.training import train


@command("train")
def _train(args: argparse.Namespace) -> int:
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
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}")
    return 0


@command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_model(
        args.model,
        args.config,
        args.overrides,
        args.data,
        args.out,
        args.batch_size,
        allow_pickle=args.allow_pickle,
        precision=args.precision,
        label_map=args.label_map,
    )
    print(ensemble_table(metrics) if "members" in metrics else metrics_table(metrics))
    if "label_mapping" in metrics:  # another dataset's classes, counted as the model's
        mapping = ", ".join(
            f"{d} -> {m if m is not None else '(dropped)'}" for d, m in metrics["label_mapping"].items()
        )
        print(f"data classes as model classes: {mapping}")
        for name, count in metrics["dropped"].items():
            print(f"dropped {count} test rows of class {name!r} (no model class)")
    print(f"results: {metrics['out_dir']}/ (metrics.json, predictions.parquet)")
    return 0


@command("baseline")
def _baseline(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, args.data)
    out = args.out or str(Path("runs") / f"{cfg.name}-baseline")
    metrics = run_baseline(cfg, out, overwrite=args.overwrite)
    print(metrics_table(metrics))
    print(f"TF-IDF fit in {metrics['train_runtime_s']:.1f} s; results: {out}/")
    return 0


@command("data")
def _data(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, args.data)
    splits = prepare_data(cfg.data)
    tokenizer = None
    if not args.no_tokens:
        tokenizer = load_tokenizer(cfg.model.name)
    stats = dataset_stats(splits, tokenizer, cfg.tokenization.max_length)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    rows = []
    names = splits.label_names
    for name, s in stats["splits"].items():
        w, t = s["words"], s.get("tokens")
        rows.append(
            [
                name,
                s["n"],
                *(s["per_class"][c] for c in names),
                f"{w['mean']:.0f}/{w['median']:.0f}/{w['min']}/{w['max']}",
                f"{t['mean']:.0f}/{t['median']:.0f}/{t['min']}/{t['max']}" if t else "-",
                f"{100 * s['truncated_share']:.1f}%" if "truncated_share" in s else "-",
            ]
        )
    # binary: the neg/pos headers as before; more classes: their names
    classes = ["neg", "pos"] if names == ["negative", "positive"] else names
    headers = ["split", "n", *classes, "words mean/med/min/max", "tokens mean/med/min/max"]
    print(format_table(rows, [*headers, f">{cfg.tokenization.max_length} tok"]))
    for split, c in stats["cleaning"].items():
        print(
            f"{split} source: {c['rows']} rows, {c['empty']} empty, {c['duplicates']} duplicate texts "
            f"(empty: {cfg.data.empty_policy}, duplicates: {cfg.data.duplicate_policy}); {c['kept']} kept"
        )
    for warning in stats.get("warnings", []):
        print(f"warning: {warning}")
    return 0
