"""What a finished job leaves behind: a training job's :class:`JobResult` (with its :class:`TrainingStats`),
and a suggest job's :class:`SuggestResult` (its :class:`Suggestion` s). The CLI, the model card and the
results page read these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ia3app.config import RecipeConfig, check_keys
from ia3app.errors import UserError
from ia3app.evaluation.report import EvaluationReport, Headline, MethodReport
from ia3app.templates.spec import TemplateSpec

LOSS_CURVE_POINTS = 200


@dataclass
class TrainingStats:
    steps: int
    """Optimizer steps completed in total (including those before a resume)."""
    wall_s: float
    """Seconds spent training in the last run (attempt)."""
    examples_per_s: float
    tokens_processed: int
    flops: float
    """Training FLOPs (ia3app.evaluation.flops.training_flops)."""
    resumed_from_step: int = 0
    work_tokens: int = 0
    """Padded tokens the last run's steps carried (0 in jobs stored before it was recorded): with wall_s,
    what a step of this model costs here (ia3app.recipe.step_cost)."""
    attention_pairs: int = 0
    """Attention token pairs of the last run's steps (ia3app.recipe.step_cost), 0 where not recorded."""
    setup: dict[str, Any] = field(default_factory=dict)
    """How the loop was set up (ia3app.recipe.device_plan: compile, checkpointing, grad_accumulation, ...)."""
    final_losses: dict[str, float] = field(default_factory=dict)
    """The last step's losses: lm, ul, ln, total."""
    loss_curve: list[list[float]] = field(default_factory=list)
    """[step, total, lm, ul, ln] per recorded step (at most LOSS_CURVE_POINTS, evenly spaced)."""


@dataclass
class JobResult:
    """Everything a finished job measured. Stored once, as the job's result in the queue (the CLI
    writes it to results.json); the adapter folder's ia3_config.json keeps what the adapter needs
    to stand alone (template, choices, recipe, headline metrics)."""

    model: str
    template: TemplateSpec
    recipe: RecipeConfig
    labels: list[str]
    """The answer choices' names, in order (class names for confusion matrices)."""
    params: dict[str, Any]
    """ia3app.adapters.params.ParameterReport as a dict: base, added, fraction, adapter_bytes, ..."""
    training: TrainingStats
    evaluation: EvaluationReport | None = None
    """ia3app.evaluation.compare.evaluate_methods' report (its keys: ia3app.evaluation.report)."""
    metrics: dict[str, Headline] = field(default_factory=dict)
    """Headline numbers per method: accuracy, macro_f1, n."""
    revision: str | None = None
    train_templates: list[TemplateSpec] = field(default_factory=list)
    init_vectors: str | None = None
    num_train: int = 0
    num_eval: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def methods(self) -> dict[str, MethodReport]:
        """The evaluation report per method evaluated ({} when there was no evaluation)."""
        return (self.evaluation or {}).get("methods") or {}

    def method(self, name: str) -> MethodReport:
        """The evaluation report of one method ({} when it was not evaluated)."""
        return self.methods.get(name) or {}  # type: ignore[return-value]

    def ratio(self, name: str = "in-context / t-few") -> dict[str, float | None]:
        """Cost ratios between two methods ({} when one of them was not evaluated)."""
        return ((self.evaluation or {}).get("ratios") or {}).get(name) or {}

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "revision": self.revision, "template": self.template.to_dict(),
                "train_templates": [t.to_dict() for t in self.train_templates], "labels": list(self.labels),
                "recipe": self.recipe.to_dict(), "init_vectors": self.init_vectors, "params": dict(self.params),
                "training": asdict(self.training), "evaluation": self.evaluation, "metrics": self.metrics,
                "num_train": self.num_train, "num_eval": self.num_eval, "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, data: Any) -> "JobResult":
        if not isinstance(data, dict):
            raise UserError("a job result must be a JSON object")
        check_keys(cls, data, "job result field", required=("model", "template", "recipe", "training"))
        kwargs = dict(data)
        kwargs["template"] = TemplateSpec.from_dict(data["template"])
        kwargs["train_templates"] = [TemplateSpec.from_dict(t) for t in data.get("train_templates") or []]
        kwargs["recipe"] = RecipeConfig.from_dict(data["recipe"])
        check_keys(TrainingStats, data["training"], "training figure")
        kwargs["training"] = TrainingStats(**data["training"])
        kwargs.setdefault("labels", [])
        kwargs.setdefault("params", {})
        kwargs["metrics"] = data.get("metrics") or {}
        kwargs["warnings"] = list(data.get("warnings") or [])
        return cls(**kwargs)


@dataclass
class Suggestion:
    """One pool row proposed for labelling, and why: its top two choices and their probabilities."""

    index: int
    """The row's position in the pool (0-based, file order)."""
    row: dict[str, Any]
    margin: float
    """p(top choice) − p(second choice): the smaller, the less sure the adapter is."""
    top: list[dict[str, Any]]
    """The two most likely answers, each {"label": as the data writes it, "choice": the words, "probability"}."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuggestResult:
    """What a suggest job leaves behind (its stored result), also the CLI's and the API's answer."""

    suggestions: list[Suggestion]
    scored: int
    """Pool rows scored (the pool less the rows already labelled or skipped)."""
    excluded: int = 0
    """Pool rows left out because they were labelled or skipped in an earlier round."""
    rows_per_s: float = 0.0
    """Pool scoring throughput (rows, each with all its choices and its representation, per second)."""
    candidates: int = 0
    """How many of the least sure rows the diversity rule chose among (CANDIDATE_FACTOR × n)."""
    method: str = ""
    """The ranking and diversity rule, in words."""
    adapter_job: int | None = None
    pool_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "suggestions": [s.to_dict() for s in self.suggestions]}

    @classmethod
    def from_dict(cls, data: Any) -> "SuggestResult":
        if not isinstance(data, dict):
            raise UserError("a suggest result must be a JSON object")
        check_keys(cls, data, "suggest result field", required=("suggestions", "scored"))
        items = data["suggestions"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UserError("a suggest result's suggestions must be a list of objects")
        for item in items:
            check_keys(Suggestion, item, "suggestion field", required=("index", "row", "margin", "top"))
        return cls(**{**data, "suggestions": [Suggestion(**i) for i in items]})
