"""Experiment configuration: YAML -> validated pydantic objects, with `key.sub=value` overrides.

This is the only module that reads environment variables (`IMDB_DIR`).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiment_lab.errors import ConfigError
from sentiment_lab.precision import PrecisionName

MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_NODES = 100_000  # values after alias expansion; a real config has a few hundred
BINARY_LABEL_MAP = {"neg": 0, "negative": 0, "pos": 1, "positive": 1}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HubSplits(_Section):
    """The Hub split that plays each role (SST-2's labelled test is its `validation` split)."""

    train: str = "train"
    validation: str | None = None
    test: str | None = "test"


class DataConfig(_Section):
    """Where the reviews come from and how they are cleaned and split."""

    source: Literal["imdb", "hub", "local"] = "imdb"
    path: str | None = None  # folder: train/test Parquet|CSV|JSONL files, or the aclImdb layout
    # Files of a local copy; a relative name is looked up in `path` when that is set (a preset names its dataset's
    # files, `--data` says where the folder is). val_file: a validation split of its own (e.g. SST's dev set)
    # instead of holding out val_fraction of train. With split: pooled, test_file may be absent (one-file datasets).
    train_file: str | None = None
    val_file: str | None = None
    test_file: str | None = None
    hub_id: str = "stanfordnlp/imdb"
    hub_config: str | None = None  # the dataset's configuration on the Hub (tweet_eval: sentiment)
    # Hub split per role; validation None holds out val_fraction of train, test None needs split: pooled.
    hub_splits: HubSplits = Field(default_factory=lambda: HubSplits())
    # Hub column -> this config's column, where the Hub copy names them otherwise (stanfordnlp/sst2: sentence -> text)
    hub_columns: dict[str, str] = Field(default_factory=dict)
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = None
    # Raw label string -> class id, case-insensitive; the default is IMDb's binary map (see _label_rules).
    label_map: dict[str, int] = Field(default_factory=lambda: dict(BINARY_LABEL_MAP))
    # The ordered class names, index = class id (e.g. [very negative, negative, neutral, positive, very positive]);
    # None: from the data (a Hub ClassLabel's names, else negative/positive for 2 classes, class_0.. for more).
    label_names: list[str] | None = Field(None, min_length=2)
    ordinal: bool = False  # the class ids are ordered (stars, ratings): adds MAE in classes and within-one accuracy
    num_labels: int | None = Field(None, ge=2)  # optional check: the data must show exactly this many classes
    # standard: the source's test split is the test set and `val_fraction` of its train split is held out.
    # pooled: train and test are pooled and re-split into train/validation/test by `pooled_fractions`.
    split: Literal["standard", "pooled"] = "standard"
    # 0: no validation split, every training review is trained on (the recipe then has nothing to select on).
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    pooled_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, validation, test; split: pooled only
    split_seed: int = 42
    max_train: int | None = Field(None, gt=0)
    max_eval: int | None = Field(None, gt=0)
    max_test: int | None = Field(None, gt=0)
    empty_policy: Literal["drop", "keep"] = "drop"
    duplicate_policy: Literal["drop", "keep"] = "keep"
    lowercase: bool = False
    strip_html: bool = False

    @model_validator(mode="after")
    def _label_rules(self) -> DataConfig:
        names = self.label_names
        if names is not None:
            lowered = [n.strip().lower() for n in names]
            repeated = sorted({n for n in names if lowered.count(n.strip().lower()) > 1})
            if repeated or not all(lowered):
                raise ValueError(f"label_names {names} must be distinct, non-empty class names (repeated: {repeated})")
            if self.num_labels is not None and self.num_labels != len(names):
                raise ValueError(
                    f"num_labels is {self.num_labels} but label_names lists {len(names)} classes; remove one of them"
                )
            # IMDb's binary default map means nothing for other classes (`positive` is class 2 of 3, not 1): with
            # names given it is kept only where it agrees with them, else the names alone map the strings.
            if self.label_map == BINARY_LABEL_MAP and not (
                len(names) == 2 and all(lowered.index(k) == v for k, v in BINARY_LABEL_MAP.items() if k in lowered)
            ):
                self.__dict__["label_map"] = {}  # not setattr: validate_assignment would re-enter this validator
        by_lower: dict[str, list[str]] = {}
        for key in self.label_map:
            by_lower.setdefault(key.strip().lower(), []).append(key)
        duplicates = [keys for keys in by_lower.values() if len(keys) > 1]
        if duplicates:
            listed = "; ".join(" and ".join(map(repr, keys)) for keys in duplicates)
            raise ValueError(
                f"label_map has keys that differ only in case ({listed}); labels are matched case-insensitively, "
                "so keep one key of each"
            )
        k = len(names) if names is not None else self.num_labels
        bad = {key: v for key, v in self.label_map.items() if v < 0 or (k is not None and v >= k)}
        if bad:
            allowed = f"0..{k - 1}" if k is not None else "0 or more"
            raise ValueError(f"label_map values must be class ids {allowed}, got {bad}")
        if names is not None:
            clash = {
                key: v
                for key, v in self.label_map.items()
                if key.strip().lower() in lowered and lowered.index(key.strip().lower()) != v
            }
            if clash:
                raise ValueError(
                    f"label_map {clash} contradicts label_names {names} (a class name maps to its own position); "
                    "remove those keys or fix their ids"
                )
        return self

    @model_validator(mode="after")
    def _split_shares(self) -> DataConfig:
        train, val, test = self.pooled_fractions
        if min(self.pooled_fractions) < 0 or train == 0 or test == 0 or abs(train + val + test - 1) > 1e-6:
            raise ValueError(
                f"pooled_fractions {list(self.pooled_fractions)} must be the train, validation and test shares of "
                "the pooled reviews: train and test above 0, validation 0 or more, summing to 1 (e.g. [0.8, 0.1, 0.1])"
            )
        # A resolved config.yaml holds every key, so only a value that differs from the default is refused: it
        # would otherwise be silently ignored by the other split mode.
        if self.split == "pooled" and self.val_fraction != DataConfig.model_fields["val_fraction"].default:
            raise ValueError(
                "val_fraction applies to split: standard; with split: pooled the validation share is "
                "pooled_fractions[1] (remove val_fraction or set pooled_fractions: [train, validation, test])"
            )
        if self.split == "standard" and self.pooled_fractions != DataConfig.model_fields["pooled_fractions"].default:
            raise ValueError("pooled_fractions applies to split: pooled only; set split: pooled or remove it")
        if self.val_file and self.val_fraction != DataConfig.model_fields["val_fraction"].default:
            raise ValueError(
                f"val_file ({self.val_file}) is the validation split, so val_fraction {self.val_fraction} would be "
                "ignored; remove one of them"
            )
        if self.val_file and self.split == "pooled":
            raise ValueError("val_file applies to split: standard; split: pooled re-splits every file it loads")
        if self.val_file and not self.train_file:
            raise ValueError("val_file needs train_file (and test_file): name the training file too")
        if self.split == "standard" and self.train_file and not self.test_file:
            raise ValueError(
                f"train_file {self.train_file} has no test_file beside it; set data.test_file, or split: pooled to "
                "re-split the one file into train/validation/test"
            )
        if self.test_file and not self.train_file:
            raise ValueError(f"test_file {self.test_file} needs train_file: name the training file too")
        if self.split == "standard" and self.hub_splits.test is None:
            raise ValueError("hub_splits.test is empty; name the Hub split to test on, or set split: pooled")
        return self

    @property
    def reads_local(self) -> bool:
        """Local files, not the Hub: a data path, source local, or files named without source hub.

        A Hub preset names its local copy's files too (train_file: train.parquet); they are read only once a path
        says where (`--data`, data.path), so the same preset runs online and offline.
        """
        return bool(self.path) or self.source == "local" or (bool(self.train_file) and self.source != "hub")

    @property
    def has_validation_split(self) -> bool:
        """False when no review is held out for validation (val_fraction 0, or a pooled validation share of 0)."""
        if self.split == "pooled":
            return self.pooled_fractions[1] > 0
        return bool(self.val_file) or self.val_fraction > 0


class TokenizationConfig(_Section):
    """How a review becomes token ids."""

    max_length: int = Field(256, ge=8, le=4096)
    truncation: Literal["head", "tail", "head_tail"] = "head"
    head_tokens: int | None = Field(None, ge=0)  # head_tail: tokens kept from the start; default max_length//4
    padding: Literal["dynamic", "max_length"] = "dynamic"
    # truncate: one sequence per text, cut as `truncation` says. chunk: a text longer than max_length trains as
    # overlapping windows (a quarter shared), each with the text's label, and is scored (validation, test, evaluate,
    # and predict/serve by default) by averaging its windows' logits: all of a long review counts, not only its ends
    long_text: Literal["truncate", "chunk"] = "truncate"
    max_windows: int | None = Field(None, ge=1)  # chunk: at most this many training windows per text (None: all)

    @model_validator(mode="after")
    def _head_fits(self) -> TokenizationConfig:
        if self.head_tokens is not None and self.head_tokens > self.max_length - 2:
            raise ValueError(f"head_tokens ({self.head_tokens}) must be at most max_length - 2 ({self.max_length - 2})")
        if self.max_windows is not None and self.long_text != "chunk":
            raise ValueError(
                f"max_windows ({self.max_windows}) caps the windows of long_text: chunk; set long_text: chunk "
                "or drop max_windows"
            )
        return self


class LoraConfig(_Section):
    """LoRA (`model.lora`, through peft): low-rank adapters on the named linear layers, the classifier head in full."""

    r: int = Field(8, ge=1)  # rank of each adapter
    alpha: float = Field(16.0, gt=0.0)  # the adapter's update is scaled by alpha / r
    dropout: float = Field(0.1, ge=0.0, lt=1.0)  # on the adapter's input
    # Leaf names of the linear layers that get adapters (e.g. [query, value]); auto: the attention query and value
    # projections of the architecture (modeling.ArchitectureNames.lora_targets), as in the LoRA paper.
    target_modules: list[str] | Literal["auto"] = "auto"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names_or_auto(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "auto":
            value = [value]  # --set model.lora.target_modules=query
        if value == "auto":
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value):
            return list(dict.fromkeys(v.strip() for v in value))  # a repeated name would be matched twice
        raise ValueError(
            "target_modules must be auto or a list of the model's linear-layer names (e.g. [query, value])"
        )


class ModelConfig(_Section):
    """Which encoder to fine-tune and how."""

    name: str = "minilm-l6"
    dropout: float | None = Field(None, ge=0.0, lt=1.0)  # classifier dropout; None keeps the model's own
    # Dropout on the attention probabilities. auto: 0 when training on a CPU, where attention dropout made
    # MiniLM training 2x slower (measured: docs/performance.md), the model's own value (0.1) on CUDA.
    attention_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] | Literal["auto"] | None = "auto"
    freeze_embeddings: bool = False
    freeze_layers: int = Field(0, ge=0)
    llrd: float | None = Field(None, gt=0.0, le=1.0)  # layer-wise LR decay factor; None = off
    lora: LoraConfig | None = None  # None: full fine-tuning; docs/lora.md

    @model_validator(mode="after")
    def _lora_replaces_freezing(self) -> ModelConfig:
        # LoRA already freezes every pretrained weight: freezing more would change nothing, and LLRD decays the rates
        # of pretrained layers that LoRA does not update. Refused rather than ignored, so a config says what it does.
        clash = [
            f"model.{key}"
            for key, on in (
                ("freeze_embeddings", self.freeze_embeddings),
                ("freeze_layers", self.freeze_layers > 0),
                ("llrd", self.llrd is not None),
            )
            if on
        ]
        if self.lora is not None and clash:
            raise ValueError(
                f"model.lora trains only its adapters and the classifier head, every pretrained weight stays frozen, "
                f"so {' and '.join(clash)} (freezing or decaying pretrained layers) would do nothing; remove "
                f"{'them' if len(clash) > 1 else 'it'}, or remove model.lora to fine-tune in full"
            )
        return self


class TrainingConfig(_Section):
    """The Trainer recipe."""

    learning_rate: float = Field(2e-5, gt=0.0, lt=1.0)
    batch_size: int = Field(16, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int = Field(-1, ge=-1)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    adam_beta1: float = Field(0.9, ge=0.0, lt=1.0)
    adam_beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_epsilon: float = Field(1e-8, gt=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    precision: PrecisionName = "auto"  # precision.resolve decides per device
    eval_strategy: Literal["steps", "epoch"] = "epoch"
    eval_steps: int = Field(500, ge=1)
    save_steps: int | None = Field(None, ge=1)  # defaults to eval_steps
    save_total_limit: int | None = Field(2, ge=1)
    keep_checkpoints: bool = False  # checkpoints exist to resume; a finished run keeps only model/
    logging_steps: int = Field(50, ge=1)
    early_stopping_patience: int | None = Field(None, ge=1)
    metric_for_best_model: Literal["f1", "accuracy", "loss", "f1_macro"] = "f1"  # f1 is macro F1 for 3+ classes
    # Weighted cross-entropy: none, balanced (sklearn's compute_class_weight on the training labels), or one weight
    # per class (the list's length is checked against the classes when the data is known).
    class_weights: Literal["none", "balanced"] | list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = "none"
    # Length-grouped batches in random order (training.ShuffledLengthBuckets): little padding, no length walk.
    group_by_length: bool = True
    seed: int = 42
    resume: bool = False
    threads: int | None = Field(None, ge=1)  # torch intra-op threads; None = torch default
    # Seeded everything plus torch.use_deterministic_algorithms where the ops support it (slower; issue 15).
    deterministic: bool = False
    # Experiment trackers: names of transformers' integrations (tensorboard, mlflow, wandb, ...), [] for none.
    # Whether each is installed is checked when a run starts (tracking.check_trackers), not here, so that a run
    # folder's config.yaml still reads on a machine without them.
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])

    @field_validator("class_weights", mode="before")
    @classmethod
    def _weights_named_or_listed(cls, value: Any) -> Any:
        ok_list = isinstance(value, list) and all(
            isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w > 0 for w in value
        )
        if value in ("none", "balanced") or (ok_list and value):
            return value
        raise ValueError(
            "class_weights must be none, balanced, or a list of positive weights, one per class in class-id order "
            "(e.g. [1.0, 2.5, 1.0])"
        )

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # --set training.report_to=mlflow

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, names: list[str]) -> list[str]:
        names = list(dict.fromkeys(names))  # a repeated name would report twice
        if set(names) <= {"tensorboard"}:
            return names
        # heavy (transformers, about 1 s): only for a config that names a tracker beyond the default
        from transformers.integrations import INTEGRATION_TO_CALLBACK

        unknown = [name for name in names if name not in INTEGRATION_TO_CALLBACK]
        if unknown:
            raise ValueError(
                f"unknown tracker {', '.join(map(repr, unknown))}; transformers reports to "
                f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))} (give a list, e.g. [tensorboard, mlflow]; [] for none)"
            )
        return names


class EvaluationConfig(_Section):
    """What runs after training."""

    baselines: bool = True  # majority class and TF-IDF + logistic regression on the same split


class DistillConfig(_Section):
    """`sentiment-lab distill`: a smaller student trained on the labels and on a teacher's logits (docs/compression.md).

    Only `distill` reads this section; `train` refuses a config that has one.
    """

    # The teacher's layers the student keeps (layer-drop initialisation): K, spread evenly from the bottom layer to
    # the top one, both kept (6 -> 3: 0, 2, 5), or the explicit 0-based indices. None: 3 when the student is cut
    # from the teacher; must stay None with `student`.
    layers: Annotated[int, Field(ge=1)] | list[Annotated[int, Field(ge=0)]] | None = None
    # Keep only the word-piece rows of the tokens in the training (and unlabelled) texts, the special tokens and
    # every single-character piece (WordPiece tokenizers: BERT, DistilBERT, MiniLM).
    prune_vocab: bool = False
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the hard-label cross-entropy; 1 - alpha: the soft loss
    temperature: float = Field(2.0, gt=0.0, allow_inf_nan=False)  # softens teacher and student alike in the KL
    # Extra texts for the soft loss alone (Parquet, CSV or JSONL); a relative name is looked up in data.path when
    # that is set (e.g. unsup.parquet beside IMDb's train/test files), else in the working directory.
    unlabeled: str | None = None
    unlabeled_text_column: str = "text"
    max_unlabeled: int | None = Field(None, ge=1)  # a random sample of this many (data.split_seed); None: all
    # A model of its own as the student (a name or folder, as model.name takes); None: cut from the teacher.
    student: str | None = None
    # Self-training on the unlabelled texts: keep only those whose teacher's top probability is at least this
    # (None: keep all), and with pseudo_labels give each kept text the teacher's class as a hard label too, so the
    # cross-entropy learns from it as from a labelled review.
    min_confidence: float | None = Field(None, gt=0.0, lt=1.0)
    pseudo_labels: bool = False

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("layers must be a number of layers (e.g. 3) or a non-empty list of layer indices")
            if len(set(value)) != len(value):
                raise ValueError(f"layers {value} repeats an index; list each teacher layer once")
            return sorted(value)
        return value

    @model_validator(mode="after")
    def _no_contradictions(self) -> DistillConfig:
        if self.student is not None and self.layers is not None:
            raise ValueError(
                f"layers chooses the teacher layers a student cut from the teacher keeps, but student "
                f"({self.student}) is a model of its own; remove one of them"
            )
        if self.unlabeled is None:
            unused = [
                key
                for key in ("unlabeled_text_column", "max_unlabeled", "min_confidence", "pseudo_labels")
                if getattr(self, key) != DistillConfig.model_fields[key].default
            ]
            if unused:
                raise ValueError(f"{' and '.join(unused)} apply to the unlabeled texts; set unlabeled or remove them")
        elif self.alpha == 1.0 and not self.pseudo_labels:
            raise ValueError(
                "unlabeled texts feed only the soft loss, which alpha 1.0 switches off; lower alpha, set "
                "pseudo_labels: true (the hard loss then learns them too) or remove unlabeled"
            )
        elif self.pseudo_labels and self.alpha == 0.0:
            raise ValueError(
                "pseudo_labels feed the hard-label loss, which alpha 0 switches off; raise alpha or remove "
                "pseudo_labels"
            )
        return self


class PretrainConfig(_Section):
    """`sentiment-lab pretrain`: masked-LM pre-training of model.name on unlabelled texts (docs/pretraining.md).

    Only `pretrain` reads this section; `train` refuses a config that has one. The texts of the data section's
    validation and test splits (and of `exclude`) are dropped before anything is learnt.
    """

    # Files of texts (Parquet, CSV or JSONL); a relative name is looked up in data.path when that is set (e.g.
    # unsup.parquet beside IMDb's train/test files), else in the working directory.
    texts: list[str] = Field(default_factory=list)
    text_column: str = "text"  # of every file in texts and exclude
    include_train: bool = True  # also the data section's training texts
    # More files whose texts are dropped (beside the data section's validation and test splits, always dropped).
    exclude: list[str] = Field(default_factory=list)
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)  # share of each text's tokens masked (80/10/10 as BERT)
    eval_fraction: float = Field(0.02, gt=0.0, le=0.2)  # texts held out for the perplexity in metrics.json
    max_texts: int | None = Field(None, ge=2)  # a random sample of this many (data.split_seed); None: all

    @model_validator(mode="after")
    def _has_texts(self) -> PretrainConfig:
        if not self.texts and not self.include_train:
            raise ValueError("texts is empty and include_train is false: nothing to pre-train on; name a file in texts")
        return self


class AugmentConfig(_Section):
    """`train`: contextual augmentation of the training split (docs/augmentation.md). Each training text gets
    `copies` more rows in which `replace_fraction` of its words are masked and replaced by words a masked-LM
    samples in their context (Kobayashi 2018; Wu et al. 2019 without the label conditioning). Validation and test
    texts are never augmented."""

    # A masked-LM with a trained head: a `sentiment-lab pretrain` folder (or its model/), or a Hub MLM such as
    # bert-base-uncased. A bare encoder (all-MiniLM-L6-v2 ships without an MLM head) is refused.
    mlm_model: str
    copies: int = Field(1, ge=1, le=16)  # augmented rows per training text
    replace_fraction: float = Field(0.15, gt=0.0, le=0.5)  # of each text's replaceable words (at least one)
    top_k: int = Field(10, ge=1)  # a replacement is sampled among the masked-LM's k likeliest words
    max_length: int | None = Field(None, ge=8, le=4096)  # tokens per masked-LM window; None: tokenization.max_length
    batch_size: int = Field(8, ge=1)  # windows per masked-LM forward pass (its logits are batch x length x vocab)


class ExperimentConfig(_Section):
    """One experiment: everything needed to repeat a run."""

    name: str = "experiment"
    data: DataConfig = Field(default_factory=DataConfig)
    tokenization: TokenizationConfig = Field(default_factory=TokenizationConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    distill: DistillConfig | None = None  # `sentiment-lab distill` only
    pretrain: PretrainConfig | None = None  # `sentiment-lab pretrain` only
    augment: AugmentConfig | None = None  # `sentiment-lab train` only: augmented copies of the training texts

    @model_validator(mode="after")
    def _stopping_needs_validation(self) -> ExperimentConfig:
        if self.training.early_stopping_patience and not self.data.has_validation_split:
            raise ValueError(
                "training.early_stopping_patience needs a validation split, but data.val_fraction is 0; "
                "remove early_stopping_patience or give val_fraction > 0"
            )
        return self


def validation_problems(err: ValidationError) -> list[str]:
    """One line per problem of a pydantic validation error, naming the dotted key (for configs, sweeps, spaces)."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{where}': remove it or check its spelling")
        else:
            lines.append(f"'{where}': {e['msg']} (got {e.get('input')!r})")
    return lines


def _format_validation_error(err: ValidationError, source: str) -> str:
    return f"invalid config {source}:\n  " + "\n  ".join(validation_problems(err))


def override_value(value: Any) -> str:
    """A value as the YAML text of a `key=value` override (round-trips floats like 1.0e-05)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).removesuffix("...\n").strip()


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse `training.learning_rate=3e-5` into (['training', 'learning_rate'], 3e-5); values are YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value (e.g. training.epochs=2)")
    key, raw = item.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from None
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of a raw config dict with `key.sub=value` overrides applied."""
    out = copy.deepcopy(raw)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            if node.get(k) is None:  # absent, or an optional section that is off (a resolved `model.lora: null`)
                node[k] = {}
            if not isinstance(node[k], dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
            node = node[k]
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a safe loader and a size limit (no tags, no alias bombs)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (give the path to a YAML file, e.g. configs/quickstart.yaml)")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {p} is larger than {MAX_CONFIG_BYTES} bytes; is it really a config?")
    text = p.read_text(encoding="utf-8")
    if any(line[: len(line) - len(line.lstrip())].count("\t") for line in text.splitlines()):
        raise ConfigError(f"config file {p} indents with tabs; YAML needs spaces")
    try:
        # The safe loader builds only plain types. Aliases are measured on the node graph before anything is
        # built: a few hundred bytes of nested aliases (billion laughs) would expand to billions of values.
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None and expanded_node_count(root) > MAX_CONFIG_NODES:
                raise ConfigError(
                    f"config file {p} expands to more than {MAX_CONFIG_NODES} values through YAML aliases "
                    "(an alias bomb?); refused"
                )
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections (data:, model:, training: ...)")
    return data


def expanded_node_count(root: yaml.Node) -> int:
    """How many values a composed YAML document holds once every alias is expanded (memoised: linear time)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if sizes.get(id(node)) == 0:  # still being measured: the node contains itself
            raise ConfigError("a YAML anchor refers to itself (a recursive alias); configs cannot be recursive")
        if id(node) not in sizes:
            sizes[id(node)] = 0
            if isinstance(node, yaml.SequenceNode):
                sizes[id(node)] = 1 + sum(size(child) for child in node.value)
            elif isinstance(node, yaml.MappingNode):
                sizes[id(node)] = 1 + sum(size(k) + size(v) for k, v in node.value)
            else:
                sizes[id(node)] = 1
        return sizes[id(node)]

    return size(root)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a config YAML with its `base:` chain resolved: the base's keys, then the file's own merged over them.

    `base: other.yaml` (relative to the file that holds it) may itself name a base; every file of the chain is
    read with `read_yaml`'s checks. The result has no `base` key.
    """
    return _read_config_chain(Path(path), [])


def _read_config_chain(path: Path, chain: list[Path]) -> dict[str, Any]:
    raw = read_yaml(path)
    if "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(
            f"config file {path}: `base:` must be the path of another config YAML (e.g. base: quickstart.yaml), "
            f"got {base!r}"
        )
    base_path = Path(base).expanduser()
    base_path = base_path if base_path.is_absolute() else path.parent / base_path
    if not base_path.is_file():
        raise ConfigError(
            f"config file {path}: base {base!r} not found (looked at {base_path}); `base:` is relative to the "
            "file that holds it"
        )
    seen = [*chain, path.resolve()]
    if base_path.resolve() in seen:
        loop = " -> ".join(str(p) for p in [*seen, base_path.resolve()])
        raise ConfigError(f"config file {path}: `base:` chain is a cycle ({loop}); remove the `base:` that points back")
    return merge_configs(_read_config_chain(base_path, seen), raw)


def merge_configs(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `child` merged over it: mappings merge key by key, any other value replaces."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_config(raw: dict[str, Any], source: str = "(dict)") -> ExperimentConfig:
    """Validate a raw dict into an ExperimentConfig, raising ConfigError with every problem listed."""
    if "base" in raw:  # resolved when a file is read; here pydantic would call it an unknown key
        raise ConfigError(
            f"config {source}: `base` is resolved only when a config file is read (load_config, read_config), "
            "not from a dict or --set; remove it"
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, data_path: str | None = None
) -> ExperimentConfig:
    """Load a YAML config (or the defaults) with its `base:` chain, apply overrides and `--data`, and validate it.

    data_path: a data folder or file that replaces `data.path` (the CLI's `--data`).
    """
    raw = read_config(path) if path else {}
    raw = apply_overrides(raw, overrides or [])
    cfg = build_config(raw, str(path) if path else "(defaults)")
    if data_path:
        cfg.data.path = str(Path(data_path).expanduser().resolve())
        if cfg.data.source == "hub":
            cfg.data.source = "local"
    elif cfg.data.source == "imdb" and not cfg.data.path and os.environ.get("IMDB_DIR"):
        cfg.data.path = str(Path(os.environ["IMDB_DIR"]).expanduser().resolve())
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """Plain dict of a config, in YAML-friendly types."""
    return cfg.model_dump(mode="json")
