"""The pretrain command: masked-LM pre-training on unlabelled texts -> a folder that `train` takes as model.name."""

from __future__ import annotations

import argparse

from sentiment_lab.cli import command
from sentiment_lab.config import load_config
from sentiment_lab.pretrain import pretrain


@command("pretrain")
def _pretrain(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, args.data)
    metrics = pretrain(cfg, args.out, overwrite=args.overwrite)
    texts = metrics["texts"]
    print(
        f"pre-trained {metrics['global_step']} steps in {metrics['train_runtime_s']:.0f} s on {texts['train']:,} "
        f"texts: train loss {metrics['train_loss']:.3f}, held-out perplexity {metrics['eval_perplexity']:.2f} "
        f"({texts['eval']:,} texts)"
    )
    print(
        f"dropped {texts['in_evaluation_sets']:,} texts that occur in the evaluation sets, {texts['repeated']:,} "
        f"repeated, {texts['empty']:,} empty, {texts['too_short']:,} too short"
    )
    print(f"results: {args.out}/ (metrics.json, model/); fine-tune it with --set model.name={args.out}/model")
    return 0
