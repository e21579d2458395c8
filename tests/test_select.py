"""Active learning (`select`): each strategy's ordering, the written file and its way back through the data loader,
the overlap and small-pool warnings, the CLI's refusals, an ensemble, and the benchmark's pure functions."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import load_benchmark
from sentiment_lab.cli import main
from sentiment_lab.config import DataConfig
from sentiment_lab.data import prepare_data
from sentiment_lab.ensemble import make_ensemble
from sentiment_lab.errors import ConfigError, DataError
from sentiment_lab.predictor import Predictor
from sentiment_lab.rundir import read_run_config
from sentiment_lab.selection import SELECTION_COLUMNS, choose, select_for_labelling

# Five texts of three classes with known probabilities: confidence, margin and entropy rank them differently.
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # 0: confident
        [0.40, 0.35, 0.25],  # 1: least confident (top 0.40)
        [0.49, 0.485, 0.025],  # 2: smallest margin (0.005)
        [0.34, 0.33, 0.33],  # 3: highest entropy, and top 0.34: the least confident of all
        [0.60, 0.20, 0.20],  # 4
    ]
)


def test_uncertainty_margin_and_entropy_rank_by_their_score() -> None:
    u = choose("uncertainty", 3, PROBS, labels=["neg", "neu", "pos"])
    assert u.indices.tolist() == [3, 1, 2]
    assert np.allclose(u.scores, [0.66, 0.60, 0.51])
    assert u.reasons[0] == "top probability 0.34 (1st least confident of 5)"
    m = choose("margin", 2, PROBS, labels=["neg", "neu", "pos"])
    assert m.indices.tolist() == [2, 3]  # margins 0.005 and 0.01
    assert m.reasons[0] == "neg 0.49 vs neu 0.48, margin 0.01 (1st smallest of 5)"
    assert m.reasons[1] == "neg 0.34 vs neu 0.33, margin 0.01 (2nd smallest of 5)"
    e = choose("entropy", 5, PROBS)
    assert e.indices[0] == 3 and e.indices[-1] == 0
    assert np.all(np.diff(e.scores) <= 0)


def test_random_is_seeded_and_needs_no_probabilities() -> None:
    a = choose("random", 10, size=100, seed=3)
    b = choose("random", 10, size=100, seed=3)
    c = choose("random", 10, size=100, seed=4)
    assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
    assert len(set(a.indices.tolist())) == 10
    assert a.reasons[0] == "drawn at random (seed 3) from 100"


def test_choose_refuses_bad_requests() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        choose("loudest", 1, PROBS)
    with pytest.raises(ConfigError, match="at least 1"):
        choose("uncertainty", 0, PROBS)
    with pytest.raises(ConfigError, match="embeddings"):
        choose("diverse", 2, PROBS)


def test_balanced_shares_the_picks_among_the_predicted_classes() -> None:
    """A model leaning positive: the 6 least confident texts are all predicted positive, so uncertainty takes only
    positives; balanced alternates the classes, each class's least confident first."""
    top_pos = [0.51, 0.52, 0.53, 0.54, 0.55, 0.56, 0.90, 0.95]  # rows 0-7 predicted positive
    top_neg = [0.70, 0.60, 0.99]  # rows 8-10 predicted negative: 9 is their least confident, then 8
    probs = np.array([[1 - p, p] for p in top_pos] + [[p, 1 - p] for p in top_neg])
    assert set(choose("uncertainty", 4, probs).indices.tolist()) <= set(range(8))
    b = choose("balanced", 4, probs, labels=["neg", "pos"])
    assert b.indices.tolist() == [9, 0, 8, 1]
    assert np.allclose(b.scores, [0.40, 0.49, 0.30, 0.48])
    assert b.reasons[0] == "top probability 0.60, 1st least confident of the 3 predicted neg (of 11)"
    assert b.reasons[3] == "top probability 0.52, 2nd least confident of the 8 predicted pos (of 11)"
    # a class that runs out leaves its turns to the other: 3 negatives, then positives only
    c = choose("balanced", 7, probs)
    assert c.indices.tolist() == [9, 0, 8, 1, 10, 2, 3]
    assert len(set(choose("balanced", 11, probs).indices.tolist())) == 11


def test_the_cli_offers_every_strategy_of_the_module() -> None:
    from sentiment_lab.cli.parsers import SELECT_STRATEGIES
    from sentiment_lab.selection import STRATEGIES

    assert SELECT_STRATEGIES == STRATEGIES


def test_diverse_picks_one_uncertain_text_per_cluster() -> None:
    """Four tight groups of near-identical texts, all uncertain: uncertainty alone takes four from the most uncertain
    group; diverse takes one from each group, the one nearest its centre."""
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    vectors = np.concatenate([c + rng.normal(0, 0.1, (10, 8)) for c in centres])  # group g: rows 10g .. 10g+9
    top = np.concatenate([np.full(10, 0.51 + 0.01 * g) for g in range(4)]) + rng.uniform(0, 0.001, 40)
    probs = np.stack([top, 1 - top], axis=1)
    assert {int(i) // 10 for i in choose("uncertainty", 4, probs).indices} == {0}
    calls = []

    def embed(positions: np.ndarray) -> np.ndarray:
        calls.append(len(positions))
        return vectors[positions]

    picked = choose("diverse", 4, probs, embed=embed, candidates=10, seed=0)
    assert calls == [40]  # min(pool, candidates x n) texts embedded
    assert len(set(picked.indices.tolist())) == 4
    assert sorted(int(i) // 10 for i in picked.indices) == [0, 1, 2, 3]
    assert np.all(np.diff(picked.scores) <= 0)  # most uncertain first
    assert "nearest the centre of cluster" in picked.reasons[0] and "among the 40 least confident" in picked.reasons[0]
    again = choose("diverse", 4, probs, embed=embed, candidates=10, seed=0)
    assert again.indices.tolist() == picked.indices.tolist()


def test_diverse_on_a_pool_of_duplicates_still_gives_n_distinct_texts() -> None:
    probs = np.tile([[0.55, 0.45]], (12, 1))
    picked = choose("diverse", 5, probs, embed=lambda pos: np.ones((len(pos), 4)), candidates=2)
    assert len(set(picked.indices.tolist())) == 5


# Files, the data loader, warnings ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_reviews(imdb_dir: Path) -> pd.DataFrame:
    """30 IMDb test reviews (not in the tiny run's training data), 15 of each class."""
    df = pd.read_parquet(imdb_dir / "test.parquet")
    return pd.concat([df[df.label == k].head(15) for k in (0, 1)], ignore_index=True)


def _pool(path: Path, reviews: pd.DataFrame, extra: pd.DataFrame | None = None) -> Path:
    frame = reviews[["id", "text"]]
    if extra is not None:
        frame = pd.concat([frame, extra[["id", "text"]]], ignore_index=True)
    frame.to_parquet(path, index=False) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    return path


def test_csv_selection_is_ranked_and_reads_back_as_training_data_once_labelled(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, imdb_dir: Path, tmp_path: Path
) -> None:
    pool = test_reviews.copy()
    pool.loc[3, "text"] = "   "  # empty: skipped and counted
    pool_file = _pool(tmp_path / "pool.csv", pool)
    out = tmp_path / "to_label.csv"
    summary = select_for_labelling(tiny_run_dir, pool_file, 8, "uncertainty", out)
    assert summary["selected"] == 8 and summary["usable"] == 29 and summary["skipped"] == {"empty": 1, "invalid": 0}
    assert summary["overlap"] == {"by_id": 0, "by_text": 0, "overlap": 0}
    assert any("1 of 30 pool rows skipped" in w for w in summary["warnings"])

    sel = pd.read_csv(out, keep_default_na=False)
    assert tuple(sel.columns) == SELECTION_COLUMNS
    assert sel["rank"].tolist() == list(range(1, 9))
    assert (sel["label"] == "").all() and (sel["strategy"] == "uncertainty").all()
    # the least confident texts of the pool, by the Predictor's own probabilities
    usable = pool.drop(index=3).reset_index(drop=True)
    probs = Predictor.load(tiny_run_dir).probabilities(usable["text"].tolist())
    expected = usable["id"].to_numpy()[np.argsort(probs.max(axis=1), kind="stable")[:8]]
    assert sel["id"].tolist() == expected.tolist()
    assert np.allclose(sel["score"], 1 - sel["probability"], atol=1e-6)
    assert np.all(np.diff(sel["score"]) <= 1e-12)
    assert sel["reason"][0].startswith("top probability ") and "least confident of 29" in sel["reason"][0]

    # the annotator fills the label column; the file is then a training file of the normal data loader
    truth = dict(zip(test_reviews["id"], test_reviews["label"], strict=True))
    sel["label"] = ["positive" if truth[i] == 1 else "negative" for i in sel["id"]]
    sel.to_csv(out, index=False)
    splits = prepare_data(
        DataConfig(source="local", train_file=str(out), test_file=str(imdb_dir / "test.parquet"), val_fraction=0.25)
    )
    loaded = pd.concat([splits.train, splits.val])
    assert sorted(loaded["id"]) == sorted(sel["id"])
    assert all(loaded.set_index("id")["label"][i] == truth[i] for i in sel["id"])


def test_a_half_labelled_file_is_refused_by_the_loader(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, imdb_dir, tmp_path
):
    out = tmp_path / "to_label.csv"
    select_for_labelling(tiny_run_dir, _pool(tmp_path / "pool.csv", test_reviews), 4, "random", out)
    sel = pd.read_csv(out, keep_default_na=False)
    sel.loc[0, "label"] = "positive"
    sel.to_csv(out, index=False)
    cfg = DataConfig(source="local", train_file=str(out), test_file=str(imdb_dir / "test.parquet"))
    with pytest.raises(DataError, match="3 of 4 rows have no label"):
        prepare_data(cfg)


def test_parquet_selection_by_margin_and_random_seeded(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    pool_file = _pool(tmp_path / "pool.parquet", test_reviews)
    select_for_labelling(tiny_run_dir, pool_file, 5, "margin", tmp_path / "m.parquet")
    sel = pd.read_parquet(tmp_path / "m.parquet")
    assert tuple(sel.columns) == SELECTION_COLUMNS and len(sel) == 5
    assert np.all(np.diff(sel["score"]) >= -1e-12)  # smallest margin first
    assert np.allclose(sel["score"], 2 * sel["probability"] - 1, atol=1e-6)  # binary: top1 - top2 = 2 p - 1
    assert sel["reason"][0].split(" ")[0] in ("NEGATIVE", "POSITIVE")
    a = select_for_labelling(tiny_run_dir, pool_file, 5, "random", tmp_path / "r1.parquet", seed=7)
    select_for_labelling(tiny_run_dir, pool_file, 5, "random", tmp_path / "r2.parquet", seed=7)
    assert a["selected"] == 5
    assert (
        pd.read_parquet(tmp_path / "r1.parquet")["id"].tolist()
        == pd.read_parquet(tmp_path / "r2.parquet")["id"].tolist()
    )


def test_overlap_with_the_training_data_is_counted_and_can_be_dropped(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path, caplog
) -> None:
    splits = prepare_data(read_run_config(tiny_run_dir).data)
    seen = pd.concat([splits.train.head(5), splits.val.head(3)], ignore_index=True)
    pool_file = _pool(tmp_path / "pool.parquet", test_reviews, extra=seen)
    with caplog.at_level(logging.WARNING, logger="sentiment_lab"):
        summary = select_for_labelling(tiny_run_dir, pool_file, 50, "uncertainty", tmp_path / "a.csv")
    assert summary["overlap"] == {"by_id": 8, "by_text": 8, "overlap": 8}
    assert "8 pool texts are in the run's training data (8 by id, 8 by text)" in caplog.text
    assert summary["selected"] == 38

    dropped = select_for_labelling(tiny_run_dir, pool_file, 50, "uncertainty", tmp_path / "b.csv", exclude_train=True)
    assert dropped["usable"] == 30 and dropped["excluded_train"]
    assert not set(pd.read_csv(tmp_path / "b.csv")["id"]) & set(seen["id"])

    # without ids, the texts still match
    seen[["text"]].to_csv(tmp_path / "noid.csv", index=False)
    by_text = select_for_labelling(tiny_run_dir, tmp_path / "noid.csv", 2, "random", tmp_path / "c.csv")
    assert by_text["overlap"] == {"by_id": 0, "by_text": 8, "overlap": 8}
    assert set(pd.read_csv(tmp_path / "c.csv")["id"]) <= set(range(8))  # the rows' positions serve as ids


def test_overlap_not_checked_when_the_run_data_is_gone(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["data"]["path"] = str(tmp_path / "moved-away")
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    summary = select_for_labelling(
        run, _pool(tmp_path / "pool.csv", test_reviews), 3, "uncertainty", tmp_path / "o.csv"
    )
    assert summary["overlap"] is None and summary["selected"] == 3
    assert any(w.startswith("overlap with the run's training data not checked") for w in summary["warnings"])


def test_a_pool_smaller_than_n_is_returned_whole_and_says_so(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    pool_file = _pool(tmp_path / "pool.csv", test_reviews.head(6))
    summary = select_for_labelling(tiny_run_dir, pool_file, 10, "diverse", tmp_path / "all.csv")
    assert summary["selected"] == 6 and summary["whole_pool"]
    assert "the pool has 6 usable texts, not more than --n 10: all of them are returned" in summary["warnings"]
    sel = pd.read_csv(tmp_path / "all.csv")
    assert sorted(sel["id"]) == sorted(test_reviews.head(6)["id"])
    assert sel["reason"].str.endswith("the whole pool (6 < n 10)").all()


def test_diverse_on_a_tiny_model_picks_distinct_texts(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    summary = select_for_labelling(
        tiny_run_dir, _pool(tmp_path / "pool.csv", test_reviews), 4, "diverse", tmp_path / "d.csv", candidates=5
    )
    sel = pd.read_csv(tmp_path / "d.csv")
    assert summary["selected"] == 4 and sel["id"].nunique() == 4
    assert sel["reason"].str.contains("among the 20 least confident").all()
    vectors = Predictor.load(tiny_run_dir).embeddings(sel["text"].tolist())
    assert vectors.shape == (4, 32) and np.isfinite(vectors).all()


def test_an_ensemble_selects_with_its_averaged_probabilities(
    tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path
) -> None:
    a = shutil.copytree(tiny_run_dir, tmp_path / "a", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    b = shutil.copytree(tiny_run_dir, tmp_path / "b", ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    make_ensemble([a, b], tmp_path / "ens")
    pool_file = _pool(tmp_path / "pool.csv", test_reviews)
    for strategy in ("uncertainty", "diverse"):
        summary = select_for_labelling(tmp_path / "ens", pool_file, 3, strategy, tmp_path / f"{strategy}.csv")
        assert summary["ensemble"] and summary["selected"] == 3 and summary["overlap"]["overlap"] == 0
    single = select_for_labelling(a, pool_file, 3, "uncertainty", tmp_path / "single.csv")
    assert single["selected"] == 3
    ens, one = pd.read_csv(tmp_path / "uncertainty.csv"), pd.read_csv(tmp_path / "single.csv")
    assert ens["id"].tolist() == one["id"].tolist()  # two identical members: the same ranking
    assert np.allclose(ens["probability"], one["probability"], atol=1e-5)


# The command line --------------------------------------------------------------------------------------------------


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_select_and_its_refusals(capsys, tiny_run_dir: Path, test_reviews: pd.DataFrame, tmp_path: Path) -> None:
    pool_file = _pool(tmp_path / "pool.csv", test_reviews)
    out = tmp_path / "sel.csv"
    run = str(tiny_run_dir)
    code, stdout, _ = _cli(
        capsys, "select", run, "--pool", str(pool_file), "--n", "3", "--strategy", "margin", "--out", str(out)
    )
    assert code == 0, stdout
    assert "selected 3 of 30 pool texts by margin" in stdout and "overlap with the run's training data: 0" in stdout
    assert len(pd.read_csv(out)) == 3

    code, _, err = _cli(capsys, "select", run, "--pool", str(pool_file), "--n", "3", "--out", str(out))
    assert code == 2 and err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    code, _, _ = _cli(capsys, "select", run, "--pool", str(pool_file), "--n", "3", "--out", str(out), "--overwrite")
    assert code == 0

    code, _, err = _cli(
        capsys, "select", run, "--pool", str(tmp_path / "nope.csv"), "--n", "3", "--out", str(tmp_path / "x.csv")
    )
    assert code == 2 and "pool file not found" in err
    test_reviews.rename(columns={"text": "review"}).to_csv(tmp_path / "other.csv", index=False)
    code, _, err = _cli(
        capsys, "select", run, "--pool", str(tmp_path / "other.csv"), "--n", "3", "--out", str(tmp_path / "x.csv")
    )
    assert code == 2 and "no column 'text'" in err and "'review'" in err and "--text-column" in err
    code, _, err = _cli(capsys, "select", run, "--pool", str(pool_file), "--n", "0", "--out", str(tmp_path / "x.csv"))
    assert code == 2 and "--n must be at least 1" in err
    code, _, err = _cli(capsys, "select", run, "--pool", str(pool_file), "--n", "2", "--out", str(tmp_path / "x.txt"))
    assert code == 2 and ".csv or .parquet" in err
    assert not (tmp_path / "x.csv").exists()
    with pytest.raises(SystemExit) as exc:
        main(["select", run, "--pool", str(pool_file), "--n", "2", "--strategy", "loudest", "--out", "x.csv"])
    assert exc.value.code == 2
    assert "invalid choice: 'loudest'" in capsys.readouterr().err


def test_cli_select_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["select", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--strategy" in text and "diverse" in text and "--exclude-train" in text


# The benchmark's pure functions ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def benchmark():
    return load_benchmark("active_learning")


def test_benchmark_round_schedule(benchmark) -> None:
    assert benchmark.round_schedule(100, 1600) == [100, 200, 400, 800, 1600]
    assert benchmark.round_schedule(100, 1000) == [100, 200, 400, 800, 1000]
    assert benchmark.round_schedule(20, 40) == [20, 40]


def test_benchmark_a1_interpolates_on_the_mean_curve(benchmark) -> None:
    rounds = [100, 200, 400, 800, 1600]
    random_curve = [0.60, 0.70, 0.76, 0.80, 0.84]
    best = [0.62, 0.74, 0.80, 0.86, 0.88]
    # 0.84 lies between 0.80 (400) and 0.86 (800): 400 + 400 * (0.04 / 0.06)
    needed = benchmark.labels_to_reach(rounds, best, 0.84)
    assert needed == pytest.approx(400 + 400 * 4 / 6)
    a1 = benchmark.a1_share(
        rounds, {"random": random_curve, "uncertainty": best, "margin": [0.6, 0.7, 0.76, 0.8, 0.85]}
    )
    assert a1["best_strategy"] == "uncertainty"
    assert a1["share"] == pytest.approx(needed / 1600)
    assert a1["target_accuracy"] == 0.84
    assert benchmark.labels_to_reach(rounds, [0.5] * 5, 0.84) is None  # never reached
    assert benchmark.labels_to_reach(rounds, [0.9] * 5, 0.84) == 100  # reached at the first round already


def test_benchmark_seed_and_review_bootstrap(benchmark) -> None:
    correct = np.array([[1, 1, 0, 1] * 50, [1, 0, 0, 1] * 50, [1, 1, 1, 1] * 50], dtype=bool)
    ci = benchmark.bootstrap_mean_ci(correct, n_boot=500, seed=0)
    assert ci["mean"] == pytest.approx(correct.mean())
    assert ci["low"] < ci["mean"] < ci["high"]


def test_benchmark_step_floor_raises_the_epochs_of_small_rounds(benchmark) -> None:
    # 100 labels at batch 16: 7 steps per epoch, so 100 steps need 15 epochs; 1,600 labels keep the recipe's 2
    assert benchmark.epochs_for(100, 16, 2.0, 100) == 15
    assert benchmark.epochs_for(800, 16, 2.0, 100) == 2  # 50 steps per epoch: 2 epochs are the 100 steps
    assert benchmark.epochs_for(1600, 16, 2.0, 100) == 2.0
    assert benchmark.epochs_for(100, 16, 2.0, 0) == 2.0  # floor off: the recipe as it is
    assert benchmark.epochs_for(800, 16, 2.0, 300) == 6 and benchmark.epochs_for(1600, 16, 2.0, 300) == 3  # default
