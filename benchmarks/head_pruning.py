"""Issue 17, pruning: does removing the least important attention heads of a trained model pay?

Head importance is the gradient estimate of Michel et al. 2019 ("Are Sixteen Heads Really Better than One?"):
|d loss / d m_h| summed over the run's validation reviews, where m_h = 1 multiplies head h's output. The heads
are then removed by slicing the query/key/value rows and the output projection's columns of each layer, globally
least important first, at least one head kept per layer, without training again. For each fraction, the rows
are: accuracy on the first --test-n test reviews of the run (McNemar against the unpruned model on the same
reviews) and batch-1 p50 latency (all variants taking turns review by review, in one process), each
against the unpruned model served the same way.

Written by hand because transformers 5 removed `prune_heads` and head masks (huggingface/transformers#41076);
a pruned model is measured in memory only: BERT's config cannot describe layers with fewer heads than
hidden_size / head_size, so it would no longer be a plain model folder (the student's contract).

    python benchmarks/head_pruning.py runs/distill-minilm-l3 --fractions 0.25 0.5 --test-n 2000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def attention_blocks(model):
    """The attention module (its `self` and `output.dense`) of every BERT-family layer; exits for another kind."""
    encoder = getattr(getattr(model, model.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None or not hasattr(layers[0].attention, "self"):
        sys.exit(f"head pruning here handles BERT-family encoders (attention.self); got {type(model).__name__}")
    return [layer.attention for layer in layers]


def head_importance(model, tokenizer, texts, labels, max_length: int, batch_size: int = 16):
    """|d loss / d m| per layer and head, summed over the texts (m: a multiplier of 1 on each head's output)."""
    import torch

    blocks = attention_blocks(model)
    heads = blocks[0].self.num_attention_heads
    if any(block.self.num_attention_heads != heads for block in blocks):
        raise ValueError("head importance is estimated on the unpruned model (every layer with its heads)")
    masks = torch.ones(len(blocks), heads, requires_grad=True)
    hooks = []
    for k, block in enumerate(blocks):

        def scale(module, inputs, output, k=k):
            out = output[0]
            shaped = out.view(*out.shape[:-1], module.num_attention_heads, module.attention_head_size)
            return ((shaped * masks[k].view(1, 1, -1, 1)).reshape(out.shape), *output[1:])

        hooks.append(block.self.register_forward_hook(scale))
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(
                texts[start : start + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            target = torch.tensor(labels[start : start + batch_size])
            loss = torch.nn.functional.cross_entropy(model(**enc).logits.float(), target, reduction="sum")
            loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    return masks.grad.abs().numpy()


def prune(model, importance, fraction: float) -> dict[int, list[int]]:
    """Remove the globally least important heads (fraction of all), at least one kept per layer; returns them."""
    import numpy as np
    import torch

    blocks = attention_blocks(model)
    n_layers, heads = importance.shape
    order = np.argsort(importance, axis=None)
    removed: dict[int, list[int]] = {k: [] for k in range(n_layers)}
    budget = round(fraction * importance.size)
    for flat in order:
        if budget == 0:
            break
        layer, head = divmod(int(flat), heads)
        if len(removed[layer]) < heads - 1:
            removed[layer].append(head)
            budget -= 1
    for k, block in enumerate(blocks):
        if not removed[k]:
            continue
        attn, dense = block.self, block.output.dense
        d = attn.attention_head_size
        keep = [h for h in range(heads) if h not in removed[k]]
        index = torch.tensor([h * d + j for h in keep for j in range(d)])
        for name in ("query", "key", "value"):
            old = getattr(attn, name)
            new = torch.nn.Linear(old.in_features, len(index), dtype=old.weight.dtype)
            new.weight.data = old.weight.data[index].clone()
            new.bias.data = old.bias.data[index].clone()
            setattr(attn, name, new)
        new_dense = torch.nn.Linear(len(index), dense.out_features, dtype=dense.weight.dtype)
        new_dense.weight.data = dense.weight.data[:, index].clone()
        new_dense.bias.data = dense.bias.data.clone()
        block.output.dense = new_dense
        attn.num_attention_heads = len(keep)
        attn.all_head_size = len(index)
    return removed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a trained run folder with val_predictions.parquet and predictions.parquet")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--val-n", type=int, default=500, help="validation reviews for the importance estimate")
    p.add_argument("--test-n", type=int, default=2000, help="test reviews scored per variant")
    p.add_argument("--latency-n", type=int, default=100)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "head_pruning.json"))
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import pandas as pd
    import transformers

    from sentiment_lab.benchmarking import interleaved_latencies_ms, latency_summary
    from sentiment_lab.io import json_safe, write_json_atomic
    from sentiment_lab.modeling import load_classifier
    from sentiment_lab.predictor import Predictor
    from sentiment_lab.rundir import MODEL_DIR
    from sentiment_lab.runners import torch_runner
    from sentiment_lab.stats import bootstrap_ci, mcnemar_test

    transformers.logging.set_verbosity_error()
    run = Path(args.run_dir)
    val = pd.read_parquet(run / "val_predictions.parquet").iloc[: args.val_n]
    test = pd.read_parquet(run / "predictions.parquet").sort_values("id").iloc[: args.test_n]
    base = Predictor.load(run)
    max_length = base.settings.max_length
    start = time.perf_counter()
    fp32 = load_classifier(str(run / MODEL_DIR))
    importance = head_importance(fp32, base.tokenizer, val["text"].tolist(), val["label"].tolist(), max_length)
    importance_s = time.perf_counter() - start
    print(f"head importance on {len(val)} validation reviews in {importance_s:.0f} s:\n{np.round(importance, 2)}")

    variants = {"unpruned": base}
    removed = {}
    for fraction in args.fractions:
        predictor = Predictor.load(run)  # its own weights (bf16 where the CPU has it), pruned in place
        removed[fraction] = prune(predictor.model, importance, fraction)
        predictor.runner = torch_runner(predictor.model)
        variants[f"{int(100 * fraction)}% of heads removed"] = predictor
    texts, labels = test["text"].tolist(), test["label"].to_numpy()
    rows = {}
    for name, predictor in variants.items():
        print(f"scoring {len(texts)} test reviews: {name} ...", flush=True)
        preds = predictor.logits(texts).argmax(axis=-1)
        preds = 1 - preds if predictor.positive_index == 0 else preds  # labels count 1 = positive
        rows[name] = {"preds": preds, "accuracy": bootstrap_ci(labels, preds)}
    calls = {name: (lambda t, p=p: p.predict([t])) for name, p in variants.items()}
    latencies = interleaved_latencies_ms(calls, texts[: args.latency_n], texts[:3])
    unpruned = rows["unpruned"]
    for name, row in rows.items():
        row["p50_ms"] = latency_summary(latencies[name])["p50"]
        row["p50_vs_unpruned"] = row["p50_ms"] / latency_summary(latencies["unpruned"])["p50"]
        row["mcnemar_vs_unpruned"] = mcnemar_test(row["preds"] == labels, unpruned["preds"] == labels)
        row["parameters"] = sum(p.numel() for p in variants[name].model.parameters())
    print(f"\n{'variant':28} {'parameters':>10} {'accuracy % [95% CI]':>24} {'McNemar p':>9} {'p50 ms':>7} {'x':>5}")
    for name, r in rows.items():
        a = r["accuracy"]
        ci = f"{100 * a['estimate']:.2f} [{100 * a['low']:.2f}, {100 * a['high']:.2f}]"
        print(
            f"{name:28} {r['parameters'] / 1e6:9.2f}M {ci:>24} {r['mcnemar_vs_unpruned']['p_value']:9.3g} "
            f"{r['p50_ms']:7.1f} {r['p50_vs_unpruned']:5.2f}"
        )
    report = {
        "run": str(run),
        "importance": importance.tolist(),
        "importance_seconds": importance_s,
        "removed": {str(f): v for f, v in removed.items()},
        "rows": {n: {k: v for k, v in r.items() if k != "preds"} for n, r in rows.items()},
        "params": vars(args),
        "load_1m": os.getloadavg()[0],
    }
    write_json_atomic(Path(args.out), json_safe(report))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
