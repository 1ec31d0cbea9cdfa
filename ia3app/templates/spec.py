"""Prompt templates: turn a data row (column -> text) into an Example (input, answer choices, label).

A template is data (`TemplateSpec`, JSON-able), rendered with Jinja2 in an immutable sandbox with
strict undefined variables, so a user's template can neither reach Python internals nor silently
print nothing for a misspelt column. Two kinds of answer choices:

- fixed: `choices` (e.g. ["negative", "positive"]) and an optional `label_map` from the label
  column's values to choice texts (absent: the label values *are* the choice texts);
- per row: `choice_templates` (e.g. ["{{choice1}}", "{{choice2}}"]), the label being the 0-based
  index of the correct one (as in COPA), or the value in `choice_labels` naming it (e.g. "1"/"2",
  "A"/"B").

Promptsource templates ("input ||| target" + "a ||| b" answer choices) import to the same spec; their
`target` is rendered per row and matched against the choices. Rows are numbered from 1 after the
header, as a person counts them in a spreadsheet below the column names.

The spec is defined here; rows are rendered and checked in ia3app.templates.rendering, and column
references written in ia3app.templates.column_refs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jinja2.meta

from ia3app.config import check_keys
from ia3app.errors import UserError
from ia3app.templates.column_refs import RESERVED, row_columns
from ia3app.templates.rendering import checked_examples  # noqa: F401  (ia3app.recipe.run_job imports it from here)
from ia3app.templates.sandbox import parse


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
    choice_labels: list[str] | None = None
    """Per-row choices: the label value naming each choice, in order (e.g. ["1", "2"]); absent: 0, 1, ..."""
    chat: bool = False
    """Wrap the input in the model's chat template (one user turn; the answer is the assistant's reply)
    when the model has one, as instruct models are used: zero-shot, in-context and T-Few alike. No
    effect on models without a chat template (T0, T5, the tiny demo models). The built-ins turn it on."""

    def __post_init__(self) -> None:
        problems = []
        if (self.choices is None) == (self.choice_templates is None):
            problems.append("give either fixed 'choices' or per-row 'choice_templates', not both or neither")
        if self.label_map is not None and self.choices is None:
            problems.append("'label_map' applies to fixed choices only")
        if self.choice_labels is not None and self.choice_templates is None:
            problems.append("'choice_labels' applies to per-row choices only")
        elif self.choice_labels is not None and len(self.choice_labels) != len(self.choice_templates or []):
            problems.append(f"'choice_labels' names {len(self.choice_labels)} choices but there are "
                            f"{len(self.choice_templates or [])} per-row answer templates")
        for field_name in ("name", "input", "label_column", "description"):
            if not isinstance(getattr(self, field_name), str):
                problems.append(f"'{field_name}' must be text")
        for field_name in ("choices", "choice_templates", "label_names", "choice_labels"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)):
                problems.append(f"'{field_name}' must be a list of texts")
        if self.label_map is not None and not isinstance(self.label_map, dict):
            problems.append("'label_map' must map label values to choice texts")
        for field_name in ("target",):
            if getattr(self, field_name) is not None and not isinstance(getattr(self, field_name), str):
                problems.append(f"'{field_name}' must be text")
        if not isinstance(self.chat, bool):
            problems.append("'chat' must be true or false")
        if problems:
            raise UserError(f"template '{self.name}' is malformed: " + "; ".join(problems))
        self.choices = None if self.choices is None else list(self.choices)
        self.choice_templates = None if self.choice_templates is None else list(self.choice_templates)
        self.label_names = None if self.label_names is None else list(self.label_names)
        self.choice_labels = None if self.choice_labels is None else [c.strip() for c in self.choice_labels]
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

    def columns_used(self, include_target: bool = True) -> set[str]:
        """Columns the templates read (from the Jinja AST); the label column only where a template reads it."""
        used: set[str] = set()
        for what, text in self.sources().items():
            if what == "target template" and not include_target:
                continue
            ast = parse(text, what)
            used |= (jinja2.meta.find_undeclared_variables(ast) - RESERVED) | row_columns(ast)
        return used

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v is not False}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TemplateSpec":
        if not isinstance(data, dict):
            raise UserError("a template must be a JSON object with 'name', 'input' and 'choices' or 'choice_templates'")
        check_keys(cls, data, "template field", required=("name", "input"))
        return cls(**data)
