"""Calibrated confidence and abstention, numpy only (no torch).

A prediction's probabilities are a softmax over the choices' rank scores (scoring.py). Those are
not calibrated: a "0.92" need not be right 92 % of the time. Temperature scaling (Guo et al., 2017)
fits one scalar T per adapter on scores of rows the adapter did not train on (held-out rows or the
cross-validation folds' held-out rows) and reports softmax(log p / T). Since softmax is invariant to
adding a constant, log p of a stored probability row is as good as the raw scores.

Abstention: a threshold on the (calibrated) top probability; a prediction below it is "unsure".
The accuracy-vs-coverage curve says what each threshold costs.
"""

from __future__ import annotations

import math
from typing import Sequence

UNSURE = "unsure"
"""The label returned in place of a prediction whose confidence is below the adapter's threshold."""
ECE_BINS = 10
T_MIN, T_MAX = 0.05, 20.0
_EPS = 1e-12


def _arrays(probs, labels=None):
    import numpy as np

    p = np.asarray([list(row) for row in probs], dtype=float)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError("need at least one probability row")
    if labels is None:
        return p, None
    y = np.asarray(list(labels), dtype=np.int64)
    if len(y) != len(p):
        raise ValueError(f"{len(p)} probability rows but {len(y)} labels")
    return p, y


def apply_temperature(probs: Sequence[Sequence[float]], temperature: float) -> list[list[float]]:
    """softmax(log p / T) per row; T = 1 returns the rows unchanged (renormalised)."""
    import numpy as np

    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    p, _ = _arrays(probs)
    logits = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).tolist()


def _nll(logp, y, temperature: float) -> float:
    import numpy as np

    z = logp / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def fit_temperature(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """The T in [T_MIN, T_MAX] minimising the negative log-likelihood of `labels` under
    softmax(log p / T): a log-spaced grid, then golden-section search around the best grid point.
    Deterministic. Rows must not be rows the adapter trained on (the caller's duty)."""
    import numpy as np

    p, y = _arrays(probs, labels)
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError("a label is outside the probability rows' choices")
    logp = np.log(np.clip(p, _EPS, 1.0))
    grid = np.exp(np.linspace(math.log(T_MIN), math.log(T_MAX), 61))
    losses = [_nll(logp, y, t) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(40):
        a = hi - ratio * (hi - lo)
        b = lo + ratio * (hi - lo)
        if _nll(logp, y, math.exp(a)) <= _nll(logp, y, math.exp(b)):
            hi = b
        else:
            lo = a
    best = math.exp((lo + hi) / 2)
    return float(best if _nll(logp, y, best) <= losses[i] else grid[i])


def reliability(probs: Sequence[Sequence[float]], labels: Sequence[int], bins: int = ECE_BINS) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins, and the bins themselves
    (for a reliability diagram): {"ece", "bins": [{"low", "high", "count", "confidence", "accuracy"}]}.
    Confidence is the top probability; a bin's accuracy is how often its top choice was right."""
    import numpy as np

    p, y = _arrays(probs, labels)
    conf = p.max(axis=1)
    right = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        entry = {"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                 "confidence": None, "accuracy": None}
        if count:
            c, a = float(conf[mask].mean()), float(right[mask].mean())
            entry.update(confidence=c, accuracy=a)
            ece += count / len(y) * abs(a - c)
        rows.append(entry)
    return {"ece": float(ece), "bins": rows, "n": int(len(y))}


def coverage_curve(probs: Sequence[Sequence[float]], labels: Sequence[int]) -> list[dict]:
    """Accuracy vs coverage: one point per distinct confidence t (highest first), answering the rows
    whose top probability is >= t. [{"threshold", "coverage", "accuracy", "answered"}], coverage
    increasing; the last point answers every row."""
    import numpy as np

    p, y = _arrays(probs, labels)
    conf = p.max(axis=1)
    right = (p.argmax(axis=1) == y).astype(float)
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    cum = np.cumsum(right)
    points = []
    n = len(y)
    for i in range(n):
        if i + 1 < n and conf[i + 1] == conf[i]:
            continue  # ties are answered together
        points.append({"threshold": float(conf[i]), "coverage": (i + 1) / n,
                       "accuracy": float(cum[i] / (i + 1)), "answered": i + 1})
    return points


def at_threshold(curve: Sequence[dict], threshold: float) -> dict:
    """The curve's point for a threshold: the rows answered at confidence >= threshold
    ({"coverage": 0, "accuracy": None, "answered": 0} when it answers none)."""
    best = None
    for point in curve:
        if point["threshold"] >= threshold:
            best = point
    if best is None:
        return {"threshold": threshold, "coverage": 0.0, "accuracy": None, "answered": 0}
    return {**best, "threshold": threshold}


def coverage_at_accuracy(curve: Sequence[dict], target: float) -> dict | None:
    """The point with the widest coverage whose accuracy is at least `target` (None if none is)."""
    best = None
    for point in curve:
        if point["accuracy"] >= target - 1e-12 and (best is None or point["coverage"] > best["coverage"]):
            best = point
    return best


def check_threshold(value) -> float | None:
    """An abstain threshold as stored: None (never abstain) or a number in [0, 1). ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"abstain_threshold must be a number from 0 to below 1, or null (got {value!r})")
    return float(value) or None


def abstain(probs: Sequence[float], threshold: float | None) -> bool:
    """True when the top probability is below the threshold (None or 0: never abstain)."""
    return bool(threshold) and max(probs) < float(threshold)


def cross_fit_calibration(
    probs: Sequence[Sequence[float]], labels: Sequence[int], folds: int = 2, seed: int = 0
) -> dict:
    """An honest ECE after temperature scaling when the same rows must both fit T and judge it:
    split the rows into `folds` (seeded shuffle), fit T on the other folds, calibrate the held fold,
    and measure ECE on all rows so calibrated. {"ece_before", "ece_after", "temperatures", "folds"}.
    Fewer than 2 rows per fold: ece_after is None."""
    import numpy as np

    p, y = _arrays(probs, labels)
    n = len(y)
    out = {"ece_before": reliability(p, y)["ece"], "ece_after": None, "temperatures": [], "folds": folds}
    if folds < 2 or n < 2 * folds:
        return out
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    calibrated = np.zeros_like(p)
    for k, held in enumerate(parts):
        rest = np.concatenate([part for j, part in enumerate(parts) if j != k])
        t = fit_temperature(p[rest], y[rest])
        out["temperatures"].append(t)
        calibrated[held] = apply_temperature(p[held], t)
    out["ece_after"] = reliability(calibrated, y)["ece"]
    return out


def calibration_report(probs: Sequence[Sequence[float]], labels: Sequence[int], source: str) -> dict:
    """Everything the page, the model card and the adapter folder need from one fit:
    {"temperature", "source", "n", "ece_before", "ece_after", "ece_after_cross_fit",
    "reliability_before", "reliability_after", "coverage"}.

    `temperature` is fitted on all the given rows (which must not be training rows: `source` says
    what they are, "held-out" or "cross-validation"); `ece_after` is measured on those same rows,
    `ece_after_cross_fit` fits on half and measures on the other half (an honest figure when the
    rows are few). `coverage` is the accuracy-vs-coverage curve on the calibrated probabilities,
    which is what an abstain threshold is compared against."""
    temperature = fit_temperature(probs, labels)
    calibrated = apply_temperature(probs, temperature)
    before, after = reliability(probs, labels), reliability(calibrated, labels)
    crossed = cross_fit_calibration(probs, labels)
    return {"temperature": temperature, "source": source, "n": len(list(labels)),
            "ece_before": before["ece"], "ece_after": after["ece"], "ece_after_cross_fit": crossed["ece_after"],
            "reliability_before": before, "reliability_after": after,
            "coverage": coverage_curve(calibrated, labels)}
