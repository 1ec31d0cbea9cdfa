"""JobSpec validation and the job runner end to end on a tiny model."""

import json

import pytest

from ia3app.errors import UserError
from ia3app.pipeline import JobSpec

TEMPLATE = {"name": "sentiment", "input": "{{text}} Is it good or bad?", "choices": ["bad", "good"],
            "label_map": {"0": "bad", "1": "good"}}


def test_jobspec_round_trip_and_defaults():
    spec = JobSpec(model="some/model", template=TEMPLATE, recipe={"steps": 5, "warmup_steps": 1})
    assert spec.eval_methods == ["zero-shot", "in-context", "t-few"]
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.recipe_config().steps == 5 and again.recipe_config().batch_size == 8
    assert again.template_spec().choices == ["bad", "good"]


def test_jobspec_collects_every_problem_as_one_user_error():
    with pytest.raises(UserError) as err:
        JobSpec(model="", template={"name": "x"}, recipe={"steps": 0, "bogus": 1}, eval_methods=["few-shot"])
    text = str(err.value)
    assert text.startswith("invalid job:")
    for part in ("model must name", "eval_methods", "template is missing 'input'", "bogus"):
        assert part in text


def test_jobspec_from_dict_rejects_unknown_and_missing_fields():
    with pytest.raises(UserError, match="unknown job field"):
        JobSpec.from_dict({"model": "m", "template": TEMPLATE, "gpu": 1})
    with pytest.raises(UserError, match="missing template"):
        JobSpec.from_dict({"model": "m"})
    with pytest.raises(UserError, match="JSON object"):
        JobSpec.from_dict(["m"])
