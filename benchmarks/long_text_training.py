"""Issue 18, long reviews in training: windows (`tokenization.long_text: chunk`) against truncation, same recipe.

For each seed, one config is trained twice, each in its own process (alternating order from seed to seed, so a
machine that slows down for a while slows both alike): `truncate` (one sequence per review, cut as the config
says) and `chunk` (every review longer than max_length trains as overlapping windows with its label, at most
--max-windows of them, and is scored by the mean of its windows' logits). A third row scores the truncate run's
model in chunk mode at test time only (`Predictor(long_text="chunk")`), which separates what the windows give in
training from what they give in scoring. Every row: test accuracy with its 95% bootstrap CI, McNemar's test against
`truncate` on the same test reviews, training sequences, time and peak resident memory.

    python benchmarks/long_text_training.py --max-length 128 --max-windows 3 --seeds 42 --set data.max_train=1000 \\
        --set data.max_eval=250 --set data.max_test=1000 --out docs/measurements/long_text_training.json
                                              # the quick-start recipe on 1,000 reviews at 128 tokens (about 30 min)
    python benchmarks/long_text_training.py --config configs/cpu-minilm-full.yaml --max-length 256 --seeds 42
                                                                  # issue 18's comparison on all 25,000 test reviews
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from sentiment_lab.benchmarking import run_measured

REPO = Path(__file__).resolve().parents[1]
MODES = ("truncate", "chunk")


def train(mode: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One training run in its own process; its facts from the run folder."""
    import yaml

    out = Path(args.runs) / f"{mode}-seed{seed}"
    cmd = [sys.executable, "-m", "sentiment_lab", "train", str(REPO / args.config), "--out", str(out), "--overwrite"]
    settings = [f"training.seed={seed}", f"tokenization.max_length={args.max_length}", f"tokenization.long_text={mode}"]
    if mode == "chunk" and args.max_windows:
        settings.append(f"tokenization.max_windows={args.max_windows}")
    settings += args.overrides
    cmd += [arg for s in settings for arg in ("--set", s)] + (["--data", args.data] if args.data else [])
    print(f"{mode}, seed {seed}: {' '.join(cmd[2:])}", flush=True)
    measured = run_measured(cmd)
    metrics = json.loads((out / "metrics.json").read_text())
    data = yaml.safe_load((out / "config.yaml").read_text())["resolved"]["data"]
    return {
        "name": mode,
        "seed": seed,
        "run": str(out),
        "train_texts": data["train"],
        "train_sequences": data.get("train_windows", data["train"]),
        "train_runtime_s": metrics["train_runtime_s"],
        **measured,
    }


def score_chunked(truncate_run: str, test: Any) -> tuple[Any, float]:
    """The truncate run's model on the test reviews in chunk mode: predicted classes and seconds."""
    from sentiment_lab.predictor import Predictor

    predictor = Predictor.load(truncate_run, long_text="chunk", batch_size=64)
    start = time.perf_counter()
    preds = predictor.probabilities(test["text"].tolist()).argmax(axis=-1)
    return preds, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/quickstart.yaml", help="the recipe both modes share")
    p.add_argument("--max-length", type=int, default=128, help="tokens per sequence (window) in both modes")
    p.add_argument("--max-windows", type=int, default=4, help="chunk: training windows per review (0: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--data", default=os.environ.get("IMDB_DIR"), help="the data folder (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for both trainings")
    p.add_argument("--runs", default=str(REPO / "runs" / "long_text_training"), help="where the run folders go")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "long_text_training.json"))
    args = p.parse_args()

    import numpy as np

    from sentiment_lab.io import json_safe, write_json_atomic
    from sentiment_lab.rundir import load_run
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test
    from sentiment_lab.tables import format_table

    results = []
    for k, seed in enumerate(args.seeds):
        order = MODES if k % 2 == 0 else MODES[::-1]
        pair = {mode: train(mode, seed, args) for mode in order}
        preds = {
            mode: load_run(r["run"]).predictions.sort_values("id").reset_index(drop=True) for mode, r in pair.items()
        }
        base = preds["truncate"]
        if not np.array_equal(base["id"].to_numpy(), preds["chunk"]["id"].to_numpy()):
            sys.exit("the two runs scored different test reviews; they must share data settings")
        chunked, seconds = score_chunked(pair["truncate"]["run"], base)
        rows = {
            "truncate": (pair["truncate"], base["pred"].to_numpy()),
            "chunk": (pair["chunk"], preds["chunk"]["pred"].to_numpy()),
            "truncate, chunk at test only": (
                {**pair["truncate"], "name": "truncate, chunk at test only", "test_chunk_scoring_s": seconds},
                chunked,
            ),
        }
        labels = base["label"].to_numpy()
        for row, pred in rows.values():
            ci = bootstrap_ci(labels, pred)
            row = dict(row, accuracy=float((pred == labels).mean()), ci_low=ci["low"], ci_high=ci["high"])
            row["test_n"] = len(labels)
            if row["name"] != "truncate":
                row["mcnemar_vs_truncate"] = mcnemar_test(pred == labels, base["pred"].to_numpy() == labels)
            results.append(row)

    table = [
        [
            r["name"],
            r["seed"],
            f"{100 * r['accuracy']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]",
            f"{r['mcnemar_vs_truncate']['p_value']:.3g}" if "mcnemar_vs_truncate" in r else "-",
            f"{r['train_texts']:,} -> {r['train_sequences']:,}",
            f"{r['train_runtime_s']:.0f} s",
            f"{r['peak_rss_mib']:.0f} MiB",
        ]
        for r in results
    ]
    header = ["", "seed", "test accuracy % [95% CI]", "McNemar p vs truncate", "training texts -> sequences"]
    print(format_table(table, [*header, "training", "peak RSS"]))
    report = {"rows": results, "params": vars(args), "load_1m": os.getloadavg()[0]}
    write_json_atomic(Path(args.out), json_safe(report))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
