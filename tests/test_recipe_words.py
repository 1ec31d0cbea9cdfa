"""A recipe that cannot run says so with the labels a person sees on the Train page, not code names."""

import pytest

from ia3app.errors import UserError
from ui import train_page as TR


def values(**changes):
    from ia3app.config import RecipeConfig

    defaults = RecipeConfig()
    return [changes.get(name, getattr(defaults, name)) for name in TR.RECIPE_FIELDS]


def test_recipe_refusals_use_the_pages_labels():
    with pytest.raises(UserError) as info:
        TR.recipe_from_values(values(steps=40, warmup_steps=60))
    text = str(info.value)
    assert text.startswith("these training settings cannot run: ")
    assert f"“{TR.HELP['warmup_steps']}” (60) exceeds “{TR.HELP['steps']}” (40)" in text
    assert "warmup_steps" not in text and "warmup_ratio" not in text and "of the steps" in text
    with pytest.raises(UserError) as info:
        TR.recipe_from_values(values(batch_size=8, grad_accumulation=3))
    assert f"“{TR.HELP['batch_size']}” (8) must be divisible by “{TR.HELP['grad_accumulation']}” (3)" in str(info.value)
