"""Training-time estimates come from timing real steps, and land within 2x of the real run."""

from __future__ import annotations

import csv
import time

import pytest

from ia3app.config import RecipeConfig
from ia3app.recipe.step_probe import time_steps
from ia3app.templates.spec import TemplateSpec, render_all

SENTIMENT = TemplateSpec(name="s", input="{{sentence}} Is this review positive or negative?", label_column="label",
                         choices=["negative", "positive"])


def sst2_rows(fewshot_dir):
    with open(fewshot_dir / "sst2_16shot_seed0.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def actual_seconds(model_dir, rows, recipe) -> float:
    """What a job's training takes: the same loader and train(), timed over the whole run."""
    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import load_model
    from ia3app.recipe.train import train

    loaded = load_model(str(model_dir))
    handle = inject(loaded.model)
    began = time.perf_counter()
    train(handle, loaded.tokenizer, render_all(SENTIMENT, rows), recipe)
    return time.perf_counter() - began


def check_within_2x(model_dir, rows, recipe) -> float:
    timing = time_steps(str(model_dir), SENTIMENT, rows, recipe)
    estimate = timing.training_seconds(recipe.steps)
    actual = actual_seconds(model_dir, rows, recipe)
    ratio = estimate / actual
    print(f"estimate {estimate:.1f} s, actual {actual:.1f} s, ratio {ratio:.2f}")
    assert 0.5 <= ratio <= 2.0, (estimate, actual)
    return ratio


@pytest.mark.slow
def test_tiny_model_estimate_is_within_2x(tiny_model_dir, fewshot_dir):
    recipe = RecipeConfig(steps=24, batch_size=8, warmup_steps=0, checkpoint_every=0)
    check_within_2x(tiny_model_dir("t0"), sst2_rows(fewshot_dir), recipe)


@pytest.mark.slow
def test_t5_small_shaped_estimate_is_within_2x(tiny_model_dir, fewshot_dir):
    model = tiny_model_dir("t0", d_model=512, layers=6, heads=8, d_ff=2048)  # T5-small's shape, random weights
    recipe = RecipeConfig(steps=8, batch_size=4, max_length=64, warmup_steps=0, checkpoint_every=0)
    check_within_2x(model, sst2_rows(fewshot_dir), recipe)


def test_timing_refuses_rows_without_labels(tiny_model_dir):
    from ia3app.errors import UserError

    with pytest.raises(UserError, match="no labelled rows"):
        time_steps(str(tiny_model_dir("t0")), SENTIMENT, [{"sentence": "x", "label": ""}], RecipeConfig())
