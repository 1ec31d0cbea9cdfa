"""Temperature scaling, ECE, accuracy-vs-coverage and abstention against hand-computed cases."""

import math

import numpy as np
import pytest

from ia3app.evaluation.calibration import (
    abstain,
    apply_temperature,
    at_threshold,
    calibration_report,
    coverage_at_accuracy,
    coverage_curve,
    fit_temperature,
    reliability,
)


def _synthetic(n=600, scale=3.0, seed=0):
    """Rows whose true probabilities are softmax(z); reported probabilities softmax(scale * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in true])
    shown = np.exp(scale * z) / np.exp(scale * z).sum(1, keepdims=True)
    return shown.tolist(), y.tolist()


def test_temperature_recovers_the_overconfidence_factor():
    probs, y = _synthetic(scale=3.0)
    t = fit_temperature(probs, y)
    assert t == pytest.approx(3.0, rel=0.2)
    probs, y = _synthetic(scale=1.0, seed=1)
    assert fit_temperature(probs, y) == pytest.approx(1.0, rel=0.2)


def test_temperature_lowers_ece_and_keeps_argmax():
    probs, y = _synthetic(scale=3.0)
    report = calibration_report(probs, y, source="held-out")
    assert report["ece_after"] < report["ece_before"] / 2
    cal = apply_temperature(probs, report["temperature"])
    assert np.argmax(cal, 1).tolist() == np.argmax(probs, 1).tolist()
    assert np.allclose(np.sum(cal, 1), 1.0)
    assert report["source"] == "held-out" and report["n"] == 600


def test_apply_temperature_known_values():
    # log p = log(.8), log(.2); T=2 -> softmax(log(.8)/2, log(.2)/2) = sqrt(.8)/(sqrt(.8)+sqrt(.2)) = 2/3
    out = apply_temperature([[0.8, 0.2]], 2.0)
    assert out[0][0] == pytest.approx(2 / 3)
    assert apply_temperature([[0.8, 0.2]], 1.0)[0] == pytest.approx([0.8, 0.2])
    with pytest.raises(ValueError):
        apply_temperature([[0.5, 0.5]], 0.0)
    with pytest.raises(ValueError):
        apply_temperature([[0.5, 0.5]], math.nan)


def test_ece_hand_computed():
    # row 1: conf .9 (bin .8-.9), right -> gap .1; row 2: conf .6 (bin .5-.6), wrong -> gap .6
    rel = reliability([[0.9, 0.1], [0.6, 0.4]], [0, 1])
    assert rel["ece"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    filled = [b for b in rel["bins"] if b["count"]]
    assert [(b["low"], b["count"], b["accuracy"]) for b in filled] == [
        (pytest.approx(0.5), 1, 0.0), (pytest.approx(0.8), 1, 1.0)
    ]
    assert len(rel["bins"]) == 10


def test_coverage_curve_hand_computed():
    probs = [[0.95, 0.05], [0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.55, 0.45]]
    labels = [0, 0, 1, 1, 0]  # right, right, right, wrong, right; confidences .95 .9 .7 .6 .55
    curve = coverage_curve(probs, labels)
    assert [p["answered"] for p in curve] == [1, 2, 3, 4, 5]
    assert [p["accuracy"] for p in curve] == [1.0, 1.0, 1.0, 0.75, 0.8]
    assert coverage_at_accuracy(curve, 0.95)["coverage"] == pytest.approx(0.6)
    assert coverage_at_accuracy(curve, 0.8)["coverage"] == 1.0
    assert at_threshold(curve, 0.65)["answered"] == 3
    assert at_threshold(curve, 0.99)["answered"] == 0
    assert coverage_at_accuracy([{"threshold": .5, "coverage": 1.0, "accuracy": 0.5, "answered": 2}], 0.95) is None


def test_coverage_curve_answers_ties_together():
    curve = coverage_curve([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4]], [0, 1, 0])
    assert [p["answered"] for p in curve] == [2, 3]


def test_abstain():
    assert abstain([0.55, 0.45], 0.6) is True
    assert abstain([0.65, 0.35], 0.6) is False
    assert abstain([0.55, 0.45], None) is False
    assert abstain([0.55, 0.45], 0.0) is False


def test_bad_input():
    with pytest.raises(ValueError):
        fit_temperature([[0.5, 0.5]], [2])
    with pytest.raises(ValueError):
        reliability([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError):
        coverage_curve([], [])


def test_cross_fit_ece_is_honest_and_close_to_in_sample_on_many_rows():
    from ia3app.evaluation.calibration import cross_fit_calibration

    probs, y = _synthetic(scale=3.0, n=800, seed=4)
    crossed = cross_fit_calibration(probs, y)
    assert len(crossed["temperatures"]) == 2
    assert all(t == pytest.approx(3.0, rel=0.3) for t in crossed["temperatures"])
    assert crossed["ece_after"] < crossed["ece_before"] / 2
    report = calibration_report(probs, y, source="held-out")
    assert report["ece_after_cross_fit"] == pytest.approx(crossed["ece_after"])
    assert cross_fit_calibration([[0.6, 0.4], [0.3, 0.7]], [0, 1])["ece_after"] is None  # too few rows
