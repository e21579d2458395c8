import json
from pathlib import Path

import pandas as pd
import pytest

from sentiment_lab.config import DataConfig
from sentiment_lab.data import (
    clean_split,
    dataset_stats,
    load_raw_splits,
    normalize_labels,
    prepare_data,
    stratified_split,
    stratified_subset,
)
from sentiment_lab.errors import DataError


def frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [f"review number {i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
    )


def write_split_files(folder: Path, suffix: str, train: pd.DataFrame, test: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, df in (("train", train), ("test", test)):
        p = folder / f"{name}{suffix}"
        if suffix == ".parquet":
            df.to_parquet(p)
        elif suffix == ".csv":
            df.to_csv(p, index=False)
        else:
            p.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_local_table_formats(tmp_path, suffix):
    write_split_files(tmp_path, suffix, frame(), frame(10))
    train, test = load_raw_splits(DataConfig(path=str(tmp_path)))
    assert list(train.columns) == ["id", "text", "label"]
    assert len(train) == 40 and len(test) == 10
    assert train["id"].iloc[3] == "r3"


def test_aclimdb_layout(tmp_path):
    for split in ("train", "test"):
        for lab, rating in (("pos", 9), ("neg", 2)):
            d = tmp_path / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in range(3):
                (d / f"{i}_{rating}.txt").write_text(f"{lab} review {i}<br />more")
    train, test = load_raw_splits(DataConfig(path=str(tmp_path)))
    assert len(test) == 6
    assert len(train) == 6 and set(train["label"]) == {0, 1}
    assert train.loc[train["id"] == "train/pos/1", "label"].item() == 1


def test_string_labels_with_mapping(tmp_path):
    df = frame()
    df["label"] = ["POS" if i % 2 else "Negative" for i in range(len(df))]
    write_split_files(tmp_path, ".csv", df, df)
    train, _ = load_raw_splits(DataConfig(path=str(tmp_path)))
    assert train["label"].tolist()[:2] == [0, 1]


def test_bad_labels_name_values_and_count():
    with pytest.raises(DataError, match=r"2 of 4 rows.*'maybe'"):
        normalize_labels(pd.Series([0, 1, "maybe", 5]), {"neg": 0, "pos": 1}, "x.csv")


def test_float_labels_refused():
    with pytest.raises(DataError, match="outside the mapping"):
        normalize_labels(pd.Series([0.0, 1.0]), {"neg": 0, "pos": 1}, "x.csv")


def test_missing_columns_named(tmp_path):
    renamed = frame().rename(columns={"text": "review"})
    write_split_files(tmp_path, ".csv", renamed, renamed)
    with pytest.raises(DataError, match=r"no column\(s\) \['text'\].*data.text_column"):
        load_raw_splits(DataConfig(path=str(tmp_path)))
    train, _ = load_raw_splits(DataConfig(path=str(tmp_path), text_column="review"))
    assert len(train) == 40


def test_non_text_column_refused(tmp_path):
    df = frame()
    df["text"] = range(len(df))
    write_split_files(tmp_path, ".parquet", df, frame())
    with pytest.raises(DataError, match="non-text values"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_missing_path_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_raw_splits(DataConfig(path=str(tmp_path / "nope")))
    (tmp_path / "train.csv").write_text("")
    (tmp_path / "test.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_folder_without_split_files(tmp_path):
    with pytest.raises(DataError, match="no train or test file"):
        load_raw_splits(DataConfig(path=str(tmp_path)))


def test_hub_failure_says_how_to_go_offline(monkeypatch):
    import datasets

    def fail(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(DataError, match="IMDB_DIR"):
        load_raw_splits(DataConfig())


def test_cleaning_counts_and_policies():
    df = pd.DataFrame({"id": list("abcde"), "text": ["good", "  ", "good", "bad", ""], "label": [1, 0, 1, 0, 0]})
    kept, report = clean_split(df, DataConfig())
    assert report == {"rows": 5, "empty": 2, "duplicates": 1, "kept": 3}
    kept, report = clean_split(df, DataConfig(duplicate_policy="drop"))
    assert report["kept"] == 2 and kept["text"].tolist() == ["good", "bad"]
    kept, _ = clean_split(df, DataConfig(empty_policy="keep"))
    assert len(kept) == 5


def test_preprocessing_options():
    df = pd.DataFrame({"id": ["a", "b"], "text": ["Great<br />FILM", "Bad<br/>one"], "label": [1, 0]})
    kept, _ = clean_split(df, DataConfig(lowercase=True, strip_html=True))
    assert kept["text"].tolist() == ["great film", "bad one"]


def test_stratified_split_and_subset_keep_balance():
    df = frame(200)
    tr, va = stratified_split(df, 0.2, 0)
    assert len(va) == 40 and va["label"].mean() == 0.5
    assert not set(tr["id"]) & set(va["id"])
    sub = stratified_subset(tr, 50, 0)
    assert len(sub) == 50 and sub["label"].sum() == 25


def test_single_class_refused():
    df = frame()
    df["label"] = 1
    with pytest.raises(DataError, match="only one class"):
        stratified_split(df, 0.2, 0)


def test_prepare_imdb_subsets(imdb_dir):
    splits = prepare_data(DataConfig(path=str(imdb_dir), max_train=100, max_eval=40, max_test=60))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (100, 40, 60)
    assert splits.train["label"].sum() == 50
    assert not set(splits.train["id"]) & set(splits.val["id"])
    stats = dataset_stats(splits)
    assert stats["splits"]["test"]["n"] == 60
    assert stats["splits"]["train"]["words"]["min"] > 0


def test_token_stats(imdb_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    splits = prepare_data(DataConfig(path=str(imdb_dir), max_train=50, max_eval=20, max_test=20))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    stats = dataset_stats(splits, tok, max_length=128)
    s = stats["splits"]["train"]
    assert s["tokens"]["max"] >= s["tokens"]["median"] >= s["tokens"]["min"] >= 2
    # Token counts include [CLS]/[SEP]: a review is truncated when its count exceeds max_length itself.
    from sentiment_lab.tokenization import count_tokens

    counts = count_tokens(tok, splits.train["text"].tolist())
    assert 0.0 < s["truncated_share"] < 1.0
    assert s["truncated_share"] == pytest.approx(float((counts > 128).mean()))
    assert s["tokens"]["max"] == counts.max()


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_missing_labels_are_named_as_missing(tmp_path, suffix):
    df = frame(4)
    df["label"] = [0, None, 1, None]  # a float column with NaN in Parquet, blank cells in CSV, null in JSONL
    write_split_files(tmp_path, suffix, df, frame(4))
    with pytest.raises(DataError, match=r"2 of 4 rows have no label \(first rows: 1, 3\); fill in") as info:
        load_raw_splits(DataConfig(path=str(tmp_path)))
    assert "outside the mapping" not in str(info.value)  # the valid 0/1 rows are not blamed
