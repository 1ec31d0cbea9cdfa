"""Step 5: what the job achieved — metrics for the three methods, parameter counts, speed against
in-context learning — then live and batch predictions and the adapter download.

Every handler checks that the job is the caller's before touching its folder; folders are found
by job id through the file store, never from a path a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ia3app.errors import UserError
from ia3app.evaluation.calibration import UNSURE
from ia3app.evaluation import plots as P
from ia3app.evaluation.in_context import shots_note
from ia3app.evaluation.uncertainty import calibration_text
from ia3app.jobtypes import JobLabels
from ui.context import AppContext
from ui.owned_adapter import build_zip, owned_adapter_dir, predict_batch, predict_row, save_threshold, threshold_of
from ui.results_display import (METRIC_WIDTHS, confusion_figure, coverage_words, metrics_frame, params_md,
                                per_class_frame, speed_frame, speed_md, sureness_md, template_columns, unsure_note)
from ui.shared import Shared

METHODS_EXPLAINED = ("**zero-shot**: the base model with no training · **in-context**: the training rows pasted into "
                     "every prompt as examples · **T-Few**: the model with your trained (IA)³ adapter merged in.")
MAX_FIELDS = 6
NO_JOB = ("Results appear here when a job has finished: pick it on *4 · Progress & jobs* and press "
          "*See results →*.")


@dataclass
class ResultsPage:
    body: gr.Column
    """Everything below the header: shown only while one of the user's finished jobs is open."""
    header: gr.Markdown
    metrics: gr.Dataframe
    confusion: gr.Plot
    per_class: gr.Dataframe
    params: gr.Markdown
    speed: gr.Markdown
    speed_chart: gr.BarPlot
    fields: list
    predict: gr.Button
    prediction: gr.Label
    batch_file: gr.File
    batch_out: gr.File
    download: gr.DownloadButton
    message: gr.Markdown
    intervals: gr.Plot
    sureness: gr.Markdown
    calibration: gr.Markdown
    reliability: gr.Plot
    coverage: gr.Plot
    threshold: gr.Slider
    coverage_text: gr.Markdown
    save_threshold: gr.Button
    threshold_message: gr.Markdown
    folds: gr.Plot
    loss: gr.Plot
    prediction_note: gr.Markdown


def build_results_page() -> ResultsPage:
    header = gr.Markdown(NO_JOB, elem_id="results-header")
    # Hidden until a finished job is open: empty, the tables showed "1 2 3" placeholder headers and the
    # Predict and Download buttons looked live with nothing behind them (issue 23).
    with gr.Column(visible=False, elem_id="results-body") as body:
        gr.Markdown("#### Accuracy on the held-out rows")  # the full width: beside the adapter's size it was clipped
        metrics = gr.Dataframe(interactive=False, wrap=True, elem_id="results-metrics", column_widths=METRIC_WIDTHS)
        with gr.Row():
            with gr.Column(scale=3):
                gr.Markdown(METHODS_EXPLAINED)
            with gr.Column(scale=2):
                gr.Markdown("#### How small is the adapter?")
                params = gr.Markdown()
        gr.Markdown("#### How sure is this? (95 % intervals, paired differences)")
        with gr.Row():
            intervals = gr.Plot(show_label=False, elem_id="results-intervals")
        sureness = gr.Markdown(elem_id="results-sureness")
        folds = gr.Plot(show_label=False, visible=False, elem_id="results-folds")
        gr.Markdown("#### Confidence you can use: calibration and an abstain threshold")
        calibration = gr.Markdown(elem_id="results-calibration")
        with gr.Row():
            reliability = gr.Plot(show_label=False, elem_id="results-reliability")
            coverage = gr.Plot(show_label=False, elem_id="results-coverage")
        with gr.Row():
            threshold = gr.Slider(0, 0.99, value=0, step=0.01, scale=3, elem_id="results-threshold",
                                  label="Answer only when the top probability is at least (0: always answer)")
            save_threshold = gr.Button("Save threshold with the adapter", scale=1, elem_id="results-save-threshold")
        coverage_text = gr.Markdown(elem_id="results-coverage-text")
        threshold_message = gr.Markdown(elem_id="results-threshold-message")
        gr.Markdown("#### Confusion matrices (rows: true label, columns: predicted label)")
        confusion = gr.Plot(show_label=False)
        per_class = gr.Dataframe(label="Per-class scores (T-Few)", interactive=False)
        loss = gr.Plot(show_label=False, elem_id="results-loss")
        gr.Markdown("#### Speed against in-context learning")
        with gr.Row():
            speed = gr.Markdown()
            speed_chart = gr.BarPlot(x="method", y="latency (ms)", title="Latency per prediction (ms)", height=240)
        gr.Markdown("#### Try it: type an example")
        with gr.Row():
            with gr.Column(scale=3):
                fields = [gr.Textbox(visible=False, lines=2) for _ in range(MAX_FIELDS)]
                predict = gr.Button("Predict", variant="primary")
            with gr.Column(scale=2):
                prediction = gr.Label(label="Predicted answer and probabilities", num_top_classes=10,
                                      elem_id="results-prediction")
                prediction_note = gr.Markdown(elem_id="results-prediction-note")
        gr.Markdown("#### Predict a whole CSV, or take the adapter with you")
        with gr.Row():
            batch_file = gr.File(label="CSV with the same text columns", file_types=[".csv", ".tsv", ".txt"],
                                 type="filepath", height=110)
            batch_out = gr.File(label="Your CSV with predicted labels and probabilities", interactive=False, height=110)
            download = gr.DownloadButton("⬇ Download adapter (.zip: safetensors, PEFT folder, model card)")
        message = gr.Markdown()
    return ResultsPage(body, header, metrics, confusion, per_class, params, speed, speed_chart, fields, predict,
                       prediction, batch_file, batch_out, download, message, intervals, sureness, calibration,
                       reliability, coverage, threshold, coverage_text, save_threshold, threshold_message, folds, loss,
                       prediction_note)


def results_view(ctx: AppContext, uid: int, job_id: Any) -> dict[str, Any]:
    job, folder = owned_adapter_dir(ctx, uid, job_id)
    result = job.result
    labels = job.request.labels if job.request else JobLabels()
    training = result.training
    head = (f"## Results of job #{job.id}\nModel **{labels.model or result.model}**, template "
            f"**{labels.template or ''}**, trained on {result.num_train} rows for "
            f"{training.steps} steps in {training.wall_s:.0f} s; "
            + (f"cross-validated over those {result.num_eval} rows ({len(result.evaluation['folds'])} folds)."
               if (result.evaluation or {}).get("folds") else f"evaluated on {result.num_eval} held-out rows."))
    from ia3app.backbones.bundled import describe as bundled_model

    bundled = bundled_model(str(result.model))
    if bundled:
        head += (f"\n\nBase model: **{bundled['name']}** ({bundled['licence']} licence; real pretrained weights, "
                 f"bundled from {bundled['package']}: {bundled['quantization']}; the original is "
                 f"{bundled['original']}).")
    if "tiny-t0" in str(result.model):
        head += ("\n\n**Note:** the tiny demo model has random weights, so accuracy near chance is expected; "
                 "train a real model (e.g. the bundled SmolLM2-135M-Instruct) for meaningful numbers.")
    if shots_note(result.methods.get("in-context") or {}):
        head += f"\n\nIn-context prompts held {shots_note(result.methods['in-context'])}."
    if result.warnings:
        head += "\n" + "".join(f"\n- ⚠ {w}" for w in result.warnings)
    evaluation = result.evaluation or {}
    threshold = threshold_of(folder)
    cal = evaluation.get("calibration")
    return {"header": head, "metrics": metrics_frame(result), "confusion": confusion_figure(result),
            "per_class": per_class_frame(result), "params": params_md(result), "speed": speed_md(result),
            "speed_chart": speed_frame(result), "columns": template_columns(result),
            "intervals": P.intervals_figure(result), "sureness": sureness_md(result),
            "calibration": calibration_text(cal) if result.methods else "",
            "reliability": P.reliability_figure(cal), "coverage": P.coverage_figure(cal, threshold),
            "threshold": threshold or 0, "coverage_text": coverage_words(result, threshold),
            "folds": P.folds_figure(evaluation), "loss": P.loss_figure(result)}


def filled_by_open(page: ResultsPage) -> list:
    """The components open_results fills (besides the shared job state and tabs)."""
    return [page.body, page.header, page.metrics, page.confusion, page.per_class, page.params, page.speed,
            page.speed_chart, page.download, *page.fields, page.intervals, page.sureness, page.calibration,
            page.reliability, page.coverage, page.threshold, page.coverage_text, page.threshold_message, page.folds,
            page.loss, page.prediction_note]


def open_results(page: ResultsPage, ctx: AppContext, request: Any, job_id: Any, shared: Shared) -> dict:
    """The updates that open this page on one of the caller's finished jobs (or say why not)."""
    opened = {shared.results_job: int(job_id) if job_id else None, shared.tabs: gr.Tabs(selected="results")}
    try:
        uid = ctx.user_id(request)
        view = results_view(ctx, uid, job_id)
        zip_path = build_zip(ctx, uid, job_id)
    except UserError as e:
        return {**opened, page.header: f"✗ {e}", page.body: gr.update(visible=False),
                **{f: gr.update(visible=False) for f in page.fields}}
    cols = view["columns"]
    fields = {f: gr.update(visible=i < len(cols), label=cols[i] if i < len(cols) else "", value="")
              for i, f in enumerate(page.fields)}
    return {**opened, page.body: gr.update(visible=True), page.header: view["header"], page.metrics: view["metrics"],
            page.confusion: view["confusion"],
            page.per_class: view["per_class"], page.params: view["params"], page.speed: view["speed"],
            page.speed_chart: view["speed_chart"], page.download: zip_path, **fields,
            page.intervals: view["intervals"], page.sureness: view["sureness"], page.calibration: view["calibration"],
            page.reliability: view["reliability"], page.coverage: view["coverage"],
            page.threshold: gr.update(value=view["threshold"], interactive=view["reliability"] is not None),
            page.coverage_text: view["coverage_text"], page.threshold_message: "",
            page.folds: gr.update(value=view["folds"], visible=view["folds"] is not None),
            page.loss: view["loss"], page.prediction_note: ""}


def wire_results_page(page: ResultsPage, ctx: AppContext, shared: Shared) -> None:
    """The page's own events: one live prediction, a batch CSV."""

    def on_predict(v: dict, request: gr.Request):
        try:
            uid = ctx.user_id(request)
            job, _ = owned_adapter_dir(ctx, uid, v[shared.results_job])
            cols = template_columns(job.result)
            _, folder = owned_adapter_dir(ctx, uid, v[shared.results_job])
            pred = predict_row(ctx, uid, v[shared.results_job], dict(zip(cols, [v[f] for f in page.fields])))
        except UserError as e:
            return {page.prediction: None, page.prediction_note: "", page.message: f"✗ {e}"}
        shown = UNSURE if pred.unsure else {str(k): float(p) for k, p in pred.probabilities.items()}
        return {page.prediction: shown, page.prediction_note: unsure_note(pred, threshold_of(folder)),
                page.message: ""}

    page.predict.click(on_predict, {shared.results_job, *page.fields},
                       [page.prediction, page.prediction_note, page.message], api_visibility="private")

    def on_threshold(job_id, value, request: gr.Request):
        try:
            job, _ = owned_adapter_dir(ctx, ctx.user_id(request), job_id)
        except UserError as e:
            return {page.coverage_text: f"✗ {e}"}
        cal = (job.result.evaluation or {}).get("calibration")
        return {page.coverage_text: coverage_words(job.result, value or None),
                page.coverage: P.coverage_figure(cal, value or None), page.threshold_message: ""}

    page.threshold.change(on_threshold, [shared.results_job, page.threshold],
                           [page.coverage_text, page.coverage, page.threshold_message], api_visibility="private")

    def on_save_threshold(job_id, value, request: gr.Request):
        try:
            return {page.threshold_message: save_threshold(ctx, ctx.user_id(request), job_id, value)}
        except UserError as e:
            return {page.threshold_message: f"✗ {e}"}

    page.save_threshold.click(on_save_threshold, [shared.results_job, page.threshold], [page.threshold_message],
                              api_visibility="private")

    def on_batch(job_id, path, request: gr.Request):
        if not path:
            return {page.batch_out: None, page.message: ""}
        try:
            out = predict_batch(ctx, ctx.user_id(request), job_id, path)
        except UserError as e:
            return {page.batch_out: None, page.message: f"✗ {e}"}
        return {page.batch_out: out, page.message: "✓ Predictions ready: download below."}

    page.batch_file.change(on_batch, [shared.results_job, page.batch_file], [page.batch_out, page.message],
                           api_visibility="private")
