"""What the pages share: the app's Blocks, its tabs and the cross-page state components.

Each page module builds its components and wires its own components' events. A page never imports
another page: an event that fills another page gets a `Fill` from the app layout (ui.app_layout),
which knows every page and owns navigation, so no module spells out another page's outputs by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, Holdout
from ia3app.templates.spec import TemplateSpec


@dataclass
class Shared:
    demo: gr.Blocks
    tabs: gr.Tabs
    session: gr.State
    """The saved data of this browser session: a DataChoice (data_page.save_upload, or Run again), None before."""
    template: gr.State
    """The checked TemplateSpec, or None while the editor's template does not fit the data."""
    train_templates: gr.State
    """More TemplateSpecs to train with besides `template` (T-Few's template per example per step)."""
    results_job: gr.State
    """The job whose results page is open."""


@dataclass(frozen=True)
class Fill:
    """Another page's part in an event, handed to a page by the app layout: the components the event
    writes on that page (`outputs`, listed in the event's outputs) and the function that gives their
    values (`values`: returns that page's `{component: value}` updates; its arguments and any extra
    result are named where the receiving page's wire function takes it)."""

    outputs: list[Any]
    values: Callable[..., Any]


@dataclass(frozen=True)
class DataChoice:
    """The data a browser session trains on: what the data page saved (data_page.save_upload) or Run again
    filled in (library_page.run_again). Kept in the session's gr.State; the pages read it, the train page
    turns it into the job's DataRef."""

    dataset_id: int
    filename: str
    rows: int
    """Training rows stored (after sampling)."""
    columns: list[str]
    label_column: str
    text_columns: list[str]
    """The columns ticked as text the model reads."""
    label_values: list[str]
    """The label column's values, sorted."""
    eval_dataset_id: int | None = None
    """A separate held-out dataset; or"""
    holdout: Holdout | None = None
    """an automatic held-out split of the training rows; or"""
    cv_folds: int | None = None
    """cross-validation; none of them: no evaluation."""
    held_out: int | None = None
    """The rows the automatic split holds out, as the data page counted them (None where it did not count)."""
    reused: bool = False
    """The upload was already stored (same bytes, same label column): not copied again."""
    stored_from: int | None = None
    """The job whose data Run again filled in (the data page's file box is empty then)."""

    def data_ref(self) -> DataRef:
        """The job's data: these dataset ids and this split."""
        return DataRef(int(self.dataset_id), self.eval_dataset_id, self.holdout)

    @property
    def evaluates(self) -> bool:
        return self.eval_dataset_id is not None or self.holdout is not None or bool(self.cv_folds)


@dataclass(frozen=True)
class RunAgain:
    """What "Run again with changes" fills in from a prior job (library_page.run_again): its data, template(s),
    model and settings, for the data, template and train pages."""

    job_id: int
    data: DataChoice
    template: TemplateSpec
    train_templates: list[TemplateSpec]
    recipe: RecipeConfig
    model: str
    """The model as the job's labels name it (a model picker key, or the folder)."""
    model_path: str
    """The model the job resolved to (a hub id, a bundled name or a folder)."""
    eval_methods: list[str]
