"""Data: load reviews from the Hub, the aclImdb folders or Parquet/CSV/JSONL, clean, split, summarise.

Every split is a pandas DataFrame with columns `id` (str), `text` (str), `label` (int 0/1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from sentiment_lab.config import DataConfig
from sentiment_lab.errors import DataError
from sentiment_lab.tokenization import count_tokens, preprocess_text

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")


@dataclass
class DataSplits:
    """Train/validation/test frames plus what cleaning did."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    cleaning: dict[str, Any] = field(default_factory=dict)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a Parquet, CSV or JSONL file into a DataFrame with a clear error on failure."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {p} (check data.path / --data)")
    if p.stat().st_size == 0:
        raise DataError(f"data file {p} is empty (0 bytes)")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(p)
        if suffix == ".csv":
            return pd.read_csv(p, encoding="utf-8", keep_default_na=False, na_values=[])
        if suffix in (".jsonl", ".json"):
            return pd.read_json(p, lines=suffix == ".jsonl", encoding="utf-8", dtype=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {p} is not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    except Exception as exc:  # pyarrow/pandas raise many types for corrupt files
        raise DataError(f"cannot read data file {p}: {type(exc).__name__}: {exc}") from None
    raise DataError(f"data file {p} has an unsupported format; use one of {', '.join(TABLE_SUFFIXES)}")


def read_aclimdb(folder: Path, split: str) -> pd.DataFrame:
    """Read the original aclImdb layout: `<split>/{pos,neg}/<id>_<rating>.txt`."""
    rows = []
    for label_name, label in (("neg", 0), ("pos", 1)):
        sub = folder / split / label_name
        if not sub.is_dir():
            raise DataError(f"aclImdb folder {folder} has no {split}/{label_name}/ directory")
        for f in sorted(sub.glob("*.txt"), key=lambda x: int(x.stem.split("_")[0]) if x.stem[0].isdigit() else 0):
            rows.append(
                {"id": f"{split}/{label_name}/{f.stem.split('_')[0]}", "text": f.read_text("utf-8"), "label": label}
            )
    return pd.DataFrame(rows)


def normalize_labels(values: pd.Series, label_map: dict[str, int], source: str) -> pd.Series:
    """Map labels to 0/1: ints 0/1 pass; strings go through `label_map` case-insensitively."""
    lowered = {str(k).lower(): v for k, v in label_map.items()}

    def convert(v: Any) -> int | None:
        if isinstance(v, (bool, np.bool_)):
            return None
        if isinstance(v, (int, np.integer)) and v in (0, 1):
            return int(v)
        if isinstance(v, (float, np.floating)) and float(v) in (0.0, 1.0) and not isinstance(v, bool):
            return None  # floats are ambiguous (probabilities?): refuse rather than guess
        if isinstance(v, str):
            s = v.strip().lower()
            if s in lowered:
                return lowered[s]
            if s in ("0", "1"):
                return int(s)
        return None

    missing = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())  # NaN, None, blank
    if missing.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(missing.to_numpy())[:5])
        raise DataError(
            f"{source}: {int(missing.sum())} of {len(values)} rows have no label (first rows: {rows}); "
            "fill in their labels or remove those rows"
        )
    mapped = values.map(convert)
    bad = mapped.isna()
    if bad.any():
        examples = sorted({repr(v) for v in values[bad].head(1000)})[:5]
        raise DataError(
            f"{source}: {int(bad.sum())} of {len(values)} rows have labels outside the mapping "
            f"(e.g. {', '.join(examples)}); labels must be 0/1 or one of {sorted(lowered)} "
            "(extend data.label_map in the config)"
        )
    return mapped.astype("int64")


def _standardize(df: pd.DataFrame, cfg: DataConfig, source: str, split: str) -> pd.DataFrame:
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in df.columns]
    if cfg.id_column and cfg.id_column not in df.columns:
        missing.append(cfg.id_column)
    if missing:
        raise DataError(
            f"{source} has no column(s) {missing}; its columns are {list(df.columns)} "
            "(set data.text_column / data.label_column / data.id_column)"
        )
    texts = df[cfg.text_column]
    non_text = texts.map(lambda t: not isinstance(t, str) and not pd.isna(t))
    if non_text.any():
        first = int(np.flatnonzero(non_text.to_numpy())[0])
        raise DataError(
            f"{source}: column '{cfg.text_column}' holds non-text values in {int(non_text.sum())} rows "
            f"(first at row {first}: {texts.iloc[first]!r}); is it the right text column?"
        )
    id_column = cfg.id_column or ("id" if "id" in df.columns else None)  # keep a source's own ids
    ids = df[id_column].astype(str) if id_column else pd.Series([f"{split}/{i}" for i in range(len(df))])
    return pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "text": texts.fillna("").astype(str).to_numpy(),
            "label": normalize_labels(df[cfg.label_column].reset_index(drop=True), cfg.label_map, source).to_numpy(),
        }
    )


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        p = folder / f"{split}{suffix}"
        if p.is_file():
            return p
    return None


def _load_local(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    if cfg.train_file and cfg.test_file:
        files = {"train": Path(cfg.train_file), "test": Path(cfg.test_file)}
    else:
        if not cfg.path:
            raise DataError("data.source is 'local' but neither data.path nor data.train_file/test_file is set")
        folder = Path(cfg.path).expanduser()
        if not folder.exists():
            raise DataError(f"data path does not exist: {folder} (point --data or data.path at the IMDb folder)")
        if folder.is_file():
            raise DataError(
                f"data path {folder} is a file; give the folder holding train.* and test.* "
                "(or set data.train_file and data.test_file)"
            )
        if (folder / "train" / "pos").is_dir():
            return read_aclimdb(folder, "train"), read_aclimdb(folder, "test")
        if (folder / "aclImdb" / "train" / "pos").is_dir():
            return read_aclimdb(folder / "aclImdb", "train"), read_aclimdb(folder / "aclImdb", "test")
        files = {s: _find_split_file(folder, s) for s in ("train", "test")}
        lacking = [s for s, f in files.items() if f is None]
        if lacking:
            raise DataError(
                f"data folder {folder} has no {' or '.join(lacking)} file; expected train.parquet/test.parquet "
                "(or .csv/.jsonl) or the aclImdb layout train/pos, train/neg, test/pos, test/neg"
            )
    train, test = (_standardize(read_table(files[s]), cfg, str(files[s]), s) for s in ("train", "test"))
    return train, test


def _load_hub(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    import datasets  # heavy (about 1 s) and needed only for the Hub

    try:
        ds = datasets.load_dataset(cfg.hub_id)
    except Exception as exc:
        raise DataError(
            f"cannot load dataset '{cfg.hub_id}' from the Hugging Face Hub ({type(exc).__name__}). "
            "Offline? Point at a local copy: IMDB_DIR=/path/to/imdb, --data /path/to/imdb, or data.path in the "
            "config (a folder with train.parquet/test.parquet or the aclImdb layout). "
            "HF_HUB_OFFLINE=1 skips the Hub at once"
        ) from None
    out = []
    for split in ("train", "test"):
        if split not in ds:
            raise DataError(f"dataset '{cfg.hub_id}' has no '{split}' split (it has {list(ds)})")
        out.append(_standardize(ds[split].to_pandas(), cfg, f"{cfg.hub_id}[{split}]", split))
    return out[0], out[1]


def load_raw_splits(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load the labelled train and test frames from the configured source."""
    if cfg.path or (cfg.train_file and cfg.test_file) or cfg.source == "local":
        return _load_local(cfg)
    return _load_hub(cfg)


def clean_split(df: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """Count (and by policy drop) empty and duplicate texts; apply the optional preprocessing."""
    empty = df["text"].str.strip().eq("")
    dup = df["text"].duplicated(keep="first") & ~empty
    report = {"rows": len(df), "empty": int(empty.sum()), "duplicates": int(dup.sum())}
    keep = pd.Series(True, index=df.index)
    if cfg.empty_policy == "drop":
        keep &= ~empty
    if cfg.duplicate_policy == "drop":
        keep &= ~dup
    out = df[keep].reset_index(drop=True)
    if cfg.lowercase or cfg.strip_html:
        out["text"] = [preprocess_text(t, cfg.lowercase, cfg.strip_html) for t in out["text"]]
    report["kept"] = len(out)
    if len(out) == 0:
        raise DataError("no rows left after cleaning (every text was empty?)")
    return out, report


def stratified_subset(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """A class-balanced-as-the-source sample of n rows (all rows when n is None or >= len)."""
    if n is None or n >= len(df):
        return df

    if df["label"].nunique() < 2 or df["label"].value_counts().min() < 2 or n < 2:
        return df.sample(n=n, random_state=seed).reset_index(drop=True)
    sub, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=seed)
    return sub.reset_index(drop=True)


def stratified_split(df: pd.DataFrame, val_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train/validation keeping the class ratio."""

    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise DataError(f"training data holds only one class ({counts.index[0]}); need both 0 and 1")
    if counts.min() < 2:
        raise DataError("training data needs at least two reviews of each class for a stratified split")
    tr, va = train_test_split(df, test_size=val_fraction, stratify=df["label"], random_state=seed)
    return tr.reset_index(drop=True), va.reset_index(drop=True)


def prepare_data(cfg: DataConfig) -> DataSplits:
    """Load, clean, split and subset: the splits a run trains and evaluates on."""
    train_raw, test_raw = load_raw_splits(cfg)
    train_clean, train_report = clean_split(train_raw, cfg)
    test_clean, test_report = clean_split(test_raw, cfg)
    train, val = stratified_split(train_clean, cfg.val_fraction, cfg.split_seed)
    train = stratified_subset(train, cfg.max_train, cfg.split_seed)
    val = stratified_subset(val, cfg.max_eval, cfg.split_seed)
    test = stratified_subset(test_clean, cfg.max_test, cfg.split_seed)
    return DataSplits(train, val, test, cleaning={"train": train_report, "test": test_report})


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "min": int(np.min(values)),
        "max": int(np.max(values)),
    }


def dataset_stats(splits: DataSplits, tokenizer: Any | None = None, max_length: int | None = None) -> dict[str, Any]:
    """The summary the seed studies report: counts per class, words and tokens per review, share truncated."""
    stats: dict[str, Any] = {"cleaning": splits.cleaning, "splits": {}}
    for name in ("train", "val", "test"):
        df = getattr(splits, name)
        words = df["text"].str.split().str.len().to_numpy()
        entry: dict[str, Any] = {
            "n": len(df),
            "per_class": {"negative": int((df["label"] == 0).sum()), "positive": int((df["label"] == 1).sum())},
            "words": _describe(words),
        }
        if tokenizer is not None:
            tokens = count_tokens(tokenizer, df["text"].tolist())
            entry["tokens"] = _describe(tokens)
            if max_length:
                entry["max_length"] = max_length
                entry["truncated_share"] = float(np.mean(tokens > max_length))  # counts include [CLS]/[SEP]
        stats["splits"][name] = entry
    return stats
