"""The Predictor: raw review texts -> labels, from a saved model folder (or a run folder's model/, or an ensemble).

How it loads and runs a model is one `PredictorOptions` (predictor_options.py), built by the CLI, the server and
the benchmarks and passed along unchanged. An ensemble folder (`sentiment-lab ensemble`) loads as one Predictor
whose members are Predictors of its runs: it answers with the weighted mean of their calibrated probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoConfig

from sentiment_lab.errors import ConfigError, InputError, ModelError
from sentiment_lab.metrics import average_by_owner
from sentiment_lab.modeling import ID2LABEL, load_classifier, load_tokenizer
from sentiment_lab.precision import REDUCED_PRECISIONS, pad_multiple
from sentiment_lab.precision import resolve as resolve_precision
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.rundir import ONNX_DIR, ONNX_FILE, ONNX_INT8_FILE, is_ensemble, locate_model, verify_ensemble
from sentiment_lab.runners import (
    Runner,
    average_probabilities,
    batched_logits,
    calibrated_probs,
    compiled_runner,
    embedding_runner,
    onnx_runner,
    probability_logits,
    torch_runner,
)
from sentiment_lab.sidecar import DEFAULT_REVIEW_THRESHOLD, TextSettings, read_sidecar
from sentiment_lab.tokenization import default_stride, encode_windows, token_budget

log = logging.getLogger("sentiment_lab")


def check_texts(texts: Any) -> list[str]:
    """The texts as a list, or InputError naming the first unusable one (not a string, empty, whitespace)."""
    if isinstance(texts, str):
        raise InputError("predict() takes a list of texts, not one string; wrap it: predict([text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"text {i} is a {type(t).__name__}, not a string; give review texts as strings")
        if not t.strip():
            raise InputError(f"text {i} is empty or whitespace only; remove it or give the review's text")
    return texts


def label_order(config: Any, stored: list[str] | None = None) -> tuple[list[str], int | None]:
    """Label names by class index (upper case) and the index of the positive class (None unless K == 2).

    Names come from the sidecar's labels, else the model's id2label. Binary keeps the project's convention:
    NEGATIVE/POSITIVE in the model's order, generic LABEL_0/LABEL_1 read as NEGATIVE/POSITIVE.
    """
    k = int(config.num_labels)
    if k < 2:
        raise ModelError(f"the model has {k} label; a classifier needs at least 2 classes")
    if stored and len(stored) != k:
        raise ModelError(
            f"the model has {k} labels but its sidecar names {len(stored)} ({', '.join(stored)}); "
            "fix `labels` in sentiment_lab.json or delete the key to use the model's id2label"
        )
    id2label = {int(i): str(v) for i, v in (config.id2label or {}).items()}
    names = [s.upper() for s in stored] if stored else [id2label.get(i, f"LABEL_{i}").upper() for i in range(k)]
    if k == 2:
        if sorted(names) == ["NEGATIVE", "POSITIVE"]:
            return names, names.index("POSITIVE")
        return [ID2LABEL[0], ID2LABEL[1]], 1  # generic LABEL_0/LABEL_1: the project's convention
    return names, None


class Predictor:
    """Predictions for raw review texts from a saved model folder (or run folder) with a torch or ONNX backend.

    An ensemble's Predictor has `members` (one Predictor per member run, each with its own tokenizer, text
    settings and temperature) and `weights`, and no tokenizer, settings, runner or model of its own.
    """

    def __init__(
        self,
        model_dir: Path,
        options: PredictorOptions,
        tokenizer: Any,
        settings: TextSettings | None,
        runner: Runner | None,
        labels: list[str],
        positive_index: int | None = 1,
        temperature: float = 1.0,
        review_threshold: float = 0.70,
        onnx_file: Path | None = None,
        model: Any = None,
        precision: str = "fp32",
        members: Sequence[Predictor] = (),
        weights: Sequence[float] = (),
    ) -> None:
        self.model_dir = model_dir
        self.options = options
        self.tokenizer = tokenizer
        self.settings = settings
        self.runner = runner
        self.labels = labels
        self.positive_index = positive_index
        self.temperature = temperature
        self.review_threshold = review_threshold
        self.onnx_file = onnx_file
        self.model = model  # the torch module behind the torch backend (export traces it); None for ONNX
        self.precision = precision  # what the torch backend computes in (fp32, bf16, fp16); onnx: fp32 or int8
        self.members = list(members)  # an ensemble's member Predictors; [] for one model
        self.weights = list(weights)  # the members' weights (summing to 1)

    @property
    def backend(self) -> str:
        return self.options.backend

    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def long_text(self) -> str | None:
        """truncate or chunk: the option when given, else the model's own (chunk for a model trained on windows);
        for an ensemble without the option, the members' mode when they share it, else None (each uses its own)."""
        if self.options.long_text is not None:
            return self.options.long_text
        if self.members:
            modes = {m.long_text for m in self.members}
            return modes.pop() if len(modes) == 1 else None
        return self.settings.long_text if self.settings is not None else "truncate"

    @property
    def stride(self) -> int | None:
        return self.options.stride

    @classmethod
    def load(cls, model_dir: str | Path, options: PredictorOptions | None = None, **values: Any) -> Predictor:
        """Load a model folder (or a run folder's model/, or an ensemble folder: every member) for prediction.

        options: a PredictorOptions; or give its fields as keyword values (backend="onnx", precision="fp32", ...).
        The backend `onnx` reads MODEL_DIR/onnx/model.onnx (model.int8.onnx with quantized=True), written by
        `sentiment-lab export`. `precision` (torch backend) is resolved for the device the model runs on; weights
        are cast to it rather than autocast, which re-casts every weight on every call (measured: batch-1 latency
        halved on CPU; autocast gained nothing there). `compile` measured batch-1 p50 18.7 ms vs 22.1 ms eager
        bf16 on a 2-core CPU (docs/performance.md) and needs a C++ compiler on CPU.
        """
        if options is not None and values:
            raise ConfigError("give either a PredictorOptions or keyword options, not both")
        opts = options or PredictorOptions.build(**values)
        if is_ensemble(model_dir):
            return cls._load_ensemble(Path(model_dir), opts)
        folder, _ = locate_model(model_dir)
        tokenizer = load_tokenizer(str(folder))
        sidecar = read_sidecar(folder, tokenizer)
        budget = token_budget(tokenizer, sidecar.text.max_length)
        if opts.stride is not None and not opts.stride < budget:
            raise ConfigError(
                f"stride must be between 0 and {budget - 1} tokens (the window holds {budget}), got {opts.stride}"
            )
        threshold = opts.review_threshold if opts.review_threshold is not None else sidecar.review_threshold()

        onnx_file = model = None
        if opts.backend == "onnx":
            onnx_file = folder / ONNX_DIR / (ONNX_INT8_FILE if opts.quantized else ONNX_FILE)
            if not onnx_file.is_file():
                flag = " --quantize int8" if opts.quantized else ""
                raise ModelError(
                    f"no ONNX model at {onnx_file}; export it first: sentiment-lab export {model_dir} --onnx{flag}"
                )
            runner = onnx_runner(onnx_file, opts.threads)
            config = AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
            precision = "int8" if opts.quantized else "fp32"
        else:
            model = load_classifier(folder, allow_pickle=opts.allow_pickle)
            resolved = resolve_precision(opts.precision, opts.device, purpose="predicting")
            if resolved.note:
                log.warning("%s", resolved.note)
            model.to(device=opts.device or resolved.device, dtype=resolved.dtype)
            runner = compiled_runner(model, tokenizer) if opts.compile else torch_runner(model)
            config = model.config
            precision = resolved.name
        labels, positive = label_order(config, sidecar.labels)
        return cls(
            folder,
            opts,
            tokenizer,
            sidecar.text,
            runner,
            labels,
            positive,
            sidecar.temperature,
            threshold,
            onnx_file,
            model,
            precision,
        )

    @classmethod
    def _load_ensemble(cls, folder: Path, opts: PredictorOptions) -> Predictor:
        """Every member run of an ensemble folder, each checked unchanged (`rundir.verify_ensemble`) and loaded with
        the same options; the review threshold is the option's, else the 0.70 default (members' thresholds were
        chosen for each member alone)."""
        manifest, runs = verify_ensemble(folder)
        members = [cls.load(run, opts) for run in runs]
        for run, member in zip(runs[1:], members[1:], strict=True):
            if member.labels != members[0].labels:
                raise ModelError(
                    f"ensemble {folder}: member {run} has classes {member.labels}, {runs[0]} has {members[0].labels}; "
                    "re-run `sentiment-lab ensemble` with runs trained on the same classes"
                )
        threshold = opts.review_threshold if opts.review_threshold is not None else DEFAULT_REVIEW_THRESHOLD
        return cls(
            folder,
            opts,
            None,
            None,
            None,
            members[0].labels,
            members[0].positive_index,
            1.0,  # the members' probabilities are calibrated already: the mean is not scaled again
            threshold,
            precision=members[0].precision,
            members=members,
            weights=[m.weight for m in manifest.members],
        )

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw logits (n, labels) in input order; in chunk mode the mean over each text's windows.

        An ensemble's logits are the log of its averaged calibrated probabilities (their softmax gives them back).
        """
        if self.members:
            return probability_logits(self.probabilities(texts))
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._per_text(texts, self.runner)

    def embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Encoder representations (n, hidden) in input order: the mean of the last hidden states over each text's
        tokens, tokenized and truncated as for `logits` (in chunk mode the mean over its windows).

        Needs the torch backend. An ensemble answers with its first member's encoder (the members' spaces differ and
        cannot be averaged).
        """
        if self.members:
            return self.members[0].embeddings(texts)
        if self.model is None:
            raise ModelError(
                f"embeddings need the torch backend (this Predictor runs {self.backend}); load it with backend='torch'"
            )
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, int(self.model.config.hidden_size)), dtype=np.float32)
        return self._per_text(texts, embedding_runner(self.model))

    def _per_text(self, texts: list[str], runner: Runner) -> np.ndarray:
        """`runner`'s rows for texts tokenized as in training, in batches padded for the precision (`pad_multiple`);
        in chunk mode the mean over each text's windows."""
        sequences, owners = encode_windows(self.tokenizer, texts, self.settings, self.long_text, self.stride)
        multiple = pad_multiple(self.settings.max_length, self.precision in REDUCED_PRECISIONS)
        rows = batched_logits(sequences, self.tokenizer, runner, self.batch_size, multiple=multiple)
        return average_by_owner(rows, owners, len(texts))  # truncate: one window per text, unchanged

    def predict(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One {label, score, probs, needs_review} per text in input order, plus prob_pos for a binary model.

        score is the top probability (temperature-scaled when the sidecar stores a temperature); probs maps every
        class name to its probability. Empty texts raise InputError.
        """
        probs = self.probabilities(texts)
        top = probs.argmax(axis=-1)
        score = probs.max(axis=-1)
        out = []
        for k, s, p in zip(top, score, probs, strict=True):
            pred: dict[str, Any] = {"label": self.labels[int(k)], "score": float(s)}
            if self.positive_index is not None:
                pred["prob_pos"] = float(p[self.positive_index])
            pred["needs_review"] = bool(s < self.review_threshold)
            pred["probs"] = {name: float(v) for name, v in zip(self.labels, p, strict=True)}
            out.append(pred)
        return out

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (n, labels) in input order: softmax(logits / T) with the sidecar's temperature T; for
        an ensemble the weighted mean of its members' (each with its own temperature)."""
        if not self.members:
            return calibrated_probs(self.logits(texts), self.temperature)
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        return average_probabilities([m.probabilities(texts) for m in self.members], self.weights)

    def info(self) -> dict[str, Any]:
        """What the predictor does: model folder, backend, truncation, temperature, review threshold, labels.

        An ensemble: `members` lists each member's info and weight; a text setting shared by every member is given
        at the top level, one that differs is None there.
        """
        if self.members:
            infos = [m.info() | {"weight": w} for m, w in zip(self.members, self.weights, strict=True)]
            shared = ("max_length", "truncation", "stride", "onnx_file")
            return {
                "model_dir": str(self.model_dir),
                "backend": self.backend,
                "precision": self.precision,
                **{k: infos[0][k] if all(i[k] == infos[0][k] for i in infos) else None for k in shared},
                "long_text": self.long_text,
                "temperature": self.temperature,
                "review_threshold": self.review_threshold,
                "labels": list(self.labels),
                "batch_size": self.batch_size,
                "compiled": self.options.compile,
                "members": infos,
            }
        return {
            "model_dir": str(self.model_dir),
            "backend": self.backend,
            "precision": self.precision,
            "onnx_file": self.onnx_file.name if self.onnx_file else None,
            "max_length": self.settings.max_length,
            "truncation": self.settings.truncation,
            "long_text": self.long_text,
            "stride": self.stride if self.stride is not None else default_stride(self.settings, self.tokenizer),
            "temperature": self.temperature,
            "review_threshold": self.review_threshold,
            "labels": list(self.labels),
            "batch_size": self.batch_size,
            "compiled": self.options.compile,
        }
