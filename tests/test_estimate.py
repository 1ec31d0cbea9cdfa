"""Training-time estimates come from timing real training steps of the model on the user's rows.

How close an estimate lands to the real run is a timing claim: it is measured side by side, under one load,
by bench/bench_estimate.py (estimate / actual per dataset shape, bench/RESULTS.md), not asserted here — two
timings taken minutes apart on a busy machine differ by whatever the load did in between.
"""

from __future__ import annotations

import csv

import pytest

from ia3app.config import RecipeConfig
from ia3app.recipe.step_probe import time_steps
from ia3app.templates.spec import TemplateSpec

SENTIMENT = TemplateSpec(name="s", input="{{sentence}} Is this review positive or negative?", label_column="label",
                         choices=["negative", "positive"])


def sst2_rows(fewshot_dir):
    with open(fewshot_dir / "sst2_16shot_seed0.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_timed_steps_are_real_steps_of_this_model_and_scale_with_the_run(tiny_model_dir, fewshot_dir):
    recipe = RecipeConfig(steps=24, batch_size=8, warmup_steps=0, checkpoint_every=0)
    timing = time_steps(str(tiny_model_dir("t0")), SENTIMENT, sst2_rows(fewshot_dir), recipe, steps=3, warmup=1)
    assert timing.seconds_per_step > 0 and timing.load_s > 0  # measured, not a table's guess
    assert timing.training_seconds(recipe.steps) == pytest.approx(recipe.steps * timing.seconds_per_step)
    assert timing.training_seconds(2 * recipe.steps) == pytest.approx(2 * timing.training_seconds(recipe.steps))


def test_timing_refuses_rows_without_labels(tiny_model_dir):
    from ia3app.errors import UserError

    with pytest.raises(UserError, match="no labelled rows"):
        time_steps(str(tiny_model_dir("t0")), SENTIMENT, [{"sentence": "x", "label": ""}], RecipeConfig())
