import pytest

from sentiment_lab.metrics import classification_metrics


def test_hand_computed_case():
    # TN=3, FP=1, FN=2, TP=4
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    preds = [0, 0, 0, 1, 0, 0, 1, 1, 1, 1]
    m = classification_metrics(labels, preds)
    assert m["confusion_matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    neg_p, neg_r = 3 / 5, 3 / 4
    assert m["per_class"]["negative"]["precision"] == pytest.approx(neg_p)
    assert m["per_class"]["negative"]["recall"] == pytest.approx(neg_r)
    assert m["per_class"]["negative"]["support"] == 4
    assert m["f1_macro"] == pytest.approx((m["f1"] + 2 * neg_p * neg_r / (neg_p + neg_r)) / 2)
    assert m["n"] == 10


def test_degenerate_predictions_do_not_crash():
    m = classification_metrics([0, 1, 1], [0, 0, 0])
    assert m["f1"] == 0.0 and m["precision"] == 0.0
    assert m["confusion_matrix"] == [[1, 0], [2, 0]]


def test_binary_keys_are_todays_plus_weighted_f1():
    m = classification_metrics([0, 1, 1, 0], [0, 1, 0, 0])
    assert set(m) == {
        "n",
        "accuracy",
        "f1",
        "precision",
        "recall",
        "f1_macro",
        "precision_macro",
        "recall_macro",
        "f1_weighted",
        "per_class",
        "confusion_matrix",
    }
    assert list(m["per_class"]) == ["negative", "positive"]
    assert classification_metrics([0, 1, 1, 0], [0, 1, 0, 0], ["negative", "positive"]) == m


def test_three_classes_hand_computed():
    # true 0: predicted 0,0,1 | true 1: 1,2 | true 2: 2,2,2,0
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2]
    preds = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    m = classification_metrics(labels, preds, ["neg", "neu", "pos"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    p = {"neg": 2 / 3, "neu": 1 / 2, "pos": 3 / 4}
    r = {"neg": 2 / 3, "neu": 1 / 2, "pos": 3 / 4}
    f1 = {k: 2 * p[k] * r[k] / (p[k] + r[k]) for k in p}
    assert m["accuracy"] == pytest.approx(6 / 9)
    assert m["f1"] == m["f1_macro"] == pytest.approx(sum(f1.values()) / 3)  # K > 2: F1 is the macro F1
    assert m["precision"] == m["precision_macro"] == pytest.approx(sum(p.values()) / 3)
    assert m["f1_weighted"] == pytest.approx((3 * f1["neg"] + 2 * f1["neu"] + 4 * f1["pos"]) / 9)
    assert m["per_class"]["neu"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert "mae" not in m


def test_ordinal_mae_and_within_one():
    labels = [0, 1, 2, 3, 4, 4]
    preds = [0, 3, 2, 2, 0, 4]  # off by 0, 2, 0, 1, 4, 0
    m = classification_metrics(labels, preds, [f"{i} stars" for i in range(1, 6)], ordinal=True)
    assert m["mae"] == pytest.approx(7 / 6)
    assert m["within_one"] == pytest.approx(4 / 6)
    assert len(m["confusion_matrix"]) == 5 and m["per_class"]["5 stars"]["support"] == 2


def test_a_class_never_seen_still_has_its_row():
    m = classification_metrics([0, 0, 1], [0, 1, 1], ["a", "b", "c"])
    assert m["confusion_matrix"][2] == [0, 0, 0] and m["per_class"]["c"]["support"] == 0


def test_a_model_at_chance_level_is_named_by_its_loss_or_its_one_class_predictions() -> None:
    from sentiment_lab.metrics import not_learned_warnings

    names = ["negative", "positive"]
    mixed = [0, 1] * 50
    stuck = not_learned_warnings(0.6864, mixed, [0] * 100, names, "validation")  # the collapsed A1 rounds
    assert len(stuck) == 2
    assert "loss ended at 0.686" in stuck[0] and "ln 2 = 0.693" in stuck[0] and "training.max_steps" in stuck[0]
    assert "'negative' for 100% of the validation texts (50% of them" in stuck[1]
    assert not_learned_warnings(0.31, mixed, [0, 1] * 50, names, "test") == []  # trained
    assert not_learned_warnings(None, mixed, [0] * 98 + [1] * 2, names, "test") == []  # 98% is below the 99% bar
    assert len(not_learned_warnings(None, mixed, [0] * 99 + [1], names, "test")) == 1  # no logged loss: preds alone
    assert not_learned_warnings(0.4, [0] * 95 + [1] * 5, [0] * 100, names, "test") == []  # the data is one class
    five = [f"{i} stars" for i in range(1, 6)]
    assert not_learned_warnings(1.15, list(range(5)) * 20, list(range(5)) * 20, five, "test") == []  # SST-5-like
    assert "ln 5 = 1.609" in not_learned_warnings(1.5, list(range(5)) * 20, list(range(5)) * 20, five, "test")[0]
