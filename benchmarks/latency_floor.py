"""I2 floor: what the matrix kernels of one forward pass cost at batch 1, next to the reference pipeline.

For the review at the median length of the benchmark sample (cut at --max-length, as the reference cuts), this
times on this machine, in turn round by round (a slow spell of a shared machine hits every row alike):

- the reference: `transformers.pipeline` fp32, batch 1, on that review (the I2 reference)
- the model's own encoder Linear layers alone, on activations of the review's length: fp32, bf16, and INT8 on
  oneDNN (`torch.ops.onednn.qlinear_pointwise`: AMX/VNNI int8 with pre-packed per-channel weights, fed an input
  that is already quantized, so it leaves out the cost of quantizing activations and is a lower bound)
- the attention core alone (all layers, all heads), bf16: `scaled_dot_product_attention`, and matmul + softmax +
  matmul

The floor of a precision is its Linear row plus the fastest attention row: a forward pass also runs embeddings,
LayerNorms, residual adds, GELU and the classifier head, and a call also tokenizes, so no runtime or quantization
scheme that keeps this model, this input and that precision can be faster. A floor above 0.33x of the reference
means I2 cannot be met in that precision on this machine with this model.

    python benchmarks/latency_floor.py runs/quickstart/model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a run folder's model/ (e.g. runs/quickstart/model after `make demo`)")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--sample", type=int, default=200, help="reviews whose median length sets the shape")
    p.add_argument("--rounds", type=int, default=40, help="timed rounds (every row once per round)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "latency_floor.json"))
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import pipeline

    from sentiment_lab.benchmarking import interleaved_latencies_ms, latency_summary
    from sentiment_lab.export import held_out_reviews
    from sentiment_lab.rundir import locate_model

    transformers.logging.set_verbosity_error()
    folder, _ = locate_model(args.model_dir)
    reviews = held_out_reviews(args.sample, args.data, seed=0)
    if reviews is None:
        sys.exit("no IMDb copy found: pass --data /path/to/imdb or set IMDB_DIR")
    pipe = pipeline(
        "text-classification", model=str(folder), truncation=True, max_length=args.max_length, dtype=torch.float32
    )
    texts = reviews["text"].tolist()
    lengths = [len(ids) for ids in pipe.tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    median = int(np.median(lengths))
    nearest = int(np.argmin([abs(n - median) for n in lengths]))
    text, tokens = texts[nearest], lengths[nearest]

    model = pipe.model.eval()
    config = model.config
    linears = [
        m for name, m in model.base_model.named_modules() if isinstance(m, torch.nn.Linear) and "pooler" not in name
    ]
    torch.manual_seed(0)
    fp32 = [(torch.randn(tokens, m.in_features), m.weight.detach(), m.bias.detach()) for m in linears]
    bf16 = [tuple(t.to(torch.bfloat16) for t in layer) for layer in fp32]

    def run_linears(layers: list) -> None:
        for x, w, b in layers:
            F.linear(x, w, b)

    reference_row = "reference: pipeline fp32, whole call"
    linear_rows = {precision: f"{len(linears)} Linear layers {precision}" for precision in ("fp32", "bf16")}
    calls = {
        reference_row: lambda _: pipe(text),
        linear_rows["fp32"]: lambda _: run_linears(fp32),
        linear_rows["bf16"]: lambda _: run_linears(bf16),
    }
    int8_note = ""
    try:
        int8 = []
        for x, w, b in fp32:
            scale = w.abs().amax(1).clamp(min=1e-8) / 127
            weight = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
            packed = torch.ops.onednn.qlinear_prepack(weight, None)
            x_scale = float(x.abs().max()) / 127
            qx = (torch.round(x / x_scale) + 128).clamp(0, 255).to(torch.uint8)
            zero = torch.zeros(len(scale), dtype=torch.int64)
            int8.append((qx, x_scale, packed, scale, zero, b))

        def run_int8() -> None:
            for qx, x_scale, packed, scale, zero, b in int8:
                torch.ops.onednn.qlinear_pointwise(
                    qx, x_scale, 128, packed, scale, zero, b, 1.0, 0, torch.bfloat16, "none", [], ""
                )

        run_int8()
        linear_rows["INT8"] = f"{len(linears)} Linear layers INT8 (oneDNN, input pre-quantized)"
        calls[linear_rows["INT8"]] = lambda _: run_int8()
    except (RuntimeError, AttributeError, NotImplementedError) as exc:  # no oneDNN int8 on this CPU or build
        int8_note = f"INT8 row left out: {type(exc).__name__}: {str(exc)[:200]}"

    heads, layers = config.num_attention_heads, config.num_hidden_layers
    q, k, v = (torch.randn(1, heads, tokens, config.hidden_size // heads, dtype=torch.bfloat16) for _ in range(3))
    scale = q.shape[-1] ** -0.5

    def sdpa() -> None:
        for _ in range(layers):
            F.scaled_dot_product_attention(q, k, v)

    def eager() -> None:
        for _ in range(layers):
            torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v

    attention_rows = {
        f"attention core bf16, SDPA x {layers} layers": sdpa,
        f"attention core bf16, matmul+softmax x {layers} layers": eager,
    }
    for name, run in attention_rows.items():
        calls[name] = lambda _, run=run: run()

    print(f"median review: {tokens} tokens (median of {len(texts)}: {median}); {args.rounds} rounds", flush=True)
    with torch.inference_mode():
        latencies = interleaved_latencies_ms(calls, [text] * args.rounds, [text] * 3)
    p50 = {name: latency_summary(values)["p50"] for name, values in latencies.items()}
    reference = p50[reference_row]
    attention_best = min(p50[name] for name in attention_rows)
    floors = {
        f"floor {precision}: Linear layers + fastest attention": p50[name] + attention_best
        for precision, name in linear_rows.items()
        if precision != "fp32"
    }
    rows = {**p50, **floors}

    print(f"\n{'row':62} {'p50 ms':>7} {'x reference':>11}")
    for name, value in rows.items():
        print(f"{name:62} {value:7.2f} {value / reference:11.2f}")
    print(f"I2 target: <= 0.33x = {0.33 * reference:.1f} ms here")
    if int8_note:
        print(int8_note)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "params": vars(args),
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "p50_ms": rows,
        "ratios": {name: value / reference for name, value in rows.items()},
        "load_1m": os.getloadavg()[0],
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
