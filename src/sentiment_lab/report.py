"""The study report: a run folder -> RUN_DIR/report.html, RUN_DIR/analysis.json and RUN_DIR/figures/*.png.

Sections, in the order a reader asks: data, training dynamics, metrics (with bootstrap CIs and baselines),
confidence and calibration (temperature scaling stored into the model folder), errors with heuristic tags,
possible label noise, explanations. Every number on the page is computed here from the run's files.
The page embeds its figures (base64), so it opens offline and can be mailed as one file.

An ensemble folder (`sentiment-lab ensemble`) gets the same report from its saved predictions, with its members'
metrics and McNemar's test against the best member; the sections that need one model say why they are empty
(training dynamics, explanations) and nothing is stored (each member keeps its own temperature).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sentiment_lab.analysis import calibration as cal
from sentiment_lab.analysis import error_tags
from sentiment_lab.analysis import explain as ex
from sentiment_lab.data import dataset_stats, prepare_data
from sentiment_lab.errors import RunDirError, SentimentLabError
from sentiment_lab.io import json_safe, write_json_atomic, write_text_atomic
from sentiment_lab.metrics import classification_metrics
from sentiment_lab.modeling import load_tokenizer
from sentiment_lab.rendering import embed_png, pyplot, render_template, save_figure, set_ratio_xaxis
from sentiment_lab.rundir import COMPRESSION_FILE, PREDICTIONS_FILE, RunFolder, load_run
from sentiment_lab.sidecar import read_sidecar
from sentiment_lab.stats import bootstrap_ci
from sentiment_lab.tokenization import count_tokens

log = logging.getLogger("sentiment_lab")

FIGURES = "figures"
CONFIDENT_WRONG = 0.95
CLASS_COLORS = {"negative": "#dc2626", "positive": "#16a34a"}
SPLIT_COLORS = {"train": "#2563eb", "val": "#f59e0b", "test": "#7c3aed"}
REPORT_COLUMNS = ("id", "label", "pred", "text")  # of the test predictions, with prob_pos or prob_0 .. prob_{K-1}


# 1. Data -----------------------------------------------------------------------------------------------------------


def data_section(
    run: RunFolder, tokenizer: Any | None, max_length: int | None, fig_dir: Path
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Data stats recomputed from the run's config, histograms of words/tokens per review, class balance per class.

    Returns the section and the run's train split (None when the data could not be reloaded).
    """
    out: dict[str, Any] = {"available": False, "note": None, "figures": {}}
    frames: dict[str, pd.DataFrame] = {}
    cfg = run.config
    if run.ensemble is not None:  # its members may read text with different tokenizers: no one token count
        out["ensemble_note"] = (
            "token counts depend on a tokenizer and the ensemble's members each have their own, so only word counts "
            "are shown here (a member's report has its token counts)"
        )
    if cfg is None:
        out["note"] = f"the run's config cannot be used ({run.config_problem}), so its data cannot be reloaded"
    else:
        try:
            splits = prepare_data(cfg.data)
            out["stats"] = dataset_stats(splits, tokenizer, max_length)
            frames = {"train": splits.train, "val": splits.val, "test": splits.test}
            frames = {name: df for name, df in frames.items() if len(df)}  # data.val_fraction 0: no val split
            out["available"] = True
        except Exception as exc:  # missing files, no network for the Hub, ...: the report still builds
            out["note"] = f"the run's data could not be reloaded ({type(exc).__name__}: {exc})"
    if not frames:
        # predictions.parquet holds the test texts: enough for the test histograms and class balance
        frames = {"test": run.predictions}
        if run.val_predictions is not None and "text" in run.val_predictions:
            frames["val"] = run.val_predictions
        out["note"] = (out["note"] or "") + "; histograms and class balance come from the saved predictions only"

    lengths: dict[str, dict[str, np.ndarray]] = {}
    for name, df in frames.items():
        entry = {"words": df["text"].str.split().str.len().to_numpy()}
        if tokenizer is not None:
            entry["tokens"] = count_tokens(tokenizer, df["text"].tolist())
        lengths[name] = entry
    names = cal.class_names_of(run)
    out["class_names"] = names
    out["balance"] = {
        name: {cls: int((df["label"] == i).sum()) for i, cls in enumerate(names)} for name, df in frames.items()
    }
    out["truncated_share"] = {
        name: float(np.mean(v["tokens"] > max_length)) for name, v in lengths.items() if "tokens" in v and max_length
    }
    out["max_length"] = max_length
    out["figures"]["lengths"] = _length_figure(lengths, max_length, fig_dir / "data_lengths.png")
    out["figures"]["balance"] = _balance_figure(out["balance"], fig_dir / "data_balance.png")
    return out, frames.get("train")


def _length_figure(lengths: dict[str, dict[str, np.ndarray]], max_length: int | None, path: Path) -> Path:
    plt = pyplot()
    kinds = ["words"] + (["tokens"] if all("tokens" in v for v in lengths.values()) else [])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.0 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        cap = max(float(np.percentile(np.concatenate([v[kind] for v in lengths.values()]), 99)), 10.0)
        bins = np.linspace(0, cap, 50)
        for name, v in lengths.items():
            weights = np.full(len(v[kind]), 100.0 / max(len(v[kind]), 1))
            ax.hist(
                np.minimum(v[kind], cap),
                bins=bins,
                histtype="step",
                linewidth=1.6,
                weights=weights,
                color=SPLIT_COLORS.get(name),
                label=f"{name} (n={len(v[kind])}, median {np.median(v[kind]):.0f})",
            )
        if kind == "tokens" and max_length:
            ax.axvline(max_length, color="black", linestyle="--", linewidth=1.2)
            shares = ", ".join(f"{n} {100 * np.mean(v['tokens'] > max_length):.1f}%" for n, v in lengths.items())
            ax.text(
                max_length,
                ax.get_ylim()[1] * 0.95,
                f" max_length {max_length}\n truncated: {shares}",
                va="top",
                fontsize=8,
            )
        ax.set_xlabel(f"{kind} per review (last bin: >= 99th percentile)")
        ax.set_ylabel("% of the split's reviews per bin")
        ax.set_title(f"{kind.capitalize()} per review")
        ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    return save_figure(fig, path)


def _balance_figure(balance: dict[str, dict[str, int]], path: Path) -> Path:
    plt = pyplot()
    names = list(balance)
    classes = list(next(iter(balance.values())))
    x = np.arange(len(names))
    width = 0.76 / len(classes)  # two classes: 0.38 each
    fig, ax = plt.subplots(figsize=(5.5 if len(classes) == 2 else 2.5 + 1.2 * len(classes), 3.4))
    # K > 2: red to green in class-id order (sentiment scales run from negative to positive)
    scale = plt.get_cmap("RdYlGn")(np.linspace(0.05, 0.95, len(classes))) if len(classes) > 2 else None
    for k, cls in enumerate(classes):
        counts = [balance[n][cls] for n in names]
        color = CLASS_COLORS.get(cls, tuple(CLASS_COLORS.values())[k]) if scale is None else scale[k]
        bars = ax.bar(x + (k - (len(classes) - 1) / 2) * width, counts, width, label=cls, color=color)
        ax.bar_label(bars, fontsize=8 if len(classes) <= 3 else 6)
    ax.set_xticks(x, names)
    ax.set_xlabel("split")
    ax.set_ylabel("reviews")
    ax.set_title("Class balance per split")
    if scale is None:
        ax.legend(fontsize=8)
    else:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(y=0.15)
    fig.tight_layout()
    return save_figure(fig, path)


# 2. Training dynamics ----------------------------------------------------------------------------------------------


def overfitting_points(history: pd.DataFrame) -> list[dict[str, Any]]:
    """Evaluations where validation loss rose while the mean training loss since the last evaluation fell."""
    if "val_loss" not in history or "train_loss" not in history:
        return []
    evals = history.dropna(subset=["val_loss"])[["step", "val_loss"]].to_numpy()
    train = history.dropna(subset=["train_loss"])[["step", "train_loss"]].to_numpy()
    found = []
    prev_step, prev_val, prev_train = 0.0, None, None
    for step, val in evals:
        window = train[(train[:, 0] > prev_step) & (train[:, 0] <= step), 1]
        mean_train = float(window.mean()) if len(window) else None
        comparable = prev_val is not None and prev_train is not None and mean_train is not None
        if comparable and val > prev_val and mean_train < prev_train:
            found.append(
                {
                    "step": int(step),
                    "val_loss": float(val),
                    "val_loss_before": float(prev_val),
                    "train_loss": mean_train,
                    "train_loss_before": prev_train,
                }
            )
        prev_step, prev_val = step, val
        prev_train = mean_train if mean_train is not None else prev_train
    return found


def training_section(run: RunFolder, fig_dir: Path) -> dict[str, Any]:
    """Loss, validation accuracy/F1 and learning rate against step; best step; overfitting note."""
    history = run.history
    if run.ensemble is not None:
        return {
            "available": False,
            "note": f"an ensemble has no training of its own: its members ({_member_list(run)}) were trained "
            "separately, and each member's report shows its training",
        }
    if history is None or history.empty:
        return {"available": False, "note": "the run has no history.csv (a baseline run or an evaluation folder)"}
    best = run.metrics.get("best_step")
    out: dict[str, Any] = {
        "available": True,
        "best_step": best,
        "global_step": run.metrics.get("global_step"),
        "overfitting": overfitting_points(history),
        "not_learned": run.metrics.get("warnings", []),  # training's chance-level check (metrics.not_learned_warnings)
    }
    evals = history.dropna(subset=["val_loss"]) if "val_loss" in history else history.iloc[0:0]
    out["evaluations"] = json_safe(evals.to_dict("records"))
    out["figure"] = _training_figure(history, best, fig_dir / "training.png")
    return out


def _training_figure(history: pd.DataFrame, best: int | None, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    tr = history.dropna(subset=["train_loss"]) if "train_loss" in history else history.iloc[0:0]
    ev = history.dropna(subset=["val_loss"]) if "val_loss" in history else history.iloc[0:0]
    ax = axes[0]
    ax.plot(tr["step"], tr["train_loss"], color="#2563eb", alpha=0.35, linewidth=1, label="train loss (logged)")
    if len(tr) >= 5:
        smooth = tr["train_loss"].rolling(max(3, len(tr) // 10), min_periods=1).mean()
        ax.plot(tr["step"], smooth, color="#2563eb", linewidth=2, label="train loss (moving mean)")
    ax.plot(ev["step"], ev["val_loss"], "o-", color="#f59e0b", linewidth=2, label="validation loss")
    ax.set_title("Loss")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax = axes[1]
    for col, color in (("val_accuracy", "#7c3aed"), ("val_f1", "#16a34a")):
        if col in ev:
            ax.plot(ev["step"], ev[col], "o-", color=color, label=col.replace("val_", "validation "))
    ax.set_title("Validation accuracy and F1")
    ax.set_ylabel("score (0-1)")
    ax = axes[2]
    if "lr" in tr:
        ax.plot(tr["step"], tr["lr"], color="#0f766e", label="learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_title("Learning-rate schedule")
    ax.set_ylabel("learning rate")
    for ax in axes:
        if best:
            ax.axvline(best, color="black", linestyle="--", linewidth=1, label=f"best step {best}")
        ax.set_xlabel("optimizer step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# 3. Metrics --------------------------------------------------------------------------------------------------------


def rates_of(cm: list[list[int]]) -> dict[str, float | None]:
    """TNR, TPR, FPR, FNR of a [[TN, FP], [FN, TP]] confusion matrix."""
    (tn, fp), (fn, tp) = cm
    neg, pos = tn + fp, fn + tp
    return {
        "tnr": tn / neg if neg else None,
        "fpr": fp / neg if neg else None,
        "tpr": tp / pos if pos else None,
        "fnr": fn / pos if pos else None,
    }


def metrics_section(run: RunFolder, fig_dir: Path, n_boot: int) -> dict[str, Any]:
    """Test (and validation) metrics, per-class table, confusion matrix with rates, bootstrap CIs, baselines.

    K > 2 classes: macro and weighted F1, an N x N confusion heatmap with class names, CIs of accuracy and macro F1,
    and MAE / within-one accuracy when the classes are ordered.
    """
    metrics = run.metrics
    test = run.predictions
    names = cal.class_names_of(run)
    multiclass = len(names) > 2
    if multiclass:
        m = metrics.get("test") or classification_metrics(test["label"], test["pred"], names, cal.is_ordinal(run))
        out: dict[str, Any] = {"test": m, "val": metrics.get("val"), "rates": None}
    else:
        m = metrics.get("test") or classification_metrics(test["label"], test["pred"])
        out = {"test": m, "val": metrics.get("val"), "rates": rates_of(m["confusion_matrix"])}
    out["multiclass"], out["class_names"] = multiclass, names
    ci_metrics = ("accuracy", "f1_macro") if multiclass else ("accuracy", "f1")
    out["ci"] = {name: bootstrap_ci(test["label"], test["pred"], name, n_boot=n_boot) for name in ci_metrics}
    baselines = []
    for name, b in (metrics.get("baselines") or {}).items():
        bt = b.get("test", {})
        baselines.append(
            {"name": name, **{k: bt.get(k) for k in ("accuracy", "f1", "precision", "recall", "f1_macro")}}
        )
    out["baselines"] = baselines
    # an ensemble: every member's test metrics next to the ensemble's, and McNemar against the best member
    out["members"] = metrics.get("members") if run.ensemble is not None else None
    out["vs_best_member"] = metrics.get("vs_best_member") if run.ensemble is not None else None
    if multiclass:
        out["figure"] = _confusion_heatmap(m["confusion_matrix"], names, fig_dir / "confusion.png")
    else:
        out["figure"] = _confusion_figure(m["confusion_matrix"], fig_dir / "confusion.png")
    return out


def _confusion_figure(cm: list[list[int]], path: Path) -> Path:
    plt = pyplot()
    arr = np.asarray(cm, dtype=float)
    rates = arr / np.maximum(arr.sum(axis=1, keepdims=True), 1)
    names = [["TN", "FP"], ["FN", "TP"]]
    rate_names = [["TNR", "FPR"], ["FNR", "TPR"]]
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(
                j,
                i,
                f"{names[i][j]} {int(arr[i, j])}\n{rate_names[i][j]} {100 * rates[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if rates[i, j] > 0.6 else "black",
            )
    ax.set_xticks([0, 1], ["negative", "positive"])
    ax.set_yticks([0, 1], ["negative", "positive"])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Test confusion matrix (counts, row rates)")
    fig.colorbar(im, ax=ax, label="share of the true class", fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


def _confusion_heatmap(cm: list[list[int]], names: list[str], path: Path) -> Path:
    """An N x N confusion heatmap: counts and row rates per cell, colour by the share of the true class."""
    plt = pyplot()
    arr = np.asarray(cm, dtype=float)
    k = len(names)
    rates = arr / np.maximum(arr.sum(axis=1, keepdims=True), 1)
    side = max(4.6, 1.0 * k + 2.2)
    fig, ax = plt.subplots(figsize=(side + 0.6, side))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fontsize = 10 if k <= 4 else 8 if k <= 7 else 6
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{int(arr[i, j])}\n{100 * rates[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if rates[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(k), names, rotation=30 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Test confusion matrix (counts, row rates)")
    fig.colorbar(im, ax=ax, label="share of the true class", fraction=0.046)
    fig.tight_layout()
    return save_figure(fig, path)


# 4. Confidence and calibration -------------------------------------------------------------------------------------


def confidence_section(run: RunFolder, fig_dir: Path, target_accuracy: float, store: bool) -> dict[str, Any]:
    """Error counts by confidence bucket, reliability before/after temperature scaling, abstention policy."""
    test = run.predictions
    k = cal.num_classes(test)
    low = cal.lowest_confidence(k)
    conf, _, ok = cal.frame_confidence_and_correct(test)
    out: dict[str, Any] = {"buckets": cal.confidence_bucket_table(conf, ok, k), "num_classes": k, "low": low}
    if run.ensemble is not None:
        out["ensemble_note"] = (
            "This folder is an ensemble: its probabilities are the weighted mean of its members' calibrated "
            "probabilities (each member's own temperature applied) and its logits are their log. The temperature "
            "fitted below is a further correction of that average, reported and not stored: predict and serve apply "
            "each member's own temperature and the 70% review threshold (or --review-threshold)"
        )
    if run.val_predictions is None or not cal.has_logits(test):
        out["calibration"] = None
        out["note"] = "no validation logits (a baseline run?): temperature scaling and abstention need a trained run"
        out["ece_raw"] = cal.expected_calibration_error(conf, ok, low=low)
        out["figures"] = {"reliability": _reliability_figure([("model", conf, ok)], fig_dir / "reliability.png", low)}
        return out
    calibration = cal.calibrate_run(run.path, target_accuracy, store=store and run.model_dir is not None)
    out["calibration"] = calibration
    t = calibration["temperature"]
    logits = cal.logits_of(test)
    conf_t, _, ok_t = cal.scaled_confidence_and_correct(logits, test["label"], t)
    out["curve"] = json_safe(cal.coverage_curve(conf_t, ok_t).iloc[:: max(1, len(test) // 200)].to_dict("records"))
    out["figures"] = {
        "reliability": _reliability_figure(
            [("before scaling (T = 1)", conf, ok), (f"after temperature scaling (T = {t:.2f})", conf_t, ok_t)],
            fig_dir / "reliability.png",
            low,
        ),
        "coverage": _coverage_figure(conf_t, ok_t, calibration, fig_dir / "coverage.png"),
    }
    return out


def _reliability_figure(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path, low: float = 0.5) -> Path:
    """Reliability diagrams over [low, 1] (low: 1/K, the lowest top-label probability of K classes)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, conf, ok) in zip(axes[0], panels, strict=True):
        bins = cal.reliability_bins(conf, ok, low=low)
        ece = cal.expected_calibration_error(conf, ok, low=low)
        filled = bins[bins["n"] > 0]
        width = bins["bin_high"].iloc[0] - bins["bin_low"].iloc[0]
        ax.bar(
            filled["bin_low"],
            filled["accuracy"],
            width=width,
            align="edge",
            color="#93c5fd",
            edgecolor="#1d4ed8",
            label="accuracy in bin",
        )
        ax.plot([low, 1], [low, 1], "k--", linewidth=1, label="perfect calibration")
        ax.plot(
            filled["confidence"],
            filled["accuracy"],
            "o",
            color="#1d4ed8",
            markersize=4,
            label="(mean confidence, accuracy)",
        )
        for _, r in filled.iterrows():
            ax.text(r["bin_low"] + width / 2, low - 0.09, str(int(r["n"])), ha="center", fontsize=7, color="#374151")
        ax.set_xlim(low, 1.0)
        ax.set_ylim(low - 0.12, 1.02)
        ax.set_xlabel("confidence (top-label probability); numbers: reviews per bin")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE = {100 * ece:.2f} points", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Reliability on the test set (10 equal-width bins over {low:.2g}-1)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def _coverage_figure(conf: np.ndarray, ok: np.ndarray, calibration: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    curve = cal.coverage_curve(conf, ok)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(curve["coverage"], curve["accuracy"], color="#1d4ed8", linewidth=2, label="test: accuracy of kept reviews")
    target = calibration["target_accuracy"]
    ax.axhline(target, color="#16a34a", linestyle=":", label=f"target accuracy {100 * target:.0f}%")
    for key, color, name in (
        ("abstention_test", "#16a34a", "threshold from validation"),
        ("seed_policy_test", "#dc2626", "seed policy: flag below 70%"),
    ):
        p = calibration[key]
        if p["threshold"] is not None and p["accuracy_kept"] is not None:
            ax.plot(
                p["coverage"],
                p["accuracy_kept"],
                "o",
                color=color,
                markersize=8,
                label=f"{name} ({100 * p['threshold']:.1f}%): coverage {100 * p['coverage']:.1f}%, "
                f"accuracy {100 * p['accuracy_kept']:.1f}%",
            )
    ax.set_xlabel("coverage (share of reviews answered automatically)")
    ax.set_ylabel("accuracy on answered reviews")
    ax.set_title("Abstaining below a confidence threshold (calibrated confidences)")
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7.5, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# 5. Errors ---------------------------------------------------------------------------------------------------------


def errors_section(
    run: RunFolder, tokenizer: Any | None, max_length: int | None, fig_dir: Path, limit: int = 10
) -> dict[str, Any]:
    """Most confident false positives/negatives (K > 2: errors), heuristic tags with error rates, errors vs correct
    statistics."""
    test = run.predictions
    names = cal.class_names_of(run)
    conf, _, ok = cal.frame_confidence_and_correct(test)
    margin = error_tags.top2_margin(cal.class_probs(test)) if len(names) > 2 else None
    tokens = count_tokens(tokenizer, test["text"].tolist()) if tokenizer is not None else None
    tags = error_tags.tag_reviews(test["text"].tolist(), conf, tokens, max_length, margin=margin)
    out: dict[str, Any] = {
        "n_errors": int((~ok).sum()),
        "tag_table": error_tags.tag_error_table(tags, ok),
        "errors_vs_correct": error_tags.errors_vs_correct(tags, ok),
        "truncation_known": tokens is not None,
        "kinds": ["fp", "fn"] if len(names) == 2 else ["all"],
    }
    for kind in out["kinds"]:
        rows = error_tags.confident_errors(test, kind, limit)
        out[kind] = [
            {
                "id": str(r["id"]) if "id" in r else str(i),
                "confidence": float(r["confidence"]),
                "snippet": error_tags.snippet(r["text"]),
                "tags": [error_tags.TAG_LABELS[t] for t in error_tags.TAGS if bool(tags.loc[i, t])],
                **({"label_name": names[int(r["label"])], "pred_name": names[int(r["pred"])]} if kind == "all" else {}),
            }
            for i, r in rows.iterrows()
        ]
    out["figure"] = _tag_figure(out["tag_table"], fig_dir / "error_tags.png")
    return out


def _tag_figure(table: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    rows = [r for r in table if r["n"] > 0]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    y = np.arange(len(rows))
    with_tag = [100 * (r["error_rate"] or 0) for r in rows]
    without = [100 * (r["error_rate_without"] or 0) for r in rows]
    bars = ax.barh(y - 0.2, with_tag, 0.4, color="#dc2626", label="error rate with the tag")
    ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    bars = ax.barh(y + 0.2, without, 0.4, color="#9ca3af", label="error rate without it")
    ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    if table:
        ax.axvline(
            100 * table[0]["overall_error_rate"], color="black", linestyle="--", linewidth=1, label="overall error rate"
        )
    ax.set_yticks(y, [f"{r['label']} (n={r['n']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test error rate (%)")
    ax.set_title("Does a tag go with more errors? (tags are heuristics)")
    ax.margins(x=0.12)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return save_figure(fig, path)


# 6. Possible label noise -------------------------------------------------------------------------------------------


def label_noise_section(run: RunFolder, train: pd.DataFrame | None, limit: int = 10) -> dict[str, Any]:
    """Confidently wrong test reviews (>= 95%), and confident learning on the train split when it is available."""
    test = run.predictions
    names = cal.class_names_of(run)
    kinds = ("fp", "fn") if len(names) == 2 else ("all",)
    wrong = pd.concat([error_tags.confident_errors(test, k, len(test), CONFIDENT_WRONG) for k in kinds])
    wrong = wrong.sort_values("confidence", ascending=False)
    out: dict[str, Any] = {
        "threshold": CONFIDENT_WRONG,
        "n_confident_wrong": len(wrong),
        "confident_wrong": [
            {
                "id": str(r["id"]),
                "label": int(r["label"]),
                "label_name": _class_name(names, int(r["label"])),
                "pred_name": _class_name(names, int(r["pred"])),
                "confidence": float(r["confidence"]),
                "snippet": error_tags.snippet(r["text"]),
            }
            for _, r in wrong.head(limit).iterrows()
        ],
        "cleanlab": None,
    }
    if train is None:
        out["cleanlab_note"] = "the training split is unavailable, so no cross-validated score could be computed"
        return out
    res = error_tags.label_issues(train["text"].tolist(), train["label"].to_numpy(), limit=limit)
    for item in res["top"]:
        item["id"] = str(train["id"].iloc[item["index"]])
        item["label_name"] = _class_name(names, item["label"])
        item["snippet"] = error_tags.snippet(item.pop("text"))
    res.pop("issue_indices")
    out["cleanlab"] = res
    return out


def _class_name(names: list[str], label: int) -> str:
    """A class's name for the page (binary: positive/negative, as the page always said)."""
    if len(names) == 2:
        return "positive" if label == 1 else "negative"
    return names[label] if 0 <= label < len(names) else str(label)


# 7. Explanations ---------------------------------------------------------------------------------------------------


def pick_explained(test: pd.DataFrame, n: int) -> list[tuple[int, str]]:
    """Indices to explain: the most confident errors (two thirds) and the most confident correct of each class."""
    if "prob_pos" in test.columns:
        p = test["prob_pos"].to_numpy(dtype=float)
        conf = np.maximum(p, 1 - p)
        classes: list[int] = [0, 1]
    else:
        conf = cal.class_probs(test).max(axis=1)
        classes = sorted(int(c) for c in np.unique(test["label"].to_numpy()))
    wrong = np.flatnonzero(test["label"].to_numpy() != test["pred"].to_numpy())
    n_correct = n // 3 if len(wrong) >= n - n // 3 else n - len(wrong)
    picked = [(int(i), "confident error") for i in wrong[np.argsort(-conf[wrong])][: n - n_correct]]
    right = np.flatnonzero(test["label"].to_numpy() == test["pred"].to_numpy())
    by_class = [right[test["label"].to_numpy()[right] == c] for c in classes]
    k = 0
    while len(picked) < n and any(len(b) for b in by_class):
        pool = by_class[k % len(classes)]
        if len(pool):
            best = pool[np.argmax(conf[pool])]
            picked.append((int(best), "confident correct"))
            by_class[k % len(classes)] = pool[pool != best]
        k += 1
    return picked


def explanations_section(run: RunFolder, fig_dir: Path, n: int, ig_steps: int) -> dict[str, Any]:
    """Integrated gradients and [CLS] attention heatmaps for n chosen test reviews."""
    if run.ensemble is not None:
        return {
            "available": False,
            "note": f"an ensemble averages {len(run.ensemble.members)} models and integrated gradients follow the "
            "gradients of one, so nothing is explained here; run `sentiment-lab report` on a member "
            f"({_member_list(run)})",
        }
    if run.model_dir is None:
        return {"available": False, "note": "the run folder has no model/ (a baseline run), so nothing to explain"}
    if n <= 0:
        return {"available": False, "note": "explanations were switched off (--explanations 0)"}
    test = run.predictions
    names = cal.class_names_of(run)
    picks = pick_explained(test, n)
    model, tokenizer, settings = ex.load_for_explanation(run.model_dir)
    start = time.perf_counter()
    exps = ex.explain_texts(
        model,
        tokenizer,
        settings,
        [test["text"].iloc[i] for i, _ in picks],
        ig_steps,
        labels=[int(test["label"].iloc[i]) for i, _ in picks],
    )
    items = []
    for k, ((i, why), e) in enumerate(zip(picks, exps, strict=True)):
        e.meta = {
            "id": str(test["id"].iloc[i]),
            "why": why,
            "label_name": _class_name(names, int(test["label"].iloc[i])),
        }
        png = ex.attention_heatmap(
            e,
            fig_dir / f"attention_{k + 1}.png",
            title=f"Review {k + 1} ({why}): [CLS] attention per token, mean over heads",
        )
        items.append({"summary": e.to_dict(), "html": ex.highlighted_html(e), "png": png})
    return {
        "available": True,
        "ig_steps": ig_steps,
        "seconds": time.perf_counter() - start,
        "items": items,
    }


# The report --------------------------------------------------------------------------------------------------------


# 8. Compression ---------------------------------------------------------------------------------------------------

C3_LATENCY_TARGET = 0.33  # issue 17: a student's batch-1 p50 at most a third of the teacher in transformers.pipeline


def compression_section(run: RunFolder, fig_dir: Path) -> dict[str, Any] | None:
    """Where a distilled student or an ensemble stands against its teacher: None for any other run.

    With COMPRESSION_FILE (written into the run by `benchmarks/compression_table.py --attach`): the measured table of
    every model of that benchmark, latency included, and the accuracy-latency Pareto figure. Without it, a student
    still shows what its run knows (parameters, layers, vocabulary, teacher and student accuracy).
    """
    distill = run.metrics.get("distill")
    path = run.path / COMPRESSION_FILE
    if not path.is_file():
        if not distill:
            return None
        return {"available": False, "distill": distill, "test": run.metrics.get("test") or {}}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        rows = table["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); run benchmarks/compression_table.py --attach again") from exc
    this = table.get("this_run")
    figure = pareto_figure(rows, fig_dir / "pareto.png", highlight=this)
    return {
        "available": True,
        "distill": distill,
        "rows": rows,
        "reference": table.get("reference") or {},
        "checks": table.get("checks") or [],
        "this_run": this,
        "load_1m": table.get("load_1m"),
        "figure": figure,
    }


def pareto_figure(rows: list[dict[str, Any]], path: Path, highlight: str | None = None) -> Path:
    """Test accuracy (95% CI bars) against batch-1 latency as a share of the reference, one point per model.

    rows: the first is the teacher; each has name, accuracy, ci_low, ci_high, p50_ratio. The frontier joins the
    models that no other model beats on both axes; the dashed lines are the teacher's accuracy minus 1 pp (C2) and
    the C3 latency target.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    x = np.array([r["p50_ratio"] for r in rows], dtype=float)
    y = np.array([100 * r["accuracy"] for r in rows], dtype=float)
    low = y - np.array([100 * r["ci_low"] for r in rows])
    high = np.array([100 * r["ci_high"] for r in rows]) - y
    for k, r in enumerate(rows):
        mine = r["name"] == highlight
        color = "#dc2626" if mine else ("#111827" if k == 0 else "#2563eb")
        size = 7 if mine else 5
        ax.errorbar(x[k], y[k], yerr=[[low[k]], [high[k]]], fmt="o", color=color, capsize=3, markersize=size)
        ax.annotate(r["name"], (x[k], y[k]), textcoords="offset points", xytext=(6, 4), fontsize=8, color=color)
    order = np.argsort(x)
    frontier, best = [], -np.inf
    for k in order:  # fastest first: a point is on the frontier when it beats every faster one
        if y[k] > best:
            frontier.append(k)
            best = y[k]
    ax.plot(x[frontier], y[frontier], "-", color="#16a34a", alpha=0.6, linewidth=1.5, label="Pareto frontier")
    ax.axhline(y[0] - 1.0, color="#6b7280", linestyle="--", linewidth=1, label="teacher - 1 pp (C2)")
    ax.axvline(C3_LATENCY_TARGET, color="#f59e0b", linestyle="--", linewidth=1, label="latency target 0.33x (C3)")
    set_ratio_xaxis(ax, [*x, C3_LATENCY_TARGET])
    ax.set_xlabel("batch-1 p50 latency / teacher in transformers.pipeline fp32 (log scale; lower is faster)")
    ax.set_ylabel("test accuracy, % (95% CI)")
    ax.set_title("Accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def build_report(
    run_dir: str | Path,
    n_explanations: int = 6,
    ig_steps: int = 20,
    target_accuracy: float = cal.DEFAULT_TARGET_ACCURACY,
    store_calibration: bool = True,
    label_noise: bool = True,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Analyse a finished run folder; write report.html, analysis.json and figures/ into it.

    n_explanations: reviews explained with integrated gradients (ig_steps steps each); 0 skips them.
    store_calibration: write the fitted temperature and abstention threshold into RUN_DIR/model/sentiment_lab.json.
    label_noise: run confident learning (5-fold TF-IDF) on the train split when the data can be reloaded.
    """
    if not 0.5 <= target_accuracy <= 1.0:
        raise SentimentLabError(f"--target-accuracy must be between 0.5 and 1 (e.g. 0.97), got {target_accuracy}")
    if ig_steps < 2:
        raise SentimentLabError(f"--ig-steps must be at least 2, got {ig_steps}")
    started = time.perf_counter()
    run = load_run(run_dir, REPORT_COLUMNS)
    columns = set(run.predictions.columns)
    if "prob_pos" not in columns and not {"prob_0", "prob_1"} <= columns:
        raise RunDirError(
            f"{run.path / PREDICTIONS_FILE} lacks class probabilities (prob_pos, or prob_0 .. prob_{{K-1}}; it has "
            f"{sorted(columns)}); evaluate the model again (`sentiment-lab evaluate`) to write complete predictions"
        )
    if run.config is None:
        log.warning("report without the run's config: %s", run.config_problem)
    fig_dir = run.path / FIGURES
    fig_dir.mkdir(exist_ok=True)
    tokenizer, max_length = None, None
    if run.model_dir is not None:
        tokenizer = load_tokenizer(str(run.model_dir))
        max_length = read_sidecar(run.model_dir, tokenizer).text.max_length
    elif run.config is not None:
        max_length = run.config.tokenization.max_length

    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - t0
        return result

    sections: dict[str, Any] = {}
    # first, so that an unreadable compression.json stops the report before its long sections
    compression = timed("compression", compression_section, run, fig_dir)
    sections["data"], train = timed("data", data_section, run, tokenizer, max_length, fig_dir)
    sections["training"] = timed("training", training_section, run, fig_dir)
    sections["metrics"] = timed("metrics", metrics_section, run, fig_dir, n_boot)
    sections["confidence"] = timed("confidence", confidence_section, run, fig_dir, target_accuracy, store_calibration)
    sections["errors"] = timed("errors", errors_section, run, tokenizer, max_length, fig_dir)
    sections["label_noise"] = timed("label_noise", label_noise_section, run, train if label_noise else None)
    if not label_noise:
        sections["label_noise"]["cleanlab_note"] = "confident learning was switched off (--no-label-noise)"
    sections["explanations"] = timed("explanations", explanations_section, run, fig_dir, n_explanations, ig_steps)
    if compression is not None:
        sections["compression"] = compression
    timings["total"] = time.perf_counter() - started

    cfg = run.config
    header = {
        "run_dir": str(run.path),
        "name": cfg.name if cfg is not None else run.path.name,
        "model": cfg.model.name if cfg is not None and run.ensemble is None else run.metrics.get("model"),
        "ensemble": [m.model_dump(exclude={"files"}) for m in run.ensemble.members]
        if run.ensemble is not None
        else None,
        "precision": run.metrics.get("precision"),
        "train_runtime_s": run.metrics.get("train_runtime_s"),
        "data": run.metrics.get("data"),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    page = render_template("report.html", h=header, s=sections, figs=_embedded(sections), tags_doc=error_tags.__doc__)
    write_text_atomic(run.path / "report.html", page)
    analysis = _analysis_json(header, sections, timings)
    write_json_atomic(run.path / "analysis.json", analysis)
    log.info("report written to %s in %.1f s", run.path / "report.html", timings["total"])
    return analysis


def _member_list(run: RunFolder) -> str:
    """An ensemble's member runs, as paths, for a note."""
    return ", ".join(m.path for m in run.ensemble.members) if run.ensemble is not None else ""


def _embedded(sections: dict[str, Any]) -> dict[str, str]:
    figs: dict[str, str] = {}
    for name, path in sections["data"].get("figures", {}).items():
        figs[f"data_{name}"] = embed_png(path)
    for key in ("training", "metrics", "errors", "compression"):
        if (sections.get(key) or {}).get("figure"):
            figs[key] = embed_png(sections[key]["figure"])
    for name, path in sections["confidence"].get("figures", {}).items():
        figs[name] = embed_png(path)
    for k, item in enumerate(sections["explanations"].get("items", [])):
        figs[f"attention_{k}"] = embed_png(item["png"])
    return figs


def _analysis_json(header: dict[str, Any], sections: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """Every number of the report, without figures and page markup; figure paths relative to the run folder."""
    run_dir = Path(header["run_dir"])

    def rel(p: Any) -> Any:
        return str(Path(p).relative_to(run_dir)) if isinstance(p, Path) else p

    out = {"run": header, "seconds": timings}
    for name, sec in sections.items():
        sec = dict(sec)
        if "figure" in sec:
            sec["figure"] = rel(sec["figure"])
        if "figures" in sec:
            sec["figures"] = {k: rel(v) for k, v in sec["figures"].items()}
        if "items" in sec:
            sec["items"] = [{**i["summary"], "figure": rel(i["png"])} for i in sec["items"]]
        out[name] = sec
    return json_safe(out)
