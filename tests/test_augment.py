"""Contextual augmentation (`augment:` in a train config, issue 18): copies of the training texts with words a
masked-LM chose in context; only the replaced words change, the rows are kept in the run folder and reused on
resume, and the refusals name their fix (tiny models: seconds each)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from conftest import build_tiny_model_dir, load_benchmark, tiny_config
from sentiment_lab import augment
from sentiment_lab.augment import (
    AUGMENTED_FILE,
    _match_case,
    _word_span,
    augment_frame,
    cached_augmentation,
    load_augmenter,
    replacement_words,
    same_word_ids,
)
from sentiment_lab.config import AugmentConfig, build_config, load_config
from sentiment_lab.data import prepare_data
from sentiment_lab.distill import distill
from sentiment_lab.errors import ConfigError, ModelError
from sentiment_lab.modeling import load_tokenizer
from sentiment_lab.pretrain import pretrain
from sentiment_lab.training import train

WORD = re.compile(r"\w+|[^\w\s]+|\s+")


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory, tiny_model_dir, imdb_dir) -> Path:
    """A masked-LM with a trained head, made the way a user makes one: `pretrain` of the tiny encoder, 2 steps."""
    raw = tiny_config(tiny_model_dir, imdb_dir, max_steps=2)
    raw["pretrain"] = {"max_texts": 40}
    out = tmp_path_factory.mktemp("aug-mlm") / "pretrained"
    pretrain(build_config(raw), out)
    return out / "model"


@pytest.fixture(scope="module")
def frame(imdb_sample) -> pd.DataFrame:
    rows = imdb_sample.iloc[:12]
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(rows))], "text": rows["text"].tolist(), "label": rows["label"]}
    )


def _pieces(text: str) -> list[str]:
    return WORD.findall(text)


def test_only_chosen_words_change_and_rows_keep_their_label(mlm_dir, frame):
    augmenter = load_augmenter(AugmentConfig(mlm_model=str(mlm_dir), copies=2, replace_fraction=0.2), 64)
    rows, facts = augment_frame(frame, augmenter, seed=0)
    assert len(rows) == 2 * len(frame) == facts["rows_added"] and facts["no_replaceable_word"] == 0
    assert rows["id"].tolist()[:2] == ["r0~aug1", "r1~aug1"] and rows["id"].iloc[len(frame)] == "r0~aug2"
    source = frame.set_index("id")
    changed_total = 0
    for row in rows.itertuples():
        original = source.loc[row.source_id]
        assert row.label == original["label"]
        before, after = _pieces(original["text"]), _pieces(row.text)
        assert len(before) == len(after)  # every piece of punctuation and space is where it was
        changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert changed, "an augmented row must differ from its source"
        for old, new in changed:
            assert old.isalpha() and new.isalpha() and old.lower() != new.lower()
            assert new.lower() in augmenter.words.values()
            assert old[0].isupper() == new[0].isupper()  # the original's capitalisation
        changed_total += len(changed)
    # a replacement can repeat a neighbouring piece only by chance; the counts agree within that
    assert changed_total <= facts["words_replaced"] and changed_total > 0.9 * facts["words_replaced"]
    # replace_fraction of each text's replaceable words (at least one), in each copy
    texts = frame["text"].tolist()
    enc = augmenter.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    per_copy = [len(augment._candidates(t, enc, i, augmenter.words)) for i, t in enumerate(texts)]
    assert facts["words_replaced"] == 2 * sum(max(1, round(0.2 * n)) for n in per_copy)


def test_same_seed_same_rows_other_seed_other_rows(mlm_dir, frame):
    augmenter = load_augmenter(AugmentConfig(mlm_model=str(mlm_dir)), 64)
    first, _ = augment_frame(frame, augmenter, seed=1)
    again, _ = augment_frame(frame, augmenter, seed=1)
    other, _ = augment_frame(frame, augmenter, seed=2)
    assert first["text"].tolist() == again["text"].tolist()
    assert first["text"].tolist() != other["text"].tolist()


def test_markup_numbers_and_subwords_are_left_alone(mlm_dir):
    augmenter = load_augmenter(AugmentConfig(mlm_model=str(mlm_dir), replace_fraction=0.5), 64)
    texts = ["<br /><br />1984 ... 42!", "great<br />film and a good story<br />"]
    rows, facts = augment_frame(pd.DataFrame({"id": ["a", "b"], "text": texts, "label": [0, 1]}), augmenter, seed=0)
    assert facts["no_replaceable_word"] == 1 and rows["source_id"].tolist() == ["b"]
    assert rows["text"].iloc[0].count("<br />") == 2
    tokenizer = load_tokenizer(str(mlm_dir))
    words = replacement_words(tokenizer)
    assert all(w.isalpha() and not w.startswith("##") for w in words.values())
    assert not set(words) & set(tokenizer.all_special_ids)


def test_byte_level_bpe_masked_lm_replaces_words_in_their_case_never_with_the_same_word(
    tmp_path, imdb_sample, imdb_dir
):
    """RoBERTa's kind: a cased byte-level BPE vocabulary (`Ġgood` and `ĠGood` are two ids), positions offset by
    the padding index (66 positions hold 64 tokens)."""
    folder = build_tiny_model_dir(tmp_path / "roberta", imdb_sample["text"].tolist(), arch="roberta", max_length=64)
    words = replacement_words(load_tokenizer(str(folder)))
    assert words and all(w.isalpha() and not w.startswith("Ġ") for w in words.values())
    assert "the" in words.values() and "The" in words.values()
    raw = tiny_config(folder, imdb_dir, max_steps=2)
    raw["tokenization"] = {"max_length": 64}
    raw["pretrain"] = {"max_texts": 40}
    pretrain(build_config(raw), tmp_path / "mlm")
    mlm = str(tmp_path / "mlm" / "model")
    with pytest.raises(ConfigError, match="set augment.max_length to at most 64"):
        load_augmenter(AugmentConfig(mlm_model=mlm, max_length=65), 64)
    augmenter = load_augmenter(AugmentConfig(mlm_model=mlm, replace_fraction=0.5, top_k=50), 64)
    assert augmenter.variants  # the same word in two cases
    texts = imdb_sample["text"].iloc[:8].tolist()
    rows, facts = augment_frame(pd.DataFrame({"id": list("abcdefgh"), "text": texts, "label": [0] * 8}), augmenter, 0)
    assert facts["words_replaced"] > 50
    for before, after in zip(texts, rows["text"], strict=True):
        pairs = [(a, b) for a, b in zip(_pieces(before), _pieces(after), strict=True) if a != b]
        assert pairs
        for old, new in pairs:
            assert new.isalpha() and old.lower() != new.lower()
            assert not old.islower() or new.islower()


def test_case_helpers():
    assert same_word_ids({1: "good", 2: "Good", 3: "film", 4: "GOOD"}) == {1: [2, 4], 2: [1, 4], 4: [1, 2]}
    assert same_word_ids({1: "good", 3: "film"}) == {}
    assert [_match_case("John", o) for o in ("said", "Said", "SAID", "I")] == ["john", "John", "JOHN", "John"]
    assert _word_span(" good", 0, 5) == (1, 5) and _word_span("good", 0, 4) == (0, 4)


def test_a_bare_encoder_or_a_too_long_window_is_refused(tiny_model_dir, mlm_dir):
    with pytest.raises(ModelError, match="no trained masked-LM head.*sentiment-lab pretrain"):
        load_augmenter(AugmentConfig(mlm_model=str(tiny_model_dir)), 64)
    with pytest.raises(ConfigError, match="set augment.max_length to at most 512"):
        load_augmenter(AugmentConfig(mlm_model=str(mlm_dir), max_length=1024), 64)


def test_train_adds_the_rows_keeps_them_and_reuses_them_on_resume(
    mlm_dir, tiny_model_dir, imdb_dir, tmp_path, monkeypatch
):
    raw = tiny_config(tiny_model_dir, imdb_dir)
    raw["augment"] = {"mlm_model": str(mlm_dir), "copies": 1}
    raw["evaluation"] = {"baselines": False}
    cfg = build_config(raw)
    run = tmp_path / "run"
    metrics = train(cfg, run)
    rows = pd.read_parquet(run / AUGMENTED_FILE)
    resolved = yaml.safe_load((run / "config.yaml").read_text())["resolved"]
    assert metrics["augment"]["rows_added"] == len(rows) == resolved["augment"]["rows_added"] > 50
    assert resolved["data"]["train"] == 64  # the split itself; the augmented rows come on top
    steps = json.loads((run / "metrics.json").read_text())["global_step"]
    assert steps == -(-(64 + len(rows)) // 16)  # one epoch of batches of 16 over both
    assert set(rows["source_id"]) <= set(prepare_data(cfg.data).train["id"].astype(str))

    # the same rows, masked-LM, settings and seed: the kept rows are read back, not made again (an edit of the file
    # comes back; augment_frame would raise); another seed, label or masked-LM file makes them again
    kept = pd.read_parquet(run / AUGMENTED_FILE)
    kept.loc[0, "text"] = "EDITED"
    kept.to_parquet(run / AUGMENTED_FILE)
    augmenter = load_augmenter(cfg.augment, 64)
    train_split = prepare_data(cfg.data).train

    def made_again(*args, **kwargs):
        raise AssertionError("made again")

    monkeypatch.setattr(augment, "augment_frame", made_again)
    again, facts = cached_augmentation(run, train_split, augmenter, cfg.training.seed)
    assert again["text"].iloc[0] == "EDITED" and again["text"].tolist()[1:] == rows["text"].tolist()[1:]
    assert facts["reused"] and not metrics["augment"]["reused"]
    assert {k: v for k, v in facts.items() if k != "reused"} == {
        k: v for k, v in metrics["augment"].items() if k != "reused"
    }
    relabelled = train_split.assign(label=1 - train_split["label"])
    for stale in (
        lambda: cached_augmentation(run, train_split, augmenter, cfg.training.seed + 1),
        lambda: cached_augmentation(run, relabelled, augmenter, cfg.training.seed),
    ):
        with pytest.raises(AssertionError, match="made again"):
            stale()
    monkeypatch.undo()
    (mlm_dir / "config.json").write_text((mlm_dir / "config.json").read_text() + "\n")  # the same path, other files
    try:
        remade, facts = cached_augmentation(run, train_split, augmenter, cfg.training.seed)
    finally:
        (mlm_dir / "config.json").write_text((mlm_dir / "config.json").read_text()[:-1])
    assert not facts["reused"] and remade["text"].iloc[0] != "EDITED"


def test_distill_and_pretrain_refuse_an_augment_section(mlm_dir, tiny_model_dir, imdb_dir, tmp_path):
    raw = tiny_config(tiny_model_dir, imdb_dir)
    raw["augment"] = {"mlm_model": str(mlm_dir)}
    raw["pretrain"] = {"max_texts": 40}
    with pytest.raises(ConfigError, match="augment"):
        pretrain(build_config(raw), tmp_path / "pt")
    del raw["pretrain"]
    raw["distill"] = {"alpha": 0.5}
    with pytest.raises(ConfigError, match="distill cannot use an augment: section"):  # before the teacher is read
        distill(tmp_path / "no-teacher", build_config(raw), tmp_path / "student")
    assert not (tmp_path / "pt").exists() and not (tmp_path / "student").exists()


def test_cli_refuses_a_missing_masked_lm_in_one_line_and_writes_nothing(tiny_model_dir, imdb_dir, tmp_path, capsys):
    from sentiment_lab.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config(tiny_model_dir, imdb_dir)))
    out = tmp_path / "run"
    args = ["train", str(config), "--out", str(out), "--set", f"augment.mlm_model={tmp_path / 'nowhere'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "augment.mlm_model" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ({}, "augment.mlm_model"),
        ({"mlm_model": "m", "copies": 0}, "augment.copies"),
        ({"mlm_model": "m", "replace_fraction": 0.9}, "augment.replace_fraction"),
        ({"mlm_model": "m", "top_p": 0.9}, "unknown key 'augment.top_p'"),
    ],
)
def test_config_refuses_a_bad_section_naming_the_key(section, named, tiny_model_dir, imdb_dir):
    raw = tiny_config(tiny_model_dir, imdb_dir)
    raw["augment"] = section
    with pytest.raises(ConfigError, match=re.escape(named)):
        build_config(raw)


def test_quality_levers_benchmark_builds_configs_the_tool_accepts(tmp_path):
    """Every step of benchmarks/quality_levers.py is a command whose --set keys the config validates (a misspelt
    key would only show after the steps before it had run for an hour)."""

    bench = load_benchmark("quality_levers")
    args = SimpleNamespace(
        config="configs/quickstart.yaml",
        data=None,
        seed=42,
        overrides=["data.max_train=1000"],
        max_windows=3,
        student="minilm-l6",
        unlabeled=2000,
        min_confidence=0.9,
        pretrain_texts=2000,
        pretrain_steps=60,
        pretrain_batch=32,
        head_steps=100,
        head_lr=2e-3,
        encoder_layers=6,
        copies=1,
    )
    steps = {step for chain in bench.CHAINS.values() for step in chain}
    assert steps == {"baseline", "tfidf", "chunk", "self_train", "mlm", "mlm_head", "pretrain", "augment"}
    for step in sorted(steps):
        cmd = bench.command(step, tmp_path, args)
        config = cmd[cmd.index("--config") + 1] if "--config" in cmd else cmd[4]
        settings = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]
        cfg = load_config(config, settings)
        assert cfg.training.seed == 42 and cfg.data.max_train == 1000
        if step == "augment":
            assert cfg.augment.mlm_model == str(tmp_path / "mlm_head" / "model")
        if step in ("mlm", "mlm_head"):
            assert cfg.pretrain.texts == ["unsup.parquet"] and cfg.training.max_steps in (60, 100)
        if step == "self_train":
            assert cfg.distill.pseudo_labels and cfg.distill.student == "minilm-l6"


def test_a_tokenizer_without_a_mask_token_is_refused(mlm_dir, monkeypatch):
    tokenizer = load_tokenizer(str(mlm_dir))
    tokenizer.mask_token = None
    assert tokenizer.mask_token_id is None
    monkeypatch.setattr(augment, "load_tokenizer", lambda name: tokenizer)
    with pytest.raises(ModelError, match="its tokenizer has no mask token; name a masked-LM"):
        load_augmenter(AugmentConfig(mlm_model=str(mlm_dir)), 64)
