"""One training lever at a time: Trainer samples/s of MiniLM-L6 at batch 16 x L tokens, each setting in its own process.

Settings: precision (fp32, bf16 autocast) x attention dropout (the model's 0.1, or 0) x glibc allocator (default,
or MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set so freed activations stay mapped). Random token ids, no
padding, no evaluation: this measures the training step only. Prints a table and writes JSON.

    python benchmarks/train_levers.py                 # 256 tokens, 10 steps per setting (about 4 minutes, 2 cores)
    python benchmarks/train_levers.py --length 512 --steps 6
    python benchmarks/train_levers.py --scaling 128,256,512   # then the default setting (bf16, attention dropout 0)
                                                              # at each length: how cost grows with max_length
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from train_throughput import environment

REPO = Path(__file__).resolve().parents[1]
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}


def child(args: argparse.Namespace) -> None:
    import datasets
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

    from sentiment_lab.modeling import resolve_model_name

    transformers.logging.set_verbosity_error()
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_name(args.model),
        num_labels=2,
        dtype=torch.float32,
        attention_probs_dropout_prob=args.attention_dropout,
    )
    n = (args.steps + 1) * args.batch_size
    gen = torch.Generator().manual_seed(0)
    ds = datasets.Dataset.from_dict(
        {
            "input_ids": torch.randint(1000, 20000, (n, args.length), generator=gen).tolist(),
            "attention_mask": [[1] * args.length] * n,
            "labels": torch.randint(0, 2, (n,), generator=gen).tolist(),
        }
    )

    class Timer(TrainerCallback):
        """Times every step after the first (warm-up), and counts page faults over them."""

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == 1:
                self.start = time.perf_counter()
                self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def on_train_end(self, a, state, control, **kw):
            steps = state.global_step - 1
            self.result = {
                "samples_per_s": steps * args.batch_size / (time.perf_counter() - self.start),
                "page_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults) / steps,
            }

    timer = Timer()
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / "levers"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        bf16=args.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        disable_tqdm=True,
    )
    Trainer(model=model, args=targs, train_dataset=ds, callbacks=[timer]).train()
    print("RESULT " + json.dumps(timer.result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="timed steps per setting (after one warm-up step)")
    p.add_argument("--scaling", help="comma-separated lengths for the default setting alone (e.g. 128,256,512)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_levers.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--attention-dropout", type=float, default=0.1, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default="/tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    settings = [
        (precision, dropout, malloc, args.length)
        for precision, dropout, malloc in itertools.product(("fp32", "bf16"), (0.1, 0.0), (False, True))
        if not (malloc and dropout != 0.0)  # the allocator lever is measured on top of the faster setting only
    ]
    if args.scaling:
        settings += [("bf16", 0.0, False, int(n)) for n in args.scaling.split(",")]
    rows = []
    for precision, dropout, malloc, length in settings:
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(MALLOC_ENV if malloc else {})}
        cmd = [sys.executable, __file__, "--child", f"--precision={precision}", f"--attention-dropout={dropout}"]
        cmd += [f"--model={args.model}", f"--length={length}", f"--batch-size={args.batch_size}"]
        cmd += [f"--steps={args.steps}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"{precision}/{dropout} failed:\n{proc.stderr[-3000:]}")
        row = {"precision": precision, "attention_dropout": dropout, "malloc_env": malloc, "length": length}
        row.update(json.loads(line[len("RESULT ") :]))
        rows.append(row)
        print(
            f"{length:4} tokens {precision:5} attention dropout {dropout:.1f} malloc env {'on ' if malloc else 'off'}: "
            f"{row['samples_per_s']:6.2f} samples/s, {row['page_faults_per_step']:9.0f} page faults/step",
            flush=True,
        )
    base = rows[0]["samples_per_s"]
    for row in rows:
        row["ratio_vs_fp32_default"] = row["samples_per_s"] / base
    report = {"params": {k: v for k, v in vars(args).items() if not k.startswith(("child", "tmp"))}, "rows": rows}
    report["environment"] = environment()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
