"""Unlabelled texts: read a text file named in a config, clean it as the data is, and drop every text that occurs in
an evaluation split (counted), before anything learns from it. Used by `distill` (extra texts for the soft loss)
and `pretrain` (masked-LM pre-training).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from sentiment_lab.config import DataConfig
from sentiment_lab.data import read_table
from sentiment_lab.errors import DataError
from sentiment_lab.tokenization import preprocess_text

log = logging.getLogger("sentiment_lab")


def find_text_file(name: str, data_path: str | None) -> Path:
    """A file named in a config: absolute, else in data.path (a folder) when the file is there, else as given."""
    path = Path(name).expanduser()
    if not path.is_absolute() and data_path and Path(data_path).is_dir():
        beside = Path(data_path) / path
        if beside.is_file() or not path.is_file():
            return beside
    return path


def read_texts(path: Path, column: str, setting: str) -> pd.DataFrame:
    """The `id` (the file's own id column, else the row number) and `text` columns of a Parquet, CSV or JSONL file;
    a value that is no text reads as an empty text. setting: the config key naming `column`, for the error."""
    df = read_table(path)
    if column not in df.columns:
        raise DataError(
            f"text file {path} has no column {column!r} (columns: {', '.join(map(str, df.columns)) or 'none'}); set "
            f"{setting} to the column that holds the texts"
        )
    ids = df["id"].astype(str) if "id" in df.columns else pd.Series(range(len(df))).astype(str)
    texts = [t if isinstance(t, str) else "" for t in df[column].tolist()]
    return pd.DataFrame({"id": ids.to_numpy(), "text": texts})


def select_texts(
    frame: pd.DataFrame,
    data: DataConfig,
    evaluation: Collection[str],
    where: str = "the evaluation sets",
    limit: int | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The rows of `frame` (id, text) fit to learn from: cleaned as the data is (data.lowercase, data.strip_html),
    without empty and repeated texts and without every text in `evaluation` (exact match after that cleaning);
    then a random sample of `limit` of them (data.split_seed) when given. Returns the rows and the counts of what
    was dropped, also logged ("dropped N unlabelled texts that occur in WHERE").

    evaluation: texts of the evaluation split(s), already cleaned (`DataSplits` are). where: what they are, for the log.
    """
    texts = [preprocess_text(t, data.lowercase, data.strip_html) for t in frame["text"]]
    frame = pd.DataFrame({"id": frame["id"].to_numpy(), "text": texts})
    empty = frame["text"].str.strip().eq("")
    repeated = frame["text"].duplicated(keep="first") & ~empty
    in_eval = frame["text"].isin(set(evaluation)) & ~empty & ~repeated
    kept = frame[~(empty | repeated | in_eval)]
    if limit is not None and limit < len(kept):
        kept = kept.sample(n=limit, random_state=data.split_seed).sort_index()
    kept = kept.reset_index(drop=True)
    facts = {
        "rows": len(frame),
        "empty": int(empty.sum()),
        "repeated": int(repeated.sum()),
        "in_evaluation_sets": int(in_eval.sum()),
        "used": len(kept),
    }
    log.info(
        "dropped %d unlabelled texts that occur in %s (and %d empty, %d repeated); %d used",
        facts["in_evaluation_sets"],
        where,
        facts["empty"],
        facts["repeated"],
        facts["used"],
    )
    return kept, facts
