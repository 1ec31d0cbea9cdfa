"""Import of promptsource templates (the format T0 and T-Few were trained and evaluated with).

A promptsource template is `jinja: "input ||| target"` plus `answer_choices: "a ||| b"` (which may
itself use Jinja, e.g. "{{choice1}} ||| {{choice2}}"). It becomes a TemplateSpec whose `target` is
rendered per row and matched against the choices.
"""

from __future__ import annotations

from typing import Any

from jinja2.exceptions import TemplateSyntaxError

from ia3app.errors import UserError
from ia3app.templates.sandbox import ENV
from ia3app.templates.spec import TemplateSpec


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
            ENV.parse(text)
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
