"""Fit a rendered input into the model's token budget by shortening the longest field, not the end.

Cutting a long input from the right loses whatever the template put last: the question after a
passage, the "Yes or no?" that tells the model what to answer. Here the template's own words and
the shorter fields stay whole; the longest field (in tokens) is cut at its end ("…") until the
rendered input fits, then the next longest if it still does not. Rows that were shortened are
reported by number (from 1, as everywhere) so a person can see which.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from ia3app.example import Example
from ia3app.listing import listed_numbers
from ia3app.templates.rendering import render
from ia3app.templates.spec import TemplateSpec

ELLIPSIS = "…"
MAX_ROUNDS = 12
"""Re-renders per row at most (each shortens one field); tokenisation at the joins is not exactly additive."""


@dataclass
class Fitted:
    """Examples that fit, and what was shortened to get there."""

    examples: list[Example]
    rows_cut: list[int] = field(default_factory=list)
    """Row numbers (from 1) whose input was shortened."""
    columns_cut: list[str] = field(default_factory=list)
    """The fields that were shortened, most often first."""
    still_long: list[int] = field(default_factory=list)
    """Rows whose template words alone exceed the budget (the scorer cuts those from the right)."""


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def _shorten(tokenizer, text: str, keep: int) -> str:
    """The first `keep` tokens of text, decoded, with an ellipsis."""
    if keep <= 0:
        return ELLIPSIS
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:keep]
    return tokenizer.decode(ids, skip_special_tokens=True).rstrip() + ELLIPSIS


def fit_row(spec: TemplateSpec, row: dict[str, Any], example: Example, tokenizer, max_length: int,
            columns: Sequence[str]) -> tuple[Example, list[str], bool]:
    """(the example fitted to max_length tokens, the fields shortened, whether it fits now)."""
    n = _count(tokenizer, example.input)
    if n <= max_length:
        return example, [], True
    row = dict(row)
    cut: list[str] = []
    lengths = {c: len(tokenizer(str(row.get(c) or ""), add_special_tokens=False)["input_ids"]) for c in columns}
    for _ in range(MAX_ROUNDS):
        over = n - max_length
        candidates = [c for c in columns if lengths.get(c, 0) > 1]
        if over <= 0 or not candidates:
            break
        longest = max(candidates, key=lambda c: lengths[c])
        keep = max(0, lengths[longest] - over - 1)  # one token for the ellipsis
        row[longest] = _shorten(tokenizer, str(row[longest]), keep)
        lengths[longest] = keep + 1 if keep else 0
        if longest not in cut:
            cut.append(longest)
        example = replace(render(spec, row), label=example.label)
        n = _count(tokenizer, example.input)
    return example, cut, n <= max_length


def shortenable_columns(spec: TemplateSpec) -> list[str]:
    """Columns the input template reads that are neither the label nor part of an answer choice."""
    input_only = TemplateSpec(spec.name, spec.input, spec.label_column, choices=["a", "b"])
    answers: set[str] = set()
    if spec.per_row or spec.target is not None:
        answers = TemplateSpec(spec.name, "x", spec.label_column, choices=None if spec.per_row else ["a", "b"],
                               choice_templates=spec.choice_templates, target=spec.target).columns_used()
    return sorted(c for c in input_only.columns_used() if c != spec.label_column and c not in answers)


def fit_examples(spec: TemplateSpec, rows: Sequence[dict[str, Any]], examples: Sequence[Example], tokenizer,
                 max_length: int) -> Fitted:
    """Each row's example fitted to max_length tokens (examples[i] is rows[i] rendered by spec), leaving
    room for the chat template's wrap when it applies (the examples themselves stay unwrapped)."""
    from ia3app.templates.chat import overhead_tokens

    out = Fitted([])
    max_length = max(1, max_length - overhead_tokens(tokenizer, spec.chat))
    columns = shortenable_columns(spec)
    counts: dict[str, int] = {}
    for number, (row, example) in enumerate(zip(rows, examples), start=1):
        fitted, cut, fits = fit_row(spec, row, example, tokenizer, max_length, columns)
        out.examples.append(fitted)
        if cut:
            out.rows_cut.append(number)
            for c in cut:
                counts[c] = counts.get(c, 0) + 1
        if not fits:
            out.still_long.append(number)
    out.columns_cut = sorted(counts, key=lambda c: -counts[c])
    return out


def warning(fitted: Fitted, max_length: int, what: str = "training") -> str | None:
    """Plain words for the rows that were shortened; None when none were."""
    if not fitted.rows_cut and not fitted.still_long:
        return None
    parts = []
    if fitted.rows_cut:
        fields = ", ".join(f"'{c}'" for c in fitted.columns_cut)
        rows = fitted.rows_cut
        parts.append(
            f"{len(rows)} {what} row{'s are' if len(rows) > 1 else ' is'} longer than the model reads at once "
            f"(about {max_length} word pieces): in row{'s' if len(rows) > 1 else ''} {listed_numbers(rows)} the end of the "
            f"longest text ({fields}) was left out, so the template's own words and the shorter texts stay whole"
        )
    if fitted.still_long:
        parts.append(f"in {what} row{'s' if len(fitted.still_long) > 1 else ''} {listed_numbers(fitted.still_long)} the "
                     "template's own words are already too long; the end of the input is cut")
    return "; ".join(parts)
