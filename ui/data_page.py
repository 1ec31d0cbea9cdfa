"""Step 1: upload a small CSV, see it, pick the label column, choose how to evaluate, save.

Nothing is stored until every check passed for every file; the parsed rows and the original
bytes are then written by storage (files first, then one row; a failure leaves neither).
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ia3app import tables as data
from ia3app.errors import UserError
from ia3app.hf_datasets import FILE_FORMATS, dataset_as_csv, is_dataset_file
from ia3app.jobtypes import Holdout
from ia3app.templates.task_shapes import guess_label_column as library_guess
from ui.context import AppContext
from ui.shared import DataChoice, Fill, Shared
from ui.uploads import read_upload, upload_size

AUTO = "Split my file automatically"
SEPARATE = "Upload a separate held-out CSV"
NONE = "No evaluation (train on every row)"
CV = "Cross-validate: every row trains and is measured (k + 1 training runs)"
FEW_HELD_OUT = 50
"""Below this many held-out rows the page suggests cross-validation (one accuracy on them is mostly noise)."""


def shown(frame: pd.DataFrame | None, **more) -> dict:
    """A table's update: hidden while it has nothing to show (Gradio draws an empty one with placeholder
    headers "1 2 3", issue 23)."""
    return gr.update(value=frame, visible=frame is not None, **more)


_PARSED: "OrderedDict[tuple, data.Table]" = OrderedDict()
_PARSED_LOCK = threading.Lock()
PARSED_CACHE = 8
"""Parsed uploads kept in memory (each at most the upload limit): the page's handlers (file, label column,
split settings) read one upload many times; each parse is linear in the file, so parse it once."""


def parse(path: str | None, ctx: AppContext, what: str = "file") -> "data.Table":
    """The upload as a Table; the same file (path, size, modification time) is parsed once. A refusal is not
    cached: load_csv refuses before reading past the first line where it can (too many columns)."""
    upload_size(path, ctx, what)
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, ctx.max_upload_bytes, ctx.max_rows)
    with _PARSED_LOCK:
        table = _PARSED.get(key)
        if table is not None:
            _PARSED.move_to_end(key)
            return table
    if is_dataset_file(path):  # parquet / JSON lines: through `datasets`, then the CSV's own checks
        upload_size(path, ctx, what)
        raw = dataset_as_csv(path, max_rows=ctx.max_rows)[1]
    else:
        raw = read_upload(path, ctx, what)
    table = data.load_csv(raw, max_bytes=ctx.max_upload_bytes, max_rows=ctx.max_rows)
    with _PARSED_LOCK:
        _PARSED[key] = table
        while len(_PARSED) > PARSED_CACHE:
            _PARSED.popitem(last=False)
    return table


def clear_parse_cache() -> None:
    """Forget every parsed upload: the next parse reads its file again (bench/bench_upload.py times both)."""
    with _PARSED_LOCK:
        _PARSED.clear()


def guess_label_column(columns: list[str]) -> str:
    """The column the page proposes as the label: the one guess_label_column (ia3app.templates.task_shapes) finds
    by name, else the last column."""
    return library_guess(columns) or columns[-1]


def label_report(table: "data.Table", label_column: str,
                 text_columns: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Counts per label and the warnings (empty text checked in the ticked text columns); UserError for an
    unusable label column."""
    text_columns = [c for c in text_columns or [] if c in table.columns and c != label_column] or None
    warnings = list(data.check_labels(table, label_column, text_columns=text_columns))
    data.check_text_columns(table, text_columns or [])
    counts = data.label_counts(table.rows, label_column)
    frame = pd.DataFrame({"label": list(counts), "rows": list(counts.values())})
    return frame, warnings


def split_summary(rows: list[dict], label_column: str, fraction: float, seed: int) -> str:
    """What the automatic split will do, per label, so the user sees it before saving."""
    train, held = Holdout(fraction, int(seed)).split(rows, label_column)
    tc, hc = data.label_counts(train, label_column), data.label_counts(held, label_column)
    per = ", ".join(f"`{k}`: {tc.get(k, 0)} / {hc.get(k, 0)}" for k in sorted(set(tc) | set(hc)))
    text = f"**{len(train)} rows to train on, {len(held)} held out for evaluation** (train / held-out per label: {per})"
    if 0 < len(held) < FEW_HELD_OUT:
        width = 100 * 1.96 * (0.25 / len(held)) ** 0.5
        text += (f"\n\n⚠ With {len(held)} held-out rows an accuracy is known only to about ±{width:.0f} points "
                 f"(95 % interval at 50 % accuracy). **Cross-validate** instead to measure on every row.")
    return text


def cv_summary(rows: list[dict], label_column: str, folds: int) -> str:
    """What k-fold cross-validation will do and cost, before anything is saved or started."""
    from ia3app.tables import stratified_folds

    k = int(folds)
    assigned = stratified_folds(rows, label_column, k)
    sizes = sorted({assigned.count(f) for f in range(k)})
    return (f"**{k} folds of {'–'.join(str(n) for n in sizes)} rows**: each fold is scored by a model trained on the "
            f"other {k - 1}, so all {len(rows)} rows are measured; then the adapter trains on every row. "
            f"**Cost: {k + 1} training runs** (about {k + 1}× the training time the Train page estimates).")


def describe_file(path: str | None, ctx: AppContext) -> dict[str, Any]:
    """Parse the training file for display: columns, a preview, a guessed label column, parse warnings."""
    table = parse(path, ctx)
    return {
        "columns": table.columns,
        "preview": pd.DataFrame(table.rows[:8], columns=table.columns),
        "label_column": guess_label_column(table.columns),
        "rows": len(table.rows),
        "summary": f"**{len(table.rows)} rows**, columns: {', '.join(f'`{c}`' for c in table.columns)} "
        f"(delimiter `{_show_delimiter(table.delimiter)}`, encoding {table.encoding})",
        "warnings": list(table.warnings),
    }


def preview_widths(columns: list[str]) -> list[str]:
    """Short columns (labels, ids) narrow, text wide, so every column shows without scrolling."""
    weights = [2 if library_guess([c]) or len(columns) == 1 else 4 for c in columns]  # 'label' fits
    return [f"{100 * w / sum(weights):.0f}%" for w in weights]


def _show_delimiter(d: str) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon"}.get(d, d)


def save_upload(ctx: AppContext, uid: int, path: str | None, label_column: str, sample_k: int | None,
                eval_mode: str, eval_path: str | None, fraction: float, seed: int,
                text_columns: list[str] | None = None, folds: int | None = None) -> DataChoice:
    """Validate everything, then store the training (and held-out) dataset; returns the session's data choice."""
    from storage import repo

    table = parse(path, ctx, "training file")
    if label_column not in table.columns:
        raise UserError(f"pick the label column; the file has: {', '.join(table.columns)}")
    given = bool(text_columns)
    text_columns = [c for c in (text_columns or table.columns) if c != label_column]
    unknown = [c for c in text_columns if c not in table.columns]
    if unknown or not text_columns:
        raise UserError("tick at least one text column other than the label column; the file has: "
                        + ", ".join(table.columns))
    data.check_labels(table, label_column)
    if given:  # a ticked column empty in every row: a warning alone let it be saved (issue 23)
        data.check_text_columns(table, text_columns)
    rows = table.rows
    if sample_k:
        rows = data.sample_per_class(table.rows, label_column, int(sample_k), int(seed))
    eval_table = None
    holdout = None
    if eval_mode == SEPARATE:
        eval_table = parse(eval_path, ctx, "held-out file")
        missing = [c for c in table.columns if c not in eval_table.columns]
        if missing:
            raise UserError(f"the held-out file lacks column(s) {', '.join(missing)} that the training file has; "
                            f"it has: {', '.join(eval_table.columns)}")
        data.check_labels(eval_table, label_column)
    elif eval_mode == AUTO:
        if not 0.05 <= float(fraction) <= 0.5:
            raise UserError("the held-out share must be between 5% and 50%")
        split = Holdout(float(fraction), int(seed))
        held_out = len(split.split(rows, label_column)[1])  # raises if it cannot split
        holdout = split
    cv_folds = None
    if eval_mode != AUTO:
        held_out = None
    if eval_mode == CV:
        cv_summary(rows, label_column, int(folds or 5))  # raises if there are too few rows
        cv_folds = int(folds or 5)
    name = Path(path).name
    db, store = ctx.db(), ctx.files()
    raw = read_upload(path, ctx)
    reused = repo.find_same_dataset(db, store, uid, raw, label_column, rows)  # same bytes: no second copy
    dataset_id = reused or repo.save_dataset(db, store, uid, name, name, raw, table.columns, rows, label_column)
    eval_id = None
    if eval_table is not None:
        try:
            eval_name, eval_raw = Path(eval_path).name, read_upload(eval_path, ctx)
            eval_id = repo.find_same_dataset(db, store, uid, eval_raw, label_column, eval_table.rows) or \
                repo.save_dataset(db, store, uid, eval_name, eval_name, eval_raw, eval_table.columns,
                                  eval_table.rows, label_column)
        except BaseException:
            if not reused:
                repo.delete_dataset(db, store, dataset_id, uid)  # nothing stored half-way
            raise
    return DataChoice(dataset_id=dataset_id, filename=name, rows=len(rows), columns=list(table.columns),
                      label_column=label_column, text_columns=text_columns,
                      label_values=sorted(data.label_counts(rows, label_column)), eval_dataset_id=eval_id,
                      holdout=holdout, cv_folds=cv_folds, held_out=held_out, reused=bool(reused))


def shape_md(table: "data.Table", label_column: str, text_columns: list[str] | None) -> str:
    """The task the ticked columns make, in words (one text, a pair, passage + question, multiple choice)."""
    from ia3app.templates.task_shapes import detect_shape

    inputs = [c for c in text_columns or [] if c in table.columns and c != label_column]
    inputs = inputs or [c for c in table.columns if c != label_column]
    shape = detect_shape(inputs, data.label_counts(table, label_column))
    return f"**The model will read:** {shape.description}.\n\n"


def stored_values(page: "DataPage", ctx: AppContext, uid: int, session: DataChoice, where: str) -> dict:
    """The page showing a stored dataset instead of an upload (Run again with changes): its rows, label and
    text columns, counts and held-out rows, the file box emptied; `where` says where the data comes from."""
    from ia3app.templates.task_shapes import detect_shape
    from storage import repo

    rows = repo.load_rows(ctx.db(), ctx.files(), session.dataset_id, uid)
    label, columns = session.label_column, list(session.columns)
    counts = data.label_counts(rows, label)
    holdout = session.holdout
    if holdout:
        mode, split = AUTO, split_summary(rows, label, holdout.fraction, holdout.seed)
    elif session.eval_dataset_id:
        mode, split = SEPARATE, f"Held-out rows: your stored dataset #{session.eval_dataset_id}."
    elif session.cv_folds:
        mode, split = CV, cv_summary(rows, label, session.cv_folds)
    else:
        mode, split = NONE, ""
    shape = detect_shape(session.text_columns, session.label_values)
    return {page.file: None,
            page.summary: f"**{html.escape(session.filename)}**, stored: **{len(rows)} rows**, columns: "
                          f"{', '.join(f'`{c}`' for c in columns)} ({where}; upload a file to use other data)",
            page.preview: shown(pd.DataFrame(rows[:8], columns=columns), column_widths=preview_widths(columns)),
            page.label_column: gr.update(choices=columns, value=label),
            page.text_columns: gr.update(choices=[c for c in columns if c != label], value=session.text_columns),
            page.counts: shown(pd.DataFrame({"label": list(counts), "rows": list(counts.values())})),
            page.checks: f"**The model will read:** {shape.description}.",
            page.eval_mode: mode, page.fraction: holdout.fraction if holdout else 0.25,
            page.seed: holdout.seed if holdout else 0, page.split_info: split,
            page.folds: gr.update(value=session.cv_folds or 5, visible=mode == CV),
            page.save: gr.update(interactive=False), page.message: ""}


def filled_by_stored(page: "DataPage") -> list:
    """The components stored_values fills."""
    return [page.file, page.summary, page.preview, page.label_column, page.text_columns, page.counts, page.checks,
            page.eval_mode, page.fraction, page.seed, page.split_info, page.save, page.message, page.folds]


def warnings_md(warnings: list[str]) -> str:
    return "".join(f"- ⚠ {w}\n" for w in warnings)


@dataclass
class DataPage:
    file: gr.File
    summary: gr.Markdown
    preview: gr.Dataframe
    label_column: gr.Dropdown
    text_columns: gr.CheckboxGroup
    counts: gr.Dataframe
    checks: gr.Markdown
    sample: gr.Checkbox
    sample_k: gr.Number
    eval_mode: gr.Radio
    fraction: gr.Slider
    seed: gr.Number
    eval_file: gr.File
    split_info: gr.Markdown
    save: gr.Button
    message: gr.Markdown
    folds: gr.Slider
    hf_name: gr.Textbox
    hf_config: gr.Textbox
    hf_split: gr.Textbox
    hf_load: gr.Button


def build_data_page(ctx: AppContext) -> DataPage:
    gr.Markdown(
        "### Step 1 — your labelled examples\n"
        "A CSV file with a header row: one or more text columns and one column with the label. "
        "**16 to 32 rows per label is plenty** — that is what few-shot means. Comma, semicolon or tab "
        f"separated, UTF-8. Limits: {ctx.max_upload_bytes / 1e6:g} MB, {ctx.max_rows:,} rows."
    )
    with gr.Row():
        with gr.Column(scale=1):
            file = gr.File(label="Training CSV — drag and drop here (or parquet / JSON lines)",
                           file_types=[".csv", ".tsv", ".txt", *FILE_FORMATS], type="filepath", height=140)
            with gr.Accordion("…or load a Hugging Face dataset", open=False):
                hf_name = gr.Textbox(label="Dataset: a Hub name" + ("" if ctx.auth_required else
                                                                     ", a folder saved with save_to_disk, or a "
                                                                     "parquet / JSON-lines file on this machine"),
                                     placeholder="glue" if ctx.auth_required else "glue  ·  /data/my_dataset")
                with gr.Row():
                    hf_config = gr.Textbox(label="Config (if it has several)", placeholder="sst2")
                    hf_split = gr.Textbox(label="Split", placeholder="train")
                hf_load = gr.Button("Load dataset")
            summary = gr.Markdown()
            label_column = gr.Dropdown(label="Which column holds the label?", choices=[], interactive=True)
            text_columns = gr.CheckboxGroup(label="Which column(s) hold the text the model reads?", choices=[])
            counts = gr.Dataframe(label="Rows per label", interactive=False, max_height=200, visible=False)
            checks = gr.Markdown()
            with gr.Row():
                sample = gr.Checkbox(label="Use only some rows per label", value=False)
                sample_k = gr.Number(label="rows per label", value=32, precision=0, minimum=2)
        with gr.Column(scale=2):
            preview = gr.Dataframe(label="First rows of your file", interactive=False, wrap=True, max_height=320,
                                   visible=False)
            gr.Markdown("#### How should the result be checked?")
            eval_mode = gr.Radio([AUTO, SEPARATE, CV, NONE], value=AUTO, label="Held-out rows measure accuracy "
                                 "(zero-shot vs in-context vs T-Few)")
            with gr.Row():
                fraction = gr.Slider(0.05, 0.5, value=0.25, step=0.05, label="Share held out")
                seed = gr.Number(label="Split seed", value=0, precision=0)
            folds = gr.Slider(2, 10, value=5, step=1, label="Folds (k)", visible=False)
            eval_file = gr.File(label="Held-out CSV (same columns)", file_types=[".csv", ".tsv", ".txt"],
                                type="filepath", visible=False, height=110)
            split_info = gr.Markdown()
    save = gr.Button("Save data and continue →", variant="primary", interactive=False)
    message = gr.Markdown()
    eval_mode.change(lambda m: (gr.update(visible=m == AUTO), gr.update(visible=m == AUTO),
                                gr.update(visible=m == SEPARATE), gr.update(visible=m == CV)), eval_mode,
                     [fraction, seed, eval_file, folds],
                     api_visibility="private")
    return DataPage(file, summary, preview, label_column, text_columns, counts, checks, sample, sample_k,
                    eval_mode, fraction, seed, eval_file, split_info, save, message, folds, hf_name, hf_config,
                    hf_split, hf_load)


def wire_data_page(page: DataPage, ctx: AppContext, shared: Shared, suggest_template: Fill):
    """The page's own events; Save stores the data and fills the template page (`suggest_template.values(state)`
    -> (names of the built-ins that fit, the template page's updates)). Returns the Save event, so the
    template page can check its freshly filled editor after it."""

    def on_file(path, session: DataChoice | None):
        closed = {page.label_column: gr.update(choices=[], value=None), page.counts: shown(None), page.checks: "",
                  page.save: gr.update(interactive=False), page.message: "",
                  page.text_columns: gr.update(choices=[], value=[]), page.split_info: ""}
        if not path and session is not None and session.stored_from:
            return gr.skip()  # the box was emptied by "Run again": the page shows that job's stored data
        if not path:
            return {**closed, page.summary: "", page.preview: shown(None)}
        try:
            info = describe_file(path, ctx)
        except UserError as e:
            return {**closed, page.summary: f"✗ **This file cannot be used:** {e}", page.preview: shown(None)}
        return {page.summary: info["summary"] + "\n" + warnings_md(info["warnings"]),
                page.preview: shown(info["preview"], column_widths=preview_widths(info["columns"])),
                page.label_column: gr.update(choices=info["columns"], value=info["label_column"]),
                page.counts: shown(None), page.checks: "", page.save: gr.update(interactive=True), page.message: ""}

    def on_dataset(name, config, split):
        """A named dataset, read through `datasets` into a CSV that fills the file box: from there on it is
        checked, previewed and stored exactly as an uploaded CSV."""
        from ui.tempfiles import new_download

        try:
            filename, raw = dataset_as_csv(name, config=config, split=split, max_rows=ctx.max_rows,
                                           local_ok=not ctx.auth_required)
        except UserError as e:
            return {page.summary: f"✗ **This dataset cannot be used:** {e}"}
        path = new_download(ctx.data_dir, filename)
        path.write_bytes(raw)
        return {page.file: str(path)}

    page.hf_load.click(on_dataset, [page.hf_name, page.hf_config, page.hf_split], [page.file, page.summary],
                       api_visibility="private")
    page.file.change(on_file, [page.file, shared.session],
                     [page.summary, page.preview, page.label_column, page.counts, page.checks, page.save, page.message,
                      page.text_columns, page.split_info], api_visibility="private")

    def on_label_text(path, label_column):
        if not path:
            return gr.skip()  # no file: on_file cleared the page, or it shows a stored dataset (Run again)
        if not label_column:
            return gr.update(choices=[], value=[])
        try:
            columns = parse(path, ctx).columns
        except UserError:
            return gr.update(choices=[], value=[])
        others = [c for c in columns if c != label_column]
        return gr.update(choices=others, value=others)

    page.label_column.change(on_label_text, [page.file, page.label_column], page.text_columns,
                             api_visibility="private")

    def on_label(path, label_column, eval_mode, fraction, seed, sample, k, text_columns, folds):
        if not path:
            return gr.skip()  # as in on_label_text
        if not label_column:
            return {page.counts: shown(None), page.checks: "", page.split_info: "",
                    page.save: gr.update(interactive=False)}
        try:
            table = parse(path, ctx)
            frame, warnings = label_report(table, label_column, text_columns)
            rows = data.sample_per_class(table.rows, label_column, int(k), int(seed)) if sample and k else table.rows
            split = (split_summary(rows, label_column, fraction, seed) if eval_mode == AUTO
                     else cv_summary(rows, label_column, folds) if eval_mode == CV else "")
        except UserError as e:
            return {page.counts: shown(None), page.checks: f"✗ **This data cannot be saved yet:** {e}",
                    page.split_info: "",
                    page.save: gr.update(interactive=False)}
        return {page.counts: shown(frame),
                page.checks: shape_md(table, label_column, text_columns) + warnings_md(warnings),
                page.split_info: split, page.save: gr.update(interactive=True)}

    inputs = [page.file, page.label_column, page.eval_mode, page.fraction, page.seed, page.sample, page.sample_k,
              page.text_columns, page.folds]
    for comp in (page.label_column, page.eval_mode, page.fraction, page.seed, page.sample, page.sample_k,
                 page.text_columns, page.folds):
        comp.change(on_label, inputs, [page.counts, page.checks, page.split_info, page.save],
                    api_visibility="private")

    def on_save(path, label_column, text_columns, sample, k, eval_mode, eval_path, fraction, seed, folds,
                request: gr.Request):
        try:
            state = save_upload(ctx, ctx.user_id(request), path, label_column, int(k) if sample else None,
                                eval_mode, eval_path, fraction, seed, text_columns, folds)
            fitting, filled = suggest_template.values(state)
        except UserError as e:
            return {page.message: f"✗ **Not saved:** {e}"}
        msg = (f"✓ {'Already stored (reused, not copied again):' if state.reused else 'Saved'} "
               f"**{state.filename}** ({state.rows} rows). "
               + (f"{len(fitting)} built-in template(s) fit your columns." if fitting else
                  "No built-in template uses every ticked column: write one (step 2), or untick the columns "
                  "the model need not read."))
        return {shared.session: state, page.message: msg, shared.tabs: gr.Tabs(selected="template"), **filled}

    return page.save.click(on_save, [page.file, page.label_column, page.text_columns, page.sample, page.sample_k,
                                     page.eval_mode, page.eval_file, page.fraction, page.seed, page.folds],
                           [shared.session, page.message, shared.tabs, *suggest_template.outputs],
                           api_visibility="private")
