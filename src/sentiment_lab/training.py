"""The training recipe: config -> data -> model -> Trainer -> evaluation -> run folder.

Reads in the order it runs. The run folder it writes is the contract for every later stage:
config.yaml, train.log, history.csv, tensorboard/, checkpoints/, model/, predictions.parquet,
val_predictions.parquet, metrics.json (last: its presence marks the run finished).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from accelerate import PartialState
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import Sampler
from torch.utils.tensorboard import SummaryWriter
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import ExportableState

from sentiment_lab.augment import Augmenter, cached_augmentation, load_augmenter
from sentiment_lab.baselines import fit_baselines
from sentiment_lab.config import ExperimentConfig, config_to_dict
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.errors import ConfigError
from sentiment_lab.io import write_csv_atomic, write_json_atomic, write_parquet_atomic, write_text_atomic
from sentiment_lab.lora import apply_lora, merge_for_save, parameter_counts, save_adapter, target_modules
from sentiment_lab.metrics import classification_metrics, not_learned_warnings, softmax, trainer_compute_metrics
from sentiment_lab.model_card import write_model_card
from sentiment_lab.modeling import (
    architecture_names,
    build_model,
    count_parameters,
    load_tokenizer,
    optimizer_param_groups,
    resolve_attention_dropout,
    resolve_model_name,
)
from sentiment_lab.precision import (
    ResolvedPrecision,
    default_device,
    pad_multiple,
    release_freed_memory,
)
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.rundir import (
    ADAPTER_DIR,
    CHECKPOINTS,
    MODEL_DIR,
    check_run_dir,
    environment_info,
    last_checkpoint,
    reset_run_dir,
    run_lock,
)
from sentiment_lab.runners import score_split
from sentiment_lab.sidecar import ModelSidecar, TextSettings, write_sidecar
from sentiment_lab.tokenization import tokenize_frame
from sentiment_lab.tracking import MLflowRun, MLflowStepMetrics, TrackingGroup, check_trackers, trainer_report_to

log = logging.getLogger("sentiment_lab")


def is_main_process() -> bool:
    """True in the process that writes the run folder: the only one, or rank 0 under torchrun / accelerate launch."""

    # The same state object the Trainer uses (it re-creates it from TrainingArguments); no environment parsing here.
    return PartialState(cpu=not torch.cuda.is_available()).is_main_process


def _validate_schedule(cfg: ExperimentConfig) -> None:
    t = cfg.training
    save_steps = t.save_steps or t.eval_steps
    if t.eval_strategy == "steps" and save_steps % t.eval_steps != 0:
        raise ConfigError(
            f"training.save_steps ({save_steps}) must be a multiple of training.eval_steps ({t.eval_steps}) "
            "so the best checkpoint can be kept"
        )


def build_training_arguments(
    cfg: ExperimentConfig, run_dir: Path, precision: ResolvedPrecision, has_val: bool = True
) -> Any:
    """TrainingArguments of the recipe (transformers 5 names).

    has_val: False when the data has no validation split (data.val_fraction 0): nothing is evaluated during
    training, checkpoints are still saved on the same schedule (to resume), and the final model is the last one.
    """
    t = cfg.training
    metric = t.metric_for_best_model
    return TrainingArguments(
        output_dir=str(run_dir / CHECKPOINTS),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio if t.warmup_ratio is not None else t.warmup_steps,
        weight_decay=t.weight_decay,
        adam_beta1=t.adam_beta1,
        adam_beta2=t.adam_beta2,
        adam_epsilon=t.adam_epsilon,
        max_grad_norm=t.max_grad_norm,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=precision.device == "cpu",
        eval_strategy=t.eval_strategy if has_val else "no",
        eval_steps=t.eval_steps,
        save_strategy=t.eval_strategy,
        save_steps=t.save_steps or t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_val,
        metric_for_best_model=f"eval_{metric}" if has_val else None,
        greater_is_better=metric != "loss",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        report_to=trainer_report_to(t.report_to),  # TensorBoard and MLflow are the recipe's own callbacks
        seed=t.seed,
        data_seed=t.seed,
        train_sampling_strategy="random",  # group_by_length: LengthBucketTrainer's sampler replaces it
        dataloader_num_workers=0,
    )


class ShuffledLengthBuckets(Sampler[int]):
    """Length-grouped batches in random order: the padding saving of grouping, without its ordering.

    transformers' `group_by_length` sorts each mega-batch of up to 50 batches longest first, so training walks
    from long to short reviews again and again and ends on the shortest reviews of the last mega-batch. After
    64 steps that cost 6-8 pp validation accuracy at two of three seeds (docs/performance.md, T1). Here the
    reviews are shuffled, sorted by length within each mega-batch and cut into batches as there; then the batches
    themselves are shuffled, except that the batch of the longest reviews comes first. The one short batch, if
    any, goes last, so that consecutive `batch_size` indices always form one batch. Draws from torch's global
    generator, as transformers' samplers do, so a resumed run replays the same order.
    """

    def __init__(self, lengths: list[int], batch_size: int, mega_batch_mult: int = 50) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_size = batch_size * mega_batch_mult

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        batches: list[list[int]] = []
        for start in range(0, len(order), self.mega_batch_size):
            mega = sorted(order[start : start + self.mega_batch_size], key=self.lengths.__getitem__)
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        full = [full[k] for k in torch.randperm(len(full)).tolist()]
        if full:  # the longest batch first, as transformers does: memory peaks (or fails) at once, not midway
            longest = max(range(len(full)), key=lambda k: self.lengths[full[k][-1]])
            full[0], full[longest] = full[longest], full[0]
        for batch in full + short:
            yield from batch


class LengthBucketTrainer(Trainer):
    """Trainer whose training sampler is `ShuffledLengthBuckets` (token counts of `input_ids`)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return ShuffledLengthBuckets([len(ids) for ids in dataset["input_ids"]], self.args.train_batch_size)


TEACHER_LOGITS = "teacher_logits"  # the training column of a student's soft targets (`StudentRecipe`)

# (logits, labels, the teacher's logits of the batch or None, class weights or None) -> the batch's loss.
LossFunction = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, weight: torch.Tensor | None
) -> torch.Tensor:
    """The recipe's loss: cross-entropy, weighted per class when weights are given (teacher logits unused)."""
    return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)


class WeightedLossTrainer(Trainer):
    """Trainer whose loss is cross-entropy weighted per class (`training.class_weights`), or another loss function.

    class_weights: one weight per class id, or None. The loss is the weighted mean of each batch, as torch's
    `cross_entropy(weight=...)` computes it; the Trainer divides it by the gradient accumulation steps.
    loss: replaces the cross-entropy (`distill`'s hard + soft loss); it gets the batch's TEACHER_LOGITS column when
    the dataset has one (training), None otherwise (validation).
    """

    loss_is_scaled_for_ga = False
    loss_function: LossFunction = staticmethod(weighted_cross_entropy)

    def __init__(
        self, *args: Any, class_weights: torch.Tensor | None, loss: LossFunction | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        if loss is not None:
            self.loss_function = loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        teacher_logits = inputs.pop(TEACHER_LOGITS, None)
        outputs = model(**inputs)
        logits = outputs["logits"]
        weight = None if self.class_weights is None else self.class_weights.to(logits.device, torch.float32)
        loss = self.loss_function(logits, labels, teacher_logits, weight)
        return (loss, outputs) if return_outputs else loss


class WeightedLengthBucketTrainer(WeightedLossTrainer, LengthBucketTrainer):
    """Weighted cross-entropy (`WeightedLossTrainer`) over length-grouped batches (`LengthBucketTrainer`)."""


@dataclass
class SoftTargets:
    """The rows a student trains on and its teacher's logits for each."""

    frame: pd.DataFrame  # the training split, then any unlabelled rows (label -100: no hard-label loss)
    logits: np.ndarray  # (rows, classes), in the frame's order


@dataclass
class StudentRecipe:
    """What `distill` swaps into the recipe: the student model and tokenizer (instead of `model.name`), the loss,
    and its soft targets, made in the locked run folder (`distill` caches the teacher's logits there).

    summary: facts of the distillation, written to config.yaml (`resolved.distill`) and metrics.json (`distill`);
    `soft_targets` may add to it.
    """

    model: Any
    tokenizer: Any
    loss: LossFunction
    soft_targets: Callable[[Path], SoftTargets]
    summary: dict[str, Any] = field(default_factory=dict)


def resolve_class_weights(setting: str | list[float], labels: np.ndarray, label_names: list[str]) -> np.ndarray | None:
    """The per-class loss weights of `training.class_weights`: None for none; balanced is sklearn's
    `compute_class_weight("balanced")` on the training labels (n / (K * count of the class)); a list is checked
    to have one weight per class."""
    k = len(label_names)
    if setting == "none":
        return None
    if setting == "balanced":
        missing = [label_names[i] for i in range(k) if i not in set(labels.tolist())]
        if missing:
            raise ConfigError(
                f"training.class_weights: balanced needs every class in the training data; {missing} has none "
                "(give a list of weights, or fix the data)"
            )
        return compute_class_weight("balanced", classes=np.arange(k), y=labels)
    if len(setting) != k:
        raise ConfigError(
            f"training.class_weights lists {len(setting)} weights but the data has {k} classes "
            f"({', '.join(label_names)}); give one weight per class in that order, or use balanced"
        )
    return np.asarray(setting, dtype=np.float64)


def history_frame(log_history: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per logged step: training loss/lr/grad norm and validation metrics merged by step."""
    rename = {"loss": "train_loss", "learning_rate": "lr", "eval_loss": "val_loss"}
    rows: dict[int, dict[str, Any]] = {}
    for entry in log_history:
        if "step" not in entry or "train_runtime" in entry:
            continue
        row = rows.setdefault(int(entry["step"]), {"step": int(entry["step"])})
        for key, value in entry.items():
            if key == "step" or key.endswith(("_runtime", "_per_second")):
                continue
            name = rename.get(key, key.replace("eval_", "val_", 1) if key.startswith("eval_") else key)
            row[name] = value
    frame = pd.DataFrame(sorted(rows.values(), key=lambda r: r["step"]))
    front = [c for c in ("step", "epoch", "train_loss", "lr", "grad_norm", "val_loss") if c in frame.columns]
    return frame[front + [c for c in frame.columns if c not in front]]


step_log = logging.getLogger("sentiment_lab.steps")  # train.log only: the console has the progress bar
step_log.propagate = False


def attach_file_log(run_dir: Path) -> logging.Handler:
    """Mirror our logs, the step log and transformers' into RUN_DIR/train.log; remove the handler when done."""
    handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("sentiment_lab", "sentiment_lab.steps", "transformers"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("sentiment_lab").setLevel(logging.INFO)
    step_log.setLevel(logging.INFO)
    return handler


# Deterministic cuBLAS needs a fixed workspace (PyTorch's reproducibility notes: this value, or :16:8, slower), set
# before the process's first cuBLAS call; `train` sets it before its own first one unless the user set it already.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device) -> Iterator[None]:
    """`training.deterministic`: torch's deterministic kernels (and cuDNN's) for the run, the previous mode after.

    The settings of transformers' `enable_full_determinism`, except that an op with no deterministic kernel warns
    (warn_only) instead of stopping a long GPU run halfway, CUDA_LAUNCH_BLOCKING (which serializes every kernel)
    stays unset, and the process is not left deterministic for whatever runs next (a sweep's other runs).
    """
    if not enabled:
        yield
        return
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


class LogToFileCallback(TrainerCallback):
    """Mirrors every Trainer log line into train.log (main process only)."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if state.is_world_process_zero and logs:
            step_log.info("step %d: %s", state.global_step, logs)


class CumulativeTrainTime(TrainerCallback, ExportableState):
    """Training seconds over every session of a resumed run.

    The Trainer's `train_runtime` counts only the session that finished; a run killed and resumed twice would claim
    the last session's minutes as its cost. An `ExportableState` callback's `state()` is saved by the Trainer into
    each checkpoint's trainer_state.json, so the seconds spent up to a checkpoint travel with it
    (`seconds_before(checkpoint)` reads them back on resume).
    """

    def __init__(self, before_s: float = 0.0) -> None:
        self.before_s = before_s
        self._start = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self.before_s + time.perf_counter() - self._start

    def state(self) -> dict[str, Any]:
        return {"args": {"before_s": self.seconds}, "attributes": {}}

    @classmethod
    def seconds_before(cls, checkpoint: Path | None) -> float:
        """Training seconds spent up to a checkpoint (0 without one, or for a checkpoint written before they were
        kept)."""
        if checkpoint is None:
            return 0.0
        try:
            saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"][cls.__name__]
            return float(saved["args"]["before_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0


def train(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    splits: DataSplits | None = None,
    callbacks: list[Any] | None = None,
    tracking: TrackingGroup | None = None,
    student: StudentRecipe | None = None,
) -> dict[str, Any]:
    """Fine-tune and evaluate as configured; returns the metrics written to RUN_DIR/metrics.json.

    splits: data already prepared (a sweep or a tuning study reuses it across runs).
    callbacks: extra `transformers.TrainerCallback`s (e.g. Optuna pruning), added after ours.
    tracking: the MLflow experiment and tags of the run (a sweep or study groups its runs); default the config's name.
    student: `distill`'s model, tokenizer, loss and soft targets (`distill.distill` builds it).
    """
    if cfg.distill is not None and student is None:
        raise ConfigError(
            "the config has a distill: section, which only `sentiment-lab distill TEACHER --config CONFIG --out DIR` "
            "reads; run that, or remove the section to train without a teacher"
        )
    if cfg.pretrain is not None:
        raise ConfigError(
            "the config has a pretrain: section, which only `sentiment-lab pretrain --config CONFIG --out DIR` reads; "
            "run that, or remove the section to fine-tune (from a pre-trained folder: --set model.name=DIR/model)"
        )
    if cfg.augment is not None and student is not None:  # distill() refuses it first; this guards other callers
        raise ConfigError("a student (distillation) cannot train on augmented rows; remove the augment: section")
    run_dir = Path(out_dir)
    resume = cfg.training.resume
    main = is_main_process()  # under DDP every rank trains, only rank 0 touches the run folder
    if main:
        check_run_dir(run_dir, overwrite=overwrite, resume=resume)
    _validate_schedule(cfg)
    check_trackers(cfg.training.report_to)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)

    # Everything a user can get wrong is checked before the run folder is touched.
    splits = splits or prepare_data(cfg.data)
    class_weights = resolve_class_weights(
        cfg.training.class_weights, splits.train["label"].to_numpy(), splits.label_names
    )
    # a missing folder, a bare encoder without an MLM head: refused before the run folder is touched
    augmenter = load_augmenter(cfg.augment, cfg.tokenization.max_length) if cfg.augment else None
    tokenizer = student.tokenizer if student else load_tokenizer(cfg.model.name)
    # random, numpy, torch and every CUDA device; the Trainer seeds again (same seed) and data_seed orders batches
    set_seed(cfg.training.seed)
    model = student.model if student else build_model(cfg.model, label_names=splits.label_names)
    if cfg.model.lora is not None:  # peft missing or a target the model lacks: refused here, before the run folder
        model = apply_lora(model, cfg.model.lora, architecture_names(model.config.model_type).lora_targets)
    settings = TextSettings.from_config(cfg)
    device = default_device()
    precision = resolve_precision(cfg.training.precision, device, purpose="training")

    if overwrite and main:
        reset_run_dir(run_dir)
    # Not TrainingArguments(full_determinism=True): the Trainer would call enable_full_determinism (see above).
    with (
        deterministic_algorithms(cfg.training.deterministic, device),
        run_lock(run_dir) if main else contextlib.nullcontext(),
    ):
        handler = attach_file_log(run_dir) if main else logging.NullHandler()
        group = tracking or TrackingGroup()
        use_mlflow = main and "mlflow" in cfg.training.report_to
        mlflow_run = MLflowRun(run_dir, group.experiment or cfg.name, group.tags) if use_mlflow else None
        try:
            return _train_in_run_dir(
                cfg,
                run_dir,
                splits,
                tokenizer,
                model,
                settings,
                precision,
                resume,
                callbacks or [],
                mlflow_run,
                class_weights=class_weights,
                student=student,
                augmenter=augmenter,
            )
        except BaseException:
            if mlflow_run:
                mlflow_run.abort()
            raise
        finally:
            for name in ("sentiment_lab", "sentiment_lab.steps", "transformers"):
                logging.getLogger(name).removeHandler(handler)
            handler.close()


def _train_in_run_dir(
    cfg: ExperimentConfig,
    run_dir: Path,
    splits: DataSplits,
    tokenizer: Any,
    model: Any,
    settings: TextSettings,
    precision: ResolvedPrecision,
    resume: bool,
    extra_callbacks: list[Any],
    mlflow_run: MLflowRun | None = None,
    class_weights: np.ndarray | None = None,
    student: StudentRecipe | None = None,
    augmenter: Augmenter | None = None,
) -> dict[str, Any]:
    soft = student.soft_targets(run_dir) if student else None  # first: its facts go into config.yaml
    resolved = config_to_dict(cfg)
    resolved["resolved"] = {
        "model_path": resolve_model_name(cfg.model.name),
        "precision": precision.name,
        "precision_note": precision.note,  # set when the requested precision fell back on this device
        "attention_dropout": resolve_attention_dropout(cfg.model.attention_dropout),  # None: the model's own
        "device": precision.device,
        # training.deterministic as applied: torch's deterministic kernels on (warn-only) for this run
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "threads": torch.get_num_threads(),
        "parameters": parameter_counts(model) if cfg.model.lora is not None else count_parameters(model),
        "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "cleaning": splits.cleaning,
        "environment": environment_info(),
    }
    if cfg.model.lora is not None:  # `auto` resolved for this architecture
        resolved["resolved"]["lora_target_modules"] = target_modules(model)
    if len(splits.label_names) > 2 or cfg.data.label_names:  # binary IMDb runs keep their config.yaml as it was
        resolved["resolved"]["label_names"] = splits.label_names
    if class_weights is not None:
        resolved["resolved"]["class_weights"] = [float(w) for w in class_weights]
    if student is not None:
        resolved["resolved"]["distill"] = student.summary
    if precision.note:  # here, once the run's train.log is attached, and on the console
        log.warning("%s", precision.note)
    log.info("run %s: train %d, val %d, test %d reviews", run_dir, len(splits.train), len(splits.val), len(splits.test))
    if cfg.model.lora is not None:
        counts = resolved["resolved"]["parameters"]
        log.info(
            "LoRA r=%d on %s: %d of %d parameters train (%.2f%%: the adapters and the classifier head)",
            cfg.model.lora.r,
            ", ".join(resolved["resolved"]["lora_target_modules"]),
            counts["trainable"],
            counts["total"],
            100 * counts["trainable"] / counts["total"],
        )

    max_windows = cfg.tokenization.max_windows
    train_frame = soft.frame if soft else splits.train
    augmented = None
    if augmenter is not None:
        state = PartialState(cpu=not torch.cuda.is_available())
        # rank 0 makes the rows on its own device and writes them; the other ranks wait, then read the same file
        with state.main_process_first():
            rows, augmented = cached_augmentation(
                run_dir, splits.train, augmenter, cfg.training.seed, state.is_main_process, device=state.device
            )
        train_frame = pd.concat([splits.train, rows[splits.train.columns]], ignore_index=True)
        resolved["resolved"]["augment"] = augmented
        augmenter.model = None  # its memory back before training
    train_ds, train_owners = tokenize_frame(train_frame, tokenizer, settings, True, max_windows)
    if soft:  # in chunk mode every window of a text learns from the teacher's logits of the whole text
        train_ds = train_ds.add_column(TEACHER_LOGITS, soft.logits[train_owners].astype(np.float32).tolist())
    has_val = len(splits.val) > 0
    val_ds, val_owners = tokenize_frame(splits.val, tokenizer, settings) if has_val else (None, None)
    if settings.long_text == "chunk":
        log.info(
            "long_text chunk: %d training texts -> %d windows%s",
            len(train_frame),
            len(train_ds),
            f" (at most {max_windows} per text)" if max_windows else "",
        )
        resolved["resolved"]["data"]["train_windows"] = len(train_ds)  # the sequences the epochs really take
    if is_main_process():
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    pad_to = "max_length" if cfg.tokenization.padding == "max_length" else "longest"
    multiple = pad_multiple(settings.max_length, precision.reduced)  # bounds oneDNN's cache
    collator = DataCollatorWithPadding(
        tokenizer, padding=pad_to, max_length=settings.max_length, pad_to_multiple_of=multiple
    )

    optimizers: tuple[Any, Any] = (None, None)
    if cfg.model.llrd is not None:
        t = cfg.training
        groups = optimizer_param_groups(model, t.learning_rate, t.weight_decay, cfg.model.llrd)
        optimizers = (
            torch.optim.AdamW(groups, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon),
            None,
        )

    callbacks: list[Any] = [LogToFileCallback()]
    # a SummaryWriter creates its event file at once: one writer, one file
    if is_main_process() and "tensorboard" in cfg.training.report_to:
        callbacks.insert(0, TensorBoardCallback(SummaryWriter(str(run_dir / "tensorboard"))))
    if mlflow_run:
        mlflow_run.start(resolved)  # a store that cannot be written: one warning, and the run goes on
        if mlflow_run.active:
            callbacks.append(MLflowStepMetrics(mlflow_run))
    if cfg.training.early_stopping_patience and has_val:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.training.early_stopping_patience))
    callbacks.extend(extra_callbacks)
    checkpoint = last_checkpoint(run_dir) if resume else None
    clock = CumulativeTrainTime(CumulativeTrainTime.seconds_before(checkpoint))
    callbacks.append(clock)
    args = build_training_arguments(cfg, run_dir, precision, has_val)
    if class_weights is None and student is None:
        trainer_class, weighting = (LengthBucketTrainer if cfg.training.group_by_length else Trainer), {}
    else:
        trainer_class = WeightedLengthBucketTrainer if cfg.training.group_by_length else WeightedLossTrainer
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        weighting = {"class_weights": weights, "loss": student.loss if student else None}
        args.remove_unused_columns = False  # TEACHER_LOGITS is no argument of the model; the loss takes it
    trainer = trainer_class(
        **weighting,
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=collator,
        # chunk mode: validation metrics on the reviews (their windows' logits averaged), not on the windows
        compute_metrics=partial(trainer_compute_metrics, owners=val_owners),
        callbacks=callbacks,
        optimizers=optimizers,
    )

    if checkpoint:
        log.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    history = history_frame(trainer.state.log_history)
    if trainer.is_world_process_zero():
        write_csv_atomic(run_dir / "history.csv", history)

    best_step = trainer.state.best_global_step or trainer.state.global_step
    metrics: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        losses = history["train_loss"].dropna() if "train_loss" in history else pd.Series(dtype=float)
        # a student's loss mixes in T^2 * KL to its teacher: not on the ln K scale of cross-entropy
        final_loss = float(losses.iloc[-1]) if len(losses) and student is None else None
        metrics = _evaluate_and_save(cfg, run_dir, trainer, splits, tokenizer, settings, precision, final_loss)
        metrics.update(
            {
                # every session of a resumed run (the Trainer's train_runtime is the last session's only)
                "train_runtime_s": clock.before_s + float(result.metrics["train_runtime"]),
                "train_samples_per_s": float(result.metrics["train_samples_per_second"]),
                "best_step": int(best_step),
                "global_step": int(trainer.state.global_step),
                "resumed_from": checkpoint.name if checkpoint else None,
            }
        )
        if student is not None:
            metrics["distill"] = student.summary
        if augmented is not None:
            metrics["augment"] = augmented
        write_model_card(run_dir / MODEL_DIR, cfg, metrics)
        write_json_atomic(run_dir / "metrics.json", metrics)
        if not cfg.training.keep_checkpoints:
            shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        if mlflow_run:  # after metrics.json: the run folder is complete whatever the store does
            mlflow_run.finish(metrics, int(trainer.state.global_step))
    return metrics


def _evaluate_and_save(
    cfg: ExperimentConfig,
    run_dir: Path,
    trainer: Any,
    splits: DataSplits,
    tokenizer: Any,
    settings: TextSettings,
    precision: ResolvedPrecision,
    final_train_loss: float | None,
) -> dict[str, Any]:
    """Save the best model, predict validation and test, compute metrics (and baselines), and warn (in the log and
    `metrics["warnings"]`) when the model did not leave chance level.

    A LoRA model is saved twice: its adapter alone in model/adapter/ (peft's format, the head included), then merged
    into a plain transformers model in model/, which is also the model evaluated here, so the test metrics are
    those of the saved folder.
    """
    model_tmp = run_dir / ".model.tmp"
    if model_tmp.exists():
        shutil.rmtree(model_tmp)
    model = trainer.model
    lora: dict[str, Any] | None = None
    if cfg.model.lora is not None:
        counts = parameter_counts(model)
        lora = {
            "r": cfg.model.lora.r,
            "target_modules": target_modules(model),
            "trainable_parameters": counts["trainable"],
            "total_parameters": counts["total"],
            # first: merging changes the LoRA model in place
            "adapter_bytes": save_adapter(model, model_tmp / ADAPTER_DIR),
        }
        model = merge_for_save(model)
        model.save_pretrained(str(model_tmp))
        tokenizer.save_pretrained(str(model_tmp))
    else:
        trainer.save_model(str(model_tmp))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    write_sidecar(model_tmp, ModelSidecar(text=settings, labels=labels, ordinal=cfg.data.ordinal))
    (model_tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml has the recipe
    if (run_dir / MODEL_DIR).exists():
        shutil.rmtree(run_dir / MODEL_DIR)
    model_tmp.rename(run_dir / MODEL_DIR)

    metrics: dict[str, Any] = {
        "precision": precision.name,
        "data": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }
    if len(splits.label_names) > 2:  # binary metrics.json stays as it was: negative/positive
        metrics["labels"] = splits.label_names
    if lora is not None:
        metrics["lora"] = lora
    trainer.optimizer = trainer.lr_scheduler = None  # their states are not needed to score
    release_freed_memory()  # the training step's activations, held by glibc, before scoring (P1)
    for split, name in (("val", "val_predictions.parquet"), ("test", "predictions.parquet")):
        df = getattr(splits, split)
        if df.empty:  # no validation split: no val metrics, no val_predictions.parquet
            continue
        preds, logits, elapsed = score_split(model, tokenizer, df, settings, precision, cfg.training.eval_batch_size)
        write_parquet_atomic(run_dir / name, preds)
        metrics[split] = classification_metrics(preds["label"], preds["pred"], splits.label_names, cfg.data.ordinal)
        metrics[split]["loss"] = _nll(logits, df["label"].to_numpy())
        if split == "test":
            metrics["eval_samples_per_s"] = len(df) / elapsed if elapsed > 0 else math.nan
        if "warnings" not in metrics:  # judged on validation, or on test when there is no validation split
            shown = "validation" if split == "val" else split
            metrics["warnings"] = not_learned_warnings(final_train_loss, preds["label"], preds["pred"], labels, shown)
            for warning in metrics["warnings"]:
                log.warning("%s", warning)
    if cfg.evaluation.baselines:
        baselines = fit_baselines(splits, ordinal=cfg.data.ordinal)
        metrics["baselines"] = {name: res["metrics"] for name, res in baselines.items()}
    return metrics


def _nll(logits: np.ndarray, labels: np.ndarray) -> float:
    probs = softmax(logits.astype(np.float64))
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
