"""Step 4: watch a job. Everything shown is read from the store on each timer tick, so a reload,
a closed tab or an app restart loses nothing: the page picks up wherever the job is."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ia3app.errors import UserError
from ia3app.jobtypes import ProgressEvent
from ui.context import AppContext
from ui.model_picker import format_duration
from ui.job_labels import data_label, job_choices, model_label, template_label
from ui.shared import Fill, Shared

URL_JS = """(job) => { const u = new URL(window.location); if (job) { u.searchParams.set('job', job); }
  window.history.replaceState(null, '', u); return []; }"""
STATE_ICON = {"queued": "…", "running": "▶", "succeeded": "✓", "failed": "✗", "cancelled": "■"}
LOSS_TERMS = (("loss", "total"), ("loss_lm", "LM"), ("loss_ul", "unlikelihood"), ("loss_ln", "length-norm"))


def jobs_table(ctx: AppContext, uid: int) -> pd.DataFrame:
    from jobs import queue

    rows = []
    for job in queue.list_jobs(ctx.db(), uid):
        tfew = (job.result.metrics.get("t-few") if job.result else None) or {}
        rows.append({
            "job": job.id,
            "state": f"{STATE_ICON.get(job.status, '')} {job.status}",
            "data": data_label(job),
            "model": model_label(job),
            "template": template_label(job),
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created)),
            "T-Few accuracy": f"{tfew['accuracy']:.1%}" if "accuracy" in tfew else "",
        })
    return pd.DataFrame(rows, columns=["job", "state", "data", "model", "template", "created", "T-Few accuracy"])


def loss_frame(rows: list[dict]) -> pd.DataFrame:
    """Long format for the chart; typed even when empty, so the chart's axes start out numeric."""
    return pd.DataFrame({
        "step": pd.Series([r["step"] for r in rows], dtype="int64"),
        "loss": pd.Series([r["loss"] for r in rows], dtype="float64"),
        "term": pd.Series([r["term"] for r in rows], dtype="str"),
    })


def job_view(ctx: AppContext, uid: int, job_id: Any) -> dict[str, Any]:
    """Everything the job page shows, from the store. An id that is not this user's shows nothing."""
    from jobs import queue

    empty = {"found": False, "status": None, "header": "Pick a job from the list, or start one in step 3.",
             "bar": "", "loss": loss_frame([]), "log": "", "done": False, "version": ""}
    try:
        job_id = int(job_id)
    except (TypeError, ValueError):
        return empty
    db = ctx.db()
    job = queue.get_job(db, job_id, uid)
    if job is None:
        return {**empty, "header": f"Job #{job_id} is not one of your jobs.", "version": "missing"}
    events = queue.progress_events(db, job_id, uid)
    steps = [e for e in events if e.step is not None and e.total_steps]
    last = steps[-1] if steps else ProgressEvent("train")
    step = last.step or 0
    total = last.total_steps or (job.request.spec.recipe.steps if job.request else 0)
    phase = events[-1].phase if events else None
    frac = 1.0 if job.status == "succeeded" else (step / total if total else 0.0)
    icon = STATE_ICON.get(job.status, "")
    head = [f"## {icon} Job #{job.id}: {job.status}" + (f" — {phase}" if job.status == "running" and phase else ""),
            f"Data **{html.escape(data_label(job))}**, template "
            f"**{html.escape(template_label(job))}**, model "
            f"**{html.escape(model_label(job))}**"]
    if job.status == "queued":
        pos = queue.queue_position(db, job.id, uid)
        head.append(f"Waiting for a worker ({pos} job(s) ahead)." if pos else "Waiting for a worker to pick it up.")
        if not pos and time.time() - job.created > 60:
            head.append("Still waiting after a minute: is a worker running? The app starts one unless it was "
                        "launched with --no-worker; otherwise start `python -m jobs.worker` on a machine that "
                        "shares this data directory.")
    if job.status == "running" and phase == "download" and events[-1].get("message"):
        head.append(f"⬇ {html.escape(events[-1]['message'])}")
    if job.status == "running" and phase == "evaluate" and events[-1].message:
        head.append(f"Evaluating on the held-out rows: {html.escape(events[-1].message)}")
    if job.status in ("failed", "cancelled") and job.error_message:
        head.append(f"**What happened:** {html.escape(job.error_message)}")
    if job.cancel_requested and job.status == "running":
        head.append("Cancelling: the worker stops before its next step (a phase without stop checks, such as "
                    "loading the model, is interrupted within about 3 s).")
    stats = []
    if total:
        stats.append(f"step **{step} / {total}**")
    if last.loss is not None:
        stats.append(f"loss **{last.loss:.4f}**")
    if last.lr is not None:
        stats.append(f"lr {last.lr:.2e}")
    if last.examples_per_s:
        stats.append(f"{last.examples_per_s:.1f} examples/s")
    elapsed = last.elapsed_s
    if elapsed is None and job.started:
        elapsed = (job.finished or time.time()) - job.started
    if elapsed is not None:
        stats.append(f"elapsed {format_duration(elapsed)}")
    if job.status == "running" and last.eta_s is not None:
        stats.append(f"ETA {format_duration(last.eta_s)}")
    if stats:
        head.append(" · ".join(stats))
    loss_rows = [{"step": e.step, "loss": getattr(e, key), "term": name}
                 for e in steps for key, name in LOSS_TERMS if getattr(e, key) is not None]
    log = "\n".join(f"[{time.strftime('%H:%M:%S', time.localtime(e.created))}] {e.phase}: "
                    f"{e.message or ''}" for e in events[-12:])
    bar = (f'<div class="ia3-progress" role="progressbar" aria-valuenow="{frac * 100:.0f}" aria-valuemin="0" '
           f'aria-valuemax="100"><div class="ia3-progress-fill ia3-{job.status}" style="width:{frac * 100:.1f}%">'
           f'</div><span>{frac * 100:.0f}%</span></div>')
    header = "\n\n".join(head)
    return {"found": True, "status": job.status, "header": header, "bar": bar, "version": f"{len(events)}|{header}",
            "loss": loss_frame(loss_rows), "log": log,
            "done": job.status in ("succeeded", "failed", "cancelled")}


def chart_value(frame: pd.DataFrame) -> pd.DataFrame | None:
    """What the loss chart is sent: None until there is a point to draw. Gradio's plot fixes its colour
    domain (the legend, each line's colour) when it is built, and builds it only when its value goes from
    none to some: drawn first from an empty frame, later points came in as lines with no colour and an
    empty legend (issue 23: the chart of a job started from Train stayed empty until a reload)."""
    return frame if len(frame) else None


CANCEL_WAIT_S = 5.0
"""How long Cancel waits for a running job's worker to stop before answering (it polls the store): the
page then shows "cancelled" at once instead of on a later timer tick."""


def cancel_job(ctx: AppContext, uid: int, job_id: Any, wait_s: float = CANCEL_WAIT_S) -> str:
    """Cancel one of the caller's jobs: a queued one at once; a running one is asked to stop, and this waits
    up to `wait_s` for its worker to record it (the worker reads the flag every 0.2 s and stops before its
    next training step)."""
    from jobs import queue

    try:
        jid = int(job_id)
        status = queue.cancel(ctx.db(), jid, uid)
    except (TypeError, ValueError):
        status = None
    if status is None:
        return "No such job among yours."
    deadline = time.monotonic() + wait_s
    while status == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
        job = queue.get_job(ctx.db(), jid, uid)
        status = job.status if job is not None else "deleted"
    return {"cancelled": "Cancelled.", "running": "Asked the worker to stop; it has not yet (a step or a "
            "phase without stop checks is finishing); the page shows it when it does."}.get(
        status, f"The job already {status}; nothing to cancel.")


@dataclass
class JobPage:
    job: gr.Dropdown
    refresh: gr.Button
    header: gr.Markdown
    bar: gr.HTML
    loss: gr.LinePlot
    log: gr.Textbox
    cancel: gr.Button
    results: gr.Button
    message: gr.Markdown
    timer: gr.Timer
    table: gr.Dataframe


def build_job_page() -> JobPage:
    with gr.Row():
        job = gr.Dropdown(label="Job", choices=[], value=None, scale=4, allow_custom_value=False)
        refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
    header = gr.Markdown("Pick a job from the list, or start one in step 3.", elem_id="ia3-job-header")
    bar = gr.HTML()
    with gr.Row():
        loss = gr.LinePlot(x="step", y="loss", color="term", title="Training loss (total and the three T-Few terms)",
                           height=280, scale=3, elem_id="ia3-loss")
        log = gr.Textbox(label="Latest log lines", lines=10, max_lines=12, interactive=False, scale=2)
    with gr.Row():
        cancel = gr.Button("Cancel job", variant="stop", size="sm", visible=False)
        results = gr.Button("See results →", variant="primary", visible=False)
    message = gr.Markdown()
    gr.Markdown("#### All my jobs (click a row to open it)")
    table = gr.Dataframe(interactive=False, wrap=True, max_height=260)
    timer = gr.Timer(1.0)
    return JobPage(job, refresh, header, bar, loss, log, cancel, results, message, timer, table)


def open_job(page: JobPage, ctx: AppContext, uid: int, job_id: int, shared: Shared) -> dict:
    """The updates that show one of the user's jobs on this page (its tab selected)."""
    return {shared.tabs: gr.Tabs(selected="job"), page.job: gr.update(choices=job_choices(ctx, uid), value=job_id)}


def wire_job_page(page: JobPage, ctx: AppContext, shared: Shared, open_results: Fill) -> None:
    """The page's own events: the timer redraws what changed, the list and table pick a job, Cancel, and
    "See results" opens the results page (`open_results.values(request, job_id)`)."""

    seen = gr.State("")
    outs = [page.header, page.bar, page.loss, page.log, page.results, seen, page.table, page.cancel]

    def on_tick(job_id, last_version, request: gr.Request):
        """Send the page only what changed: redrawing an unchanged chart every second wastes the browser."""
        try:
            uid = ctx.user_id(request)
            view = job_view(ctx, uid, job_id)
        except UserError as e:
            return {page.header: f"✗ {e}", page.bar: "", page.loss: None, page.log: "",
                    page.results: gr.update(visible=False), seen: "", page.cancel: gr.update(visible=False)}
        if view["version"] == last_version:
            return gr.skip()
        return {page.header: view["header"], page.bar: view["bar"], page.loss: chart_value(view["loss"]),
                page.log: view["log"],
                page.results: gr.update(visible=view["status"] == "succeeded"), seen: view["version"],
                page.table: jobs_table(ctx, uid),
                page.cancel: gr.update(visible=view["status"] in ("queued", "running"))}  # only while it can stop

    def on_pick(job_id, request: gr.Request):
        """Another job: everything but the chart now; the chart is emptied and drawn afresh on the next tick
        (the plot builds its colours and legend only when it goes from no value to a value)."""
        update = on_tick(job_id, "", request)
        if not isinstance(update, dict) or update.get("__type__") == "update":  # gr.skip() is a dict too
            return update
        return {**update, page.loss: None, seen: ""}

    page.timer.tick(on_tick, [page.job, seen], outs, api_visibility="private", show_progress="hidden")
    page.job.change(on_pick, page.job, outs, api_visibility="private")
    page.job.change(None, page.job, None, js=URL_JS, api_visibility="private")

    def on_list(request: gr.Request):
        uid = ctx.user_id(request)
        return {page.job: gr.update(choices=job_choices(ctx, uid)), page.table: jobs_table(ctx, uid)}

    page.refresh.click(on_list, None, [page.job, page.table], api_visibility="private")

    def on_row(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return gr.update(value=int(table.iloc[row]["job"]))

    page.table.select(on_row, page.table, page.job, api_visibility="private")

    def on_cancel(job_id, request: gr.Request):
        return cancel_job(ctx, ctx.user_id(request), job_id)

    page.cancel.click(on_cancel, page.job, page.message, api_visibility="private").then(
        on_tick, [page.job, gr.State("")], outs, api_visibility="private")  # show the effect now, not next tick

    def on_load(request: gr.Request):
        uid = ctx.user_id(request)
        wanted = (request.query_params.get("job") or "").strip() if request else ""
        choices = job_choices(ctx, uid)
        value = int(wanted) if wanted.isdigit() and int(wanted) in {c[1] for c in choices} else None
        shown = {page.job: gr.update(choices=choices, value=value), page.table: jobs_table(ctx, uid)}
        if value is not None:
            return {**shown, shared.tabs: gr.Tabs(selected="job")}
        if wanted:  # a link to someone else's job, or to none: say so rather than silently showing step 1
            return {**shown, shared.tabs: gr.Tabs(selected="job"),
                    page.header: f"## No such job\nThere is no job #{html.escape(wanted[:20])} among yours. "
                                 "Pick one of your jobs from the list."}
        return shown

    shared.demo.load(on_load, None, [page.job, page.table, shared.tabs, page.header], api_visibility="private")

    def on_results(job_id, request: gr.Request):
        return open_results.values(request, job_id)

    page.results.click(on_results, page.job, open_results.outputs,
                       api_visibility="private")
