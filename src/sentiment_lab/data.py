"""Data: load reviews from the Hub, the aclImdb folders or Parquet/CSV/JSONL, clean, split, summarise.

Every split is a pandas DataFrame with columns `id` (str), `text` (str), `label` (int class id 0..K-1), and
`rating` (the IMDb star rating, 1-10) when the source carries one. Downstream code selects the columns it needs by
name. `DataSplits.label_names` names the K classes by id.
"""

from __future__ import annotations

import logging
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
SMALL_CLASS_SHARE = 0.10  # `dataset_stats` warns when the smallest class is under this share of the training set

log = logging.getLogger("sentiment_lab")


def default_label_names(k: int) -> list[str]:
    """Class names for data that names none: negative/positive for two classes, class_0 .. class_{k-1} beyond."""
    return ["negative", "positive"] if k == 2 else [f"class_{i}" for i in range(k)]


@dataclass
class DataSplits:
    """Train/validation/test frames plus what cleaning did.

    label_names: the class names by id; default from the data (`default_label_names` of the largest id + 1).
    """

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    cleaning: dict[str, Any] = field(default_factory=dict)
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.label_names:
            ids = [int(df["label"].max()) for df in (self.train, self.val, self.test) if not df.empty]
            self.label_names = default_label_names(max([1, *ids]) + 1)


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
    """Read the original aclImdb layout: `<split>/{pos,neg}/<id>_<rating>.txt` (the rating is kept as `rating`)."""
    rows = []
    for label_name, label in (("neg", 0), ("pos", 1)):
        sub = folder / split / label_name
        if not sub.is_dir():
            raise DataError(f"aclImdb folder {folder} has no {split}/{label_name}/ directory")
        for f in sorted(sub.glob("*.txt"), key=lambda x: int(x.stem.split("_")[0]) if x.stem[0].isdigit() else 0):
            review_id, _, rating = f.stem.partition("_")
            rows.append(
                {
                    "id": f"{split}/{label_name}/{review_id}",
                    "text": f.read_text("utf-8"),
                    "label": label,
                    "rating": int(rating) if rating.isdigit() else None,
                }
            )
    df = pd.DataFrame(rows, columns=["id", "text", "label", "rating"])
    ratings = star_ratings(df["rating"])
    return df.drop(columns="rating") if ratings is None else df.assign(rating=ratings)


def star_ratings(values: pd.Series) -> pd.Series | None:
    """Whole-number ratings as int64 (nullable Int64 when some are missing); None when there are none to keep.

    A `rating` column of another dataset that holds text or fractions is not a star rating and is not kept.
    """
    missing = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())  # NaN, None, blank CSV cell
    numbers = pd.to_numeric(values.mask(missing), errors="coerce")
    unreadable = numbers.isna() & ~missing
    if unreadable.any() or numbers.isna().all() or not (numbers.dropna() % 1 == 0).all():
        return None
    return numbers.astype("int64") if numbers.notna().all() else numbers.astype("Int64")


def normalize_labels(
    values: pd.Series,
    label_map: dict[str, int],
    source: str,
    label_names: list[str] | None = None,
    num_labels: int | None = None,
) -> pd.Series:
    """Map labels to class ids 0..K-1: ids pass; strings go through the class names and `label_map`, ignoring case.

    K is the number of `label_names`, else `num_labels`, else read from the data: the ids found (with those of the
    map) must then run 0, 1, 2, ... and an id past a gap is refused (5 among 0s and 1s is a typo, not class 5).
    """
    lowered = {name.strip().lower(): i for i, name in enumerate(label_names or [])}
    lowered |= {str(k).strip().lower(): v for k, v in label_map.items()}
    k = len(label_names) if label_names else num_labels

    def convert(v: Any) -> int | None:
        if isinstance(v, (bool, np.bool_)):
            return None
        if isinstance(v, (int, np.integer)) and v >= 0:
            return lowered.get(str(int(v)), int(v))  # a map may name ids too (IMDb stars: {"1": 0, ..., "10": 3})
        if isinstance(v, str):
            s = v.strip().lower()
            if s in lowered:
                return lowered[s]
            if s.isdigit():
                return int(s)
        return None  # floats too: ambiguous (probabilities?), refused rather than guessed

    missing = values.isna() | values.map(lambda v: isinstance(v, str) and not v.strip())  # NaN, None, blank
    if missing.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(missing.to_numpy())[:5])
        raise DataError(
            f"{source}: {int(missing.sum())} of {len(values)} rows have no label (first rows: {rows}); "
            "fill in their labels or remove those rows"
        )
    mapped = values.map(convert)
    if k is None:
        present = set(mapped.dropna().astype(int)) | set(lowered.values())
        k = 0
        while k in present:
            k += 1
    bad = mapped.isna() | (mapped >= k)
    if bad.any():
        examples = sorted({repr(v) for v in values[bad].head(1000)})[:5]
        raise DataError(
            f"{source}: {int(bad.sum())} of {len(values)} rows have labels outside the mapping "
            f"(e.g. {', '.join(examples)}); labels must be class ids 0..{max(k, 1) - 1} or one of {sorted(lowered)} "
            "(set data.label_names to the classes in id order, or extend data.label_map in the config)"
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
    out = pd.DataFrame(
        {
            "id": ids.to_numpy(),
            "text": texts.fillna("").astype(str).to_numpy(),
            "label": normalize_labels(
                df[cfg.label_column].reset_index(drop=True), cfg.label_map, source, cfg.label_names, cfg.num_labels
            ).to_numpy(),
        }
    )
    ratings = star_ratings(df["rating"].reset_index(drop=True)) if "rating" in df.columns else None
    if ratings is not None:  # IMDb's 1-10 stars (the Parquet copy, aclImdb file names); the Hub copy has none
        out["rating"] = ratings.array
    return out


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in TABLE_SUFFIXES:
        p = folder / f"{split}{suffix}"
        if p.is_file():
            return p
    return None


def _local_file(cfg: DataConfig, name: str) -> Path:
    """A configured file name: relative names are looked up in `data.path` when that is a folder (else the cwd)."""
    p = Path(name).expanduser()
    base = Path(cfg.path).expanduser() if cfg.path else None
    if not p.is_absolute() and base is not None:
        if base.is_file():
            raise DataError(
                f"data path {base} is a file, but the config names its files ({name}); give the folder holding them"
            )
        p = base / p
    return p


def _load_local(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    if cfg.train_file:
        roles = {"train": cfg.train_file, "val": cfg.val_file, "test": cfg.test_file}
        files = {role: _local_file(cfg, name) for role, name in roles.items() if name}
        if cfg.path and not Path(cfg.path).expanduser().exists():
            raise DataError(f"data path does not exist: {cfg.path} (point --data or data.path at the dataset folder)")
        missing = [f"{p} (data.{role}_file)" for role, p in files.items() if not p.exists()]
        if missing:
            raise DataError(
                f"data file not found: {', '.join(missing)}; point --data or data.path at the folder holding "
                f"{', '.join(sorted({p.name for p in files.values()}))}"
            )
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
            return {"train": read_aclimdb(folder, "train"), "test": read_aclimdb(folder, "test")}
        if (folder / "aclImdb" / "train" / "pos").is_dir():
            return {
                "train": read_aclimdb(folder / "aclImdb", "train"),
                "test": read_aclimdb(folder / "aclImdb", "test"),
            }
        found = {s: _find_split_file(folder, s) for s in ("train", "test")}
        lacking = [s for s, f in found.items() if f is None]
        if lacking:
            listed = ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix.lower() in TABLE_SUFFIXES)[:8])
            raise DataError(
                f"data folder {folder} has no {' or '.join(lacking)} file; expected train.parquet/test.parquet "
                "(or .csv/.jsonl) or the aclImdb layout train/pos, train/neg, test/pos, test/neg"
                + (f"; it holds {listed}: name them with data.train_file / val_file / test_file" if listed else "")
            )
        files = {s: f for s, f in found.items() if f is not None}
    return {role: _standardize(read_table(f), cfg, str(f), role) for role, f in files.items()}


def _load_hub(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import datasets  # heavy (about 1 s) and needed only for the Hub

    where = f"'{cfg.hub_id}'" + (f" (configuration '{cfg.hub_config}')" if cfg.hub_config else "")
    try:
        ds = datasets.load_dataset(cfg.hub_id, cfg.hub_config) if cfg.hub_config else datasets.load_dataset(cfg.hub_id)
    except Exception as exc:
        raise DataError(
            f"cannot load dataset {where} from the Hugging Face Hub ({type(exc).__name__}). "
            "Offline? Point at a local copy: --data /path/to/folder or data.path in the config "
            "(for IMDb also IMDB_DIR=/path/to/imdb: a folder with train.parquet/test.parquet or the aclImdb layout). "
            "HF_HUB_OFFLINE=1 skips the Hub at once"
        ) from None
    roles = {"train": cfg.hub_splits.train, "val": cfg.hub_splits.validation, "test": cfg.hub_splits.test}
    out: dict[str, pd.DataFrame] = {}
    class_names: list[str] | None = None
    for role, split in roles.items():
        if split is None:
            continue
        if split not in ds:
            key = "validation" if role == "val" else role
            raise DataError(f"dataset {where} has no '{split}' split (it has {list(ds)}); set data.hub_splits.{key}")
        frame = ds[split].to_pandas().rename(columns=cfg.hub_columns)
        # A ClassLabel column holds class indices in the dataset's own order; when its names are in label_map (or
        # data.label_names), labels go through the names, so a dataset whose classes are listed as [pos, neg] is not
        # inverted. Otherwise, without data.label_names, the indices are the class ids and the names the classes'.
        label_source = next((k for k, v in cfg.hub_columns.items() if v == cfg.label_column), cfg.label_column)
        names = getattr(ds[split].features.get(label_source), "names", None)
        lowered = {str(k).lower() for k in [*cfg.label_map, *(cfg.label_names or [])]}
        if names and all(str(n).lower() in lowered for n in names):
            frame[cfg.label_column] = frame[cfg.label_column].map(dict(enumerate(names)))
        elif names and cfg.label_names is None:
            class_names = [str(n) for n in names]
        out[role] = _standardize(frame, cfg, f"{cfg.hub_id}[{split}]", role)
    if class_names:
        out["train"].attrs["label_names"] = class_names  # read by prepare_data: the run's class names
    return out


def load_sources(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    """The labelled frames of the configured source by role: `train`, and `val` / `test` where the source has them."""
    if cfg.reads_local:
        return _load_local(cfg)
    return _load_hub(cfg)


def load_raw_splits(cfg: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The labelled train and test frames of the configured source (test None for a one-file pooled dataset)."""
    frames = load_sources(cfg)
    return frames["train"], frames.get("test")


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

    counts = df["label"].value_counts()
    if len(counts) < 2 or counts.min() < 2 or n < len(counts):  # too few to hold every class: a plain sample
        return df.sample(n=n, random_state=seed).reset_index(drop=True)
    sub, _ = train_test_split(df, train_size=n, stratify=df["label"], random_state=seed)
    return sub.reset_index(drop=True)


def stratified_split(
    df: pd.DataFrame,
    val_fraction: float | int,
    seed: int,
    what: str = "training data",
    label_names: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train/validation keeping the class ratio (any number of classes).

    val_fraction: a share of the rows, or a number of rows; 0 gives an empty validation frame (same columns).
    what: the data being split, for error messages. label_names: class names by id, for error messages.
    """
    if val_fraction == 0:
        return df.reset_index(drop=True), df.iloc[:0].reset_index(drop=True)
    counts = df["label"].value_counts().sort_index()

    def name(class_id: int) -> str:
        known = label_names is not None and class_id < len(label_names)
        return f"{label_names[class_id]!r} (id {class_id})" if known else f"id {class_id}"

    if len(counts) < 2:
        raise DataError(f"{what} holds only one class ({name(counts.index[0])}); need at least two classes")
    rare = counts[counts < 2]
    if len(rare):
        listed = ", ".join(f"class {name(int(i))} has {int(c)} example" for i, c in rare.items())
        raise DataError(
            f"{what}: {listed}; a stratified split needs at least 2 of each class. Add examples of it, merge it into "
            "another class (data.label_map), or remove its rows"
        )
    try:
        tr, va = train_test_split(df, test_size=val_fraction, stratify=df["label"], random_state=seed)
    except ValueError as exc:  # sklearn: a split smaller than the number of classes
        raise DataError(
            f"{what}: cannot split {len(df)} rows of {len(counts)} classes stratified ({exc}); give more data or a "
            "larger validation share"
        ) from None
    return tr.reset_index(drop=True), va.reset_index(drop=True)


def pooled_split(
    df: pd.DataFrame, fractions: tuple[float, float, float], seed: int, label_names: list[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Re-split pooled reviews into train/validation/test by shares of the pool, stratified by label and seeded.

    The test and validation sizes are rounded shares of the whole pool (50,000 at 0.8/0.1/0.1: 40,000/5,000/5,000).
    """
    n_val, n_test = round(len(df) * fractions[1]), round(len(df) * fractions[2])
    if n_test == 0 or len(df) - n_val - n_test <= 0:
        raise DataError(
            f"{len(df)} pooled reviews are too few for pooled_fractions {list(fractions)}: a split would be empty"
        )
    rest, test = stratified_split(df, n_test, seed, what="the pooled reviews", label_names=label_names)
    train, val = stratified_split(rest, n_val, seed, what="the pooled reviews", label_names=label_names)
    return train, val, test


def _pool(frames: list[pd.DataFrame], cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, int]]:
    """The cleaned frames as one pool; texts found in an earlier frame are counted (dropped by policy)."""
    pool = pd.concat(frames, ignore_index=True)
    dup = np.zeros(len(pool), dtype=bool)
    seen: set[str] = set()
    offset = 0
    for df in frames:  # duplicates within one frame were handled by clean_split; here only across frames
        dup[offset : offset + len(df)] = df["text"].isin(seen).to_numpy()
        seen |= set(df["text"])
        offset += len(df)
    report = {"rows": len(pool), "empty": 0, "duplicates": int(dup.sum())}
    if cfg.duplicate_policy == "drop":
        pool = pool[~dup].reset_index(drop=True)
    report["kept"] = len(pool)
    return pool, report


def prepare_data(cfg: DataConfig) -> DataSplits:
    """Load, clean, split and subset: the splits a run trains and evaluates on.

    split: standard tests on the source's test split and validates on its validation split (data.val_file,
    data.hub_splits.validation) or else holds out `val_fraction` of the train split; pooled pools every split it
    loads and re-splits them by `pooled_fractions`. Either is stratified by label and seeded with `split_seed`.
    """
    raw = load_sources(cfg)
    if cfg.split == "standard" and "test" not in raw:
        raise DataError(
            "the data has no test split; name one (data.test_file, data.hub_splits.test) or set split: pooled"
        )
    label_names = resolve_label_names(cfg, list(raw.values()))
    cleaned = {role: clean_split(df, cfg) for role, df in raw.items()}
    cleaning = {role: report for role, (_, report) in cleaned.items()}
    if cfg.split == "pooled":
        pool, cleaning["pooled"] = _pool([df for df, _ in cleaned.values()], cfg)
        train, val, test = pooled_split(pool, cfg.pooled_fractions, cfg.split_seed, label_names)
    elif "val" in cleaned:
        if cfg.val_fraction != DataConfig.model_fields["val_fraction"].default:
            raise DataError(
                f"the source has a validation split (data.hub_splits.validation: {cfg.hub_splits.validation}), so "
                f"val_fraction {cfg.val_fraction} would be ignored; remove one of them"
            )
        train, val, test = cleaned["train"][0], cleaned["val"][0], cleaned["test"][0]
    else:
        train, val = stratified_split(cleaned["train"][0], cfg.val_fraction, cfg.split_seed, label_names=label_names)
        test = cleaned["test"][0]
    train = stratified_subset(train, cfg.max_train, cfg.split_seed)
    val = stratified_subset(val, cfg.max_eval, cfg.split_seed)
    test = stratified_subset(test, cfg.max_test, cfg.split_seed)
    return DataSplits(train, val, test, cleaning=cleaning, label_names=label_names)


def resolve_label_names(cfg: DataConfig, frames: list[pd.DataFrame]) -> list[str]:
    """The run's class names: data.label_names, else the source's (a Hub ClassLabel), else `default_label_names`.

    The classes the data shows must be as many as the config says (data.label_names or data.num_labels).
    """
    found = sorted(set().union(*(set(df["label"]) for df in frames)))
    names = cfg.label_names or frames[0].attrs.get("label_names") or default_label_names(max([1, *found]) + 1)
    expected = len(cfg.label_names) if cfg.label_names else cfg.num_labels
    if expected is not None and len(found) != expected:
        shown = ", ".join(f"{names[i]!r}" if i < len(names) else str(i) for i in found)
        said = f"data.label_names lists {expected}" if cfg.label_names else f"data.num_labels is {expected}"
        raise DataError(
            f"the data shows {len(found)} classes ({shown}) but {said}; fix data.label_names / data.num_labels, or "
            "check data.label_column and the data path"
        )
    return list(names)


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "min": int(np.min(values)),
        "max": int(np.max(values)),
    }


def dataset_stats(splits: DataSplits, tokenizer: Any | None = None, max_length: int | None = None) -> dict[str, Any]:
    """The summary the seed studies report: counts per class (by name), words and tokens per review, share truncated.

    An empty split (no validation split: data.val_fraction 0) has no entry. A `warnings` list (also logged) is
    added when the smallest class is under 10% of the training set.
    """
    stats: dict[str, Any] = {"cleaning": splits.cleaning, "splits": {}}
    names = splits.label_names
    for name in ("train", "val", "test"):
        df = getattr(splits, name)
        if df.empty:
            continue
        words = df["text"].str.split().str.len().to_numpy()
        entry: dict[str, Any] = {
            "n": len(df),
            "per_class": {name: int((df["label"] == i).sum()) for i, name in enumerate(names)},
            "words": _describe(words),
        }
        if tokenizer is not None:
            tokens = count_tokens(tokenizer, df["text"].tolist())
            entry["tokens"] = _describe(tokens)
            if max_length:
                entry["max_length"] = max_length
                entry["truncated_share"] = float(np.mean(tokens > max_length))  # counts include [CLS]/[SEP]
        stats["splits"][name] = entry
    train = stats["splits"].get("train")
    if train:
        smallest = min(train["per_class"], key=train["per_class"].get)
        share = train["per_class"][smallest] / train["n"]
        if share < SMALL_CLASS_SHARE:
            stats["warnings"] = [
                f"class {smallest!r} is {100 * share:.1f}% of the training set ({train['per_class'][smallest]} of "
                f"{train['n']}): consider training.class_weights: balanced, and read its per-class metrics"
            ]
            log.warning("%s", stats["warnings"][0])
    return stats
