"""Every dataset preset against TF-IDF + logistic regression on the same split, and the cross-domain transfer table.

In-domain: each preset in `configs/datasets/` (and its quick variant in `configs/datasets/quick/`) is trained with
`sentiment-lab train` (a finished run folder is reused), then scored next to TF-IDF + LR fitted on the run's own
train split: test accuracy for two classes, macro F1 for more (accuracy too), 95% bootstrap CIs, the paired
bootstrap CI of the difference and McNemar's test on correctness.

Transfer: an IMDb model (the quick-start run by default) is scored with `sentiment-lab evaluate` on each other
dataset's test split, 3- and 5-class sets mapped to negative/positive with neutral dropped; every other dataset's
model is scored on 2,000 stratified IMDb test reviews (its classes collapsed to polarity: a neutral prediction counts
as wrong). Each transfer cell sits next to the in-domain model on the same rows, polarity against polarity.

    python benchmarks/dataset_presets.py                         # every preset, full and quick, then the transfer table
    python benchmarks/dataset_presets.py --only sst5 --no-quick  # one dataset
    python benchmarks/dataset_presets.py --no-train              # tables from the finished runs only

Writes docs/measurements/datasets.json (raw numbers) and prints the markdown tables of docs/datasets.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("SENTIMENT_LAB_DATA", REPO.parent / "shared" / "data"))
CLI = str(Path(sys.executable).with_name("sentiment-lab"))  # the one beside this Python (the venv's)
# preset -> folder under the data root
DATASETS = {
    "sst2": "sst2",
    "sst5": "sst5",
    "mr_polarity": "mr_polarity",
    "tweeteval_sentiment": "tweeteval_sentiment",
    "financial_phrasebank": "financial_phrasebank",
    "imdb_stars": "imdb",
}
NO_QUICK = {"tweeteval_sentiment"}  # 1,800 training tweets: the full preset is already quick-start scale
# Data class -> IMDb model class for the transfer runs (`evaluate --label-map`); absent: the classes already match.
TO_BINARY = {
    "sst5": "very negative=negative,negative=negative,neutral=,positive=positive,very positive=positive",
    "tweeteval_sentiment": "negative=negative,neutral=,positive=positive",
    "financial_phrasebank": "negative=negative,neutral=,positive=positive",
}
# Published accuracy of the studies' models where they exist (the dataset READMEs in ../shared/data).
PUBLISHED = {
    "sst2": "DistilBERT 91.3, BERT-base 92.7 (dev)",
    "sst5": "BERT-base about 53",
}


def run(cmd: list[str], log: Path) -> float:
    """Run a sentiment-lab command, its output to `log`; the wall time. Exits with the command's error."""
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed ({code}); see {log}")
    return time.perf_counter() - start


def polarity(names: list[str]) -> np.ndarray:
    """Class id -> 0 negative, 1 positive, -1 neither (neutral), by the class names (IMDb stars: low bins negative)."""
    out = []
    for i, name in enumerate(names):
        low = name.lower()
        if "neutral" in low:
            out.append(-1)
        elif "negative" in low:
            out.append(0)
        elif "positive" in low:
            out.append(1)
        else:  # ordered bins without names, e.g. star ranges: the lower half negative
            out.append(0 if i < len(names) / 2 else 1)
    return np.array(out)


def polar_decision(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """0 negative / 1 positive per row: the polarity whose classes hold more probability; neutral's is ignored.

    A 3- or 5-class model is thus asked the binary question the other side answers (its strict prediction, where
    a neutral answer is an error on a polar item, is kept too: `strict`)."""
    if "prob_pos" in frame.columns:  # a binary run: negative, positive
        return (frame["prob_pos"].to_numpy() >= 0.5).astype(int)
    pol = polarity(names)
    probs = frame[[f"prob_{i}" for i in range(len(names))]].to_numpy()
    return (probs[:, pol == 1].sum(axis=1) > probs[:, pol == 0].sum(axis=1)).astype(int)


def interval(ci: dict[str, float], pct: bool = True) -> str:
    scale = 100 if pct else 1
    return f"{ci['estimate'] * scale:.2f} [{ci['low'] * scale:.2f}, {ci['high'] * scale:.2f}]"


def paired_metric_diff(y: np.ndarray, a: np.ndarray, b: np.ndarray, metric: str) -> dict[str, float]:
    """95% paired bootstrap CI of metric(a) - metric(b) over the same rows (scipy.stats.bootstrap, paired)."""
    from scipy.stats import bootstrap

    from sentiment_lab.stats import METRICS

    fn = METRICS[metric]
    res = bootstrap(
        (y, a, b),
        lambda yy, aa, bb: fn(yy, aa) - fn(yy, bb),
        paired=True,
        vectorized=False,
        n_resamples=1000,
        method="percentile",
        random_state=0,
    )
    return {
        "estimate": fn(y, a) - fn(y, b),
        "low": float(res.confidence_interval.low),
        "high": float(res.confidence_interval.high),
    }


def in_domain(name: str, quick: bool, runs: Path, train: bool) -> dict[str, Any] | None:
    from sentiment_lab.baselines import fit_baselines
    from sentiment_lab.data import prepare_data
    from sentiment_lab.rundir import read_run_config
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test

    config = REPO / "configs" / "datasets" / ("quick" if quick else "") / f"{name}.yaml"
    run_dir = runs / (f"{name}-quick" if quick else name)
    wall = None
    if not (run_dir / "metrics.json").is_file():
        if not train:
            return None
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [CLI, "train", str(config), "--data", str(DATA_ROOT / DATASETS[name])]
        print(f"training {config.relative_to(REPO)} -> {run_dir}", flush=True)
        wall = run([*cmd, "--out", str(run_dir), "--overwrite"], run_dir.with_suffix(".log"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = read_run_config(run_dir)
    splits = prepare_data(cfg.data)
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    if list(preds["id"].astype(str)) != list(splits.test["id"].astype(str)):
        sys.exit(f"{run_dir}: predictions.parquet is not the test split the config gives; retrain it")
    y = preds["label"].to_numpy()
    model = preds["pred"].to_numpy()
    tfidf = fit_baselines(splits, ordinal=cfg.data.ordinal)["tfidf_logreg"]["test_probs"].argmax(axis=1)
    k = len(splits.label_names)
    primary = "accuracy" if k == 2 else "f1_macro"
    row: dict[str, Any] = {
        "dataset": name,
        "quick": quick,
        "classes": k,
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "primary": primary,
        "model": {m: bootstrap_ci(y, model, m) for m in ("accuracy", "f1_macro")},
        "tfidf": {m: bootstrap_ci(y, tfidf, m) for m in ("accuracy", "f1_macro")},
        "diff": paired_metric_diff(y, model, tfidf, primary),
        "mcnemar": mcnemar_test(model == y, tfidf == y),
        "train_runtime_s": metrics.get("train_runtime_s"),
        "wall_s": wall,
        "precision": metrics.get("precision"),
        "test_metrics": metrics["test"],
    }
    print(
        f"{name}{' (quick)' if quick else ''}: {primary} model {interval(row['model'][primary])} vs TF-IDF "
        f"{interval(row['tfidf'][primary])}, diff {interval(row['diff'])} pp, "
        f"McNemar p {row['mcnemar']['p_value']:.2g}",
        flush=True,
    )
    return row


def evaluate(model_run: Path, config: Path, data: Path, out: Path, extra: list[str]) -> pd.DataFrame:
    if not (out / "predictions.parquet").is_file():
        cmd = [CLI, "evaluate", str(model_run), str(config), "--data", str(data)]
        out.parent.mkdir(parents=True, exist_ok=True)
        run([*cmd, "--out", str(out), *extra], out.with_suffix(".log"))
    return pd.read_parquet(out / "predictions.parquet")


def transfer(imdb_run: Path, runs: Path) -> list[dict[str, Any]]:
    from sentiment_lab.sidecar import read_sidecar
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test

    def names_of(run_dir: Path) -> list[str]:
        return list(read_sidecar(run_dir / "model").labels or [])

    rows = []
    imdb_names = names_of(imdb_run)
    imdb_pol = polarity(imdb_names)
    for name, folder in DATASETS.items():
        if name == "imdb_stars" or not (runs / name / "predictions.parquet").is_file():
            continue
        config = REPO / "configs" / "datasets" / f"{name}.yaml"
        extra = ["--label-map", TO_BINARY[name]] if name in TO_BINARY else []
        other = evaluate(imdb_run, config, DATA_ROOT / folder, runs / "transfer" / f"imdb-on-{name}", extra)
        own = pd.read_parquet(runs / name / "predictions.parquet")
        own = own.set_index(own["id"].astype(str)).loc[other["id"].astype(str)]  # the rows evaluate kept
        own_names = names_of(runs / name)
        truth = imdb_pol[other["label"].to_numpy()]  # the mapped labels are the IMDb model's classes
        a_ok = polar_decision(other, imdb_names) == truth
        b_ok = polar_decision(own, own_names) == truth
        row = _transfer_row(f"IMDb model on {name}", name, a_ok, b_ok, bootstrap_ci, mcnemar_test)
        if len(own_names) > 2:  # the in-domain model's own answer, neutral included
            row["in_domain_strict"] = bootstrap_ci(truth, polarity(own_names)[own["pred"].to_numpy()], "accuracy")
        rows.append(row)

    imdb_config = REPO / "configs" / "quickstart.yaml"
    imdb_data = DATA_ROOT / "imdb"
    own = pd.read_parquet(imdb_run / "predictions.parquet")  # the quick-start's 2,000 stratified test reviews
    own_ok = polar_decision(own, imdb_names) == own["label"].to_numpy()
    for name in DATASETS:
        if name == "imdb_stars" or not (runs / name / "predictions.parquet").is_file():
            continue
        model_names = names_of(runs / name)
        pol = polarity(model_names)
        # evaluate maps IMDb's negative/positive to one model class each; the prediction is then collapsed to polarity
        targets = {0: model_names[int(np.flatnonzero(pol == 0)[-1])], 1: model_names[int(np.flatnonzero(pol == 1)[0])]}
        label_map = f"negative={targets[0]},positive={targets[1]}"
        extra = ["--set", "data.max_test=2000", "--label-map", label_map]
        other = evaluate(runs / name, imdb_config, imdb_data, runs / "transfer" / f"{name}-on-imdb", extra)
        if list(other["id"].astype(str)) != list(own["id"].astype(str)):
            sys.exit(f"{name} on IMDb: not the same 2,000 reviews as the IMDb model's")
        truth = own["label"].to_numpy()
        a_ok = polar_decision(other, model_names) == truth
        row = _transfer_row(f"{name} model on IMDb", "imdb", a_ok, own_ok, bootstrap_ci, mcnemar_test)
        if len(model_names) > 2:
            row["transfer_strict"] = bootstrap_ci(truth, pol[other["pred"].to_numpy()], "accuracy")
        rows.append(row)
    return rows


def _transfer_row(what: str, data: str, a_ok, b_ok, bootstrap_ci, mcnemar_test) -> dict[str, Any]:
    ones = np.ones(len(a_ok), dtype=int)
    row = {
        "what": what,
        "data": data,
        "n": len(a_ok),
        "transfer": bootstrap_ci(ones, a_ok.astype(int), "accuracy"),
        "in_domain": bootstrap_ci(ones, b_ok.astype(int), "accuracy"),
        "mcnemar": mcnemar_test(a_ok, b_ok),
    }
    print(
        f"{what}: {interval(row['transfer'])} vs in-domain {interval(row['in_domain'])} on {row['n']} rows, "
        f"McNemar p {row['mcnemar']['p_value']:.2g}",
        flush=True,
    )
    return row


def tables(results: dict[str, Any]) -> str:
    lines = [
        "| dataset | size | classes | train / val / test | metric | MiniLM [95% CI] | TF-IDF + LR [95% CI] | "
        "difference, pp [95% CI] | McNemar p | accuracy, MiniLM / TF-IDF | training | published |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["in_domain"]:
        m = row["primary"]
        metric = "accuracy" if m == "accuracy" else "macro F1"
        minutes = f"{row['train_runtime_s'] / 60:.1f} min" if row.get("train_runtime_s") else ""
        published = PUBLISHED.get(row["dataset"], "") if not row["quick"] else ""
        lines.append(
            f"| {row['dataset']} | {'quick' if row['quick'] else 'full'} | {row['classes']} | "
            f"{row['train']:,} / {row['val']:,} / {row['test']:,} | {metric} | {interval(row['model'][m])} | "
            f"{interval(row['tfidf'][m])} | {row['diff']['estimate'] * 100:+.2f} "
            f"[{row['diff']['low'] * 100:+.2f}, {row['diff']['high'] * 100:+.2f}] | {row['mcnemar']['p_value']:.2g} | "
            f"{row['model']['accuracy']['estimate'] * 100:.2f} / {row['tfidf']['accuracy']['estimate'] * 100:.2f} | "
            f"{minutes} | {published} |"
        )
    lines += [
        "",
        "| model on data | rows | transfer accuracy [95% CI] | in-domain model, same rows [95% CI] | McNemar p | "
        "3/5-class model answering neutral counted wrong |",
        "|---|---|---|---|---|---|",
    ]
    for row in results.get("transfer", []):
        strict = row.get("in_domain_strict") or row.get("transfer_strict")
        lines.append(
            f"| {row['what']} | {row['n']:,} | {interval(row['transfer'])} | {interval(row['in_domain'])} | "
            f"{row['mcnemar']['p_value']:.2g} | {interval(strict) if strict else ''} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(DATASETS), help="these datasets (default: all)")
    p.add_argument("--no-quick", action="store_true", help="skip the quick presets")
    p.add_argument("--no-full", action="store_true", help="skip the full-size presets")
    p.add_argument("--no-train", action="store_true", help="report finished runs only")
    p.add_argument("--no-transfer", action="store_true")
    p.add_argument("--runs", default=str(REPO / "runs" / "datasets"), help="folder of the run folders")
    p.add_argument("--imdb-run", help="IMDb model for the transfer table (default: train the quick-start)")
    p.add_argument("--out", default=str(REPO / "docs" / "measurements" / "datasets.json"))
    args = p.parse_args()

    runs = Path(args.runs)
    names = args.only or list(DATASETS)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    rows = {(r["dataset"], r["quick"]): r for r in results.get("in_domain", [])}
    for quick in [q for q, skip in ((False, args.no_full), (True, args.no_quick)) if not skip]:
        for name in names:
            if quick and name in NO_QUICK:
                continue
            row = in_domain(name, quick, runs, not args.no_train)
            if row is not None:
                rows[(name, quick)] = row
    results["in_domain"] = sorted(rows.values(), key=lambda r: (list(DATASETS).index(r["dataset"]), r["quick"]))
    if not args.no_transfer:
        imdb_run = Path(args.imdb_run) if args.imdb_run else runs / "imdb-quickstart"
        if not (imdb_run / "metrics.json").is_file():
            if args.no_train:
                sys.exit(f"no IMDb run at {imdb_run}: pass --imdb-run")
            cmd = [CLI, "train", str(REPO / "configs" / "quickstart.yaml"), "--data", str(DATA_ROOT / "imdb")]
            run([*cmd, "--out", str(imdb_run), "--overwrite"], imdb_run.with_suffix(".log"))
        results["transfer"] = transfer(imdb_run, runs)
        results["imdb_model"] = str(imdb_run)
    from sentiment_lab.benchmarking import cpu_name

    results["machine"] = {"cpus": os.cpu_count(), "processor": cpu_name()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print("\n" + tables(results))
    print(f"\nraw numbers: {out}")


if __name__ == "__main__":
    main()
