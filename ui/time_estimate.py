"""The training-time estimate on the train page: this machine's measured step cost × the data's token weight.

Nothing trains here (the web process never does). What a step of a model costs on this machine is a
:class:`~ia3app.recipe.step_cost.StepCost` (a fixed part + a part per padded token), fitted to:
- the finished jobs of that model here (any user's: a step time says nothing about anyone's data),
  from their recorded wall time and padded tokens per step, and
- a short probe a worker runs when asked (jobs.probes; a few steps on synthetic rows of two lengths).
What a step of *your* data weighs is counted, not guessed: the rows rendered with the template and
tokenized with the model's tokenizer give the padded tokens of a batch of the recipe's size (input
lengths, answer lengths, answer choices per row). Only a model that cannot be measured here (not
downloaded yet, or too large to time on this CPU) gets a rough guide from its size, said to be one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.templates.spec import TemplateSpec
from ia3app.recipe.step_cost import DataShape, Load, Point, StepCost, fit, padded_load, shape_of
from ui import model_picker as M
from ui.context import AppContext

MAX_TIMED_PARAMETERS = 1.0e9
"""Larger models are not probed on a CPU (a few steps would hold the worker for minutes): rough guide."""
SAMPLE_ROWS = 400
"""Rows rendered and tokenized to weigh a dataset (evenly spread over the file)."""
JOB_WEIGHT = 3.0
"""A finished job's point counts this many probe points (it averages a whole run, not a few steps)."""
_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    """Training time for the recipe's steps; None while a measurement is pending."""
    source: str
    """What the number is based on, in words."""
    pending: bool = False
    """True while a worker's probe is asked for or running (see wait_for_probe())."""


@dataclass(frozen=True)
class Measured:
    cost: StepCost
    basis: str
    """Where the cost comes from, in words ('a probe run by the worker', '2 earlier jobs of this model here')."""


def _tokenizer(model_path: str):
    """(tokenizer, is encoder-decoder) of a local model folder or cached hub model (no weights loaded)."""
    with _LOCK:
        if model_path not in _TOKENIZERS:
            from transformers import AutoConfig, AutoTokenizer

            from ia3app.backbones.bundled import resolve

            path = resolve(model_path) if M.is_bundled(model_path) else model_path
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            _TOKENIZERS[model_path] = (AutoTokenizer.from_pretrained(path, trust_remote_code=False),
                                       bool(getattr(config, "is_encoder_decoder", False)))
        return _TOKENIZERS[model_path]


def data_shape(model_path: str, spec: TemplateSpec, rows: list[dict], recipe: RecipeConfig) -> DataShape | None:
    """The padded tokens per step of these rows rendered with this template for this model; None when
    no row renders with a label."""
    from ia3app.templates.spec import render_all

    from ia3app.templates.chat import wrap_examples

    stride = max(1, len(rows) // SAMPLE_ROWS)
    examples = [ex for ex in render_all(spec, rows[::stride]) if ex.label is not None]
    if not examples:
        return None
    tokenizer, enc_dec = _tokenizer(model_path)
    examples = wrap_examples(tokenizer, examples, spec.chat)  # an instruct model's chat turn: its tokens count
    inputs = tokenizer([e.input for e in examples], truncation=True, max_length=recipe.max_length)["input_ids"]
    texts = [c if enc_dec else " " + c for e in examples for c in e.choices]
    answers = tokenizer(texts, add_special_tokens=enc_dec, truncation=True, max_length=recipe.max_length)["input_ids"]
    choice_lens, pos = [], 0
    for e in examples:
        choice_lens.append([len(a) for a in answers[pos: pos + len(e.choices)]])
        pos += len(e.choices)
    shape = shape_of([len(i) for i in inputs], choice_lens, recipe.batch_size, enc_dec)
    return DataShape(len(rows), shape.mean_input_tokens, shape.mean_answer_tokens, shape.choices, shape.load)


def _job_points(ctx: AppContext, model_path: str, recipe: RecipeConfig) -> list[Point]:
    from jobs import queue

    points = []
    for training in queue.finished_training(ctx.db(), model_path, recipe.batch_size, recipe.precision):
        steps = training.steps - training.resumed_from_step
        if steps >= 2 and training.wall_s > 0 and training.work_tokens > 0:
            load = Load(training.work_tokens / steps, training.attention_pairs / steps)
            points.append(Point(load, training.wall_s / steps, JOB_WEIGHT))
    return points


def measured_cost(ctx: AppContext, model_path: str, recipe: RecipeConfig, *, with_jobs: bool = True) -> Measured | None:
    """This model's step cost here, from its finished jobs (unless with_jobs is False: the probe alone) and the
    worker's probe; None when neither exists."""
    from jobs import probes

    jobs = _job_points(ctx, model_path, recipe) if with_jobs else []
    probe = probes.latest(ctx.db(), model_path, recipe)
    probed = probe.points if probe is not None and probe.status == "done" else []
    if not jobs and not probed:
        return None
    said = [f"{len(jobs)} earlier job{'s' if len(jobs) != 1 else ''} of this model here"] if jobs else []
    said += ["a short probe the worker ran (a few steps at three lengths)"] if probed else []
    return Measured(fit(jobs + probed), " and ".join(said))


def _unmeasurable(key: str, model_path: str | None, hw: M.Hardware) -> str | None:
    """Why this model's steps cannot be timed here now; None when a worker can time them."""
    choice = M.BY_KEY.get(key)
    if key not in (M.TINY, M.LOCAL) and not M.is_cached(key):
        return "the bundled model is not converted yet" if M.is_bundled(key) else "the model is not downloaded yet"
    if model_path is None:
        return "the model is not chosen yet"
    if choice and choice.parameters > MAX_TIMED_PARAMETERS and hw.device == "cpu":
        return "the model is too large to time on this CPU"
    return None


def estimate(ctx: AppContext, key: str, model_path: str | None, recipe: RecipeConfig, rows: list[dict] | None,
             template: TemplateSpec | None, params: float | None, tokens_per_example: int, hw: M.Hardware, *,
             ask: bool = True, gave_up: bool = False) -> Estimate:
    """The best estimate available without training here; with `ask`, a probe is asked of a worker when
    nothing is measured yet (the page then waits for it: wait_for_probe). gave_up: the page waited for the
    probe in vain; the rough guide stands in, saying so."""
    why_not = _unmeasurable(key, model_path, hw)
    if why_not is None:
        measured = measured_cost(ctx, model_path, recipe)
        try:
            shape = data_shape(model_path, template, rows, recipe) if rows and template else None
        except UserError:  # a template the rows do not render with: the template page says why
            shape = None
        if measured is not None:
            return from_cost(measured, shape, recipe)
        from jobs import probes

        probe = probes.request(ctx.db(), model_path, recipe) if ask else probes.latest(ctx.db(), model_path, recipe)
        if probe is not None and probe.status in ("queued", "running") and gave_up:
            why_not = ("no worker has timed this model yet (a worker busy with a long job, or the Ray backend, "
                       "which runs no timing probes); a measured figure replaces this once one has")
        elif probe is not None and probe.status in ("queued", "running"):
            return Estimate(None, "a worker is timing a few training steps of this model on this machine"
                                  + (" (it is busy with a job; this waits for it)" if _worker_busy(ctx) else "")
                                  + "…", pending=True)
        why_not = f"timing steps failed: {probe.message}" if probe is not None and probe.message else why_not
    rough = M.estimate_seconds(params, recipe.steps, recipe.batch_size, tokens_per_example, hw) if params else None
    return Estimate(rough, f"a rough guide from the model's size, not measured: "
                           f"{why_not or 'no worker has measured this model here yet'}")


def _worker_busy(ctx: AppContext) -> bool:
    from jobs import queue

    return queue.running_count(ctx.db()) > 0


def from_cost(measured: Measured, shape: DataShape | None, recipe: RecipeConfig) -> Estimate:
    """The estimate for data of this shape (None: not chosen yet) from a measured step cost."""
    cost = measured.cost
    if shape is None:  # a batch of 100-token inputs with two 3-token answers, until data is chosen
        per_step = cost.step_seconds(padded_load(recipe.batch_size, min(100, recipe.max_length), 2 * recipe.batch_size,
                                                 3, True))
        return Estimate(per_step * recipe.steps, f"measured here from {measured.basis}: {per_step:.2f} s per step "
                                                 f"for rows of ~100 tokens; choose your data and template for a "
                                                 f"figure that weighs them")
    per_step = cost.step_seconds(shape.load)
    return Estimate(per_step * recipe.steps,
                    f"measured here from {measured.basis}: {per_step:.2f} s per step for your {shape.rows} rows — "
                    f"{shape.mean_input_tokens:.0f} input tokens and {shape.choices:g} answer choices of "
                    f"{shape.mean_answer_tokens:.1f} tokens on average, {shape.load.tokens:,.0f} tokens per padded "
                    f"batch of {recipe.batch_size}")


def wait_for_probe(ctx: AppContext, model_path: str, recipe: RecipeConfig, timeout_s: float = 120.0,
                   poll_s: float = 0.5) -> bool:
    """Wait (polling the database; nothing runs here) until the worker's probe is done or failed; True if it
    ended within timeout_s."""
    from jobs import probes

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        probe = probes.latest(ctx.db(), model_path, recipe)
        if probe is None or probe.status in ("done", "failed"):
            return True
        time.sleep(poll_s)
    return False


def describe(est: Estimate, steps: int) -> str:
    if est.seconds is None:
        return f"Estimated training time for {steps} steps: {est.source}"
    when = M.format_duration(est.seconds)
    return (f"Estimated training time: **{'' if est.seconds < 5 else 'about '}{when}** for {steps} steps "
            f"({est.source}; loading the model and evaluating add to it).")
