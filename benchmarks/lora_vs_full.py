"""Issue 17, LoRA: the quick-start trained in full and with LoRA adapters, same data, seeds and machine.

For each seed, `sentiment-lab train configs/quickstart.yaml` and `configs/quickstart-lora.yaml` run one after the
other (each in its own process, in alternating order from seed to seed, so a machine that slows down for a while
slows both alike), and the table puts side by side: test accuracy with its 95% bootstrap CI, McNemar's test
between the two on the same test reviews, trainable and total parameters, training samples/s, training time, the
peak resident memory of the training process (its own, from wait4), and the size of what a user ships: the
model folder, and for LoRA the adapter alone.

    python benchmarks/lora_vs_full.py --seeds 42 --out docs/measurements/lora_vs_full.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from sentiment_lab.benchmarking import run_measured

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"full fine-tuning": "configs/quickstart.yaml", "LoRA": "configs/quickstart-lora.yaml"}


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def train(name: str, seed: int, args: argparse.Namespace) -> dict:
    """One training run in its own process; its facts from the run folder and its peak RSS from wait4."""
    out = Path(args.runs) / f"{name.replace(' ', '-').lower()}-seed{seed}"
    cmd = [sys.executable, "-m", "sentiment_lab", "train", str(REPO / CONFIGS[name]), "--out", str(out)]
    cmd += ["--overwrite", "--set", f"training.seed={seed}"] + (["--data", args.data] if args.data else [])
    print(f"{name}, seed {seed}: {' '.join(cmd[2:])}", flush=True)
    measured = run_measured(cmd)
    import yaml

    metrics = json.loads((out / "metrics.json").read_text())
    resolved = yaml.safe_load((out / "config.yaml").read_text())["resolved"]
    lora = metrics.get("lora") or {}
    return {
        "name": name,
        "seed": seed,
        "run": str(out),
        "accuracy": metrics["test"]["accuracy"],
        "test_n": metrics["test"]["n"],
        "trainable_parameters": resolved["parameters"]["trainable"],
        "total_parameters": resolved["parameters"]["total"],
        "train_samples_per_s": metrics["train_samples_per_s"],
        "train_runtime_s": metrics["train_runtime_s"],
        **measured,
        "model_bytes": folder_bytes(out / "model") - folder_bytes(out / "model" / "adapter"),
        "adapter_bytes": lora.get("adapter_bytes"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--data", default=os.environ.get("IMDB_DIR"), help="the IMDb folder (default: the config's)")
    p.add_argument("--runs", default=str(REPO / "runs" / "lora_vs_full"), help="where the run folders go")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "lora_vs_full.json"))
    args = p.parse_args()

    import numpy as np

    from sentiment_lab.io import json_safe, write_json_atomic
    from sentiment_lab.rundir import load_run
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test
    from sentiment_lab.tables import format_table

    results = []
    for k, seed in enumerate(args.seeds):
        names = list(CONFIGS) if k % 2 == 0 else list(CONFIGS)[::-1]
        pair = {name: train(name, seed, args) for name in names}
        preds = {name: load_run(r["run"]).predictions.sort_values("id") for name, r in pair.items()}
        full, lora = preds["full fine-tuning"], preds["LoRA"]
        if not np.array_equal(full["id"].to_numpy(), lora["id"].to_numpy()):
            sys.exit("the two runs scored different test reviews; they must share data settings")
        for name, r in pair.items():
            ci = bootstrap_ci(preds[name]["label"], preds[name]["pred"])
            r.update(ci_low=ci["low"], ci_high=ci["high"])
        test = mcnemar_test(lora["pred"] == lora["label"], full["pred"] == full["label"])
        pair["LoRA"]["mcnemar_vs_full"] = test
        results += [pair["full fine-tuning"], pair["LoRA"]]

    rows = [
        [
            r["name"],
            r["seed"],
            f"{100 * r['accuracy']:.2f} [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]",
            f"{r['trainable_parameters']:,} of {r['total_parameters']:,}",
            f"{r['train_samples_per_s']:.1f}",
            f"{r['train_runtime_s']:.0f} s",
            f"{r['peak_rss_mib']:.0f} MiB",
            f"{r['model_bytes'] / 2**20:.1f} MiB"
            + ("" if r["adapter_bytes"] is None else f" (adapter {r['adapter_bytes'] / 2**20:.2f} MiB)"),
            f"{r['mcnemar_vs_full']['p_value']:.3g}" if "mcnemar_vs_full" in r else "-",
        ]
        for r in results
    ]
    header = ["", "seed", "test accuracy % [95% CI]", "trainable parameters", "samples/s", "training", "peak RSS"]
    print(format_table(rows, [*header, "shipped", "McNemar p vs full"]))
    report = {"rows": results, "params": vars(args), "load_1m": os.getloadavg()[0]}
    report["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")  # the runs' threads when the caller limited them
    write_json_atomic(Path(args.out), json_safe(report))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
