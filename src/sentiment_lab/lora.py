"""LoRA through peft (`model.lora`): low-rank adapters on a classifier's linear layers, its head trained in full.

The head is listed in peft's `modules_to_save`, so it trains and is saved with the adapter: without that, a
classifier's new head stays at its random initialisation (frozen with everything else) and a base model reloaded
with the adapter alone gets another random head and predicts at random (the known peft pitfall). For saving, the
adapter is merged into the weights (`merge_for_save`), so `model/` is a plain transformers folder that loads
without peft; the adapter alone is kept beside it (`rundir.ADAPTER_DIR`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from sentiment_lab.config import LoraConfig
from sentiment_lab.errors import ConfigError

PEFT_MISSING = "model.lora needs peft: pip install 'sentiment-lab[lora]'"


def _peft() -> Any:
    try:
        import peft  # optional (the `lora` extra): only runs with model.lora need it installed
    except ImportError:
        raise ConfigError(PEFT_MISSING) from None
    return peft


def head_module_names(model: nn.Module) -> list[str]:
    """The dotted names of the classifier head's modules: every child of the model with parameters beside the
    encoder (classifier; DistilBERT's pre_classifier) and the encoder's pooler, if it has one.

    BERT's pooler (MiniLM's too) feeds the classifier; trained in full as in full fine-tuning, and saved with the
    adapter, so a base checkpoint without pooler weights (randomly initialised on each load) cannot spoil a reload.
    """
    base = model.base_model
    names = [
        name for name, child in model.named_children() if child is not base and any(True for _ in child.parameters())
    ]
    pooler = getattr(base, "pooler", None)
    if isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
        names.append(f"{model.base_model_prefix}.pooler")
    return names


def _is_linear(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2 style) is a linear layer too, and peft adapts it
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def encoder_linear_names(model: nn.Module) -> list[str]:
    """The dotted names of the linear layers LoRA can adapt: every one outside the classifier head."""
    head = head_module_names(model)
    return [name for name, module in model.named_modules() if _is_linear(module) and not _under(name, head)]


def check_targets(model: nn.Module, targets: Sequence[str]) -> None:
    """Refuse target names that match none of the model's encoder linear layers, listing the names it has.

    A name matches as peft matches it: the whole dotted module name, or its last parts (`query` matches
    `bert.encoder.layer.0.attention.self.query`).
    """
    linear = encoder_linear_names(model)
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in linear)]
    if missing:
        leaves = sorted({name.rsplit(".", 1)[-1] for name in linear})
        head = ", ".join(n.rsplit(".", 1)[-1] for n in head_module_names(model))
        raise ConfigError(
            f"model.lora.target_modules: the {model.config.model_type} model has no encoder linear layer named "
            f"{', '.join(map(repr, missing))}; its linear layers are {', '.join(leaves)} (the head, {head}, is "
            "trained in full); name some of those, or use auto"
        )


def resolve_targets(cfg: LoraConfig, auto_targets: Sequence[str]) -> list[str]:
    """The target module names of the config: its own list, or the architecture's for `auto`."""
    return list(auto_targets) if cfg.target_modules == "auto" else list(cfg.target_modules)


def apply_lora(model: nn.Module, cfg: LoraConfig, auto_targets: Sequence[str]) -> nn.Module:
    """Wrap a sequence classifier in a peft LoRA model: adapters on the target modules, the head in full.

    auto_targets: the architecture's attention query/value names (`modeling.ArchitectureNames.lora_targets`),
    used when `target_modules` is auto. Every pretrained weight is frozen; only the adapters and the head train.
    """
    peft = _peft()  # before the checks: without peft, nothing else about model.lora matters
    targets = resolve_targets(cfg, auto_targets)
    check_targets(model, targets)
    head = head_module_names(model)
    peft_config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        modules_to_save=head,
    )
    with warnings.catch_warnings():
        # peft (0.21) asks transformers 5 for `is_gradient_checkpointing`, deprecated for v6: a warning per run
        # that the user can do nothing about
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return peft.get_peft_model(model, peft_config)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters of a LoRA model: total, those of the plain model it merges into; trainable, adapters and head.

    peft keeps the head twice (the original, frozen, and the trained copy) and the adapters beside the weights
    they adapt; neither is part of the merged model, so neither counts in the total.
    """
    total = sum(
        p.numel() for name, p in model.named_parameters() if "lora_" not in name and ".modules_to_save." not in name
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def target_modules(model: nn.Module) -> list[str]:
    """The module names a LoRA model's adapters were put on (as configured, `auto` resolved)."""
    return sorted(model.peft_config["default"].target_modules)


def save_adapter(model: nn.Module, folder: Path) -> int:
    """Save the adapter alone (adapter_config.json, adapter_model.safetensors with the head); its size in bytes."""
    model.save_pretrained(str(folder))
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def merge_for_save(model: nn.Module) -> nn.Module:
    """The plain transformers model of a LoRA model: adapters merged into the weights, the trained head in place.

    Changes the LoRA model in place (peft's merge_and_unload); use the returned model afterwards.
    """
    return model.merge_and_unload()
