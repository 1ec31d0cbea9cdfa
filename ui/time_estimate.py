"""The training-time estimate on the train page: measured on this machine whenever possible.

In order: a measurement already taken in this process for the same model, recipe shape and data;
the throughput of the user's own earlier job of that model here; timing a few real steps now
(ia3app.recipe.step_timing, the same code a job runs); only when none of these can work (a hub model not
downloaded yet, or too large to load in the web process) a rough guide from the model's size,
said to be one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ia3app.config import RecipeConfig
from ui import model_picker as M
from ui.context import AppContext

MAX_TIMED_PARAMETERS = 1.0e9
"""Larger models are not loaded into the web process just to time them (the rough guide is shown)."""
_CACHE: dict[tuple, float] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    """Training time for the recipe's steps; None while a measurement is pending."""
    source: str
    """Where the number comes from, in words."""
    pending: bool = False
    """True when timing real steps now would give a measured number (see measure())."""


def _key(model_path: str, recipe: RecipeConfig, dataset_id: Any, template: dict | None) -> tuple:
    return (model_path, recipe.batch_size, recipe.grad_accumulation, recipe.max_length, recipe.precision,
            dataset_id, (template or {}).get("input"), str((template or {}).get("choices")))


def from_earlier_jobs(ctx: AppContext, uid: int, model_path: str, recipe: RecipeConfig) -> tuple[float, int] | None:
    """(seconds per step, job id) of the user's latest finished job of this model and batch shape here."""
    from jobs import queue

    for job in queue.list_jobs(ctx.db(), uid):
        if job.status != "succeeded" or job.request is None or job.result is None:
            continue
        spec = job.request.spec
        if spec.model != model_path or (spec.recipe.batch_size, spec.recipe.max_length) != (recipe.batch_size,
                                                                                             recipe.max_length):
            continue
        training = job.result.training
        steps = training.steps - training.resumed_from_step
        if steps >= 2 and training.wall_s:
            return training.wall_s / steps, job.id
    return None


def _timeable(key: str, model_path: str | None, hw: M.Hardware) -> str | None:
    """Why this model cannot be timed here now; None when it can."""
    choice = M.BY_KEY.get(key)
    if key not in (M.TINY, M.LOCAL) and not M.is_cached(key):
        return "the bundled model is not converted yet" if M.is_bundled(key) else "the model is not downloaded yet"
    if model_path is None:
        return "the model is not chosen yet"
    if choice and choice.parameters > MAX_TIMED_PARAMETERS and hw.device == "cpu":
        return "the model is too large to time in the web app"
    return None


def estimate(ctx: AppContext, uid: int | None, key: str, model_path: str | None, recipe: RecipeConfig,
             rows: list[dict] | None, template: dict | None, dataset_id: Any, params: float | None,
             tokens_per_example: int, hw: M.Hardware) -> Estimate:
    """The best estimate available without running anything (see the module docstring)."""
    if model_path is not None:
        per_step = _CACHE.get(_key(model_path, recipe, dataset_id, template))
        if per_step is not None:
            return Estimate(per_step * recipe.steps, f"timed on this machine: {per_step:.2f} s per step")
        earlier = from_earlier_jobs(ctx, uid, model_path, recipe) if uid is not None else None
        if earlier is not None:
            return Estimate(earlier[0] * recipe.steps, f"from your job #{earlier[1]} of this model here: "
                                                       f"{earlier[0]:.2f} s per step")
    why_not = _timeable(key, model_path, hw)
    if why_not is None and rows and template:
        return Estimate(None, "timing a few real training steps of this model on this machine…", pending=True)
    if why_not is None:
        why_not = "it is timed on this machine once your data and template are chosen"
    rough = M.estimate_seconds(params, recipe.steps, recipe.batch_size, tokens_per_example, hw) if params else None
    return Estimate(rough, f"a rough guide from the model's size, not measured: {why_not}")


def measure(model_path: str, recipe: RecipeConfig, rows: list[dict], template: dict, dataset_id: Any) -> float:
    """Time real steps (one measurement at a time in this process); returns seconds per step, cached."""
    from ia3app.recipe.step_timing import time_steps
    from ia3app.templates.spec import TemplateSpec

    key = _key(model_path, recipe, dataset_id, template)
    with _LOCK:
        if key not in _CACHE:
            sample = rows[: max(recipe.batch_size * 4, 32)]
            _CACHE[key] = time_steps(model_path, TemplateSpec.from_dict(template), sample, recipe).seconds_per_step
        return _CACHE[key]


def describe(est: Estimate, steps: int) -> str:
    if est.seconds is None:
        return f"Estimated training time for {steps} steps: {est.source}"
    when = M.format_duration(est.seconds)
    return (f"Estimated training time: **{'' if est.seconds < 5 else 'about '}{when}** for {steps} steps "
            f"({est.source}; loading the model and evaluating add to it).")

