"""Active learning: which unlabelled pool texts are most worth labelling next, by a trained run's predictions.

`choose` ranks a pool from its class probabilities (and, for `diverse`, the model's encoder vectors);
`select_for_labelling` reads a pool file, scores it with the run's Predictor, checks it against the run's own
training data and writes the chosen texts as a CSV or Parquet file a labelling tool opens. Its empty `label` column,
once filled in, makes the file a training file for the normal data loader (`data.train_file`).

Strategies (the score written for each pick, and what ranks first):
- uncertainty: least confidence, 1 - top probability; highest first.
- margin: top probability - second probability; smallest first.
- entropy: the entropy of the class probabilities in nats; highest first.
- balanced: least confidence within each predicted class: the N picks are shared evenly among the classes the
  model predicts (round-robin, most uncertain first in each), so a model that leans one way does not spend a whole
  round on one class (the cold-start failure of plain uncertainty, docs/active_learning.md).
- random: a seeded uniform draw (the score is the draw); the baseline every strategy must beat.
- diverse: uncertainty-weighted diversity. The `candidates` x N least confident texts are embedded with the model's
  encoder (`Predictor.embeddings`), clustered into N groups (k-means, seeded) and the text nearest each centre is
  picked, so the N are uncertain and unlike each other (not N near-copies of one hard case). An ensemble answers
  with its averaged probabilities and its first member's encoder.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

from sentiment_lab.batch_predict import row_text
from sentiment_lab.data import TABLE_SUFFIXES, prepare_data, read_table
from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.io import write_csv_atomic, write_parquet_atomic
from sentiment_lab.predictor import Predictor
from sentiment_lab.predictor_options import PredictorOptions
from sentiment_lab.rundir import is_ensemble, read_run_config, verify_ensemble
from sentiment_lab.tokenization import preprocess_text

log = logging.getLogger("sentiment_lab")

STRATEGIES = ("uncertainty", "margin", "entropy", "balanced", "random", "diverse")
OUTPUT_SUFFIXES = (".csv", ".parquet")
# rank (1 = most worth labelling), the pool's id and text, the annotator's empty label, then why it was chosen
SELECTION_COLUMNS = ("rank", "id", "text", "label", "predicted_label", "probability", "score", "strategy", "reason")
DEFAULT_CANDIDATES = 5  # diverse: clusters are drawn from the 5N least confident texts


@dataclass(frozen=True)
class Selection:
    """The chosen pool positions, most worth labelling first, with the strategy's score and a reason for each."""

    indices: np.ndarray
    scores: np.ndarray
    reasons: list[str]


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - top probability per row: 0 for a certain prediction, 1 - 1/K for a uniform one."""
    return 1.0 - probs.max(axis=1)


def margins(probs: np.ndarray) -> np.ndarray:
    """Top probability - second probability per row: small when the model hesitates between two classes."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropies(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row's class probabilities, in nats (0 to log K)."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k:,}{suffix}"


def choose(
    strategy: str,
    n: int,
    probs: np.ndarray | None = None,
    size: int | None = None,
    seed: int = 0,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    labels: list[str] | None = None,
    candidates: int = DEFAULT_CANDIDATES,
) -> Selection:
    """The min(n, pool) pool positions a strategy picks, most worth labelling first.

    probs: class probabilities (pool, K); only `random` does without them (give `size`, the pool's length).
    embed: pool positions -> their vectors (pool positions, dim); `diverse` only. labels: class names, for reasons.
    candidates: `diverse` clusters the candidates x n least confident texts.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if probs is None and strategy != "random":
        raise ConfigError(f"strategy {strategy} needs the pool's class probabilities")
    m = len(probs) if probs is not None else int(size or 0)
    k = min(n, m)
    if strategy == "random":
        draws = np.random.default_rng(seed).random(m)
        order = np.argsort(draws, kind="stable")[:k]
        return Selection(order, draws[order], [f"drawn at random (seed {seed}) from {m:,}"] * k)

    assert probs is not None
    names = labels or [f"class {i}" for i in range(probs.shape[1])]
    if strategy == "uncertainty":
        scores = least_confidence(probs)
        order = np.argsort(-scores, kind="stable")[:k]
        reasons = [
            f"top probability {1 - scores[i]:.2f} ({_ordinal(r + 1)} least confident of {m:,})"
            for r, i in enumerate(order)
        ]
        return Selection(order, scores[order], reasons)
    if strategy == "margin":
        scores = margins(probs)
        order = np.argsort(scores, kind="stable")[:k]
        ranked = np.argsort(-probs, axis=1, kind="stable")
        reasons = []
        for r, i in enumerate(order):
            a, b = ranked[i, 0], ranked[i, 1]
            reasons.append(
                f"{names[a]} {probs[i, a]:.2f} vs {names[b]} {probs[i, b]:.2f}, margin {scores[i]:.2f} "
                f"({_ordinal(r + 1)} smallest of {m:,})"
            )
        return Selection(order, scores[order], reasons)
    if strategy == "entropy":
        scores = entropies(probs)
        order = np.argsort(-scores, kind="stable")[:k]
        most = math.log(probs.shape[1])
        reasons = [
            f"entropy {scores[i]:.3f} of at most {most:.3f} nats ({_ordinal(r + 1)} highest of {m:,})"
            for r, i in enumerate(order)
        ]
        return Selection(order, scores[order], reasons)
    if strategy == "balanced":
        return _balanced(probs, k, m, names)
    return _diverse(probs, k, m, seed, embed, candidates)


def _balanced(probs: np.ndarray, k: int, m: int, names: list[str]) -> Selection:
    # Not in scikit-learn or modAL: per-class quotas over one uncertainty ranking. Round-robin over the predicted
    # classes, each class's least confident first; a class that runs out leaves its turns to the others.
    scores = least_confidence(probs)
    predicted = probs.argmax(axis=1)
    by_uncertainty = np.argsort(-scores, kind="stable")
    queues = [by_uncertainty[predicted[by_uncertainty] == c].tolist() for c in range(probs.shape[1])]
    chosen: list[int] = []
    reasons: list[str] = []
    taken = [0] * len(queues)
    while len(chosen) < k:
        for c, queue in enumerate(queues):
            if taken[c] < len(queue) and len(chosen) < k:
                i = queue[taken[c]]
                taken[c] += 1
                chosen.append(i)
                reasons.append(
                    f"top probability {1 - scores[i]:.2f}, {_ordinal(taken[c])} least confident of the "
                    f"{len(queue):,} predicted {names[c]} (of {m:,})"
                )
    order = np.array(chosen, dtype=np.int64)
    return Selection(order, scores[order], reasons)


def _diverse(
    probs: np.ndarray, k: int, m: int, seed: int, embed: Callable[[np.ndarray], np.ndarray] | None, candidates: int
) -> Selection:
    if embed is None:
        raise ConfigError("strategy diverse needs the pool texts' embeddings (an `embed` function)")
    if candidates < 1:
        raise ConfigError(f"candidates must be at least 1, got {candidates}")
    scores = least_confidence(probs)
    by_uncertainty = np.argsort(-scores, kind="stable")
    pool = by_uncertainty[: min(m, max(k, candidates * k))]
    if len(pool) <= k:  # nothing to choose between: every candidate is taken
        chosen = pool
        cluster_of = {int(i): None for i in chosen}
    else:
        vectors = np.asarray(embed(pool), dtype=np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)  # cosine geometry
        with warnings.catch_warnings():  # duplicate texts: fewer distinct clusters than k, handled below
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, random_state=seed, n_init=1, max_iter=100).fit(vectors)
        distances = np.linalg.norm(vectors - km.cluster_centers_[km.labels_], axis=1)
        cluster_of = {}
        for c in range(k):
            members = np.flatnonzero(km.labels_ == c)
            if len(members):  # each text is in one cluster, so the picks are distinct
                cluster_of[int(pool[members[np.argmin(distances[members])]])] = c
        # duplicate texts can leave clusters empty: the most uncertain candidates not yet picked fill the gap
        for i in pool:
            if len(cluster_of) >= k:
                break
            cluster_of.setdefault(int(i), None)
        chosen = np.array([i for i in by_uncertainty if int(i) in cluster_of])
    reasons = []
    for i in chosen:
        c = cluster_of[int(i)]
        where = (
            f"nearest the centre of cluster {c + 1} of {k:,}"
            if c is not None
            else "taken whole (too few candidates to cluster)"
            if len(pool) <= k
            else "fills an empty cluster"
        )
        reasons.append(f"{where} among the {len(pool):,} least confident; top probability {1 - scores[i]:.2f}")
    return Selection(chosen, scores[chosen], reasons)


# Reading the pool and writing the selection ------------------------------------------------------------------------


def _check_paths(pool: Path, out: Path, overwrite: bool) -> None:
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--out {out} must end in {' or '.join(OUTPUT_SUFFIXES)} (a file a labelling tool opens)")
    if pool.suffix.lower() not in TABLE_SUFFIXES:
        raise DataError(f"pool file {pool} has an unsupported format; use one of {', '.join(TABLE_SUFFIXES)}")
    if not pool.is_file():
        raise DataError(f"pool file not found: {pool}")
    if out.exists() and out.resolve() == pool.resolve():
        raise DataError(f"--out {out} is the pool file; write the selection to another file")
    if out.exists() and not overwrite:
        raise DataError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")


def read_pool(path: Path, text_column: str = "text", id_column: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The pool's usable rows as a frame (row, id, text) and the counts of rows skipped (empty, invalid).

    id: the id column's value (id_column, else an `id` column), else the row's 0-based position in the file.
    """
    df = read_table(path)
    if text_column not in df.columns:
        raise DataError(
            f"pool file {path} has no column '{text_column}'; its columns are {list(df.columns)} (set --text-column)"
        )
    if id_column and id_column not in df.columns:
        raise DataError(
            f"pool file {path} has no column '{id_column}'; its columns are {list(df.columns)} (set --id-column)"
        )
    id_column = id_column or ("id" if "id" in df.columns else None)
    counts = {"rows": len(df), "empty": 0, "invalid": 0}
    rows, ids, texts = [], [], []
    id_values = df[id_column].tolist() if id_column else range(len(df))
    for r, (value, ident) in enumerate(zip(df[text_column].tolist(), id_values, strict=True)):
        text, kind = row_text(value)
        if kind:
            counts[kind] += 1
            continue
        rows.append(r)
        ids.append(str(ident))
        texts.append(text)
    counts["has_ids"] = id_column is not None
    return pd.DataFrame({"row": rows, "id": ids, "text": texts}), counts


def _training_runs(run_dir: Path) -> list[Path]:
    return verify_ensemble(run_dir)[1] if is_ensemble(run_dir) else [run_dir]


def training_overlap(run_dir: str | Path, pool: pd.DataFrame, match_ids: bool = True) -> tuple[np.ndarray, dict]:
    """Which pool rows are already in the run's labelled data (its train and validation splits; every member's for an
    ensemble), matched by id (when match_ids) or by text (after the run's own lowercasing / HTML stripping).

    Returns (mask over the pool's rows, {by_id, by_text, overlap}); raises whatever loading the run's data raises.
    """
    ids: set[str] = set()
    by_text = np.zeros(len(pool), dtype=bool)
    seen: set[str] = set()
    for run in _training_runs(Path(run_dir)):
        data = read_run_config(run).data
        key = data.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        splits = prepare_data(data)
        labelled = pd.concat([splits.train, splits.val], ignore_index=True)
        ids |= set(labelled["id"].astype(str))
        known = set(labelled["text"])
        texts = [preprocess_text(t, data.lowercase, data.strip_html) for t in pool["text"]]
        by_text |= np.array([t in known for t in texts], dtype=bool)
    by_id = pool["id"].isin(ids).to_numpy() if match_ids else np.zeros(len(pool), dtype=bool)
    mask = by_id | by_text
    return mask, {"by_id": int(by_id.sum()), "by_text": int(by_text.sum()), "overlap": int(mask.sum())}


def select_for_labelling(
    run_dir: str | Path,
    pool_path: str | Path,
    n: int,
    strategy: str,
    out_path: str | Path,
    seed: int = 0,
    text_column: str = "text",
    id_column: str | None = None,
    exclude_train: bool = False,
    batch_size: int = 32,
    candidates: int = DEFAULT_CANDIDATES,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the n pool texts most worth labelling next (by `strategy`, see the module doc) to out_path.

    out_path: .csv or .parquet, written atomically, with SELECTION_COLUMNS: rank, id, text, an empty `label` for the
    annotator, the model's predicted_label and its probability, the strategy's score and a reason. Filled in, it reads
    back as data.train_file. Pool rows with empty or non-text values are skipped and counted. Pool texts already in
    the run's training data are counted in a warning (exclude_train drops them); a pool of fewer than n usable
    texts gives them all, with a warning. Returns a summary (counts, warnings, the output path).
    """
    run, pool_file, out = Path(run_dir), Path(pool_path), Path(out_path)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    _check_paths(pool_file, out, overwrite)
    pool, counts = read_pool(pool_file, text_column, id_column)
    notes: list[str] = []
    skipped = counts["empty"] + counts["invalid"]
    if skipped:
        notes.append(
            f"{skipped:,} of {counts['rows']:,} pool rows skipped: {counts['empty']:,} empty, "
            f"{counts['invalid']:,} not text"
        )

    overlap: dict[str, Any] | None = None
    try:
        mask, overlap = training_overlap(run, pool, match_ids=counts["has_ids"])
    except Exception as exc:  # the run's data may be gone or remote: selecting still works, the check does not
        notes.append(
            f"overlap with the run's training data not checked: its data could not be loaded "
            f"({type(exc).__name__}: {exc})"
        )
    else:
        if overlap["overlap"]:
            what = f"{overlap['by_id']:,} by id, {overlap['by_text']:,} by text"
            if exclude_train:
                pool = pool[~mask].reset_index(drop=True)
                notes.append(f"{overlap['overlap']:,} pool texts are in the run's training data ({what}); dropped")
            else:
                notes.append(
                    f"{overlap['overlap']:,} pool texts are in the run's training data ({what}): they are labelled "
                    "already and the model has seen them; pass --exclude-train to drop them"
                )
    if pool.empty:
        raise DataError(f"pool file {pool_file} has no usable text left to select from ({counts['rows']:,} rows)")
    whole_pool = len(pool) <= n
    if whole_pool:
        notes.append(f"the pool has {len(pool):,} usable texts, not more than --n {n:,}: all of them are returned")

    predictor = Predictor.load(run, PredictorOptions.build(batch_size=batch_size))
    texts = pool["text"].tolist()
    probs = predictor.probabilities(texts)

    def embed(positions: np.ndarray) -> np.ndarray:
        return predictor.embeddings([texts[i] for i in positions])

    picked = choose(strategy, n, probs, seed=seed, embed=embed, labels=predictor.labels, candidates=candidates)
    idx = picked.indices
    top = probs[idx].argmax(axis=1)
    reasons = [r + (f"; the whole pool ({len(pool):,} < n {n:,})" if whole_pool else "") for r in picked.reasons]
    frame = pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "id": pool["id"].to_numpy()[idx],
            "text": pool["text"].to_numpy()[idx],
            "label": [""] * len(idx),
            "predicted_label": [predictor.labels[int(k)] for k in top],
            "probability": probs[idx].max(axis=1).astype(np.float64),
            "score": picked.scores.astype(np.float64),
            "strategy": [strategy] * len(idx),
            "reason": reasons,
        },
        columns=list(SELECTION_COLUMNS),
    )
    if out.suffix.lower() == ".parquet":
        write_parquet_atomic(out, frame)
    else:
        write_csv_atomic(out, frame)
    for w in notes:
        log.warning("%s", w)
    return {
        "out": str(out),
        "strategy": strategy,
        "n": n,
        "selected": len(frame),
        "pool_rows": counts["rows"],
        "usable": len(pool),
        "skipped": {"empty": counts["empty"], "invalid": counts["invalid"]},
        "overlap": overlap,
        "excluded_train": bool(exclude_train and overlap and overlap["overlap"]),
        "whole_pool": whole_pool,
        "probability_range": [float(frame["probability"].min()), float(frame["probability"].max())],
        "ensemble": bool(predictor.members),
        "warnings": notes,
    }
