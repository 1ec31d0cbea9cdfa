"""Rows through a template: ``render`` (one row -> Example, or a UserError naming the problem),
``render_all``, ``validate`` / ``checked_examples`` (a template checked against a file's columns and
rows, every problem in one UserError; checked_examples keeps each row's Example, rendered once) and
``preview`` (the first rows rendered, ``format_preview`` for the CLI). Rows are numbered from 1 after
the header, as a person counts them in a spreadsheet below the column names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterable

from ia3app.errors import UserError
from ia3app.example import Example
from ia3app.listing import MAX_LISTED, listed_numbers
from ia3app.templates.column_refs import ROW, column_ref
from ia3app.templates.sandbox import MAX_CHOICE_CHARS, MAX_INPUT_CHARS, render_text
from ia3app.templates.render_limits import deadline

if TYPE_CHECKING:
    from ia3app.templates.spec import TemplateSpec


def render_context(spec: TemplateSpec, row: dict[str, Any]) -> dict[str, Any]:
    """The names a template sees for one row: its columns (empty cells as ""; whole numbers as ints with
    ``integer_values``; the label as its index into ``label_names`` when set) and ``row``, the whole row.
    Every render of a row starts from it (bench/bench_render.py times a plain Jinja render on it too)."""
    context: dict[str, Any] = {k: ("" if v is None else v) for k, v in row.items()}
    if spec.integer_values:
        for k, v in context.items():
            if isinstance(v, str) and re.fullmatch(r"-?[1-9][0-9]{0,17}|0", v.strip()):
                context[k] = int(v)
    if spec.label_names is not None:
        value = _label_value(row, spec.label_column)
        if value is not None and value in spec.label_names:
            context[spec.label_column] = spec.label_names.index(value)
    context[ROW] = dict(context)  # always the whole row; a column named "row" is read as row["row"]
    return context


def _label_value(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def render_choices(spec: TemplateSpec, row: dict[str, Any]) -> list[str]:
    if not spec.per_row:
        return list(spec.choices or [])
    context = render_context(spec, row)
    return [
        render_text(text, f"answer choice {i + 1} template", context, MAX_CHOICE_CHARS)
        for i, text in enumerate(spec.choice_templates or [])
    ]


def lookup_label(spec: TemplateSpec, row: dict[str, Any], choices: list[str]) -> int | None:
    """Index of the row's correct choice; None when the row has no label. UserError when it fits none."""
    value = _label_value(row, spec.label_column)
    if value is None:
        return None
    if spec.target is not None:
        context = render_context(spec, row) | {"answer_choices": choices}
        text = render_text(spec.target, "target template", context, MAX_CHOICE_CHARS)
        matches = [i for i, c in enumerate(choices) if _norm(c) == _norm(text)]
        if not matches:
            raise UserError(f"the target '{text}' is not one of the answer choices: {_quoted(choices)}")
        return matches[0]
    if spec.per_row and spec.choice_labels is not None:
        folded = [c.casefold() for c in spec.choice_labels]
        if value.casefold() not in folded:
            raise UserError(f"label '{value}' names no answer choice; the choices are labelled "
                            f"{', '.join(spec.choice_labels)}")
        return folded.index(value.casefold())
    if spec.per_row:
        if not re.fullmatch(r"[0-9]+", value) or int(value) >= len(choices):
            raise UserError(
                f"label '{value}' is not a choice index; per-row choices need 0 to {len(choices) - 1}"
            )
        return int(value)
    text = _map_label(spec, value)
    matches = [i for i, c in enumerate(choices) if _norm(c) == _norm(text or "")]
    if text is None or not matches:
        raise UserError(f"label '{value}' has no answer choice; the choices are {_quoted(choices)}")
    return matches[0]


def _map_label(spec: TemplateSpec, value: str) -> str | None:
    if spec.label_map is None:
        return value
    if value in spec.label_map:
        return spec.label_map[value]
    folded = {k.strip().casefold(): v for k, v in spec.label_map.items()}
    return folded.get(value.casefold())


def render(spec: TemplateSpec, row: dict[str, Any]) -> Example:
    """One row -> Example. UserError (naming the problem) when the row cannot become one. The row's
    input, choices and target share one time budget (render_limits.MAX_RENDER_SECONDS)."""
    with deadline():
        return _render(spec, row)


def _render(spec: TemplateSpec, row: dict[str, Any]) -> Example:
    choices = render_choices(spec, row)
    context = render_context(spec, row) | {"answer_choices": choices}
    text = render_text(spec.input, "input template", context, MAX_INPUT_CHARS)
    if not text:
        raise UserError("the input template renders to empty text")
    if len(choices) < 2:
        raise UserError(f"a template needs at least 2 answer choices; it has {len(choices)}")
    label = lookup_label(spec, row, choices)
    return Example(input=text, choices=tuple(choices), label=label)


def render_all(spec: TemplateSpec, rows: Iterable[dict[str, Any]]) -> list[Example]:
    """Every row -> Example; the first failing row is named in the error (validate() lists them all)."""
    out = []
    for n, row in enumerate(rows, start=1):
        try:
            out.append(render(spec, row))
        except UserError as e:
            raise UserError(f"row {n}: {e}") from None
    return out


# ---------------------------------------------------------------- validation


def _norm(text: str) -> str:
    return " ".join(text.split())


def _quoted(values: Iterable[Any]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _duplicates(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: list[str] = []
    for t in texts:
        key = _norm(t)
        if key in seen and key not in dups:
            dups.append(key)
        seen.add(key)
    return dups


def validate(
    spec: TemplateSpec, columns: list[str], rows: list[dict[str, Any]], *, require_labels: bool = True,
    inputs: list[str] | None = None, source: str = "file",
) -> list[str]:
    """Check a template against a file's columns and rows. Returns warnings; raises ONE UserError listing
    every problem (missing columns, unmapped labels, empty inputs, colliding or too few choices, syntax).
    require_labels=False is for unlabelled data (predictions): the label column is neither needed nor checked.
    inputs: the columns the person marked as text the model reads; one the template leaves out is warned of.
    source: what the rows came in, as the messages name it ("file"; "rows sent" for predictions, where no file is)."""
    return _check(spec, columns, rows, require_labels=require_labels, inputs=inputs, source=source, examples=None)


def checked_examples(spec: TemplateSpec, columns: list[str], rows: list[dict[str, Any]], *,
                     inputs: list[str] | None = None) -> tuple[list[str], list[Example]]:
    """validate() and render_all() of labelled data in one pass, each row rendered once: (warnings, every row's
    Example, in order — the same Examples render_all gives). Raises validate()'s one UserError listing every
    problem (no Examples then)."""
    examples: list[Example] = []
    warnings = _check(spec, columns, rows, require_labels=True, inputs=inputs, source="file", examples=examples)
    return warnings, examples


def _check(spec: TemplateSpec, columns: list[str], rows: list[dict[str, Any]], *, require_labels: bool,
           inputs: list[str] | None, source: str, examples: list[Example] | None) -> list[str]:
    """validate()'s work; with `examples` (labels required), each row's Example is appended as it is checked."""
    problems: list[str] = []
    warnings: list[str] = []
    try:
        used = spec.columns_used(include_target=require_labels)
    except UserError as e:
        raise UserError(f"template '{spec.name}': {e}") from None
    listing = ", ".join(columns) if columns else "(no columns)"
    has = f"the {source} {'has' if source == 'file' else 'have'}"
    for col in sorted(used - set(columns)):
        problems.append(f"column '{col}' used by the template is not in the {source}; {has}: {listing}")
    if require_labels and spec.label_column not in columns:
        problems.append(f"label column '{spec.label_column}' is not in the {source}; {has}: {listing}")
    if not spec.per_row:
        choices = spec.choices or []
        if len(choices) < 2:
            problems.append(f"a template needs at least 2 answer choices; it has {len(choices)}")
        if [c for c in choices if not c.strip()]:
            problems.append("an answer choice is empty")
        if dups := _duplicates(choices):
            problems.append(f"answer choices collide: {_quoted(dups)} appears more than once")
        if spec.label_map and spec.target is None:
            stray = sorted({v for v in spec.label_map.values() if _norm(v) not in {_norm(c) for c in choices}})
            if stray:
                problems.append(f"label_map points to {_quoted(stray)}, which are not choices ({_quoted(choices)})")
    elif len(spec.choice_templates or []) < 2:
        problems.append(f"a template needs at least 2 answer choices; it has {len(spec.choice_templates or [])}")
    if problems:  # rendering would only repeat these per row
        raise UserError(f"template '{spec.name}' does not fit this data: " + "; ".join(problems))

    empty: list[int] = []
    collide: list[int] = []
    choice_lists: set[tuple[str, ...]] = set()
    empty_choice: list[int] = []
    unmapped: dict[str, list[int]] = {}
    failed: dict[str, list[int]] = {}
    labelled = 0
    for n, row in enumerate(rows, start=1):
        with deadline():  # one time budget per row (input, choices, target), as in render()
            try:
                choices = render_choices(spec, row)
                context = render_context(spec, row) | {"answer_choices": choices}
                text = render_text(spec.input, "input template", context, MAX_INPUT_CHARS)
            except UserError as e:
                failed.setdefault(str(e), []).append(n)
                if "per-row time limit" in str(e):
                    break  # a row-dependent blow-up: checking every other row would cost a second each
                continue
            if not text:
                empty.append(n)
            if spec.per_row and [c for c in choices if not c]:
                empty_choice.append(n)
            if spec.per_row and _duplicates(choices):
                collide.append(n)
            choice_lists.add(tuple(choices))
            if not require_labels:
                continue
            try:
                label = lookup_label(spec, row, choices)
                labelled += label is not None
                if examples is not None:  # every check of render() passed or is collected in `problems`
                    examples.append(Example(input=text, choices=tuple(choices), label=label))
            except UserError as e:
                key = _label_value(row, spec.label_column) or ""
                if spec.per_row or spec.target is not None:
                    failed.setdefault(str(e), []).append(n)
                else:
                    unmapped.setdefault(key, []).append(n)
    for message, numbers in failed.items():
        problems.append(f"{message} (row{'s' if len(numbers) > 1 else ''} {listed_numbers(numbers)})")
    if unmapped:
        hint = (f" (say which answer each label value means: a line such as “{sorted(unmapped)[0]} = "
                f"{(spec.choices or ['answer'])[0]}” under “Label value = answer” on the template page, or "
                "label_map in a template file)")
        problems.append(
            f"label value(s) {_quoted(sorted(unmapped)[:MAX_LISTED])} have no answer choice; "
            f"the choices are {_quoted(spec.choices or [])}{hint}"
        )
    if empty:
        problems.append(f"the input renders to empty text in row{'s' if len(empty) > 1 else ''} {listed_numbers(empty)}")
    if empty_choice:
        problems.append(f"an answer choice renders to empty text in row{'s' if len(empty_choice) > 1 else ''} "
                        f"{listed_numbers(empty_choice)}")
    if collide:
        problems.append(f"answer choices collide (two identical choices) in row{'s' if len(collide) > 1 else ''} "
                        f"{listed_numbers(collide)}")
    if problems:
        raise UserError(f"template '{spec.name}' does not fit this data: " + "; ".join(problems))
    unused = [c for c in inputs or [] if c in columns and c != spec.label_column and c not in used]
    if unused:
        warnings.append(f"column{'s' if len(unused) > 1 else ''} {_quoted(unused)} "
                        f"{'are' if len(unused) > 1 else 'is'} marked as text the model reads, but the template "
                        "does not use it: add it to the template, or untick it on the data page")
    if spec.per_row and len(rows) > 1 and len(choice_lists) == 1:
        same = next(iter(choice_lists))
        named = [c for c in same if c in columns]
        hint = f"; did you mean {column_ref(named[0])}?" if named else ""
        warnings.append(f"every row has the same answers ({_quoted(same)}), though per-row answers were chosen: "
                        f"write column names in double braces to read each row's own answers{hint}")
    if not rows:
        warnings.append("no rows to check the template against")
    elif require_labels and labelled == 0:
        warnings.append(f"no row has a label in column '{spec.label_column}'")
    if not spec.per_row and spec.target is None and labelled:
        answers = {_norm(_map_label(spec, v) or "") for v in (_label_value(r, spec.label_column) for r in rows) if v}
        unused = [c for c in spec.choices or [] if _norm(c) not in answers]
        if unused:
            warnings.append(f"answer choice(s) {_quoted(unused)} never appear as a correct answer in this data")
    return warnings


# ---------------------------------------------------------------- preview


def preview(spec: TemplateSpec, rows: list[dict[str, Any]], n: int = 5) -> list[dict[str, Any]]:
    """The first n rows rendered: {row, input, choices, label, answer} (label/answer None if unlabelled)."""
    out = []
    for number, row in enumerate(rows[:n], start=1):
        try:
            ex = render(spec, row)
        except UserError as e:
            raise UserError(f"row {number}: {e}") from None
        answer = None if ex.label is None else ex.choices[ex.label]
        out.append({"row": number, "input": ex.input, "choices": list(ex.choices), "label": ex.label, "answer": answer})
    return out


def format_preview(items: list[dict[str, Any]]) -> str:
    """Plain text for the CLI: each rendered input, then its choices with the correct one marked '*'."""
    blocks = []
    for item in items:
        lines = [f"--- row {item['row']}", item["input"], ""]
        for i, choice in enumerate(item["choices"]):
            lines.append(f"  {'*' if i == item['label'] else ' '} {choice}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n(* = correct answer)" if blocks else "")
