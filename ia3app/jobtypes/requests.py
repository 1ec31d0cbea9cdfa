"""What a job asks for: a training job's :class:`JobSpec` (validated on construction), the data it reads
(:class:`DataRef`, with the :class:`Holdout` split and its one seed rule), the labels people see
(:class:`JobLabels`), the queued :class:`JobRequest`, and a suggest job's :class:`SuggestRequest`.
Each type's ``to_dict`` / ``from_dict`` give the stored JSON-able shape (ia3app.jobtypes.json_text makes
the text).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ia3app.config import RecipeConfig, check_keys
from ia3app.errors import UserError
from ia3app.templates.spec import TemplateSpec

EVAL_METHODS = ("zero-shot", "in-context", "t-few")
"""What a job can compare on its held-out rows (ia3app.evaluation.compare runs them)."""
MIN_FOLDS, MAX_FOLDS = 2, 10
"""Cross-validation folds a job may ask for (JobSpec.cv_folds)."""
JOB_KINDS = ("train", "suggest")
"""What a queued job does: train an adapter (JobRequest) or suggest pool rows to label (SuggestRequest)."""
DEFAULT_SUGGEST_N, MAX_SUGGEST_N = 8, 200


def _text_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(value.strip()))


def _check_template(value: Any, what: str) -> str | None:
    if not isinstance(value, TemplateSpec):
        return f"{what} must be a TemplateSpec (got {type(value).__name__}; JobSpec.from_dict reads JSON)"
    return None


@dataclass
class JobSpec:
    """Everything a training job needs besides its data; validated on construction."""

    model: str
    """Hub id or local folder of the backbone (T0-style models are the recipe's choice)."""
    template: TemplateSpec
    """How a row becomes an input and its answer choices (evaluation and predictions use it)."""
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the backbone."""
    init_vectors: str | None = None
    """Path or URL of T-Few's released (IA)^3 vectors to start from (T0-3B only)."""
    eval_methods: list[str] = field(default_factory=lambda: list(EVAL_METHODS))
    """Which of zero-shot, in-context, t-few to evaluate on held-out rows."""
    train_templates: list[TemplateSpec] = field(default_factory=list)
    """More templates for training only: as in T-Few, each example is rendered with a random one of
    `template` and these at each step."""
    cv_folds: int | None = None
    """k-fold cross-validation over the training rows (no held-out data): k training runs, each
    evaluated on the rows it did not see, then the adapter trained on every row (k + 1 runs)."""
    init_adapter: str | None = None
    """Folder of an earlier adapter of the same model whose vectors training starts from (the next round of
    the active-learning loop, warm-started) instead of ones; applied after init_vectors when both are set."""

    def __post_init__(self) -> None:
        problems = []
        if self.cv_folds is not None and (not isinstance(self.cv_folds, int) or isinstance(self.cv_folds, bool)
                                          or not MIN_FOLDS <= self.cv_folds <= MAX_FOLDS):
            problems.append(f"cv_folds must be a whole number from {MIN_FOLDS} to {MAX_FOLDS} (got {self.cv_folds!r})")
        if not isinstance(self.model, str) or not self.model.strip():
            problems.append("model must name a hub id or a local folder")
        for name in ("revision", "init_vectors", "init_adapter"):
            if not _text_or_none(getattr(self, name)):
                problems.append(f"{name} must be text or absent")
        if not isinstance(self.eval_methods, (list, tuple)) or any(m not in EVAL_METHODS for m in self.eval_methods):
            problems.append(f"eval_methods must be a list drawn from {', '.join(EVAL_METHODS)} "
                            f"(got {self.eval_methods!r})")
        else:
            self.eval_methods = list(self.eval_methods)
        problems.append(_check_template(self.template, "template"))
        if not isinstance(self.recipe, RecipeConfig):
            problems.append(f"recipe must be a RecipeConfig (got {type(self.recipe).__name__})")
        if not isinstance(self.train_templates, (list, tuple)):
            problems.append("train_templates must be a list of templates")
        else:
            self.train_templates = list(self.train_templates)
            problems += [_check_template(t, f"train_templates[{i}]") for i, t in enumerate(self.train_templates, 1)]
        problems = [p for p in problems if p]
        if problems:
            raise UserError("invalid job: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "template": self.template.to_dict(), "recipe": self.recipe.to_dict(),
                "revision": self.revision, "init_vectors": self.init_vectors, "eval_methods": list(self.eval_methods),
                "train_templates": [t.to_dict() for t in self.train_templates],
                **({"cv_folds": self.cv_folds} if self.cv_folds else {}),
                **({"init_adapter": self.init_adapter} if self.init_adapter else {})}

    @classmethod
    def from_dict(cls, data: Any) -> "JobSpec":
        """From JSON; every problem (unknown keys, a bad template or recipe) in one UserError."""
        if not isinstance(data, dict):
            raise UserError("a job must be a JSON object")
        check_keys(cls, data, "job field")
        missing = [k for k in ("model", "template") if k not in data]
        if missing:
            raise UserError(f"job is missing {', '.join(missing)}")
        problems, kwargs = [], dict(data)
        parsers = {"template": TemplateSpec.from_dict, "recipe": lambda d: RecipeConfig.from_dict(d or {})}
        for name, parse in parsers.items():
            if name in kwargs:
                try:
                    kwargs[name] = parse(kwargs[name])
                except (UserError, TypeError) as exc:
                    problems.append(f"{name}: {exc}" if isinstance(exc, TypeError) else str(exc))
        extras = kwargs.get("train_templates") or []
        if isinstance(extras, (list, tuple)):
            parsed = []
            for i, extra in enumerate(extras, 1):
                try:
                    parsed.append(TemplateSpec.from_dict(extra))
                except (UserError, TypeError) as exc:
                    problems.append(f"train_templates[{i}]: {exc}")
            kwargs["train_templates"] = parsed
        if problems:
            raise UserError("invalid job: " + "; ".join(problems))
        return cls(**kwargs)


@dataclass(frozen=True)
class Holdout:
    """Hold out a stratified share of the training rows for evaluation.

    The one seed rule: the split depends only on (rows, label column, fraction, seed), and ``seed``
    is the user's split seed (0 unless they change it) — never the recipe's training seed.
    """

    fraction: float
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.fraction, (int, float)) or isinstance(self.fraction, bool) or not 0 < self.fraction < 1:
            raise UserError(f"the held-out fraction must be between 0 and 1 (got {self.fraction!r})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise UserError(f"the split seed must be a whole number (got {self.seed!r})")

    def split(self, rows: list[dict], label_column: str) -> tuple[list[dict], list[dict]]:
        """(train rows, held-out rows), each in file order: the only place rows are held out."""
        from ia3app.tables import split_holdout

        return split_holdout(rows, label_column, float(self.fraction), self.seed)

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": float(self.fraction), "seed": self.seed}

    @classmethod
    def from_dict(cls, data: Any) -> "Holdout":
        if not isinstance(data, dict):
            raise UserError("a held-out split must be an object with 'fraction' and 'seed'")
        check_keys(cls, data, "held-out field", required=("fraction",))
        return cls(**data)


@dataclass(frozen=True)
class DataRef:
    """Which stored datasets a job trains and evaluates on (ids in the data store, owner-checked)."""

    dataset_id: int
    eval_dataset_id: int | None = None
    """A separate held-out dataset; or"""
    holdout: Holdout | None = None
    """hold out part of the training dataset; neither: no evaluation."""

    def __post_init__(self) -> None:
        for name in ("dataset_id", "eval_dataset_id"):
            value = getattr(self, name)
            if value is None and name == "eval_dataset_id":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"the job's {name} must be a dataset id (got {value!r})")
        if self.holdout is not None and not isinstance(self.holdout, Holdout):
            raise UserError(f"holdout must be a Holdout (got {type(self.holdout).__name__})")
        if self.eval_dataset_id is not None and self.holdout is not None:
            raise UserError("a job evaluates on a separate held-out dataset or on a held-out share, not both")

    @property
    def has_eval(self) -> bool:
        return self.eval_dataset_id is not None or self.holdout is not None


@dataclass(frozen=True)
class JobLabels:
    """How lists and pages name a job (what the user picked, not what the worker resolved)."""

    model: str | None = None
    data: str | None = None
    template: str | None = None


@dataclass
class JobRequest:
    """A queued job: the spec, its data, and its labels for people. Stored as the job's config."""

    spec: JobSpec
    data: DataRef
    labels: JobLabels = field(default_factory=JobLabels)

    def __post_init__(self) -> None:
        for name, cls in (("spec", JobSpec), ("data", DataRef), ("labels", JobLabels)):
            if not isinstance(getattr(self, name), cls):
                raise UserError(f"a job request's {name} must be a {cls.__name__}")
        if self.spec.cv_folds and self.data.has_eval:
            raise UserError("a job evaluates by cross-validation or on held-out rows, not both")

    @property
    def model_label(self) -> str:
        return self.labels.model or self.spec.model

    def to_dict(self) -> dict[str, Any]:
        # The stored shape (jobs.config) predates these types; kept so that stored jobs still read.
        return {"spec": self.spec.to_dict(), "dataset_id": self.data.dataset_id,
                "eval_dataset_id": self.data.eval_dataset_id,
                "holdout": self.data.holdout.to_dict() if self.data.holdout else None,
                "display": asdict(self.labels)}

    @classmethod
    def from_dict(cls, data: Any) -> "JobRequest":
        if not isinstance(data, dict):
            raise UserError("a job request must be a JSON object")
        known = {"spec", "dataset_id", "eval_dataset_id", "holdout", "display"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown job request field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if data.get("dataset_id") is None:
            raise UserError("the job names no dataset; submit it again from the upload page")
        holdout = data.get("holdout")
        display = data.get("display") or {}
        if not isinstance(display, dict):
            raise UserError("a job's display labels must be an object")
        check_keys(JobLabels, display, "job label")
        return cls(spec=JobSpec.from_dict(data.get("spec")),
                   data=DataRef(data["dataset_id"], data.get("eval_dataset_id"),
                                Holdout.from_dict(holdout) if holdout else None),
                   labels=JobLabels(**display))


@dataclass(frozen=True)
class SuggestRequest:
    """A suggest job: score one of the owner's unlabelled pools with a finished job's adapter and propose
    the ``n`` rows to label next (ia3app.serving.suggest). Stored as the job's config (kind "suggest")."""

    adapter_job: int
    """The succeeded training job whose adapter scores the pool."""
    pool_id: int
    """The unlabelled pool (a dataset of kind 'pool'); rows already labelled or skipped are left out."""
    n: int = DEFAULT_SUGGEST_N

    def __post_init__(self) -> None:
        for name in ("adapter_job", "pool_id"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"a suggest job's {name} must be an id (got {value!r})")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= MAX_SUGGEST_N:
            raise UserError(f"the number of rows to suggest must be a whole number from 1 to {MAX_SUGGEST_N} "
                            f"(got {self.n!r})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "SuggestRequest":
        if not isinstance(data, dict):
            raise UserError("a suggest request must be a JSON object")
        check_keys(cls, data, "suggest request field", required=("adapter_job", "pool_id"))
        return cls(**data)
