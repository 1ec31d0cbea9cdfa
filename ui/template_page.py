"""Step 2: pick a built-in template that fits the columns, or write one; live preview; inline errors."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ia3app.errors import UserError
from ia3app.templates.column_refs import column_ref
from ia3app.templates.rendering import preview, validate
from ia3app.templates.spec import TemplateSpec
from ui.context import AppContext
from ui.shared import DataChoice, Shared

FIXED = "Fixed answers (same for every row)"
PER_ROW = "Per-row answers (from columns, e.g. {{choice1}})"
CUSTOM = "(write my own)"
NEW_NAME = "my-template"
"""The name a template written from scratch gets (never the name of the built-in it started from)."""
_LABELLED_CHOICE = re.compile(r"([A-Za-z0-9_.-]+)\s*=\s*(\S.*)")
"""A per-row answer line `1 = {{option1}}`: the label value naming this answer, then its template."""


def _per_row_lines(lines: list[str]) -> tuple[list[str], list[str] | None]:
    """Per-row answer lines -> (templates, label values naming them or None for 0-based indexes)."""
    matches = [_LABELLED_CHOICE.fullmatch(ln) for ln in lines]
    if not any(matches):
        return lines, None
    if not all(matches):
        raise UserError("give every per-row answer line a label value (`1 = {{option1}}`), or none of them "
                        "(then the label is the answer's position counting from 0)")
    return [m.group(2).strip() for m in matches], [m.group(1) for m in matches]


def spec_from_fields(name: str, input_text: str, mode: str, choices_text: str, label_map_text: str,
                     choice_templates_text: str, label_column: str, chat: bool = False) -> TemplateSpec:
    """The editor's fields → TemplateSpec. Label map lines read `label value = answer`."""
    lines = lambda text: [ln.strip() for ln in (text or "").splitlines() if ln.strip()]  # noqa: E731
    if not (input_text or "").strip():
        raise UserError("the input template is empty: write what the model reads, e.g. {{sentence}} Is it good?")
    if mode == PER_ROW:
        templates, labels = _per_row_lines(lines(choice_templates_text))
        return TemplateSpec(name=name or NEW_NAME, input=input_text, label_column=label_column,
                            choice_templates=templates, choice_labels=labels, chat=bool(chat))
    label_map = None
    pairs = lines(label_map_text)
    if pairs:
        label_map = {}
        for ln in pairs:
            if "=" not in ln:
                raise UserError(f"label map line '{ln}' needs the form `label value = answer`")
            key, value = (part.strip() for part in ln.split("=", 1))
            label_map[key] = value
    return TemplateSpec(name=name or NEW_NAME, input=input_text, label_column=label_column,
                        choices=lines(choices_text), label_map=label_map, chat=bool(chat))


def held_out_words(session: DataChoice) -> str:
    """The automatic split as the data page counted it ('8 held out'), not only its share: with 2 rows a
    25 % share holds out none, and the pages disagreed ('0 held out' and '25 % held out', issue 23)."""
    count = session.held_out
    share = f"{session.holdout.fraction:.0%} share"
    if count is None:
        return f"{share} of the rows held out"
    if count == 0:
        return f"0 held out: too few rows per label for the {share}, so nothing is measured"
    return f"{count} held out ({share})"


def fields_from_spec(spec: TemplateSpec) -> tuple[str, str, str, str, str]:
    """TemplateSpec → (input, mode, choices, label map, choice templates) for the editor."""
    if spec.per_row:
        templates = spec.choice_templates or []
        if spec.choice_labels:
            templates = [f"{label} = {t}" for label, t in zip(spec.choice_labels, templates)]
        return spec.input, PER_ROW, "", "", "\n".join(templates)
    label_map = "\n".join(f"{k} = {v}" for k, v in (spec.label_map or {}).items())
    return spec.input, FIXED, "\n".join(spec.choices or []), label_map, ""


def preview_html(items: list[dict[str, Any]]) -> str:
    """Rendered rows as cards; the correct answer is marked ✓. Every user text is escaped."""
    cards = []
    for item in items:
        choices = "".join(
            f'<li class="{"correct" if i == item["label"] else ""}">'
            f'{"✓ " if i == item["label"] else ""}{html.escape(c)}</li>'
            for i, c in enumerate(item["choices"])
        )
        cards.append(
            f'<div class="ia3-card"><div class="ia3-row">row {item["row"]}</div>'
            f'<pre class="ia3-input">{html.escape(item["input"])}</pre>'
            '<div class="ia3-choices-label">answer choices (✓ = correct):</div>'
            f'<ul class="ia3-choices">{choices}</ul></div>'
        )
    return "".join(cards) or "<p>No rows to preview.</p>"


def check_template(rows: list[dict], columns: list[str], label_column: str, name: str, input_text: str, mode: str,
                   choices_text: str, label_map_text: str, choice_templates_text: str,
                   inputs: list[str] | None = None, chat: bool = False) -> tuple[str, str, TemplateSpec | None]:
    """Validate the editor's template against the data: (message markdown, preview html, the spec or None).
    inputs: the columns ticked on the data page; one the template leaves out draws a warning."""
    try:
        spec = spec_from_fields(name, input_text, mode, choices_text, label_map_text, choice_templates_text,
                                label_column, chat)
        warnings = validate(spec, columns, rows, inputs=inputs)
        items = preview(spec, rows, n=4)
    except UserError as e:
        return f"✗ **This template does not work yet:** {e}", "", None
    notes = "".join(f"\n- ⚠ {w}" for w in warnings)
    return f"✓ The template fits all {len(rows)} rows.{notes}", preview_html(items), spec


def shape_text(session: DataChoice | None) -> str:
    """What the data page's ticked columns look like as a task, in words, for the top of this page."""
    from ia3app.templates.task_shapes import detect_shape

    if session is None or not session.text_columns:
        return ""
    shape = detect_shape(session.text_columns, session.label_values)
    return f"**Your data:** {shape.description}; label column `{session.label_column}`."


def insert_column(input_text: str | None, column: str | None) -> str:
    """The input template with a column reference added at the end (the click-to-insert choices)."""
    text = input_text or ""
    if not column:
        return text
    sep = "" if not text or text.endswith((" ", "\n")) else " "
    return text + sep + column_ref(column)


def fitting_templates(columns: list[str], label_values: list[str], label_column: str) -> dict[str, TemplateSpec]:
    """Built-ins that fit these columns and labels, by name, most specific first."""
    from ia3app.templates.task_shapes import templates_fitting

    return {name: spec for name, spec in templates_fitting(columns, label_values, label_column)}


@dataclass
class TemplatePage:
    shape: gr.Markdown
    insert: gr.Radio
    builtin: gr.Dropdown
    name: gr.Textbox
    input: gr.Textbox
    mode: gr.Radio
    choices: gr.Textbox
    label_map: gr.Textbox
    choice_templates: gr.Textbox
    chat: gr.Checkbox
    message: gr.Markdown
    preview: gr.HTML
    next: gr.Button
    also: gr.CheckboxGroup
    """More built-ins to train with: T-Few renders each example with a random one of the templates per step."""

    @property
    def editor(self) -> list:
        return [self.name, self.input, self.mode, self.choices, self.label_map, self.choice_templates, self.chat]

    @property
    def suggested(self) -> list:
        """What suggest() fills: the built-in list, the data's shape, the column choices and the editor."""
        return [self.builtin, self.shape, self.insert, *self.editor, self.also]


def build_template_page() -> TemplatePage:
    gr.Markdown(
        "### Step 2 — how the model reads each row\n"
        "A template turns a row into a question for the model and lists the possible answers. The model "
        "learns to pick the right answer. Start from a built-in that fits your columns, or edit freely: "
        "write column names in double braces, like `{{sentence}}`."
    )
    shape = gr.Markdown()
    with gr.Row():
        builtin = gr.Dropdown(label="Built-in templates that fit your columns", choices=[CUSTOM], value=CUSTOM,
                              scale=2)
        name = gr.Textbox(label="Template name", value="custom", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            input_text = gr.Textbox(label="Input template (what the model reads)", lines=4,
                                    placeholder="{{sentence}}\nIs this review positive or negative?")
            insert = gr.Radio([], value=None, label="Click a column to add it to the input template",
                              interactive=True)
            mode = gr.Radio([FIXED, PER_ROW], value=FIXED, label="Answer choices")
            with gr.Row():
                choices = gr.Textbox(label="Answers, one per line", lines=3, placeholder="negative\npositive")
                label_map = gr.Textbox(label="Label value = answer, one per line (blank: labels are the answers)",
                                       lines=3, placeholder="0 = negative\n1 = positive")
            choice_templates = gr.Textbox(label="Per-row answers, one per line: `label value = {{column}}` "
                                          "(without label values, the label is the answer's position from 0)",
                                          lines=2, placeholder="1 = {{option1}}\n2 = {{option2}}", visible=False)
            chat = gr.Checkbox(value=True, label="Wrap each prompt in the model's chat template, as instruct models "
                               "expect (SmolLM2-Instruct: zero-shot SST-2 0.44 → 0.72 wrapped); no effect on "
                               "models without one (T0, T5, the tiny demo)")
        with gr.Column(scale=2):
            message = gr.Markdown()
            gr.Markdown("**Preview of the first rows**")
            preview_box = gr.HTML()
    also = gr.CheckboxGroup([], label="Also train with these templates (optional: as in T-Few, each example is "
                            "shown with a randomly drawn one of the ticked templates and yours at every step; "
                            "evaluation and predictions use yours)", visible=False)
    nxt = gr.Button("Use this template and continue to training →", variant="primary", interactive=False)
    mode.change(lambda m: (gr.update(visible=m == FIXED), gr.update(visible=m == FIXED),
                           gr.update(visible=m == PER_ROW)), mode, [choices, label_map, choice_templates],
                api_visibility="private")
    return TemplatePage(shape, insert, builtin, name, input_text, mode, choices, label_map, choice_templates,
                        chat, message, preview_box, nxt, also)


def editor_values(page: TemplatePage, spec: TemplateSpec | None) -> dict:
    values = (spec.name, *fields_from_spec(spec), spec.chat) if spec else (NEW_NAME, "", FIXED, "", "", "", True)
    return dict(zip(page.editor, values))


def _fitting(session: DataChoice) -> dict[str, TemplateSpec]:
    return fitting_templates(session.text_columns + [session.label_column], session.label_values,
                             session.label_column)


def suggest(page: TemplatePage, state: DataChoice) -> tuple[list[str], dict]:
    """For freshly saved data: (names of the built-ins that fit, the page's updates: the list of those
    built-ins and the editor filled with the best one)."""
    fitting = _fitting(state)
    names = list(fitting)
    first = fitting[names[0]] if names else None
    return names, {page.builtin: gr.update(choices=names + [CUSTOM], value=names[0] if names else CUSTOM),
                   page.shape: shape_text(state),
                   page.insert: gr.update(choices=list(state.text_columns), value=None),
                   **editor_values(page, first), **_also_choices(page, names, names[0] if names else None)}



def prefilled(page: TemplatePage, session: DataChoice, spec: TemplateSpec, extra: list[str]) -> dict:
    """The page showing a prior job's template (Run again with changes): the built-ins that fit its data, the
    editor filled with its template, its extra training templates ticked. Fills the components of `suggested`."""
    names, suggested = suggest(page, session)
    return {**suggested,
            page.builtin: gr.update(choices=names + [CUSTOM], value=spec.name if spec.name in names else CUSTOM),
            **editor_values(page, spec),
            page.also: gr.update(choices=[n for n in names if n != spec.name], value=extra, visible=len(names) > 1)}


def _also_choices(page: TemplatePage, names: list[str], chosen: str | None) -> dict:
    others = [n for n in names if n != chosen]
    return {page.also: gr.update(choices=others, value=[], visible=bool(others))}


def train_templates(session: DataChoice | None, ticked: list[str] | None,
                    primary: TemplateSpec | None) -> list[TemplateSpec]:
    """The ticked built-ins (those that still fit the saved data, not the primary itself)."""
    if session is None or not ticked:
        return []
    fitting = _fitting(session)
    chosen = primary.name if primary is not None else None
    return [fitting[n] for n in ticked if n in fitting and n != chosen]


def wire_template_page(page: TemplatePage, ctx: AppContext, shared: Shared, saved, train_summary: gr.Markdown) -> None:
    """The page's own events. `saved` is the data page's Save event: the editor it filled is checked after it.
    Next goes to the train page and writes what will be trained in its `train_summary`."""

    def on_builtin(session, name, current_name):
        from ia3app.templates.library import BUILTINS

        if name == CUSTOM:  # a template of one's own gets its own name, not the built-in's it started from
            return {page.name: NEW_NAME} if not current_name or current_name in BUILTINS else gr.skip()
        if session is None:
            return gr.skip()
        fitting = _fitting(session)
        spec = fitting.get(name)
        return gr.skip() if spec is None else {**editor_values(page, spec), **_also_choices(page, list(fitting), name)}

    filled = page.builtin.input(on_builtin, [shared.session, page.builtin, page.name], [*page.editor, page.also],
                                api_visibility="private")
    page.also.change(train_templates, [shared.session, page.also, shared.template], shared.train_templates,
                     api_visibility="private")

    def on_insert(input_text, column):
        return {page.input: insert_column(input_text, column), page.insert: gr.update(value=None)}

    page.insert.input(on_insert, [page.input, page.insert], [page.input, page.insert], api_visibility="private")

    def on_edit(session, name, input_text, mode, choices, label_map, choice_templates, chat, request: gr.Request):
        refused = {page.preview: "", shared.template: None, page.next: gr.update(interactive=False)}
        if session is None:
            return {**refused, page.message: "Upload your data first (step 1)."}
        from storage import repo

        try:
            rows = repo.load_rows(ctx.db(), ctx.files(), session.dataset_id, ctx.user_id(request))
        except UserError as e:
            return {**refused, page.message: f"✗ {e}"}
        message, preview_box, spec = check_template(rows, session.columns, session.label_column, name,
                                                    input_text, mode, choices, label_map, choice_templates,
                                                    inputs=session.text_columns, chat=chat)
        return {page.message: message, page.preview: preview_box, shared.template: spec,
                page.next: gr.update(interactive=spec is not None)}

    # One listener for every field's change, always_last: a fill changes the fields one by one, and the
    # run that counts is the last one, which reads the editor once it is whole (not a half-filled template).
    outputs = [page.message, page.preview, shared.template, page.next]
    for event in (saved, filled):
        event.then(on_edit, [shared.session, *page.editor], outputs, api_visibility="private")
    gr.on([comp.change for comp in page.editor], on_edit, [shared.session, *page.editor], outputs,
          api_visibility="private", trigger_mode="always_last")

    def on_next(session: DataChoice | None, spec: TemplateSpec | None, extra: list[TemplateSpec]):
        if spec is None or session is None:
            return gr.skip()
        more = f" + {len(extra)} more for training ({', '.join(t.name for t in extra)})" if extra else ""
        held = ("a separate held-out file" if session.eval_dataset_id else
                held_out_words(session) if session.holdout else "no evaluation")
        return {shared.tabs: gr.Tabs(selected="train"),
                train_summary: f"Data: **{session.filename}** ({session.rows} rows; {held}) · "
                               f"template **{spec.name}**{more}"}

    page.next.click(on_next, [shared.session, shared.template, shared.train_templates], [shared.tabs, train_summary],
                    api_visibility="private")
