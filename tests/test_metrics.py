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


# ----- bootstrap intervals and paired differences (issue 19) -------------------------------------
import random

from ia3app.evaluation.metrics import (
    bootstrap_interval,
    bootstrap_intervals,
    difference_verdict,
    format_interval,
    paired_difference,
)


def _rows(n=40, k=3, right=0.7, seed=1):
    r = random.Random(seed)
    y = [r.randrange(k) for _ in range(n)]
    p = [v if r.random() < right else r.randrange(k) for v in y]
    return y, p


def test_bootstrap_value_is_the_plain_metric_and_interval_brackets_it():
    y, p = _rows()
    ci = bootstrap_intervals(y, p, 3)
    report = classification_report(y, p, 3)
    assert ci["accuracy"]["value"] == pytest.approx(report["accuracy"])
    assert ci["macro_f1"]["value"] == pytest.approx(report["macro_f1"])
    for entry in ci.values():
        assert entry["low"] <= entry["value"] <= entry["high"]
        assert entry["high"] - entry["low"] > 0.1  # 40 rows at ~70 %: the interval is wide
        assert entry["n"] == 40 and entry["level"] == 0.95


def test_bootstrap_is_seeded_and_deterministic():
    y, p = _rows()
    assert bootstrap_interval(y, p, 3) == bootstrap_interval(y, p, 3)
    # the seed matters (macro-F1 is not lattice-valued like accuracy, so two seeds differ)
    assert bootstrap_interval(y, p, 3, metric="macro_f1", seed=1) != bootstrap_interval(y, p, 3, metric="macro_f1", seed=2)


def test_bootstrap_interval_width_matches_binomial_theory():
    # 16 rows at 50 %: the normal-approximation 95 % half-width is 1.96 * sqrt(.25/16) = 0.245
    y = [0] * 16
    p = [0] * 8 + [1] * 8
    ci = bootstrap_interval(y, p, 2, samples=4000)
    assert ci["value"] == 0.5
    assert ci["high"] - ci["low"] == pytest.approx(0.49, abs=0.07)


def test_bootstrap_macro_f1_resamples_match_classification_report():
    # the vectorised macro-F1 over resamples must be classification_report's rule on each resample
    import numpy as np

    from ia3app.evaluation import metrics

    y, p = _rows(n=25, k=4, right=0.5, seed=3)
    idx = np.random.default_rng(7).integers(0, 25, size=(30, 25))
    ya, pa = np.asarray(y)[idx], np.asarray(p)[idx]
    fast = metrics._macro_f1_rows(ya, pa, 4)  # noqa: SLF001 - checking the private kernel against the public rule
    for row in range(30):
        expect = classification_report(ya[row].tolist(), pa[row].tolist(), 4)["macro_f1"]
        assert fast[row] == pytest.approx(expect)


def test_bootstrap_all_right_and_empty():
    ci = bootstrap_interval([0, 1, 0, 1], [0, 1, 0, 1], 2)
    assert (ci["value"], ci["low"], ci["high"]) == (1.0, 1.0, 1.0)
    empty = bootstrap_interval([], [], 2)
    assert empty["value"] is None and empty["n"] == 0
    assert format_interval(empty) == "—"
    with pytest.raises(ValueError):
        bootstrap_interval([0, 1], [0], 2)
    with pytest.raises(ValueError):
        bootstrap_interval([0, 1], [0, 1], 2, metric="auc")


def test_paired_difference_verdicts():
    y = [0, 1] * 15
    right = list(y)
    wrong = [1 - v for v in y]
    better = paired_difference(y, right, wrong, 2, name_a="T-Few", name_b="in-context")
    assert (better["difference"], better["low"], better["high"]) == (1.0, 1.0, 1.0)
    assert better["verdict"] == "T-Few is better"
    worse = paired_difference(y, wrong, right, 2, name_a="T-Few", name_b="in-context")
    assert worse["verdict"] == "in-context is better" and worse["difference"] == -1.0
    same = paired_difference(y, right, right, 2, name_a="T-Few", name_b="in-context")
    assert (same["difference"], same["low"], same["high"], same["verdict"]) == (0.0, 0.0, 0.0, "no clear difference")


def test_paired_difference_is_paired():
    # A and B disagree on only 2 of 40 rows: the paired interval is narrow, though each method's own
    # interval is wide. An unpaired comparison would call this noise either way.
    y, p = _rows(n=40, seed=5)
    q = list(p)
    flips = [i for i in range(40) if p[i] == y[i]][:2]
    for i in flips:
        q[i] = (y[i] + 1) % 3
    d = paired_difference(y, p, q, 3, name_a="A", name_b="B")
    assert d["difference"] == pytest.approx(2 / 40)
    assert d["high"] - d["low"] <= 0.15 + 1e-9
    assert bootstrap_interval(y, p, 3)["high"] - bootstrap_interval(y, p, 3)["low"] > 0.2
    m = paired_difference(y, p, q, 3, metric="macro_f1")
    assert m["metric"] == "macro_f1" and m["low"] <= m["difference"] <= m["high"]


def test_difference_verdict_and_format():
    assert difference_verdict(0.01, 0.2, "T-Few", "zero-shot") == "T-Few is better"
    assert difference_verdict(-0.2, -0.01, "T-Few", "zero-shot") == "zero-shot is better"
    assert difference_verdict(-0.1, 0.2, "T-Few", "zero-shot") == "no clear difference"
    assert difference_verdict(None, None, "T-Few", "zero-shot") == "not measured"
    entry = {"value": 0.8125, "low": 0.625, "high": 1.0, "level": 0.95}
    assert format_interval(entry) == "81.2 % (95 % CI 62.5 to 100.0)"
    assert format_interval({"difference": 0.1, "low": -0.05, "high": 0.25, "level": 0.95}, signed=True) == (
        "+10.0 % (95 % CI -5.0 to +25.0)"
    )
