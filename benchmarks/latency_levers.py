"""I2 levers: single-review (batch 1) latency of one model under each lever, next to the reference pipeline.

The same IMDb test reviews (the first --n of the seeded, stratified sample that inference_throughput.py uses),
cut as the reference cuts them (head, --max-length tokens), one review per call, after a warm-up. Rows:

- reference: `transformers.pipeline` fp32 (the I2 reference)
- the Predictor's default on this machine (bf16 weights where the CPU has native bf16), and fp32
- bf16 with eager (matmul + softmax) attention instead of SDPA; bf16 on one thread
- the Predictor's default with the model folder's own truncation (e.g. 256 head_tail for the quick-start)
- torch dynamic INT8 (`quantize_dynamic` on the Linear layers, fp32 activations)
- `torch.compile` (Inductor, `freezing=True`, dynamic shapes; the first calls compile)
- ONNX Runtime INT8 (the exported MODEL_DIR/onnx/model.int8.onnx) and ONNX Runtime after its BERT graph
  optimizer (`onnxruntime.transformers.optimizer`), fp32

One process, rows in sequence, so the rows share the machine's state; a busy machine distorts every row.

    python benchmarks/latency_levers.py runs/quickstart/model --n 60
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="a run folder's model/ (e.g. runs/quickstart/model after `make demo`)")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--n", type=int, default=60, help="reviews timed per row")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile row (slow first calls)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "latency_levers.json"))
    args = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch
    import transformers
    from transformers import pipeline

    from sentiment_lab.benchmarking import latency_summary, single_call_latencies_ms
    from sentiment_lab.evaluation import locate_model
    from sentiment_lab.export import held_out_reviews
    from sentiment_lab.inference import Predictor, onnx_runner, torch_runner

    transformers.logging.set_verbosity_error()
    folder, _ = locate_model(args.model_dir)
    reviews = held_out_reviews(max(args.n, 200), args.data, seed=0)
    if reviews is None:
        sys.exit("no IMDb copy found: pass --data /path/to/imdb or set IMDB_DIR")
    texts = reviews["text"].tolist()[: args.n]
    rows: dict[str, dict] = {}

    def row(name: str, call) -> None:
        latency = latency_summary(single_call_latencies_ms(call, texts, texts[:3]))
        rows[name] = {"p50_ms": latency["p50"], "p95_ms": latency["p95"]}
        print(f"{name:44} p50 {rows[name]['p50_ms']:7.1f} ms  p95 {rows[name]['p95_ms']:7.1f} ms", flush=True)

    pipe = pipeline(
        "text-classification", model=str(folder), truncation=True, max_length=args.max_length, dtype=torch.float32
    )
    row("reference: pipeline fp32", pipe)
    del pipe

    def predictor(**kwargs) -> Predictor:
        pred = Predictor.load(folder, **kwargs)
        pred.settings.max_length, pred.settings.truncation = args.max_length, "head"
        return pred

    default = predictor()
    row(f"Predictor default ({default.precision})", lambda t: default.logits([t]))
    fp32 = predictor(precision="fp32")
    row("Predictor fp32", lambda t: fp32.logits([t]))
    own = Predictor.load(folder)
    row(
        f"Predictor default, own truncation ({own.settings.max_length} {own.settings.truncation})",
        lambda t: own.logits([t]),
    )
    default.model.set_attn_implementation("eager")
    row(f"{default.precision}, eager attention", lambda t: default.logits([t]))
    default.model.set_attn_implementation("sdpa")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    row(f"{default.precision}, 1 thread", lambda t: default.logits([t]))
    torch.set_num_threads(threads)

    int8 = predictor(precision="fp32")
    int8.model = torch.ao.quantization.quantize_dynamic(int8.model, {torch.nn.Linear}, dtype=torch.qint8)
    int8.runner = torch_runner(int8.model)
    row("torch dynamic INT8 (Linear)", lambda t: int8.logits([t]))

    if not args.skip_compile:
        compiled = predictor()
        model = torch.compile(compiled.model, dynamic=True, options={"freezing": True})
        compiled.runner = torch_runner(model)
        start = time.perf_counter()
        compiled.logits(texts[:2])
        print(f"torch.compile: first calls {time.perf_counter() - start:.1f} s", flush=True)
        row(f"torch.compile (Inductor, freezing), {compiled.precision}", lambda t: compiled.logits([t]))

    onnx_dir = folder / "onnx"
    if (onnx_dir / "model.int8.onnx").is_file():
        ort = predictor(precision="fp32")
        ort.runner = onnx_runner(onnx_dir / "model.int8.onnx")
        row("ONNX Runtime INT8", lambda t: ort.logits([t]))
    if (onnx_dir / "model.onnx").is_file():
        from onnxruntime.transformers.optimizer import optimize_model

        config = default.model.config
        optimized = optimize_model(
            str(onnx_dir / "model.onnx"),
            model_type="bert",
            num_heads=config.num_attention_heads,
            hidden_size=config.hidden_size,
        )
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        print(f"ONNX Runtime BERT optimizer fused: {fused}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            optimized.save_model_to_file(str(Path(tmp) / "optimized.onnx"))
            ort_opt = predictor(precision="fp32")
            ort_opt.runner = onnx_runner(Path(tmp) / "optimized.onnx")
            row("ONNX Runtime fp32, BERT graph optimizer", lambda t: ort_opt.logits([t]))

    reference = rows["reference: pipeline fp32"]["p50_ms"]
    print(f"\n{'lever':44} {'p50 ms':>7} {'x reference':>11}")
    for name, r in rows.items():
        print(f"{name:44} {r['p50_ms']:7.1f} {r['p50_ms'] / reference:11.2f}")
    print(f"I2 target: <= 0.33x ({0.33 * reference:.1f} ms here); {args.n} reviews, head {args.max_length} tokens")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"params": vars(args), "threads": threads, "torch": torch.__version__, "rows": rows}
    report["load_1m"] = os.getloadavg()[0]  # a busy machine distorts every row
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
