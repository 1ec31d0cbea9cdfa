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
