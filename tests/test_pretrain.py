"""`sentiment-lab pretrain`: masked-LM pre-training on unlabelled texts. Evaluation texts dropped and counted, the
output fine-tuned by `train`, resume after a kill, and one-line refusals (tiny models on a synthetic dataset: seconds
each)."""

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model_dir
from sentiment_lab.config import ModelConfig, build_config
from sentiment_lab.data import prepare_data
from sentiment_lab.errors import ConfigError, DataError, ModelError
from sentiment_lab.modeling import build_model, resolve_model_name
from sentiment_lab.pretrain import MIN_TOKENS, collect_texts, pretrain
from sentiment_lab.training import train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, imdb_sample) -> Path:
    """A labelled dataset (40 train, 10 validation, 20 test reviews) and unsup.parquet: 30 new reviews, 3 test
    reviews, 1 training review, 1 repeated review and 1 empty text."""
    folder = tmp_path_factory.mktemp("pretrain-data")
    rows = imdb_sample[["text", "label"]]
    rows.iloc[:40].to_parquet(folder / "train.parquet")
    rows.iloc[40:60].to_parquet(folder / "test.parquet")
    rows.iloc[90:100].to_parquet(folder / "val.parquet")
    new = rows["text"].iloc[60:90].tolist()
    unsup = [*new, *rows["text"].iloc[40:43], rows["text"].iloc[0], new[0], ""]
    pd.DataFrame({"review": unsup}).to_parquet(folder / "unsup.parquet")
    return folder


FILES = {"train_file": "train.parquet", "val_file": "val.parquet", "test_file": "test.parquet"}


def _config(model: Path, data: Path, **pretrain_section) -> dict:
    return {
        "name": "tiny-pretrain",
        "data": {"path": str(data), **FILES},
        "tokenization": {"max_length": 64},
        "model": {"name": str(model)},
        "training": {"learning_rate": 1e-3, "batch_size": 8, "max_steps": 4, "logging_steps": 1, "seed": 0},
        "pretrain": {"texts": ["unsup.parquet"], "text_column": "review", **pretrain_section},
    }


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, imdb_sample) -> Path:
    return build_tiny_model_dir(
        tmp_path_factory.mktemp("pt-bert") / "bert", imdb_sample["text"].tolist(), max_length=64
    )


def test_texts_in_the_evaluation_sets_are_dropped_and_counted(data_dir, tmp_path, caplog):
    cfg = build_config(_config(Path("unused"), data_dir))
    splits = prepare_data(cfg.data)
    with caplog.at_level(logging.INFO, logger="sentiment_lab"):
        frame, facts = collect_texts(cfg, splits)
    unsup = facts["sources"][str(data_dir / "unsup.parquet")]
    assert unsup == {"rows": 36, "empty": 1, "repeated": 1, "in_evaluation_sets": 3, "used": 31}
    assert "dropped 3 unlabelled texts that occur in the validation and test sets" in caplog.text
    # the one training review in unsup.parquet is learnt once; no validation or test text is learnt at all
    assert facts["used"] == len(splits.train) + 30 and facts["repeated"] == 2
    assert not set(frame["text"]) & (set(splits.val["text"]) | set(splits.test["text"]))
    assert frame["text"].is_unique

    # a validation text in the unlabelled file, and an exclude file: dropped too
    val_text = splits.val["text"].iloc[0]
    pd.DataFrame({"review": [val_text, "a fine film", "a dull film"]}).to_parquet(tmp_path / "more.parquet")
    pd.DataFrame({"review": ["a dull film"]}).to_parquet(tmp_path / "held.parquet")
    raw = _config(
        Path("unused"), data_dir, texts=[str(tmp_path / "more.parquet")], exclude=[str(tmp_path / "held.parquet")]
    )
    raw["pretrain"]["include_train"] = False
    frame, facts = collect_texts(build_config(raw), splits)
    assert frame["text"].tolist() == ["a fine film"] and facts["in_evaluation_sets"] == 2


def _encoder(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and ".pooler." not in f".{k}"}


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_pretrained_folder_fine_tunes_from_its_encoder(arch, data_dir, tmp_path, imdb_sample, caplog):
    source = build_tiny_model_dir(tmp_path / arch, imdb_sample["text"].tolist(), arch=arch, max_length=64)
    out = tmp_path / "pretrained"
    with caplog.at_level(logging.INFO, logger="sentiment_lab"):
        metrics = pretrain(build_config(_config(source, data_dir)), out)
    assert "has no masked-LM head: a new one is trained" in caplog.text  # the tiny classifier has none
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "train.log", "history.csv", "model", "metrics.json"}
    assert not (out / "checkpoints").exists()
    assert metrics["global_step"] == 4 and metrics["texts"]["in_evaluation_sets"] == 3
    assert metrics["eval_perplexity"] > 1 and metrics["texts"]["eval"] >= 1
    assert json.loads((out / "metrics.json").read_text())["dropped_in_evaluation_sets"] == 3
    log = (out / "train.log").read_text()
    assert "dropped 3 unlabelled texts" in log and "new masked-LM head" in log

    # The classifier built from it (the run folder itself is a model.name) starts from the pre-trained encoder
    assert resolve_model_name(str(out)) == str(out / "model")
    saved = load_file(str(out / "model" / "model.safetensors"))
    classifier = build_model(ModelConfig(name=str(out)))
    prefix = classifier.base_model_prefix + "."
    encoder = _encoder(classifier.state_dict(), prefix)
    pretrained = _encoder(saved, prefix)
    assert set(pretrained) <= set(encoder) and len(pretrained) > 10
    assert all(torch.equal(encoder[k], pretrained[k]) for k in pretrained)
    original = load_file(str(source / "model.safetensors"))
    assert not torch.equal(
        encoder["embeddings.word_embeddings.weight"], original[prefix + "embeddings.word_embeddings.weight"]
    )
    pooler = [k for k in original if ".pooler." in k]  # BERT's pooler: kept as it came (DistilBERT has none)
    assert all(torch.equal(classifier.state_dict()[k], original[k]) for k in pooler)
    assert bool(pooler) == (arch == "bert")

    if arch == "bert":  # and `train` fine-tunes it like any model
        raw = {
            "data": {"path": str(data_dir), **FILES},
            "tokenization": {"max_length": 64},
            "model": {"name": str(out / "model")},
            "training": {"batch_size": 8, "max_steps": 2, "logging_steps": 1},
            "evaluation": {"baselines": False},
        }
        result = train(build_config(raw), tmp_path / "fine-tuned")
        assert result["global_step"] == 2 and "accuracy" in result["test"]


def test_killed_run_resumes_from_its_newest_checkpoint(data_dir, tiny_bert, tmp_path):
    raw = _config(tiny_bert, data_dir)
    raw["training"] |= {"eval_strategy": "steps", "save_steps": 2, "eval_steps": 2, "keep_checkpoints": True}
    out = tmp_path / "run"
    pretrain(build_config(raw), out)
    # killed after the checkpoint of step 2: no metrics.json, no model/, no later checkpoint
    (out / "metrics.json").unlink()
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    with pytest.raises(Exception, match="unfinished run"):
        pretrain(build_config(raw), out)
    raw["training"]["resume"] = True
    metrics = pretrain(build_config(raw), out)
    assert metrics["resumed_from"] == "checkpoint-2" and metrics["global_step"] == 4
    assert (out / "model" / "model.safetensors").is_file()


def test_refusals_name_the_problem(data_dir, tiny_bert, tmp_path):
    def run(**section):
        raw = _config(tiny_bert, data_dir, **section)
        return pretrain(build_config(raw), tmp_path / "out")

    with pytest.raises(DataError, match="data file not found"):
        run(texts=["missing.parquet"])
    with pytest.raises(DataError, match=r"has no column 'text' \(columns: review\); set pretrain.text_column"):
        run(text_column="text")
    pd.DataFrame({"review": ["", "   "]}).to_parquet(tmp_path / "blank.parquet")
    with pytest.raises(DataError, match="no texts left to pre-train on"):
        run(texts=[str(tmp_path / "blank.parquet")], include_train=False)
    pd.DataFrame({"review": ["good", "bad", "fine", "ok"]}).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(DataError, match=f"too short to mask: a text needs at least {MIN_TOKENS} tokens"):
        run(texts=[str(tmp_path / "short.parquet")], include_train=False)
    with pytest.raises(ConfigError, match="nothing to pre-train on"):
        build_config(_config(tiny_bert, data_dir, texts=[], include_train=False))
    raw = _config(tiny_bert, data_dir)
    raw["training"]["early_stopping_patience"] = 2
    with pytest.raises(ConfigError, match="training.early_stopping_patience"):
        pretrain(build_config(raw), tmp_path / "out")

    from transformers import GPT2Config  # a decoder-only model type: no masked-LM class

    gpt = tmp_path / "gpt2"
    gpt.mkdir()
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(gpt)
    with pytest.raises(ModelError, match="of type 'gpt2', which has no masked-LM architecture"):
        pretrain(build_config(_config(gpt, data_dir)), tmp_path / "out")
    assert not (tmp_path / "out").exists()  # every refusal came before the output folder was made

    with pytest.raises(ConfigError, match="only `sentiment-lab pretrain"):
        train(build_config(_config(tiny_bert, data_dir)), tmp_path / "train")


def test_cli_pretrains_and_refuses_in_one_line(data_dir, tiny_bert, tmp_path, capsys):
    from sentiment_lab.cli import main

    with pytest.raises(SystemExit) as help_exit:
        main(["pretrain", "--help"])
    assert help_exit.value.code == 0 and "model.name=OUT/model" in capsys.readouterr().out
    config = tmp_path / "pretrain.yaml"
    config.write_text(json.dumps(_config(tiny_bert, data_dir)))  # JSON is YAML
    out = tmp_path / "run"
    assert main(["pretrain", "--config", str(config), "--out", str(out), "--set", "training.max_steps=2"]) == 0
    printed = capsys.readouterr().out
    assert "dropped 3 texts that occur in the evaluation sets" in printed and f"model.name={out}/model" in printed
    before = (out / "metrics.json").read_text()
    assert main(["pretrain", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    assert (out / "metrics.json").read_text() == before
    args = ["pretrain", "--config", str(config), "--out", str(tmp_path / "new"), "--set", "pretrain.text_column=body"]
    assert main(args) == 2
    assert "has no column 'body'" in capsys.readouterr().err
