"""What the pages share: the app's Blocks, its tabs and the cross-page state components.

Each page module builds its components and wires its own components' events. A page never imports
another page: an event that fills another page gets a `Fill` from the app layout (ui.app_layout),
which knows every page and owns navigation, so no module spells out another page's outputs by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr


@dataclass
class Shared:
    demo: gr.Blocks
    tabs: gr.Tabs
    session: gr.State
    """The saved data of this browser session (dataset ids, columns, label values; see data_page.save_upload)."""
    template: gr.State
    """The checked template spec (dict) or None while the editor's template does not fit the data."""
    train_templates: gr.State
    """More templates (spec dicts) to train with besides `template` (T-Few's template per example per step)."""
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
