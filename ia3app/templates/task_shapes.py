"""Reading a file's columns: the label column's guess, each built-in's column roles, the task shape
(one text, a pair, a passage and a question, multiple choice), and the built-ins that fit.

`templates_fitting(columns, label_values)` -> [(name, spec)] ready to preview, most specific first, the
generic "text → label" last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Iterable

from ia3app.errors import UserError
from ia3app.templates.library import BUILTINS, NEGATIVE, NLI3, POSITIVE, index_labels
from ia3app.templates.spec import TemplateSpec

ROLE_NAMES: dict[str, tuple[str, ...]] = {
    "text": ("sentence", "text", "review", "content", "document", "body", "tweet", "comment", "utterance",
             "message", "description", "title", "headline", "input"),
    "premise": ("premise", "sentence1", "text1", "context"),
    "hypothesis": ("hypothesis", "sentence2", "text2"),
    "passage": ("passage", "context", "paragraph", "article", "text", "document"),
    "question": ("question", "query", "prompt", "goal", "sentence", "stem", "ctx", "text"),
    "sentence1": ("sentence1", "question1", "text1", "s1", "sentence_1", "first"),
    "sentence2": ("sentence2", "question2", "text2", "s2", "sentence_2", "second"),
    "word": ("word", "target_word", "lemma", "term"),
    "choice1": ("choice1", "option1", "choice_1", "option_1"),
    "choice2": ("choice2", "option2", "choice_2", "option_2"),
    "span1": ("span1_text", "span1", "noun", "entity", "candidate"),
    "span2": ("span2_text", "span2", "pronoun", "mention"),
}
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "sentiment", "gold", "answer", "idx_label")
_OPTION = re.compile(r"(choice|option|answer|ending)_?([0-9]+|[a-e])")


def _key(column: str) -> str:
    """'Review Text' -> 'review_text': how column names are compared with role names."""
    return re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")


def guess_label_column(columns: list[str]) -> str | None:
    """The label column by its name (LABEL_NAMES in order, names compared as 'Review Text' -> 'review_text'),
    or None. The one guess: the data page (which falls back to the last column), the CLI and shapes use it."""
    keyed = {_key(c): c for c in columns}
    return next((keyed[n] for n in LABEL_NAMES if n in keyed), None)


def _assign(roles: tuple[str, ...], columns: list[str], label: str) -> dict[str, Any] | None:
    """Map each role to a distinct column: by its whole name first, else by a word of it ('Review Text' -> text).
    None when a role finds no column."""
    free = {_key(c): c for c in columns if c != label}
    out: dict[str, Any] = {}
    for role in roles:
        if role == "options":
            options = sorted((c for c in free.values() if _OPTION.fullmatch(_key(c))), key=_key)
            if len(options) < 2:
                return None
            out[role] = options
            for c in options:
                free.pop(_key(c))
            continue
        match = next((free[n] for n in ROLE_NAMES[role] if n in free), None)
        if match is None:
            match = next((c for n in ROLE_NAMES[role] for k, c in free.items() if n in k.split("_")), None)
        if match is None:
            return None
        out[role] = match
        free.pop(_key(match))
    return out


def _labels_fit(kind: str, label_values: list[str], n_options: int = 2) -> bool:
    values = {str(v).strip().casefold() for v in label_values if str(v).strip()}
    if kind == "binary":
        return len(values) == 2 and all(v in NEGATIVE or v in POSITIVE for v in values) and (
            len({v in POSITIVE for v in values}) == 2)
    if kind == "nli3":  # three classes, or the class names themselves (0/1 alone reads as binary)
        return values <= set(NLI3) and (len(values) == 3 or (len(values) == 2 and not values & {"0", "1", "2"}))
    if kind == "index":
        try:
            index_labels(values, n_options)
        except UserError:
            return False
        return bool(values)
    return len(values) >= (3 if kind == "multi" else 2)


@dataclass(frozen=True)
class TaskShape:
    """What the marked input columns are, in words a person recognises."""

    kind: str
    """'text' (one text), 'pair' (two texts), 'passage_question', 'multiple_choice' or 'other'."""
    description: str
    options: tuple[str, ...] = ()
    """Multiple choice: the per-row option columns, in order."""
    choice_labels: tuple[str, ...] | None = None
    """Multiple choice: the label value naming each option (None: 0-based indexes)."""


def option_columns(columns: Iterable[str]) -> list[str]:
    """Columns that hold per-row answer options: option1, choice_2, endingA, answer_b, ..."""
    return sorted((c for c in columns if _OPTION.fullmatch(_key(c))), key=_key)


def detect_shape(inputs: list[str], label_values: Iterable[str]) -> TaskShape:
    """The task shape of these input columns (the columns the model reads) and label values."""
    values = [str(v).strip() for v in label_values]
    options = option_columns(inputs)
    if len(options) >= 2:
        try:
            labels = index_labels(values, len(options))
        except UserError:
            labels = "none"
        if labels != "none":
            naming = ("0-based indexes" if labels is None else ", ".join(labels))
            return TaskShape("multiple_choice", f"multiple choice: each row has its own options "
                             f"({', '.join(options)}); the label ({naming}) names the right one", tuple(options),
                             None if labels is None else tuple(labels))
    keys = {_key(c) for c in inputs}
    if len(inputs) == 2 and keys & set(ROLE_NAMES["question"][:4]) and keys & set(ROLE_NAMES["passage"]):
        return TaskShape("passage_question", "a passage and a question about it")
    if len(inputs) == 1:
        return TaskShape("text", f"one text ({inputs[0]}) to classify")
    if len(inputs) == 2:
        return TaskShape("pair", f"a pair of texts ({inputs[0]}, {inputs[1]})")
    return TaskShape("other", f"{len(inputs)} text columns ({', '.join(inputs)})")


_REVIEW_WORDS = ("review", "tweet", "comment", "sentence", "opinion", "feedback")
_SENTIMENT_LABELS = {"negative", "positive", "neg", "pos", "good", "bad"}


def _reads_as_review(text_column: str, label_values: list[str]) -> bool:
    """Offer the sentiment wording first only for reviews/opinions, not for any text with 0/1 labels."""
    return (any(w in _key(text_column).split("_") for w in _REVIEW_WORDS)
            or bool({v.strip().casefold() for v in label_values} & _SENTIMENT_LABELS))


def templates_fitting(
    columns: list[str], label_values: Iterable[str], label_column: str | None = None,
    inputs: list[str] | None = None,
) -> list[tuple[str, TemplateSpec]]:
    """Built-ins whose column roles and label values fit this file, most specific first.

    inputs: the columns the model should read (default: every column but the label); only built-ins
    that use every one of them are offered, so no marked column is silently dropped."""
    label = label_column or guess_label_column(columns)
    if label is None:
        return []
    values = [str(v).strip() for v in label_values]
    inputs = [c for c in (inputs if inputs is not None else columns) if c != label and c in columns]
    out = []
    for entry in BUILTINS.values():
        assigned = _assign(entry.roles, inputs + [label], label)
        if assigned is None:
            continue
        used = {c for v in assigned.values() for c in ([v] if isinstance(v, str) else v)}
        if used != set(inputs):
            continue
        n_options = len(assigned.get("options", ())) or 2
        if not _labels_fit(entry.labels, values, n_options):
            continue
        if entry.family == "multiple_choice" and any(BUILTINS[name].family == "cause_effect" for name, _ in out):
            continue  # COPA-shaped data: the cause/effect wordings are the better multiple-choice templates
        spec = replace(entry.make(label=label, label_values=sorted(set(values)), **assigned), chat=True)
        out.append((entry.name, spec))
    # more columns used = more specific (WiC before paraphrase); the generic text_label last, except that
    # a text that is not a review gets the generic wording before the sentiment one
    order = {name: i for i, name in enumerate(BUILTINS)}
    review = len(inputs) == 1 and _reads_as_review(inputs[0], values)
    family = {name: BUILTINS[name].family for name, _ in out}
    out.sort(key=lambda item: (family[item[0]] == "text_label" and review, family[item[0]] == "sentiment" and not review,
                               -len(BUILTINS[item[0]].roles), order[item[0]]))
    return out
