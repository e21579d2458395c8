"""The select command: active learning, the pool texts most worth labelling next (selection.py)."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import command
from sentiment_lab.selection import select_for_labelling


@command("select")
def _select(args: argparse.Namespace) -> int:
    summary = select_for_labelling(
        args.run_dir,
        args.pool,
        args.n,
        args.strategy,
        args.out,
        seed=args.seed,
        text_column=args.text_column,
        id_column=args.id_column,
        exclude_train=args.exclude_train,
        batch_size=args.batch_size,
        candidates=args.candidates,
        overwrite=args.overwrite,
    )
    low, high = summary["probability_range"]
    whole = f" (the whole pool: no more than --n {summary['n']:,})" if summary["whole_pool"] else ""
    print(
        f"selected {summary['selected']:,} of {summary['usable']:,} pool texts by {summary['strategy']}{whole}; "
        f"their top probability {low:.2f}-{high:.2f}"
    )
    overlap = summary["overlap"]
    if overlap is None:
        print("overlap with the run's training data: not checked (its data could not be loaded)")
    else:
        dropped = ", dropped" if summary["excluded_train"] else ""
        print(f"overlap with the run's training data: {overlap['overlap']:,} pool texts{dropped}")
    print(f"wrote {summary['out']}: fill in the `label` column, then train on it (data.train_file: {summary['out']})")
    return 0
