"""The persistent job queue over SQLite: submit, claim, heartbeat, progress, complete, fail, cancel.

States: ``queued → running → succeeded | failed | cancelled``. Every transition is one
``BEGIN IMMEDIATE`` transaction, and every worker-side call names its worker id and only acts
while that worker still holds the job (status running, same worker_id) — so a worker whose
lease expired and whose job was re-claimed by another cannot write over it (it gets
:class:`LeaseLost` and stops). ``attempts`` counts claims; a crash or an expired lease requeues
the job while ``attempts < max_attempts`` and fails it after that.

What crosses this module is typed (ia3app.jobtypes): a :class:`JobRequest` goes in at submit and
comes out of claim as ``Job.request``, progress is a :class:`ProgressEvent`, and a finished job's
:class:`JobResult` is stored once, as ``jobs.result`` (the results page, the download and the jobs
list read it from there). JSON text is made by jobtypes.dumps / loads only.

No torch here: the web process imports this module.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ia3app.errors import UserError
from ia3app.jobtypes import (JOB_KINDS, JobRequest, JobResult, ProgressEvent, SuggestRequest, SuggestResult,
                             TrainingStats, dumps, loads)
from storage import repo
from storage.db import fetch_one, row_dict, transaction

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
DEFAULT_LEASE_S = 30.0
MAX_ATTEMPTS = 3
PROGRESS_FIELDS = ProgressEvent.event_fields()  # the progress table's columns


class LeaseLost(Exception):
    """This worker no longer holds the job (its lease expired and it was requeued, or it finished)."""


@dataclass
class Job:
    id: int
    owner: int
    status: str
    request: JobRequest | SuggestRequest | None
    """What was asked (None only when the stored config cannot be read: see request_error); a
    SuggestRequest for a job of kind 'suggest'."""
    priority: int
    attempts: int
    max_attempts: int
    worker_id: str | None
    heartbeat_at: float | None
    lease_expires_at: float | None
    cancel_requested: bool
    created: float
    started: float | None
    finished: float | None
    error_kind: str | None
    error_message: str | None
    result: JobResult | SuggestResult | None
    request_error: str | None = None
    job_key: str | None = None
    """Random, set at submit: the job's folders carry it (storage.files.FileStore.bind_job_dirs)."""
    kind: str = "train"
    """'train' (a JobRequest, JobResult) or 'suggest' (a SuggestRequest, SuggestResult)."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        row = dict(row)
        text = row.pop("config")
        request_cls, result_cls = _TYPES.get(row.get("kind", "train"), (JobRequest, JobResult))
        try:
            row["request"] = loads(request_cls, text)
        except UserError as exc:  # written by another version, or by hand: the worker fails the job with this
            row["request"], row["request_error"] = None, f"the stored job cannot be read: {exc}"
        row["result"] = loads(result_cls, row["result"]) if row["result"] is not None else None
        row["cancel_requested"] = bool(row["cancel_requested"])
        return cls(**row)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


_TYPES = {"train": (JobRequest, JobResult), "suggest": (SuggestRequest, SuggestResult)}
"""Per job kind: what its config and its result are."""


# ----- web side ----------------------------------------------------------------------------------
def submit(db: sqlite_utils.Database, owner: int, request: JobRequest | SuggestRequest, priority: int = 0,
           max_attempts: int = MAX_ATTEMPTS) -> int:
    """Queue a job for ``owner`` (a training job, or a suggest job given a SuggestRequest); returns its id."""
    kind = next((k for k, (req, _) in _TYPES.items() if isinstance(request, req)), None)
    if kind is None:
        raise TypeError(f"submit takes a JobRequest or SuggestRequest (ia3app.jobtypes), got {type(request).__name__}")
    text = dumps(request)
    with transaction(db):
        cursor = db.execute(
            "INSERT INTO jobs (owner, status, config, priority, max_attempts, created, job_key, kind)"
            " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
            [owner, text, int(priority), int(max_attempts), time.time(), uuid.uuid4().hex, kind],
        )
        return int(cursor.lastrowid)


def get_job(db: sqlite_utils.Database, job_id: int, owner: int, kind: str | None = "train") -> Job | None:
    """One of ``owner``'s jobs of this kind (None: any kind), or None (also for another user's id)."""
    row = fetch_one(db, "SELECT * FROM jobs WHERE id = ? AND owner = ? AND (? IS NULL OR kind = ?)",
                    [job_id, owner, kind, kind])
    return Job.from_row(row) if row else None


def list_jobs(db: sqlite_utils.Database, owner: int, limit: int = 100, kind: str | None = "train") -> list[Job]:
    """``owner``'s jobs of this kind (None: every kind), newest first."""
    cursor = db.execute("SELECT * FROM jobs WHERE owner = ? AND (? IS NULL OR kind = ?) ORDER BY id DESC LIMIT ?",
                        [owner, kind, kind, limit])
    return [Job.from_row(row_dict(cursor, r)) for r in cursor.fetchall()]


def finished_training(db: sqlite_utils.Database, model: str, batch_size: int, precision: str,
                      limit: int = 20) -> list[TrainingStats]:
    """The training figures of the latest succeeded jobs (any owner's) of `model` at this batch size and
    precision: what a step of that model costs on this machine (ui.time_estimate). Nothing else of the jobs."""
    out = []
    for row in db.execute("SELECT config, result FROM jobs WHERE status = 'succeeded' AND kind = 'train'"
                          " AND result IS NOT NULL"
                          " ORDER BY id DESC LIMIT 500").fetchall():
        try:
            request, result = loads(JobRequest, row[0]), loads(JobResult, row[1])
        except UserError:
            continue  # a row written by another version that no longer reads: it has no figure to give
        recipe = request.spec.recipe
        if request.spec.model == model and (recipe.batch_size, recipe.precision) == (batch_size, precision):
            out.append(result.training)
            if len(out) == limit:
                break
    return out


def has_queued(db: sqlite_utils.Database) -> bool:
    return db.execute("SELECT 1 FROM jobs WHERE status = 'queued' AND cancel_requested = 0 LIMIT 1").fetchone() is not None


def running_count(db: sqlite_utils.Database) -> int:
    return int(db.execute("SELECT count(*) FROM jobs WHERE status = 'running'").fetchone()[0])


def queue_position(db: sqlite_utils.Database, job_id: int, owner: int) -> int | None:
    """How many queued jobs (anyone's) will be claimed before this queued job; None if not queued."""
    job = get_job(db, job_id, owner, kind=None)
    if job is None or job.status != "queued":
        return None
    row = db.execute(
        "SELECT count(*) FROM jobs WHERE status = 'queued' AND cancel_requested = 0"
        " AND (priority > ? OR (priority = ? AND id < ?))",
        [job.priority, job.priority, job.id],
    ).fetchone()
    return int(row[0])


def progress_events(db: sqlite_utils.Database, job_id: int, owner: int, since: int = 0,
                    limit: int = 10_000) -> list[ProgressEvent]:
    """Progress events of one of ``owner``'s jobs with id > ``since`` (pass the last id seen to poll),
    with the store's id, attempt and created filled in."""
    cursor = db.execute(
        "SELECT p.* FROM progress p JOIN jobs j ON j.id = p.job WHERE p.job = ? AND j.owner = ? AND p.id > ?"
        " ORDER BY p.id LIMIT ?",
        [job_id, owner, since, limit],
    )
    return [ProgressEvent.from_dict(row_dict(cursor, r)) for r in cursor.fetchall()]


def cancel(db: sqlite_utils.Database, job_id: int, owner: int) -> str | None:
    """Cancel one of ``owner``'s jobs: a queued job at once, a running one asks its worker to stop.

    Returns the job's status afterwards ('cancelled', or 'running' until the worker stops), the
    unchanged status of a finished job, or None when the job is not ``owner``'s.
    """
    with transaction(db):
        row = db.execute("SELECT status, lease_expires_at FROM jobs WHERE id = ? AND owner = ?",
                         [job_id, owner]).fetchone()
        if row is None:
            return None
        status, lease_expires_at = row
        stale = status == "running" and lease_expires_at is not None and lease_expires_at < time.time()
        if status == "queued" or stale:  # a dead worker cannot acknowledge: cancel it here
            db.execute("UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished = ? WHERE id = ?",
                       [time.time(), job_id])
            return "cancelled"
        if status == "running":
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
        return status


# ----- worker side -------------------------------------------------------------------------------
def claim(db: sqlite_utils.Database, worker_id: str, lease_s: float = DEFAULT_LEASE_S,
          kinds: tuple[str, ...] = JOB_KINDS) -> Job | None:
    """Take the next queued job of one of ``kinds`` (highest priority, then oldest) for ``worker_id``, or None.

    One ``BEGIN IMMEDIATE`` transaction: the select and the update happen under the write lock,
    so two workers can never claim the same job.
    """
    now = time.time()
    with transaction(db):
        row = db.execute(
            f"SELECT id FROM jobs WHERE status = 'queued' AND cancel_requested = 0"
            f" AND kind IN ({', '.join('?' * len(kinds))}) ORDER BY priority DESC, id LIMIT 1", list(kinds)
        ).fetchone()
        if row is None:
            return None
        db.execute(
            "UPDATE jobs SET status = 'running', worker_id = ?, attempts = attempts + 1, heartbeat_at = ?,"
            " lease_expires_at = ?, started = coalesce(started, ?), error_kind = NULL, error_message = NULL"
            " WHERE id = ? AND status = 'queued'",
            [worker_id, now, now + lease_s, now, row[0]],
        )
        return Job.from_row(fetch_one(db, "SELECT * FROM jobs WHERE id = ?", [row[0]]))


def heartbeat(db: sqlite_utils.Database, job_id: int, worker_id: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
    """Extend the lease; returns True when the owner asked to cancel. Raises LeaseLost if not held."""
    now = time.time()
    with transaction(db):
        cursor = db.execute(
            "UPDATE jobs SET heartbeat_at = ?, lease_expires_at = ? WHERE id = ? AND worker_id = ? AND status = 'running'",
            [now, now + lease_s, job_id, worker_id],
        )
        if cursor.rowcount == 0:
            raise LeaseLost(f"job {job_id} is no longer held by worker {worker_id}")
        return bool(db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()[0])


def cancel_requests(db: sqlite_utils.Database, worker_id: str) -> set[int]:
    """Ids of the running jobs ``worker_id`` holds whose owner asked to cancel (a read, for dispatchers
    that hold many jobs and look more often than they heartbeat)."""
    rows = db.execute("SELECT id FROM jobs WHERE worker_id = ? AND status = 'running' AND cancel_requested = 1",
                      [worker_id]).fetchall()
    return {int(r[0]) for r in rows}


def jobs_using(db: sqlite_utils.Database, owner: int, dataset_id: int,
               statuses: tuple[str, ...] = STATUSES) -> list[int]:
    """Ids of ``owner``'s jobs in ``statuses`` that read this dataset (training or held-out), oldest first."""
    out = []
    for job in list_jobs(db, owner, limit=10_000):
        if job.status in statuses and job.request is not None and dataset_id in (
                job.request.data.dataset_id, job.request.data.eval_dataset_id):
            out.append(job.id)
    return sorted(out)


def active_jobs_using(db: sqlite_utils.Database, owner: int, dataset_id: int) -> list[int]:
    """Ids of ``owner``'s queued or running jobs that read this dataset (training or held-out)."""
    return jobs_using(db, owner, dataset_id, ("queued", "running"))


def delete_job(db: sqlite_utils.Database, job_id: int, owner: int) -> str | None:
    """Delete one of ``owner``'s finished jobs with its progress and result rows (the caller removes its
    folders). Returns 'deleted', the status of a job that is still queued or running (nothing is
    deleted: cancel it first), or None when the job is not ``owner``'s."""
    with transaction(db):
        row = db.execute("SELECT status FROM jobs WHERE id = ? AND owner = ?", [job_id, owner]).fetchone()
        if row is None:
            return None
        if row[0] not in TERMINAL:
            return row[0]
        db.execute("DELETE FROM progress WHERE job = ?", [job_id])
        db.execute("DELETE FROM jobs WHERE id = ? AND owner = ?", [job_id, owner])
    return "deleted"


def cancel_requested(db: sqlite_utils.Database, job_id: int) -> bool:
    """Whether the owner asked to cancel (a read, for the heartbeat's frequent checks between beats)."""
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def report_progress(db: sqlite_utils.Database, job_id: int, worker_id: str, event: ProgressEvent) -> None:
    """Append one progress event. The caller throttles."""
    if not isinstance(event, ProgressEvent):
        raise TypeError(f"report_progress takes a ProgressEvent, got {type(event).__name__}")
    values = [getattr(event, k) for k in PROGRESS_FIELDS]
    with transaction(db):
        cursor = db.execute(
            f"INSERT INTO progress (job, attempt, {', '.join(PROGRESS_FIELDS)}, created)"
            f" SELECT id, attempts, {', '.join('?' * len(PROGRESS_FIELDS))}, ? FROM jobs"
            " WHERE id = ? AND worker_id = ? AND status = 'running'",
            [*values, time.time(), job_id, worker_id],
        )
        if cursor.rowcount == 0:
            raise LeaseLost(f"job {job_id} is no longer held by worker {worker_id}")


def complete(db: sqlite_utils.Database, job_id: int, worker_id: str, result: JobResult | SuggestResult,
             adapter_dir: str | None = None) -> None:
    """Mark the job succeeded with its result (the one place a job's results are stored) and, given
    its adapter folder (relative to the data directory), register the adapter; atomically."""
    if not isinstance(result, (JobResult, SuggestResult)):
        raise TypeError(f"complete takes a JobResult or SuggestResult, got {type(result).__name__}")
    text = dumps(result)
    with transaction(db):
        owner = _held_owner(db, job_id, worker_id)
        db.execute(
            "UPDATE jobs SET status = 'succeeded', result = ?, finished = ?, lease_expires_at = NULL WHERE id = ?",
            [text, time.time(), job_id],
        )
        if adapter_dir is not None:
            repo.register_adapter(db, job_id, owner, adapter_dir)


def fail(db: sqlite_utils.Database, job_id: int, worker_id: str, kind: str, message: str, retry: bool) -> str:
    """Record a failure. With ``retry`` the job goes back to the queue while attempts remain.

    Returns the new status ('queued' or 'failed'; 'cancelled' when the owner had asked to cancel).
    """
    now = time.time()
    with transaction(db):
        _held_owner(db, job_id, worker_id)
        attempts, max_attempts, cancel_requested = db.execute(
            "SELECT attempts, max_attempts, cancel_requested FROM jobs WHERE id = ?", [job_id]
        ).fetchone()
        if cancel_requested:  # the owner asked to stop it; whatever went wrong, it stays stopped
            db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, lease_expires_at = NULL, error_kind = ?,"
                       " error_message = ? WHERE id = ?", [now, kind, message, job_id])
            return "cancelled"
        if retry and attempts < max_attempts:
            db.execute(
                "UPDATE jobs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, error_kind = ?,"
                " error_message = ? WHERE id = ?",
                [kind, message, job_id],
            )
            return "queued"
        if retry and attempts >= max_attempts:
            message = f"{message} (gave up after {attempts} attempts)"
        db.execute(
            "UPDATE jobs SET status = 'failed', finished = ?, lease_expires_at = NULL, error_kind = ?,"
            " error_message = ? WHERE id = ?",
            [now, kind, message, job_id],
        )
        return "failed"


def mark_cancelled(db: sqlite_utils.Database, job_id: int, worker_id: str) -> None:
    """The worker stopped a job whose cancel was requested."""
    with transaction(db):
        _held_owner(db, job_id, worker_id)
        db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, lease_expires_at = NULL WHERE id = ?",
                   [time.time(), job_id])


def release(db: sqlite_utils.Database, job_id: int, worker_id: str) -> None:
    """Give a job back to the queue without counting the attempt (the worker is shutting down)."""
    with transaction(db):
        _held_owner(db, job_id, worker_id)
        db.execute(
            "UPDATE jobs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL,"
            " attempts = max(attempts - 1, 0) WHERE id = ?",
            [job_id],
        )


def requeue_stale(db: sqlite_utils.Database, now: float | None = None) -> list[int]:
    """Running jobs whose lease expired (their worker died): back to the queue, or failed/cancelled.

    A job whose cancel was requested is cancelled; one that used all its attempts is failed.
    Returns the ids that went back to the queue.
    """
    now = time.time() if now is None else now
    requeued = []
    with transaction(db):
        stale = db.execute(
            "SELECT id, attempts, max_attempts, cancel_requested, worker_id FROM jobs"
            " WHERE status = 'running' AND lease_expires_at < ?",
            [now],
        ).fetchall()
        for job_id, attempts, max_attempts, cancel_requested, worker_id in stale:
            if cancel_requested:
                db.execute("UPDATE jobs SET status = 'cancelled', finished = ?, lease_expires_at = NULL WHERE id = ?",
                           [now, job_id])
            elif attempts >= max_attempts:
                db.execute(
                    "UPDATE jobs SET status = 'failed', finished = ?, lease_expires_at = NULL, error_kind = 'lost',"
                    " error_message = ? WHERE id = ?",
                    [now, f"the worker running this job stopped responding on each of {attempts} attempts "
                          "(killed, or out of memory?); try a smaller model or batch size", job_id],
                )
            else:
                db.execute(
                    "UPDATE jobs SET status = 'queued', worker_id = NULL, lease_expires_at = NULL, error_kind = 'lost',"
                    " error_message = ? WHERE id = ?",
                    [f"worker {worker_id} stopped responding; the job was requeued and resumes from its last checkpoint",
                     job_id],
                )
                requeued.append(job_id)
    return requeued


def _held_owner(db: sqlite_utils.Database, job_id: int, worker_id: str) -> int:
    row = db.execute("SELECT owner FROM jobs WHERE id = ? AND worker_id = ? AND status = 'running'",
                     [job_id, worker_id]).fetchone()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer held by worker {worker_id}")
    return int(row[0])
