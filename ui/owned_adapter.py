"""One of the caller's finished adapters, found by job id: its folder (owner-checked), its abstain threshold,
its zip, and predictions through the app's serving engine, one typed row or a whole CSV.

Every function given a job id checks that the job is the caller's before touching its folder; folders are found
by job id through the file store, never from a path a client sent.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ia3app.errors import UserError
from ia3app.jobtypes import dumps
from ui.context import AppContext
from ui.results_display import column_use, template_columns
from ui.tempfiles import hand_out, new_download

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


def threshold_of(folder: Path) -> float | None:
    """The abstain threshold stored in an adapter folder's ia3_config.json (None: never abstain)."""
    import json

    from ia3app.evaluation.calibration import check_threshold

    try:
        return check_threshold(json.loads((folder / "ia3_config.json").read_text(encoding="utf-8")).get("abstain_threshold"))
    except (OSError, ValueError):
        return None


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
