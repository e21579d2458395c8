"""Issue 18, P1: where the resident memory of a full-data preset goes, phase by phase, in one process.

Runs the phases of `sentiment-lab train` by themselves, in the order train runs them, and prints after each the
resident memory (RSS) now and the peak so far: data loading, tokenizing the training split, the model, one
optimizer step on the longest batch (the training peak: activations kept for the backward pass), one evaluation
batch of the longest reviews (eval_batch_size x max_length, no gradients), and the TF-IDF + logistic regression
baseline on the training split (fit after training, in the same process). A peak that appears first at a phase
is that phase's.

    python benchmarks/memory_phases.py configs/cpu-minilm-full.yaml --data ../shared/data/imdb
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import psutil


def gib(n: float) -> float:
    return round(n / 2**30, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--data", help="the data folder (as train's --data)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE, as train's --set")
    p.add_argument("--out", help="JSON of the phases")
    args = p.parse_args()

    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding

    from sentiment_lab.baselines import fit_baselines
    from sentiment_lab.config import load_config
    from sentiment_lab.data import prepare_data
    from sentiment_lab.modeling import build_model, load_tokenizer, resolve_model_name
    from sentiment_lab.precision import resolve as resolve_precision
    from sentiment_lab.sidecar import TextSettings
    from sentiment_lab.tokenization import tokenize_frame

    process = psutil.Process()
    phases: list[dict] = []
    start = time.perf_counter()

    def mark(name: str) -> None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        row = {"phase": name, "rss_gib": gib(process.memory_info().rss), "peak_gib": gib(peak)}
        row["seconds"] = round(time.perf_counter() - start, 1)
        phases.append(row)
        print(f"{name:55} rss {row['rss_gib']:6.2f} GiB   peak so far {row['peak_gib']:6.2f} GiB", flush=True)

    mark("python + torch + transformers imported")
    cfg = load_config(args.config, args.overrides, data_path=args.data)
    splits = prepare_data(cfg.data)
    mark(f"data loaded (train {len(splits.train):,}, val {len(splits.val):,}, test {len(splits.test):,})")
    tokenizer = load_tokenizer(resolve_model_name(cfg.model.name))
    settings = TextSettings.from_config(cfg)
    train_ds, _ = tokenize_frame(splits.train, tokenizer, settings)
    mark(f"training split tokenized ({len(train_ds):,} sequences)")
    precision = resolve_precision(cfg.training.precision, None, purpose="training")
    model = build_model(cfg.model, label_names=splits.label_names)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
    mark(f"model built ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {precision.name})")

    collator = DataCollatorWithPadding(tokenizer)
    lengths = np.array([len(ids) for ids in train_ds["input_ids"]])
    longest = np.argsort(-lengths)
    batch = collator([train_ds[int(i)] for i in longest[: cfg.training.batch_size]])
    autocast = torch.autocast("cpu", dtype=precision.autocast_dtype, enabled=precision.autocast_dtype is not None)
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    mark(f"one optimizer step, batch {cfg.training.batch_size} x {batch['input_ids'].shape[1]} tokens")

    model.eval()
    batch = collator([train_ds[int(i)] for i in longest[: cfg.training.eval_batch_size]])
    batch.pop("labels")
    with torch.inference_mode(), autocast:
        model(**batch)
    mark(f"one evaluation batch, {cfg.training.eval_batch_size} x {batch['input_ids'].shape[1]} tokens")

    fit_baselines(splits, ordinal=cfg.data.ordinal)
    mark("TF-IDF + logistic regression fitted on the training split")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"config": args.config, "overrides": args.overrides, "phases": phases}, indent=1)
        )


if __name__ == "__main__":
    main()
