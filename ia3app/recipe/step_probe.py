"""Training time from measurement: real steps of the chosen model on this machine, run by a worker.

A size-based guess (6·N FLOPs per token at a nominal rate) is off by an order of magnitude for
small models, whose steps are dominated by per-step overheads, not arithmetic. So steps are timed
with the same loader and train() a job runs. :func:`probe_step_cost` is the worker's short probe
(jobs.worker runs it when the train page asks, never the web process): steps on synthetic rows of
three lengths give this model's :class:`~ia3app.recipe.step_cost.StepCost` here, which any data's
token lengths then turn into a time. :func:`time_steps` times a few steps on given rows.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ia3app.config import RecipeConfig
from ia3app.errors import Cancelled, UserError
from ia3app.example import Example
from ia3app.recipe.step_cost import Point, StepCost, fit, shape_of
from ia3app.templates.rendering import render_all
from ia3app.templates.spec import TemplateSpec

PROBE_INPUT_TOKENS = (16, 96, 256)
"""The synthetic input lengths the probe times (capped at the recipe's max_length): three, so that the
fixed, per-token and per-pair parts of a step can be told apart."""
PROBE_BUDGET_S = 15.0
"""Seconds of training steps per length, about (a round that has begun is finished)."""
PROBE_ROUNDS = 3
"""Rounds in which the lengths take turns (a change of the machine's load weighs on all of them alike)."""
SCORE_INPUT_TOKENS = (16, 96, 256, 1024)
"""The input lengths at which the probe times scoring (evaluation's forward pass, no gradients), capped at the
model's input limit: up to in-context prompts' length (their demonstrations fill the model's input)."""
SCORE_BATCH_TOKENS = 2048
"""A scoring batch at a long length holds fewer rows (at most the recipe's evaluation batch): the probe stays
short, and the fitted cost per batch does not depend on how the tokens are split into rows."""


@dataclass(frozen=True)
class StepTiming:
    seconds_per_step: float
    """Mean wall time of the timed steps after the warm-up steps, leaving out the slowest one: a run's
    total is a sum (so not the median), but one step stalled by a busy machine would weigh on a
    handful of samples far more than on a whole run."""
    load_s: float
    """Time to load the model (the job pays it once more before training)."""
    timed_steps: int

    def training_seconds(self, steps: int) -> float:
        return self.seconds_per_step * steps


@dataclass(frozen=True)
class Probe:
    """What the worker's probe measured: the fitted costs and the points they were fitted to."""

    cost: StepCost
    """Of a training step."""
    points: list[Point]
    load_s: float
    """Seconds to load the model (a job pays them too, unless its worker still holds the model)."""
    score_cost: StepCost
    """Of a scoring batch (evaluation)."""
    score_points: list[Point]


def _timed_steps(handle, tokenizer, examples: Sequence[Example], recipe: RecipeConfig, steps: int, warmup: int,
                 budget_s: float | None = None, should_stop: Callable[[], bool] | None = None) -> float:
    """Seconds per training step: `steps` steps after `warmup` untimed ones, the slowest left out; fewer when
    `budget_s` is spent (at least one timed step). should_stop() True stops it (Cancelled)."""
    from ia3app.recipe.train import train

    probe = dataclasses.replace(recipe, steps=warmup + steps, warmup_steps=0, checkpoint_every=0)
    marks: list[float] = []  # seconds since training began, at the end of each step

    def stop() -> bool:
        if should_stop is not None and should_stop():
            return True
        return budget_s is not None and len(marks) > warmup and marks[-1] > budget_s

    try:
        train(handle, tokenizer, list(examples), probe, progress=lambda event: marks.append(event.elapsed_s),
              progress_interval_s=0, should_stop=stop)
    except Cancelled:
        if should_stop is not None and should_stop():
            raise
    durations = [b - a for a, b in zip([0.0, *marks][warmup:], marks[warmup:])]
    kept = sorted(durations)[:-1] if len(durations) > 2 else durations
    return sum(kept) / len(kept)


def _release(*_objects) -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def time_steps(model: str, template: TemplateSpec, rows: Sequence[dict[str, Any]], recipe: RecipeConfig, *,
               steps: int = 4, warmup: int = 2, device: str | None = None, revision: str | None = None) -> StepTiming:
    """Load `model`, inject (IA)^3, and time `steps` training steps after `warmup` untimed ones, with the
    recipe's batch size, length, accumulation and precision on the given rows. Nothing is saved."""
    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import load_model

    examples = [ex for ex in render_all(template, rows) if ex.label is not None]
    if not examples:
        raise UserError("no labelled rows to time training steps on")
    began = time.perf_counter()
    loaded = load_model(model, revision, device=device, precision=recipe.precision)
    load_s = time.perf_counter() - began
    seconds = _timed_steps(inject(loaded.model), loaded.tokenizer, examples, recipe, steps, warmup)
    _release(loaded)
    return StepTiming(seconds, load_s, steps)


def synthetic_examples(tokenizer, input_tokens: int, rows: int) -> list[Example]:
    """Rows of `input_tokens` tokens (this tokenizer's, special tokens included) with two one-word answers:
    the probe's data, no user's rows."""
    text = " ".join(["word"] * input_tokens * 2)
    ids = tokenizer(text, truncation=True, max_length=input_tokens, add_special_tokens=False)["input_ids"]
    cut = tokenizer.decode(ids[: max(1, input_tokens - 1)], skip_special_tokens=True)
    return [Example(cut, ("yes", "no"), i % 2) for i in range(rows)]


def _scoring_seconds(loaded, examples: list[Example], max_length: int) -> float:
    """Seconds to score these examples as one batch, as evaluation scores them."""
    from ia3app.evaluation.scoring import score_choices

    began = time.perf_counter()
    score_choices(loaded.model, loaded.tokenizer, examples, batch_size=len(examples), max_length=max_length)
    return time.perf_counter() - began


def _stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise Cancelled("the probe was stopped")


def probe_step_cost(model: str, recipe: RecipeConfig, *, steps: int = 2, warmup: int = 1, rounds: int = PROBE_ROUNDS,
                    device: str | None = None, revision: str | None = None, budget_s: float = PROBE_BUDGET_S,
                    should_stop: Callable[[], bool] | None = None) -> Probe:
    """Time training steps of `model` at the recipe's batch size on synthetic rows of three input lengths and
    fit seconds = overhead + per_token × tokens + per_pair × attention pairs per step (ia3app.recipe.step_cost).
    The lengths take turns for `rounds` rounds (each: `warmup` untimed and `steps` timed steps), so that a
    change in the machine's load while the probe runs weighs on every length alike; each length's figure is
    the median of its rounds. A length gets about `budget_s` seconds in all (a large model on a CPU: one
    round of one timed step). should_stop() True stops the probe (Cancelled: the worker has a job to run).
    Then scoring (evaluation's forward pass, the (IA)^3 vectors merged as evaluation merges them) is timed
    the same way at SCORE_INPUT_TOKENS, up to the model's input limit, for the cost of a scoring batch."""
    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import load_model
    from ia3app.backbones.threads import use_threads
    from ia3app.evaluation.in_context import input_limit
    from ia3app.recipe.batches import tokenize
    from ia3app.recipe.step_cost import batch_load

    use_threads("train")  # the thread count a job started now would choose: its steps are what is timed
    began = time.perf_counter()
    loaded = load_model(model, revision, device=device, precision=recipe.precision)
    load_s = time.perf_counter() - began
    handle = inject(loaded.model)
    enc_dec = loaded.is_encoder_decoder

    def rows_of(length: int, count: int, max_length: int):
        examples = synthetic_examples(loaded.tokenizer, length, count)
        tokens = tokenize(loaded.tokenizer, examples, max_length, enc_dec)
        return examples, [len(t.input_ids) for t in tokens], [[len(c) for c in t.choice_ids] for t in tokens]

    training = {}
    for length in sorted({min(recipe.max_length, n) for n in PROBE_INPUT_TOKENS}):
        examples, inputs, choices = rows_of(length, max(recipe.batch_size * 2, 8), recipe.max_length)
        training[length] = (examples, shape_of(inputs, choices, recipe.batch_size, enc_dec, draws=20).load, [])
    started = time.perf_counter()
    for round_ in range(rounds):
        for examples, _, seconds in training.values():
            handle.reset()
            seconds.append(_timed_steps(handle, loaded.tokenizer, examples, recipe, steps, warmup, budget_s / rounds,
                                        should_stop))
        if time.perf_counter() - started > budget_s * len(training):
            break
    points = [Point(load, statistics.median(seconds)) for _, load, seconds in training.values()]

    handle.reset()
    handle.merge()
    scoring = {}
    limit = input_limit(loaded.model.config, loaded.tokenizer)
    for length in sorted({min(limit, n) for n in SCORE_INPUT_TOKENS}):
        examples, inputs, choices = rows_of(length, max(1, min(recipe.eval_batch_size, SCORE_BATCH_TOKENS // length)),
                                            length)
        scoring[length] = (examples, batch_load(inputs, choices, enc_dec), [])
    _stop(should_stop)
    shortest = min(scoring)
    _scoring_seconds(loaded, scoring[shortest][0], shortest)  # untimed: the first call pays one-off costs
    started = time.perf_counter()
    for round_ in range(rounds):
        for length, (examples, _, seconds) in scoring.items():
            _stop(should_stop)
            seconds.append(_scoring_seconds(loaded, examples, length))
        if time.perf_counter() - started > budget_s * len(scoring) / 2:
            break
    score_points = [Point(load, statistics.median(seconds)) for _, load, seconds in scoring.values()]
    handle.restore()
    _release(handle, loaded)
    return Probe(fit(points), points, load_s, fit(score_points), score_points)
