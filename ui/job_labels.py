"""How a job is named in lists (the job page's picker, My data & runs): number, data, model, start time."""

from __future__ import annotations

import time

from ui.context import AppContext


def job_choices(ctx: AppContext, uid: int) -> list[tuple[str, int]]:
    from jobs import queue

    out = []
    for job in queue.list_jobs(ctx.db(), uid):
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created))
        out.append((f"#{job.id} · {data_label(job) or 'data'} · {model_label(job)} · {started}", job.id))
    return out


def model_label(job) -> str:
    return job.request.model_label if job.request else "?"


def data_label(job) -> str:
    return (job.request.labels.data if job.request else None) or ""


def template_label(job) -> str:
    return (job.request.labels.template if job.request else None) or ""
