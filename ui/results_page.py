"""Step 5: what the job achieved — metrics for the three methods, parameter counts, speed against
in-context learning — then live and batch predictions and the adapter download.

Every handler checks that the job is the caller's before touching its folder; folders are found
by job id through the file store, never from a path a client sent.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ia3app.errors import UserError
from ia3app.evaluation.calibration import UNSURE
from ia3app.evaluation import plots as P
from ia3app.evaluation.in_context import shots_note
from ia3app.evaluation.uncertainty import calibration_text, difference_lines, folds_text, headline, intervals_for
from ia3app.jobtypes import JobLabels, JobResult, dumps
from ui.context import AppContext
from ui.tempfiles import hand_out, new_download
from ui.shared import Shared

METHOD_NAMES = {"zero-shot": "zero-shot", "in-context": "in-context", "t-few": "T-Few"}
METHODS_EXPLAINED = ("**zero-shot**: the base model with no training · **in-context**: the training rows pasted into "
                     "every prompt as examples · **T-Few**: the model with your trained (IA)³ adapter merged in.")
MAX_FIELDS = 6
METRIC_WIDTHS = ["25%", "10%", "15%", "10%", "15%", "11%", "14%"]
"""metrics_frame's columns: sized by their content, a narrow column broke its header inside a word ("accura cy")."""
NO_JOB = ("Results appear here when a job has finished: pick it on *4 · Progress & jobs* and press "
          "*See results →*.")
ZIP_MEMBERS = ("adapter.safetensors", "ia3_config.json", "README.md")


def owned_adapter_dir(ctx: AppContext, uid: int, job_id: Any) -> tuple[Any, Path]:
    """(job, adapter folder) of one of the caller's succeeded jobs; UserError otherwise (same words for
    someone else's job and a missing one, so ids reveal nothing)."""
    from jobs import queue

    try:
        jid = int(job_id)
    except (TypeError, ValueError):
        raise UserError("pick one of your finished jobs first") from None
    job = queue.get_job(ctx.db(), jid, uid) if jid > 0 else None
    if job is None:
        raise UserError(f"job #{jid} is not one of your jobs")
    if job.status != "succeeded":
        raise UserError(f"job #{jid} has not finished successfully (it is {job.status}); results appear when it has")
    folder = ctx.files().adapter_dir(jid)
    key = ctx.files().job_dir_key("adapters", jid)
    if key is not None and job.job_key is not None and key != job.job_key:  # a replaced database
        raise UserError(f"job #{jid}'s adapter folder holds another job's files (was the database replaced?); "
                        "the administrator can list them with `python -m storage.admin list-stale`")
    if not (folder / "adapter.safetensors").is_file():
        raise UserError(f"job #{jid}'s adapter files are missing from the data directory")
    return job, folder


def _human_bytes(n: float | None) -> str:
    if not n:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _human_count(n: float | None) -> str:
    if n is None:
        return "–"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def params_md(result: JobResult) -> str:
    p = result.params or {}
    base, added = p.get("base"), p.get("added")
    fraction = p.get("fraction") if p.get("fraction") is not None else (added / base if base and added else None)
    full = p.get("full_model_bytes") or (base * 4 if base else None)
    adapter = p.get("adapter_bytes")
    rows = [
        "| Parameters | |", "|---|---|",
        f"| Base model parameters | **{_human_count(base)}** ({base:,}) |" if base else
        "| Base model parameters | – |",
        f"| (IA)³ parameters trained and added | **{added:,}** |" if added else "| (IA)³ parameters added | – |",
        f"| Fraction of the model | **{fraction:.4%}** |" if fraction else "| Fraction | – |",
        f"| Adapter size on disk | **{_human_bytes(adapter)}** vs the full model's {_human_bytes(full)} (fp32) "
        + (f"(**{full / adapter:,.0f}× smaller**) |" if adapter and full else "|"),
    ]
    return "\n".join(rows)


def metrics_frame(result: JobResult) -> pd.DataFrame:
    methods = result.methods
    rows = []
    for key, m in methods.items():
        rows.append({
            # the count only: the whole note did not fit the column (it is under the header, results_view)
            "method": METHOD_NAMES.get(key, key) + (f" ({m['shots']:g} shots)" if key == "in-context" and shots_note(m)
                                                    else ""),
            "accuracy": f"{m['accuracy']:.1%}",
            "accuracy 95 % CI": _ci_cell(m, "accuracy"),
            "macro-F1": f"{m['macro_f1']:.3f}",
            "macro-F1 95 % CI": _ci_cell(m, "macro_f1", percent=False),
            "ms / prediction": f"{m['latency_s'] * 1000:.1f}",
            "FLOPs / prediction": f"{m['flops']:.2e}",
        })
    return pd.DataFrame(rows)


def _ci_cell(report: dict, metric: str, percent: bool = True) -> str:
    """'62.5 % – 93.8 %' (or '0.612 – 0.901'); a result stored before intervals gets them from its
    confusion matrix; '–' when neither exists."""
    ci = intervals_for(report).get(metric) or {}
    if ci.get("low") is None:
        return "–"
    return f"{ci['low']:.1%} – {ci['high']:.1%}" if percent else f"{ci['low']:.3f} – {ci['high']:.3f}"


def sureness_md(result: JobResult) -> str:
    """How sure the comparison is: paired differences with verdicts, the fold spread, calibration."""
    evaluation = result.evaluation or {}
    if not result.methods:
        return ""
    n = next(iter(result.methods.values())).get("n", result.num_eval)
    lines = [f"**{headline(evaluation)}**", ""] if headline(evaluation) else []
    lines += [f"Intervals are 95 % bootstrap intervals over the {n} rows measured: with this few rows, a few "
             "answers either way move accuracy a lot."]
    diffs = difference_lines(evaluation)
    lines += [f"- {d}" for d in diffs] or ["- (paired differences appear for jobs run since they were added)"]
    if folds_text(evaluation):
        lines += ["", folds_text(evaluation)]  # a paragraph of its own, not part of the last bullet
    return "\n".join(lines)


def threshold_of(folder: Path) -> float | None:
    """The abstain threshold stored in an adapter folder's ia3_config.json (None: never abstain)."""
    import json

    from ia3app.evaluation.calibration import check_threshold

    try:
        return check_threshold(json.loads((folder / "ia3_config.json").read_text(encoding="utf-8")).get("abstain_threshold"))
    except (OSError, ValueError):
        return None


def coverage_words(result: JobResult, threshold: float | None) -> str:
    """'Threshold 0.70: answers 80 % of rows (32 of 40) at 96 % accuracy; 20 % come back unsure.'"""
    from ia3app.evaluation.calibration import at_threshold, coverage_at_accuracy

    cal = (result.evaluation or {}).get("calibration")
    if not cal:
        return "A confidence threshold needs held-out or cross-validated rows to judge it; this job had none."
    curve, all_rows = cal["coverage"], cal["coverage"][-1]
    if not threshold:
        text = (f"**No threshold: answers every row ({all_rows['answered']}) at {all_rows['accuracy']:.0%} accuracy.** "
                "Move the slider to answer fewer rows more reliably.")
    else:
        point = at_threshold(curve, threshold)
        if point["answered"] == 0:
            text = f"**Threshold {threshold:.2f}: answers none of the {cal['n']} rows** — every prediction would be unsure."
        else:
            text = (f"**Threshold {threshold:.2f}: answers {point['coverage']:.0%} of rows ({point['answered']} of "
                    f"{cal['n']}) at {point['accuracy']:.0%} accuracy**; the other {1 - point['coverage']:.0%} come "
                    "back *unsure*.")
    best = coverage_at_accuracy(curve, 0.95)
    text += (f" To reach 95 % accuracy: threshold {best['threshold']:.2f}, answering {best['coverage']:.0%} of rows."
             if best else " No threshold reaches 95 % accuracy on these rows.")
    return text + f" (Measured on {cal['n']} {cal['source']} rows, calibrated probabilities.)"


def save_threshold(ctx: AppContext, uid: int, job_id: Any, threshold: Any) -> str:
    """Store the threshold with the caller's adapter (0 or empty: never abstain); the words to show."""
    from ia3app.adapters.files import set_abstain_threshold

    _, folder = owned_adapter_dir(ctx, uid, job_id)
    try:
        value = float(threshold) if threshold not in (None, "") else None
    except (TypeError, ValueError):
        raise UserError(f"the threshold must be a number from 0 to below 1 (got {threshold!r})") from None
    config = set_abstain_threshold(folder, value or None)
    stored = config["abstain_threshold"]
    return (f"✓ Saved with the adapter: predictions below {stored:.2f} now come back **unsure** (here, in the API, "
            "in CSV predictions and in the downloaded adapter)." if stored else
            "✓ Saved: this adapter always answers (no threshold).")


def unsure_note(pred: Any, threshold: float | None) -> str:
    """What the Try-it box says under its answer."""
    if pred.unsure:
        best = ", ".join(f"{k} {v:.0%}" for k, v in sorted(pred.probabilities.items(), key=lambda kv: -kv[1]))
        return (f"⚠ **unsure**: the top probability {pred.confidence:.0%} is below this adapter's threshold "
                f"{threshold:.0%}, so no answer is given. Probabilities: {best}.")
    return f"Confidence {pred.confidence:.0%}" + (f" (threshold {threshold:.0%})." if threshold else ".")


def speed_md(result: JobResult) -> str:
    ratios = result.ratio("in-context / t-few")
    if not ratios:
        return "Speed against in-context learning appears when the job evaluated both methods on held-out rows."
    methods = result.methods
    icl = methods["in-context"]
    return (f"**T-Few answers {ratios['latency_s']:.1f}× faster than in-context learning** on this machine "
            + (f"(median of {icl['latency_runs']} timed runs) " if icl.get("latency_runs", 1) > 1 else "")
            + f"({methods['t-few']['latency_s'] * 1000:.1f} ms vs {icl['latency_s'] * 1000:.1f} ms per prediction) and "
            f"needs **{ratios['flops']:.1f}× fewer FLOPs** ({methods['t-few']['flops']:.3g} vs {icl['flops']:.3g}), "
            f"because in-context learning re-reads {icl.get('shots', 'its')} examples with every question.")


def speed_frame(result: JobResult) -> pd.DataFrame:
    methods = result.methods
    return pd.DataFrame([{"method": k, "latency (ms)": m["latency_s"] * 1000} for k, m in methods.items()],
                        columns=["method", "latency (ms)"])


def per_class_frame(result: JobResult, method: str = "t-few") -> pd.DataFrame:
    methods = result.methods
    m = methods.get(method) or next(iter(methods.values()), None)
    if not m:
        return pd.DataFrame()
    rows = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in m["per_class"]]
    shown = label_display(result, [str(r.get("class", "")) for r in rows])
    return pd.DataFrame([{**r, "class": name} if "class" in r else r for r, name in zip(rows, shown)])


def label_display(result: JobResult, answers: list[str]) -> list[str]:
    """Class names as a person knows them: the label as their data writes it, with the answer word the
    model picks beside it ("1 (good)"); per-row choices in the data's own numbering ("0 (choice 1)")."""
    template = result.template
    if template.choice_templates:
        labels = template.choice_labels or [str(i) for i in range(len(answers))]
        return [f"{labels[i]} ({a})" if i < len(labels) else a for i, a in enumerate(answers)]
    by_answer = {str(v): str(k) for k, v in (template.label_map or {}).items()}
    return [f"{by_answer[a]} ({a})" if a in by_answer and by_answer[a] != a else a for a in answers]


def confusion_figure(result: JobResult):
    """One confusion matrix per method, side by side (rows: true label, columns: predicted), class names
    as the user's data writes them."""
    methods = result.methods
    if not methods:
        return None
    first = next(iter(methods.values()))
    return P.confusion_figure(result, label_display(result, [str(lb) for lb in first["labels"]]))


def column_use(source: str, column: str):
    """Where a template source names a column (a match), or None."""
    import re

    return re.search(rf"(?<![\w.]){re.escape(column)}(?!\w)", source)


def template_columns(result: JobResult) -> list[str]:
    """The template's columns in the order the template reads them (premise before hypothesis), so the
    "Try it" boxes follow the prompt a person wrote, not the alphabet."""
    spec = result.template
    text = "\n".join(spec.sources().values())

    def first_use(column: str) -> tuple[int, str]:
        found = column_use(text, column)
        return (found.start() if found else len(text), column)

    return sorted(spec.columns_used(), key=first_use)


def build_zip(ctx: AppContext, uid: int, job_id: Any) -> str:
    """adapter.safetensors, ia3_config.json, README.md, results.json, plots/ and peft/ in a fresh temp zip."""
    job, folder = owned_adapter_dir(ctx, uid, job_id)
    out = new_download(ctx.data_dir, f"ia3-adapter-job{int(job_id)}.zip")  # swept after 10 minutes
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ZIP_MEMBERS:
            if (folder / name).is_file():
                zf.write(folder / name, name)
        zf.writestr("results.json", dumps(job.result, indent=2))  # stored once, as the job's result
        plots = folder / "plots"  # the model card's pictures (README.md links them)
        for path in sorted(plots.glob("*.png")) if plots.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                zf.write(path, path.relative_to(folder).as_posix())
        peft = folder / "peft"
        for path in sorted(peft.rglob("*")) if peft.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                zf.write(path, path.relative_to(folder).as_posix())
    return hand_out(out, uid)  # Gradio's copy is served to this user only


def predict_one(ctx: AppContext, uid: int, job_id: Any, row: dict[str, str]) -> dict[str, float] | str:
    """{answer: probability} for one row typed by the user, through the app's serving engine; "unsure"
    when the confidence is below the adapter's threshold."""
    out = predict_row(ctx, uid, job_id, row)
    if out.unsure:
        return UNSURE
    return {str(k): float(v) for k, v in out.probabilities.items()}


def check_options_typed(template: Any, row: dict[str, str]) -> None:
    """A typed example's per-row answers must be typed too: UserError naming the empty boxes (the template's
    check said "an answer choice renders to empty text in rows 1", of a box that has no rows, issue 23)."""
    answers = "\n".join(template.choice_templates or [])
    options = [c for c, v in row.items() if not v.strip() and column_use(answers, c)]
    if options:
        they = "they hold answers" if len(options) > 1 else "it holds an answer"
        raise UserError(f"type something in {', '.join(options)} too: {they} for the model to choose from")


def predict_row(ctx: AppContext, uid: int, job_id: Any, row: dict[str, str]):
    """The serving engine's Prediction for one row: label (as the data writes it), choice, probabilities."""
    job, folder = owned_adapter_dir(ctx, uid, job_id)
    columns = template_columns(job.result)
    clean = {c: str(row.get(c) or "") for c in columns}
    if not any(v.strip() for v in clean.values()):
        raise UserError(f"type something in {', '.join(columns)} first")
    check_options_typed(job.result.template, clean)
    label_column = job.result.template.label_column
    clean.setdefault(label_column, "")
    return ctx.engine().predict(folder, [clean])[0]


def predict_batch(ctx: AppContext, uid: int, job_id: Any, csv_path: str | None) -> str:
    """Predictions for an uploaded CSV → path of a CSV with label and probability columns appended."""
    from ui.uploads import read_upload

    _, folder = owned_adapter_dir(ctx, uid, job_id)
    raw = read_upload(csv_path, ctx, "CSV to predict")
    out = new_download(ctx.data_dir, f"predictions-job{int(job_id)}.csv")  # swept after 10 minutes
    out.write_bytes(ctx.engine().predict_csv(folder, raw, max_bytes=ctx.max_upload_bytes, max_rows=ctx.max_rows))
    return hand_out(out, uid)  # Gradio's copy is served to this user only


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
