import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sentiment_lab.baselines import fit_baselines
from sentiment_lab.config import DataConfig, load_config
from sentiment_lab.data import (
    DataSplits,
    clean_split,
    dataset_stats,
    load_raw_splits,
    normalize_labels,
    prepare_data,
    stratified_split,
    stratified_subset,
)
from sentiment_lab.errors import DataError
from sentiment_lab.runners import predictions_frame

REPO = Path(__file__).resolve().parents[1]


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


def write_aclimdb(root: Path, reviews: dict[str, list[tuple[str, int, int]]]) -> Path:
    """An aclImdb folder: {split: [(pos|neg, id, rating)]} as `<split>/<pos|neg>/<id>_<rating>.txt`."""
    for split, files in reviews.items():
        for label_name in ("pos", "neg"):
            (root / "aclImdb" / split / label_name).mkdir(parents=True, exist_ok=True)
        for label_name, review_id, rating in files:
            (root / "aclImdb" / split / label_name / f"{review_id}_{rating}.txt").write_text(
                f"{label_name} review {review_id}, {rating} stars"
            )
    return root


def test_aclimdb_keeps_the_star_rating_from_the_file_name(tmp_path):
    files = [("neg", 0, 3), ("neg", 12, 1), ("neg", 2, 4), ("pos", 5, 10), ("pos", 1, 7), ("pos", 30, 8)]
    write_aclimdb(tmp_path, {"train": files, "test": files[:2] + files[3:5]})
    train, test = load_raw_splits(DataConfig(path=str(tmp_path)))
    assert list(train.columns) == ["id", "text", "label", "rating"] and train["rating"].dtype == "int64"
    by_id = dict(zip(train["id"], zip(train["label"], train["rating"], strict=True), strict=True))
    assert by_id == {
        "train/neg/0": (0, 3),
        "train/neg/2": (0, 4),
        "train/neg/12": (0, 1),
        "train/pos/1": (1, 7),
        "train/pos/5": (1, 10),
        "train/pos/30": (1, 8),
    }
    assert test["rating"].tolist() == [3, 1, 7, 10]  # neg then pos, by numeric id
    # The rating rides along through cleaning, splitting and subsetting.
    splits = prepare_data(DataConfig(path=str(tmp_path), val_fraction=0.5, split_seed=1))
    for df in (splits.train, splits.val, splits.test):
        assert df["rating"].tolist() == [int(t.split(", ")[1].split()[0]) for t in df["text"]]


def test_tables_keep_a_whole_number_rating_column_only(tmp_path):
    rated = frame(8).assign(rating=[1, 10, 2, 9, 3, 8, 4, 7])
    write_split_files(tmp_path / "rated", ".parquet", rated.astype({"rating": "int8"}), rated)
    train, test = load_raw_splits(DataConfig(path=str(tmp_path / "rated")))
    assert train["rating"].dtype == "int64" and train["rating"].tolist() == rated["rating"].tolist()
    gaps = rated.assign(rating=[1, None, 2, 9, 3, 8, 4, 7])
    write_split_files(tmp_path / "gaps", ".csv", gaps, gaps)
    train, _ = load_raw_splits(DataConfig(path=str(tmp_path / "gaps")))
    assert train["rating"].dtype == "Int64" and train["rating"].isna().sum() == 1
    # Another dataset's `rating` that is not a whole number of stars is not carried along.
    for name, values in (("words", ["good"] * 8), ("fractions", [0.5] * 8)):
        write_split_files(tmp_path / name, ".jsonl", rated.assign(rating=values), rated)
        train, test = load_raw_splits(DataConfig(path=str(tmp_path / name)))
        assert list(train.columns) == ["id", "text", "label"] and "rating" in test.columns


def test_split_frames_with_a_rating_work_downstream(imdb_sample):
    """Predictions frames and baselines select the columns they need; a rating column changes nothing there."""
    rated = imdb_sample.iloc[:200]
    assert "rating" in rated.columns
    splits = DataSplits(rated.iloc[:120], rated.iloc[120:160], rated.iloc[160:])
    preds = predictions_frame(splits.test, np.zeros((len(splits.test), 2)))
    assert list(preds.columns) == ["id", "text", "label", "pred", "prob_pos", "logit_neg", "logit_pos"]
    results = fit_baselines(splits)
    assert results["tfidf_logreg"]["metrics"]["test"]["n"] == 40


def test_val_fraction_zero_trains_on_every_training_review(tmp_path):
    write_split_files(tmp_path, ".parquet", frame(40), frame(10))
    splits = prepare_data(DataConfig(path=str(tmp_path), val_fraction=0, max_eval=5))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 0, 10)
    assert sorted(splits.train["id"]) == sorted(frame(40)["id"])
    assert list(splits.val.columns) == list(splits.train.columns)  # empty, same columns and dtypes
    assert splits.val.dtypes.to_dict() == splits.train.dtypes.to_dict()
    assert list(dataset_stats(splits)["splits"]) == ["train", "test"]  # nothing to describe for validation


def balanced(n: int, prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"{prefix}/{i}" for i in range(n)],
            "text": [f"{prefix} review {i}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
    )


def test_pooled_split_resplits_train_and_test_stratified_and_seeded(tmp_path):
    write_split_files(tmp_path, ".parquet", balanced(120, "train"), balanced(80, "test"))
    cfg = DataConfig(path=str(tmp_path), split="pooled")
    splits = prepare_data(cfg)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 20, 20)  # 80/10/10 of 200
    for df in (splits.train, splits.val, splits.test):
        assert df["label"].mean() == 0.5  # stratified
    ids = [set(df["id"]) for df in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {f"train/{i}" for i in range(120)} | {f"test/{i}" for i in range(80)}
    assert {i.split("/")[0] for i in ids[2]} == {"train", "test"}  # the new test set draws from both
    again = prepare_data(cfg)
    assert again.test["id"].tolist() == splits.test["id"].tolist()  # seeded
    other = prepare_data(DataConfig(path=str(tmp_path), split="pooled", split_seed=7))
    assert set(other.test["id"]) != ids[2]
    assert splits.cleaning["pooled"] == {"rows": 200, "empty": 0, "duplicates": 0, "kept": 200}
    no_val = prepare_data(DataConfig(path=str(tmp_path), split="pooled", pooled_fractions=(0.9, 0.0, 0.1)))
    assert (len(no_val.train), len(no_val.val), len(no_val.test)) == (180, 0, 20)


def test_pooled_split_counts_and_drops_test_texts_seen_in_train(tmp_path):
    train, test = balanced(40, "train"), balanced(40, "test")
    test.loc[:3, "text"] = train.loc[:3, "text"].to_numpy()  # four test reviews repeat training reviews
    write_split_files(tmp_path, ".parquet", train, test)
    kept = prepare_data(DataConfig(path=str(tmp_path), split="pooled"))
    assert kept.cleaning["pooled"] == {"rows": 80, "empty": 0, "duplicates": 4, "kept": 80}
    dropped = prepare_data(DataConfig(path=str(tmp_path), split="pooled", duplicate_policy="drop"))
    assert dropped.cleaning["pooled"]["kept"] == 76
    texts = [set(df["text"]) for df in (dropped.train, dropped.val, dropped.test)]
    assert not (texts[0] & texts[2] or texts[0] & texts[1] or texts[1] & texts[2])


def test_pooled_split_too_small_is_named(tmp_path):
    write_split_files(tmp_path, ".parquet", balanced(4, "train"), balanced(2, "test"))
    with pytest.raises(DataError, match=r"6 pooled reviews are too few for pooled_fractions"):
        prepare_data(DataConfig(path=str(tmp_path), split="pooled", pooled_fractions=(0.9, 0.05, 0.05)))


@pytest.mark.parametrize(
    ("config", "sizes"),
    [
        ("distilbert-pooled.yaml", (40_000, 5_000, 5_000)),  # seed 001: 50k pooled, re-split 80/10/10
        ("distilbert-llrd.yaml", (18_750, 6_250, 25_000)),  # seed 002: 75/25 of train + the official test
        ("bert-base.yaml", (25_000, 0, 25_000)),  # seed 004: every training review, no validation split
    ],
)
def test_seed_configs_give_the_published_split_sizes(config, sizes, imdb_dir):
    cfg = load_config(REPO / "configs" / "seed" / config, data_path=str(imdb_dir))
    splits = prepare_data(cfg.data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    for df in (splits.train, splits.val, splits.test):
        assert df.empty or df["label"].mean() == 0.5


def hub_dataset(splits: dict[str, pd.DataFrame], names: list[str]):
    """A `datasets.DatasetDict` in the shape of `stanfordnlp/imdb`: text (string), label (ClassLabel)."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    out = {}
    for split, df in splits.items():
        labels = [-1] * len(df) if split == "unsupervised" else [names.index(("neg", "pos")[v]) for v in df["label"]]
        out[split] = datasets.Dataset.from_dict({"text": df["text"].tolist(), "label": labels}, features=features)
    return datasets.DatasetDict(out)


@pytest.fixture(scope="module")
def imdb_subset(imdb_dir, tmp_path_factory) -> tuple[Path, dict[str, pd.DataFrame]]:
    """120 train / 80 test reviews of the local copy (all its columns) as a Parquet folder, plus 10 unlabelled."""
    frames = {
        "train": pd.read_parquet(imdb_dir / "train.parquet").sample(120, random_state=0),
        "test": pd.read_parquet(imdb_dir / "test.parquet").sample(80, random_state=0),
        "unsupervised": pd.read_parquet(imdb_dir / "unsup.parquet").head(10).assign(label=0),
    }
    folder = tmp_path_factory.mktemp("imdb-subset")
    for split in ("train", "test"):
        frames[split].to_parquet(folder / f"{split}.parquet", index=False)
    return folder, frames


@pytest.mark.parametrize("names", [["neg", "pos"], ["pos", "neg"]], ids=["hub-order", "reversed-order"])
def test_hub_branch_matches_the_local_copy(names, imdb_subset, monkeypatch):
    import datasets

    folder, frames = imdb_subset
    hub = hub_dataset(frames, names)
    assert list(hub) == ["train", "test", "unsupervised"] and hub["train"].features["label"].names == names
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append(path)
        return hub

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    for options in ({}, {"split": "pooled"}, {"val_fraction": 0.25, "max_train": 50, "max_test": 40}):
        from_hub = prepare_data(DataConfig(**options))
        local = prepare_data(DataConfig(path=str(folder), **options))
        for split in ("train", "val", "test"):
            h, lo = getattr(from_hub, split), getattr(local, split)
            # The Hub copy has no ids and no star rating: ids are generated, the rating column is absent.
            assert list(h.columns) == ["id", "text", "label"] and list(lo.columns) == ["id", "text", "label", "rating"]
            assert h["label"].dtype == lo["label"].dtype == "int64"
            assert h["text"].tolist() == lo["text"].tolist() and h["label"].tolist() == lo["label"].tolist()
        # Label names: a review's label is its ClassLabel name through data.label_map (neg 0, pos 1).
        by_text = {t: v for s in ("train", "test") for t, v in zip(hub[s]["text"], hub[s]["label"], strict=True)}
        label_map = DataConfig().label_map
        for df in (from_hub.train, from_hub.test):
            assert [label_map[names[by_text[t]]] for t in df["text"]] == df["label"].tolist()
    assert calls == ["stanfordnlp/imdb"] * 3


def test_seed_configs_default_to_the_hub(imdb_subset, monkeypatch):
    """Without a data path or IMDB_DIR, a seed config loads `stanfordnlp/imdb` through `datasets.load_dataset`."""
    import datasets

    _, frames = imdb_subset
    monkeypatch.delenv("IMDB_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **k: hub_dataset(frames, ["neg", "pos"]))
    cfg = load_config(REPO / "configs" / "seed" / "distilbert-pooled.yaml")
    assert (cfg.data.source, cfg.data.path) == ("imdb", None)
    splits = prepare_data(cfg.data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (160, 20, 20)
    assert splits.train["text"].str.islower().all()  # the seed's lowercasing


def test_labels_of_any_number_of_classes():
    names = ["very negative", "negative", "neutral", "positive", "very positive"]
    values = pd.Series(["Very Negative", "NEUTRAL", 4, "3", " positive "])
    assert normalize_labels(values, {}, "x.csv", names).tolist() == [0, 2, 4, 3, 3]
    with pytest.raises(DataError, match=r"1 of 2 rows.*\b5\b.*class ids 0..4"):
        normalize_labels(pd.Series([0, 5]), {}, "x.csv", names)
    # No names: ids 0..K-1 from the data; an id past a gap is refused
    assert normalize_labels(pd.Series([0, 1, 2, 2]), {}, "x.csv").tolist() == [0, 1, 2, 2]
    with pytest.raises(DataError, match=r"1 of 3 rows.*\b4\b"):
        normalize_labels(pd.Series([0, 1, 4]), {}, "x.csv")


def test_three_class_split_keeps_each_class_share():
    df = pd.DataFrame(
        {"id": range(300), "text": [f"t{i}" for i in range(300)], "label": [0] * 60 + [1] * 90 + [2] * 150}
    )
    tr, va = stratified_split(df, 0.2, 0)
    assert va["label"].value_counts().sort_index().tolist() == [12, 18, 30]
    splits = DataSplits(tr, va, va)
    assert splits.label_names == ["class_0", "class_1", "class_2"]  # no names given: named by id
    assert dataset_stats(splits)["splits"]["val"]["per_class"] == {"class_0": 12, "class_1": 18, "class_2": 30}
    assert "warnings" not in dataset_stats(splits)  # the smallest class is 20%


def test_hub_class_label_names_name_the_classes(monkeypatch):
    import datasets

    names = ["negative", "neutral", "positive"]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    rows = {"text": [f"tweet {i}" for i in range(60)], "label": [i % 3 for i in range(60)]}
    hub = datasets.DatasetDict({s: datasets.Dataset.from_dict(rows, features=features) for s in ("train", "test")})
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **k: hub)
    splits = prepare_data(DataConfig(source="hub", hub_id="cardiffnlp/tweet_eval"))
    assert splits.label_names == names  # the ClassLabel's names, in its order
    assert sorted(set(splits.train["label"])) == [0, 1, 2]
    stats = dataset_stats(splits)
    assert list(stats["splits"]["train"]["per_class"]) == names
    # Names the config gives in another order: the labels follow the names, not the ClassLabel's indices
    reordered = prepare_data(DataConfig(source="hub", hub_id="x", label_names=["positive", "neutral", "negative"]))
    assert reordered.label_names == ["positive", "neutral", "negative"]
    by_text = dict(zip(rows["text"], rows["label"], strict=True))
    assert all(2 - by_text[t] == lab for t, lab in zip(reordered.test["text"], reordered.test["label"], strict=True))
