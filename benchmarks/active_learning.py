"""Active learning on IMDb: accuracy against labels spent, per selection strategy, against random sampling.

A fixed pool of IMDb training reviews (stratified, seeded) plays the unlabelled data. Each (strategy, seed) starts
from the same random 100 labels (per seed), trains MiniLM-L6 with the quickstart recipe (configs/quickstart.yaml: lr
1e-4, 2 epochs but at least --min-steps optimizer steps, warmup 0.1, head_tail truncation; no validation split, the
labels all train, the last model is kept), then doubles its labels round by round: the next labels are chosen from
the rest of the pool by the strategy (`sentiment_lab.selection.choose`, as `sentiment-lab select` does) with the
previous round's model, and a new model is trained from scratch on all labels so far. Every model is scored on one
fixed stratified subset of 2,000 IMDb test reviews. Points are means over seeds with 95% bootstrap CIs (reviews and
seeds resampled).

A1 (docs/active_learning.md): the labels the best strategy needs to reach random sampling's mean accuracy at the
largest round, by linear interpolation on its mean curve, as a share of that largest round (target <= 60%).

    python benchmarks/active_learning.py --quick        # pool 5,000, 128 tokens, uncertainty vs random, 100..1,600
                                                        # labels, 3 seeds, 300 steps a round: 109 minutes on
                                                        # 2 CPU cores (each further strategy about 55 more)
    python benchmarks/active_learning.py                # full: pool 25,000, 256 tokens, uncertainty, margin, random,
                                                        # diverse, 100..3,200 labels, 3 seeds (a GPU, or a long night)

Resumable: every (strategy, seed, round) result is written to the JSON file (--out) as soon as it is measured, so a
killed run continues where it stopped when started again with the same settings. Writes the JSON (raw results and
the summary), a PNG curve and the results section of docs/active_learning.md (--doc; --no-doc to skip).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
LABELS = ["negative", "positive"]
QUICK = {"pool_size": 5000, "max_length": 128, "strategies": ["uncertainty", "random"], "rounds": [100, 1600]}
FULL = {
    "pool_size": 25000,
    "max_length": 256,
    "strategies": ["uncertainty", "margin", "random", "diverse"],
    "rounds": [100, 3200],
}
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"


# Pure functions (tests/test_select.py) ----------------------------------------------------------------------------


def round_schedule(start: int, stop: int) -> list[int]:
    """Label counts from start, doubling, up to stop (stop itself is the last round even when not a doubling)."""
    rounds = [start]
    while rounds[-1] * 2 <= stop:
        rounds.append(rounds[-1] * 2)
    if rounds[-1] < stop:
        rounds.append(stop)
    return rounds


def labels_to_reach(rounds: list[int], curve: list[float], target: float) -> float | None:
    """Labels at which a mean accuracy curve first reaches target, by linear interpolation between rounds.

    The first round when it is reached there already; None when it is never reached.
    """
    for i, accuracy in enumerate(curve):
        if accuracy >= target:
            if i == 0:
                return float(rounds[0])
            x0, x1, y0, y1 = rounds[i - 1], rounds[i], curve[i - 1], curve[i]
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return None


def a1_share(rounds: list[int], curves: dict[str, list[float]]) -> dict[str, Any]:
    """A1: the labels the best strategy needs to match random's mean accuracy at the largest round, as a share of it.

    curves: mean accuracy per round of each strategy, `random` among them. The best strategy needs the fewest labels
    (ties: the higher accuracy at the largest round). share None: no strategy reaches random's accuracy.
    """
    target = curves["random"][-1]
    needed = {s: labels_to_reach(rounds, c, target) for s, c in curves.items() if s != "random"}
    reached = {s: v for s, v in needed.items() if v is not None}
    best = min(reached, key=lambda s: (reached[s], -curves[s][-1])) if reached else None
    share = reached[best] / rounds[-1] if best else None
    return {
        "target_accuracy": target,
        "random_labels": rounds[-1],
        "labels_needed": needed,
        "best_strategy": best,
        "labels": reached.get(best) if best else None,
        "share": share,
        "meets_target": share is not None and share <= 0.60,
    }


def bootstrap_mean_ci(
    correct: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float]:
    """Mean accuracy over seeds of a (seeds, reviews) matrix of correct answers, with a percentile bootstrap CI that
    resamples both the seeds and the test reviews (training noise and test-set noise)."""
    correct = np.asarray(correct, dtype=np.float64)
    s, r = correct.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    for b in range(n_boot):
        stats[b] = correct[rng.integers(0, s, s)][:, rng.integers(0, r, r)].mean()
    tail = (1 - confidence) / 2 * 100
    return {
        "mean": float(correct.mean()),
        "low": float(np.percentile(stats, tail)),
        "high": float(np.percentile(stats, 100 - tail)),
    }


# The simulation ---------------------------------------------------------------------------------------------------


def epochs_for(labels: int, batch_size: int, epochs: float, min_steps: int) -> float:
    """The recipe's epochs, raised so that a round of `labels` trains at least `min_steps` optimizer steps.

    2 epochs of 100 labels at batch 16 are 14 steps: such models stay at chance (docs/active_learning.md), and a
    chance-level model makes every strategy's choice meaningless. Sets rich in uncertain texts sit at chance for
    about 100 steps before they learn (the 800-label rounds collapsed at 100 steps and learnt at 300: the default)."""
    steps_per_epoch = math.ceil(labels / batch_size)
    return max(epochs, math.ceil(min_steps / steps_per_epoch)) if min_steps > 0 else epochs


def experiment_config(args: argparse.Namespace, seed: int, name: str, labels: int) -> Any:
    """The quickstart recipe with this benchmark's settings: no validation split, no baselines, no trackers, and at
    least --min-steps optimizer steps per round."""
    from sentiment_lab.config import build_config, read_config

    raw = read_config(REPO / "configs" / "quickstart.yaml")
    raw["name"] = name
    raw["data"] = {"val_fraction": 0}  # the data comes in as DataSplits; every label trains
    raw.setdefault("tokenization", {})["max_length"] = args.max_length
    raw.setdefault("model", {})["name"] = args.model
    raw.setdefault("training", {}).update({"seed": seed, "report_to": [], "logging_steps": 50})
    raw["evaluation"] = {"baselines": False}
    config = build_config(raw, "configs/quickstart.yaml (active learning)")
    epochs = epochs_for(labels, config.training.batch_size, config.training.epochs, args.min_steps)
    return config.model_copy(update={"training": config.training.model_copy(update={"epochs": epochs})})


def load_data(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pool (pool_size stratified training reviews) and the fixed test subset, both seeded with 0."""
    from sentiment_lab.data import stratified_subset

    data = Path(args.data)
    columns = ["id", "text", "label"]
    pool = stratified_subset(pd.read_parquet(data / "train.parquet")[columns], args.pool_size, seed=0)
    test = stratified_subset(pd.read_parquet(data / "test.parquet")[columns], args.test_size, seed=0)
    return pool.reset_index(drop=True), test.reset_index(drop=True)


class Simulation:
    """The rounds of every (strategy, seed), cached in one JSON file."""

    def __init__(self, args: argparse.Namespace, pool: pd.DataFrame, test: pd.DataFrame) -> None:
        self.args, self.pool, self.test = args, pool, test
        self.out = Path(args.out)
        self.work = Path(args.work)
        self.settings = {
            "pool_size": len(pool),
            "test_size": len(test),
            "max_length": args.max_length,
            "model": args.model,
            "candidates": args.candidates,
            "recipe": "configs/quickstart.yaml, val_fraction 0, no baselines",
            "min_steps": args.min_steps,
            "pool_ids_head": pool["id"].head(5).tolist(),
        }
        self.cache: dict[str, Any] = {"settings": self.settings, "results": {}}
        if self.out.is_file():
            cached = json.loads(self.out.read_text())
            if cached.get("settings") != self.settings:
                raise SystemExit(
                    f"{self.out} holds results of other settings ({cached.get('settings')}); "
                    "give another --out or delete it"
                )
            self.cache["results"] = cached.get("results", {})

    def save(self, **extra: Any) -> None:
        from sentiment_lab.io import json_safe, write_json_atomic

        write_json_atomic(self.out, json_safe({**self.cache, **extra}))

    def train_round(self, key: str, seed: int, labelled: list[int]) -> Path:
        from sentiment_lab.data import DataSplits
        from sentiment_lab.training import train

        run = self.work / key.replace("/", "-")
        if (run / "metrics.json").is_file() and (run / "model").is_dir():
            return run
        splits = DataSplits(
            train=self.pool.iloc[labelled].reset_index(drop=True),
            val=self.pool.iloc[:0].reset_index(drop=True),
            test=self.test,
            label_names=LABELS,
        )
        config = experiment_config(self.args, seed, key.replace("/", "-"), len(labelled))
        train(config, run, overwrite=True, splits=splits)
        return run

    def score(self, key: str, run: Path, added: list[int], seconds: dict[str, float]) -> None:
        preds = pd.read_parquet(run / "predictions.parquet").set_index("id")
        correct = (preds.loc[self.test["id"], "pred"].to_numpy() == self.test["label"].to_numpy()).astype(int)
        self.cache["results"][key] = {
            "accuracy": float(correct.mean()),
            "correct": "".join(map(str, correct)),
            "added": added,
            **seconds,
        }
        self.save()
        print(
            f"{key:32} accuracy {correct.mean():.4f}  "
            f"({seconds['train_s']:.0f} s train, {seconds['select_s']:.0f} s select)"
        )

    def select(
        self, strategy: str, seed: int, round_index: int, previous: Path | None, labelled: list[int], n: int
    ) -> list[int]:
        from sentiment_lab.predictor import Predictor
        from sentiment_lab.selection import choose

        remaining = np.setdiff1d(np.arange(len(self.pool)), labelled)
        if strategy == "random" or previous is None:
            picked = choose("random", n, size=len(remaining), seed=seed * 1000 + round_index)
            return remaining[picked.indices].tolist()
        predictor = Predictor.load(previous, batch_size=64)
        texts = self.pool["text"].to_numpy()[remaining].tolist()
        probs = predictor.probabilities(texts)

        def embed(positions: np.ndarray) -> np.ndarray:
            return predictor.embeddings([texts[i] for i in positions])

        picked = choose(strategy, n, probs, seed=seed, embed=embed, candidates=self.args.candidates)
        return remaining[picked.indices].tolist()

    def run(self, strategy: str, seed: int, rounds: list[int]) -> None:
        """Every round of one strategy and seed; rounds already in the cache are skipped (their model re-trained
        only when the next round needs it and its folder is gone)."""
        labelled: list[int] = []
        previous: Path | None = None
        for r, target in enumerate(rounds):
            # the first round is the same random draw for every strategy of a seed: trained once, shared
            key = f"start/seed{seed}/{target}" if r == 0 else f"{strategy}/seed{seed}/{target}"
            cached = self.cache["results"].get(key)
            if cached is not None:
                labelled += cached["added"]
                previous = None  # its model is trained again below only if a later round still needs it
                last_key = key
                continue
            if r > 0 and previous is None and strategy != "random":
                previous = self.train_round(last_key, seed, labelled)
            start = time.perf_counter()
            added = self.select(strategy, seed, r, previous, labelled, target - len(labelled))
            select_s = time.perf_counter() - start
            labelled += added
            start = time.perf_counter()
            run = self.train_round(key, seed, labelled)
            self.score(key, run, added, {"train_s": time.perf_counter() - start, "select_s": select_s})
            if previous is not None and not previous.name.startswith("start-"):
                shutil.rmtree(previous, ignore_errors=True)  # a model folder is 90 MB; the next round needs only this
            previous, last_key = run, key
        if previous is not None and not previous.name.startswith("start-"):
            shutil.rmtree(previous, ignore_errors=True)


def summarise(cache: dict[str, Any], strategies: list[str], seeds: list[int], rounds: list[int]) -> dict[str, Any]:
    """Mean accuracy and its CI per strategy and round over the seeds measured, and A1."""
    points: dict[str, list[dict[str, Any]]] = {}
    for strategy in strategies:
        points[strategy] = []
        for r, target in enumerate(rounds):
            keys = [f"start/seed{s}/{target}" if r == 0 else f"{strategy}/seed{s}/{target}" for s in seeds]
            found = [cache["results"][k] for k in keys if k in cache["results"]]
            if not found:
                continue
            correct = np.array([[c == "1" for c in f["correct"]] for f in found])
            points[strategy].append(
                {
                    "labels": target,
                    "seeds": len(found),
                    **bootstrap_mean_ci(correct),
                    "per_seed": [f["accuracy"] for f in found],
                }
            )
    complete = all(len(p) == len(rounds) and all(q["seeds"] == len(seeds) for q in p) for p in points.values())
    a1 = None
    if complete and "random" in points and len(points) > 1:
        a1 = a1_share(rounds, {s: [q["mean"] for q in p] for s, p in points.items()})
    return {"points": points, "complete": complete, "a1": a1}


def plot(summary: dict[str, Any], path: Path, title: str) -> Path:
    from sentiment_lab.rendering import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for strategy, points in summary["points"].items():
        x = [p["labels"] for p in points]
        ax.plot(x, [p["mean"] for p in points], marker="o", label=strategy)
        ax.fill_between(x, [p["low"] for p in points], [p["high"] for p in points], alpha=0.2)
    ax.set_xscale("log", base=2)
    rounds = sorted({p["labels"] for points in summary["points"].values() for p in points})
    ax.set_xticks(rounds, [f"{n:,}" for n in rounds])
    ax.minorticks_off()
    ax.set_xlabel("labelled reviews")
    ax.set_ylabel("test accuracy (mean of seeds, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def results_markdown(summary: dict[str, Any], settings: dict[str, Any], figure: str, command: str) -> str:
    lines = [
        f"Measured with `{command}` ({settings['pool_size']:,}-review pool, {settings['max_length']} tokens, "
        f"{settings['test_size']:,} test reviews, {settings['model']}).",
        "",
        f"![accuracy against labels]({figure})",
        "",
    ]
    strategies = list(summary["points"])
    rounds = sorted({p["labels"] for ps in summary["points"].values() for p in ps})
    lines.append("| labels | " + " | ".join(strategies) + " |")
    lines.append("|---:|" + "---|" * len(strategies))
    for n in rounds:
        cells = []
        for s in strategies:
            p = next((q for q in summary["points"][s] if q["labels"] == n), None)
            cells.append(
                f"{p['mean']:.3f} [{p['low']:.3f}, {p['high']:.3f}] ({p['seeds']} seed{'s' if p['seeds'] > 1 else ''})"
                if p
                else "-"
            )
        lines.append(f"| {n:,} | " + " | ".join(cells) + " |")
    a1 = summary["a1"]
    lines.append("")
    if a1 is None:
        lines.append(
            "A1: not computed (the measurement is incomplete, or random sampling is not among the strategies)."
        )
    elif a1["share"] is None:
        lines.append(
            f"A1: no strategy reaches random sampling's {a1['target_accuracy']:.4f} at {a1['random_labels']:,} labels "
            "within these rounds (target not met)."
        )
    else:
        verdict = "met" if a1["meets_target"] else "not met"
        lines.append(
            f"A1: {a1['best_strategy']} reaches random sampling's accuracy at {a1['random_labels']:,} labels "
            f"({a1['target_accuracy']:.4f}) with {a1['labels']:,.0f} labels, {a1['share']:.0%} of random's "
            f"(target <= 60%: {verdict})."
        )
    return "\n".join(lines)


def write_doc(doc: Path, body: str) -> None:
    from sentiment_lab.io import write_text_atomic

    text = doc.read_text(encoding="utf-8")
    if RESULTS_START not in text or RESULTS_END not in text:
        raise SystemExit(f"{doc} lacks the markers {RESULTS_START} / {RESULTS_END}; add them where the results go")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    write_text_atomic(doc, f"{head}{RESULTS_START}\n{body}\n{RESULTS_END}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pool 5,000, 128 tokens, uncertainty vs random, 100..1,600")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--strategies", nargs="+", help="selection strategies (random is the reference; default by mode)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument(
        "--rounds", nargs="+", type=int, help="label counts of the rounds (default: 100 doubling to the top)"
    )
    p.add_argument("--pool-size", type=int, help="training reviews in the pool (default 5,000 quick, 25,000 full)")
    p.add_argument("--test-size", type=int, default=2000, help="fixed stratified IMDb test subset (default 2,000)")
    p.add_argument("--max-length", type=int, help="tokens per review (default 128 quick, 256 full)")
    p.add_argument("--model", default="minilm-l6", help="model of every round (default minilm-l6)")
    p.add_argument("--candidates", type=int, default=5, help="diverse: cluster the candidates x N least confident")
    p.add_argument(
        "--min-steps",
        type=int,
        default=300,
        help="optimizer steps every round trains at least (epochs raised for small rounds; default 300, 0: off)",
    )
    p.add_argument(
        "--out", help="results JSON, also the resume cache (default docs/measurements/active_learning[-quick].json)"
    )
    p.add_argument("--work", help="run folders of the rounds (default runs/active_learning[-quick])")
    p.add_argument(
        "--doc", default=str(REPO / "docs" / "active_learning.md"), help="page whose results section is rewritten"
    )
    p.add_argument("--figure", help="curve PNG (default docs/figures/active_learning[-quick].png)")
    p.add_argument("--no-doc", action="store_true", help="write the JSON only")
    args = p.parse_args()

    from sentiment_lab.selection import STRATEGIES

    mode = QUICK if args.quick else FULL
    suffix = "-quick" if args.quick else ""
    args.strategies = args.strategies or mode["strategies"]
    unknown = sorted(set(args.strategies) - set(STRATEGIES))
    if unknown:
        p.error(f"unknown strategies {unknown}; use some of {', '.join(STRATEGIES)}")
    args.pool_size = args.pool_size or mode["pool_size"]
    args.max_length = args.max_length or mode["max_length"]
    rounds = sorted(set(args.rounds)) if args.rounds else round_schedule(*mode["rounds"])
    if rounds[-1] > args.pool_size:
        p.error(f"the last round ({rounds[-1]:,} labels) needs a pool of at least that many reviews")
    args.out = args.out or str(REPO / "docs" / "measurements" / f"active_learning{suffix}.json")
    args.work = args.work or str(REPO / "runs" / f"active_learning{suffix}")
    figure = Path(args.figure or REPO / "docs" / "figures" / f"active_learning{suffix}.png")
    seeds = list(range(args.seeds))

    pool, test = load_data(args)
    sim = Simulation(args, pool, test)
    print(
        f"pool {len(pool):,} reviews, test {len(test):,}, rounds {rounds}, strategies {args.strategies}, seeds {seeds}"
    )
    for seed in seeds:
        for strategy in args.strategies:
            sim.run(strategy, seed, rounds)
        shutil.rmtree(Path(args.work) / f"start-seed{seed}-{rounds[0]}", ignore_errors=True)

    summary = summarise(sim.cache, args.strategies, seeds, rounds)
    sim.save(summary=summary, strategies=args.strategies, seeds=seeds, rounds=rounds)
    for strategy, points in summary["points"].items():
        print(strategy, " ".join(f"{q['labels']}:{q['mean']:.4f}" for q in points))
    print("A1:", json.dumps(summary["a1"]))
    if not args.no_doc:
        title = f"Active learning on IMDb (pool {len(pool):,}, {args.max_length} tokens, {len(seeds)} seeds)"
        plot(summary, figure, title)
        command = " ".join(["python benchmarks/active_learning.py", *sys.argv[1:]])
        doc = Path(args.doc)
        write_doc(doc, results_markdown(summary, sim.settings, os.path.relpath(figure, doc.parent), command))
        print(f"wrote {args.out}, {figure} and the results of {doc}")


if __name__ == "__main__":
    main()
