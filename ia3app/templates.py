"""Prompt templates: turn a data row (column -> text) into an Example (input, answer choices, label).

A template is data (`TemplateSpec`, JSON-able), rendered with Jinja2 in an immutable sandbox with
strict undefined variables, so a user's template can neither reach Python internals nor silently
print nothing for a misspelt column. Two kinds of answer choices:

- fixed: `choices` (e.g. ["negative", "positive"]) and an optional `label_map` from the label
  column's values to choice texts (absent: the label values *are* the choice texts);
- per row: `choice_templates` (e.g. ["{{choice1}}", "{{choice2}}"]), the label being the 0-based
  index of the correct one (as in COPA).

Promptsource templates ("input ||| target" + "a ||| b" answer choices) import to the same spec; their
`target` is rendered per row and matched against the choices. Rows are numbered from 1 after the
header, as a person counts them in a spreadsheet below the column names.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import jinja2
import jinja2.meta
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ia3app.errors import UserError
from ia3app.example import Example

MAX_SOURCE_CHARS = 8_000
"""Longest template source accepted."""
MAX_INPUT_CHARS = 20_000
"""Longest rendered input; longer is refused (the model keeps max_length tokens anyway)."""
MAX_CHOICE_CHARS = 2_000
"""Longest rendered answer choice."""
MAX_RANGE = 1_000
"""Largest range() a template may build."""
MAX_RENDER_SECONDS = 2.0
"""Longest a template may spend rendering one row (checked as it produces text)."""
MAX_LISTED = 8
"""Rows or values named in one message before '... and N more'."""
RESERVED = frozenset({"answer_choices"})
"""Names the renderer provides itself (not columns)."""


class _Codegen(CodeGenerator):
    """Compiles `a ~ b` to a size-checked join, so chained concatenation cannot build a huge string."""

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Any) -> None:
        self.write("environment.checked_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, minus the globals nobody needs, with every way we know to build a huge
    string (repetition, powers, %-widths, padding methods, replace, ~ chains) size-checked."""

    code_generator_class = _Codegen
    intercepted_binops = frozenset({"*", "**", "%"})

    def wrap_str_format(self, value: Any) -> None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
            "format",
            "format_map",
        ):
            raise SecurityError("str.format is not offered (arbitrary widths); use {{ }} and ~")
        return None

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 100:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_INPUT_CHARS:
                    raise SecurityError("repetition too large")
        if operator == "%" and isinstance(left, str):
            specs = re.findall(r"%[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?", left)
            if any(x == "*" or (x and int(x) > MAX_CHOICE_CHARS) for spec in specs for x in spec):
                raise SecurityError("format width too large")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        name = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str) and name in _WIDTH_METHODS | {"replace"}:
            _check_growth(__obj.__self__, name, args)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def checked_concat(parts: Iterable[Any]) -> str:
        text = "".join(str(p) for p in parts)
        if len(text) > MAX_INPUT_CHARS:
            raise SecurityError("concatenation too large")
        return text


def _check_growth(text: str, method: str, args: tuple) -> None:
    if method == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(text) + 1 if old == "" else text.count(old)
        size = len(text) + count * len(new)
    else:
        size = max([a for a in args if isinstance(a, int)] or [0]) * (8 if method == "expandtabs" else 1)
    if size > MAX_INPUT_CHARS:
        raise SecurityError(f"{method}() result too large")


def _replace_filter(s: Any, old: str, new: str, count: int | None = None) -> str:
    _check_growth(str(s), "replace", (old, new))
    return str(s).replace(old, new, -1 if count is None else count)


def _small_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SecurityError(f"range longer than {MAX_RANGE}")
    return rng


def _environment() -> jinja2.Environment:
    env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals.clear()  # drop lipsum, cycler, joiner, namespace: callables a prompt has no use for
    env.globals["range"] = _small_range
    for name in ("center", "indent", "wordwrap", "format", "xmlattr", "urlize", "pprint", "attr", "map"):
        env.filters.pop(name, None)  # size-argument and attribute-by-name filters
    env.filters["replace"] = _replace_filter
    return env


_ENV = _environment()


@dataclass
class TemplateSpec:
    """A prompt template: how a row becomes an input text and which answers the model chooses among."""

    name: str
    input: str
    """Jinja text of the model's input, e.g. "{{sentence}}\\nIs this review positive or negative?"."""
    label_column: str = "label"
    """Column holding each row's gold answer (a label value, or an index for per-row choices)."""
    description: str = ""
    choices: list[str] | None = None
    """Fixed answer choices, in order."""
    label_map: dict[str, str] | None = None
    """Label value -> choice text (fixed choices only). Absent: the label values are the choice texts."""
    choice_templates: list[str] | None = None
    """Per-row answer choices as Jinja texts; the label is the 0-based index of the correct one."""
    target: str | None = None
    """Promptsource-style Jinja target rendering the correct choice's text (overrides label lookup)."""
    label_names: list[str] | None = None
    """Label values in class-index order: the template sees a label value as its index (promptsource)."""
    integer_values: bool = False
    """Show integer-looking cells to the template as ints, as promptsource's datasets do."""

    def __post_init__(self) -> None:
        problems = []
        if (self.choices is None) == (self.choice_templates is None):
            problems.append("give either fixed 'choices' or per-row 'choice_templates', not both or neither")
        if self.label_map is not None and self.choices is None:
            problems.append("'label_map' applies to fixed choices only")
        for field_name in ("name", "input", "label_column"):
            if not isinstance(getattr(self, field_name), str):
                problems.append(f"'{field_name}' must be text")
        if problems:
            raise UserError(f"template '{self.name}' is malformed: " + "; ".join(problems))
        self.choices = None if self.choices is None else [str(c) for c in self.choices]
        self.choice_templates = None if self.choice_templates is None else [str(c) for c in self.choice_templates]
        if self.label_map is not None:
            self.label_map = {str(k): str(v) for k, v in self.label_map.items()}

    @property
    def per_row(self) -> bool:
        return self.choice_templates is not None

    def sources(self) -> dict[str, str]:
        """Every Jinja text of the spec, by a name a person recognises in a message."""
        out = {"input template": self.input}
        for i, text in enumerate(self.choice_templates or []):
            out[f"answer choice {i + 1} template"] = text
        if self.target is not None:
            out["target template"] = self.target
        return out

    def columns_used(self) -> set[str]:
        """Columns the templates read (from the Jinja AST), not counting the label column."""
        used: set[str] = set()
        for what, text in self.sources().items():
            used |= jinja2.meta.find_undeclared_variables(_parse(text, what))
        return used - RESERVED

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TemplateSpec":
        if not isinstance(data, dict):
            raise UserError("a template must be a JSON object with 'name', 'input' and 'choices' or 'choice_templates'")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown template field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        missing = [k for k in ("name", "input") if k not in data]
        if missing:
            raise UserError(f"template is missing {', '.join(repr(m) for m in missing)}")
        return cls(**data)


# ---------------------------------------------------------------- rendering


def _parse(text: str, what: str) -> jinja2.nodes.Template:
    if len(text) > MAX_SOURCE_CHARS:
        raise UserError(f"{what} is {len(text):,} characters long; the limit is {MAX_SOURCE_CHARS:,}")
    try:
        return _ENV.parse(text)
    except TemplateSyntaxError as e:
        raise UserError(f"{what} has a syntax error on line {e.lineno}: {e.message}") from None


_COMPILED: dict[str, jinja2.Template] = {}


def _compiled(text: str, what: str) -> jinja2.Template:
    if text not in _COMPILED:
        _parse(text, what)  # size check and a line-numbered syntax message
        if len(_COMPILED) > 512:
            _COMPILED.clear()
        try:
            _COMPILED[text] = _ENV.from_string(text)
        except TemplateSyntaxError as e:  # e.g. a filter the sandbox does not offer
            raise UserError(f"{what} is refused on line {e.lineno}: {e.message}") from None
    return _COMPILED[text]


def _render_text(text: str, what: str, context: dict[str, Any], limit: int) -> str:
    template = _compiled(text, what)
    parts: list[str] = []
    size = 0
    deadline = time.monotonic() + MAX_RENDER_SECONDS
    try:
        for chunk in template.generate(context):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UserError(f"{what} renders to more than {limit:,} characters; shorten it")
            if time.monotonic() > deadline:
                raise UserError(f"{what} takes more than {MAX_RENDER_SECONDS} s to render one row; simplify it")
    except SecurityError as e:
        raise UserError(f"template refused: {what} tries something a prompt may not do ({e})") from None
    except UndefinedError as e:
        raise UserError(f"{what} could not be rendered: {e.message}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, jinja2.TemplateError) as e:
        raise UserError(f"{what} could not be rendered: {e}") from None
    return "".join(parts).strip()


def _context(spec: TemplateSpec, row: dict[str, Any]) -> dict[str, Any]:
    context: dict[str, Any] = {k: ("" if v is None else v) for k, v in row.items()}
    if spec.integer_values:
        for k, v in context.items():
            if isinstance(v, str) and re.fullmatch(r"-?[1-9][0-9]{0,17}|0", v.strip()):
                context[k] = int(v)
    if spec.label_names is not None:
        value = _label_value(row, spec.label_column)
        if value is not None and value in spec.label_names:
            context[spec.label_column] = spec.label_names.index(value)
    return context


def _label_value(row: dict[str, Any], column: str) -> str | None:
    value = row.get(column)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def render_choices(spec: TemplateSpec, row: dict[str, Any]) -> list[str]:
    if not spec.per_row:
        return list(spec.choices or [])
    context = _context(spec, row)
    return [
        _render_text(text, f"answer choice {i + 1} template", context, MAX_CHOICE_CHARS)
        for i, text in enumerate(spec.choice_templates or [])
    ]


def lookup_label(spec: TemplateSpec, row: dict[str, Any], choices: list[str]) -> int | None:
    """Index of the row's correct choice; None when the row has no label. UserError when it fits none."""
    value = _label_value(row, spec.label_column)
    if value is None:
        return None
    if spec.target is not None:
        context = _context(spec, row) | {"answer_choices": choices}
        text = _render_text(spec.target, "target template", context, MAX_CHOICE_CHARS)
        matches = [i for i, c in enumerate(choices) if _norm(c) == _norm(text)]
        if not matches:
            raise UserError(f"the target '{text}' is not one of the answer choices: {_quoted(choices)}")
        return matches[0]
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
    """One row -> Example. UserError (naming the problem) when the row cannot become one."""
    choices = render_choices(spec, row)
    context = _context(spec, row) | {"answer_choices": choices}
    text = _render_text(spec.input, "input template", context, MAX_INPUT_CHARS)
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


def _rows_text(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:MAX_LISTED])
    more = len(numbers) - MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


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
    spec: TemplateSpec, columns: list[str], rows: list[dict[str, Any]], *, require_labels: bool = True
) -> list[str]:
    """Check a template against a file's columns and rows. Returns warnings; raises ONE UserError listing
    every problem (missing columns, unmapped labels, empty inputs, colliding or too few choices, syntax)."""
    problems: list[str] = []
    warnings: list[str] = []
    try:
        used = spec.columns_used()
    except UserError as e:
        raise UserError(f"template '{spec.name}': {e}") from None
    listing = ", ".join(columns) if columns else "(no columns)"
    for col in sorted(used - set(columns)):
        problems.append(f"column '{col}' used by the template is not in the file; the file has: {listing}")
    if require_labels and spec.label_column not in columns:
        problems.append(f"label column '{spec.label_column}' is not in the file; the file has: {listing}")
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
    empty_choice: list[int] = []
    unmapped: dict[str, list[int]] = {}
    failed: dict[str, list[int]] = {}
    labelled = 0
    for n, row in enumerate(rows, start=1):
        try:
            choices = render_choices(spec, row)
            context = _context(spec, row) | {"answer_choices": choices}
            text = _render_text(spec.input, "input template", context, MAX_INPUT_CHARS)
        except UserError as e:
            failed.setdefault(str(e), []).append(n)
            continue
        if not text:
            empty.append(n)
        if spec.per_row and [c for c in choices if not c]:
            empty_choice.append(n)
        if spec.per_row and _duplicates(choices):
            collide.append(n)
        try:
            label = lookup_label(spec, row, choices)
            labelled += label is not None
        except UserError as e:
            key = _label_value(row, spec.label_column) or ""
            if spec.per_row or spec.target is not None:
                failed.setdefault(str(e), []).append(n)
            else:
                unmapped.setdefault(key, []).append(n)
    for message, numbers in failed.items():
        problems.append(f"{message} (row{'s' if len(numbers) > 1 else ''} {_rows_text(numbers)})")
    if unmapped:
        hint = " (add a label_map from label values to choices)" if spec.label_map is None else " (add them to label_map)"
        problems.append(
            f"label value(s) {_quoted(sorted(unmapped)[:MAX_LISTED])} have no answer choice; "
            f"the choices are {_quoted(spec.choices or [])}{hint}"
        )
    if empty:
        problems.append(f"the input renders to empty text in row{'s' if len(empty) > 1 else ''} {_rows_text(empty)}")
    if empty_choice:
        problems.append(f"an answer choice renders to empty text in rows {_rows_text(empty_choice)}")
    if collide:
        problems.append(f"answer choices collide (two identical choices) in rows {_rows_text(collide)}")
    if problems:
        raise UserError(f"template '{spec.name}' does not fit this data: " + "; ".join(problems))
    if not rows:
        warnings.append("no rows to check the template against")
    elif require_labels and labelled == 0:
        warnings.append(f"no row has a label in column '{spec.label_column}'")
    if not spec.per_row and spec.label_map and rows:
        seen = {_label_value(r, spec.label_column) for r in rows}
        unused = [c for c in spec.choices or [] if c not in {_map_label(spec, v) for v in seen if v}]
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


# ---------------------------------------------------------------- promptsource import


def from_promptsource(
    source: str | dict[str, Any],
    *,
    name: str | None = None,
    label_column: str = "label",
    label_names: list[str] | None = None,
) -> TemplateSpec:
    """A promptsource template -> TemplateSpec.

    `source`: a dict with `jinja` ("input ||| target") and `answer_choices` ("a ||| b", may use Jinja such
    as "{{choice1}} ||| {{choice2}}"), or YAML text of one template or of a promptsource templates.yaml
    (pick one with `name`). Cells that look like integers reach the template as ints, as in the HF datasets
    promptsource was written for; `label_names` (class names in index order) turns a text label such as
    'entailment' into its index, so "{{ answer_choices[label] }}" works on a CSV of label names.
    """
    data = _promptsource_dict(source, name)
    jinja = data.get("jinja")
    if not isinstance(jinja, str) or "|||" not in jinja:
        raise UserError("a promptsource template needs 'jinja' of the form \"input ||| target\"")
    parts = jinja.split("|||")
    if len(parts) != 2:
        raise UserError(f"promptsource 'jinja' must contain '|||' exactly once; it has {len(parts) - 1}")
    input_text, target = (p.strip() for p in parts)
    for what, text in (("input (before |||)", input_text), ("target (after |||)", target)):
        try:
            _ENV.parse(text)
        except TemplateSyntaxError as e:
            raise UserError(
                f"promptsource {what} has a syntax error on line {e.lineno}: {e.message} "
                "('|||' inside a {% %} block is not supported)"
            ) from None
    answer = data.get("answer_choices")
    if not isinstance(answer, str) or not answer.strip():
        raise UserError("this promptsource template has no 'answer_choices'; rank classification needs them")
    options = [a.strip() for a in answer.split("|||")]
    dynamic = any("{{" in a or "{%" in a for a in options)
    return TemplateSpec(
        name=str(data.get("name") or name or "promptsource"),
        description=f"imported from promptsource{' (' + str(data['name']) + ')' if data.get('name') else ''}",
        input=input_text,
        label_column=label_column,
        choices=None if dynamic else options,
        choice_templates=options if dynamic else None,
        target=target,
        label_names=label_names,
        integer_values=True,
    )


def _promptsource_dict(source: str | dict[str, Any], name: str | None) -> dict[str, Any]:
    if isinstance(source, dict):
        data: Any = source
    else:
        import yaml  # PyYAML, pinned in requirements.txt

        class _Loader(yaml.SafeLoader):
            pass

        # promptsource tags its mappings (!Template, !TemplateMetadata); read them as plain mappings
        _Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_mapping(node, deep=True))
        try:
            data = yaml.load(source, Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
        except yaml.YAMLError as e:
            raise UserError(f"the promptsource template is not valid YAML: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("templates"), dict):
        found = list(data["templates"].values())
        names = [str(t.get("name")) for t in found if isinstance(t, dict)]
        if name is not None:
            found = [t for t in found if isinstance(t, dict) and t.get("name") == name]
            if not found:
                raise UserError(f"no promptsource template named '{name}'; the file has: {', '.join(names)}")
        elif len(found) > 1:
            raise UserError(f"the file holds {len(found)} templates; pick one by name: {', '.join(names)}")
        data = found[0] if found else None
    if not isinstance(data, dict):
        raise UserError("a promptsource template must be a mapping with 'jinja' and 'answer_choices'")
    return data
