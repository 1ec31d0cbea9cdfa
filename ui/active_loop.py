"""The active-learning loop behind the "Label next" page and the JSON API: unlabelled pools, suggest jobs,
labelled rows saved as a new dataset version, the next round's training job, and the rounds table.

A round is a training job. Its dataset version is a chain: the first upload, then one version per save of
labelled pool rows (each version is a new dataset whose ``parent`` is the one before, so earlier runs keep
reading the rows they were trained on). Everything takes the caller's user id and reads through
owner-checked storage and queue functions: another user's ids read as missing ones.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ia3app.errors import UserError
from ia3app.jobtypes import JobLabels, JobRequest, SuggestRequest
from ui.context import AppContext

SKIP = "skip"
"""What the label picker offers besides the task's labels: leave the row out of every later suggestion."""


def parse_id(value: Any, what: str) -> int:
    try:
        ident = int(value)
    except (TypeError, ValueError):
        raise UserError(f"pick {what} first") from None
    if ident < 1:
        raise UserError(f"pick {what} first")
    return ident


def training_job(ctx: AppContext, uid: int, job_id: Any):
    """One of the caller's succeeded training jobs with a readable request, and its adapter folder."""
    from ui.owned_adapter import owned_adapter_dir

    job, folder = owned_adapter_dir(ctx, uid, parse_id(job_id, "a finished training job"))
    if job.request is None:
        raise UserError(job.request_error or f"job #{job.id} cannot be read")
    return job, folder


def label_column_of(job, dataset) -> str:
    return job.request.spec.template.label_column or dataset.label_column


def upload_pool(ctx: AppContext, uid: int, job_id: Any, path: str | None) -> int:
    """Store an unlabelled CSV as a pool for the dataset of this job (checked as the Data page checks a file,
    plus: the dataset's columns, an empty or absent label column); the same file again reuses it."""
    from ia3app import tables
    from storage import repo
    from ui.uploads import read_upload

    if not path:
        raise UserError("drop a CSV of unlabelled rows first")
    job, _ = training_job(ctx, uid, job_id)
    db, store = ctx.db(), ctx.files()
    dataset = repo.require_dataset(db, job.request.data.dataset_id, uid)
    raw = read_upload(path, ctx, "unlabelled file")
    table = tables.load_csv(raw, max_bytes=ctx.max_upload_bytes, max_rows=ctx.max_rows)
    rows = tables.pool_rows(table, dataset.columns, label_column_of(job, dataset))
    root = repo.versions(db, dataset.id, uid)[0].id
    columns = list(rows[0])
    name = Path(path).name
    return repo.find_same_dataset(db, store, uid, raw, None, rows, kind="pool", parent=root) or \
        repo.save_dataset(db, store, uid, f"pool: {name}", name, raw, columns, rows, kind="pool", parent=root)


def start_suggest(ctx: AppContext, uid: int, job_id: Any, pool_id: Any, n: Any) -> int:
    """Queue a suggest job: the worker scores the pool with the job's adapter and proposes n rows."""
    from jobs import queue
    from storage import repo

    job, _ = training_job(ctx, uid, job_id)
    pool = repo.require_pool(ctx.db(), parse_id(pool_id, "an unlabelled pool"), uid)
    chain = repo.versions(ctx.db(), job.request.data.dataset_id, uid)
    if pool.parent != chain[0].id:
        raise UserError(f"pool {pool.id} was uploaded for another dataset; upload it again next to job #{job.id}")
    try:
        count = int(n)
    except (TypeError, ValueError):
        raise UserError(f"the number of rows to suggest must be a whole number (got {n!r})") from None
    return queue.submit(ctx.db(), uid, SuggestRequest(adapter_job=job.id, pool_id=pool.id, n=count))


def suggest_job(ctx: AppContext, uid: int, suggest_id: Any):
    """One of the caller's suggest jobs (any state)."""
    from jobs import queue

    job = queue.get_job(ctx.db(), parse_id(suggest_id, "a suggestion run"), uid, kind="suggest")
    if job is None:
        raise UserError(f"suggestion run #{suggest_id} is not one of yours")
    return job


def label_choices(ctx: AppContext, uid: int, job_id: Any) -> list[str]:
    """The labels a suggested row can get: the values of the label column in the job's dataset."""
    from ia3app import tables
    from storage import repo

    job, _ = training_job(ctx, uid, job_id)
    dataset = repo.require_dataset(ctx.db(), job.request.data.dataset_id, uid)
    rows = repo.load_rows(ctx.db(), ctx.files(), dataset.id, uid)
    return sorted(tables.label_counts(rows, label_column_of(job, dataset)))


def save_labels(ctx: AppContext, uid: int, suggest_id: Any, picks: dict[int, str]) -> int | None:
    """Save the labels picked for a suggest job's rows ({pool row index: a label or SKIP}; rows not in picks
    stay unlabelled) as a NEW version of the newest version of the job's dataset (the older versions are
    kept); skipped rows are recorded so later suggestions leave them out. Returns the new version's id
    (None when every picked row was skipped)."""
    from ia3app import tables
    from storage import repo

    job = suggest_job(ctx, uid, suggest_id)
    if job.status != "succeeded" or job.result is None:
        raise UserError(f"suggestion run #{job.id} has not finished (it is {job.status})")
    train_job, _ = training_job(ctx, uid, job.request.adapter_job)
    suggested = {s.index: s for s in job.result.suggestions}
    unknown = sorted(set(picks) - set(suggested))
    if unknown:
        raise UserError(f"pool row {unknown[0] + 1} was not suggested by run #{job.id}")
    db, store = ctx.db(), ctx.files()
    latest = repo.latest_version(db, train_job.request.data.dataset_id, uid)
    label_column = label_column_of(train_job, latest)
    allowed = label_choices(ctx, uid, train_job.id)
    labelled = {i: str(v).strip() for i, v in picks.items() if str(v or "").strip() and str(v).strip() != SKIP}
    skipped = [i for i, v in picks.items() if str(v or "").strip() == SKIP]
    bad = {i: v for i, v in labelled.items() if v not in allowed}
    if bad:
        index, value = next(iter(bad.items()))
        raise UserError(f"'{value}' (pool row {index + 1}) is not one of the task's labels: {', '.join(allowed)}")
    if not labelled and not skipped:
        raise UserError("pick a label (or skip) for at least one suggested row before saving")
    if skipped:
        repo.skip_pool_rows(db, uid, job.request.pool_id, skipped)
    if not labelled:
        return None
    rows = repo.load_rows(db, store, latest.id, uid)
    added = [{**{c: suggested[i].row.get(c, "") for c in latest.columns if c != label_column}, label_column: label}
             for i, label in sorted(labelled.items())]
    new_rows = rows + added
    number = len(repo.versions(db, latest.id, uid)) + 1
    base = repo.versions(db, latest.id, uid)[0].name
    name = f"{base} · v{number}"
    raw = tables.write_csv(new_rows, latest.columns)
    return repo.save_dataset(db, store, uid, name, latest.filename, raw, latest.columns, new_rows, label_column,
                             parent=latest.id, marks=(job.request.pool_id, labelled))


def retrain(ctx: AppContext, uid: int, job_id: Any, warm: bool = False) -> int:
    """Queue the next round: the job's template, recipe and model on the newest version of its dataset,
    starting from ones (fresh, the default: measured better, bench/bench_active.py) or from its adapter's
    vectors (warm). Returns the new job's id."""
    from jobs import queue
    from storage import repo

    job, folder = training_job(ctx, uid, job_id)
    request = job.request
    latest = repo.latest_version(ctx.db(), request.data.dataset_id, uid)
    spec = replace(request.spec, init_adapter=str(folder) if warm else None)
    data = replace(request.data, dataset_id=latest.id)
    labels = JobLabels(model=request.labels.model, data=latest.name, template=request.labels.template)
    return queue.submit(ctx.db(), uid, JobRequest(spec, data, labels))


def rounds(ctx: AppContext, uid: int, job_id: Any) -> list[dict[str, Any]]:
    """One entry per training job on any version of this job's dataset chain, oldest first: round, job, status,
    version, rows, labels added by that version, start (warm/fresh), T-Few accuracy with its interval."""
    from ia3app.evaluation.uncertainty import interval_text
    from jobs import queue
    from storage import repo

    job, _ = training_job(ctx, uid, job_id)
    latest = repo.latest_version(ctx.db(), job.request.data.dataset_id, uid)
    chain = repo.versions(ctx.db(), latest.id, uid)
    number = {d.id: n for n, d in enumerate(chain, start=1)}
    previous = {d.id: chain[n - 1].row_count if n else None for n, d in enumerate(chain)}
    jobs = [j for j in queue.list_jobs(ctx.db(), uid, limit=10_000)
            if j.request is not None and j.request.data.dataset_id in number]
    out = []
    for n, j in enumerate(sorted(jobs, key=lambda j: j.id), start=1):
        version = next(d for d in chain if d.id == j.request.data.dataset_id)
        before = previous[version.id]
        report = j.result.method("t-few") if j.result is not None else {}
        accuracy = interval_text(report)
        out.append({"round": n, "job": j.id, "status": j.status, "version": f"v{number[version.id]}",
                    "rows": version.row_count, "labels added": version.row_count - before if before is not None else 0,
                    "start": "previous round's vectors" if j.request.spec.init_adapter else "fresh",
                    "accuracy (95 % CI)": accuracy})
    trained = {j.request.data.dataset_id for j in jobs}
    for version in chain:  # a saved version no run has trained on yet: the next round's data
        if version.id not in trained:
            before = previous[version.id]
            out.append({"round": "next", "job": "", "status": "not trained yet", "version": f"v{number[version.id]}",
                        "rows": version.row_count,
                        "labels added": version.row_count - before if before is not None else 0,
                        "start": "", "accuracy (95 % CI)": "—"})
    return out
