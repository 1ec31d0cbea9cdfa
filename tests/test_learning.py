"""Evidence the recipe learns: a synthetic sentiment task, a tiny random T0-shaped model, vectors only.

The task: a few neutral filler words with two sentiment keywords mixed in at random places; the
label is the keywords' polarity. Training rows and held-out rows are drawn independently (seeded).
Only the (IA)^3 vectors train; held-out accuracy must go from chance to at least 0.80.
"""

import random

import pytest
import torch

from ia3app.config import RecipeConfig
from ia3app.example import Example
from ia3app.adapters.ia3 import inject, is_ia3_parameter
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import score_choices
from ia3app.recipe.train import train

POSITIVE = ("great", "wonderful", "superb", "loved")
NEGATIVE = ("awful", "terrible", "boring", "hated")
FILLER = ("the", "movie", "film", "plot", "actor", "scene", "was", "and", "it", "story", "very", "this")
CHOICES = ("positive", "negative")


def sentiment_task(n: int, seed: int, keywords: int = 2, filler: int = 4) -> list[Example]:
    """n balanced examples: `filler` neutral words with `keywords` keywords of one polarity mixed in."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(filler)]
        for _ in range(keywords):
            words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == 0 else NEGATIVE))
        rows.append(Example(" ".join(words) + ". Positive or negative?", CHOICES, label))
    rng.shuffle(rows)
    return rows


def accuracy(loaded, examples) -> float:
    results = score_choices(loaded.model, loaded.tokenizer, examples, batch_size=50)
    return sum(r.pred == e.label for r, e in zip(results, examples)) / len(examples)


def test_task_generator_is_seeded_and_balanced():
    assert sentiment_task(10, seed=1) == sentiment_task(10, seed=1)
    assert sentiment_task(10, seed=1) != sentiment_task(10, seed=2)
    assert sum(e.label for e in sentiment_task(200, seed=2)) == 100


@pytest.mark.slow  # ~90 s on a 2-core CPU
def test_recipe_lifts_held_out_accuracy_from_chance(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("t0", d_model=64, layers=2)), device="cpu")
    handle = inject(loaded.model)
    base = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if not is_ia3_parameter(n)}
    train_rows = sentiment_task(64, seed=1)  # few-shot: 64 labelled rows
    held_out = sentiment_task(200, seed=2)
    before = accuracy(loaded, held_out)
    # The recipe with a CI-sized budget: 300 steps (not 1,000), so a 10x learning rate. Measured on
    # this 2-core CPU: 0.50 -> 0.905 (tiny model seed 0); seeds 1 and 2 gave 0.955 and 0.96. With 32
    # rows it reached 0.785-0.85 (it starts to memorise the filler), hence 64.
    recipe = RecipeConfig(steps=300, lr=3e-2, warmup_steps=18, batch_size=8, checkpoint_every=0, seed=0)
    result = train(handle, loaded.tokenizer, train_rows, recipe)
    after = accuracy(loaded, held_out)
    print(f"held-out accuracy {before:.3f} -> {after:.3f}; {result.wall_s:.1f}s, loss {result.losses}")
    assert before <= 0.65  # chance (balanced two-way task)
    assert after >= 0.80
    for n, p in loaded.model.named_parameters():  # vectors only: every base weight untouched
        if not is_ia3_parameter(n):
            assert torch.equal(p, base[n]), n
