"""A read table checked for its role: a labelled training set (label_counts, check_labels: blank or single
labels refused, warnings for scarce, duplicate, conflicting, long or suspicious labels and empty text
columns; check_text_columns) or an unlabelled pool that goes with a dataset (pool_rows). Rows are numbered
from 1 after the header, as in ia3app.tables.csv_io's messages.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Union

from ia3app.errors import UserError
from ia3app.listing import MAX_LISTED, listed_numbers
from ia3app.tables.csv_io import Rows, Table, rows_of

FEW_PER_CLASS = 4
"""Fewer rows than this for a label draws a warning."""
MANY_PER_CLASS = 64
"""More rows than this for a label draws a 'more than few-shot needs' warning."""
LONG_TEXT_CHARS = 1_000
"""Cells longer than this (about 256 tokens) will be cut at the model's max_length."""


def _rows(numbers: list[int]) -> str:
    return f"row{'s' if len(numbers) > 1 else ''} {listed_numbers(numbers)}"


def label_counts(data: Union[Table, Rows], label_column: str) -> dict[str, int]:
    """Rows per label value (stripped), most frequent first; blank labels are not counted."""
    counts = Counter(str(r.get(label_column, "")).strip() for r in rows_of(data))
    counts.pop("", None)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _label_value_warnings(counts: dict[str, int], label_column: str, n_rows: int) -> list[str]:
    """Labels that look like a mistake: decimals, spellings that differ only in case, one row per label."""
    warnings = []
    values = list(counts)
    decimals = [v for v in values if re.fullmatch(r"-?[0-9]*\.[0-9]+", v)]
    if decimals and len(decimals) == len(values):
        if all(float(v).is_integer() for v in values):
            warnings.append(
                f"the labels look like decimal numbers ({', '.join(repr(v) for v in values[:MAX_LISTED])}); a "
                "spreadsheet may have turned whole numbers into decimals: save them as 0, 1, ... or as words"
            )
        else:
            warnings.append(
                f"the labels in column '{label_column}' are decimal numbers; this app learns to pick one of a few "
                "classes and cannot predict a number: group the values into classes (e.g. low / high)"
            )
    folded: dict[str, list[str]] = {}
    for v in values:
        folded.setdefault(" ".join(v.split()).casefold(), []).append(v)
    variants = [group for group in folded.values() if len(group) > 1]
    if variants:
        shown = "; ".join(" and ".join(repr(v) for v in group) for group in variants[:MAX_LISTED])
        warnings.append(f"some labels differ only in capitals or spaces ({shown}); they count as different "
                        "classes: spell each label the same way")
    singles = [v for v, k in counts.items() if k == 1]
    if singles and len(counts) > n_rows / 2:
        warnings.append(
            f"{len(counts):,} different labels for {n_rows:,} rows ({len(singles):,} with one row each): is "
            f"'{label_column}' really the label column? A label needs several examples to be learnt"
        )
    elif singles:
        warnings.append(
            f"label{'s' if len(singles) > 1 else ''} {', '.join(repr(v) for v in singles[:MAX_LISTED])}"
            f"{' and more' if len(singles) > MAX_LISTED else ''} {'have' if len(singles) > 1 else 'has'} only one "
            "row: it can be trained on or held out for checking, not both; add rows for it or remove it"
        )
    return warnings


def check_text_columns(table: Table, text_columns: list[str]) -> None:
    """UserError when a column picked as text the model reads is empty (or only spaces) in every row."""
    empty = [c for c in text_columns if c in table.columns and not any(str(r.get(c, "")).strip() for r in table.rows)]
    if empty:
        names, many = ", ".join(f"'{c}'" for c in empty), len(empty) > 1
        raise UserError(f"column{'s' if many else ''} {names} {'are' if many else 'is'} empty (or only spaces) in "
                        f"every row: the model would read nothing from {'them' if many else 'it'}; untick "
                        f"{'them' if many else 'it'} as text the model reads, or fill {'them' if many else 'it'} in")


def _empty_text_warnings(table: Table, text_columns: list[str]) -> list[str]:
    warnings = []
    for c in text_columns:
        blank = [n for n, r in enumerate(table.rows, start=1) if not str(r.get(c, "")).strip()]
        if blank and len(blank) == len(table.rows):
            warnings.append(f"column '{c}' is empty (or only spaces) in every row: the model would read nothing "
                            "from it; untick it or fill it in")
        elif blank:
            warnings.append(f"column '{c}' is empty (or only spaces) in {_rows(blank)}")
    return warnings


def check_labels(
    table: Table, label_column: str, *, few: int = FEW_PER_CLASS, many: int = MANY_PER_CLASS,
    long_chars: int = LONG_TEXT_CHARS, text_columns: list[str] | None = None,
) -> list[str]:
    """Warnings about a labelled table; UserError for blanks in the label column or a single class.

    text_columns: the columns the model reads (default: every other column), checked for empty cells."""
    if label_column not in table.columns:
        raise UserError(f"label column '{label_column}' is not in the file; the file has: {', '.join(table.columns)}")
    blanks = [n for n, r in enumerate(table.rows, start=1) if not str(r.get(label_column, "")).strip()]
    if blanks:
        raise UserError(
            f"the label column '{label_column}' is blank in {_rows(blanks)}; "
            "fill in a label or remove those rows"
        )
    counts = label_counts(table, label_column)
    if len(counts) < 2:
        only = next(iter(counts))
        raise UserError(
            f"every row has the label '{only}' in column '{label_column}'; a classifier needs at least two "
            "different labels (is this the right label column?)"
        )
    warnings = []
    scarce = [f"'{k}' ({v})" for k, v in counts.items() if v < few]
    if len(counts) > len(table.rows) / 2:
        scarce = []  # said better below: the column does not look like labels
    if scarce:
        warnings.append(f"very few rows for label{'s' if len(scarce) > 1 else ''} {', '.join(scarce)}; "
                        f"{few} or more rows per label make a more reliable adapter")
    if max(counts.values()) > many:
        warnings.append(
            f"{len(table.rows):,} rows: more than few-shot training needs (T-Few uses tens per label); "
            f"consider sampling about {min(32, many)} rows per label"
        )
    seen: dict[tuple, int] = {}
    dups = []
    for n, r in enumerate(table.rows, start=1):
        key = tuple(r.get(c, "") for c in table.columns)
        if key in seen:
            dups.append(n)
        seen.setdefault(key, n)
    if dups:
        warnings.append(f"{len(dups)} row{'s are exact duplicates' if len(dups) > 1 else ' is an exact duplicate'} "
                        f"of an earlier row ({_rows(dups)})")
    inputs: dict[tuple, set[str]] = {}
    for r in table.rows:
        inputs.setdefault(tuple(r.get(c, "") for c in table.columns if c != label_column), set()).add(
            r[label_column].strip()
        )
    conflicting = sum(1 for labels in inputs.values() if len(labels) > 1)
    if conflicting:
        warnings.append(f"{conflicting} input{'s appear' if conflicting > 1 else ' appears'} with different labels")
    long_rows = [n for n, r in enumerate(table.rows, start=1)
                 if any(len(v) > long_chars for c, v in r.items() if c != label_column)]
    if long_rows:
        warnings.append(
            f"{len(long_rows)} row{'s have' if len(long_rows) > 1 else ' has'} text longer than {long_chars:,} "
            f"characters ({_rows(long_rows)}); the model reads about 1,000 characters of a row at once, so the "
            "end of the longest text in those rows will be left out (the template's words and shorter texts stay)"
        )
    warnings += _label_value_warnings(counts, label_column, len(table.rows))
    texts = text_columns if text_columns is not None else [c for c in table.columns if c != label_column]
    warnings += _empty_text_warnings(table, texts)
    return warnings


def pool_rows(table: Table, columns: list[str], label_column: str | None) -> Rows:
    """The rows of an unlabelled pool meant to go with a dataset of these columns: every column of the
    dataset but its label column must be there (extra columns are dropped); a label column may be
    present only if it is empty on every row. UserError saying what does not fit."""
    needed = [c for c in columns if c != label_column]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise UserError(f"the unlabelled file lacks column(s) {', '.join(missing)} that the dataset has; "
                        f"it has: {', '.join(table.columns)}")
    if label_column and label_column in table.columns:
        filled = [n for n, r in enumerate(table.rows, start=1) if str(r.get(label_column, "")).strip()]
        if filled:
            raise UserError(f"the unlabelled file has labels in column '{label_column}' on {len(filled)} "
                            f"{'row' if len(filled) == 1 else 'rows'} ({_rows(filled)}); leave it empty or drop it "
                            "(labelled rows belong in the dataset itself)")
    empty = [n for n, r in enumerate(table.rows, start=1) if not any(str(r.get(c, "")).strip() for c in needed)]
    if empty:
        raise UserError(f"{_rows(empty)} of the unlabelled file {'have' if len(empty) > 1 else 'has'} no text in "
                        f"any of {', '.join(needed)}")
    return [{c: r.get(c, "") for c in needed} for r in table.rows]
