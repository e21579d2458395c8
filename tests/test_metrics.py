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
