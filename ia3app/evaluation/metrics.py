"""Classification metrics over choice indices: accuracy, macro-F1, per-class scores, confusion.

Everything returned is plain lists / dicts of floats and ints, so it goes straight into
results.json, the model card and the web page.
"""

from __future__ import annotations

from typing import Sequence


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> list[list[int]]:
    """matrix[true][predicted] = count."""
    if len(labels) != len(preds):
        raise ValueError(f"{len(labels)} labels but {len(preds)} predictions")
    matrix = [[0] * num_classes for _ in range(num_classes)]
    for y, p in zip(labels, preds):
        matrix[y][p] += 1
    return matrix


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def per_class(matrix: list[list[int]], names: Sequence[str] | None = None) -> list[dict]:
    """Precision, recall, F1 and support per class (0 where undefined, as scikit-learn's zero_division=0)."""
    k = len(matrix)
    names = list(names) if names is not None else [str(i) for i in range(k)]
    rows = []
    for c in range(k):
        tp = matrix[c][c]
        predicted = sum(matrix[r][c] for r in range(k))
        support = sum(matrix[c])
        precision = _ratio(tp, predicted)
        recall = _ratio(tp, support)
        f1 = _ratio(2 * precision * recall, precision + recall)
        rows.append(
            {"class": names[c], "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    return rows


def classification_report(
    labels: Sequence[int], preds: Sequence[int], num_classes: int, names: Sequence[str] | None = None
) -> dict:
    """accuracy, macro_f1 (mean over classes present in labels or predictions), per_class, confusion."""
    matrix = confusion_matrix(labels, preds, num_classes)
    classes = per_class(matrix, names)
    seen = [
        row for c, row in enumerate(classes) if row["support"] or any(matrix[r][c] for r in range(num_classes))
    ]
    correct = sum(1 for y, p in zip(labels, preds) if y == p)
    return {
        "n": len(labels),
        "accuracy": _ratio(correct, len(labels)),
        "macro_f1": _ratio(sum(row["f1"] for row in seen), len(seen)),
        "per_class": classes,
        "confusion_matrix": matrix,
        "labels": list(names) if names is not None else [str(i) for i in range(num_classes)],
    }


# ----- uncertainty: bootstrap intervals and paired differences -----------------------------------
# numpy only (no torch): the bench, the CLI and the web page all call these. Resampling is seeded,
# so the same rows give the same interval every time.

BOOTSTRAP_SAMPLES = 2000
"""Resamples per interval (percentile bootstrap)."""
BOOTSTRAP_SEED = 0
LEVEL = 0.95


def _as_arrays(labels, preds, num_classes: int | None):
    import numpy as np

    y = np.asarray(list(labels), dtype=np.int64)
    p = np.asarray(list(preds), dtype=np.int64)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if num_classes is None:
        num_classes = int(max(y.max(initial=-1), p.max(initial=-1)) + 1)
    return y, p, max(int(num_classes), 1)


def _resample_index(n: int, samples: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _accuracy_rows(y, p):
    """Accuracy of each row of y/p (shape (B, n))."""
    return (y == p).mean(axis=1)


def _macro_f1_rows(y, p, num_classes: int):
    """Macro-F1 of each row of y/p (shape (B, n)), by classification_report's rule: mean over the
    classes present in the labels or the predictions of that row; undefined scores are 0."""
    import numpy as np

    b = y.shape[0]
    offset = (np.arange(b)[:, None] * num_classes)
    size = b * num_classes
    support = np.bincount((offset + y).ravel(), minlength=size).reshape(b, num_classes)
    predicted = np.bincount((offset + p).ravel(), minlength=size).reshape(b, num_classes)
    hit = (y == p)
    tp = np.bincount((offset + y)[hit], minlength=size).reshape(b, num_classes)
    # F1 = 2tp / (support + predicted); 0 where both are 0 (the class is absent: not averaged either)
    den = support + predicted
    f1 = np.divide(2.0 * tp, den, out=np.zeros(den.shape, dtype=float), where=den > 0)
    seen = den > 0
    count = seen.sum(axis=1)
    return np.divide(f1.sum(axis=1), count, out=np.zeros(b, dtype=float), where=count > 0)


def _metric_rows(name: str, y, p, num_classes: int):
    if name == "accuracy":
        return _accuracy_rows(y, p)
    if name == "macro_f1":
        return _macro_f1_rows(y, p, num_classes)
    raise ValueError(f"unknown metric {name!r}; known: accuracy, macro_f1")


def _interval(values, level: float) -> tuple[float, float]:
    import numpy as np

    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_interval(
    labels: Sequence[int],
    preds: Sequence[int],
    num_classes: int | None = None,
    *,
    metric: str = "accuracy",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> dict:
    """{"value", "low", "high", "level", "n", "samples"}: `metric` (accuracy or macro_f1) on the rows
    and its percentile-bootstrap interval (rows resampled with replacement, `samples` times, seeded).

    With no rows the value and bounds are None. Note a percentile bootstrap cannot be wider than the
    data allow: 16 of 16 right gives [1, 1]; the page says how many rows the interval rests on.
    """
    y, p, k = _as_arrays(labels, preds, num_classes)
    n = len(y)
    out = {"value": None, "low": None, "high": None, "level": level, "n": n, "samples": samples}
    if n == 0:
        return out
    value = float(_metric_rows(metric, y[None, :], p[None, :], k)[0])
    idx = _resample_index(n, samples, seed)
    low, high = _interval(_metric_rows(metric, y[idx], p[idx], k), level)
    out.update(value=value, low=low, high=high)
    return out


def bootstrap_intervals(
    labels: Sequence[int], preds: Sequence[int], num_classes: int | None = None, **kwargs
) -> dict:
    """{"accuracy": bootstrap_interval(...), "macro_f1": bootstrap_interval(...)} on the same resamples."""
    return {m: bootstrap_interval(labels, preds, num_classes, metric=m, **kwargs) for m in ("accuracy", "macro_f1")}


def difference_verdict(low: float | None, high: float | None, better: str, worse: str) -> str:
    """Plain words for an interval on (better − worse): 'X is better' only when the whole interval is
    above 0, 'Y is better' only when it is all below, otherwise 'no clear difference'."""
    if low is None or high is None:
        return "not measured"
    if low > 0:
        return f"{better} is better"
    if high < 0:
        return f"{worse} is better"
    return "no clear difference"


def paired_difference(
    labels: Sequence[int],
    preds_a: Sequence[int],
    preds_b: Sequence[int],
    num_classes: int | None = None,
    *,
    metric: str = "accuracy",
    name_a: str = "A",
    name_b: str = "B",
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = LEVEL,
) -> dict:
    """metric(A) − metric(B) on the same rows, with a paired percentile-bootstrap interval (each
    resample draws rows, and both methods are scored on those same rows) and a plain verdict.

    {"metric", "a", "b", "difference", "low", "high", "level", "n", "samples", "verdict"}.
    """
    y, pa, k = _as_arrays(labels, preds_a, num_classes)
    _, pb, _ = _as_arrays(labels, preds_b, k)
    n = len(y)
    out = {"metric": metric, "a": name_a, "b": name_b, "difference": None, "low": None, "high": None,
           "level": level, "n": n, "samples": samples}
    if n:
        diff = float(_metric_rows(metric, y[None, :], pa[None, :], k)[0] - _metric_rows(metric, y[None, :], pb[None, :], k)[0])
        idx = _resample_index(n, samples, seed)
        yi = y[idx]
        low, high = _interval(_metric_rows(metric, yi, pa[idx], k) - _metric_rows(metric, yi, pb[idx], k), level)
        out.update(difference=diff, low=low, high=high)
    out["verdict"] = difference_verdict(out["low"], out["high"], name_a, name_b)
    return out


def format_interval(entry: dict | None, percent: bool = True, signed: bool = False) -> str:
    """'81.2 % (95 % CI 62.5–93.8)' for a bootstrap_interval / paired_difference entry; '—' if absent."""
    if not entry:
        return "—"
    value = entry.get("value", entry.get("difference"))
    if value is None:
        return "—"
    scale, unit = (100.0, " %") if percent else (1.0, "")
    sign = "+" if signed else ""
    level = round(100 * float(entry.get("level", LEVEL)))
    return (f"{value * scale:{sign}.1f}{unit} ({level} % CI {entry['low'] * scale:{sign}.1f} to "
            f"{entry['high'] * scale:{sign}.1f})")
