"""Any number of classes (issue 16): a 3-class (TweetEval) and a 5-class ordinal (SST-5) run end to end, class
weights, every bad-input case as one error, and a model evaluated on another dataset's classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sentiment_lab.cli import main
from sentiment_lab.config import DataConfig, build_config
from sentiment_lab.data import prepare_data
from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.evaluation import evaluate_model, match_labels, parse_label_map
from sentiment_lab.metrics import softmax
from sentiment_lab.rundir import read_run_config
from sentiment_lab.runners import logits_of
from sentiment_lab.sidecar import read_sidecar
from sentiment_lab.training import WeightedLossTrainer, resolve_class_weights, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TWEET_NAMES = ["negative", "neutral", "positive"]
SST5_NAMES = ["very negative", "negative", "neutral", "positive", "very positive"]


def _sample(path: Path, n: int) -> pd.DataFrame:
    """n rows of a shared Parquet file, stratified by label, seeded."""
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared data sets)")
    df = pd.read_parquet(path)
    return df.groupby("label", group_keys=False).sample(frac=n / len(df), random_state=0).reset_index(drop=True)


def _data_dir(root: Path, train: pd.DataFrame, test: pd.DataFrame) -> Path:
    root.mkdir(parents=True)
    train.to_parquet(root / "train.parquet", index=False)
    test.to_parquet(root / "test.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def tweet_dir(tmp_path_factory) -> Path:
    """TweetEval (negative, neutral, positive): 300 of its dev tweets to train on, 100 test tweets (no train split)."""
    root = SHARED / "tweeteval_sentiment"
    return _data_dir(
        tmp_path_factory.mktemp("tweet") / "data",
        _sample(root / "dev.parquet", 300),
        _sample(root / "test.parquet", 100),
    )


@pytest.fixture(scope="module")
def sst5_dir(tmp_path_factory) -> Path:
    """SST-5 (very negative .. very positive): 300 training and 100 test sentences."""
    root = SHARED / "sst5"
    return _data_dir(
        tmp_path_factory.mktemp("sst5") / "data",
        _sample(root / "train.parquet", 300),
        _sample(root / "test.parquet", 100),
    )


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory) -> Path:
    """SST-2 (negative, positive): 100 training and 80 test sentences, for evaluating across datasets."""
    root = SHARED / "sst2"
    return _data_dir(
        tmp_path_factory.mktemp("sst2") / "data",
        _sample(root / "train.parquet", 100),
        _sample(root / "test_from_sst_trees.parquet", 80),
    )


@pytest.fixture(scope="module")
def multi_model_dir(tmp_path_factory, tweet_dir, sst5_dir) -> Path:
    """An untrained tiny BERT (built with a 2-class head: build_model gives it the run's number of classes)."""
    from conftest import build_tiny_model_dir

    texts = [
        *pd.read_parquet(tweet_dir / "train.parquet")["text"],
        *pd.read_parquet(sst5_dir / "train.parquet")["text"],
    ]
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-multi") / "model", texts)


def multi_config(model_dir: Path, data_dir: Path, data: dict | None = None, **training: object) -> dict:
    return {
        "name": "tiny-multi",
        "data": {"path": str(data_dir), "max_train": 160, "max_eval": 40, "max_test": 60, **(data or {})},
        "tokenization": {"max_length": 48},
        "model": {"name": str(model_dir)},
        "training": {
            "learning_rate": 1e-3,
            "batch_size": 16,
            "eval_batch_size": 32,
            "epochs": 1,
            "logging_steps": 5,
            "report_to": [],
            "seed": 0,
            **training,
        },
    }


@pytest.fixture(scope="module")
def tweet_run(tmp_path_factory, multi_model_dir, tweet_dir) -> Path:
    """A finished 3-class run with balanced class weights."""
    run = tmp_path_factory.mktemp("runs") / "tweet"
    raw = multi_config(multi_model_dir, tweet_dir, {"label_names": TWEET_NAMES}, class_weights="balanced")
    train(build_config(raw), run)
    return run


@pytest.fixture(scope="module")
def sst5_run(tmp_path_factory, multi_model_dir, sst5_dir) -> Path:
    """A finished 5-class ordinal run with one weight per class."""
    run = tmp_path_factory.mktemp("runs") / "sst5"
    raw = multi_config(
        multi_model_dir,
        sst5_dir,
        {"label_names": SST5_NAMES, "ordinal": True},
        class_weights=[2.0, 1.0, 1.0, 1.0, 2.0],
        metric_for_best_model="f1_macro",
    )
    train(build_config(raw), run)
    return run


def test_three_class_run_end_to_end(tweet_run: Path) -> None:
    metrics = json.loads((tweet_run / "metrics.json").read_text())
    assert metrics["labels"] == TWEET_NAMES
    test = metrics["test"]
    assert test["f1"] == test["f1_macro"]  # for K > 2 the headline F1 is the macro F1
    assert {"precision_macro", "recall_macro", "f1_weighted", "accuracy"} <= set(test)
    assert "mae" not in test  # not ordinal
    assert list(test["per_class"]) == TWEET_NAMES
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == test["n"] == 60
    assert matrix.sum(axis=1).tolist() == [test["per_class"][n]["support"] for n in TWEET_NAMES]
    for name in ("majority", "tfidf_logreg"):  # the baselines in the same classes
        assert list(metrics["baselines"][name]["test"]["per_class"]) == TWEET_NAMES

    preds = pd.read_parquet(tweet_run / "predictions.parquet")
    probs = [f"prob_{i}" for i in range(3)]
    logits = [f"logit_{i}" for i in range(3)]
    assert list(preds.columns) == ["id", "text", "label", "pred", "confidence", *probs, *logits]
    np.testing.assert_allclose(preds[probs].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(preds["confidence"], preds[probs].max(axis=1))
    assert logits_of(preds).shape == (60, 3)
    assert (logits_of(preds).argmax(axis=1) == preds["pred"]).all()
    assert accuracy_of(preds) == pytest.approx(test["accuracy"])
    assert set(pd.read_parquet(tweet_run / "val_predictions.parquet").columns) == set(preds.columns)

    sidecar = read_sidecar(tweet_run / "model")
    assert sidecar.labels == ["NEGATIVE", "NEUTRAL", "POSITIVE"] and sidecar.ordinal is False
    config = json.loads((tweet_run / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"}
    resolved = yaml.safe_load((tweet_run / "config.yaml").read_text())["resolved"]
    assert resolved["label_names"] == TWEET_NAMES
    counts = np.bincount(prepare_data(read_run_config(tweet_run).data).train["label"])
    np.testing.assert_allclose(resolved["class_weights"], counts.sum() / (3 * counts))  # balanced
    card = (tweet_run / "model" / "README.md").read_text()
    assert "3-class sentiment classifier" in card and "| neutral |" in card


def accuracy_of(preds: pd.DataFrame) -> float:
    return float((preds["label"] == preds["pred"]).mean())


def test_five_class_ordinal_run(sst5_run: Path) -> None:
    metrics = json.loads((sst5_run / "metrics.json").read_text())
    test = metrics["test"]
    assert np.array(test["confusion_matrix"]).shape == (5, 5)
    assert list(test["per_class"]) == SST5_NAMES
    preds = pd.read_parquet(sst5_run / "predictions.parquet")
    gap = (preds["pred"] - preds["label"]).abs()
    assert test["mae"] == pytest.approx(gap.mean()) and test["within_one"] == pytest.approx((gap <= 1).mean())
    assert "mae" in metrics["baselines"]["tfidf_logreg"]["test"]
    assert read_sidecar(sst5_run / "model").ordinal is True
    np.testing.assert_allclose(softmax(logits_of(preds)), preds[[f"prob_{i}" for i in range(5)]], atol=1e-5)
    resolved = yaml.safe_load((sst5_run / "config.yaml").read_text())["resolved"]
    assert resolved["class_weights"] == [2.0, 1.0, 1.0, 1.0, 2.0]


def test_class_weights_of_the_wrong_length_is_one_error(multi_model_dir, tweet_dir, tmp_path) -> None:
    raw = multi_config(multi_model_dir, tweet_dir, {"label_names": TWEET_NAMES}, class_weights=[1.0, 2.0])
    with pytest.raises(
        ConfigError, match=r"lists 2 weights but the data has 3 classes \(negative, neutral, positive\)"
    ):
        train(build_config(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


def test_weighted_loss_is_torch_weighted_cross_entropy() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    weights = resolve_class_weights("balanced", labels, TWEET_NAMES)
    np.testing.assert_allclose(weights, 12 / (3 * np.array([4, 2, 6])))
    assert resolve_class_weights("none", labels, TWEET_NAMES) is None

    class Model(torch.nn.Module):
        def forward(self, input_ids):
            return {"logits": input_ids.float()}

    trainer = WeightedLossTrainer.__new__(WeightedLossTrainer)  # compute_loss needs nothing else of a Trainer
    trainer.class_weights = torch.tensor([1.0, 3.0, 0.5])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, 0.5, 3.0]])
    target = torch.tensor([1, 1, 2])
    loss = trainer.compute_loss(Model(), {"input_ids": logits, "labels": target})
    expected = torch.nn.functional.cross_entropy(logits, target, weight=trainer.class_weights)
    assert loss.item() == pytest.approx(expected.item())
    assert loss.item() != pytest.approx(torch.nn.functional.cross_entropy(logits, target).item())


# Bad input: each a single error that names the values and the fix.


def _write(folder: Path, labels: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame({"text": [f"text number {i}" for i in range(len(labels))], "label": labels})
    df.to_csv(folder / "train.csv", index=False)
    df.to_csv(folder / "test.csv", index=False)
    return folder


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message.count("\n") <= 1, message  # a config error: its header line and the one problem
    return message


def test_label_not_in_the_label_map(tmp_path) -> None:
    folder = _write(tmp_path, ["negative", "Neutral", "positive", "meh"] * 5)
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(path=str(folder), label_names=TWEET_NAMES))
    message = _one_line(info)
    assert "5 of 20 rows" in message and "'meh'" in message and "data.label_map" in message


def test_label_map_with_duplicates(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"data": {"label_names": TWEET_NAMES, "label_map": {"Neu": 1, "neu": 1, "NEU": 1}}})
    message = _one_line(info)
    assert "'Neu' and 'neu' and 'NEU'" in message and "keep one key" in message
    with pytest.raises(ConfigError, match=r"label_map values must be class ids 0..2, got \{'great': 3\}"):
        build_config({"data": {"label_names": TWEET_NAMES, "label_map": {"great": 3}}})


@pytest.mark.parametrize("says", [{"label_names": SST5_NAMES}, {"num_labels": 5}], ids=["label_names", "num_labels"])
def test_two_labels_in_a_config_that_says_five(tmp_path, says) -> None:
    folder = _write(tmp_path, [0, 1] * 10)
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(path=str(folder), **says))
    message = _one_line(info)
    assert "the data shows 2 classes" in message and "5" in message and "data.num_labels" in message


def test_a_class_with_fewer_than_two_examples(tmp_path) -> None:
    folder = _write(tmp_path, [0, 1] * 10 + [2])
    with pytest.raises(DataError) as info:
        prepare_data(DataConfig(path=str(folder), label_names=TWEET_NAMES))
    message = _one_line(info)
    assert "class 'positive' (id 2) has 1 example" in message and "at least 2 of each class" in message


def test_ints_without_names_get_class_names_and_a_small_class_warning(tmp_path, caplog) -> None:
    from sentiment_lab.data import dataset_stats

    folder = _write(tmp_path, [0, 1] * 20 + [2] * 3)  # class 2: under 10%
    splits = prepare_data(DataConfig(path=str(folder)))
    assert splits.label_names == ["class_0", "class_1", "class_2"]
    stats = dataset_stats(splits)
    assert list(stats["splits"]["train"]["per_class"]) == ["class_0", "class_1", "class_2"]
    assert "class 'class_2'" in stats["warnings"][0] and "class_weights" in stats["warnings"][0]
    assert stats["warnings"][0] in caplog.text


# Across datasets: the model's classes against the data's.


def test_three_class_model_on_binary_data(tweet_run: Path, binary_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        evaluate_model(tweet_run, data_path=str(binary_dir), out_dir=tmp_path / "x")
    message = _one_line(info)
    assert "['NEGATIVE', 'NEUTRAL', 'POSITIVE']" in message and "['negative', 'positive']" in message
    assert "--label-map" in message
    metrics = evaluate_model(
        tweet_run, data_path=str(binary_dir), out_dir=tmp_path / "eval", label_map="negative=negative,positive=positive"
    )
    test = metrics["test"]
    assert list(test["per_class"]) == TWEET_NAMES  # in the model's classes
    assert test["per_class"]["neutral"]["support"] == 0 and test["n"] == 60  # the run's max_test, no row dropped
    assert metrics["dropped"] == {} and metrics["label_mapping"] == {"negative": "NEGATIVE", "positive": "POSITIVE"}
    preds = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    assert set(preds["label"]) == {0, 2}


def test_binary_model_on_three_class_data_drops_only_what_it_is_told(
    tiny_run_dir: Path, tweet_dir: Path, tmp_path: Path, capsys
) -> None:
    with pytest.raises(DataError, match=r"--label-map"):
        evaluate_model(
            tiny_run_dir,
            config=None,
            overrides=["data.label_names=[negative,neutral,positive]"],
            data_path=str(tweet_dir),
        )
    code = main(
        [
            "evaluate",
            str(tiny_run_dir),
            "--data",
            str(tweet_dir),
            "--set",
            "data.label_names=[negative,neutral,positive]",
            "--label-map",
            '{"neutral": null}',
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    dropped = metrics["dropped"]["neutral"]
    assert dropped > 0 and metrics["test"]["n"] == 64 - dropped  # the run's max_test, less the neutral rows
    assert list(metrics["test"]["per_class"]) == ["negative", "positive"]
    assert f"dropped {dropped} test rows of class 'neutral'" in out


def test_label_map_forms() -> None:
    assert parse_label_map("very negative=negative, neutral=,positive=POSITIVE") == {
        "very negative": "negative",
        "neutral": None,
        "positive": "POSITIVE",
    }
    assert parse_label_map('{"neutral": null, "0": "negative"}') == {"neutral": None, "0": "negative"}
    with pytest.raises(ConfigError, match="has no '='"):
        parse_label_map("neutral")
    model, data = ["NEGATIVE", "POSITIVE"], SST5_NAMES
    mapping = parse_label_map("very negative=negative,very positive=positive,neutral=")
    assert match_labels(model, data, mapping) == [0, 0, None, 1, 1]  # negative/positive match by name
    with pytest.raises(DataError, match=r"leaves data classes \['neutral'\] without a model class"):
        match_labels(model, data, parse_label_map("very negative=negative,very positive=positive"))
    with pytest.raises(DataError, match=r"maps to \['great'\], which are not classes of the model"):
        match_labels(model, data, parse_label_map("very negative=great,very positive=positive,neutral="))
    assert match_labels(["LABEL_0", "LABEL_1", "LABEL_2"], TWEET_NAMES) == [0, 1, 2]  # generic names: by id
    assert match_labels(["POSITIVE", "NEGATIVE"], ["negative", "positive"]) == [1, 0]  # by name, any order
