"""The ensemble command: finished runs -> a run-like folder averaging their calibrated probabilities."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import command
from sentiment_lab.cli.common import ensemble_table
from sentiment_lab.ensemble import make_ensemble


@command("ensemble")
def _ensemble(args: argparse.Namespace) -> int:
    metrics = make_ensemble(args.run_dirs, args.out, weights=args.weights, overwrite=args.overwrite)
    print(ensemble_table(metrics))
    out = metrics["out_dir"]
    print(f"ensemble: {out}/ (ensemble.json, metrics.json, predictions.parquet); use it like a run folder:")
    print(f'  sentiment-lab predict {out} "a text" | serve {out} | evaluate {out} | report {out} | compare ...')
    return 0
