"""Shared by the serving tests: tiny adapters saved like run_job saves them, and the reference answer
(the adapter alone, merged into its own copy of the model, scored with score_choices)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ia3app.adapters.files import apply_adapter, save_adapter
from ia3app.adapters.ia3 import inject
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import score_choices
from ia3app.jobtypes import JobLabels
from ia3app.serving.engine import MERGED_TOLERANCE
from ia3app.templates.rendering import render_all
from ia3app.templates.spec import TemplateSpec
from jobfactory import request, result

TEMPLATE = TemplateSpec(
    name="sentiment", input="{{sentence}} Is it good or bad?", choices=["bad", "good"],
    label_map={"negative": "bad", "positive": "good"},
)
PER_ROW = TemplateSpec(name="pick", input="{{q}}", choice_templates=["{{a}}", "{{b}}", "no idea"])
WORDS = ["a dull film", "a wonderful film", "so so", "=SUM(A1)", "great acting", "the plot drags on and on",
         "loved it", "never again", "fine", "an astonishing, moving, funny piece of work"]


def make_adapter(model_dir: Path, out: Path, seed: int, template: TemplateSpec = TEMPLATE, handle=None) -> Path:
    """An adapter folder with seeded random vectors (far from ones, so adapters differ visibly)."""
    if handle is None:
        handle = inject(load_model(str(model_dir), device="cpu").model)
    g = torch.Generator().manual_seed(seed)
    handle.load_vectors({k: 1 + 0.8 * torch.randn(n, generator=g) for k, n in handle.shapes().items()})
    extra = {"template": template.to_dict(), "recipe": {"max_length": 64}}
    if template.choices:
        extra["choices"] = list(template.choices)
    return save_adapter(handle, out, base_model=str(model_dir), extra=extra)


class Reference:
    """Each adapter scored alone with its vectors merged into a model (one model, switched per adapter)."""

    def __init__(self, model_dir: Path) -> None:
        self.loaded = load_model(str(model_dir), device="cpu")
        self.handle = inject(self.loaded.model)
        self.handle.merge()

    def score(self, adapter_dir: Path, rows: list[dict], template: TemplateSpec = TEMPLATE):
        apply_adapter(self.handle, adapter_dir)  # merged handle: re-merged from the originals
        return score_choices(self.loaded.model, self.loaded.tokenizer, render_all(template, rows), max_length=64)


def assert_matches(predictions, reference, choices=("bad", "good")) -> None:
    """Equal to the merged reference within the engine's stated fp32 tolerance."""
    tol = MERGED_TOLERANCE["fp32"]
    assert len(predictions) == len(reference)
    for pred, ref in zip(predictions, reference):
        assert list(pred.probabilities.values()) == __import__("pytest").approx(ref.probs, abs=tol["probability"])
        assert pred.scores == __import__("pytest").approx(ref.scores, abs=tol["score"])
        if choices:
            assert pred.choice == choices[ref.pred]


def finished_jobs(ctx, owner: int, base: Path, n: int, seed0: int = 0, template: TemplateSpec = TEMPLATE) -> list[int]:
    """n succeeded jobs of `owner`, each with its own adapter folder in the file store (no training:
    the queue's own claim/complete, adapters made by make_adapter), for API and load tests."""
    from jobs import queue

    handle = inject(load_model(str(base), device="cpu").model)
    ids = []
    for i in range(n):
        job_id = queue.submit(ctx.db(), owner, replace(request(), labels=JobLabels(model="tiny")))
        claimed = queue.claim(ctx.db(), "test-worker")
        assert claimed is not None and claimed.id == job_id
        folder = make_adapter(base, ctx.files().adapter_dir(job_id), seed=seed0 + i, template=template, handle=handle)
        assert folder.is_dir()
        queue.complete(ctx.db(), job_id, "test-worker", result(template=template), adapter_dir=str(folder))
        ids.append(job_id)
    return ids
