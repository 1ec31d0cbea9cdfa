"""Step 6: my datasets and runs — reuse, delete, run again with changes, compare runs side by side.

Everything is the caller's own: every read and delete goes through storage/queue functions that
take the owner, and a dataset a queued or running job reads cannot be deleted (nor such a job).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from ia3app.errors import UserError
from ui.context import AppContext
from ui.job_labels import job_choices
from ui.shared import DataChoice, Fill, RunAgain, Shared

SETTINGS = ("steps", "batch_size", "lr", "max_length", "unlikelihood", "length_norm", "seed")


def datasets_frame(ctx: AppContext, uid: int) -> pd.DataFrame:
    from storage import repo

    rows = [{"dataset": d.id, "file": d.filename, "rows": d.row_count, "label column": d.label_column or "",
             "columns": ", ".join(d.columns), "stored": time.strftime("%Y-%m-%d %H:%M", time.localtime(d.created))}
            for d in repo.list_datasets(ctx.db(), uid)]
    return pd.DataFrame(rows, columns=["dataset", "file", "rows", "label column", "columns", "stored"])


def dataset_choices(ctx: AppContext, uid: int) -> list[tuple[str, int]]:
    from storage import repo

    return [(f"#{d.id} · {d.filename} · {d.row_count} rows", d.id) for d in repo.list_datasets(ctx.db(), uid)]


def _deletable_dataset(ctx: AppContext, uid: int, dataset_id: Any):
    """One of the caller's datasets that no queued or running job reads (UserError otherwise)."""
    from jobs import queue
    from storage import repo

    try:
        did = int(dataset_id)
    except (TypeError, ValueError):
        raise UserError("pick one of your datasets first") from None
    dataset = repo.get_dataset(ctx.db(), did, uid)
    if dataset is None:
        raise UserError(f"dataset #{did} is not one of your datasets")
    busy = queue.active_jobs_using(ctx.db(), uid, did)
    if busy:
        raise UserError(f"dataset #{did} is used by job(s) {', '.join(f'#{j}' for j in busy)} that are queued or "
                        "running; cancel them or wait until they finish, then delete it")
    return dataset


def dataset_delete_question(ctx: AppContext, uid: int, dataset_id: Any) -> str:
    """What deleting a dataset would do, asked before it is done: the runs that used it keep their results
    and adapters, but "Run again with changes" cannot refill their data any more."""
    from jobs import queue

    dataset = _deletable_dataset(ctx, uid, dataset_id)
    runs = queue.jobs_using(ctx.db(), uid, dataset.id)
    text = (f"**Delete dataset #{dataset.id}** ({html.escape(dataset.filename)}, {dataset.row_count} rows)? Its "
            "stored file and rows are removed; this cannot be undone.")
    if runs:
        names = ", ".join(f"#{j}" for j in runs)
        text += (f"\n\n⚠ **{len(runs)} run{'s' if len(runs) > 1 else ''} used it: {names}.** Their results, adapters "
                 f"and predictions stay, but *Run again with changes* on {'them' if len(runs) > 1 else 'it'} will no "
                 "longer fill in the data: you would upload the file again.")
    else:
        text += "\n\nNo run used it."
    return text


def delete_dataset(ctx: AppContext, uid: int, dataset_id: Any) -> str:
    """Delete one of the caller's datasets (row and files); refused while a queued or running job reads it."""
    from storage import repo

    dataset = _deletable_dataset(ctx, uid, dataset_id)
    repo.delete_dataset(ctx.db(), ctx.files(), dataset.id, uid)
    return f"✓ Deleted dataset #{dataset.id} (its stored file and rows)."


def job_delete_question(ctx: AppContext, uid: int, job_id: Any) -> str:
    """What deleting a run would remove, asked before it is done (a queued or running one is refused)."""
    from jobs import queue

    (job,) = _owned_jobs(ctx, uid, [job_id])
    if job.status not in queue.TERMINAL:
        raise UserError(f"job #{job.id} is {job.status}; cancel it first (job page), then delete it")
    return (f"**Delete run #{job.id}** ({job.status})? Its adapter, checkpoints, progress and results are removed, "
            "and it can no longer answer predictions or be run again; this cannot be undone. Its dataset stays.")


def delete_job(ctx: AppContext, uid: int, job_id: Any) -> str:
    """Delete one of the caller's finished jobs: its row, progress, results and folders."""
    from jobs import queue

    try:
        jid = int(job_id)
    except (TypeError, ValueError):
        raise UserError("pick one of your jobs first") from None
    outcome = queue.delete_job(ctx.db(), jid, uid)
    if outcome is None:
        raise UserError(f"job #{jid} is not one of your jobs")
    if outcome != "deleted":
        raise UserError(f"job #{jid} is {outcome}; cancel it first (job page), then delete it")
    store = ctx.files()
    for folder in ("adapters", "checkpoints"):
        store.remove(f"{folder}/{jid}")
    return f"✓ Deleted job #{jid} (its adapter, checkpoints, progress and results)."


def _owned_jobs(ctx: AppContext, uid: int, job_ids: list[Any]) -> list:
    from jobs import queue

    jobs = []
    for j in job_ids or []:
        job = queue.get_job(ctx.db(), int(j), uid)
        if job is None:
            raise UserError(f"job #{j} is not one of your jobs")
        jobs.append(job)
    return jobs


def _with_interval(result: Any, method: str, metric: str) -> str:
    """'81.2 % [62.5–93.8]' (a result stored before intervals: recomputed from its confusion matrix)."""
    from ia3app.evaluation.uncertainty import intervals_for

    report = result.method(method) or {}
    value = report.get(metric, result.metrics.get(method, {}).get(metric))
    ci = intervals_for(report).get(metric) or {}
    if value is None:
        return "–"
    if ci.get("low") is None:
        return f"{value:.1%}"
    return f"{value:.1%} [{ci['low']:.1%}–{ci['high']:.1%}]"


def compare(ctx: AppContext, uid: int, job_ids: list[Any]) -> tuple[str, pd.DataFrame]:
    """(a side-by-side markdown table of settings and metrics, the loss curves in long format)."""
    from jobs import queue

    jobs = _owned_jobs(ctx, uid, job_ids)
    if len(jobs) < 2:
        raise UserError("tick at least two runs to compare")
    header = "| | " + " | ".join(f"job #{j.id}" for j in jobs) + " |\n|---|" + "---|" * len(jobs)
    lines = [header]

    def row(name: str, values: list[Any]) -> None:
        cells = [html.escape(str(v)) if v not in (None, "") else "–" for v in values]
        mark = " ◀ differs" if len(set(cells)) > 1 else ""
        lines.append(f"| {name}{mark} | " + " | ".join(cells) + " |")

    requests = [j.request for j in jobs]
    row("state", [j.status for j in jobs])
    row("data", [r.labels.data if r else None for r in requests])
    row("model", [r.model_label if r else None for r in requests])
    row("template", [r.labels.template if r else None for r in requests])
    for key in SETTINGS:
        row(key, [getattr(r.spec.recipe, key, None) if r else None for r in requests])
    metrics = [j.result.metrics if j.result else {} for j in jobs]
    for method in ("zero-shot", "in-context", "t-few"):
        if any(method in m for m in metrics):
            row(f"{method} accuracy (95 % CI)", [_with_interval(j.result, method, "accuracy") if method in m else None
                                                 for j, m in zip(jobs, metrics)])
            row(f"{method} macro-F1 (95 % CI)", [_with_interval(j.result, method, "macro_f1") if method in m else None
                                                 for j, m in zip(jobs, metrics)])
    for pair in ("t-few − in-context", "t-few − zero-shot"):
        verdicts = [((j.result.evaluation or {}).get("differences") or {}).get(pair, {}).get("accuracy")
                    if j.result else None for j in jobs]
        if any(verdicts):
            row(f"{pair} (accuracy, paired)", [f"{100 * v['difference']:+.1f} pts "
                                               f"[{100 * v['low']:+.1f}, {100 * v['high']:+.1f}]: {v['verdict']}"
                                               if v and v.get("difference") is not None else None for v in verdicts])
    row("training time", [f"{j.result.training.wall_s:.0f} s" if j.result else None for j in jobs])
    curves = [{"step": e.step, "loss": e.loss, "run": f"job #{j.id}"}
              for j in jobs for e in queue.progress_events(ctx.db(), j.id, uid)
              if e.phase == "train" and e.step is not None and e.loss is not None]
    frame = pd.DataFrame({"step": pd.Series([c["step"] for c in curves], dtype="int64"),
                          "loss": pd.Series([c["loss"] for c in curves], dtype="float64"),
                          "run": pd.Series([c["run"] for c in curves], dtype="str")})
    return "\n".join(lines), frame


def run_again(ctx: AppContext, uid: int, job_id: Any) -> RunAgain:
    """What "run again with changes" prefills: the session (data), the template and the train settings."""
    from ia3app import tables as data
    from storage import repo

    (job,) = _owned_jobs(ctx, uid, [job_id])
    if job.request is None:
        raise UserError(job.request_error or f"job #{job.id} cannot be read")
    ref, spec = job.request.data, job.request.spec
    for did, what in ((ref.dataset_id, "training data"), (ref.eval_dataset_id, "held-out data")):
        if did is not None and repo.get_dataset(ctx.db(), did, uid) is None:
            raise UserError(f"job #{job.id}'s {what} (dataset #{did}) was deleted, so Run again cannot fill it in: "
                            f"upload the file again on 1 · Data (the run used template “{spec.template.name}”)")
    dataset = repo.require_dataset(ctx.db(), ref.dataset_id, uid)
    rows = repo.load_rows(ctx.db(), ctx.files(), dataset.id, uid)
    template = spec.template
    label = template.label_column or dataset.label_column
    text_columns = [c for c in dataset.columns if c in template.columns_used(include_target=False) and c != label]
    choice = DataChoice(dataset_id=dataset.id, filename=dataset.filename, rows=len(rows), columns=list(dataset.columns),
                        label_column=label, text_columns=text_columns or [c for c in dataset.columns if c != label],
                        label_values=sorted(data.label_counts(rows, label)), eval_dataset_id=ref.eval_dataset_id,
                        holdout=ref.holdout, cv_folds=spec.cv_folds or None, stored_from=job.id)
    return RunAgain(job_id=job.id, data=choice, template=template, train_templates=list(spec.train_templates),
                    recipe=spec.recipe, model=job.request.model_label, model_path=spec.model,
                    eval_methods=list(spec.eval_methods))


@dataclass
class Confirm:
    """A question asked before a delete: what it removes and what it affects, then Delete or Keep it."""
    box: gr.Group
    text: gr.Markdown
    yes: gr.Button
    keep: gr.Button


def build_confirm(name: str) -> Confirm:
    with gr.Group(visible=False, elem_id=f"library-confirm-{name}") as box:
        text = gr.Markdown(elem_id=f"library-confirm-{name}-text")
        with gr.Row():
            yes = gr.Button("Delete", variant="stop", size="sm", elem_id=f"library-confirm-{name}-yes")
            keep = gr.Button("Keep it", size="sm", elem_id=f"library-confirm-{name}-keep")
    return Confirm(box, text, yes, keep)


@dataclass
class LibraryPage:
    datasets: gr.Dataframe
    dataset: gr.Dropdown
    delete_dataset: gr.Button
    runs: gr.Dropdown
    compare: gr.Button
    again: gr.Button
    delete_job: gr.Button
    comparison: gr.Markdown
    curves: gr.LinePlot
    message: gr.Markdown
    refresh: gr.Button
    confirm_dataset: Confirm
    confirm_job: Confirm


def build_library_page() -> LibraryPage:
    gr.Markdown("### My datasets and runs\nRe-uploading a file you already stored reuses it. Delete what you no "
                "longer need (data a queued or running job reads is kept until it finishes).")
    refresh = gr.Button("↻ Refresh", size="sm")
    message = gr.Markdown()
    gr.Markdown("#### My datasets")
    datasets = gr.Dataframe(interactive=False, wrap=True, max_height=240)
    with gr.Row():
        dataset = gr.Dropdown(label="Dataset", choices=[], value=None, scale=3)
        delete_dataset_btn = gr.Button("Delete dataset…", variant="stop", size="sm", scale=1)
    confirm_dataset = build_confirm("dataset")
    gr.Markdown("#### My runs")
    with gr.Row():
        runs = gr.Dropdown(label="Runs (pick one to run again or delete; two or more to compare)", choices=[],
                           value=[], multiselect=True, scale=3)
        with gr.Column(scale=1, min_width=200):
            compare_btn = gr.Button("Compare side by side", size="sm")
            again = gr.Button("Run again with changes →", size="sm", variant="primary")
            delete_job_btn = gr.Button("Delete run…", variant="stop", size="sm")
    confirm_job = build_confirm("job")
    comparison = gr.Markdown()
    curves = gr.LinePlot(x="step", y="loss", color="run", title="Training loss of the compared runs", height=280)
    return LibraryPage(datasets, dataset, delete_dataset_btn, runs, compare_btn, again, delete_job_btn, comparison,
                       curves, message, refresh, confirm_dataset, confirm_job)


def wire_library_page(page: LibraryPage, ctx: AppContext, shared: Shared, fill_from_job: Fill) -> None:
    """The page's own events; "run again with changes" fills the data, template and train pages
    (`fill_from_job.values(uid, prior)`: their updates from a prior job, a RunAgain)."""

    lists = [page.datasets, page.dataset, page.runs]

    def listed(uid: int) -> dict:
        return {page.datasets: datasets_frame(ctx, uid), page.dataset: gr.update(choices=dataset_choices(ctx, uid),
                                                                                value=None),
                page.runs: gr.update(choices=job_choices(ctx, uid), value=[])}

    def on_refresh(request: gr.Request):
        return listed(ctx.user_id(request))

    page.refresh.click(on_refresh, None, lists, api_visibility="private")
    shared.demo.load(on_refresh, None, lists, api_visibility="private")

    def acting(fn):
        def handler(value, request: gr.Request):
            try:
                uid = ctx.user_id(request)
                message = fn(ctx, uid, value)
            except UserError as e:
                return {page.message: f"✗ {e}"}
            return {page.message: message, **listed(uid)}

        return handler

    def one(job_ids):
        if not job_ids or len(job_ids) != 1:
            raise UserError("pick exactly one run for this")
        return job_ids[0]

    def ask_first(button: gr.Button, picked: gr.Dropdown, confirm: Confirm, question, delete, what: str) -> None:
        """`button` asks `question` (or says why it cannot be deleted); Delete does `delete` on the value it
        was asked about (checked again then), Keep it closes the question."""
        asked = gr.State(None)

        def closed() -> dict:
            return {confirm.box: gr.update(visible=False), asked: None}

        def on_ask(value, request: gr.Request):
            try:
                text = question(ctx, ctx.user_id(request), value)
            except UserError as e:
                return {page.message: f"✗ {e}", **closed()}
            return {page.message: "", confirm.box: gr.update(visible=True), confirm.text: text, asked: value}

        button.click(on_ask, picked, [page.message, confirm.box, confirm.text, asked], api_visibility="private")
        confirm.yes.click(acting(delete), asked, [page.message, *lists], api_visibility="private").then(
            closed, None, [confirm.box, asked], api_visibility="private")
        confirm.keep.click(lambda: {page.message: f"Nothing deleted: the {what} is kept.", **closed()}, None,
                           [page.message, confirm.box, asked], api_visibility="private")

    ask_first(page.delete_dataset, page.dataset, page.confirm_dataset, dataset_delete_question, delete_dataset,
              "dataset")
    ask_first(page.delete_job, page.runs, page.confirm_job, lambda c, u, ids: job_delete_question(c, u, one(ids)),
              lambda c, u, ids: delete_job(c, u, one(ids)), "run")

    def on_compare(job_ids, request: gr.Request):
        try:
            table, curves = compare(ctx, ctx.user_id(request), job_ids)
        except UserError as e:
            return {page.message: f"✗ {e}"}
        return {page.message: "", page.comparison: table, page.curves: curves}

    # emptied first: the plot builds its colours and legend only when its value goes from none to some
    page.compare.click(lambda: None, None, page.curves, api_visibility="private").then(
        on_compare, page.runs, [page.message, page.comparison, page.curves], api_visibility="private")

    def on_again(job_ids, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            job_id = one(job_ids)
            prior = run_again(ctx, uid, job_id)
        except UserError as e:
            return {page.message: f"✗ {e}"}
        return {page.message: f"✓ Job #{job_id}'s data, template and settings are filled in: change what you want "
                              "and press Start.",
                shared.session: prior.data, shared.template: prior.template,
                shared.train_templates: prior.train_templates,
                **fill_from_job.values(uid, prior), shared.tabs: gr.Tabs(selected="train")}

    page.again.click(on_again, page.runs,
                     [page.message, shared.session, shared.template, shared.train_templates, *fill_from_job.outputs,
                      shared.tabs], api_visibility="private")
