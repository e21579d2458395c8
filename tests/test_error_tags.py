"""Error tags on hand-written sentences, the tag/error table, errors vs correct, and confident learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sentiment_lab.analysis import error_tags as err


def tags_of(text: str, **kw: object) -> set[str]:
    row = err.tag_reviews([text], **kw).iloc[0]
    return {t for t in err.TAGS if row[t]}


@pytest.mark.parametrize(
    "text",
    [
        "This movie is not good.",
        "I didn't like it at all.",
        "Never a dull moment.",
        "It was not very funny.",  # negator within three words of the polarity word
    ],
)
def test_negation_is_found_near_polarity_words(text: str) -> None:
    assert "negation" in tags_of(text)


@pytest.mark.parametrize("text", ["The film was good.", "Not once did the camera move. The plot, however, was good."])
def test_no_negation_without_a_nearby_polarity_word(text: str) -> None:
    assert "negation" not in tags_of(text)


def test_contrast_words() -> None:
    assert "contrast" in tags_of("The acting was fine but the plot was dull.")
    assert "contrast" in tags_of("Although it starts slowly, it is a delight.")
    assert "contrast" not in tags_of("While watching it I ate popcorn.")  # temporal "while" is not a contrast


def test_short_and_long_truncated() -> None:
    assert "short" in tags_of("Great film.")
    long_text = " ".join(["word"] * 40)
    assert "short" not in tags_of(long_text)
    assert "long_truncated" in tags_of(long_text, tokens=[300], max_length=256)
    assert "long_truncated" not in tags_of(long_text, tokens=[256], max_length=256)  # exactly fits
    assert "long_truncated" not in tags_of(long_text)  # unknown without token counts


def test_mixed_polarity_needs_both_sides_in_balance() -> None:
    mixed = "A brilliant, wonderful cast and great music, but an awful, terrible, boring script."
    assert "mixed" in tags_of(mixed)
    assert "mixed" not in tags_of("A brilliant, wonderful, great, superb and lovely film with one awful scene.")
    assert err.is_mixed(2, 2) and err.is_mixed(3, 6) and not err.is_mixed(2, 5) and not err.is_mixed(1, 1)


def test_low_margin_from_confidence() -> None:
    assert "low_margin" in tags_of("Some text here.", confidence=[0.55])
    assert "low_margin" not in tags_of("Some text here.", confidence=[0.6])


def test_lexicon_is_real_and_html_breaks_are_ignored() -> None:
    lex = err.sentiment_lexicon()
    assert len(lex) > 5000 and lex["great"] > 2 and lex["awful"] < -1
    assert err.words_of("Bad.<br /><br />Didn't like it") == ["bad", "didn't", "like", "it"]


def test_tag_error_table_hand_computed() -> None:
    tags = pd.DataFrame({t: [False] * 10 for t in err.TAGS})
    tags.loc[:3, "negation"] = True  # 4 reviews tagged
    correct = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 0], bool)  # 2 of the 4 tagged are errors, 1 of 6 others
    row = next(r for r in err.tag_error_table(tags, correct) if r["tag"] == "negation")
    assert row["n"] == 4 and row["errors"] == 2
    assert row["error_rate"] == pytest.approx(0.5)
    assert row["error_rate_without"] == pytest.approx(1 / 6)
    assert row["overall_error_rate"] == pytest.approx(0.3)
    assert row["lift"] == pytest.approx(0.5 / 0.3)
    assert row["share_of_errors"] == pytest.approx(2 / 3)
    assert 0 < row["fisher_p"] <= 1
    short = next(r for r in err.tag_error_table(tags, correct) if r["tag"] == "short")
    assert short["n"] == 0 and short["error_rate"] is None and short["fisher_p"] is None


def test_errors_vs_correct_statistics() -> None:
    texts = ["not good at all, never again", "great fun", "a lovely warm film", "I did not enjoy it"]
    tags = err.tag_reviews(texts)
    stats = err.errors_vs_correct(tags, np.array([0, 1, 1, 0], bool))
    assert stats["errors"]["n"] == 2 and stats["correct"]["n"] == 2
    assert stats["errors"]["share_with_negated_polarity"] == 1.0
    assert stats["correct"]["negation_words_per_100"] == 0.0


def test_confident_errors_are_sorted_and_typed() -> None:
    preds = pd.DataFrame(
        {
            "id": list("abcde"),
            "text": ["t"] * 5,
            "label": [0, 0, 1, 1, 0],
            "pred": [1, 1, 0, 1, 0],
            "prob_pos": [0.7, 0.99, 0.2, 0.9, 0.1],
        }
    )
    fp = err.confident_errors(preds, "fp")
    assert fp["id"].tolist() == ["b", "a"]
    assert fp["confidence"].tolist() == pytest.approx([0.99, 0.7])
    assert err.confident_errors(preds, "fn")["id"].tolist() == ["c"]
    assert err.confident_errors(preds, "fp", min_confidence=0.95)["id"].tolist() == ["b"]


def test_snippet_cuts_at_a_word() -> None:
    assert err.snippet("short<br />text") == "short text"
    s = err.snippet("word " * 100, limit=22)
    assert s.endswith(" ...") and len(s) <= 26


def test_label_issues_find_flipped_labels() -> None:
    rng = np.random.default_rng(0)
    pos = ["great wonderful excellent superb", "lovely brilliant moving great", "excellent fun wonderful cast"]
    neg = ["awful terrible boring waste", "bad dull awful script", "terrible waste boring acting"]
    texts, labels = [], []
    for i in range(120):
        words = (pos if i % 2 else neg)[rng.integers(0, 3)]
        texts.append(f"{words} review {i}")
        labels.append(i % 2)
    flipped = [3, 10, 51, 88]
    for i in flipped:
        labels[i] = 1 - labels[i]
    res = err.label_issues(texts, labels, folds=5)
    assert set(flipped) <= set(res["issue_indices"])
    assert res["n_issues"] <= 10
    assert res["top"][0]["prob_given_label"] < 0.5
