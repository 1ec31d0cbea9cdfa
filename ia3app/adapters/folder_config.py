"""The keys of an adapter folder's ia3_config.json (written by ia3app.adapters.files.save_adapter).

TypedDicts, not dataclasses: the file is JSON that folders written by earlier versions (and by hand) also
hold, read back as it was written and checked where it is used (files.load_adapter, serving.bank). Torch-free.
No ``from __future__ import annotations`` here: Python 3.11 sees NotRequired only in evaluated annotations.
"""

from typing import Any, NotRequired, TypedDict


class ModuleEntry(TypedDict):
    """One (IA)^3 vector's place: the wrapped module, where it scales (ia3.Ia3Layer.position), its length."""

    name: str
    position: str
    features: int


class AdapterConfig(TypedDict):
    """ia3_config.json: what describe() writes (where the vectors go, on which base model), then what the job
    adds through save_adapter's ``extra`` (ia3app.recipe.run_job.export) — absent from folders written by other
    callers, hence NotRequired — and the abstain threshold the results page sets (set_abstain_threshold)."""

    format: str
    format_version: int
    ia3app_version: str
    base_model: str
    revision: str | None
    architecture: str
    model_type: str | None
    family: str
    spec: dict[str, Any]
    """The placement: {"output_modules", "input_modules", "fused_kv_modules"}."""
    modules: list[ModuleEntry]
    fingerprint: dict[str, Any]
    """The shape-deciding fields of the base model's config (config_fingerprint)."""
    num_parameters: int
    template: NotRequired[dict[str, Any]]
    """TemplateSpec.to_dict() of the template predictions use."""
    choices: NotRequired[list[str]]
    recipe: NotRequired[dict[str, Any]]
    """RecipeConfig.to_dict()."""
    metrics: NotRequired[dict[str, dict[str, float]]]
    """Headline numbers per method (ia3app.evaluation.report.Headline)."""
    calibration: NotRequired[dict[str, Any]]
    """{"temperature", "source", "n", "ece_before", "ece_after"} (run_job.adapter_confidence)."""
    abstain_threshold: NotRequired[float | None]
