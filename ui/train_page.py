"""Step 3: pick a model, adjust the recipe if you must (T-Few's defaults prefilled), start the job."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from ia3app.config import CHOICES, RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import EVAL_METHODS, JobLabels, JobRequest, JobSpec
from ia3app.templates.spec import TemplateSpec
from ui import model_picker as M
from ui import time_estimate as T_E
from ui.context import AppContext
from ui.shared import DataChoice, Fill, RunAgain, Shared

METHODS = list(EVAL_METHODS)
TFEW_MODEL = "bigscience/T0_3B"
HELP = {
    "steps": "Optimizer steps (T-Few: 1000)",
    "batch_size": "Examples per step (T-Few: 8)",
    "grad_accumulation": "Micro-batches per step (0: automatic, from free GPU memory)",
    "lr": "Learning rate (Adafactor; T-Few: 3e-3)",
    "weight_decay": "Weight decay",
    "warmup_ratio": "Warm-up fraction of the steps (T-Few: 0.06)",
    "warmup_steps": "Warm-up steps (empty: use the fraction)",
    "max_grad_norm": "Gradient clipping norm",
    "max_length": "Input tokens kept per example",
    "unlikelihood": "Unlikelihood loss on wrong answers (L_UL)",
    "length_norm": "Length-normalised loss (L_LN)",
    "precision": "Numeric precision (auto: bf16 on GPUs that support it, fp32 on CPU)",
    "compile": "Compile the model (auto: on GPUs)",
    "activation_checkpointing": "Activation checkpointing (auto: when memory is short)",
    "seed": "Random seed",
    "checkpoint_every": "Checkpoint every N steps (0: never)",
    "eval_batch_size": "Evaluation batch size",
}
RECIPE_FIELDS = [f.name for f in fields(RecipeConfig)]
OPTIONAL_INT = {"warmup_steps": "6 % of the steps"}  # empty means "not set" (None), not an error; the placeholder


def recipe_from_values(values: list[Any]) -> RecipeConfig:
    """The Advanced inputs, in RECIPE_FIELDS order → a validated RecipeConfig (UserError lists every problem)."""
    defaults = RecipeConfig()
    kwargs = {}
    for name, value in zip(RECIPE_FIELDS, values):
        default = getattr(defaults, name)
        if name in OPTIONAL_INT:
            if value is None or str(value).strip() == "":
                kwargs[name] = None
                continue
            default = 0  # a whole number when given
        if value is None or value == "":
            raise UserError(f"{HELP.get(name, name)} is empty; T-Few's default is {default}")
        if isinstance(default, bool):
            kwargs[name] = bool(value)
        elif isinstance(default, int):
            try:
                number = float(str(value).strip())
            except ValueError:
                number = None
            if number is None or number != int(number):
                raise UserError(f"{HELP.get(name, name)} must be a whole number (got {value})")
            kwargs[name] = int(number)
        elif isinstance(default, float):
            kwargs[name] = float(value)
        else:
            kwargs[name] = value
    try:
        return RecipeConfig(**kwargs)
    except UserError as e:
        raise UserError(plain_recipe_words(str(e))) from None


def plain_recipe_words(message: str) -> str:
    """A recipe refusal as this page shows it: each setting named by the label a person sees beside its box,
    not by its name in the code ('warmup_steps (60) exceeds steps (40)' -> '"Warm-up steps ..." (60) exceeds
    "Optimizer steps ..." (40)')."""
    names = "|".join(sorted(map(re.escape, HELP), key=len, reverse=True))
    # a name with an underscore is always a setting; a plain word ('steps') only where it reads as one
    message = re.sub(rf"\b({names})\b(?P<after> \(| must| is)?",
                     lambda m: f"“{HELP[m.group(1)]}”{m.group('after') or ''}" if "_" in m.group(1) or m.group("after")
                     else m.group(0), message)
    return message.replace("invalid recipe settings: ", "these training settings cannot run: ")


def tokens_per_example(rows: list[dict] | None, max_length: int) -> int:
    if not rows:
        return min(max_length, 128)
    chars = sum(sum(len(str(v)) for v in r.values()) for r in rows) / len(rows)
    return int(min(max_length, chars / 3 + 16))  # T5 sentencepiece ≈ 3-4 characters per token


def model_info(ctx: AppContext, key: str, local_path: str, steps: Any, batch_size: Any, max_length: Any,
               rows: list[dict] | None, hw: M.Hardware, **more) -> str:
    """Hardware, estimated training time, and a plain warning when a model cannot be used here."""
    notes, estimate, _ = info_and_pending(ctx, key, local_path, steps, batch_size, max_length, rows, hw, **more)
    return "\n\n".join(t for t in (notes, estimate) if t)


def info_and_pending(ctx: AppContext, key: str, local_path: str, steps: Any, batch_size: Any, max_length: Any,
                     rows: list[dict] | None, hw: M.Hardware, *, template: dict | None = None,
                     eval_rows: list[dict] | None = None, methods: list[str] | tuple = (),
                     wait: bool = False) -> tuple[str, str, bool]:
    """(the model notes as markdown, the time estimate shown beside Start, whether a worker's probe is still
    pending). Nothing trains here: when no step of this model was measured here yet, a worker is asked to
    time a few (ui.time_estimate); wait=True waits for it (polling) before estimating. rows: the training
    rows; eval_rows: the held-out rows `methods` are evaluated on."""
    notes, model_path, params = model_notes(ctx, key, local_path, hw)
    return (notes, *estimate_and_pending(ctx, key, model_path, params, steps, batch_size, max_length, rows, hw,
                                         template=template, eval_rows=eval_rows, methods=methods, wait=wait))


def model_notes(ctx: AppContext, key: str, local_path: str, hw: M.Hardware) -> tuple[str, str | None, float | None]:
    """(the model notes as markdown, the model's path or name when it can be used, its parameter count)."""
    lines = [f"**This machine:** {hw.name}" + (f", {hw.memory_gb:.0f} GB GPU memory" if hw.device == "cuda" else "")]
    choice = M.BY_KEY.get(key)
    reason = M.unusable_reason(key, local_path, ctx.allowed_model_dirs())
    if key == M.TINY:
        lines.append("The tiny demo model has **random weights**: training and the results pages work, but its "
                     "predictions mean nothing. Use it to try the app (fewer steps make a quicker try); pick a real "
                     "model for real use.")
    elif M.is_bundled(key):
        lines.append(("✗ Start is off: " + reason + ".") if reason else M.bundled_status(key, ctx.data_dir))
    elif key == M.LOCAL:
        if reason:
            lines.append(f"✗ Start is off: {reason}.")
    else:
        warning = M.hub_status(key)
        if reason:
            lines.append(f"✗ Start is off: {reason}.")
        elif warning:
            lines.append(f"⚠ {warning}")
        if choice and hw.device == "cuda" and choice.min_gpu_gb > hw.memory_gb:
            lines.append(f"⚠ {key} needs about {choice.min_gpu_gb:.0f} GB of GPU memory; this GPU has "
                         f"{hw.memory_gb:.0f} GB. Pick a smaller model or raise gradient accumulation.")
        if choice and hw.device == "cpu" and choice.min_gpu_gb >= 4:
            lines.append(f"⚠ There is no GPU here: {key} will train slowly on the CPU.")
    model_path = None
    if reason is None:
        try:
            model_path = M.resolve_model(key, local_path, ctx.data_dir, ctx.allowed_model_dirs())
        except UserError as e:
            lines.append(f"✗ {e}")
    params = choice.parameters if choice and choice.parameters else None
    if params is None and key == M.LOCAL and model_path:
        params = M.parameters_of(key, model_path)
    return "\n\n".join(lines), model_path, params


def estimate_and_pending(ctx: AppContext, key: str, model_path: str | None, params: float | None, steps: Any,
                         batch_size: Any, max_length: Any, rows: list[dict] | None, hw: M.Hardware, *,
                         template: TemplateSpec | None = None, eval_rows: list[dict] | None = None,
                         methods: list[str] | tuple = (), wait: bool = False) -> tuple[str, bool]:
    """(the estimate beside Start, whether a worker's probe is still pending): see info_and_pending."""
    try:
        recipe = RecipeConfig(steps=int(steps), batch_size=int(batch_size), max_length=int(max_length),
                              warmup_steps=0)
    except (TypeError, ValueError, UserError):
        return "", False
    guess = tokens_per_example(rows, recipe.max_length)
    data = dict(eval_rows=eval_rows, methods=[m for m in METHODS if m in (methods or ())])
    est = T_E.estimate(ctx, key, model_path, recipe, rows, template, params, guess, hw, **data)
    pending = est.pending
    if pending and wait:
        pending = not T_E.wait_for_probe(ctx, model_path, recipe)
        est = T_E.estimate(ctx, key, model_path, recipe, rows, template, params, guess, hw, **data, ask=False)
    if pending and T_E.probe_waited_s(ctx, model_path, recipe) > PROBE_PATIENCE_S:  # the rough guide meanwhile
        est = T_E.estimate(ctx, key, model_path, recipe, rows, template, params, guess, hw, **data, ask=False,
                           gave_up=True)
    return T_E.describe(est, recipe.steps) if est.seconds is not None or est.pending else "", pending


PROBE_PATIENCE_S = 120.0
"""A probe asked for longer ago than this (a worker busy with a job, or with another model's probe) is waited
for with the rough guide shown, saying so; the measured figure replaces it once the probe ends."""
ESTIMATE_POLL_S = 3.0
"""While a probe is pending, the page looks again this often (a timer: no request is held open meanwhile)."""


def cv_cost(session: DataChoice | None) -> str:
    """The cost of cross-validation, said before Start: k + 1 runs of the estimate above."""
    k = session.cv_folds if session is not None else None
    if not k:
        return ""
    return (f"\n\n**Cross-validation ({k} folds) trains {k + 1} times**: {k} runs to measure, one on every row "
            f"for the adapter — about {k + 1}× the time above.")


def build_job_config(ctx: AppContext, uid: int, session: DataChoice | None, template: TemplateSpec | None,
                     model_key: str, local_path: str, recipe: RecipeConfig, init_tfew: bool, tfew_path: str,
                     eval_methods: list[str], train_templates: list[TemplateSpec] | None = None) -> JobRequest:
    """Everything the worker needs, checked here so a mistake is shown now, not as a failed job."""
    from storage import repo

    if session is None:
        raise UserError("upload your data first (step 1)")
    if template is None:
        raise UserError("choose a template that fits your data first (step 2)")
    repo.require_dataset(ctx.db(), session.dataset_id, uid)
    if session.eval_dataset_id:
        repo.require_dataset(ctx.db(), session.eval_dataset_id, uid)
    init_vectors = None
    if init_tfew:
        if model_key != TFEW_MODEL:
            raise UserError("T-Few's pretrained (IA)³ vectors exist only for bigscience/T0_3B; untick the box or "
                            "pick that model")
        init_vectors = (tfew_path or "").strip() or None
        if init_vectors is None:
            raise UserError("give the path or URL of T-Few's t03b_ia3_finish.pt")
        from ia3app.adapters.vector_sources import check_source

        check_source(init_vectors, allowed_dirs=[ctx.data_dir])  # the release URL or a file in the data dir
    _check_template_on_files(ctx, uid, session, template)
    unusable = M.unusable_reason(model_key, local_path, ctx.allowed_model_dirs())
    if unusable:
        raise UserError(unusable)
    data = session.data_ref()
    if (data.has_eval or session.cv_folds) and not any(m in METHODS for m in eval_methods or []):
        raise UserError("tick at least one method under “Compare on the held-out rows” (T-Few at least): with none "
                        "ticked, rows would be held out of training and measured by nothing. To train on every row, "
                        "choose “No evaluation (train on every row)” on 1 · Data")
    main = template
    spec = JobSpec(model=M.resolve_model(model_key, local_path, ctx.data_dir, ctx.allowed_model_dirs()), template=main,
                   train_templates=[t for t in train_templates or [] if t.name != main.name],
                   recipe=recipe, init_vectors=init_vectors, cv_folds=session.cv_folds,
                   eval_methods=[m for m in METHODS if m in (eval_methods or [])]
                   if data.has_eval or session.cv_folds else [])
    more = f" + {len(spec.train_templates)} more for training" if spec.train_templates else ""
    labels = JobLabels(model=model_key if model_key != M.LOCAL else spec.model, data=session.filename,
                       template=main.name + more)
    return JobRequest(spec, data, labels)


def _check_template_on_files(ctx: AppContext, uid: int, session: DataChoice, template: TemplateSpec) -> None:
    """A sample of every file the job uses renders within the limits (ia3app.templates.precheck)."""
    from ia3app.templates.precheck import check_files
    from storage import repo

    files = {"the training file": repo.load_rows(ctx.db(), ctx.files(), session.dataset_id, uid)}
    if session.eval_dataset_id:
        files["the held-out file"] = repo.load_rows(ctx.db(), ctx.files(), session.eval_dataset_id, uid)
    check_files(template, files)


@dataclass
class TrainPage:
    summary: gr.Markdown
    model: gr.Dropdown
    local_path: gr.Textbox
    info: gr.Markdown
    recipe: list
    init_tfew: gr.Checkbox
    tfew_path: gr.Textbox
    eval_methods: gr.CheckboxGroup
    start: gr.Button
    message: gr.Markdown
    estimate: gr.Markdown
    """Beside Start and the step count: the measured time of the run and what it is based on."""
    estimate_timer: gr.Timer
    """Active while a worker's probe is pending: the estimate is looked at again."""


def build_train_page(ctx: AppContext, hw: M.Hardware) -> TrainPage:
    gr.Markdown("### Step 3 — train\nPick the model to adapt. T-Few trains only (IA)³ vectors — about 0.01% of "
                "the model's parameters — with the paper's recipe; the defaults need no changes.")
    summary = gr.Markdown("Upload data (step 1) and choose a template (step 2) first.")
    with gr.Row():
        with gr.Column(scale=3):
            offered = [c for c in M.CHOICES if c.key != M.LOCAL or ctx.allowed_model_dirs() != []]
            model = gr.Dropdown([(c.label, c.key) for c in offered], value=M.default_model(hw, M.can_load),
                                label="Model")
            local_path = gr.Textbox(label="Model folder on this machine", visible=False,
                                    placeholder="/models/my-t5")
            with gr.Row(visible=False) as tfew_row:
                init_tfew = gr.Checkbox(label="Start from T-Few's pretrained (IA)³ vectors (T0-3B only)", value=False)
                tfew_path = gr.Textbox(label="Path or URL of t03b_ia3_finish.pt",
                                       value=str(ctx.data_dir / "tfew" / "t03b_ia3_finish.pt"))
            eval_methods = gr.CheckboxGroup(METHODS, value=METHODS, label="Compare on the held-out rows")
        with gr.Column(scale=2):
            info = gr.Markdown()
    defaults = RecipeConfig()
    made = {}
    switches = [n for n in RECIPE_FIELDS if isinstance(getattr(defaults, n), bool)]
    with gr.Accordion("Advanced: T-Few recipe settings (prefilled with the paper's defaults)", open=False):
        with gr.Row(equal_height=True):
            for name in RECIPE_FIELDS:
                default = getattr(defaults, name)
                if name == "steps":  # beside Start (below), with what it costs in time
                    continue
                label = HELP.get(name, name)
                if name in switches:
                    continue
                elif name in CHOICES:
                    made[name] = gr.Dropdown(list(CHOICES[name]), value=default, label=label, min_width=160)
                elif name in OPTIONAL_INT:  # a Number box shows 0 when empty: a text box shows empty as empty
                    made[name] = gr.Textbox(label=label, value="", placeholder=OPTIONAL_INT[name], min_width=160,
                                            elem_id=f"recipe-{name}")
                elif isinstance(default, int):
                    made[name] = gr.Number(label=label, value=default, precision=0, minimum=0, min_width=160)
                else:
                    made[name] = gr.Number(label=label, value=default, minimum=0, min_width=160)
        with gr.Row():  # in their own row: squeezed among the number boxes, their words were cut off
            for name in switches:
                made[name] = gr.Checkbox(label=HELP.get(name, name), value=getattr(defaults, name),
                                         elem_id=f"recipe-{name}")
    with gr.Row(equal_height=True, elem_id="ia3-start-row"):
        made["steps"] = steps = gr.Number(label=HELP["steps"], value=defaults.steps, precision=0, minimum=1,
                                          min_width=160, scale=1, elem_id="ia3-steps")
        start = gr.Button("Start training", variant="primary", scale=1, min_width=160)
        estimate = gr.Markdown(elem_id="ia3-estimate")
    estimate_timer = gr.Timer(ESTIMATE_POLL_S, active=False)
    recipe = [made[name] for name in RECIPE_FIELDS]
    message = gr.Markdown()
    model.change(lambda k: (gr.update(visible=k == M.LOCAL), gr.update(visible=k == TFEW_MODEL)), model,
                 [local_path, tfew_row], api_visibility="private")
    return TrainPage(summary, model, local_path, info, recipe, init_tfew, tfew_path, eval_methods, start, message,
                     estimate, estimate_timer)


def prefilled(page: TrainPage, prior: RunAgain) -> dict:
    """The page showing a prior job's model, evaluation and recipe (Run again with changes); see filled_by_prefill."""
    key = prior.model if prior.model in M.BY_KEY else M.LOCAL
    defaults, session, extra = RecipeConfig().to_dict(), prior.data, [t.name for t in prior.train_templates]
    given = prior.recipe.to_dict()
    recipe = {comp: given.get(name, defaults.get(name)) for comp, name in zip(page.recipe, RECIPE_FIELDS)}
    recipe.update({comp: "" for comp, name in zip(page.recipe, RECIPE_FIELDS)
                   if name in OPTIONAL_INT and recipe[comp] is None})  # a text box: empty, not "None"
    return {page.model: key, page.local_path: prior.model_path if key == M.LOCAL else "",
            page.eval_methods: prior.eval_methods or METHODS,
            page.summary: f"Data: **{session.filename}** ({session.rows} rows) · template "
                          f"**{prior.template.name}**" + (f" + {len(extra)} more for training ({', '.join(extra)})"
                                                          if extra else "") + f" — prefilled from job #{prior.job_id}",
            **recipe}


def filled_by_prefill(page: TrainPage) -> list:
    """The components prefilled fills."""
    return [page.model, page.local_path, page.eval_methods, page.summary, *page.recipe]


def wire_train_page(page: TrainPage, ctx: AppContext, shared: Shared, hw: M.Hardware, open_job: Fill) -> None:
    """The page's own events: the model's notes and estimate follow the choices; Start queues the job and
    opens it on the job page (`open_job.values(uid, job_id)`)."""

    steps, batch, length = (page.recipe[RECIPE_FIELDS.index(n)] for n in ("steps", "batch_size", "max_length"))

    def data_of(session, template, request: gr.Request):
        """(training rows, held-out rows) of the user's data as the job will split them; None, None before any."""
        try:
            uid = ctx.user_id(request)
            if session is not None:
                from storage import repo

                rows = repo.load_rows(ctx.db(), ctx.files(), session.dataset_id, uid)
                return T_E.job_rows(ctx, uid, session, template.label_column, rows) if template else (rows, None)
        except UserError:
            pass
        return None, None

    def estimate_now(key, local_path, s, b, m, session, template, methods, request: gr.Request) -> dict:
        """The estimate beside Start; the timer looks again while a worker's probe is pending."""
        rows, held_out = data_of(session, template, request)
        _, model_path, params = model_notes(ctx, key, local_path, hw)
        estimate, pending = estimate_and_pending(ctx, key, model_path, params, s, b, m, rows, hw, template=template,
                                                 eval_rows=held_out, methods=methods or ())
        return {page.estimate: estimate + cv_cost(session), page.estimate_timer: gr.Timer(active=pending)}

    def on_info(key, local_path, s, b, m, session, template, methods, request: gr.Request):
        """The notes at once, then the estimate (it reads the data's tokens first)."""
        start = gr.update(interactive=M.unusable_reason(key, local_path, ctx.allowed_model_dirs()) is None)
        notes, _, _ = model_notes(ctx, key, local_path, hw)
        yield {page.info: notes, page.start: start}
        yield estimate_now(key, local_path, s, b, m, session, template, methods, request)

    info_inputs = [page.model, page.local_path, steps, batch, length, shared.session, shared.template,
                   page.eval_methods]
    info_outputs = [page.info, page.estimate, page.start, page.estimate_timer]
    for comp in (page.model, page.local_path, steps, batch, length, page.summary, page.eval_methods):
        comp.change(on_info, info_inputs, info_outputs, api_visibility="private", trigger_mode="always_last")
    shared.demo.load(on_info, info_inputs, info_outputs, api_visibility="private")
    page.estimate_timer.tick(estimate_now, info_inputs, [page.estimate, page.estimate_timer], api_visibility="private",
                             trigger_mode="always_last")

    def on_start(v: dict, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            recipe = recipe_from_values([v[c] for c in page.recipe])
            config = build_job_config(ctx, uid, v[shared.session], v[shared.template], v[page.model],
                                      v[page.local_path], recipe, v[page.init_tfew], v[page.tfew_path],
                                      v[page.eval_methods], v[shared.train_templates])
            from jobs import queue

            job_id = queue.submit(ctx.db(), uid, config)
        except UserError as e:
            return {page.message: f"✗ **Not started:** {e}"}
        k = config.spec.cv_folds
        runs = f" {k}-fold cross-validation: {k + 1} training runs." if k else ""
        return {page.message: f"✓ Job #{job_id} queued.{runs}", **open_job.values(uid, job_id)}

    page.start.click(on_start, {shared.session, shared.template, shared.train_templates, page.model, page.local_path, page.init_tfew,
                                page.tfew_path, page.eval_methods, *page.recipe},
                     [page.message, *open_job.outputs], api_visibility="private")
