"""The CLI's data and template side: which columns the model reads, --column NAME=COLUMN, the data
page's checks in the same words, and `templates`. No torch or transformers import here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ia3app.errors import UserError


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} takes NAME=VALUE (got {item!r})")
        out[key] = value
    return out


def read_table(path: str, args=None):
    """A CSV file's rows; any other source (a Hub dataset name, a save_to_disk folder, parquet / JSON lines,
    with --dataset-config / --dataset-split) is read through `datasets` and checked as the same CSV would be."""
    from ia3app.tables import load_csv

    p = Path(path)
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        if not p.is_file():
            raise UserError(f"CSV file {path} does not exist")
        return load_csv(p)
    from ia3app.hf_datasets import dataset_as_csv

    return load_csv(dataset_as_csv(path, config=getattr(args, "dataset_config", None),
                                   split=getattr(args, "dataset_split", None))[1])


def _label_column(args, table) -> str:
    from ia3app.templates.task_shapes import guess_label_column

    return args.label_column or (guess_label_column(table.columns) if table else None) or "label"


def _inputs(args, table, label: str) -> list[str]:
    """--text-column (the columns the model reads), as the data page's ticks; default: every other column."""
    given = list(getattr(args, "text_column", None) or [])
    unknown = [c for c in given if c not in table.columns]
    if unknown:
        raise UserError(f"--text-column {', '.join(unknown)}: no such column; the file has: {', '.join(table.columns)}")
    return given or [c for c in table.columns if c != label]


def _map_columns(spec, mapping: dict[str, str], table):
    """--column NAME=COLUMN for a template file: the template's NAME reads the file's COLUMN (a `{% set %}`
    line before each Jinja text, so the saved template names the real column); NAME may be the label column."""
    from dataclasses import replace

    from ia3app.templates.column_refs import column_expr

    if table is not None:
        missing = [c for c in mapping.values() if c not in table.columns]
        if missing:
            raise UserError(f"--column: {', '.join(repr(c) for c in missing)} is not a column of the file; "
                            f"the file has: {', '.join(table.columns)}")
    bad = [n for n in mapping if not n.isidentifier()]
    if bad:
        raise UserError(f"--column NAME=COLUMN: {', '.join(repr(n) for n in bad)} is not a name a template can use")
    label = mapping.pop(spec.label_column, spec.label_column)
    prefix = "".join(f"{{% set {name} = {column_expr(column)} %}}" for name, column in mapping.items())
    if not prefix:
        return replace(spec, label_column=label)
    return replace(spec, label_column=label, input=prefix + spec.input, target=None if spec.target is None else
                   prefix + spec.target, choice_templates=None if spec.choice_templates is None else
                   [prefix + t for t in spec.choice_templates])


def template_from_args(args, table):
    """--template: a built-in name, a JSON TemplateSpec or promptsource file; absent: the best fitting built-in."""
    from ia3app.templates.library import builtin
    from ia3app.templates.task_shapes import templates_fitting
    from ia3app.templates.promptsource import from_promptsource
    from ia3app.templates.spec import TemplateSpec

    columns = pairs(getattr(args, "column", None), "--column")
    label = _label_column(args, table)
    values = sorted({str(r.get(label, "")).strip() for r in table.rows} - {""}) if table else None
    name = args.template
    if name is None:
        if table is None:
            raise UserError("pass --template (a built-in name, or a JSON / promptsource YAML file)")
        inputs = _inputs(args, table, label)
        fitting = templates_fitting(table.columns, values or [], label, inputs=inputs)
        if not fitting:
            raise UserError(
                f"no built-in template uses all of the columns {', '.join(inputs)}; name the columns the model "
                "reads with --text-column, or pass --template with a built-in name and --column ROLE=COLUMN, or a "
                "template file (see `python -m ia3app templates`)"
            )
        return fitting[0][1]
    path = Path(name)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} is not valid JSON: {e}") from None
            if isinstance(data, dict) and "jinja" in data:
                return _map_columns(from_promptsource(data, label_column=label), columns, table)
            return _map_columns(TemplateSpec.from_dict(data), columns, table)
        return _map_columns(from_promptsource(text, name=args.prompt_name, label_column=label), columns, table)
    if args.label_column or "label" not in columns:
        columns.setdefault("label", label)
    return builtin(name, label_values=values, **columns)


def check_data(args, table, spec, out=None) -> None:
    """The data page's and template page's checks, same words: errors raise, warnings print."""
    from ia3app.tables import check_labels
    from ia3app.templates.rendering import validate

    label = spec.label_column
    inputs = _inputs(args, table, label) if getattr(args, "text_column", None) else None
    warnings = check_labels(table, label, text_columns=inputs)
    warnings += validate(spec, table.columns, table.rows, inputs=inputs)
    for w in warnings:
        print(f"warning: {w}", file=out or sys.stderr)


def cmd_templates(args) -> int:
    from ia3app.templates.library import BUILTINS
    from ia3app.templates.task_shapes import templates_fitting
    from ia3app.templates.rendering import format_preview, preview

    if not args.csv:
        for b in BUILTINS.values():
            print(f"{b.name:<16} {b.description}  (columns: {', '.join(b.roles)})")
        return 0
    from ia3app.tables import check_labels
    from ia3app.templates.task_shapes import detect_shape

    table = read_table(args.csv, args)
    if args.template:
        specs = [(args.template, template_from_args(args, table))]
    else:
        label = _label_column(args, table)
        check_labels(table, label)  # a label column that cannot work is refused before any template talk
        values = sorted({str(r.get(label, "")).strip() for r in table.rows} - {""})
        inputs = _inputs(args, table, label)
        print(f"label column '{label}'; the model reads: {detect_shape(inputs, values).description}")
        specs = templates_fitting(table.columns, values, label, inputs=inputs)
        if not specs:
            print(f"no built-in template uses all of the columns {', '.join(inputs)}; choose the columns the "
                  "model reads with --text-column, or write a template file")
            return 0
        print("fitting built-ins: " + ", ".join(name for name, _ in specs) + f"; preview of '{specs[0][0]}':\n")
    check_data(args, table, specs[0][1], out=sys.stdout)
    print(format_preview(preview(specs[0][1], table.rows, n=args.rows)))
    return 0
