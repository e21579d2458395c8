"""Issue 17: the compression table, every model next to the teacher served by `transformers.pipeline` fp32.

One row per model: the teacher run, each --model run folder (distilled students, ensembles, LoRA runs, any run),
and the ONNX Runtime INT8 export of each --int8 run. Columns:

- parameters (an ensemble: the sum over its members) and size on disk (the served model folder without its
  onnx/ and adapter/ subfolders; an INT8 row: model.int8.onnx and the tokenizer files);
- test accuracy with its 95% bootstrap CI, from the run's own predictions.parquet (the full test split of the
  run); an INT8 row scores the same test reviews through ONNX Runtime here;
- McNemar's p against the teacher on the same reviews (paired by id);
- batch-1 p50 latency and reviews/s at batch 32 of the model's Predictor (its defaults: the run's own text
  settings, bf16 weights where the CPU has native bf16), each as a ratio against the reference: the teacher's
  model folder in `transformers.pipeline("text-classification")`, fp32, 512-token head truncation, measured in
  this same process. Batch-1 calls take turns review by review (a machine that slows down for a while slows
  every row alike); the reference's batch-32 pass runs before and after the rows and their mean is the ratio's
  denominator;
- training time: the run's train_runtime_s, plus the teacher-logit pass of a distilled run (metrics.json
  `distill.teacher_logits.seconds`), the members' sum for an ensemble, plus the export for an INT8 row.

It prints the table and the issue-17 targets C1-C5 for every distilled row, writes the raw numbers (--out), the
accuracy-latency Pareto figure (--plot) and, with --attach, `compression.json` into every student and ensemble
run folder so that `sentiment-lab report` shows the table and the figure in its Compression section.

    python benchmarks/compression_table.py --teacher runs/cpu-minilm-full \\
        --model "student L3=runs/distill-minilm-l3" --model "ensemble=runs/ensemble" \\
        --int8 runs/distill-minilm-l3 --attach
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"C1_parameters": 20_000_000, "C2_gap_pp": 1.0, "C2_over_tfidf_pp": 1.5, "C3_p50": 0.33, "C3_stretch": 0.20}
TARGETS |= {"C4_throughput": 10.0, "C5_minutes": 60.0}
REFERENCE = "reference: teacher in transformers.pipeline fp32"


def folder_bytes(folder: Path, skip: tuple[str, ...] = ("onnx", "adapter")) -> int:
    """Bytes of the files a served model folder holds, without the named subfolders."""
    return sum(
        f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.relative_to(folder).parts[0] not in skip
    )


def int8_bytes(model_dir: Path) -> int:
    """The INT8 model file plus the tokenizer and config files it is served with."""
    top = [f for f in model_dir.iterdir() if f.is_file() and not f.name.endswith((".safetensors", ".bin"))]
    return (model_dir / "onnx" / "model.int8.onnx").stat().st_size + sum(f.stat().st_size for f in top)


def describe_run(name: str, path: Path) -> dict[str, Any]:
    """The static columns of a run folder (or ensemble folder): parameters, size, accuracy, training time."""
    from sentiment_lab.distill import saved_parameters
    from sentiment_lab.rundir import MODEL_DIR, is_ensemble, read_ensemble

    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    if is_ensemble(path):
        members = [Path(m.path) for m in read_ensemble(path).members]
        parts = [describe_run(m.name, m) for m in members]
        parameters = sum(p["parameters"] for p in parts)
        size = sum(p["size_bytes"] for p in parts)
        train_s = sum(p["train_seconds"] or 0.0 for p in parts)
        kind = f"ensemble of {len(members)}"
        logits_s = None
    else:
        model_dir = path / MODEL_DIR
        parameters = saved_parameters(model_dir)
        size = folder_bytes(model_dir)
        distill = metrics.get("distill") or {}
        logits_s = (distill.get("teacher_logits") or {}).get("seconds") or 0.0
        train_s = (metrics.get("train_runtime_s") or 0.0) + logits_s
        kind = "distilled" if distill else ("LoRA" if metrics.get("lora") else "fine-tuned")
    return {
        "name": name,
        "path": str(path),
        "kind": kind,
        "parameters": int(parameters),
        "size_bytes": int(size),
        "train_seconds": train_s or None,
        "train_seconds_logits": logits_s,  # a distilled run's teacher pass (in train_seconds)
        "members": [str(m) for m in members] if is_ensemble(path) else None,
        "distill": metrics.get("distill"),
        "tfidf_accuracy": (((metrics.get("baselines") or {}).get("tfidf_logreg") or {}).get("test") or {}).get(
            "accuracy"
        ),
    }


def test_predictions(path: Path):
    """The run's test predictions (id, label, pred, text), in id order."""
    from sentiment_lab.rundir import load_run

    return load_run(path, ("id", "label", "pred", "text")).predictions.sort_values("id").reset_index(drop=True)


def accuracy_columns(row: dict[str, Any], preds, teacher_preds) -> None:
    """Accuracy with its 95% bootstrap CI and McNemar against the teacher, on the reviews both predicted."""
    import numpy as np

    from sentiment_lab.stats import bootstrap_ci, mcnemar_test

    ci = bootstrap_ci(preds["label"], preds["pred"])
    row.update({"test_n": len(preds), "accuracy": ci["estimate"], "ci_low": ci["low"], "ci_high": ci["high"]})
    both = preds.merge(teacher_preds[["id", "label", "pred"]], on="id", suffixes=("", "_teacher"))
    if len(both) != len(preds) or not np.array_equal(both["label"], both["label_teacher"]):
        sys.exit(f"{row['name']}: its test reviews are not the teacher's (ids or labels differ); use runs of one split")
    test = mcnemar_test(both["pred"] == both["label"], both["pred_teacher"] == both["label_teacher"])
    row["mcnemar_vs_teacher"] = test


def int8_row(name: str, base: dict[str, Any], path: Path, args: argparse.Namespace) -> tuple[dict, Any]:
    """The INT8 ONNX export of a run: exported (parity-gated) when missing, scored on the run's test reviews."""
    from sentiment_lab.export import export_onnx
    from sentiment_lab.predictor import Predictor
    from sentiment_lab.rundir import MODEL_DIR

    model_dir = path / MODEL_DIR
    export_s = 0.0
    if not (model_dir / "onnx" / "model.int8.onnx").is_file():
        print(f"exporting {model_dir} to ONNX INT8 (parity check) ...", flush=True)
        start = time.perf_counter()
        export_onnx(model_dir, quantize="int8", data_path=args.data)
        export_s = time.perf_counter() - start
    predictor = Predictor.load(path, backend="onnx", quantized=True, batch_size=32)
    preds = test_predictions(path)
    if args.int8_test_n:
        preds = preds.iloc[: args.int8_test_n].copy()
    print(f"scoring {len(preds)} test reviews with {name} ...", flush=True)
    start = time.perf_counter()
    pred = predictor.logits(preds["text"].tolist()).argmax(axis=-1)
    preds["pred"] = 1 - pred if predictor.positive_index == 0 else pred  # labels count 1 = positive (bench does too)
    row = dict(base, name=name, kind="ONNX Runtime INT8", size_bytes=int8_bytes(model_dir))
    row["train_seconds"] = (base["train_seconds"] or 0.0) + export_s
    row["int8_scoring_seconds"] = time.perf_counter() - start
    return row, preds


def speed_columns(rows: list[dict[str, Any]], teacher_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 p50 and batch-32 reviews/s of every row and of the reference, in one process."""
    import torch
    import transformers
    from transformers import pipeline

    from sentiment_lab.benchmarking import interleaved_latencies_ms, latency_summary
    from sentiment_lab.export import held_out_reviews
    from sentiment_lab.predictor import Predictor

    transformers.logging.set_verbosity_error()
    reviews = held_out_reviews(max(args.samples, args.latency_n), args.data, seed=0)
    if reviews is None:
        sys.exit("no IMDb copy found: pass --data /path/to/imdb or set IMDB_DIR")
    texts = reviews["text"].tolist()
    pipe = pipeline(
        "text-classification", model=str(teacher_dir / "model"), truncation=True, max_length=512, dtype=torch.float32
    )
    servers: dict[str, Any] = {}
    for row in rows:
        int8 = row["kind"] == "ONNX Runtime INT8"
        servers[row["name"]] = Predictor.load(
            row["path"], backend="onnx" if int8 else "torch", quantized=int8, batch_size=32
        )
    calls = {REFERENCE: lambda t: pipe(t)} | {n: (lambda t, p=p: p.predict([t])) for n, p in servers.items()}
    print(f"batch-1 latency: {len(calls)} models in turn on {args.latency_n} reviews ...", flush=True)
    latencies = interleaved_latencies_ms(calls, texts[: args.latency_n], texts[:3])
    p50 = {name: latency_summary(values)["p50"] for name, values in latencies.items()}

    batch = texts[: args.samples]

    def reference_rate() -> float:
        pipe(batch[:32], batch_size=32)  # warm-up
        start = time.perf_counter()
        pipe(batch, batch_size=32)
        return len(batch) / (time.perf_counter() - start)

    print(f"batch 32: the reference on {len(batch)} reviews ...", flush=True)
    before = reference_rate()
    rates = {}
    for name, predictor in servers.items():
        print(f"batch 32: {name} ...", flush=True)
        predictor.logits(batch[:32])
        start = time.perf_counter()
        predictor.logits(batch)
        rates[name] = len(batch) / (time.perf_counter() - start)
    print("batch 32: the reference again ...", flush=True)
    after = reference_rate()
    reference = {"p50_ms": p50[REFERENCE], "reviews_per_s": (before + after) / 2, "reviews_per_s_runs": [before, after]}
    for row in rows:
        name = row["name"]
        row["p50_ms"] = p50[name]
        row["p50_ratio"] = p50[name] / reference["p50_ms"]
        row["reviews_per_s"] = rates[name]
        row["throughput_ratio"] = rates[name] / reference["reviews_per_s"]
        row["precision"] = servers[name].precision
    return reference


def targets(rows: list[dict[str, Any]], teacher: dict[str, Any]) -> list[dict[str, Any]]:
    """C1-C5 for every distilled row (and its INT8 export)."""
    out = []
    tfidf = teacher.get("tfidf_accuracy")
    for row in rows:
        if not row.get("distill"):
            continue
        gap = 100 * (teacher["accuracy"] - row["accuracy"])
        over = None if tfidf is None else 100 * (row["accuracy"] - tfidf)
        minutes = (row["train_seconds"] or 0.0) / 60
        out.append(
            {
                "row": row["name"],
                "C1": {"parameters": row["parameters"], "met": row["parameters"] < TARGETS["C1_parameters"]},
                "C2": {
                    "gap_pp": gap,
                    "over_tfidf_pp": over,
                    "met": gap <= TARGETS["C2_gap_pp"] and over is not None and over >= TARGETS["C2_over_tfidf_pp"],
                },
                "C3": {"ratio": row["p50_ratio"], "met": row["p50_ratio"] <= TARGETS["C3_p50"]},
                "C4": {"ratio": row["throughput_ratio"], "met": row["throughput_ratio"] >= TARGETS["C4_throughput"]},
                "C5": {"minutes": minutes, "met": minutes <= TARGETS["C5_minutes"]},
            }
        )
    return out


def print_table(rows: list[dict[str, Any]], reference: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    from sentiment_lab.tables import format_table

    table = [
        [
            r["name"],
            f"{r['parameters'] / 1e6:.1f}M",
            f"{r['size_bytes'] / 2**20:.0f} MiB",
            f"{100 * r['accuracy']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}] (n {r['test_n']})",
            "-" if r["name"] == rows[0]["name"] else f"{r['mcnemar_vs_teacher']['p_value']:.3g}",
            f"{r['p50_ms']:.1f} ms = {r['p50_ratio']:.2f}x",
            f"{r['reviews_per_s']:.1f} = {r['throughput_ratio']:.1f}x",
            "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min",
        ]
        for r in rows
    ]
    header = ["model", "parameters", "on disk", "test accuracy % [95% CI]", "McNemar p", "batch-1 p50", "reviews/s"]
    print(format_table(table, [*header, "training"]))
    print(
        f"reference ({REFERENCE}): batch-1 p50 {reference['p50_ms']:.1f} ms, "
        f"{reference['reviews_per_s']:.2f} reviews/s at batch 32 (runs {reference['reviews_per_s_runs']})"
    )
    for c in checks:
        verdicts = ", ".join(f"{k} {'met' if v['met'] else 'MISSED'}" for k, v in c.items() if k != "row")
        print(f"{c['row']}: {verdicts}")


def markdown_table(rows: list[dict[str, Any]], reference: dict[str, Any]) -> str:
    """The table as Markdown, for docs/compression.md."""
    lines = [
        "| model | parameters | on disk | test accuracy [95% CI] | McNemar p vs teacher | batch-1 p50 "
        "| reviews/s at 32 | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = "-" if r is rows[0] else f"{r['mcnemar_vs_teacher']['p_value']:.3g}"
        train = "-" if r["train_seconds"] is None else f"{r['train_seconds'] / 60:.1f} min"
        lines.append(
            f"| {r['name']} | {r['parameters'] / 1e6:.1f}M | {r['size_bytes'] / 2**20:.0f} MiB | "
            f"{100 * r['accuracy']:.2f}% [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}] (n {r['test_n']:,}) | "
            f"{p} | {r['p50_ms']:.1f} ms ({r['p50_ratio']:.2f}x) | {r['reviews_per_s']:.1f} "
            f"({r['throughput_ratio']:.1f}x) | {train} |"
        )
    lines.append(
        f"| reference: the teacher in `transformers.pipeline` fp32 | | | | | {reference['p50_ms']:.1f} ms (1x) | "
        f"{reference['reviews_per_s']:.2f} (1x) | |"
    )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="the teacher's run folder (e.g. runs/cpu-minilm-full)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=RUN_DIR", help="a row (repeatable)")
    p.add_argument("--int8", action="append", default=[], metavar="RUN_DIR", help="add the ONNX INT8 row of a run")
    p.add_argument("--int8-test-n", type=int, default=None, help="score only the first N test reviews in INT8")
    p.add_argument(
        "--train-seconds",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="a row's training time when its metrics.json cannot tell it (a resumed run records its last session)",
    )
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--samples", type=int, default=512, help="reviews of the batch-32 pass")
    p.add_argument("--latency-n", type=int, default=200, help="reviews timed one at a time")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "compression.json"))
    p.add_argument("--plot", default=None, help="the Pareto figure (PNG); default: beside --out")
    p.add_argument("--attach", action="store_true", help="write compression.json into student and ensemble runs")
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from sentiment_lab.errors import SentimentLabError
    from sentiment_lab.io import json_safe, write_json_atomic
    from sentiment_lab.report import pareto_figure
    from sentiment_lab.rundir import COMPRESSION_FILE, is_ensemble

    started = time.perf_counter()
    teacher_dir = Path(args.teacher).resolve()
    named = [("teacher", teacher_dir)]
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            sys.exit(f"--model takes NAME=RUN_DIR, got {item!r}")
        named.append((name, Path(path).resolve()))
    given = dict(item.partition("=")[::2] for item in args.train_seconds)
    rows, predictions = [], {}
    for name, path in named:
        rows.append(describe_run(name, path))
        if name in given:
            rows[-1]["train_seconds"] = float(given[name]) + (rows[-1]["train_seconds_logits"] or 0.0)
            rows[-1]["train_seconds_given"] = float(given[name])
        predictions[name] = test_predictions(path)
    by_path = {r["path"]: r for r in rows}
    for row in rows:  # an ensemble cost what its members cost, with any --train-seconds of theirs
        if row["members"] and all(m in by_path for m in row["members"]):
            row["train_seconds"] = sum(by_path[m]["train_seconds"] or 0.0 for m in row["members"])
    refused = {}
    for path in map(Path, args.int8):
        base = next((r for r in rows if Path(r["path"]) == path.resolve()), None)
        if base is None:
            sys.exit(f"--int8 {path}: give the run as --model too (its row is the INT8 row's base)")
        try:
            row, preds = int8_row(f"{base['name']}, ONNX INT8", base, path.resolve(), args)
        except SentimentLabError as exc:  # the export's parity gate refused it: the other rows still count
            print(f"no INT8 row for {path}: {exc}", flush=True)
            refused[str(path)] = str(exc)
            continue
        rows.append(row)
        predictions[row["name"]] = preds
    for row in rows:
        accuracy_columns(row, predictions[row["name"]], predictions["teacher"])
    reference = speed_columns(rows, teacher_dir, args)
    checks = targets(rows, rows[0])
    print_table(rows, reference, checks)

    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out.with_suffix(".png")
    report = {
        "reference": reference,
        "rows": rows,
        "targets": TARGETS,
        "checks": checks,
        "int8_refused": refused,
        "params": vars(args),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_1m": os.getloadavg()[0],  # a busy machine distorts every row
        "seconds": time.perf_counter() - started,
    }
    print("\n" + markdown_table(rows, reference) + "\n")
    write_json_atomic(out, json_safe(report))
    pareto_figure(rows, plot)
    print(f"written: {out}, {plot}")
    if args.attach:
        for row in rows[1:]:
            path = Path(row["path"])
            if row["kind"] != "ONNX Runtime INT8" and (row.get("distill") or is_ensemble(path)):
                write_json_atomic(path / COMPRESSION_FILE, json_safe(report | {"this_run": row["name"]}))
                print(f"attached: {path / COMPRESSION_FILE}")


if __name__ == "__main__":
    main()
