"""The time estimate on the train page: this machine's measured costs × what the data weighs.

Nothing trains here (the web process never does). A job's time is estimated as three measured terms:
- **training**: what a step of a model costs on this machine is a :class:`~ia3app.recipe.step_cost.StepCost`
  (a fixed part + parts per padded token and per attention pair), fitted to the finished jobs of that model
  here (any user's: a step time says nothing about anyone's data), from their recorded wall time and padded
  tokens per step, and to a short probe a worker runs when asked (jobs.probes; a few steps on synthetic rows
  of three lengths); what a step of *your* data weighs is counted, not guessed: the rows rendered with the
  template and tokenized with the model's tokenizer give the padded tokens of a batch of the recipe's size
  (input lengths, answer lengths, answer choices per row);
- **evaluation**: the held-out rows scored by each ticked comparison (zero-shot, in-context, T-Few) in the
  batches evaluation scores them (ia3app.recipe.step_cost.evaluation_passes: every row once, a warm-up
  batch and the timed repeats), in-context prompts built as evaluation builds them (as many demonstrations
  as fit the model's input), each batch costed by the probe's measured scoring cost;
- **loading the model**, as long as the probe took to load it.
Only a model that cannot be measured here (not downloaded yet, or too large to time on this CPU) gets a
rough guide from its size, said to be one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.templates.spec import TemplateSpec
from ia3app.recipe.step_cost import (DataShape, Load, Point, Row, StepCost, evaluation_passes, fit, padded_load,
                                     shape_of)
from ui import model_picker as M
from ui.context import AppContext

if TYPE_CHECKING:
    from ui.shared import DataChoice

MAX_TIMED_PARAMETERS = 1.0e9
"""Larger models are not probed on a CPU (a few steps would hold the worker for minutes): rough guide."""
SAMPLE_ROWS = 400
"""Rows rendered and tokenized to weigh a dataset (evenly spread over the file)."""
SAMPLE_EVAL_ROWS = 200
"""Held-out rows rendered and tokenized (in-context prompts built) to weigh an evaluation; more are scaled."""
JOB_WEIGHT = 3.0
"""A finished job's point counts this many probe points (it averages a whole run, not a few steps)."""
METHOD_WORDS = {"zero-shot": "zero-shot", "in-context": "in-context", "t-few": "T-Few"}
_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Parts:
    """The measured terms of a run's time (seconds) and what they weigh."""

    load_s: float
    """Loading the model (a worker that still holds it from its last job skips this)."""
    train_s: float
    evaluate_s: float
    shape: DataShape
    """What the training rows weigh."""
    held_out: int
    """Held-out rows each comparison scores."""
    methods: tuple[str, ...]
    """The comparisons evaluated."""


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    """The run's time (with parts: loading, training and evaluation; else training alone); None while a
    measurement is pending."""
    source: str
    """What the number is based on, in words."""
    pending: bool = False
    """True while a worker's probe is asked for or running (see wait_for_probe())."""
    parts: Parts | None = None
    """The measured terms, when the data and template are chosen."""


@dataclass(frozen=True)
class Measured:
    cost: StepCost
    """Of a training step."""
    basis: str
    """Where the cost comes from, in words ('a probe run by the worker', '2 earlier jobs of this model here')."""
    score_cost: StepCost | None = None
    """Of a scoring batch (the probe's); None when no probe measured it."""
    load_s: float = 0.0
    """The probe's time to load the model."""


def _tokenizer(model_path: str):
    """(tokenizer, is encoder-decoder, config) of a local model folder or cached hub model (no weights loaded)."""
    with _LOCK:
        if model_path not in _TOKENIZERS:
            from transformers import AutoConfig, AutoTokenizer

            from ia3app.backbones.bundled import resolve

            path = resolve(model_path) if M.is_bundled(model_path) else model_path
            config = AutoConfig.from_pretrained(path, trust_remote_code=False)
            _TOKENIZERS[model_path] = (AutoTokenizer.from_pretrained(path, trust_remote_code=False),
                                       bool(getattr(config, "is_encoder_decoder", False)), config)
        return _TOKENIZERS[model_path]


def _labelled(spec, rows: list[dict], sample: int) -> list:
    """The labelled examples of (at most about `sample` rows evenly spread over) these rows."""
    from ia3app.templates.rendering import render_all

    stride = max(1, len(rows) // sample)
    return [ex for ex in render_all(spec, rows[::stride]) if ex.label is not None]


def _token_rows(tokenizer, enc_dec: bool, examples, max_length: int) -> list[Row]:
    """Each example's input characters, input tokens and answer choices' tokens, as the model reads them."""
    inputs = tokenizer([e.input for e in examples], truncation=True, max_length=max_length)["input_ids"]
    texts = [c if enc_dec else " " + c for e in examples for c in e.choices]
    answers = tokenizer(texts, add_special_tokens=enc_dec, truncation=True, max_length=max_length)["input_ids"]
    rows, pos = [], 0
    for e, ids in zip(examples, inputs):
        rows.append(Row(len(e.input), len(ids), tuple(len(a) for a in answers[pos: pos + len(e.choices)])))
        pos += len(e.choices)
    return rows


def data_shape(model_path: str, spec: TemplateSpec, rows: list[dict], recipe: RecipeConfig) -> DataShape | None:
    """The padded tokens per step of these rows rendered with this template for this model; None when
    no row renders with a label."""
    from ia3app.templates.chat import wrap_examples

    examples = _labelled(spec, rows, SAMPLE_ROWS)
    if not examples:
        return None
    tokenizer, enc_dec, _ = _tokenizer(model_path)
    examples = wrap_examples(tokenizer, examples, spec.chat)  # an instruct model's chat turn: its tokens count
    weighed = _token_rows(tokenizer, enc_dec, examples, recipe.max_length)
    shape = shape_of([r.input_tokens for r in weighed], [r.choice_tokens for r in weighed], recipe.batch_size,
                     enc_dec)
    return DataShape(len(rows), shape.mean_input_tokens, shape.mean_answer_tokens, shape.choices, shape.load)


def evaluation_seconds(model_path: str, spec: TemplateSpec, train_rows: list[dict], eval_rows: list[dict],
                       recipe: RecipeConfig, methods: Sequence[str], score_cost: StepCost) -> tuple[float, int]:
    """(seconds to evaluate `methods` on the labelled held-out rows, how many rows that is): every batch each
    method scores (ia3app.recipe.step_cost.evaluation_passes) costed by `score_cost`. Zero-shot and T-Few
    score the template's inputs; in-context scores prompts built as evaluation builds them (the training rows
    as demonstrations, as many as fit the model's input)."""
    from ia3app.evaluation.in_context import IclConfig, build_prompts, input_limit
    from ia3app.templates.chat import overhead_tokens, wrap_examples

    held = _labelled(spec, eval_rows, SAMPLE_EVAL_ROWS)
    if not held or not methods:
        return 0.0, 0
    labelled = sum(1 for ex in _labelled(spec, eval_rows, len(eval_rows)))
    scale = labelled / len(held)  # the pass over every row grows with the held-out rows; the rest does not
    tokenizer, enc_dec, config = _tokenizer(model_path)

    def cost(examples, max_length: int) -> float:
        every, rest = evaluation_passes(_token_rows(tokenizer, enc_dec, examples, max_length),
                                        recipe.eval_batch_size, enc_dec)
        return scale * sum(map(score_cost.step_seconds, every)) + sum(map(score_cost.step_seconds, rest))

    plain = cost(wrap_examples(tokenizer, held, spec.chat), recipe.max_length)
    total = plain * sum(1 for m in methods if m != "in-context")
    if "in-context" in methods:
        icl = IclConfig()
        limit = input_limit(config, tokenizer, cap=icl.max_input_tokens)
        wrap = overhead_tokens(tokenizer, spec.chat)
        train = _labelled(spec, train_rows, SAMPLE_ROWS)
        prompts = build_prompts(train, held, tokenizer, limit=limit - wrap, decoder_only=not enc_dec, config=icl)
        total += cost(wrap_examples(tokenizer, prompts.examples, spec.chat),
                      max(limit, max(prompts.prompt_tokens) + wrap))
    return total, labelled


def job_rows(ctx: AppContext, uid: int, session: DataChoice | None, label_column: str,
             rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training rows, held-out rows) of the data page's choice, as the job will split them."""
    from storage import repo

    if session is not None and session.eval_dataset_id:
        return rows, repo.load_rows(ctx.db(), ctx.files(), int(session.eval_dataset_id), uid)
    if session is not None and session.holdout is not None:
        return session.holdout.split(rows, label_column)
    return rows, []


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
    worker's probe (with its scoring cost and load time); None when neither exists."""
    from jobs import probes

    jobs = _job_points(ctx, model_path, recipe) if with_jobs else []
    probe = probes.latest(ctx.db(), model_path, recipe)
    done = probe is not None and probe.status == "done"
    probed = probe.points if done else []
    if not jobs and not probed:
        return None
    said = [f"{len(jobs)} earlier job{'s' if len(jobs) != 1 else ''} of this model here"] if jobs else []
    said += ["a short probe the worker ran (a few steps at three lengths)"] if probed else []
    return Measured(fit(jobs + probed), " and ".join(said), probe.score_cost if done else None,
                    (probe.load_s or 0.0) if done else 0.0)
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
             eval_rows: list[dict] | None = None, methods: Sequence[str] = (), ask: bool = True,
             gave_up: bool = False) -> Estimate:
    """The best estimate available without training here, for training on `rows` and evaluating `methods` on
    `eval_rows`; with `ask`, a probe is asked of a worker when nothing is measured yet, or its scoring cost is
    wanted (the page then waits for it: wait_for_probe). gave_up: the page waited for the probe in vain; the
    rough guide stands in, saying so."""
    why_not = _unmeasurable(key, model_path, hw)
    if why_not is None:
        from jobs import probes

        measured = measured_cost(ctx, model_path, recipe)
        try:  # (weighed only when a cost is measured: the page looks again every few seconds while one is not)
            shape = data_shape(model_path, template, rows, recipe) if rows and template and measured else None
        except UserError:  # a template the rows do not render with: the template page says why
            shape = None
        evaluates = bool(shape is not None and eval_rows and methods)
        if measured is not None and (measured.score_cost is not None or not evaluates):
            return from_cost(measured, shape, recipe, evaluation=_evaluation(model_path, template, rows, eval_rows,
                                                                             recipe, methods, measured, evaluates))
        probe = probes.request(ctx.db(), model_path, recipe) if ask else probes.latest(ctx.db(), model_path, recipe)
        waiting = probe is not None and probe.status in ("queued", "running")
        if measured is not None:  # earlier jobs timed the steps; evaluation waits for the probe's scoring
            found = from_cost(measured, shape, recipe)
            return Estimate(found.seconds, found.source + ("; the evaluation is being timed by a worker…"
                                                           if waiting and not gave_up else
                                                           "; the evaluation is not timed yet"),
                            pending=waiting and not gave_up)
        if waiting and gave_up:
            why_not = ("no worker has timed this model yet (a worker busy with a long job, or the Ray backend, "
                       "which runs no timing probes); a measured figure replaces this once one has")
        elif waiting:
            return Estimate(None, "a worker is timing a few training steps of this model on this machine"
                                  + (" (it is busy with a job; this waits for it)" if _worker_busy(ctx) else "")
                                  + "…", pending=True)
        why_not = f"timing steps failed: {probe.message}" if probe is not None and probe.message else why_not
    rough = M.estimate_seconds(params, recipe.steps, recipe.batch_size, tokens_per_example, hw) if params else None
    return Estimate(rough, f"a rough guide from the model's size, not measured: "
                           f"{why_not or 'no worker has measured this model here yet'}")


def _evaluation(model_path, template, rows, eval_rows, recipe, methods, measured: Measured,
                evaluates: bool) -> tuple[float, int, tuple[str, ...]] | None:
    if measured.score_cost is None:  # no probe measured loading and scoring: training alone is said
        return None
    if not evaluates:  # no held-out rows or no comparison ticked: nothing to evaluate
        return 0.0, 0, ()
    try:
        seconds, held_out = evaluation_seconds(model_path, template, rows, eval_rows, recipe, methods,
                                               measured.score_cost)
    except UserError:  # held-out rows the template does not render (the job says why) or no demonstrations
        return None
    return seconds, held_out, tuple(methods)


def _worker_busy(ctx: AppContext) -> bool:
    from jobs import queue

    return queue.running_count(ctx.db()) > 0


def from_cost(measured: Measured, shape: DataShape | None, recipe: RecipeConfig, *,
              evaluation: tuple[float, int, tuple[str, ...]] | None = None) -> Estimate:
    """The estimate for data of this shape (None: not chosen yet) from a measured step cost; with
    `evaluation` (seconds, held-out rows, methods), the whole run: loading, training and evaluation."""
    cost = measured.cost
    if shape is None:  # a batch of 100-token inputs with two 3-token answers, until data is chosen
        per_step = cost.step_seconds(padded_load(recipe.batch_size, min(100, recipe.max_length), 2 * recipe.batch_size,
                                                 3, True))
        return Estimate(per_step * recipe.steps, f"measured here from {measured.basis}: {per_step:.2f} s per step "
                                                 f"for rows of ~100 tokens; choose your data and template for a "
                                                 f"figure that weighs them")
    per_step = cost.step_seconds(shape.load)
    source = (f"measured here from {measured.basis}: {per_step:.2f} s per step for your {shape.rows} rows — "
              f"{shape.mean_input_tokens:.0f} input tokens and {shape.choices:g} answer choices of "
              f"{shape.mean_answer_tokens:.1f} tokens on average, {shape.load.tokens:,.0f} tokens per padded "
              f"batch of {recipe.batch_size}")
    train_s = per_step * recipe.steps
    if evaluation is None:
        return Estimate(train_s, source)
    evaluate_s, held_out, methods = evaluation
    parts = Parts(measured.load_s, train_s, evaluate_s, shape, held_out, methods)
    return Estimate(parts.load_s + train_s + evaluate_s, source, parts=parts)


def probe_waited_s(ctx: AppContext, model_path: str, recipe: RecipeConfig) -> float:
    """Seconds since this model's probe was asked for (0 when there is none)."""
    from jobs import probes

    probe = probes.latest(ctx.db(), model_path, recipe)
    return time.time() - probe.requested if probe is not None and probe.requested else 0.0


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


def _said(seconds: float) -> str:
    return ("" if seconds < 5 else "about ") + M.format_duration(seconds)


def describe(est: Estimate, steps: int) -> str:
    if est.seconds is None:
        return f"Estimated training time for {steps} steps: {est.source}"
    if est.parts is None:
        return (f"Estimated training time: **{_said(est.seconds)}** for {steps} steps "
                f"({est.source}; loading the model and evaluating add to it).")
    p = est.parts
    if not p.methods or not p.held_out:
        return (f"Estimated time: **{_said(est.seconds)}** for {steps} steps (no evaluation: no held-out rows or "
                f"no comparison ticked) — training {_said(p.train_s)}, loading the model {_said(p.load_s)} "
                f"({est.source}).")
    methods = [METHOD_WORDS.get(m, m) for m in p.methods]
    named = methods[0] if len(methods) == 1 else ", ".join(methods[:-1]) + " and " + methods[-1]
    return (f"Estimated time: **{_said(est.seconds)}** for {steps} steps and the evaluation — training "
            f"{_said(p.train_s)}, evaluating {named} on {p.held_out} held-out rows {_said(p.evaluate_s)}, "
            f"loading the model {_said(p.load_s)} ({est.source}; evaluation and loading measured by the same "
            f"probe).")
