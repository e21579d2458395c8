"""`make gpu-check`: the CUDA paths of sentiment-lab in under 5 minutes, written to one JSON file.

What a CPU machine cannot test, checked on the first CUDA GPU:
  precision        `precision.resolve("auto", "cuda")` with the device name and compute capability (auto is bf16
                   from compute capability 8.0, fp16 below)
  tiny_distilbert  a 2-layer DistilBERT built from a config (WordPiece vocabulary from IMDb reviews) trained in
                   fp16 with early stopping (patience 1 on the validation loss) and best-checkpoint restore. The
                   classifier is spoilt once the first checkpoint is saved, so the best checkpoint is known and is
                   not the last: the run must stop early, keep that checkpoint and predict with it.
  minilm_run       a quick MiniLM run (precision auto), the model of the next three checks
  predictor        the Predictor on the GPU (precision auto) against fp32 on the CPU: label agreement
  train_throughput / inference_throughput
                   benchmarks/train_throughput.py and inference_throughput.py at small sizes (subprocesses)

Each check records `ok` and its numbers (or its error); the file is rewritten after each check, so a run cut
short still shows how far it got. Exit status 0 when every check passed, 1 otherwise. Without CUDA it prints one
line, writes {"cuda": false, ...} and exits 0.

    python benchmarks/gpu_check.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SUBPROCESS_TIMEOUT_S = 120  # each benchmark; the whole check stays under 5 minutes on a recent GPU
MIN_AGREEMENT = 0.95  # bf16 on the GPU vs fp32 on the CPU: only reviews near 0.5 may flip


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report atomically (temp file + rename): readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(path)


def check_precision() -> dict[str, Any]:
    """What `auto`, bf16 and fp16 resolve to on this GPU, with its name and compute capability."""
    import torch

    from sentiment_lab.precision import MIN_CUDA_BF16_CAPABILITY, resolve

    capability = tuple(torch.cuda.get_device_capability(0))
    resolved = {name: resolve(name, "cuda", purpose="training") for name in ("auto", "bf16", "fp16")}
    expected = "bf16" if capability >= MIN_CUDA_BF16_CAPABILITY else "fp16"
    return {
        "ok": resolved["auto"].name == expected and resolved["fp16"].name == "fp16",
        "device_name": torch.cuda.get_device_name(0),
        "compute_capability": list(capability),
        "auto": resolved["auto"].name,
        "auto_mode": resolved["auto"].mode,
        "expected_auto": expected,
        "bf16": resolved["bf16"].name,
        "fp16": resolved["fp16"].name,
        "notes": {name: r.note for name, r in resolved.items() if r.note},
    }


def build_tiny_distilbert(folder: Path, texts: list[str], words: int = 3000) -> Path:
    """An untrained 2-layer, dim-64 DistilBERT classifier with a WordPiece vocabulary of the most frequent words."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    counts = Counter(w.strip(".,!?;:()\"'") for t in texts for w in t.lower().replace("<br />", " ").split())
    vocab = [w for w, _ in counts.most_common(words) if w.isalpha()]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text(
        "\n".join(dict.fromkeys(specials + vocab + letters + [f"##{c}" for c in letters]))
    )
    tokenizer = DistilBertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=True, model_max_length=512)
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=64,
        n_layers=2,
        n_heads=2,
        hidden_dim=128,
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def check_tiny_distilbert(
    work: Path, data: str, device: str = "cuda", train_reviews: int = 256, batch_size: int = 32
) -> dict[str, Any]:
    """fp16 training with early stopping and best-checkpoint restore on a tiny DistilBERT (see the module doc)."""
    import numpy as np
    import pandas as pd
    import torch
    import yaml
    from transformers import TrainerCallback

    from sentiment_lab.config import build_config
    from sentiment_lab.modeling import load_classifier, load_tokenizer
    from sentiment_lab.precision import resolve
    from sentiment_lab.runners import score_split
    from sentiment_lab.sidecar import read_sidecar
    from sentiment_lab.training import train

    steps_per_epoch = train_reviews // batch_size
    epochs = 6

    class SpoilAfterFirstCheckpoint(TrainerCallback):
        """Shift the classifier's bias toward NEGATIVE once the first checkpoint is saved: every later validation
        loss is far worse, so the best checkpoint is the first and early stopping ends the run at the second."""

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if state.global_step == steps_per_epoch:
                with torch.no_grad():
                    model.classifier.bias += torch.tensor([10.0, -10.0], device=model.classifier.bias.device)

    texts = pd.read_parquet(Path(data) / "train.parquet")["text"].sample(n=1000, random_state=0).tolist()
    model_dir = build_tiny_distilbert(work / "tiny-distilbert", texts)
    raw = {
        "name": "gpu-check-tiny-distilbert",
        "data": {"path": data, "max_train": train_reviews, "max_eval": 64, "max_test": 64},
        "tokenization": {"max_length": 128},
        "model": {"name": str(model_dir), "llrd": 0.95, "dropout": 0.1},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": batch_size,
            "eval_batch_size": 64,
            "epochs": epochs,
            "eval_strategy": "epoch",
            "precision": "fp16",
            "metric_for_best_model": "loss",
            "early_stopping_patience": 1,
            "keep_checkpoints": True,
            "save_total_limit": None,
            "logging_steps": 1,
            "seed": 0,
        },
        "evaluation": {"baselines": False},
    }
    run = work / "tiny-distilbert-run"
    if device == "cpu":  # the development path of this check (fp16 falls back to fp32 there)
        raw["training"]["precision"] = "fp32"
    metrics = train(build_config(raw), run, callbacks=[SpoilAfterFirstCheckpoint()])
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]

    # Score the best and the last checkpoint as `train` scored the validation split; the saved one must be the best.
    precision = resolve(raw["training"]["precision"], device, purpose="checking")
    saved = pd.read_parquet(run / "val_predictions.parquet")
    settings = read_sidecar(run / "model").text
    tokenizer = load_tokenizer(str(run / "model"))
    diffs = {}
    for name, step in (("best", metrics["best_step"]), ("last", metrics["global_step"])):
        model = load_classifier(run / "checkpoints" / f"checkpoint-{step}").to(device)
        _, logits, _ = score_split(model, tokenizer, saved, settings, precision, progress=False)
        diffs[name] = float(np.abs(logits - saved[["logit_neg", "logit_pos"]].to_numpy()).max())
    planned = steps_per_epoch * epochs
    result = {
        "precision": metrics["precision"],
        "precision_note": resolved.get("precision_note"),
        "best_step": metrics["best_step"],
        "global_step": metrics["global_step"],
        "planned_steps": planned,
        "stopped_early": metrics["global_step"] < planned,
        "saved_vs_best_max_logit_diff": diffs["best"],
        "saved_vs_last_max_logit_diff": diffs["last"],
        "val_loss": metrics["val"]["loss"],
        "train_runtime_s": metrics["train_runtime_s"],
    }
    result["ok"] = (
        result["precision"] == precision.name
        and result["best_step"] == steps_per_epoch
        and result["global_step"] == 2 * steps_per_epoch
        and diffs["best"] < 1e-2 < 1.0 < diffs["last"]
    )
    return result


def train_minilm(work: Path, data: str, train_reviews: int = 1024, max_length: int = 256) -> tuple[Path, dict]:
    """A quick MiniLM run (precision auto, 64 steps) whose model the Predictor and inference checks use.

    Trained well past chance so that few reviews sit near 0.5, where bf16 and fp32 may pick different labels.
    """
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    raw = {
        "name": "gpu-check-minilm",
        "data": {"path": data, "max_train": train_reviews, "max_eval": 128, "max_test": 128},
        "tokenization": {"max_length": max_length},
        "model": {"name": "minilm-l6"},
        "training": {"learning_rate": 1e-4, "batch_size": 32, "epochs": 2, "precision": "auto", "seed": 0},
        "evaluation": {"baselines": False},
    }
    run = work / "minilm-run"
    metrics = train(build_config(raw), run)
    summary = {
        "precision": metrics["precision"],
        "val_accuracy": metrics["val"]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "train_runtime_s": metrics["train_runtime_s"],
    }
    summary["ok"] = metrics["precision"] in ("bf16", "fp16")  # auto on CUDA is never fp32
    return run / "model", summary


def check_predictor(model_dir: Path, data: str, n: int = 64, device: str = "cuda") -> dict[str, Any]:
    """The Predictor on the GPU (precision auto) against fp32 on the CPU, on n held-out reviews."""
    import numpy as np

    from sentiment_lab.export import held_out_reviews
    from sentiment_lab.predictor import Predictor

    texts = held_out_reviews(n, data)["text"].tolist()
    gpu = Predictor.load(model_dir, device=device, precision="auto")
    cpu = Predictor.load(model_dir, device="cpu", precision="fp32")
    start = time.perf_counter()
    on_gpu = gpu.predict(texts)
    gpu_s = time.perf_counter() - start
    on_cpu = cpu.predict(texts)
    agreement = float(np.mean([a["label"] == b["label"] for a, b in zip(on_gpu, on_cpu, strict=True)]))
    prob_diff = max(abs(a["prob_pos"] - b["prob_pos"]) for a, b in zip(on_gpu, on_cpu, strict=True))
    return {
        "ok": agreement >= MIN_AGREEMENT and next(gpu.model.parameters()).device.type == device,
        "device": str(next(gpu.model.parameters()).device),
        "precision": gpu.precision,
        "n": len(texts),
        "label_agreement_vs_cpu_fp32": agreement,
        "max_prob_pos_diff": prob_diff,
        "gpu_reviews_per_s": len(texts) / gpu_s if gpu_s > 0 else None,
    }


def run_benchmark(script: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run a benchmark script as a subprocess; its JSON report (or its error) and the time it took."""
    start = time.perf_counter()
    cmd = [sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {SUBPROCESS_TIMEOUT_S} s", "command": cmd}
    result: dict[str, Any] = {"command": cmd, "wall_s": time.perf_counter() - start, "returncode": proc.returncode}
    if proc.returncode != 0 or not out.is_file():
        return result | {"ok": False, "error": (proc.stderr or proc.stdout)[-3000:]}
    return result | {"report": json.loads(out.read_text())}


def check_train_throughput(
    work: Path, data: str, samples: int = 256, eval_reviews: int = 200, max_length: int = 256
) -> dict[str, Any]:
    """benchmarks/train_throughput.py at a small size: the reference (fp16) and ours (precision auto) on CUDA."""
    args = ["--data", data, "--samples", str(samples), "--eval", str(eval_reviews), "--max-length", str(max_length)]
    result = run_benchmark("train_throughput.py", args, work / "train_throughput.json")
    if "report" in result:
        report = result.pop("report")
        ours, reference = report["results"]["ours"], report["results"]["reference"]
        result.update(
            {
                "device": report["environment"]["device"],
                "ours": {k: ours[k] for k in ("precision", "samples_per_s", "val_accuracy")},
                "reference": {k: reference[k] for k in ("precision", "samples_per_s", "val_accuracy")},
                "throughput_ratio": report["summary"]["T1_throughput_ratio"],
            }
        )
        result["ok"] = result["device"] != "cpu" and ours["precision"] in ("bf16", "fp16")
    return result


def check_inference_throughput(
    work: Path, data: str, model_dir: Path, samples: int = 200, latency_n: int = 20
) -> dict[str, Any]:
    """benchmarks/inference_throughput.py at a small size: the pipeline and the Predictor's torch backends on CUDA."""
    args = [str(model_dir), "--data", data, "--samples", str(samples), "--latency-n", str(latency_n)]
    args += ["--backends", "torch,torch-fp32"]
    result = run_benchmark("inference_throughput.py", args, work / "inference_throughput.json")
    if "report" in result:
        report = result.pop("report")
        backends = {
            name: {k: r.get(k) for k in ("device", "precision", "reviews_per_s", "accuracy")}
            for name, r in report["results"].items()
        }
        result.update({"backends": backends, "summary": report["summary"]})
        result["ok"] = all(str(b["device"]).startswith("cuda") for b in backends.values())
    return result


def timed(report: dict[str, Any], name: str, out: Path, fn: Any, *args: Any) -> Any:
    """Run one check, store its result (or its error) under `name` and rewrite the report."""
    start = time.perf_counter()
    value = None
    try:
        value = fn(*args)
        result = value[1] if isinstance(value, tuple) else value
    except Exception as exc:  # one failed check must not hide the others
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:3000]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    report[name] = result
    write_report(out, report)
    status = "ok" if result.get("ok") else "FAILED"
    print(f"gpu-check: {name:22} {status} ({result['seconds']} s)", flush=True)
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON report (default: gpu_check.json)")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--work", help="folder for the runs (default: a temporary folder, removed at the end)")
    args = p.parse_args(argv)
    out = Path(args.out)

    import torch

    if not torch.cuda.is_available():
        write_report(out, {"cuda": False, "ok": True, "torch": torch.__version__, "torch_cuda": torch.version.cuda})
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}); nothing checked, wrote {out}")
        return 0
    if not (Path(args.data) / "train.parquet").is_file():
        write_report(out, {"cuda": True, "ok": False, "error": f"no IMDb copy at {args.data}"})
        print(f"gpu-check: no IMDb copy at {args.data}: pass --data or set IMDB_DIR", file=sys.stderr)
        return 1

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    report: dict[str, Any] = {
        "cuda": True,
        "environment": {
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "device_name": torch.cuda.get_device_name(0),
            "device_count": torch.cuda.device_count(),
        },
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        timed(report, "precision", out, check_precision)
        timed(report, "tiny_distilbert", out, check_tiny_distilbert, work, args.data)
        minilm = timed(report, "minilm_run", out, train_minilm, work, args.data)
        if minilm is not None:
            model_dir = minilm[0]
            timed(report, "predictor", out, check_predictor, model_dir, args.data)
            timed(report, "inference_throughput", out, check_inference_throughput, work, args.data, model_dir)
        timed(report, "train_throughput", out, check_train_throughput, work, args.data)
    checks = [v for v in report.values() if isinstance(v, dict) and "ok" in v]
    report["ok"] = bool(checks) and all(c["ok"] for c in checks) and minilm is not None
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_report(out, report)
    print(f"gpu-check: {'all checks passed' if report['ok'] else 'FAILED'} in {report['elapsed_s']} s; wrote {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
