"""Step 6: label these next — the active-learning loop on one finished run.

Pick a finished run, upload unlabelled rows (a pool), ask for the N rows the adapter is least sure about
(spread out so they are not near-duplicates; a suggest job the worker runs), label them here (or skip),
save them as a new version of the dataset (the old version stays), and train the next round with one
click. The rounds table shows accuracy per round with its interval and the labels each round added.
The loop's logic is ui.active_loop; this module is its page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ia3app.errors import UserError
from ui import active_loop as A
from ui.context import AppContext
from ui.shared import Fill, Shared

MAX_SHOWN = 24
"""Suggested rows the page shows (and N's upper bound here; the CLI and the API allow more)."""
WARM, FRESH = "previous round's vectors", "fresh (vectors at one)"
TEXT_CHARS = 400
"""Characters of a row's text shown on the page."""


@dataclass
class ActivePage:
    job: gr.Dropdown
    refresh: gr.Button
    pool_file: gr.File
    upload: gr.Button
    pool: gr.Dropdown
    n: gr.Number
    suggest: gr.Button
    cancel: gr.Button
    status: gr.Markdown
    suggest_job: gr.State
    seen: gr.State
    texts: list[gr.Markdown]
    pickers: list[gr.Dropdown]
    slots: list[gr.Row]
    save: gr.Button
    saved: gr.Markdown
    start: gr.Radio
    retrain: gr.Button
    rounds: gr.Dataframe
    timer: gr.Timer


def build_active_page() -> ActivePage:
    gr.Markdown("### Label these next\nWith a finished run and a file of **unlabelled** rows (the same columns as "
                "your data; the label column empty or left out), ask which rows to label next: the ones the "
                "adapter is least sure about (smallest gap between its top two answers), spread out so that "
                "near-duplicates are not all picked. Label them here, save (a **new version** of your dataset; "
                "the old one stays for earlier runs), and train the next round with one click.")
    with gr.Row():
        job = gr.Dropdown(label="Finished run (its adapter scores the pool)", choices=[], value=None, scale=4,
                          elem_id="ia3-active-job")
        refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
    with gr.Row():
        pool_file = gr.File(label="Unlabelled rows (CSV)", file_types=[".csv", ".tsv", ".txt"], scale=3,
                            elem_id="ia3-pool-file")
        with gr.Column(scale=2):
            upload = gr.Button("Store these unlabelled rows", size="sm", elem_id="ia3-pool-upload")
            pool = gr.Dropdown(label="Unlabelled pool", choices=[], value=None, elem_id="ia3-pool")
    with gr.Row():
        n = gr.Number(label=f"Rows to suggest (1–{MAX_SHOWN})", value=8, precision=0, minimum=1, maximum=MAX_SHOWN,
                      scale=1)
        suggest = gr.Button("Suggest rows to label", variant="primary", scale=2, elem_id="ia3-suggest")
        cancel = gr.Button("Cancel", variant="stop", size="sm", visible=False, scale=1, elem_id="ia3-suggest-cancel")
    status = gr.Markdown(elem_id="ia3-active-status")
    texts, pickers, slots = [], [], []
    with gr.Column(elem_id="ia3-suggestions"):
        for i in range(MAX_SHOWN):
            with gr.Row(visible=False, equal_height=True) as slot:
                texts.append(gr.Markdown(elem_classes=["ia3-card"]))
                pickers.append(gr.Dropdown(label="Label", choices=[], value=None, scale=0, min_width=180,
                                           elem_id=f"ia3-pick-{i}"))
            slots.append(slot)
    save = gr.Button("Save labels as a new dataset version", visible=False, elem_id="ia3-save-labels")
    saved = gr.Markdown(elem_id="ia3-saved")
    with gr.Row():
        # fresh by default: measured better than the previous round's vectors in every round of
        # bench/bench_active.py on the real model (SST-2, 2 seeds: −9.4, −6.2, −4.7 points for warm; bench/RESULTS.md)
        start = gr.Radio([FRESH, WARM], value=FRESH, label="Next round starts from", scale=3,
                         info="fresh measured better: starting from the last round's vectors kept what it "
                              "over-fitted on fewer rows")
        retrain = gr.Button("Train the next round on all labelled rows", variant="primary", scale=2,
                            elem_id="ia3-retrain")
    gr.Markdown("#### Rounds\nAccuracy of T-Few on the held-out rows with its 95 % bootstrap interval. Rounds "
                "compare best with a separate held-out file: an automatic split is drawn again from each version.")
    rounds = gr.Dataframe(interactive=False, wrap=True, elem_id="ia3-rounds")
    return ActivePage(job, refresh, pool_file, upload, pool, n, suggest, cancel, status, gr.State(None),
                      gr.State(""), texts, pickers, slots, save, saved, start, retrain, rounds, gr.Timer(1.0))


def finished_runs(ctx: AppContext, uid: int) -> list[tuple[str, int]]:
    from jobs import queue
    from ui.job_labels import data_label, model_label

    return [(f"#{j.id} · {data_label(j) or 'data'} · {model_label(j)}", j.id)
            for j in queue.list_jobs(ctx.db(), uid) if j.status == "succeeded"]


def pool_choices(ctx: AppContext, uid: int, job_id: Any) -> list[tuple[str, int]]:
    from storage import repo

    job, _ = A.training_job(ctx, uid, job_id)
    return [(f"#{p.id} · {p.filename} · {p.row_count} rows", p.id)
            for p in repo.pools_for(ctx.db(), job.request.data.dataset_id, uid)]


def rounds_frame(ctx: AppContext, uid: int, job_id: Any) -> pd.DataFrame:
    return pd.DataFrame(A.rounds(ctx, uid, job_id))


def why(suggestion) -> str:
    """'positive 52 % vs negative 48 % (margin 0.04)'."""
    parts = [f"**{html.escape(str(t['label']))}** {100 * t['probability']:.0f} %" for t in suggestion.top]
    return " vs ".join(parts) + f" (margin {suggestion.margin:.3f})"


def row_text(row: dict) -> str:
    def cut(text: str) -> str:
        return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + "…"

    return "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(cut(str(v)))}" for k, v in row.items())


def suggestion_view(page: ActivePage, ctx: AppContext, uid: int, suggest_id: Any) -> dict:
    """Status line, the suggested rows with a picker each (when the run has finished), Cancel while it runs."""
    from jobs import queue

    job = A.suggest_job(ctx, uid, suggest_id)
    out: dict = {page.cancel: gr.update(visible=job.status in ("queued", "running"))}
    if job.status in ("queued", "running"):
        events = queue.progress_events(ctx.db(), job.id, uid)
        scoring = [e for e in events if e.phase == "score"]
        done = f"{scoring[-1].step}/{scoring[-1].total_steps} pool rows scored" if scoring else (
            events[-1].message if events else "waiting for a worker")
        out[page.status] = f"⏳ Suggestion run #{job.id} is {job.status}: {done}."
        return {**out, page.save: gr.update(visible=False), **{s: gr.update(visible=False) for s in page.slots}}
    if job.status != "succeeded" or job.result is None:
        message = f": {job.error_message}" if job.error_message else ""
        out[page.status] = f"✗ Suggestion run #{job.id} {job.status}{message}"
        return {**out, page.save: gr.update(visible=False), **{s: gr.update(visible=False) for s in page.slots}}
    result = job.result
    labels = A.label_choices(ctx, uid, job.request.adapter_job)
    shown = result.suggestions[:MAX_SHOWN]
    out[page.status] = (f"✓ {len(result.suggestions)} rows to label, picked from {result.scored} unlabelled rows "
                        f"({result.rows_per_s:.1f} rows/s; {result.excluded} labelled or skipped earlier were left "
                        f"out). Why each: the adapter's top two answers and their probabilities. Rule: {result.method}.")
    for i, slot in enumerate(page.slots):
        out[slot] = gr.update(visible=i < len(shown))
        if i < len(shown):
            s = shown[i]
            out[page.texts[i]] = f"<b>Pool row {s.index + 1}</b> · {why(s)}<br>{row_text(s.row)}"
            out[page.pickers[i]] = gr.update(choices=labels + [A.SKIP], value=None,
                                             label=f"Label for pool row {s.index + 1}")
    out[page.save] = gr.update(visible=bool(shown))
    return out


def wire_active_page(page: ActivePage, ctx: AppContext, shared: Shared, open_job: Fill) -> None:
    """The page's events; "Train the next round" opens the new job on the Progress page (`open_job`)."""
    slot_outs = [*page.slots, *page.texts, *page.pickers, page.save]
    view_outs = [page.status, page.cancel, *slot_outs, page.seen]

    def on_runs(request: gr.Request):
        return gr.update(choices=finished_runs(ctx, ctx.user_id(request)))

    page.refresh.click(on_runs, None, page.job, api_visibility="private")
    shared.demo.load(on_runs, None, page.job, api_visibility="private")

    def on_job(job_id, request: gr.Request):
        if job_id is None:
            return {page.pool: gr.update(choices=[], value=None), page.rounds: None}
        try:
            uid = ctx.user_id(request)
            pools = pool_choices(ctx, uid, job_id)
            return {page.pool: gr.update(choices=pools, value=pools[0][1] if pools else None),
                    page.rounds: rounds_frame(ctx, uid, job_id), page.status: ""}
        except UserError as e:
            return {page.status: f"✗ {e}"}

    page.job.change(on_job, page.job, [page.pool, page.rounds, page.status], api_visibility="private")

    def on_upload(job_id, path, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            pool_id = A.upload_pool(ctx, uid, job_id, path)
            return {page.pool: gr.update(choices=pool_choices(ctx, uid, job_id), value=pool_id),
                    page.status: f"✓ Unlabelled pool #{pool_id} stored."}
        except UserError as e:
            return {page.status: f"✗ {e}"}

    page.upload.click(on_upload, [page.job, page.pool_file], [page.pool, page.status], api_visibility="private")

    def on_suggest(job_id, pool_id, n, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            if n is None or not 1 <= int(n) <= MAX_SHOWN:
                raise UserError(f"suggest from 1 to {MAX_SHOWN} rows here (the CLI and the API suggest more)")
            suggest_id = A.start_suggest(ctx, uid, job_id, pool_id, int(n))
            return {page.suggest_job: suggest_id, page.saved: "",
                    **suggestion_view(page, ctx, uid, suggest_id), page.seen: ""}
        except UserError as e:
            return {page.status: f"✗ {e}"}

    page.suggest.click(on_suggest, [page.job, page.pool, page.n],
                       [page.suggest_job, page.saved, *view_outs], api_visibility="private")

    def on_tick(suggest_id, seen, request: gr.Request):
        """Redraw only while a run is going and once when it ends (not every second: pickers keep their values)."""
        if suggest_id is None or seen == f"{suggest_id}:final":
            return gr.skip()
        try:
            uid = ctx.user_id(request)
            view = suggestion_view(page, ctx, uid, suggest_id)
            running = A.suggest_job(ctx, uid, suggest_id).status in ("queued", "running")
        except UserError as e:
            return {page.status: f"✗ {e}", page.seen: f"{suggest_id}:final"}
        return {**view, page.seen: "" if running else f"{suggest_id}:final"}

    page.timer.tick(on_tick, [page.suggest_job, page.seen], view_outs, api_visibility="private",
                    show_progress="hidden")

    def on_cancel(suggest_id, request: gr.Request):
        from jobs import queue

        try:
            uid = ctx.user_id(request)
            job = A.suggest_job(ctx, uid, suggest_id)
            status = queue.cancel(ctx.db(), job.id, uid)
            return f"Suggestion run #{job.id}: {'cancelled' if status == 'cancelled' else 'stopping'}."
        except UserError as e:
            return f"✗ {e}"

    page.cancel.click(on_cancel, page.suggest_job, page.status, api_visibility="private")

    def on_save(request: gr.Request, suggest_id, job_id, *picked):  # gr.Request first: the pickers are *picked
        try:
            uid = ctx.user_id(request)
            job = A.suggest_job(ctx, uid, suggest_id)
            shown = (job.result.suggestions if job.result else [])[:MAX_SHOWN]
            picks = {s.index: value for s, value in zip(shown, picked) if value}
            version = A.save_labels(ctx, uid, suggest_id, picks)
            labelled = sum(1 for v in picks.values() if v != A.SKIP)
            skipped = len(picks) - labelled
            if version is None:
                text = f"✓ {skipped} rows skipped; no new version (nothing labelled)."
            else:
                text = (f"✓ Saved {labelled} labelled rows as dataset #{version} (a new version; the previous one is "
                        f"kept), {skipped} skipped. Train the next round below.")
            return {page.saved: text, page.rounds: rounds_frame(ctx, uid, job_id)}
        except UserError as e:
            return {page.saved: f"✗ {e}"}

    page.save.click(on_save, [page.suggest_job, page.job, *page.pickers], [page.saved, page.rounds],
                    api_visibility="private")

    def on_retrain(job_id, start, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            new_id = A.retrain(ctx, uid, job_id, warm=start != FRESH)
        except UserError as e:
            return {page.saved: f"✗ {e}"}
        return {page.saved: f"✓ Next round queued: job #{new_id}.", page.rounds: rounds_frame(ctx, uid, job_id),
                **open_job.values(uid, new_id)}

    page.retrain.click(on_retrain, [page.job, page.start], [page.saved, page.rounds, *open_job.outputs],
                       api_visibility="private")
