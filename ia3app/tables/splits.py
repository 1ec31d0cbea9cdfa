"""Which rows go where: at most k rows per label (sample_per_class), a stratified held-out split
(split_holdout, used through ia3app.jobtypes' Holdout.split) and the folds of a stratified
cross-validation (stratified_folds). Each with its seed; rows keep their file order.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Union

from ia3app.errors import UserError
from ia3app.tables.csv_io import Rows, Table, rows_of


def sample_per_class(data: Union[Table, Rows], label_column: str, k: int, seed: int = 0):
    """At most k rows per label, drawn with `seed`, in file order; same type as given (Table or rows)."""
    if not isinstance(k, int) or k < 1:
        raise UserError(f"rows per label must be a whole number ≥ 1 (got {k!r})")
    rows = rows_of(data)
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(str(r.get(label_column, "")).strip(), []).append(i)
    rng = random.Random(seed)
    keep = sorted(i for label in sorted(by_label) for i in rng.sample(by_label[label], min(k, len(by_label[label]))))
    picked = [rows[i] for i in keep]
    return replace(data, rows=picked) if isinstance(data, Table) else picked


def split_holdout(rows: Rows, label_column: str, fraction: float, seed: int = 0) -> tuple[Rows, Rows]:
    """Stratified split -> (train, held-out), each in file order. Each label keeps ≥ 1 training row and,
    when it has ≥ 2 rows, gives ≥ 1 held-out row."""
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise UserError(f"the held-out fraction must be between 0 and 1 (got {fraction!r})")
    rows = list(rows)
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(str(r.get(label_column, "")).strip(), []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for label in sorted(by_label):
        idx = by_label[label]
        if len(idx) < 2:
            continue
        n = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
        held.update(rng.sample(idx, n))
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def stratified_folds(rows: Rows, label_column: str, k: int, seed: int = 0) -> list[int]:
    """The cross-validation fold (0..k-1) of each row: each label's rows, shuffled with `seed`, dealt
    round-robin over the folds (starting where the previous label stopped, so fold sizes differ by at
    most one). Needs at least 2*k rows, so every fold holds out some rows and trains on most."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise UserError(f"cross-validation needs at least 2 folds (got {k!r})")
    rows = list(rows)
    if len(rows) < 2 * k:
        raise UserError(f"{k}-fold cross-validation needs at least {2 * k} labelled rows; there are {len(rows)}. "
                        "Use fewer folds or add rows.")
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(str(r.get(label_column, "")).strip(), []).append(i)
    rng = random.Random(seed)
    fold = [0] * len(rows)
    at = 0
    for label in sorted(by_label):
        idx = list(by_label[label])
        rng.shuffle(idx)
        for i in idx:
            fold[i] = at % k
            at += 1
    return fold
