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

One process; the levers take turns review by review (each review is timed under every lever before the next
review), so a shared machine that slows down for a while slows every row alike and the ratios hold. Each
lever has its own model instance; ONNX Runtime's threads do not busy-wait after a call (they would take the
cores from the next lever). Labels are compared with the reference's on the same reviews.

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
from typing import Any

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

    from sentiment_lab.benchmarking import interleaved_latencies_ms, latency_summary
    from sentiment_lab.export import held_out_reviews
    from sentiment_lab.predictor import Predictor
    from sentiment_lab.rundir import locate_model
    from sentiment_lab.runners import onnx_runner, torch_runner

    transformers.logging.set_verbosity_error()
    folder, _ = locate_model(args.model_dir)
    reviews = held_out_reviews(max(args.n, 200), args.data, seed=0)
    if reviews is None:
        sys.exit("no IMDb copy found: pass --data /path/to/imdb or set IMDB_DIR")
    texts = reviews["text"].tolist()[: args.n]
    calls: dict[str, Any] = {}

    pipe = pipeline(
        "text-classification", model=str(folder), truncation=True, max_length=args.max_length, dtype=torch.float32
    )
    positive = {label: "POS" in label.upper() for label in pipe.model.config.id2label.values()}
    calls["reference: pipeline fp32"] = lambda t: int(positive[pipe(t)[0]["label"]])

    def predictor(**kwargs) -> Predictor:
        pred = Predictor.load(folder, **kwargs)
        pred.settings = pred.settings.model_copy(update={"max_length": args.max_length, "truncation": "head"})
        return pred

    def positive_label(pred: Predictor, text: str) -> int:
        return int(pred.predict([text])[0]["prob_pos"] > 0.5)

    def lever(name: str, pred: Predictor) -> None:
        calls[name] = lambda t: positive_label(pred, t)

    default = predictor()
    lever(f"Predictor default ({default.precision})", default)
    lever("Predictor fp32", predictor(precision="fp32"))
    own = Predictor.load(folder)
    lever(f"Predictor default, own truncation ({own.settings.max_length} {own.settings.truncation})", own)
    eager = predictor()
    eager.model.set_attn_implementation("eager")
    lever(f"{eager.precision}, eager attention", eager)
    threads = torch.get_num_threads()
    one_thread = predictor()

    def on_one_thread(text: str) -> int:
        torch.set_num_threads(1)
        try:
            return positive_label(one_thread, text)
        finally:
            torch.set_num_threads(threads)

    calls[f"{one_thread.precision}, 1 thread"] = on_one_thread

    int8 = predictor(precision="fp32")
    int8.model = torch.ao.quantization.quantize_dynamic(int8.model, {torch.nn.Linear}, dtype=torch.qint8)
    int8.runner = torch_runner(int8.model)
    lever("torch dynamic INT8 (Linear)", int8)

    if not args.skip_compile:
        start = time.perf_counter()
        compiled = Predictor.load(folder, compile=True)  # compiles for batch 1 and batch > 1 inside load
        compiled.settings = compiled.settings.model_copy(update={"max_length": args.max_length, "truncation": "head"})
        print(f"torch.compile: load and compile {time.perf_counter() - start:.1f} s", flush=True)
        lever(f"torch.compile (Inductor, freezing), {compiled.precision}", compiled)

    onnx_dir = folder / "onnx"
    tmp = tempfile.TemporaryDirectory()
    if (onnx_dir / "model.int8.onnx").is_file():
        ort = predictor(precision="fp32")
        ort.runner = onnx_runner(onnx_dir / "model.int8.onnx", spin=False)
        lever("ONNX Runtime INT8", ort)
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
        optimized.save_model_to_file(str(Path(tmp.name) / "optimized.onnx"))
        ort_opt = predictor(precision="fp32")
        ort_opt.runner = onnx_runner(Path(tmp.name) / "optimized.onnx", spin=False)
        lever("ONNX Runtime fp32, BERT graph optimizer", ort_opt)

    labels: dict[str, list[int]] = {name: [] for name in calls}

    def labelled(name: str, call):
        return lambda text: labels[name].append(call(text))

    print(f"timing {len(calls)} levers in turn on {len(texts)} reviews ...", flush=True)
    latencies = interleaved_latencies_ms({n: labelled(n, c) for n, c in calls.items()}, texts, texts[:3])
    tmp.cleanup()
    reference_labels = labels["reference: pipeline fp32"][-len(texts) :]
    rows: dict[str, dict] = {}
    for name, values in latencies.items():
        summary = latency_summary(values)
        own_labels = labels[name][-len(texts) :]  # after the warm-up calls
        agreement = sum(a == b for a, b in zip(own_labels, reference_labels, strict=True)) / len(texts)
        rows[name] = {"p50_ms": summary["p50"], "p95_ms": summary["p95"], "agreement": agreement}

    reference = rows["reference: pipeline fp32"]["p50_ms"]
    print(f"\n{'lever':50} {'p50 ms':>7} {'p95 ms':>7} {'x reference':>11} {'agreement':>9}")
    for name, r in rows.items():
        print(
            f"{name:50} {r['p50_ms']:7.1f} {r['p95_ms']:7.1f} {r['p50_ms'] / reference:11.2f} "
            f"{100 * r['agreement']:8.1f}%"
        )
    print(f"I2 target: <= 0.33x ({0.33 * reference:.1f} ms here); {args.n} reviews, head {args.max_length} tokens")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"params": vars(args), "threads": threads, "torch": torch.__version__, "rows": rows}
    report["load_1m"] = os.getloadavg()[0]  # a busy machine distorts every row
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
