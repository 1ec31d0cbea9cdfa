"""What the pages share: the app's Blocks, its tabs and the cross-page state components.

Each page module builds its components and wires its own components' events; an event that fills
another page asks that page for a `{component: value}` dict (e.g. template_page.suggest), so no
module spells out another page's outputs by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr


@dataclass
class Shared:
    demo: gr.Blocks
    tabs: gr.Tabs
    session: gr.State
    """The saved data of this browser session (dataset ids, columns, label values; see upload.save_upload)."""
    template: gr.State
    """The checked template spec (dict) or None while the editor's template does not fit the data."""
    train_templates: gr.State
    """More templates (spec dicts) to train with besides `template` (T-Few's template per example per step)."""
    results_job: gr.State
    """The job whose results page is open."""
