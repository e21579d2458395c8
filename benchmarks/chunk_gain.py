"""Accuracy of `long_text: chunk` against plain truncation on the IMDb test reviews longer than N tokens.

A review longer than the model's window is either truncated as in training (head, tail or head_tail) or split
into overlapping windows whose logits are averaged (`Predictor(long_text="chunk")`). This script predicts the
same long reviews both ways and prints the accuracy of each, the gain and a paired McNemar test.

    python benchmarks/chunk_gain.py runs/quickstart/model                 # every test review over 512 tokens
    python benchmarks/chunk_gain.py runs/quickstart/model --min-tokens 256 --limit 500
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", help="model folder or run folder")
    p.add_argument("--data", default=os.environ.get("IMDB_DIR", str(REPO.parent / "shared" / "data" / "imdb")))
    p.add_argument("--min-tokens", type=int, default=512, help="reviews with more tokens than this are measured")
    p.add_argument("--limit", type=int, help="at most this many long reviews (a seeded sample)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "chunk_gain.json"))
    args = p.parse_args()

    from sentiment_lab.predictor import Predictor
    from sentiment_lab.stats import mcnemar_test

    test = pd.read_parquet(Path(args.data) / "test.parquet")
    truncate = Predictor.load(args.model_dir, batch_size=args.batch_size)
    lengths = np.array(
        [len(ids) for ids in truncate.tokenizer(test["text"].tolist(), add_special_tokens=True)["input_ids"]]
    )
    long = test[lengths > args.min_tokens]
    if args.limit and len(long) > args.limit:
        long = long.sample(n=args.limit, random_state=0)
    texts, labels = long["text"].tolist(), long["label"].to_numpy()
    print(f"{len(long)} of {len(test)} test reviews have more than {args.min_tokens} tokens")

    results = {}
    for mode in ("truncate", "chunk"):
        predictor = Predictor.load(args.model_dir, batch_size=args.batch_size, long_text=mode)
        start = time.perf_counter()
        preds = predictor.logits(texts).argmax(axis=1)
        results[mode] = {"preds": preds, "accuracy": float((preds == labels).mean()), "s": time.perf_counter() - start}
        print(f"{mode:9} accuracy {results[mode]['accuracy']:.4f}  ({results[mode]['s']:.0f} s)")

    t_ok = results["truncate"]["preds"] == labels
    c_ok = results["chunk"]["preds"] == labels
    test_result = mcnemar_test(t_ok, c_ok)
    gain = results["chunk"]["accuracy"] - results["truncate"]["accuracy"]
    print(f"chunk - truncate: {100 * gain:+.2f} pp; McNemar p = {test_result['p_value']:.3g}")
    report = {
        "model_dir": args.model_dir,
        "settings": {**truncate.info(), "min_tokens": args.min_tokens},
        "n_long": len(long),
        "n_test": len(test),
        "accuracy": {m: r["accuracy"] for m, r in results.items()},
        "seconds": {m: r["s"] for m, r in results.items()},
        "gain_pp": 100 * gain,
        "mcnemar": test_result,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
