"""Training time from measurement: a few real steps of the chosen model on this machine.

A size-based guess (6·N FLOPs per token at a nominal rate) is off by an order of magnitude for
small models, whose steps are dominated by per-step overheads, not arithmetic. So the estimate
times real steps — the same loader, template rendering and train() a job runs — and scales.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.templates.spec import TemplateSpec, render_all


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


def time_steps(model: str, template: TemplateSpec, rows: Sequence[dict[str, Any]], recipe: RecipeConfig, *,
               steps: int = 4, warmup: int = 2, device: str | None = None, revision: str | None = None) -> StepTiming:
    """Load `model`, inject (IA)^3, and time `steps` training steps after `warmup` untimed ones, with the
    recipe's batch size, length, accumulation and precision on the given rows. Nothing is saved."""
    import torch

    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import load_model
    from ia3app.recipe.train import train

    examples = [ex for ex in render_all(template, rows) if ex.label is not None]
    if not examples:
        raise UserError("no labelled rows to time training steps on")
    began = time.perf_counter()
    loaded = load_model(model, revision, device=device, precision=recipe.precision)
    load_s = time.perf_counter() - began
    handle = inject(loaded.model)
    probe = dataclasses.replace(recipe, steps=warmup + steps, warmup_steps=0, checkpoint_every=0)
    marks: list[float] = []  # seconds since training began, at the end of each step
    train(handle, loaded.tokenizer, examples, probe, progress=lambda event: marks.append(event.elapsed_s),
          progress_interval_s=0)
    durations = [b - a for a, b in zip([0.0, *marks][warmup:], marks[warmup:])]
    del handle, loaded
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    kept = sorted(durations)[:-1] if len(durations) > 2 else durations
    return StepTiming(sum(kept) / len(kept), load_s, len(durations))
