"""The job contract (ia3app.jobtypes): typed, serialized in one place, readable from stored jobs."""

import json
import subprocess
import sys

import pytest

from ia3app.config import RecipeConfig
from ia3app.errors import UserError
from ia3app.jobtypes import (DataRef, Holdout, JobLabels, JobRequest, JobResult, JobSpec, ProgressEvent, dumps,
                             loads)
from jobfactory import TEMPLATE, request, result

ROWS = [{"text": f"row {i}", "label": "good" if i % 3 else "bad"} for i in range(12)]


def test_the_job_types_import_no_torch():
    code = ("import sys, ia3app.jobtypes, ia3app.recipe.run_job, jobs.queue\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_request_round_trips_and_keeps_the_stored_shape():
    req = JobRequest(JobSpec(model="m", template=TEMPLATE, recipe=RecipeConfig(steps=70), train_templates=[TEMPLATE]),
                     DataRef(3, holdout=Holdout(0.25, 5)), JobLabels(model="tiny-demo", data="r.csv", template="s"))
    assert loads(JobRequest, dumps(req)) == req
    stored = json.loads(dumps(req))  # jobs.config as earlier versions wrote it: old queued jobs still run
    assert set(stored) == {"spec", "dataset_id", "eval_dataset_id", "holdout", "display"}
    assert stored["holdout"] == {"fraction": 0.25, "seed": 5} and stored["display"]["model"] == "tiny-demo"
    legacy = {"spec": {"model": "m", "template": TEMPLATE.to_dict(), "recipe": {"steps": 3, "warmup_steps": 0}},
              "dataset_id": 1, "eval_dataset_id": None, "holdout": {"fraction": 0.5}}
    old = JobRequest.from_dict(legacy)
    assert old.data.holdout == Holdout(0.5, 0) and old.spec.recipe.steps == 3 and old.model_label == "m"


def test_request_problems_are_user_errors():
    with pytest.raises(UserError, match="names no dataset"):
        JobRequest.from_dict({"spec": {"model": "m", "template": TEMPLATE.to_dict()}})
    with pytest.raises(UserError, match="unknown job request field"):
        JobRequest.from_dict({"spec": {}, "dataset_id": 1, "gpu": 0})
    with pytest.raises(UserError, match="not both"):
        DataRef(1, eval_dataset_id=2, holdout=Holdout(0.2))
    with pytest.raises(UserError, match="dataset id"):
        DataRef(0)
    with pytest.raises(UserError, match="not a stored JobRequest"):
        loads(JobRequest, "{not json")


def test_holdout_is_one_seeded_stratified_split():
    train, held = Holdout(0.25, seed=0).split(ROWS, "label")
    assert len(train) + len(held) == len(ROWS) and {r["label"] for r in held} == {"good", "bad"}
    assert Holdout(0.25, seed=0).split(ROWS, "label") == (train, held)  # same seed, same rows
    assert any(Holdout(0.25, seed=s).split(ROWS, "label")[1] != held for s in range(1, 5))  # the seed matters
    assert Holdout(0.25).seed == 0  # the rule: the user's split seed, 0 unless changed (never the recipe's)
    for bad in (0, 1, 1.5, "0.2", None):
        with pytest.raises(UserError, match="between 0 and 1"):
            Holdout(bad)


def test_progress_event_timing_is_computed_once_and_stores_round_trip():
    first = ProgressEvent.train_step(step=11, total_steps=20, first_step=10, elapsed_s=2.0,
                                     losses={"total": 1.5, "lm": 1.0, "ul": 0.3, "ln": 0.2}, lr=1e-3, batch_size=8)
    # one step in 2 s since the resume at step 10: 0.5 steps/s, 4 examples/s, 9 steps left = 18 s
    assert first.examples_per_s == pytest.approx(4.0) and first.eta_s == pytest.approx(18.0)
    assert first.loss == 1.5 and first.loss_ul == 0.3 and first.phase == "train"
    assert ProgressEvent.from_dict(first.to_dict()) == first
    assert "id" not in ProgressEvent.event_fields() and "eta_s" in ProgressEvent.event_fields()
    with pytest.raises(ValueError, match="unknown progress phase"):
        ProgressEvent("training")


def test_result_round_trips_and_reads_old_results():
    res = result(0.75, evaluation={"methods": {"t-few": {"accuracy": 0.75}},
                                   "ratios": {"in-context / t-few": {"flops": 9.0}}})
    assert loads(JobResult, dumps(res)) == res
    assert res.method("t-few")["accuracy"] == 0.75 and res.method("zero-shot") == {}
    assert res.ratio()["flops"] == 9.0 and result().ratio() == {}
    old = json.loads(dumps(res))
    del old["train_templates"], old["warnings"]  # results stored before those fields existed
    assert JobResult.from_dict(old).train_templates == [] and JobResult.from_dict(old).warnings == []
    with pytest.raises(UserError, match="unknown job result field"):
        JobResult.from_dict({**old, "extra": 1})


def test_queue_request_factory_is_valid():
    assert request(2).data.dataset_id == 2 and not request().data.has_eval
