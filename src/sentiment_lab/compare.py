"""Compare finished runs evaluated on the same test reviews: comparison.html + comparison.json.

A table of runs (config differences highlighted, accuracy/F1 with bootstrap CIs, speed), McNemar's test and a
paired bootstrap of the accuracy difference for every pair, overlaid validation curves, and mean +/- std over
seeds when several runs differ only in `training.seed`. Runs whose test reviews differ are refused: a
difference in accuracy on different items says nothing about the models; so are runs with different label sets.
Any number of classes: for K > 2 the F1 column is macro F1; McNemar's test is on correctness either way.
An ensemble folder compares like a run: its config is its first member's, so its members and weights are shown as
the config keys `ensemble.members` and `ensemble.weights`.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment_lab.analysis.calibration import class_names_of
from sentiment_lab.errors import SentimentLabError
from sentiment_lab.io import json_safe, write_json_atomic, write_text_atomic
from sentiment_lab.rendering import embed_png, pyplot, render_template, save_figure
from sentiment_lab.rundir import PREDICTIONS_FILE, RunFolder, load_run
from sentiment_lab.stats import bootstrap_ci, holm_adjust, mcnemar_test, paired_bootstrap_diff, verdict

# Keys that describe the machine or bookkeeping, not the experiment: never shown as config differences.
IGNORED_KEYS = ("name", "resolved.environment", "resolved.threads", "resolved.device", "resolved.cleaning")
SEED_KEYS = ("training.seed",)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and scalars are leaves."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in IGNORED_KEYS)


def comparable_config(run: RunFolder) -> dict[str, Any]:
    """The run's config.yaml flattened to dotted keys, without the keys that never describe the experiment.

    An ensemble adds `ensemble.members` and `ensemble.weights` (its config.yaml is its first member's).
    """
    config = {k: v for k, v in flatten(run.raw_config).items() if not _ignored(k)}
    if run.ensemble is not None:
        config["ensemble.members"] = [m.name for m in run.ensemble.members]
        config["ensemble.weights"] = [round(m.weight, 6) for m in run.ensemble.members]
    return config


def check_same_items(a: RunFolder, b: RunFolder, name_a: str, name_b: str) -> None:
    """Refuse a pair whose test predictions are not over the same reviews with the same labels."""
    pa, pb = a.predictions, b.predictions
    ids_a, ids_b = pa["id"].astype(str), pb["id"].astype(str)
    if len(pa) != len(pb) or set(ids_a) != set(ids_b):
        common = len(set(ids_a) & set(ids_b))
        raise SentimentLabError(
            f"runs {name_a} ({len(pa)} test reviews) and {name_b} ({len(pb)}) were not evaluated on the same test "
            f"items ({common} ids in common); McNemar and paired tests need identical test sets. Compare runs made "
            "with the same data settings (data.path, data.max_test, data.split_seed) or re-evaluate one of them"
        )
    la = dict(zip(ids_a, pa["label"].astype(int), strict=True))
    mismatched = sum(la[i] != int(lab) for i, lab in zip(ids_b, pb["label"], strict=True))
    if mismatched:
        raise SentimentLabError(
            f"runs {name_a} and {name_b} share test ids but {mismatched} labels differ; they were not evaluated on "
            "the same items (different data sources or label maps?)"
        )


def check_same_classes(a: RunFolder, b: RunFolder, name_a: str, name_b: str) -> None:
    """Refuse a pair of runs whose classes (names, in id order) differ: their labels mean different things."""
    classes_a, classes_b = class_names_of(a), class_names_of(b)
    if [c.lower() for c in classes_a] != [c.lower() for c in classes_b]:
        raise SentimentLabError(
            f"runs {name_a} (classes {', '.join(classes_a)}) and {name_b} (classes {', '.join(classes_b)}) have "
            "different label sets; compare runs trained on the same classes (or re-evaluate one on the other's data "
            "with `sentiment-lab evaluate MODEL --data ... --label-map ...`)"
        )


def _names(runs: list[RunFolder]) -> list[str]:
    names = [r.path.name for r in runs]
    if len(set(names)) < len(names):  # same folder names in different places: use the paths
        names = [str(r.path) for r in runs]
    return names


def _aligned(run: RunFolder, order: pd.Index) -> pd.DataFrame:
    return run.predictions.assign(id=run.predictions["id"].astype(str)).set_index("id").loc[order]


def compare_runs(
    run_dirs: list[str | Path],
    out_dir: str | Path | None = None,
    alpha: float = 0.05,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Compare runs on their shared test set; write comparison.html, comparison.json and figures to out_dir.

    out_dir: default `<parent of the first run>/comparison`.
    """
    if len(run_dirs) < 2:
        raise SentimentLabError("compare needs at least two run folders, e.g. sentiment-lab compare runs/a runs/b")
    if not 0 < alpha < 1:
        raise SentimentLabError(f"alpha must be between 0 and 1 (e.g. 0.05), got {alpha}")
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) < len(resolved):
        raise SentimentLabError("the same run folder is given twice; list each run once")
    runs = [load_run(d) for d in run_dirs]
    configs = [comparable_config(r) for r in runs]
    names = _names(runs)
    for (i, a), (j, b) in itertools.combinations(enumerate(runs), 2):
        check_same_classes(a, b, names[i], names[j])
        check_same_items(a, b, names[i], names[j])
    classes = class_names_of(runs[0])
    f1_metric = "f1" if len(classes) == 2 else "f1_macro"  # K > 2: the F1 column is macro F1
    order = pd.Index(runs[0].predictions["id"].astype(str))
    if order.has_duplicates:
        raise SentimentLabError(f"{runs[0].path / PREDICTIONS_FILE} repeats test ids; pairing needs unique ids")
    aligned = [_aligned(r, order) for r in runs]
    labels = aligned[0]["label"].to_numpy(dtype=int)
    correct = [a["pred"].to_numpy(dtype=int) == labels for a in aligned]

    table = []
    for name, run, config, frame in zip(names, runs, configs, aligned, strict=True):
        m = run.metrics
        pred = frame["pred"].to_numpy(dtype=int)
        table.append(
            {
                "run": name,
                "dir": str(run.path),
                "model": m.get("model") or config.get("model.name"),
                "accuracy": bootstrap_ci(labels, pred, "accuracy", n_boot),
                "f1": bootstrap_ci(labels, pred, f1_metric, n_boot),
                "train_runtime_s": m.get("train_runtime_s"),
                "train_samples_per_s": m.get("train_samples_per_s"),
                "eval_samples_per_s": m.get("eval_samples_per_s"),
                "best_step": m.get("best_step"),
            }
        )

    all_keys = sorted(set().union(*configs))
    differing = [k for k in all_keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    config_rows = [{"key": k, "values": [c.get(k) for c in configs]} for k in differing]

    pairs = []
    for i, j in itertools.combinations(range(len(runs)), 2):
        test = mcnemar_test(correct[i], correct[j])
        boot = paired_bootstrap_diff(correct[i], correct[j], n_boot)
        pairs.append({"a": names[i], "b": names[j], "mcnemar": test, "accuracy_diff": boot})
    adjusted = holm_adjust([p["mcnemar"]["p_value"] for p in pairs])
    for p, adj in zip(pairs, adjusted, strict=True):
        p["mcnemar"]["p_holm"] = adj
        ia, ib = names.index(p["a"]), names.index(p["b"])
        acc_a, acc_b = float(correct[ia].mean()), float(correct[ib].mean())
        # with several pairs the verdict uses the Holm-adjusted p-value (family-wise error at alpha)
        p_used = adj if len(pairs) > 1 else p["mcnemar"]["p_value"]
        p["verdict"] = verdict(p_used, p["a"], p["b"], acc_a, acc_b, alpha)
        p["significant"] = p_used < alpha

    out = Path(out_dir) if out_dir else runs[0].path.parent / "comparison"
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "accuracy": _accuracy_figure(table, out / "accuracy_ci.png"),
        "curves": _curves_figure(names, runs, out / "validation_curves.png"),
    }
    result = {
        "runs": table,
        "n_test": len(labels),
        **({"classes": classes, "f1_kind": "macro F1"} if len(classes) > 2 else {}),
        "alpha": alpha,
        "config_differences": config_rows,
        "pairs": pairs,
        "seed_groups": seed_groups(names, configs, table),
        "without_history": [n for n, r in zip(names, runs, strict=True) if r.history is None],
        "figures": {k: v.name if v else None for k, v in figures.items()},
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result = json_safe(result)
    page = render_template(
        "comparison.html", c=result, figs={k: embed_png(v) if v else None for k, v in figures.items()}
    )
    write_text_atomic(out / "comparison.html", page)
    write_json_atomic(out / "comparison.json", result)
    result["out_dir"] = str(out)
    return result


def seed_groups(names: list[str], configs: list[dict[str, Any]], table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose configs differ only in the seed: mean and std of accuracy, F1 and training time per group.

    configs: each run's `comparable_config`.
    """
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        key = json.dumps(
            {k: v for k, v in config.items() if k not in SEED_KEYS and not k.startswith("resolved.")},
            sort_keys=True,
            default=str,
        )
        groups.setdefault(key, []).append(i)
    out = []
    for members in groups.values():
        if len({json.dumps(configs[i].get("training.seed")) for i in members}) < 2:
            continue  # one run, or repeats of one seed: no seed spread to report
        row: dict[str, Any] = {
            "runs": [names[i] for i in members],
            "seeds": [configs[i].get("training.seed") for i in members],
        }
        for metric in ("accuracy", "f1"):
            vals = np.array([table[i][metric]["estimate"] for i in members])
            row[metric] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1))}
        times = [table[i]["train_runtime_s"] for i in members if table[i]["train_runtime_s"] is not None]
        if len(times) >= 2:
            row["train_runtime_s"] = {"mean": float(np.mean(times)), "std": float(np.std(times, ddof=1))}
        out.append(row)
    return out


def _accuracy_figure(table: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.45 * len(table)))
    y = np.arange(len(table))
    for k, metric, color in ((0, "accuracy", "#1d4ed8"), (1, "f1", "#16a34a")):
        est = np.array([r[metric]["estimate"] for r in table])
        lo = np.array([r[metric]["low"] for r in table])
        hi = np.array([r[metric]["high"] for r in table])
        ax.errorbar(
            100 * est,
            y + (k - 0.5) * 0.25,
            xerr=[100 * (est - lo), 100 * (hi - est)],
            fmt="o",
            color=color,
            capsize=3,
            label=f"{metric} (95% bootstrap CI)",
        )
    ax.set_yticks(y, [r["run"] for r in table], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test score (%)")
    ax.set_title("Test accuracy and F1 per run")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path)


def _curves_figure(names: list[str], runs: list[RunFolder], path: Path) -> Path | None:
    curves = []
    for name, r in zip(names, runs, strict=True):
        h = r.history
        if h is not None and "val_loss" in h:
            ev = h.dropna(subset=["val_loss"])
            if len(ev):
                curves.append((name, ev))
    if not curves:
        return None
    plt = pyplot()
    x = "epoch" if all("epoch" in ev for _, ev in curves) else "step"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, ev in curves:
        if "val_accuracy" in ev:
            axes[0].plot(ev[x], ev["val_accuracy"], "o-", label=name)
        axes[1].plot(ev[x], ev["val_loss"], "o-", label=name)
    axes[0].set_ylabel("validation accuracy (0-1)")
    axes[1].set_ylabel("validation loss (cross-entropy, nats)")
    for ax, title in zip(axes, ("Validation accuracy", "Validation loss"), strict=True):
        ax.set_xlabel(x)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
