"""LoRA through peft (`model.lora`, docs/lora.md): the config, the target check, and tiny LoRA runs of each
architecture whose merged model/ loads without peft and whose adapter alone, on the untrained base, predicts the
same."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback

from conftest import REPO, tiny_classifier_config, tiny_config
from sentiment_lab.config import (
    LoraConfig,
    apply_overrides,
    build_config,
    config_to_dict,
    load_config,
    read_config,
)
from sentiment_lab.errors import ConfigError
from sentiment_lab.lora import PEFT_MISSING, apply_lora, head_module_names, parameter_counts
from sentiment_lab.modeling import architecture_names, load_tokenizer
from sentiment_lab.precision import ResolvedPrecision
from sentiment_lab.predictor import Predictor
from sentiment_lab.rundir import complete_checkpoints, last_checkpoint
from sentiment_lab.runners import compute_logits
from sentiment_lab.sidecar import read_sidecar
from sentiment_lab.training import train

# The config tests and the missing-peft error need no peft; everything that wraps a model does (`make test`
# installs the `lora` extra, so CI runs them all).
needs_peft = pytest.mark.skipif(
    importlib.util.find_spec("peft") is None, reason="the `lora` extra (pip install 'sentiment-lab[lora]')"
)

AUTO_TARGETS = {"bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "roberta": ["query", "value"]}
HEADS = {
    "bert": ["classifier", "bert.pooler"],
    "distilbert": ["pre_classifier", "classifier"],
    "roberta": ["classifier"],
}


def _model(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(tiny_classifier_config(arch, vocab_size=100))


def _lora(arch: str, **lora: object) -> torch.nn.Module:
    model = _model(arch)
    return apply_lora(model, LoraConfig(**lora), architecture_names(model.config.model_type).lora_targets)


# --- config ---------------------------------------------------------------------------------------------------


def test_lora_section_defaults_and_round_trip():
    cfg = build_config({"model": {"lora": {}}})
    assert cfg.model.lora == LoraConfig(r=8, alpha=16, dropout=0.1, target_modules="auto")
    assert build_config(config_to_dict(cfg)) == cfg
    assert build_config({}).model.lora is None  # off unless asked for
    named = build_config({"model": {"lora": {"target_modules": "query"}}})  # one name, as --set gives it
    assert named.model.lora.target_modules == ["query"]


@pytest.mark.parametrize(
    "lora, problem",
    [
        ({"r": 0}, "model.lora.r"),
        ({"dropout": 1.0}, "model.lora.dropout"),
        ({"alpha": 0}, "model.lora.alpha"),
        ({"target_modules": []}, "target_modules must be auto or a list"),
        ({"target_modules": ["query", " "]}, "target_modules must be auto or a list"),
        ({"rank": 8}, "unknown key 'model.lora.rank'"),
    ],
)
def test_lora_section_refuses_bad_values(lora, problem):
    with pytest.raises(ConfigError, match=problem):
        build_config({"model": {"lora": lora}})


@pytest.mark.parametrize("setting", [{"llrd": 0.9}, {"freeze_layers": 2}, {"freeze_embeddings": True}])
def test_lora_refuses_freezing_and_llrd_which_would_do_nothing(setting):
    key = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"so model\.{key} .*would do nothing; remove it, or remove model\.lora"):
        build_config({"model": {"lora": {}, **setting}})
    build_config({"model": setting})  # fine without LoRA


def test_set_overrides_create_the_lora_section():
    raw = read_config(REPO / "configs" / "quickstart.yaml")
    cfg = build_config(apply_overrides(raw, ["model.lora.r=16", "model.lora.target_modules=[query, key, value]"]))
    assert cfg.model.lora.r == 16 and cfg.model.lora.target_modules == ["query", "key", "value"]
    # A resolved config (a run's config.yaml, tune's best_config.yaml) says `lora: null`: the whole section is set.
    resolved = config_to_dict(build_config(raw))
    assert build_config(apply_overrides(resolved, ["model.lora={}"])).model.lora == LoraConfig()
    assert build_config(apply_overrides(resolved, ["model.lora={r: 4}"])).model.lora.r == 4


def test_lora_preset_turns_lora_on_over_the_quickstart():
    full, lora = (
        load_config(REPO / "configs" / "quickstart.yaml"),
        load_config(REPO / "configs" / "quickstart-lora.yaml"),
    )
    assert full.model.lora is None and lora.model.lora == LoraConfig()
    assert lora.data == full.data and lora.training.epochs == full.training.epochs  # the same study, LoRA's rate
    assert lora.training.learning_rate > full.training.learning_rate


# --- wrapping -------------------------------------------------------------------------------------------------


@needs_peft
@pytest.mark.parametrize("arch", sorted(AUTO_TARGETS))
def test_auto_targets_and_head_per_architecture(arch):
    model = _lora(arch)
    assert sorted(model.peft_config["default"].target_modules) == AUTO_TARGETS[arch]
    assert head_module_names(model.get_base_model()) == HEADS[arch]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name or ".modules_to_save." in name for name in trainable)
    # every head module trains (the peft pitfall: an untrained head predicts at random)
    for head in HEADS[arch]:
        assert any(f"{head}.modules_to_save." in name for name in trainable), head
    counts = parameter_counts(model)
    plain = sum(p.numel() for p in _model(arch).parameters())
    assert counts["total"] == plain  # the merged model's size: no adapter, no second copy of the head
    assert 0 < counts["trainable"] < counts["total"] / 10


@needs_peft
def test_unknown_target_is_refused_listing_the_models_linear_layers():
    with pytest.raises(ConfigError) as info:
        _lora("distilbert", target_modules=["query", "v_lin", "attention"])
    message = str(info.value)
    assert "\n" not in message
    assert "no encoder linear layer named 'query', 'attention'" in message
    assert "k_lin, lin1, lin2, out_lin, q_lin, v_lin" in message  # short, sorted, deduplicated leaf names
    assert "the head, pre_classifier, classifier, is trained in full" in message


@needs_peft
def test_head_modules_cannot_be_targets():
    with pytest.raises(ConfigError, match="no encoder linear layer named 'classifier'"):
        _lora("bert", target_modules=["classifier"])


def test_a_missing_peft_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    with pytest.raises(ConfigError, match=r"^model\.lora needs peft: pip install 'sentiment-lab\[lora\]'$"):
        _lora("bert")
    assert PEFT_MISSING.startswith("model.lora needs peft")


@needs_peft
def test_a_bad_target_stops_train_before_the_run_folder(tmp_path, tiny_model_dir, imdb_dir, tiny_splits):
    raw = tiny_config(tiny_model_dir, imdb_dir)
    raw["model"]["lora"] = {"target_modules": ["q_lin"]}
    with pytest.raises(ConfigError, match="its linear layers are dense, key, query, value"):
        train(build_config(raw), tmp_path / "run", splits=tiny_splits)
    assert not (tmp_path / "run").exists()


# --- tiny LoRA runs -------------------------------------------------------------------------------------------


class OptimizedParameters(TrainerCallback):
    """Counts the parameters the Trainer's optimizer updates."""

    count = 0

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.count = sum(p.numel() for group in optimizer.param_groups for p in group["params"])


def _lora_config(model_dir: Path, data_dir: Path, **training: object) -> dict:
    raw = tiny_config(model_dir, data_dir, epochs=2, keep_checkpoints=True, save_total_limit=None, **training)
    raw["model"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0}
    raw["evaluation"] = {"baselines": False}
    return raw


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, arch_model_dir, imdb_dir, tiny_splits) -> tuple[Path, int]:
    """A finished LoRA run of each architecture (8 steps, checkpoints 4 and 8 kept) and its optimizer's size.

    With class weights: the weighted-loss Trainer calls the peft model as the plain one's.
    """
    run = tmp_path_factory.mktemp("lora-runs") / f"{arch_model_dir.name}-lora"
    seen = OptimizedParameters()
    raw = _lora_config(arch_model_dir, imdb_dir, class_weights="balanced")
    train(build_config(raw), run, splits=tiny_splits, callbacks=[seen])
    return run, seen.count


def _saved_logits(run: Path) -> np.ndarray:
    return pd.read_parquet(run / "predictions.parquet")[["logit_neg", "logit_pos"]].to_numpy()


def _test_logits(run: Path, model: torch.nn.Module, autocast: torch.dtype | None = None) -> np.ndarray:
    folder = run / "model"
    tokenizer = load_tokenizer(str(folder))
    texts = pd.read_parquet(run / "predictions.parquet")["text"].tolist()
    return compute_logits(model.eval(), tokenizer, texts, read_sidecar(folder, tokenizer).text, 64, autocast)


@needs_peft
def test_lora_run_saves_a_plain_model_and_the_adapter(lora_run, arch_model_dir):
    run, optimized = lora_run
    arch = arch_model_dir.name
    model_dir = run / "model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (model_dir / "adapter").iterdir()}
    weights = load_file(model_dir / "model.safetensors")
    assert not [k for k in weights if "lora_" in k or "modules_to_save" in k or "base_layer" in k]
    adapter = load_file(model_dir / "adapter" / "adapter_model.safetensors")
    for head in HEADS[arch]:  # the head is saved with the adapter
        assert any(f"{head}." in k and "lora_" not in k for k in adapter), head

    metrics = json.loads((run / "metrics.json").read_text())
    lora = metrics["lora"]
    assert lora["target_modules"] == AUTO_TARGETS[arch] and lora["r"] == 4
    assert 0 < lora["trainable_parameters"] < lora["total_parameters"] / 10
    assert lora["total_parameters"] == sum(w.numel() for w in weights.values())
    assert lora["adapter_bytes"] == sum(p.stat().st_size for p in (model_dir / "adapter").iterdir())
    assert optimized == lora["trainable_parameters"]  # the optimizer holds the adapters and the head only

    card = (model_dir / "README.md").read_text()
    assert f"r 4, alpha 8.0, dropout 0.0 on {', '.join(AUTO_TARGETS[arch])}, head trained in full" in card

    from sentiment_lab.push import plan_push

    pushed = {f.path_in_repo for f in plan_push(run, "alice/lora-tiny").files}  # the adapter goes to the Hub too
    assert {"model.safetensors", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= pushed

    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["lora"]["target_modules"] == "auto"
    assert resolved["resolved"]["lora_target_modules"] == AUTO_TARGETS[arch]
    assert resolved["resolved"]["parameters"] == {"total": lora["total_parameters"], "trainable": optimized}


@needs_peft
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft 0.21 on transformers 5
def test_merged_model_predicts_as_the_adapter_on_the_untrained_base(lora_run, arch_model_dir):
    """model/ loads with plain transformers and gives the logits of the LoRA model before merging: the base
    model as it was before training plus the saved adapter (head included), which is what peft users reload."""
    run, _ = lora_run
    plain = AutoModelForSequenceClassification.from_pretrained(run / "model")
    assert type(plain).__module__.startswith("transformers.")
    merged = _test_logits(run, plain)
    base = AutoModelForSequenceClassification.from_pretrained(arch_model_dir)
    from peft import PeftModel  # the `lora` extra: this test is skipped without it

    unmerged = _test_logits(run, PeftModel.from_pretrained(base, run / "model" / "adapter"))
    np.testing.assert_allclose(merged, unmerged, atol=1e-5, rtol=1e-4)
    # the run's own test predictions are those of the saved model, scored in the run's precision (bf16 on a CPU
    # that has it)
    precision = yaml.safe_load((run / "config.yaml").read_text())["resolved"]["precision"]
    scored = _test_logits(run, plain, ResolvedPrecision(precision, "native", "cpu").autocast_dtype)
    np.testing.assert_allclose(_saved_logits(run), scored, atol=1e-5, rtol=1e-4)


@needs_peft
def test_lora_trains_the_head_and_the_targets_only(lora_run, arch_model_dir):
    run, _ = lora_run
    arch = arch_model_dir.name
    before = AutoModelForSequenceClassification.from_pretrained(arch_model_dir).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(run / "model").state_dict()
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    heads = HEADS[arch]
    for head in heads:  # the pitfall: a head left at its initialisation
        assert any(name.startswith(head + ".") for name in changed), f"{head} was not trained"
    targets = tuple(f".{t}.weight" for t in AUTO_TARGETS[arch])
    assert any(name.endswith(targets) for name in changed)
    # nothing else moved: LoRA merges into the target weights only (their biases, like every other weight, stay)
    assert all(name.endswith(targets) or any(name.startswith(h + ".") for h in heads) for name in changed)


@needs_peft
def test_lora_model_serves_with_the_predictor(lora_run):
    run, _ = lora_run
    out = Predictor.load(run / "model").predict(["a wonderful film", "a dull, terrible film"])
    assert len(out) == 2 and {o["label"] for o in out} <= {"NEGATIVE", "POSITIVE"}


@needs_peft
def test_lora_run_resumes_at_the_saved_step(tmp_path, tiny_model_dir, imdb_dir, tiny_splits):
    """Kill a LoRA run after its first checkpoint (an adapter checkpoint) and resume: the same final model."""
    run = tmp_path / "run"
    raw = _lora_config(tiny_model_dir, imdb_dir)
    full = train(build_config(raw), run, splits=tiny_splits)
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-4", "checkpoint-8"]
    assert (run / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors").is_file()
    first = _saved_logits(run)
    shutil.rmtree(run / "checkpoints" / "checkpoint-8")
    for name in ("metrics.json", "predictions.parquet", "val_predictions.parquet"):
        (run / name).unlink()
    shutil.rmtree(run / "model")
    assert last_checkpoint(run).name == "checkpoint-4"

    raw["training"]["resume"] = True
    resumed = train(build_config(raw), run, splits=tiny_splits)
    assert resumed["resumed_from"] == "checkpoint-4"
    assert resumed["global_step"] == full["global_step"] == 8
    assert resumed["lora"] == full["lora"]
    np.testing.assert_allclose(_saved_logits(run), first, atol=1e-5, rtol=1e-4)


def test_a_dotted_override_turns_on_an_optional_section_that_is_off():
    """A resolved config.yaml holds `lora: null`; `--set model.lora.r=16` still creates the section."""
    resolved = config_to_dict(build_config({}))
    assert resolved["model"]["lora"] is None
    cfg = build_config(apply_overrides(resolved, ["model.lora.r=16"]))
    assert cfg.model.lora is not None and cfg.model.lora.r == 16
