"""Distillation: a teacher (run, model or ensemble folder) -> a smaller student, trained as an ordinary run folder.

Reads in the order it runs (`distill`): the teacher and its classes, checked against the data's; the optional
unlabelled texts, without those that occur in the validation or test split; the student, by default the
teacher's own architecture keeping K of its layers (layer-drop initialisation: embeddings, the chosen blocks
renumbered, pooler and classifier copied) and optionally only the vocabulary rows the training texts use; then
the training recipe (`training.train`) with the loss alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student)
at temperature T. The teacher's logits are computed once and cached in the run folder (TEACHER_LOGITS_FILE, with
TEACHER_LOGITS_INFO naming the teacher's fingerprint and the texts); a resumed run reuses them when both match and
recomputes them otherwise. docs/compression.md.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from sentiment_lab.config import DistillConfig, ExperimentConfig
from sentiment_lab.data import DataSplits, prepare_data
from sentiment_lab.ensemble import member_labels
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.io import write_json_atomic, write_parquet_atomic
from sentiment_lab.modeling import build_model, count_parameters, encoder_layers, load_classifier, load_tokenizer
from sentiment_lab.predictor import Predictor
from sentiment_lab.rundir import (
    FINISHED_MARKER,
    check_run_dir,
    fingerprint_of,
    is_ensemble,
    locate_model,
    model_file_digests,
    rows_digest,
    verify_ensemble,
)
from sentiment_lab.tokenization import bare_token_ids
from sentiment_lab.training import LossFunction, SoftTargets, StudentRecipe, train
from sentiment_lab.unlabeled import find_text_file, read_texts, select_texts

log = logging.getLogger("sentiment_lab")

DEFAULT_LAYERS = 3  # distill.layers unset: a 6-layer MiniLM keeps layers 0, 2 and 5
UNLABELED = -100  # the label of an unlabelled row: cross-entropy ignores it, the soft loss does not
TEACHER_LOGITS_FILE = "teacher_logits.parquet"  # id, logit_0 .. logit_{K-1}: one row per text the student learns from
TEACHER_LOGITS_INFO = "teacher_logits.json"  # whose logits they are (written after the Parquet file)
VERIFY_TEXTS = 1000  # texts re-tokenized after pruning to check the ids map one to one


# The teacher -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Teacher:
    """A teacher folder, read: what distillation needs without loading its model."""

    path: Path  # as given: a run, model or ensemble folder (what `Predictor.load` takes)
    kind: str  # run, model or ensemble
    model_dir: Path  # the model a layer-drop student is cut from (an ensemble: its first member's)
    labels: list[str]  # class names by id, upper case
    identity: str  # sha256 of its model files (an ensemble: of its members' fingerprints, weights, temperatures)
    parameters: int  # of every model it runs (an ensemble: the sum over its members)
    test_accuracy: float | None  # from its metrics.json, when it has one
    layers: int | None  # encoder layers of `model_dir` (config.json), None when it does not say


def load_teacher(path: str | Path) -> Teacher:
    """Read a teacher folder; an ensemble's members are checked to be there and unchanged."""
    folder = Path(path)
    if is_ensemble(folder):
        manifest, runs = verify_ensemble(folder)
        model_dirs = [run / "model" for run in runs]
        members = {m.path: f"{m.fingerprint}:{m.weight!r}:{m.temperature!r}" for m in manifest.members}
        identity, labels, kind = fingerprint_of(members), [name.upper() for name in manifest.labels], "ensemble"
    else:
        model_dir, run = locate_model(folder)
        model_dirs = [model_dir]
        identity, labels = fingerprint_of(model_file_digests(model_dir)), member_labels(model_dir)
        kind = "run" if run is not None else "model"
    accuracy = None
    if (folder / FINISHED_MARKER).is_file():
        metrics = json.loads((folder / FINISHED_MARKER).read_text(encoding="utf-8"))
        accuracy = (metrics.get("test") or {}).get("accuracy") if isinstance(metrics, dict) else None
    config = json.loads((model_dirs[0] / "config.json").read_text(encoding="utf-8"))
    layers = config.get("num_hidden_layers", config.get("n_layers"))  # DistilBERT: n_layers
    parameters = sum(map(saved_parameters, model_dirs))
    return Teacher(folder, kind, model_dirs[0], labels, identity, parameters, accuracy, layers)


def saved_parameters(model_dir: Path) -> int:
    """Parameters stored in a model folder's safetensors files (read from their headers; no model is built)."""
    total = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as fh:
            total += sum(math.prod(fh.get_slice(key).get_shape()) for key in fh.keys())  # noqa: SIM118
    return total


def check_same_classes(teacher: Teacher, splits: DataSplits) -> None:
    """Refuse data whose classes are not the teacher's (same names, same order, ignoring case)."""
    data = [name.upper() for name in splits.label_names]
    if data != teacher.labels:
        raise ConfigError(
            f"the teacher {teacher.path} has classes {teacher.labels} but the data has {data}; distil on data with "
            "the teacher's classes (the config's data section, data.label_names) or use a teacher trained on them"
        )


# The student -------------------------------------------------------------------------------------------------------


def spread_layers(total: int, keep: int) -> list[int]:
    """`keep` of `total` layer indices spread evenly from the bottom layer to the top one, both kept (6, 3: 0, 2, 5)."""
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def resolve_layers(setting: int | list[int] | None, total: int) -> list[int]:
    """The teacher layers a student keeps: `distill.layers` (a count or indices) for a teacher of `total` layers."""
    setting = DEFAULT_LAYERS if setting is None else setting
    if isinstance(setting, int):
        if setting > total:
            raise ConfigError(f"distill.layers is {setting} but the teacher has only {total} layers; keep 1 to {total}")
        return spread_layers(total, setting)
    bad = [i for i in setting if not 0 <= i < total]
    if bad:
        raise ConfigError(
            f"distill.layers names layer {', '.join(map(str, bad))}, which the teacher does not have: its {total} "
            f"layers are 0 to {total - 1}"
        )
    return sorted(setting)


def _layers_prefix(model: nn.Module) -> str:
    layers = encoder_layers(model)
    return next(name for name, module in model.named_modules() if module is layers)


def layer_drop(model: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A copy of a classifier keeping only the encoder blocks `layers` (renumbered 0..K-1), with every other weight
    (embeddings, pooler, classifier) copied as it is."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(layers)  # DistilBERT maps it to n_layers
    student = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    prefix = _layers_prefix(model)
    renumber = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in model.state_dict().items():
        if not key.startswith(prefix + "."):
            state[key] = value
            continue
        index, rest = key[len(prefix) + 1 :].split(".", 1)
        if int(index) in renumber:
            state[f"{prefix}.{renumber[int(index)]}.{rest}"] = value
    student.load_state_dict(state, strict=True)
    return student


def tokenizer_kind(tokenizer: Any) -> str:
    """The tokenization algorithm of a tokenizer (WordPiece, BPE, Unigram, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(backend.model).__name__ if backend is not None else type(tokenizer).__name__


def prune_vocabulary(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], folder: Path
) -> tuple[nn.Module, Any, np.ndarray]:
    """Keep the vocabulary rows of the tokens of `texts`, the special tokens and every single-character piece.

    The kept tokens keep their order in a new vocab.txt (written to `folder` with the tokenizer's settings), so
    greedy longest-match WordPiece splits every text whose pieces were all kept exactly as before, into the new ids
    of the same tokens; the single characters let any other word still split into pieces instead of [UNK].
    Returns the model (its word embeddings cut in place), the new tokenizer and the kept old ids (new id -> old id).
    """
    kind = tokenizer_kind(tokenizer)
    if kind != "WordPiece":
        raise ConfigError(
            f"distill.prune_vocab supports WordPiece tokenizers (BERT, DistilBERT, MiniLM); this model uses "
            f"{type(tokenizer).__name__} ({kind}); set distill.prune_vocab: false"
        )
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ModelError(f"the vocabulary of {type(tokenizer).__name__} has gaps in its ids; it cannot be pruned")
    used: set[int] = set(tokenizer.all_special_ids)
    used |= {i for i, t in enumerate(tokens) if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    for ids in bare_token_ids(tokenizer, list(texts)):
        used.update(ids)
    kept = np.array(sorted(used))

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as saved:
        tokenizer.save_pretrained(saved)  # its settings (lower case, special tokens), without the old vocabulary
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (Path(saved) / name).is_file():
                shutil.copy(Path(saved) / name, folder / name)
    (folder / "vocab.txt").write_text("".join(tokens[i] + "\n" for i in kept), encoding="utf-8")
    pruned = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)

    new_id = np.full(len(tokens), -1)
    new_id[kept] = np.arange(len(kept))
    sample = list(texts[:VERIFY_TEXTS])
    before = tokenizer(sample, add_special_tokens=False, verbose=False)["input_ids"]
    after = pruned(sample, add_special_tokens=False, verbose=False)["input_ids"]
    if len(pruned) != len(kept) or any(new_id[b].tolist() != a for b, a in zip(before, after, strict=True)):
        raise ModelError("the pruned vocabulary tokenizes the training texts differently; report this as a bug")

    embeddings = model.get_input_embeddings()
    embeddings.weight = nn.Parameter(embeddings.weight.data[torch.as_tensor(kept)].clone())
    embeddings.num_embeddings = len(kept)
    pad = model.config.pad_token_id
    if pad is not None:
        model.config.pad_token_id = int(new_id[pad])
        embeddings.padding_idx = int(new_id[pad])
    model.config.vocab_size = len(kept)
    return model, pruned, kept


@dataclass
class Student:
    """A student model ready to train, with its tokenizer and what was done to make it."""

    model: nn.Module
    tokenizer: Any
    source: str  # the model it started from: the teacher's model folder, or distill.student
    layers: list[int] | None  # teacher layers kept (layer-drop), None for a student of its own
    teacher_layers: int | None
    vocab_before: int
    vocab_after: int


def build_student(
    cfg: ExperimentConfig, teacher: Teacher, label_names: list[str], texts: Sequence[str], folder: Path
) -> Student:
    """The student: cut from the teacher (distill.layers) or distill.student, its vocabulary pruned on `texts` when
    distill.prune_vocab; saved to `folder` and loaded again by `modeling.build_model`, which applies the model
    section (dropout, freezing) as for any run."""
    d = cfg.distill or DistillConfig()
    layers = teacher_layers = None
    if d.student is None:
        source = str(teacher.model_dir)
        full = load_classifier(teacher.model_dir)
        tokenizer = load_tokenizer(source)
        teacher_layers = len(encoder_layers(full))
        layers = resolve_layers(d.layers, teacher_layers)
        model = layer_drop(full, layers)
    else:
        source = d.student
        model = build_model(cfg.model.model_copy(update={"name": source}), label_names=label_names)
        tokenizer = load_tokenizer(source)
    vocab_before = len(tokenizer)
    if d.prune_vocab:
        model, tokenizer, _ = prune_vocabulary(model, tokenizer, texts, folder / "tokenizer")
    if d.student is None or d.prune_vocab:
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        model = build_model(cfg.model.model_copy(update={"name": str(folder)}), label_names=label_names)
        tokenizer = load_tokenizer(str(folder))
    return Student(model, tokenizer, source, layers, teacher_layers, vocab_before, len(tokenizer))


# The loss ----------------------------------------------------------------------------------------------------------


def distillation_loss(alpha: float, temperature: float) -> LossFunction:
    """alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T)).

    The cross-entropy is the mean over the batch's labelled rows (class-weighted when weights are given; unlabelled
    rows carry UNLABELED), the KL the mean over every row (`batchmean`); T^2 keeps the soft gradients' scale
    independent of T (Hinton et al., 2015). Without teacher logits (validation) the loss is the cross-entropy alone.
    """

    def loss(
        logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, weight: torch.Tensor | None
    ) -> torch.Tensor:
        logits = logits.float()
        labelled = labels != UNLABELED
        if bool(labelled.any()):
            hard = nn.functional.cross_entropy(logits[labelled], labels[labelled], weight=weight)
        else:  # a batch of unlabelled rows only
            hard = logits.sum() * 0.0
        if teacher_logits is None:
            return hard
        t = temperature
        soft = nn.functional.kl_div(
            nn.functional.log_softmax(logits / t, dim=-1),
            nn.functional.log_softmax(teacher_logits.float().to(logits.device) / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return alpha * hard + (1 - alpha) * t * t * soft

    return loss


# Unlabelled texts and the teacher's logits ---------------------------------------------------------------------------


def read_unlabeled(cfg: ExperimentConfig, splits: DataSplits) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The unlabelled texts (id, text, label UNLABELED), cleaned as the data is, without empty and repeated texts
    and without every text that occurs in the validation or test split (`unlabeled.select_texts`); and the counts
    of what was dropped."""
    d = cfg.distill or DistillConfig()
    if d.unlabeled is None:
        return pd.DataFrame({"id": [], "text": [], "label": []}), {}
    path = find_text_file(d.unlabeled, cfg.data.path)
    df = read_texts(path, d.unlabeled_text_column, "distill.unlabeled_text_column")
    df["id"] = "unlabeled-" + df["id"]
    evaluation = set(splits.val["text"]) | set(splits.test["text"])
    frame, counts = select_texts(df, cfg.data, evaluation, limit=d.max_unlabeled)
    return frame.assign(label=UNLABELED), {"file": str(path), **counts}


def self_training_rows(
    rows: pd.DataFrame, logits: np.ndarray, min_confidence: float | None, hard: bool, names: list[str]
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """The training rows for self-training: every labelled row, and the unlabelled rows whose teacher's top
    probability (softmax of its logits) is at least min_confidence (all when None), with the teacher's class as their
    label when `hard`; their logits; and the counts (kept per class) for the run's summary."""
    unlabeled = (rows["label"] == UNLABELED).to_numpy()
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    top = probs.max(axis=1)
    keep = ~unlabeled | (top >= (min_confidence or 0.0))
    frame = rows.loc[keep].reset_index(drop=True)
    teacher_class = probs.argmax(axis=1)[keep]
    kept_unlabeled = unlabeled[keep]
    if hard:
        frame.loc[kept_unlabeled, "label"] = teacher_class[kept_unlabeled]
    counts = np.bincount(teacher_class[kept_unlabeled], minlength=len(names))
    facts = {
        "min_confidence": min_confidence,
        "pseudo_labels": hard,
        "unlabeled": int(unlabeled.sum()),
        "kept": int(kept_unlabeled.sum()),
        "kept_per_class": {name: int(n) for name, n in zip(names, counts, strict=True)},
    }
    log.info(
        "self-training: %d of %d unlabelled texts kept (teacher confidence >= %s)%s",
        facts["kept"],
        facts["unlabeled"],
        min_confidence,
        ", with the teacher's class as their label" if hard else "",
    )
    return frame, logits[keep], facts


def cached_teacher_logits(
    teacher: Teacher, frame: pd.DataFrame, run_dir: Path, batch_size: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher's logits for every row of `frame` (id, text): from RUN_DIR's cache when it holds this teacher's
    logits for these texts, else computed with `Predictor.load(teacher).logits` (an ensemble: the log of its averaged
    calibrated probabilities) and cached."""
    data_file, info_file = run_dir / TEACHER_LOGITS_FILE, run_dir / TEACHER_LOGITS_INFO
    key = {
        "teacher": str(teacher.path),
        "identity": teacher.identity,
        "rows": len(frame),
        "texts": rows_digest(frame),
    }
    if data_file.is_file() and info_file.is_file():
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
            cached = pd.read_parquet(data_file)
        except (OSError, ValueError) as exc:
            info, cached = {}, None
            log.warning("cannot read the cached teacher logits (%s); recomputing them", exc)
        same = {k: info.get(k) for k in ("identity", "rows", "texts")} == {
            k: key[k] for k in ("identity", "rows", "texts")
        }
        if same and cached is not None and cached["id"].astype(str).tolist() == frame["id"].astype(str).tolist():
            log.info("teacher logits: reusing %s (%d rows)", data_file, len(cached))
            logits = cached[[c for c in cached.columns if c.startswith("logit_")]].to_numpy(np.float32)
            return logits, {"rows": len(frame), "reused": True, "seconds": info.get("seconds")}
        why = "the teacher changed" if info.get("identity") != key["identity"] else "the texts changed"
        log.info("teacher logits in %s are stale (%s): recomputing them", data_file, why)
    info_file.unlink(missing_ok=True)  # the Parquet file is complete only once its info is written
    start = time.perf_counter()
    predictor = Predictor.load(teacher.path, batch_size=batch_size)
    logits = predictor.logits(frame["text"].tolist()).astype(np.float32)
    seconds = time.perf_counter() - start
    log.info("teacher logits: %d texts in %.0f s (%s)", len(frame), seconds, predictor.precision)
    columns = {"id": frame["id"].astype(str).to_numpy()} | {f"logit_{k}": logits[:, k] for k in range(logits.shape[1])}
    write_parquet_atomic(data_file, pd.DataFrame(columns))
    write_json_atomic(info_file, key | {"seconds": seconds, "precision": predictor.precision})
    return logits, {"rows": len(frame), "reused": False, "seconds": seconds}


# The recipe --------------------------------------------------------------------------------------------------------


def distill(
    teacher: str | Path,
    cfg: ExperimentConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    splits: DataSplits | None = None,
) -> dict[str, Any]:
    """Train a student of `teacher` (a run, model or ensemble folder) as configured (`cfg.distill`, default
    DistillConfig()); returns the metrics written to OUT/metrics.json, with a `distill` summary.

    OUT is an ordinary run folder: its model/ loads with `transformers.pipeline` and every command takes it.
    splits: data already prepared.
    """
    run_dir = Path(out_dir)
    check_run_dir(run_dir, overwrite=overwrite, resume=cfg.training.resume)  # before anything slow
    cfg = cfg.model_copy(deep=True)
    if cfg.distill is None:
        cfg.distill = DistillConfig()
    d = cfg.distill
    if cfg.model.lora is not None:
        raise ConfigError("distill trains the whole student; remove model.lora (LoRA applies to `train` only)")
    if cfg.augment is not None:
        raise ConfigError(
            "distill cannot use an augment: section (the student learns the teacher's logits of each text, which "
            "augmented copies lack); remove augment, or train without a teacher"
        )
    source = load_teacher(teacher)
    if d.student is None and source.layers is not None:
        resolve_layers(d.layers, source.layers)  # a layer the teacher lacks: refused before the data is read
    splits = splits or prepare_data(cfg.data)
    check_same_classes(source, splits)
    unlabeled, unlabeled_facts = read_unlabeled(cfg, splits)

    with tempfile.TemporaryDirectory(prefix="student-") as folder:
        texts = splits.train["text"].tolist() + unlabeled["text"].tolist()
        student = build_student(cfg, source, splits.label_names, texts, Path(folder))
        cfg.model.name = student.source  # config.yaml and the model card name where the student came from
        summary: dict[str, Any] = {
            "teacher": str(Path(teacher).resolve()),
            "teacher_kind": source.kind,
            "teacher_identity": source.identity,
            "teacher_test_accuracy": source.test_accuracy,
            "teacher_parameters": source.parameters,
            "student": "layer-drop" if d.student is None else d.student,
            "student_parameters": count_parameters(student.model)["total"],
            "layers": student.layers,
            "teacher_layers": student.teacher_layers,
            "vocab_size": {"before": student.vocab_before, "after": student.vocab_after},
            "unlabeled": unlabeled_facts or None,
        }
        log.info(
            "student: %d parameters (teacher %d), layers %s, vocabulary %d -> %d",
            summary["student_parameters"],
            source.parameters,
            student.layers,
            student.vocab_before,
            student.vocab_after,
        )
        rows = pd.concat([splits.train, unlabeled], ignore_index=True)

        def soft_targets(run: Path) -> SoftTargets:
            logits, facts = cached_teacher_logits(source, rows[["id", "text"]], run, cfg.training.eval_batch_size)
            summary["teacher_logits"] = facts
            frame = rows
            if d.unlabeled is not None and (d.min_confidence is not None or d.pseudo_labels):
                frame, logits, summary["self_training"] = self_training_rows(
                    rows, logits, d.min_confidence, d.pseudo_labels, splits.label_names
                )
            return SoftTargets(frame=frame, logits=logits)

        recipe = StudentRecipe(
            student.model, student.tokenizer, distillation_loss(d.alpha, d.temperature), soft_targets, summary
        )
        return train(cfg, run_dir, overwrite=overwrite, splits=splits, student=recipe)
