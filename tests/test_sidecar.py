"""The model sidecar (sentiment_lab.json): one schema, old flat files still load, bad files are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sentiment_lab.errors import ModelError
from sentiment_lab.sidecar import (
    DEFAULT_REVIEW_THRESHOLD,
    FORMAT_VERSION,
    ModelSidecar,
    TextSettings,
    read_sidecar,
    update_sidecar,
    write_sidecar,
)


class _Tokenizer:
    model_max_length = 384


def test_plain_folder_gets_head_truncation_at_the_model_limit(tmp_path: Path) -> None:
    sidecar = read_sidecar(tmp_path, _Tokenizer())
    assert sidecar.text == TextSettings(max_length=384, truncation="head")
    assert sidecar.temperature == 1.0 and sidecar.review_threshold() == DEFAULT_REVIEW_THRESHOLD
    _Tokenizer.model_max_length = 10**30  # what transformers reports when a tokenizer has no limit
    assert read_sidecar(tmp_path, _Tokenizer()).text.max_length == 512


def test_roundtrip_and_update_keep_the_other_fields(tmp_path: Path) -> None:
    write_sidecar(tmp_path, ModelSidecar(text=TextSettings(max_length=128, truncation="tail"), labels=["N", "P"]))
    update_sidecar(tmp_path, temperature=1.5, abstain_threshold=0.8)
    stored = json.loads((tmp_path / "sentiment_lab.json").read_text())
    assert stored["format_version"] == FORMAT_VERSION and stored["text"]["truncation"] == "tail"
    sidecar = read_sidecar(tmp_path)
    assert (sidecar.text.max_length, sidecar.labels, sidecar.temperature) == (128, ["N", "P"], 1.5)
    assert sidecar.review_threshold() == 0.8


def test_files_from_before_the_format_version_still_load(tmp_path: Path) -> None:
    old = {"max_length": 384, "truncation": "head_tail", "head_tokens": 128, "lowercase": False,
           "strip_html": False, "temperature": 1.3, "abstain_threshold": 0.91, "target_accuracy": 0.97}  # fmt: skip
    (tmp_path / "sentiment_lab.json").write_text(json.dumps(old))
    sidecar = read_sidecar(tmp_path)
    assert sidecar.text == TextSettings(max_length=384, truncation="head_tail", head_tokens=128)
    assert (sidecar.temperature, sidecar.abstain_threshold, sidecar.target_accuracy) == (1.3, 0.91, 0.97)
    update_sidecar(tmp_path, temperature=1.1)  # rewritten in the current format, nothing lost
    assert read_sidecar(tmp_path).text.head_tokens == 128
    assert json.loads((tmp_path / "sentiment_lab.json").read_text())["format_version"] == FORMAT_VERSION


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"max_length": 64,', "not JSON"),
        ("[1, 2]", "a JSON object is expected"),
        ('{"max_length": 64, "truncation": "middle"}', "'text.truncation'"),
        ('{"max_length": 64, "temperature": 0}', "'temperature'"),
        ('{"max_length": 64, "abstain_threshold": 1.5}', "'abstain_threshold'"),
        ('{"format_version": 1, "text": {"max_length": 64}, "colour": "red"}', "'colour'"),
        ('{"format_version": 1}', "'text'"),
        ('{"format_version": 9, "text": {"max_length": 64}}', "newer sentiment-lab"),
    ],
)
def test_bad_files_are_one_error_naming_file_key_and_fix(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "sentiment_lab.json").write_text(content)
    with pytest.raises(ModelError, match=match) as info:
        read_sidecar(tmp_path)
    assert str(tmp_path / "sentiment_lab.json") in str(info.value)


def test_update_refuses_an_invalid_value_and_leaves_the_file(tmp_path: Path) -> None:
    write_sidecar(tmp_path, ModelSidecar(text=TextSettings(max_length=64)))
    before = (tmp_path / "sentiment_lab.json").read_text()
    with pytest.raises(ModelError, match="temperature"):
        update_sidecar(tmp_path, temperature=-1.0)
    assert (tmp_path / "sentiment_lab.json").read_text() == before
