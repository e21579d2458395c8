"""Masked-LM pre-training (`sentiment-lab pretrain`): model.name adapted to the domain's own texts, written as a
run-like folder whose model/ is a valid `model.name` for `train` (docs/pretraining.md).

Reads in the order it runs (`pretrain`): the recipe's checks; the masked-LM model (a bare encoder such as
all-MiniLM-L6-v2 gets a new MLM head, logged); the texts: the data section's training texts (pretrain.include_train)
and the files of pretrain.texts, cleaned as the data is, without empty and repeated texts and without every text
of the data section's validation and test splits and of pretrain.exclude (`unlabeled.select_texts`, counted), and
without texts too short to mask (MIN_TOKENS); a held-out share for the perplexity; then the Trainer with
DataCollatorForLanguageModeling, checkpoints and resume as `train` has them (`training.build_training_arguments`).

RUN_DIR: config.yaml (resolved) · train.log · history.csv · checkpoints/ (while unfinished) · model/ (the MLM
model with the encoder's pooler, and the tokenizer) · metrics.json (written last: the run is finished).
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.utils.tensorboard import SummaryWriter
from transformers import DataCollatorForLanguageModeling, Trainer, set_seed
from transformers.integrations import TensorBoardCallback

from sentiment_lab.config import ExperimentConfig, PretrainConfig, config_to_dict
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.errors import ConfigError, DataError, ModelError
from sentiment_lab.io import write_csv_atomic, write_json_atomic, write_text_atomic
from sentiment_lab.modeling import (
    MaskedLM,
    apply_freezing,
    build_masked_lm,
    count_parameters,
    load_tokenizer,
    optimizer_param_groups,
    resolve_model_name,
)
from sentiment_lab.precision import default_device, pad_multiple
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.rundir import (
    CHECKPOINTS,
    MODEL_DIR,
    check_run_dir,
    environment_info,
    last_checkpoint,
    reset_run_dir,
    run_lock,
)
from sentiment_lab.sidecar import TextSettings
from sentiment_lab.tokenization import preprocess_text, special_token_frame, tokenize_frame
from sentiment_lab.training import (
    CumulativeTrainTime,
    LengthBucketTrainer,
    LogToFileCallback,
    attach_file_log,
    build_training_arguments,
    deterministic_algorithms,
    history_frame,
    step_log,
)
from sentiment_lab.unlabeled import find_text_file, read_texts, select_texts

log = logging.getLogger("sentiment_lab")

# A text needs at least this many tokens of its own (besides [CLS]/[SEP]) to be learnt from: one masked token and
# one token of context. Shorter texts are dropped and counted; when none is left the run is refused.
MIN_TOKENS = 2


def check_recipe(cfg: ExperimentConfig) -> None:
    """Refuse settings of the fine-tuning recipe that mean nothing for masked-LM pre-training (rather than ignore
    them)."""
    t, m = cfg.training, cfg.model
    unused = [
        (key, why)
        for key, on, why in (
            ("model.lora", m.lora is not None, "pretrain trains the whole encoder"),
            ("model.dropout", m.dropout is not None, "it is the classifier's dropout and pretrain has no classifier"),
            ("training.class_weights", t.class_weights != "none", "masked tokens have no classes"),
            (
                "training.early_stopping_patience",
                t.early_stopping_patience is not None,
                "pretrain evaluates once, at the end (the perplexity), and keeps the last model",
            ),
            ("tokenization.padding", cfg.tokenization.padding != "dynamic", "the masking collator pads to the batch"),
            ("distill", cfg.distill is not None, "it is read by `sentiment-lab distill` only"),
            ("augment", cfg.augment is not None, "it augments the labelled texts of `sentiment-lab train`"),
        )
        if on
    ]
    if unused:
        listed = "; ".join(f"{key} ({why})" for key, why in unused)
        raise ConfigError(f"pretrain cannot use {listed}; remove {'them' if len(unused) > 1 else 'it'} (or set null)")
    others = [name for name in t.report_to if name != "tensorboard"]
    if others:
        raise ConfigError(
            f"pretrain reports to TensorBoard only; remove {', '.join(others)} from training.report_to (train.log and "
            "history.csv hold every logged step)"
        )


# The texts ---------------------------------------------------------------------------------------------------------


def evaluation_texts(cfg: ExperimentConfig, splits: DataSplits) -> tuple[set[str], str]:
    """Every text pre-training must not see: the data section's validation and test splits and pretrain.exclude's
    files (cleaned as the data is); and what they are, in words."""
    p = cfg.pretrain or PretrainConfig()
    texts = set(splits.val["text"]) | set(splits.test["text"])
    where = "the validation and test sets" if len(splits.val) else "the test set"
    for name in p.exclude:
        path = find_text_file(name, cfg.data.path)
        raw = read_texts(path, p.text_column, "pretrain.text_column")["text"]
        texts |= {preprocess_text(t, cfg.data.lowercase, cfg.data.strip_html) for t in raw}
    if p.exclude:
        where += f" or {', '.join(p.exclude)}"
    return texts, where


def collect_texts(cfg: ExperimentConfig, splits: DataSplits) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The texts to pre-train on (id, text): the training split's (pretrain.include_train), then each file of
    pretrain.texts, each source without its empty and repeated texts and every text of the evaluation sets; then
    without the texts an earlier source already gave, and a sample of pretrain.max_texts. Returns the counts too."""
    p = cfg.pretrain or PretrainConfig()
    evaluation, where = evaluation_texts(cfg, splits)
    sources: list[tuple[str, pd.DataFrame]] = []
    if p.include_train:
        sources.append(("train", splits.train[["id", "text"]].astype({"id": str})))
    for name in p.texts:
        path = find_text_file(name, cfg.data.path)
        sources.append((str(path), read_texts(path, p.text_column, "pretrain.text_column")))
    frames, facts = [], {}
    for source, raw in sources:
        log.info("texts of %s:", source)
        frame, counts = select_texts(raw, cfg.data, evaluation, where=where)
        frames.append(frame.assign(id=f"{Path(source).name}:" + frame["id"].astype(str)))
        facts[source] = counts
    frame = pd.concat(frames, ignore_index=True)
    in_earlier = frame["text"].duplicated(keep="first")
    frame = frame[~in_earlier]
    if p.max_texts is not None and p.max_texts < len(frame):
        frame = frame.sample(n=p.max_texts, random_state=cfg.data.split_seed).sort_index()
    frame = frame.reset_index(drop=True)
    summary = {
        "evaluation_sets": where,
        "sources": facts,
        "in_evaluation_sets": sum(c["in_evaluation_sets"] for c in facts.values()),
        "repeated": sum(c["repeated"] for c in facts.values()) + int(in_earlier.sum()),
        "empty": sum(c["empty"] for c in facts.values()),
        "used": len(frame),
    }
    if frame.empty:
        raise DataError(
            f"no texts left to pre-train on: of {sum(c['rows'] for c in facts.values())} read, {summary['empty']} "
            f"empty, {summary['repeated']} repeated and {summary['in_evaluation_sets']} in {where}; name a file with "
            "texts in pretrain.texts"
        )
    return frame, summary


def tokenize_texts(frame: pd.DataFrame, tokenizer: Any, settings: TextSettings) -> tuple[Any, int]:
    """A `datasets.Dataset` of input_ids/attention_mask, without the texts of fewer than MIN_TOKENS tokens of their
    own, and how many those were. No text left is one DataError naming the rule."""
    dataset, _ = tokenize_frame(frame, tokenizer, settings, with_labels=False)
    prefix, suffix = special_token_frame(tokenizer)
    frame_tokens = len(prefix) + len(suffix)
    keep = [i for i, ids in enumerate(dataset["input_ids"]) if len(ids) - frame_tokens >= MIN_TOKENS]
    if len(keep) < 2:
        raise DataError(
            f"{len(frame) - len(keep)} of {len(frame)} texts are too short to mask: a text needs at least {MIN_TOKENS} "
            f"tokens of its own (besides the special tokens) and pre-training needs 2 such texts (one held out for "
            "the perplexity); give longer texts"
        )
    return dataset.select(keep), len(frame) - len(keep)


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) row indices: a seeded random `fraction` of n rows (at least 1) held out, the rest in order."""
    rng = np.random.default_rng(seed)
    n_eval = min(max(1, round(n * fraction)), n - 1)
    eval_rows = sorted(rng.choice(n, size=n_eval, replace=False).tolist())
    chosen = set(eval_rows)
    return [i for i in range(n) if i not in chosen], eval_rows


# The recipe --------------------------------------------------------------------------------------------------------


def pretrain(
    cfg: ExperimentConfig, out_dir: str | Path, overwrite: bool = False, splits: DataSplits | None = None
) -> dict[str, Any]:
    """Masked-LM pre-training of model.name as configured (`cfg.pretrain`, default PretrainConfig()); returns the
    metrics written to OUT/metrics.json. OUT/model is a valid model.name for `train` (so is OUT).

    splits: the data section already prepared.
    """
    run_dir = Path(out_dir)
    resume = cfg.training.resume
    check_run_dir(run_dir, overwrite=overwrite, resume=resume)  # before anything slow
    cfg = cfg.model_copy(deep=True)
    if cfg.pretrain is None:
        cfg.pretrain = PretrainConfig()
    p = cfg.pretrain
    check_recipe(cfg)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)

    set_seed(cfg.training.seed)  # the new MLM head's initialisation
    mlm = build_masked_lm(cfg.model)  # first: a model type without a masked-LM class is refused before its tokenizer
    tokenizer = load_tokenizer(cfg.model.name)
    if tokenizer.mask_token is None:
        raise ModelError(f"the tokenizer of {cfg.model.name} has no mask token; masked-LM pre-training needs one")
    apply_freezing(mlm.model, cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    if mlm.new_weights:
        log.info(
            "%s has no masked-LM head: a new one is trained (%s initialised fresh; the decoder is tied to the word "
            "embeddings)",
            cfg.model.name,
            ", ".join(mlm.new_weights),
        )

    splits = splits or prepare_data(cfg.data)
    frame, texts = collect_texts(cfg, splits)
    settings = TextSettings.from_config(cfg)
    dataset, too_short = tokenize_texts(frame, tokenizer, settings)
    texts["too_short"] = too_short
    train_rows, eval_rows = held_out(len(dataset), p.eval_fraction, cfg.data.split_seed)
    texts.update({"train": len(train_rows), "eval": len(eval_rows)})
    device = default_device()
    precision = resolve_precision(cfg.training.precision, device, purpose="training")

    if overwrite:
        reset_run_dir(run_dir)
    with deterministic_algorithms(cfg.training.deterministic, device), run_lock(run_dir):
        handler = attach_file_log(run_dir)
        try:
            return _pretrain_in_run_dir(
                cfg, run_dir, mlm, tokenizer, dataset, train_rows, eval_rows, texts, precision, resume
            )
        finally:
            for name in ("sentiment_lab", "sentiment_lab.steps", "transformers"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()


def _pretrain_in_run_dir(
    cfg: ExperimentConfig,
    run_dir: Path,
    mlm: MaskedLM,
    tokenizer: Any,
    dataset: Any,
    train_rows: list[int],
    eval_rows: list[int],
    texts: dict[str, Any],
    precision: Any,
    resume: bool,
) -> dict[str, Any]:
    p = cfg.pretrain or PretrainConfig()
    model = mlm.model
    resolved = config_to_dict(cfg)
    resolved["resolved"] = {
        "model_path": resolve_model_name(cfg.model.name),
        "precision": precision.name,
        "precision_note": precision.note,
        "device": precision.device,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "parameters": count_parameters(model),
        "new_head_weights": mlm.new_weights,  # initialised fresh: the checkpoint had no masked-LM head
        "texts": texts,
        "environment": environment_info(),
    }
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    if precision.note:
        log.warning("%s", precision.note)
    log.info(
        "pretrain %s: %d texts (%d held out), dropped %d that occur in the evaluation sets, %d repeated, %d empty, "
        "%d too short",
        run_dir,
        texts["used"] - texts["too_short"],
        texts["eval"],
        texts["in_evaluation_sets"],
        texts["repeated"],
        texts["empty"],
        texts["too_short"],
    )

    if mlm.new_weights:  # logged before train.log existed: recorded there too
        step_log.info("new masked-LM head (initialised fresh): %s", ", ".join(mlm.new_weights))
    for source, counts in texts["sources"].items():
        step_log.info(
            "texts of %s: %d rows; dropped %d unlabelled texts that occur in %s (and %d empty, %d repeated); %d used",
            source,
            counts["rows"],
            counts["in_evaluation_sets"],
            texts["evaluation_sets"],
            counts["empty"],
            counts["repeated"],
            counts["used"],
        )

    checkpoint = last_checkpoint(run_dir) if resume else None
    clock = CumulativeTrainTime(CumulativeTrainTime.seconds_before(checkpoint))
    callbacks: list[Any] = [LogToFileCallback(), clock]
    if "tensorboard" in cfg.training.report_to:
        callbacks.insert(0, TensorBoardCallback(SummaryWriter(str(run_dir / "tensorboard"))))
    optimizers: tuple[Any, Any] = (None, None)
    if cfg.model.llrd is not None:
        t = cfg.training
        groups = optimizer_param_groups(model, t.learning_rate, t.weight_decay, cfg.model.llrd)
        betas = (t.adam_beta1, t.adam_beta2)
        optimizers = (torch.optim.AdamW(groups, lr=t.learning_rate, betas=betas, eps=t.adam_epsilon), None)
    trainer_class = LengthBucketTrainer if cfg.training.group_by_length else Trainer
    multiple = pad_multiple(cfg.tokenization.max_length, precision.reduced)  # as in `train`
    trainer = trainer_class(
        model=model,
        args=build_training_arguments(cfg, run_dir, precision, has_val=False),  # saves on the schedule, keeps the last
        train_dataset=dataset.select(train_rows),
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=p.mlm_probability, pad_to_multiple_of=multiple
        ),
        callbacks=callbacks,
        optimizers=optimizers,
    )
    if checkpoint:
        log.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    write_csv_atomic(run_dir / "history.csv", history_frame(trainer.state.log_history))

    # The same masks on every run of these texts: a collator with its own seeded generator
    trainer.data_collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=p.mlm_probability, seed=cfg.training.seed, pad_to_multiple_of=multiple
    )
    evaluated = trainer.evaluate(eval_dataset=dataset.select(eval_rows))
    eval_loss = float(evaluated["eval_loss"])
    log.info(
        "held-out masked-token loss %.4f, perplexity %.2f (%d texts)", eval_loss, math.exp(eval_loss), len(eval_rows)
    )

    _save_model(trainer, run_dir, mlm.pooler)
    train_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    metrics: dict[str, Any] = {
        "task": "masked-lm",
        "model": cfg.model.name,
        "precision": precision.name,
        "train_loss": float(result.metrics.get("train_loss", math.nan)),
        "last_logged_train_loss": float(train_losses[-1]) if train_losses else None,
        "eval_loss": eval_loss,
        "eval_perplexity": math.exp(eval_loss),
        "mlm_probability": p.mlm_probability,
        "new_head": bool(mlm.new_weights),
        "texts": texts,
        "dropped_in_evaluation_sets": texts["in_evaluation_sets"],
        "train_runtime_s": clock.before_s + float(result.metrics["train_runtime"]),  # every session
        "train_samples_per_s": float(result.metrics["train_samples_per_second"]),
        "global_step": int(trainer.state.global_step),
        "resumed_from": checkpoint.name if checkpoint else None,
    }
    write_json_atomic(run_dir / "metrics.json", metrics)
    if not cfg.training.keep_checkpoints:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    return metrics


def _save_model(trainer: Any, run_dir: Path, pooler: dict[str, torch.Tensor]) -> None:
    """The trained MLM model and tokenizer into RUN_DIR/model (written aside, then renamed), with the encoder's pooler
    added to its weights so a classifier fine-tuned from it starts from the pooler the encoder came with."""
    model_tmp = run_dir / ".model.tmp"
    if model_tmp.exists():
        shutil.rmtree(model_tmp)
    trainer.save_model(str(model_tmp))
    (model_tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.yaml has the recipe
    weights = model_tmp / "model.safetensors"
    if pooler and weights.is_file():
        state = load_file(str(weights))
        save_file({**state, **{k: v.contiguous() for k, v in pooler.items()}}, str(weights), metadata={"format": "pt"})
    elif pooler:  # sharded weights: the classifier's pooler will start fresh
        log.warning("the pooler was not added to the sharded weights in %s", model_tmp)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(run_dir / MODEL_DIR)
    model_tmp.rename(run_dir / MODEL_DIR)
