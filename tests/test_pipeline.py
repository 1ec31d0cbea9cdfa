"""JobSpec validation and the job runner end to end on a tiny model."""

import json
from dataclasses import replace

import pytest
import torch

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import JobResult, ProgressEvent, dumps, loads
from ia3app.recipe.run_job import JobSpec
from ia3app.templates.spec import TemplateSpec

TEMPLATE_DICT = {"name": "sentiment", "input": "{{text}} Is it good or bad?", "choices": ["bad", "good"],
                 "label_map": {"0": "bad", "1": "good"}}
TEMPLATE = TemplateSpec.from_dict(TEMPLATE_DICT)


def test_jobspec_round_trip_and_defaults():
    spec = JobSpec(model="some/model", template=TEMPLATE, recipe=RecipeConfig(steps=5, warmup_steps=1))
    assert spec.eval_methods == ["zero-shot", "in-context", "t-few"]
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.recipe.steps == 5 and again.recipe.batch_size == 8
    assert again.template.choices == ["bad", "good"]
    # a stored spec may leave the recipe out: T-Few's defaults
    assert JobSpec.from_dict({"model": "m", "template": TEMPLATE_DICT}).recipe == RecipeConfig()


def test_jobspec_collects_every_problem_as_one_user_error():
    with pytest.raises(UserError) as err:
        JobSpec.from_dict({"model": "", "template": {"name": "x"}, "recipe": {"steps": 0, "bogus": 1},
                           "eval_methods": ["few-shot"]})
    text = str(err.value)
    assert text.startswith("invalid job:")
    for part in ("template is missing 'input'", "bogus"):
        assert part in text
    with pytest.raises(UserError) as err:
        JobSpec(model="", template=TEMPLATE, eval_methods=["few-shot"])
    assert "model must name" in str(err.value) and "eval_methods" in str(err.value)


def test_jobspec_takes_types_not_dicts():
    with pytest.raises(UserError, match="template must be a TemplateSpec"):
        JobSpec(model="m", template=TEMPLATE_DICT)
    with pytest.raises(UserError, match="recipe must be a RecipeConfig"):
        JobSpec(model="m", template=TEMPLATE, recipe={"steps": 5})


def test_jobspec_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(UserError, match="unknown job field"):
        JobSpec.from_dict({"model": "m", "template": TEMPLATE_DICT, "gpu": 1})
    with pytest.raises(UserError, match="missing template"):
        JobSpec.from_dict({"model": "m"})
    with pytest.raises(UserError, match="JSON object"):
        JobSpec.from_dict(["m"])


def _rows(n, offset=0):
    words = ["awful", "great"]
    return [{"text": f"film {i + offset} was {words[i % 2]}", "label": str(i % 2)} for i in range(n)]


def test_run_job_end_to_end(tiny_model_dir, tmp_path):
    from ia3app.adapters.files import load_adapter
    from ia3app.recipe.run_job import run_job
    from ia3app.serving.engine import ServingEngine

    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE,
                   recipe=RecipeConfig(steps=4, batch_size=2, warmup_steps=1, checkpoint_every=2))
    events = []
    out = tmp_path / "adapter"
    result = run_job(spec, _rows(6), _rows(4, 100), work_dir=tmp_path / "work", out_dir=out,
                     progress=events.append, should_stop=lambda: False)
    assert all(isinstance(e, ProgressEvent) for e in events)
    phases = [e.phase for e in events]
    assert phases[:2] == ["validate", "load"] and phases[-1] == "done"
    assert {"train", "evaluate", "export"} <= set(phases)
    train = [e for e in events if e.phase == "train"]
    assert [e.step for e in train] == [1, 2, 3, 4] and train[-1].eta_s == 0.0 and train[0].total_steps == 4
    assert all(e.message for e in events)

    # the folder is complete and stands alone; the result is returned (its caller stores it)
    assert isinstance(result, JobResult) and loads(JobResult, dumps(result)) == result
    assert {p.name for p in out.iterdir()} >= {"adapter.safetensors", "ia3_config.json", "peft", "README.md"}
    assert not (out / ".tmp").exists() and not (out / "results.json").exists()
    assert (out / "peft" / "adapter_config.json").is_file()
    assert result.labels == ["bad", "good"] and result.num_train == 6 and result.num_eval == 4
    assert result.params["added"] > 0 and 0 < result.params["fraction"] < 0.1
    training = result.training
    assert training.steps == 4 and training.flops > 0 and training.tokens_processed > 0
    methods = result.methods
    assert set(methods) == {"zero-shot", "in-context", "t-few"}
    for r in methods.values():
        assert len(r["confusion_matrix"]) == 2 and r["latency_s"] > 0
    assert result.ratio("in-context / t-few")["flops"] > 1
    assert result.metrics["t-few"]["accuracy"] == methods["t-few"]["accuracy"]

    vectors, config = load_adapter(out)
    assert config["template"] == spec.template.to_dict() and config["choices"] == ["bad", "good"]
    assert config["metrics"]["t-few"]["n"] == 4
    card = (out / "README.md").read_text()
    assert "PeftModel.from_pretrained" in card and "t-few" in card and "sentiment" in card

    # the adapter serves: predictions follow the T-Few evaluation on the same rows
    engine = ServingEngine(device="cpu")
    preds = engine.predict(out, _rows(4, 100))
    engine.close()
    assert [["bad", "good"].index(p.choice) for p in preds] == methods["t-few"]["predictions"]
    assert all(p.label in ("0", "1") for p in preds)

    # a second run resumes from the finished checkpoint instead of training again
    again = run_job(spec, _rows(6), None, work_dir=tmp_path / "work", out_dir=out, progress=lambda e: None)
    assert again.training.resumed_from_step == 4 and again.evaluation is None


def test_run_job_refuses_bad_data_before_loading(tmp_path):
    from ia3app.recipe.run_job import run_job

    spec = JobSpec(model=str(tmp_path / "no-model"), template=TEMPLATE, recipe=RecipeConfig(steps=2, warmup_steps=0))
    events = []
    with pytest.raises(UserError, match="column 'text'"):
        run_job(spec, [{"review": "x", "label": "0"}], None, work_dir=tmp_path / "w", out_dir=tmp_path / "o",
                progress=events.append)
    assert [e.phase for e in events] == ["validate"]  # nothing loaded
    with pytest.raises(UserError, match="no rows"):
        run_job(spec, [], None, work_dir=tmp_path / "w", out_dir=tmp_path / "o", progress=events.append)


def test_run_job_cancelled(tiny_model_dir, tmp_path):
    from ia3app.errors import Cancelled
    from ia3app.recipe.run_job import run_job

    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE,
                   recipe=RecipeConfig(steps=6, batch_size=2, warmup_steps=1, checkpoint_every=2))
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        run_job(spec, _rows(6), None, work_dir=tmp_path / "w", out_dir=tmp_path / "o", progress=lambda e: None,
                should_stop=stop)
    assert not (tmp_path / "o" / "ia3_config.json").exists()
    assert any((tmp_path / "w" / "checkpoints").iterdir())


@pytest.mark.parametrize("kind", ["gpt2", "bart"])
def test_run_job_other_architectures(kind, tiny_model_dir, tmp_path):
    from ia3app.recipe.run_job import run_job
    from ia3app.serving.engine import ServingEngine

    spec = JobSpec(model=str(tiny_model_dir(kind)), template=TEMPLATE, eval_methods=["t-few"],
                   recipe=RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0))
    result = run_job(spec, _rows(4), _rows(3, 50), work_dir=tmp_path / "w", out_dir=tmp_path / "o",
                     progress=lambda e: None)
    assert list(result.methods) == ["t-few"] and result.warnings == []
    engine = ServingEngine(device="cpu")
    preds = engine.predict(tmp_path / "o", _rows(3, 50))
    engine.close()
    assert [["bad", "good"].index(p.choice) for p in preds] == result.method("t-few")["predictions"]


def test_a_kept_model_serves_the_next_job_like_a_fresh_load(tiny_model_dir, tmp_path):
    """A worker's ModelCache: the second job of the same model reuses the loaded model and ends
    with exactly the adapter a fresh load gives (vectors reset, merged weights restored)."""
    from ia3app.adapters.files import load_adapter
    from ia3app.backbones.cache import ModelCache
    from ia3app.recipe.run_job import run_job

    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE, eval_methods=["t-few"],
                   recipe=RecipeConfig(steps=3, batch_size=2, checkpoint_every=0, seed=1))
    other = JobSpec(model=spec.model, template=TEMPLATE, recipe=replace(spec.recipe, seed=2), eval_methods=["t-few"])
    models = ModelCache()
    run_job(other, _rows(6), _rows(4, 100), work_dir=tmp_path / "w0", out_dir=tmp_path / "a0",
            progress=lambda e: None, models=models)
    run_job(spec, _rows(6), _rows(4, 100), work_dir=tmp_path / "w1", out_dir=tmp_path / "a1",
            progress=lambda e: None, models=models)
    assert models.hits == 1
    run_job(spec, _rows(6), _rows(4, 100), work_dir=tmp_path / "w2", out_dir=tmp_path / "a2",
            progress=lambda e: None)  # a fresh load
    kept, _ = load_adapter(tmp_path / "a1")
    fresh, _ = load_adapter(tmp_path / "a2")
    for key, value in fresh.items():
        assert torch.equal(kept[key], value), key


def test_a_long_row_is_fitted_and_named_in_the_warnings(tiny_model_dir, tmp_path):
    from ia3app.recipe.run_job import run_job

    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE, eval_methods=["t-few"],
                   recipe=RecipeConfig(steps=1, batch_size=2, warmup_steps=0, checkpoint_every=0, max_length=64))
    train = _rows(4)
    train[2]["text"] = "a very long review " * 10
    result = run_job(spec, train, _rows(2, 50), work_dir=tmp_path / "w", out_dir=tmp_path / "o",
                     progress=lambda e: None)
    assert any(w.startswith("1 training row is longer than the model reads at once (about 64 word pieces): in "
                            "row 3 the end of the longest text ('text') was left out") for w in result.warnings)
    assert not any("held-out" in w for w in result.warnings)


def test_a_job_renders_each_row_once_per_template(tiny_model_dir, tmp_path, monkeypatch):
    """Issue 21 item 3: checking a template against the rows and rendering them are one pass — each training
    row is rendered once by each of the job's templates and each held-out row once by the template, through a
    whole job (validation, training, every evaluation method, export)."""
    from collections import Counter

    import ia3app.templates.rendering as rendering_module
    from ia3app.recipe.run_job import run_job

    inputs = Counter()
    real = rendering_module.render_text

    def counting(source, what, context, limit):
        if what == "input template":
            inputs[(source, context["text"])] += 1
        return real(source, what, context, limit)

    monkeypatch.setattr(rendering_module, "render_text", counting)
    other = TemplateSpec.from_dict({**TEMPLATE_DICT, "name": "other", "input": "Review: {{text}} Good or bad?"})
    spec = JobSpec(model=str(tiny_model_dir("t0")), template=TEMPLATE, train_templates=[other],
                   recipe=RecipeConfig(steps=2, batch_size=2, warmup_steps=0, checkpoint_every=0))
    train, held = _rows(6), _rows(4, 100)
    result = run_job(spec, train, held, work_dir=tmp_path / "w", out_dir=tmp_path / "o", progress=lambda e: None)
    assert set(result.methods) == {"zero-shot", "in-context", "t-few"} and result.num_eval == 4
    expected = Counter({(TEMPLATE.input, r["text"]): 1 for r in train + held})
    expected.update({(other.input, r["text"]): 1 for r in train})
    assert inputs == expected
