"""Metrics against values computed by hand."""

import json

import pytest

from ia3app.evaluation.metrics import classification_report, confusion_matrix, per_class


def test_confusion_matrix_counts_true_by_predicted():
    assert confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_confusion_matrix_rejects_length_mismatch():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 2)


def test_report_matches_hand_computation():
    # labels  0 0 0 1 1 2 ; preds 0 0 1 1 2 2
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3, names=["a", "b", "c"])
    assert report["accuracy"] == pytest.approx(4 / 6)
    a, b, c = report["per_class"]
    # class a: tp 2, predicted 2, support 3 -> p 1, r 2/3, f1 0.8
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert a["f1"] == pytest.approx(0.8)
    # class b: tp 1, predicted 2, support 2 -> p .5, r .5, f1 .5
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    # class c: tp 1, predicted 2, support 1 -> p .5, r 1, f1 2/3
    assert c["f1"] == pytest.approx(2 / 3)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["labels"] == ["a", "b", "c"]
    json.dumps(report)  # JSON-able


def test_macro_f1_ignores_classes_never_seen_and_undefined_scores_are_zero():
    report = classification_report([0, 0, 1], [0, 0, 0], 3)
    assert report["per_class"][1] == {"class": "1", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # class 0: p 2/3, r 1, f1 0.8; class 1: 0; class 2 absent from labels and predictions.
    assert report["macro_f1"] == pytest.approx(0.4)


def test_per_class_empty():
    assert per_class([[0, 0], [0, 0]])[0]["f1"] == 0.0
    assert classification_report([], [], 2)["accuracy"] == 0.0
