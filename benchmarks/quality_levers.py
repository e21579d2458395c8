"""Issue 18, levers for accuracy per CPU-hour: each lever against one baseline run, on the same test reviews.

Every lever is a chain of the tool's own commands, each in its own process (its wall time and peak memory
measured), and is charged everything it needs: the teacher for self-training, the masked-LM run for pre-training
and augmentation. Rows: test accuracy with its 95% bootstrap CI, McNemar's test against the baseline on the same
reviews, wall minutes on this machine (all stages summed), and the figure of accuracy against minutes (issue 18,
Q3). A finished run folder under --runs is reused (with its measured time), so a chain killed mid-way goes on
where it stopped and a lever can be added later.

    baseline    `train CONFIG`
    tfidf       `baseline CONFIG` (TF-IDF 1-2-grams + logistic regression on the same split)
    chunk       `train CONFIG --set tokenization.long_text=chunk` (windows of long reviews, pooled per review)
    self_train  the baseline as teacher -> `distill` a fresh copy of the baseline's encoder on the training reviews
                plus --unlabeled reviews (sampled from unsup.parquet, texts of the evaluation sets dropped) that
                the teacher labels with >= --min-confidence (hard pseudo-label + its logits)
    pretrain    `pretrain` (masked LM on the training reviews + --pretrain-texts unlabelled reviews,
                --pretrain-steps steps) -> `train CONFIG --set model.name=PRETRAIN/model`
    augment     `pretrain` of the masked-LM head alone (encoder and embeddings frozen, --head-steps steps at a high
                learning rate: the augmenter needs word predictions, and a bare encoder's new head learns them far
                faster this way than in the full pre-training above) -> `train CONFIG --set
                augment.mlm_model=HEAD/model` (every training review plus --copies copies with words replaced)

    python benchmarks/quality_levers.py --data ../shared/data/imdb --set data.max_train=1000 \\
        --set data.max_eval=250 --set data.max_test=1000 --set tokenization.max_length=128 \\
        --out docs/measurements/quality_levers-small.json --figure docs/figures/quality_levers-small.png
                                                                     # quick-start recipe at 1,000 reviews
    python benchmarks/quality_levers.py --config configs/cpu-minilm-full.yaml --data ../shared/data/imdb \\
        --unlabeled 20000 --pretrain-texts 20000 --pretrain-steps 400   # issue 18's study on all 25,000 test reviews
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from sentiment_lab.benchmarking import run_measured

REPO = Path(__file__).resolve().parents[1]
LEVERS = ("baseline", "tfidf", "chunk", "self_train", "pretrain", "augment")
# the runs each lever is made of, in order; a lever's cost is the sum of their wall times
CHAINS = {
    "baseline": ["baseline"],
    "tfidf": ["tfidf"],
    "chunk": ["chunk"],
    "self_train": ["baseline", "self_train"],
    "pretrain": ["mlm", "pretrain"],
    "augment": ["mlm_head", "augment"],
}


def fail(message: str) -> None:
    """End the benchmark as the tool ends on a user's mistake: one `error:` line, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def sets(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def command(step: str, runs: Path, args: argparse.Namespace) -> list[str]:
    """The sentiment-lab command of one step of a chain, writing runs/STEP."""
    cli = [sys.executable, "-m", "sentiment_lab"]
    config, data = str(REPO / args.config), (["--data", args.data] if args.data else [])
    common = [f"training.seed={args.seed}", *args.overrides]
    out = ["--out", str(runs / step), "--overwrite"]
    if step == "baseline":
        return [*cli, "train", config, *out, *data, *sets(common)]
    if step == "tfidf":
        return [*cli, "baseline", config, *out, *data, *sets(common)]
    if step == "chunk":
        windows = [f"tokenization.max_windows={args.max_windows}"] if args.max_windows else []
        return [*cli, "train", config, *out, *data, *sets([*common, "tokenization.long_text=chunk", *windows])]
    if step == "self_train":
        distill = [
            f"distill.student={args.student}",
            "distill.unlabeled=unsup.parquet",
            f"distill.max_unlabeled={args.unlabeled}",
            f"distill.min_confidence={args.min_confidence}",
            "distill.pseudo_labels=true",
        ]
        return [*cli, "distill", str(runs / "baseline"), "--config", config, *out, *data, *sets([*common, *distill])]
    if step == "mlm":
        mlm = [
            "pretrain.texts=[unsup.parquet]",
            f"pretrain.max_texts={args.pretrain_texts}",
            f"training.max_steps={args.pretrain_steps}",
            f"training.batch_size={args.pretrain_batch}",
            f"training.save_steps={max(1, args.pretrain_steps // 4)}",
            "training.learning_rate=5.0e-5",
            "training.warmup_ratio=0.06",
            "training.early_stopping_patience=null",
        ]
        return [*cli, "pretrain", "--config", config, *out, *data, *sets([*common, *mlm])]
    if step == "mlm_head":
        head = [
            "pretrain.texts=[unsup.parquet]",
            f"pretrain.max_texts={args.pretrain_texts}",
            f"training.max_steps={args.head_steps}",
            f"training.batch_size={args.pretrain_batch}",
            f"training.save_steps={max(1, args.head_steps // 4)}",
            f"training.learning_rate={args.head_lr}",
            "training.warmup_ratio=0.06",
            "training.early_stopping_patience=null",
            "model.freeze_embeddings=true",
            f"model.freeze_layers={args.encoder_layers}",
        ]
        return [*cli, "pretrain", "--config", config, *out, *data, *sets([*common, *head])]
    if step == "pretrain":
        return [*cli, "train", config, *out, *data, *sets([*common, f"model.name={runs / 'mlm' / 'model'}"])]
    if step == "augment":
        augment = [f"augment.mlm_model={runs / 'mlm_head' / 'model'}", f"augment.copies={args.copies}"]
        return [*cli, "train", config, *out, *data, *sets([*common, *augment])]
    raise ValueError(step)


def run_step(step: str, runs: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one step unless its folder is finished; its measured wall time and peak memory (kept beside it)."""
    facts = runs / f"{step}.measured.json"
    cmd = command(step, runs, args)
    if (runs / step / "metrics.json").exists() and facts.exists():
        measured = json.loads(facts.read_text())
        if measured.get("command") == cmd[2:]:
            print(f"{step}: reusing {runs / step}", flush=True)
            return measured
        fail(
            f"{runs / step} was made by another command than this one ({' '.join(cmd[2:])}); "
            "give another --runs folder, or delete that run and its .measured.json to measure it again"
        )
    print(f"{step}: {' '.join(cmd[2:])}", flush=True)
    # a failed step ends the benchmark with the end of its stderr; the command is kept to check a later reuse
    measured = {**run_measured(cmd), "command": cmd[2:]}
    facts.write_text(json.dumps(measured))
    return measured


def draw_points(ax: Any, rows: list[dict[str, Any]], reference: float | None = None) -> None:
    """Accuracy (95% CI) against wall minutes, one labelled point per row; `reference`: a dashed line there."""
    for i, r in enumerate(rows):
        acc, low, high, minutes = 100 * r["accuracy"], 100 * r["ci_low"], 100 * r["ci_high"], r["wall_s"] / 60
        ax.errorbar(minutes, acc, yerr=[[acc - low], [high - acc]], fmt="o", capsize=4)
        # labels alternate above and below their points, so neighbours at the same height stay readable
        ax.annotate(
            r["name"], (minutes, acc), textcoords="offset points", xytext=(7, 4 if i % 2 == 0 else -12), fontsize=9
        )
    if reference is not None:
        ax.axhline(100 * reference, color="grey", lw=0.8, ls="--", zorder=0)
    right = max(r["wall_s"] for r in rows) / 60 * 1.25
    ax.set_xlim(left=-0.03 * right, right=right)  # a point at ~0 minutes stays off the axis
    ax.grid(alpha=0.3)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Test accuracy (95% CI) against wall minutes, one point per lever (issue 18, Q3)."""
    from sentiment_lab.rendering import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(7.5, 4.6))
    base = next((r for r in rows if r["name"] == "baseline"), None)
    draw_points(ax, rows, base["accuracy"] if base else None)
    ax.set_xlabel("wall minutes on this machine, every stage counted")
    ax.set_ylabel("test accuracy % (95% bootstrap CI)")
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
    save_figure(fig, path)


def figure_title(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    n = rows[0]["test_n"]
    return f"{Path(args.config).stem}, {' '.join(args.overrides)}; {n:,} test reviews, seed {args.seed}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml", help="the recipe every lever shares")
    p.add_argument("--levers", nargs="+", choices=LEVERS, default=["baseline", "tfidf", "self_train", "pretrain"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--data", default=os.environ.get("IMDB_DIR"), help="the data folder (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every run")
    p.add_argument("--max-windows", type=int, default=3, help="chunk: training windows per review (0: all)")
    p.add_argument("--student", default="minilm-l6", help="self_train: the student's encoder (the baseline's)")
    p.add_argument("--unlabeled", type=int, default=2000, help="self_train: unlabelled reviews the teacher scores")
    p.add_argument("--min-confidence", type=float, default=0.9, help="self_train: pseudo-labels kept above this")
    p.add_argument("--pretrain-texts", type=int, default=2000, help="pretrain: texts sampled (training + unlabelled)")
    p.add_argument("--pretrain-steps", type=int, default=60, help="pretrain: optimizer steps of the masked LM")
    p.add_argument("--pretrain-batch", type=int, default=32, help="pretrain: texts per step")
    p.add_argument("--head-steps", type=int, default=100, help="augment: steps of the masked-LM head alone")
    p.add_argument("--head-lr", type=float, default=2e-3, help="augment: learning rate of the head alone")
    p.add_argument("--encoder-layers", type=int, default=6, help="augment: the encoder's layers (all frozen)")
    p.add_argument("--copies", type=int, default=1, help="augment: augmented copies of each training review")
    p.add_argument("--runs", default=str(REPO / "runs" / "quality_levers"), help="where the run folders go")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "quality_levers.json"))
    p.add_argument("--figure", default=None, help="PNG of accuracy against minutes (default: beside --out)")
    p.add_argument("--replot", action="store_true", help="only draw --figure again from the JSON at --out")
    args = p.parse_args()
    out = Path(args.out)
    figure = Path(args.figure) if args.figure else out.with_suffix(".png")
    if args.replot:
        report = json.loads(out.read_text())
        plot(report["rows"], figure, figure_title(report["rows"], argparse.Namespace(**report["params"])))
        print(f"written: {figure}")
        return

    import numpy as np

    from sentiment_lab.io import json_safe, write_json_atomic
    from sentiment_lab.rundir import load_run
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test
    from sentiment_lab.tables import format_table

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    levers = ["baseline", *[lever for lever in args.levers if lever != "baseline"]]  # the reference comes first
    steps: dict[str, dict[str, Any]] = {}
    rows = []
    for lever in levers:
        for step in CHAINS[lever]:
            if step not in steps:
                steps[step] = run_step(step, runs, args)
        final = CHAINS[lever][-1]
        preds = load_run(runs / final).predictions.sort_values("id").reset_index(drop=True)
        metrics = json.loads((runs / final / "metrics.json").read_text())
        labels, pred = preds["label"].to_numpy(), preds["pred"].to_numpy()
        ci = bootstrap_ci(labels, pred)
        row: dict[str, Any] = {
            "name": lever,
            "steps": {step: {"run": str(runs / step), **steps[step]} for step in CHAINS[lever]},
            "wall_s": sum(steps[step]["wall_s"] for step in CHAINS[lever]),
            "peak_rss_mib": max(steps[step]["peak_rss_mib"] for step in CHAINS[lever]),
            "train_runtime_s": metrics.get("train_runtime_s"),
            "accuracy": float((pred == labels).mean()),
            "ci_low": ci["low"],
            "ci_high": ci["high"],
            "test_n": len(labels),
            "ids": preds["id"].astype(str).tolist(),
            "correct": (pred == labels).tolist(),
        }
        for key in ("distill", "augment"):
            if key in metrics:
                row[key] = metrics[key]
        rows.append(row)
    base = rows[0]
    for row in rows[1:]:
        if row["ids"] != base["ids"]:
            fail(f"{row['name']} scored other test reviews than the baseline; the runs must share data settings")
        row["mcnemar_vs_baseline"] = mcnemar_test(np.array(row["correct"]), np.array(base["correct"]))
        row["delta_pp"] = 100 * (row["accuracy"] - base["accuracy"])

    table = [
        [
            r["name"],
            f"{100 * r['accuracy']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]",
            f"{r['delta_pp']:+.2f}" if "delta_pp" in r else "-",
            f"{r['mcnemar_vs_baseline']['p_value']:.3g}" if "mcnemar_vs_baseline" in r else "-",
            f"{r['wall_s'] / 60:.1f}",
            " + ".join(f"{s} {v['wall_s'] / 60:.1f}" for s, v in r["steps"].items()),
            f"{r['peak_rss_mib']:.0f}",
        ]
        for r in rows
    ]
    header = ["lever", "test accuracy % [95% CI]", "vs baseline pp", "McNemar p", "wall min", "stages (min)"]
    print(format_table(table, [*header, "peak RSS MiB"]))
    for r in rows:
        del r["ids"], r["correct"]  # in the run folders' predictions; the JSON keeps the summary
    report = {"rows": rows, "params": vars(args), "load_1m": os.getloadavg()[0]}
    write_json_atomic(out, json_safe(report))
    plot(rows, figure, figure_title(rows, args))
    print(f"written: {out}, {figure}")


if __name__ == "__main__":
    main()
