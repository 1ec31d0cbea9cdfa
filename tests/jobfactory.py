"""Small typed jobs for the queue tests: a JobRequest and a JobResult with made-up figures."""

from dataclasses import replace

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, JobRequest, JobResult, JobSpec, TrainingStats
from ia3app.templates.spec import TemplateSpec

TEMPLATE = TemplateSpec.from_dict({"name": "sentiment", "input": "{{text}} Was it good or bad?",
                                   "label_column": "label", "choices": ["bad", "good"]})


def request(dataset_id: int = 1, model: str = "some/model", **recipe) -> JobRequest:
    spec = JobSpec(model=model, template=TEMPLATE, recipe=RecipeConfig(**recipe), eval_methods=[])
    return JobRequest(spec, DataRef(dataset_id))


def result(accuracy: float = 0.5, **overrides) -> JobResult:
    fields = dict(model="some/model", template=TEMPLATE, recipe=RecipeConfig(), labels=["bad", "good"],
                  params={"base": 100, "added": 3, "fraction": 0.03, "adapter_bytes": 12},
                  training=TrainingStats(steps=2, wall_s=1.0, examples_per_s=8.0, tokens_processed=64, flops=1e6),
                  metrics={"t-few": {"accuracy": accuracy, "macro_f1": accuracy, "n": 4}}, num_train=6, num_eval=4)
    return JobResult(**{**fields, **overrides})


def on_dataset(req: JobRequest, dataset_id: int) -> JobRequest:
    """The same request for another dataset (e.g. another user's copy of the rows)."""
    return replace(req, data=replace(req.data, dataset_id=dataset_id))
