import json
import shutil

import pytest

from conftest import ARCHITECTURES, build_tiny_model_dir, tiny_classifier_config
from sentiment_lab.config import ModelConfig
from sentiment_lab.errors import ModelError
from sentiment_lab.modeling import (
    apply_freezing,
    architecture_names,
    build_model,
    count_parameters,
    encoder_layers,
    load_classifier,
    load_tokenizer,
    optimizer_param_groups,
    resolve_attention_dropout,
    resolve_model_name,
)


def test_aliases():
    assert resolve_model_name("distilbert") == "distilbert-base-uncased"
    assert resolve_model_name("bert-base") == "bert-base-uncased"
    assert resolve_model_name("minilm-l6").endswith("model")  # the packaged offline folder
    assert resolve_model_name("my-org/my-model") == "my-org/my-model"


def test_labels_and_dropout(tiny_model_dir):
    model = build_model(ModelConfig(name=str(tiny_model_dir), dropout=0.3))
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert model.config.classifier_dropout == 0.3
    assert model.dropout.p == 0.3


def test_attention_dropout_auto_is_off_on_cpu_and_the_models_own_on_cuda(tiny_model_dir):
    assert resolve_attention_dropout("auto", cuda=False) == 0.0
    assert resolve_attention_dropout("auto", cuda=True) is None
    assert resolve_attention_dropout(0.2, cuda=True) == 0.2
    model = build_model(ModelConfig(name=str(tiny_model_dir)))  # this machine has no CUDA: auto -> 0
    assert model.config.attention_probs_dropout_prob == 0.0
    assert model.config.hidden_dropout_prob == 0.1  # only the attention dropout changes
    model = build_model(ModelConfig(name=str(tiny_model_dir), attention_dropout=0.25))
    assert model.config.attention_probs_dropout_prob == 0.25
    assert (
        build_model(ModelConfig(name=str(tiny_model_dir), attention_dropout=None)).config.attention_probs_dropout_prob
        == 0.1
    )


def test_freezing(tiny_model_dir):
    full = count_parameters(build_model(ModelConfig(name=str(tiny_model_dir))))
    model = build_model(ModelConfig(name=str(tiny_model_dir), freeze_embeddings=True, freeze_layers=1))
    frozen = count_parameters(model)
    layers = encoder_layers(model)
    assert all(not p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert all(not p.requires_grad for p in model.base_model.embeddings.parameters())
    emb = sum(p.numel() for p in model.base_model.embeddings.parameters())
    layer0 = sum(p.numel() for p in layers[0].parameters())
    assert frozen["trainable"] == full["trainable"] - emb - layer0
    with pytest.raises(ModelError, match="only 2 layers"):
        build_model(ModelConfig(name=str(tiny_model_dir), freeze_layers=3))


def test_llrd_groups(tiny_model_dir):
    model = build_model(ModelConfig(name=str(tiny_model_dir)))
    groups = optimizer_param_groups(model, 1e-3, 0.01, llrd=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    layers = encoder_layers(model)
    assert lr_of[id(model.classifier.weight)] == pytest.approx(1e-3)
    assert lr_of[id(layers[1].output.dense.weight)] == pytest.approx(1e-3)  # the top layer at the base rate
    assert lr_of[id(layers[0].output.dense.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr_of[id(model.base_model.embeddings.word_embeddings.weight)] == pytest.approx(1e-3 * 0.25)
    assert wd_of[id(layers[0].output.dense.bias)] == 0.0
    assert wd_of[id(layers[0].output.LayerNorm.weight)] == 0.0
    assert wd_of[id(layers[0].output.dense.weight)] == 0.01
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


# Where each architecture keeps its blocks and its head (everything outside the embeddings and the blocks).
LAYER_PATHS = {
    "bert": "bert.encoder.layer",
    "distilbert": "distilbert.transformer.layer",
    "roberta": "roberta.encoder.layer",
}
HEADS = {
    "bert": {"bert.pooler.dense", "classifier"},
    "distilbert": {"pre_classifier", "classifier"},
    "roberta": {"classifier.dense", "classifier.out_proj"},
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_llrd_puts_the_top_layer_at_the_base_rate(arch):
    """Seed 002's recipe on a 6-layer model of each architecture: lr * 0.95**(5 - i) for layer i, lr * 0.95**6 for the
    embeddings, lr for the head; every trainable parameter in exactly one group, frozen ones in none."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_classifier_config(arch, vocab_size=100, layers=6))
    apply_freezing(model, freeze_embeddings=False, freeze_layers=1)
    groups = optimizer_param_groups(model, 2e-5, 0.01, llrd=0.95)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped)) and sorted(grouped) == sorted(trainable)
    lr_of = {name: g["lr"] for name, p in model.named_parameters() for g in groups if any(p is q for q in g["params"])}

    layers = encoder_layers(model)
    assert layers is model.get_submodule(LAYER_PATHS[arch]) and len(layers) == 6
    prefix = LAYER_PATHS[arch] + "."
    for name, lr in lr_of.items():
        if name.startswith(prefix):
            i = int(name.removeprefix(prefix).split(".")[0])
            assert i >= 1 and lr == pytest.approx(2e-5 * 0.95 ** (5 - i), rel=1e-12), name
        elif ".embeddings." in name:
            assert lr == pytest.approx(2e-5 * 0.95**6, rel=1e-12), name
        else:
            assert name.rsplit(".", 1)[0] in HEADS[arch] and lr == 2e-5, name
    assert {n.rsplit(".", 1)[0] for n in lr_of if not n.startswith(prefix) and ".embeddings." not in n} == HEADS[arch]
    top = lr_of[f"{prefix}5.{next(n for n, _ in layers[5].named_parameters())}"]
    embeddings = lr_of[next(n for n in lr_of if ".embeddings." in n)]
    assert f"{top:.2e}" == "2.00e-05" and f"{embeddings:.4e}" == "1.4702e-05" and f"{embeddings:.2e}" == "1.47e-05"
    assert not any(n.startswith(f"{prefix}0.") for n in lr_of)  # frozen: in no group


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dropouts_reach_each_architectures_own_config_keys(arch, tmp_path, imdb_sample):
    folder = build_tiny_model_dir(tmp_path / arch, imdb_sample["text"].head(50).tolist(), arch=arch, max_length=64)
    model = build_model(ModelConfig(name=str(folder), dropout=0.3, attention_dropout=0.2))
    names = architecture_names(model.config.model_type)
    assert getattr(model.config, names.classifier_dropout) == 0.3
    assert getattr(model.config, names.attention_dropout) == 0.2
    head_dropout = model.classifier.dropout if arch == "roberta" else model.dropout
    assert head_dropout.p == 0.3
    attention = encoder_layers(model)[0].attention
    assert (attention.dropout if arch == "distilbert" else attention.self.dropout).p == 0.2


def test_unknown_model_offline_is_clear(monkeypatch):
    import huggingface_hub.constants

    # Same code path as a failed download, without waiting for network time-outs.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="cannot load model 'no-such-org/no-such-model'"):
        build_model(ModelConfig(name="no-such-org/no-such-model"))
    with pytest.raises(ModelError, match="minilm-l6"):
        load_tokenizer("no-such-org/no-such-model")


def test_pickle_weights_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_classifier(folder)


def test_remote_code_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="remote code"):
        load_classifier(folder)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_classifier(tmp_path)


def test_pickle_weights_load_with_allow_pickle(tiny_model_dir, tmp_path):
    import torch

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    reference = load_classifier(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(reference, folder / "pytorch_model.bin")  # a real pickle this time
    with pytest.raises(ModelError, match="--allow-pickle"):
        load_classifier(folder)
    loaded = load_classifier(folder, allow_pickle=True).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


def test_cli_accepts_allow_pickle(tiny_model_dir, tmp_path, capsys):
    import torch

    from sentiment_lab.cli import main

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_classifier(folder).state_dict(), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    assert main(["predict", str(folder), "A fine film."]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["predict", str(folder), "A fine film.", "--allow-pickle"]) == 0


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def test_model_folder_without_tokenizer_is_refused(tiny_model_dir, tmp_path):
    from sentiment_lab.predictor import Predictor

    folder = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_model_dir, folder)
    for name in TOKENIZER_FILES:
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(ModelError, match="tokenizer"):
        load_tokenizer(str(folder))
    with pytest.raises(ModelError, match="tokenizer"):
        Predictor.load(folder)
