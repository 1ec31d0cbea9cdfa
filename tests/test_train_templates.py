"""T-Few's random template per example at each step: rows rendered by several templates."""

import pytest
import torch

from ia3app.config import RecipeConfig
from ia3app.errors import Cancelled, UserError
from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.backbones.loading import load_model
from ia3app.recipe.run_job import JobSpec, run_job
from ia3app.templates.spec import TemplateSpec
from ia3app.recipe.train import _draw, train

ROWS = [("great fun, loved it", 0), ("dull and far too long", 1), ("a wonderful cast", 0), ("money back", 1)]
CHOICES = ("positive", "negative")


def rendered(template: str) -> list[Example]:
    return [Example(template.format(text), CHOICES, label) for text, label in ROWS]


ONE = rendered("{} Is this review positive or negative?")
OTHER = rendered("Review: {}\nSentiment:")
BOTH = [(a, b) for a, b in zip(ONE, OTHER)]


def fresh(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir("t0")), device="cpu")
    return loaded, inject(loaded.model)


def recipe(**kw):
    return RecipeConfig(**{**dict(steps=12, batch_size=4, warmup_steps=2, lr=3e-2, seed=5), **kw})


def test_each_draw_picks_one_rendering_uniformly():
    g = torch.Generator().manual_seed(0)
    picks = [_draw(BOTH[0], g) for _ in range(2000)]
    share = sum(p is BOTH[0][1] for p in picks) / len(picks)
    assert 0.45 < share < 0.55
    assert _draw(ONE[0], g) is ONE[0]  # a plain Example is used as it is


def test_training_uses_every_template_and_resumes_identically(tiny_model_dir, tmp_path):
    loaded, handle = fresh(tiny_model_dir)
    train(handle, loaded.tokenizer, ONE, recipe())
    only_first = handle.vectors()

    loaded, handle = fresh(tiny_model_dir)
    straight = train(handle, loaded.tokenizer, BOTH, recipe())
    mixed = handle.vectors()
    assert any(not torch.allclose(mixed[k], only_first[k]) for k in mixed)  # the second template was trained on

    loaded, handle = fresh(tiny_model_dir)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        train(handle, loaded.tokenizer, BOTH, recipe(checkpoint_every=3), checkpoint_dir=tmp_path,
              should_stop=lambda: next(calls) >= 6)
    loaded, handle = fresh(tiny_model_dir)
    resumed = train(handle, loaded.tokenizer, BOTH, recipe(checkpoint_every=3), checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 6
    for key, value in handle.vectors().items():
        torch.testing.assert_close(value, mixed[key], atol=1e-6, rtol=0)
    assert resumed.losses == pytest.approx(straight.losses, abs=1e-6)


def test_a_rendering_without_label_is_refused(tiny_model_dir):
    loaded, handle = fresh(tiny_model_dir)
    bad = [(ONE[0], Example("no label", CHOICES, None))]
    with pytest.raises(UserError, match="no label"):
        train(handle, loaded.tokenizer, bad, recipe())


def test_job_trains_with_extra_templates_and_serves_the_main_one(tiny_model_dir, tmp_path):
    main = {"name": "main", "input": "{{ text }} Positive or negative?", "choices": list(CHOICES),
            "label_column": "label"}
    other = {"name": "other", "input": "Review: {{ text }}\nSentiment:", "choices": list(CHOICES),
             "label_column": "label"}
    rows = [{"text": t, "label": CHOICES[y]} for t, y in ROWS]
    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TemplateSpec.from_dict(main),
                   train_templates=[TemplateSpec.from_dict(other)], recipe=recipe(steps=4), eval_methods=["t-few"])
    result = run_job(spec, rows, rows, work_dir=tmp_path / "work", out_dir=tmp_path / "out",
                     progress=lambda event: None, should_stop=lambda: False)
    assert result.template.name == "main"
    assert [t.name for t in result.train_templates] == ["other"]
    with pytest.raises(UserError, match="train_templates"):
        JobSpec.from_dict({"model": "m", "template": main, "train_templates": [{"name": "x"}]})
    with pytest.raises(UserError, match="train_templates"):
        JobSpec(model="m", template=spec.template, train_templates=[{"name": "x"}])


def test_cli_train_template_flag(tiny_model_dir, tmp_path, fewshot_dir):
    import json

    from ia3app.cli.main import main

    out = tmp_path / "adapter"
    code = main(["train", "--csv", str(fewshot_dir / "sst2_16shot_seed0.csv"), "--template", "sentiment",
                 "--train-template", "text_label", "--column", "text=sentence", "--model", str(tiny_model_dir("t0")),
                 "--out", str(out), "--steps", "3", "--batch-size", "4", "--methods", "t-few", "--quiet"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["template"]["name"] == "sentiment"
    assert [t["name"] for t in results["train_templates"]] == ["text_label"]
