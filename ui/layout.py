"""The whole app: five steps as tabs, wired together. Page contents live in their own modules;
this file only connects them and turns UserErrors into messages a person reads."""

from __future__ import annotations

import functools
from typing import Any

import gradio as gr

from ia3app.errors import UserError
from ui import jobs_page as J
from ui import results_page as R
from ui import template_page as T
from ui import train_page as TR
from ui import upload as U
from ui.context import AppContext
from ui.models import detect_hardware

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
URL_JS = """(job) => { const u = new URL(window.location); if (job) { u.searchParams.set('job', job); }
  window.history.replaceState(null, '', u); return []; }"""


def _user(ctx: AppContext, request: gr.Request | None) -> int:
    return ctx.user_id(request)


def api_errors(fn):
    """For API endpoints: a UserError reaches the client as gr.Error with the same words."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            raise gr.Error(str(e)) from None

    return wrapper


def build_app(ctx: AppContext) -> gr.Blocks:
    hw = detect_hardware()
    # Gradio's cache (uploads, zips and CSVs handed to the browser) is readable by URL to anyone
    # signed in who knows the hashed path; our copies live in the data dir, so purge the cache's
    # files hourly once they are a day old to bound that window.
    with gr.Blocks(title="ia3app — few-shot T-Few adapters", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# ia3app · teach a language model your task from a few labelled examples\n"
                    "Upload a small CSV → pick how the model reads a row → train a tiny (IA)³ adapter with the "
                    "T-Few recipe → see how it compares with in-context learning, try it, download it.")
        session = gr.State({})
        template_state = gr.State(None)
        results_job = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("1 · Data", id="data"):
                up = U.build_upload_page(ctx)
            with gr.Tab("2 · Template", id="template"):
                tp = T.build_template_page()
            with gr.Tab("3 · Train", id="train"):
                tr = TR.build_train_page(ctx, hw)
            with gr.Tab("4 · Progress & jobs", id="job"):
                jp = J.build_job_page()
            with gr.Tab("5 · Results & predictions", id="results"):
                rp = R.build_results_page()
        U.wire_upload_page(up, ctx)
        saved = _wire_data_to_template(ctx, up, tp, tr, tabs, session, template_state)
        _wire_template(ctx, tp, tr, tabs, session, template_state, hw, saved)
        _wire_train(ctx, tr, jp, tabs, session, template_state, hw, demo)
        _wire_jobs(ctx, jp, rp, tabs, results_job, demo)
        _wire_results(ctx, rp, results_job)
        gr.api(_predict_api(ctx), api_name="predict")
    return demo


def _wire_data_to_template(ctx, up: U.UploadPage, tp: T.TemplatePage, tr: TR.TrainPage, tabs, session,
                           template_state):
    """Save the data, then fill the template editor with the best-fitting built-in; returns the event."""
    def on_save(path, label_column, text_columns, sample, k, eval_mode, eval_path, fraction, seed,
                request: gr.Request):
        try:
            state = U.save_upload(ctx, _user(ctx, request), path, label_column, int(k) if sample else None,
                                  eval_mode, eval_path, fraction, seed, text_columns)
            fitting = T.fitting_templates(state["text_columns"] + [label_column], state["label_values"],
                                          label_column)
        except UserError as e:
            return ({}, f"✗ **Not saved:** {e}", gr.Tabs(), gr.update(), *[gr.update()] * 6)
        names = list(fitting)
        first = fitting[names[0]] if names else None
        fields = (T.fields_from_spec(first) if first else ("", T.FIXED, "", "", ""))
        msg = (f"✓ Saved **{state['filename']}** ({state['rows']} rows). "
               + (f"{len(names)} built-in template(s) fit your columns." if names else
                  "No built-in template fits these columns: write one (step 2)."))
        return (state, msg, gr.Tabs(selected="template"),
                gr.update(choices=names + [T.CUSTOM], value=names[0] if names else T.CUSTOM),
                first.name if first else "custom", *fields)

    return up.save.click(on_save, [up.file, up.label_column, up.text_columns, up.sample, up.sample_k, up.eval_mode,
                                   up.eval_file, up.fraction, up.seed],
                  [session, up.message, tabs, tp.builtin, *tp.editor], api_visibility="private")


def _wire_template(ctx, tp: T.TemplatePage, tr: TR.TrainPage, tabs, session, template_state, hw, saved) -> None:
    def on_builtin(session_v, name):
        if not session_v or name == T.CUSTOM:
            return [gr.update()] * 6
        spec = T.fitting_templates(session_v["text_columns"] + [session_v["label_column"]],
                                   session_v["label_values"], session_v["label_column"]).get(name)
        return [gr.update()] * 6 if spec is None else [spec.name, *T.fields_from_spec(spec)]

    filled = tp.builtin.input(on_builtin, [session, tp.builtin], tp.editor, api_visibility="private")

    def on_edit(session_v, name, input_text, mode, choices, label_map, choice_templates, request: gr.Request):
        if not session_v or not session_v.get("dataset_id"):
            return "Upload your data first (step 1).", "", None, gr.update(interactive=False)
        from storage import repo

        try:
            rows = repo.load_rows(ctx.db(), ctx.files(), int(session_v["dataset_id"]), _user(ctx, request))
        except UserError as e:
            return f"✗ {e}", "", None, gr.update(interactive=False)
        message, preview, spec = T.check_template(rows, session_v["columns"], session_v["label_column"], name,
                                                  input_text, mode, choices, label_map, choice_templates)
        return message, preview, spec, gr.update(interactive=spec is not None)

    # One listener for every field's change, always_last: a fill changes the fields one by one, and the
    # run that counts is the last one, which reads the editor once it is whole (not a half-filled template).
    outputs = [tp.message, tp.preview, template_state, tp.next]
    for event in (saved, filled):
        event.then(on_edit, [session, *tp.editor], outputs, api_visibility="private")
    gr.on([comp.change for comp in tp.editor], on_edit, [session, *tp.editor], outputs, api_visibility="private",
          trigger_mode="always_last")

    def on_next(session_v, spec):
        if not spec:
            return gr.Tabs(), gr.update()
        held = ("a separate held-out file" if session_v.get("eval_dataset_id") else
                f"{session_v['holdout']['fraction']:.0%} of the rows held out" if session_v.get("holdout") else
                "no evaluation")
        return (gr.Tabs(selected="train"),
                f"Data: **{session_v['filename']}** ({session_v['rows']} rows; {held}) · template **{spec['name']}**")

    tp.next.click(on_next, [session, template_state], [tabs, tr.summary], api_visibility="private")


def _wire_train(ctx, tr: TR.TrainPage, jp: J.JobPage, tabs, session, template_state, hw, demo) -> None:
    steps, batch, length = (tr.recipe[TR.RECIPE_FIELDS.index(n)] for n in ("steps", "batch_size", "max_length"))

    def on_info(key, local_path, s, b, m, session_v, request: gr.Request):
        rows = None
        if session_v and session_v.get("dataset_id"):
            from storage import repo

            try:
                rows = repo.load_rows(ctx.db(), ctx.files(), int(session_v["dataset_id"]), _user(ctx, request))
            except UserError:
                rows = None
        return TR.model_info(ctx, key, local_path, s, b, m, rows, hw)

    info_inputs = [tr.model, tr.local_path, steps, batch, length, session]
    for comp in (tr.model, tr.local_path, steps, batch, length, tr.summary):
        comp.change(on_info, info_inputs, tr.info, api_visibility="private")
    demo.load(on_info, info_inputs, tr.info, api_visibility="private")

    def on_start(v: dict, request: gr.Request):
        try:
            uid = _user(ctx, request)
            recipe = TR.recipe_from_values([v[c] for c in tr.recipe])
            config = TR.build_job_config(ctx, uid, v[session], v[template_state], v[tr.model], v[tr.local_path],
                                         recipe, v[tr.init_tfew], v[tr.tfew_path], v[tr.eval_methods])
            from jobs import queue

            job_id = queue.submit(ctx.db(), uid, config)
        except UserError as e:
            return f"✗ **Not started:** {e}", gr.Tabs(), gr.update()
        return (f"✓ Job #{job_id} queued.", gr.Tabs(selected="job"),
                gr.update(choices=J.job_choices(ctx, uid), value=job_id))

    tr.start.click(on_start, {session, template_state, tr.model, tr.local_path, tr.init_tfew, tr.tfew_path,
                              tr.eval_methods, *tr.recipe}, [tr.message, tabs, jp.job], api_visibility="private")


def _wire_jobs(ctx, jp: J.JobPage, rp: R.ResultsPage, tabs, results_job, demo) -> None:
    seen = gr.State("")

    def on_tick(job_id, last_version, request: gr.Request):
        """Send the page only what changed: redrawing an unchanged chart every second wastes the browser."""
        try:
            view = J.job_view(ctx, _user(ctx, request), job_id)
        except UserError as e:
            return f"✗ {e}", "", None, "", gr.update(visible=False), "", gr.skip(), gr.update(visible=False)
        if view["version"] == last_version:
            return (gr.skip(),) * 8
        return (view["header"], view["bar"], view["loss"], view["log"],
                gr.update(visible=view["status"] == "succeeded"), view["version"],
                J.jobs_table(ctx, _user(ctx, request)),
                gr.update(visible=bool(job_id) and not view["done"]))  # nothing to cancel once a job has ended

    outs = [jp.header, jp.bar, jp.loss, jp.log, jp.results, seen, jp.table, jp.cancel]
    jp.timer.tick(on_tick, [jp.job, seen], outs, api_visibility="private", show_progress="hidden")
    jp.job.change(on_tick, [jp.job, gr.State("")], outs, api_visibility="private")
    jp.job.change(None, jp.job, None, js=URL_JS, api_visibility="private")

    def on_list(request: gr.Request):
        uid = _user(ctx, request)
        return gr.update(choices=J.job_choices(ctx, uid)), J.jobs_table(ctx, uid)

    jp.refresh.click(on_list, None, [jp.job, jp.table], api_visibility="private")
    def on_row(table, evt: gr.SelectData):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return gr.update(value=int(table.iloc[row]["job"]))

    jp.table.select(on_row, jp.table, jp.job, api_visibility="private")

    def on_cancel(job_id, request: gr.Request):
        return J.cancel_job(ctx, _user(ctx, request), job_id)

    jp.cancel.click(on_cancel, jp.job, jp.message, api_visibility="private")

    def on_load(request: gr.Request):
        uid = _user(ctx, request)
        wanted = request.query_params.get("job") if request else None
        choices = J.job_choices(ctx, uid)
        ids = {c[1] for c in choices}
        value = int(wanted) if wanted and wanted.isdigit() and int(wanted) in ids else None
        return (gr.update(choices=choices, value=value), J.jobs_table(ctx, uid),
                gr.Tabs(selected="job") if value is not None else gr.Tabs())

    demo.load(on_load, None, [jp.job, jp.table, tabs], api_visibility="private")

    def on_results(job_id, request: gr.Request):
        try:
            uid = _user(ctx, request)
            view = R.results_view(ctx, uid, job_id)
            zip_path = R.build_zip(ctx, uid, job_id)
        except UserError as e:
            return (int(job_id) if job_id else None, gr.Tabs(selected="results"), f"✗ {e}",
                    *[gr.update()] * 7, *[gr.update(visible=False)] * R.MAX_FIELDS)
        cols = view["columns"]
        fields = [gr.update(visible=i < len(cols), label=cols[i] if i < len(cols) else "", value="")
                  for i in range(R.MAX_FIELDS)]
        return (int(job_id), gr.Tabs(selected="results"), view["header"], view["metrics"], view["confusion"],
                view["per_class"], view["params"], view["speed"], view["speed_chart"], zip_path, *fields)

    jp.results.click(on_results, jp.job, [results_job, tabs, rp.header, rp.metrics, rp.confusion, rp.per_class,
                                          rp.params, rp.speed, rp.speed_chart, rp.download, *rp.fields],
                     api_visibility="private")


def _wire_results(ctx, rp: R.ResultsPage, results_job) -> None:
    def on_predict(v: dict, request: gr.Request):
        try:
            uid = _user(ctx, request)
            job, _ = R.owned_adapter_dir(ctx, uid, v[results_job])
            cols = R.template_columns(job.result or {})
            probs = R.predict_one(ctx, uid, v[results_job], dict(zip(cols, [v[f] for f in rp.fields])))
        except UserError as e:
            return None, f"✗ {e}"
        return probs, ""

    rp.predict.click(on_predict, {results_job, *rp.fields}, [rp.prediction, rp.message], api_visibility="private")

    def on_batch(job_id, path, request: gr.Request):
        if not path:
            return None, ""
        try:
            return R.predict_batch(ctx, _user(ctx, request), job_id, path), "✓ Predictions ready: download below."
        except UserError as e:
            return None, f"✗ {e}"

    rp.batch_file.change(on_batch, [results_job, rp.batch_file], [rp.batch_out, rp.message],
                         api_visibility="private")


def _predict_api(ctx: AppContext):
    @api_errors
    def predict(job_id: int, inputs: dict[str, str], request: gr.Request) -> dict[str, Any]:
        """Predict one row with a finished job's adapter: {"label": answer, "probs": {answer: p}}.

        inputs maps each template column to its text. Only the signed-in user's own jobs answer.
        """
        probs = R.predict_one(ctx, _user(ctx, request), job_id, inputs or {})
        return {"label": max(probs, key=probs.get), "probs": probs}

    return predict
