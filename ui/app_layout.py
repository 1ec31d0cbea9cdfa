"""The app's layout: its one gr.Blocks with the pages as tabs, the shared state, navigation between
pages, and the /predict API.

Each page module builds its components and wires its own events (see ui.shared). Pages never import
one another: this module alone knows every page, puts them in order and hands each page a `Fill`
for each event of its that fills another page.
"""

from __future__ import annotations

import functools
import html
from typing import Any

import gradio as gr

from ia3app.errors import UserError
from ui import active_page as AC
from ui import jobs_page as J
from ui import library_page as L
from ui import results_page as R
from ui import template_page as T
from ui import train_page as TR
from ui import data_page as D
from ui.context import AppContext
from ui.model_picker import detect_hardware
from ui.owned_adapter import predict_row
from ui.shared import Fill, RunAgain, Shared

THEME = gr.themes.Soft(primary_hue="indigo")
CSS = """
.ia3-progress {position: relative; height: 26px; background: #e5e7eb; border-radius: 13px; overflow: hidden;}
.ia3-progress-fill {height: 100%; background: #6366f1; transition: width .6s;}
.ia3-progress-fill.ia3-succeeded {background: #16a34a;} .ia3-progress-fill.ia3-failed {background: #dc2626;}
.ia3-progress-fill.ia3-cancelled {background: #9ca3af;}
.ia3-progress span {position: absolute; inset: 0; text-align: center; line-height: 26px; font-weight: 600;}
.ia3-card {border: 1px solid #d1d5db; border-radius: 8px; padding: 8px 12px; margin-bottom: 8px;}
.ia3-row {font-size: 12px; color: #6b7280;} .ia3-input {white-space: pre-wrap; margin: 4px 0; font-size: 14px;}
.ia3-choices {margin: 2px 0 0 0; padding-left: 18px;} .ia3-choices li.correct {color: #15803d; font-weight: 700;}
.ia3-choices-label {font-size: 12px; color: #6b7280;}
"""


def api_errors(fn):
    """For API endpoints: a UserError reaches the client as gr.Error with the same words."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from None

    return wrapper


class AppBlocks(gr.Blocks):
    """The app's Blocks, without Gradio's per-tab heartbeat connection.

    Gradio opens one long-lived heartbeat stream per browser tab whenever the app has a gr.State (to
    mark the tab's state closed, deleted an hour later). Chromium allows 6 connections per host over
    HTTP/1.1, and each tab also needs short-lived ones (the queue's event stream, its POSTs): with 5 tabs
    open a sixth stayed on "Loading…" until another closed (issue 23). Without the heartbeat, a tab's
    state is dropped by Gradio's state store when it is full (least recently used first) instead of an
    hour after the tab closed; nothing of a user's lives only in it (data, jobs and results are stored)."""

    def get_config_file(self):
        config = super().get_config_file()
        config["connect_heartbeat"] = False
        return config


def build_app(ctx: AppContext) -> gr.Blocks:
    hw = detect_hardware()
    # Gradio's cache (uploads, zips and CSVs handed to the browser) is <data>/gradio-cache, owner-only;
    # downloads are served only to their owner and swept after 10 minutes (ui.tempfiles); uploads are
    # purged hourly once they are a day old.
    with AppBlocks(title="ia3app — few-shot T-Few adapters", delete_cache=(3600, 86400)) as demo:
        with gr.Row(equal_height=False):
            gr.Markdown("# ia3app · teach a language model your task from a few labelled examples\n"
                        "Upload a small CSV → pick how the model reads a row → train a tiny (IA)³ adapter with the "
                        "T-Few recipe → see how it compares with in-context learning, try it, download it.", scale=5)
            with gr.Column(scale=1, min_width=180):
                who = gr.Markdown(elem_id="ia3-user")
                sign_out = gr.Button("Sign out", link="/logout", size="sm", visible=False, elem_id="ia3-sign-out")
        session, template_state, extra_templates, results_job = gr.State(None), gr.State(None), gr.State([]), \
            gr.State(None)  # a DataChoice, a TemplateSpec, TemplateSpecs, a job id
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Data", id="data"):
                dp = D.build_data_page(ctx)
            with gr.Tab("2 · Template", id="template"):
                tp = T.build_template_page()
            with gr.Tab("3 · Train", id="train"):
                tr = TR.build_train_page(ctx, hw)
            with gr.Tab("4 · Progress & jobs", id="job"):
                jp = J.build_job_page()
            with gr.Tab("5 · Results & predictions", id="results"):
                rp = R.build_results_page()
            with gr.Tab("6 · Label next", id="active"):
                ap = AC.build_active_page()
            with gr.Tab("My data & runs", id="library"):
                lp = L.build_library_page()
        shared = Shared(demo, tabs, session, template_state, extra_templates, results_job)
        _wire_pages(ctx, shared, hw, dp, tp, tr, jp, rp, lp, ap)
        def on_account(request: gr.Request) -> dict:  # annotated: Gradio passes the request only then
            return _account(ctx, request, who, sign_out)

        demo.load(on_account, None, [who, sign_out], api_visibility="private")
        gr.api(_predict_api(ctx), api_name="predict")
    return demo


def _wire_pages(ctx: AppContext, shared: Shared, hw, dp: D.DataPage, tp: T.TemplatePage, tr: TR.TrainPage,
                jp: J.JobPage, rp: R.ResultsPage, lp: L.LibraryPage, ap: AC.ActivePage) -> None:
    """Each page's events, with what they fill on other pages (the navigation between pages)."""
    suggest_template = Fill(tp.suggested, lambda state: T.suggest(tp, state))
    saved = D.wire_data_page(dp, ctx, shared, suggest_template)
    T.wire_template_page(tp, ctx, shared, saved, tr.summary)
    open_job = Fill([shared.tabs, jp.job], lambda uid, job_id: J.open_job(jp, ctx, uid, job_id, shared))
    TR.wire_train_page(tr, ctx, shared, hw, open_job)
    open_results = Fill([shared.results_job, shared.tabs, *R.filled_by_open(rp)],
                        lambda request, job_id: R.open_results(rp, ctx, request, job_id, shared))
    J.wire_job_page(jp, ctx, shared, open_results)
    R.wire_results_page(rp, ctx, shared)
    AC.wire_active_page(ap, ctx, shared, open_job)

    def fill_from_job(uid: int, prior: RunAgain) -> dict:
        extra = [t.name for t in prior.train_templates]
        return {**T.prefilled(tp, prior.data, prior.template, extra),
                **D.stored_values(dp, ctx, uid, prior.data, f"the data of job #{prior.job_id}"),
                **TR.prefilled(tr, prior)}

    L.wire_library_page(lp, ctx, shared, Fill([*tp.suggested, *D.filled_by_stored(dp), *TR.filled_by_prefill(tr)],
                                              fill_from_job))


def _account(ctx: AppContext, request: gr.Request, who: gr.Markdown, sign_out: gr.Button) -> dict:
    """Who is signed in, with a way out; single-user mode says so."""
    name = getattr(request, "username", None) if request is not None else None
    if name:
        return {who: f"Signed in as **{html.escape(str(name))}**", sign_out: gr.update(visible=True)}
    if ctx.auth_required:
        return {who: "Not signed in", sign_out: gr.update(visible=False)}
    return {who: "Single-user mode (this machine only)", sign_out: gr.update(visible=False)}


def _predict_api(ctx: AppContext):
    @api_errors
    def predict(job_id: int, inputs: dict[str, str], request: gr.Request) -> dict[str, Any]:
        """Predict one row with a finished job's adapter, in the one prediction shape (as the JSON API):
        {"label": the label as the training data writes it, "choice": the answer's words, "probabilities":
        {answer: p}, "confidence": the top probability, "unsure": bool}. Probabilities are calibrated when
        the adapter has a temperature; below the adapter's abstain threshold label is "unsure", choice null
        and "best_guess" holds {"label", "choice"}.

        inputs maps each template column to its text. Only the signed-in user's own jobs answer.
        """
        return predict_row(ctx, ctx.user_id(request), job_id, inputs or {}).as_dict()

    return predict
