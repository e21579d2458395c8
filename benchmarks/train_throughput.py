"""T1/T2: training throughput and peak memory, the standard Hugging Face recipe vs sentiment-lab, same run.

Reference: Trainer on reviews padded to max_length ("padding='max_length'"), fp32 (fp16 on CUDA), default
threads. Ours: `sentiment_lab.training.train` with the tool's defaults for the device (dynamic padding,
length-grouped batches in random order, bf16 autocast where the hardware has it, attention dropout 0 on a
CPU). Both see the same reviews, the same number of optimizer steps and the same seed; each runs in its own
process so peak RSS is its own.

After 64 steps, validation accuracy moves by several points with the seed alone (the seed picks the reviews,
the classifier's initial weights and the batch order), for the reference as for ours. One seed cannot decide a
0.5 pp condition, so --seeds runs the pair once per seed and reports the mean accuracy difference with a 95%
t-interval over seeds.

    python benchmarks/train_throughput.py --samples 256 --eval 400                     # quick: minutes on 2 cores
    python benchmarks/train_throughput.py --samples 1024 --eval 1000 --seeds 42,43,44  # accuracy condition (long)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB: VmHWM, which starts afresh at exec.

    getrusage's ru_maxrss keeps the parent's resident size at fork across the exec, so a child of a parent that
    has loaded torch would report the parent's; it is only the fallback where /proc is missing.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_role(role: str, cmd: list[str]) -> dict:
    """Run one measured role in its own process (its own peak RSS) and return its `RESULT {json}` line."""
    print(f"running {role} ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{role} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def load_split(args: argparse.Namespace):
    from sentiment_lab.config import DataConfig
    from sentiment_lab.data import prepare_data

    cfg = DataConfig(path=args.data, max_train=args.samples, max_eval=args.eval, max_test=32, split_seed=args.seed)
    return prepare_data(cfg)


def run_reference(args: argparse.Namespace) -> dict:
    """The published recipe: pad every review to max_length, plain Trainer, fp32 on CPU / fp16 on CUDA."""
    import datasets
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from sentiment_lab.modeling import resolve_model_name

    splits = load_split(args)
    name = resolve_model_name(args.model)
    tok = AutoTokenizer.from_pretrained(name)

    def encode(df):
        enc = tok(df["text"].tolist(), padding="max_length", truncation=True, max_length=args.max_length)
        return datasets.Dataset.from_dict({**enc, "labels": df["label"].tolist()})

    train_ds, val_ds = encode(splits.train), encode(splits.val)
    set_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)
    cuda = torch.cuda.is_available()
    targs = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        max_steps=args.samples // args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,
        weight_decay=0.01,
        fp16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        seed=args.seed,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds)
    result = trainer.train()
    logits = trainer.predict(val_ds).predictions
    accuracy = float((np.argmax(logits, axis=-1) == np.array(splits.val["label"])).mean())
    return {
        "samples_per_s": float(result.metrics["train_samples_per_second"]),
        "train_runtime_s": float(result.metrics["train_runtime"]),
        "val_accuracy": accuracy,
        "precision": "fp16" if cuda else "fp32",
        "padding": "max_length",
    }


def run_ours(args: argparse.Namespace) -> dict:
    """sentiment-lab with its device defaults (precision auto, dynamic padding, length-grouped batches)."""
    from sentiment_lab.config import build_config
    from sentiment_lab.training import train

    splits = load_split(args)
    steps = args.samples // args.batch_size
    raw = {
        "name": "bench-ours",
        "data": {"path": args.data},
        "tokenization": {"max_length": args.max_length, "truncation": "head"},
        "model": {"name": args.model},
        "training": {
            "learning_rate": args.lr,
            "batch_size": args.batch_size,
            "eval_batch_size": 64,
            "max_steps": steps,
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
            "precision": "auto",
            "group_by_length": True,
            "eval_strategy": "steps",
            "eval_steps": steps + 1,  # no evaluation inside the timed loop, as in the reference
            "save_total_limit": 1,
            "seed": args.seed,
        },
        "evaluation": {"baselines": False},
    }
    with tempfile.TemporaryDirectory() as run:
        metrics = train(build_config(raw), Path(run) / "run", splits=splits)
    return {
        "samples_per_s": metrics["train_samples_per_s"],
        "train_runtime_s": metrics["train_runtime_s"],
        "val_accuracy": metrics["val"]["accuracy"],
        "precision": metrics["precision"],
        "padding": "dynamic, length-grouped batches in random order",
    }


def child(args: argparse.Namespace) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    result = run_reference(args) if args.role == "reference" else run_ours(args)
    result.update({"role": args.role, "peak_rss_mb": peak_rss_mb(), "wall_s": time.perf_counter() - start})
    result["malloc_env"] = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    print("RESULT " + json.dumps(result), flush=True)


def environment() -> dict:
    import torch
    import transformers

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def paired_interval(deltas: list[float]) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% t-interval (NaN bounds for a single seed)."""
    import numpy as np
    from scipy import stats

    mean = float(np.mean(deltas))
    if len(deltas) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(deltas) - 1) * np.std(deltas, ddof=1) / np.sqrt(len(deltas)))
    return mean, mean - half, mean + half


def run_pair(args: argparse.Namespace, seed: int) -> dict:
    """Reference and ours at one seed, each in its own process."""
    skip = ("role", "out", "seeds", "seed")
    shared = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in skip]
    return {
        role: run_role(f"{role} (seed {seed})", [sys.executable, __file__, "--role", role, f"--seed={seed}", *shared])
        for role in ("reference", "ours")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--samples", type=int, default=256, help="training reviews (= steps x batch size)")
    p.add_argument("--eval", type=int, default=400, help="validation reviews for the accuracy condition")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=42, help="the seed of a single pair (see --seeds)")
    p.add_argument("--seeds", help="comma-separated seeds: one reference/ours pair per seed, e.g. 42,43,44")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_throughput.json"))
    p.add_argument("--role", choices=["reference", "ours"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        child(args)
        return
    try:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError:
        p.error(f"--seeds takes comma-separated integers, got {args.seeds!r}")

    per_seed = {seed: run_pair(args, seed) for seed in seeds}
    speed = [r["ours"]["samples_per_s"] / r["reference"]["samples_per_s"] for r in per_seed.values()]
    deltas = [100 * (r["ours"]["val_accuracy"] - r["reference"]["val_accuracy"]) for r in per_seed.values()]
    memory = [r["ours"]["peak_rss_mb"] / r["reference"]["peak_rss_mb"] for r in per_seed.values()]
    mean_delta, low, high = paired_interval(deltas)
    summary = {
        "seeds": seeds,
        "T1_throughput_ratio": min(speed),  # the worst seed: every run must be fast
        "T1_throughput_ratios": speed,
        "T1_accuracy_delta_pp": mean_delta,
        "T1_accuracy_delta_pp_ci95": [low, high],
        "T1_accuracy_deltas_pp": deltas,
        "T2_peak_rss_ratio": max(memory),
    }
    report = {"params": {k: v for k, v in vars(args).items() if k != "role"}, "environment": environment()}
    report.update({"results": per_seed[seeds[0]], "per_seed": per_seed, "summary": summary})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"\n{'seed':>5} {'':10} {'samples/s':>10} {'val acc':>8} {'peak RSS MiB':>13}  precision / padding")
    for seed, results in per_seed.items():
        for role, r in results.items():
            print(
                f"{seed:5} {role:10} {r['samples_per_s']:10.2f} {r['val_accuracy']:8.4f} {r['peak_rss_mb']:13.0f}  "
                f"{r['precision']} / {r['padding']} / allocator {r['malloc_env'] or 'glibc default'}"
            )
    interval = f", 95% CI [{low:+.2f}, {high:+.2f}] over {len(seeds)} seeds" if len(seeds) > 1 else ", one seed"
    print(
        f"\nT1 throughput ratio {min(speed):.2f}x (worst seed; target >= 3.0x); accuracy delta "
        f"{mean_delta:+.2f} pp (mean{interval}; target >= -0.5 pp); per seed: "
        + ", ".join(f"{s} {d:+.1f}" for s, d in zip(seeds, deltas, strict=True))
    )
    print(f"T2 peak RSS ratio {max(memory):.2f}x (worst seed; target <= 1.0x)")
    print(f"environment: {report['environment']}\nwritten: {out}")


if __name__ == "__main__":
    main()
