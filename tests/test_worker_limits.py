"""A job cannot hold a worker (issue 14 item 2): a cell-dependent template that is slow only on the
held-out file sends the job back to the queue as 'stalled' once it goes without a progress event for the
stall limit (issue 22 item 4: it resumes from its checkpoint; it fails after its last attempt); a pause of
the whole process is not a stall;
and cancel takes effect within 5 s while the worker is validating (a phase with no stop checks)."""

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ia3app.jobtypes import DataRef
from ia3app.templates.rendering import render
from ia3app.templates.spec import TemplateSpec
from jobs import queue as q
from storage import repo
from test_worker import Env
from timing import wait_for

SLOW = ("{% for i in range(n|int) %}{% for j in range(1000) %}{% endfor %}{% endfor %}{{ text }} "
        "Was it good or bad?")


def _slow_n(target_s: float = 0.4) -> int:
    """How many outer iterations make one row take about target_s on this machine (under the 1 s limit)."""
    spec = TemplateSpec(name="t", input=SLOW, choices=["bad", "good"])
    start = time.monotonic()
    render(spec, {"n": "50", "text": "x", "label": "good"})
    per = (time.monotonic() - start) / 50
    return max(1, min(1000, int(target_s / per)))


@pytest.fixture
def env(tmp_path, tiny_model_dir):
    return Env(tmp_path / "data", tiny_model_dir("t0"))


def _slow_job(env: Env, rows: int = 60) -> int:
    """Training rows are fast (n=0); each of the held-out rows takes ~0.4 s to render."""
    n = _slow_n()
    train = [{**r, "n": "0"} for r in env_rows(env)]
    held = [{"text": f"row {i}", "label": "good" if i % 2 else "bad", "n": str(n)} for i in range(rows)]
    train_id = repo.save_dataset(env.db, env.store, env.user, "train", "train.csv", b"raw", ["text", "label", "n"],
                                 train, "label")
    held_id = repo.save_dataset(env.db, env.store, env.user, "held", "held.csv", b"raw", ["text", "label", "n"],
                                held, "label")
    config = env.config(template={"name": "slow", "input": SLOW, "label_column": "label", "choices": ["bad", "good"]})
    return q.submit(env.db, env.user, replace(config, data=DataRef(train_id, eval_dataset_id=held_id)))


def env_rows(env):
    from test_worker import ROWS
    return ROWS


@pytest.fixture
def generous_row_limit(monkeypatch):
    """The per-row render limit out of the way: these tests are about the stall rule and
    cancel, and on a busy machine a row calibrated to ~0.4 s can pass the 1 s limit first."""
    from ia3app.templates import render_limits

    monkeypatch.setattr(render_limits, "MAX_RENDER_SECONDS", 60.0)


def test_a_job_without_progress_is_requeued_as_stalled_then_fails_after_its_last_attempt(env, generous_row_limit):
    # 3 s, whatever the load: before validation the job only reads its data (0.1 s of wall clock at load 14 on
    # 2 cores); the worker's cold imports of torch and transformers, which took longer than 3 s on a busy
    # machine, do not count as a stall (ProgressWriter.untimed). The 60 rows (~0.4 s each) outlast the limit.
    stall_s = 3
    job_id = _slow_job(env)
    assert env.worker(stall_s=stall_s, heartbeat_s=0.5, once=True).serve() == 1
    job = env.job(job_id)
    assert job.status == "queued" and job.error_kind == "stalled" and job.attempts == 1
    assert f"s during 'validate' (the limit without a progress event is {stall_s} s)" in job.error_message
    assert "goes back to the queue while attempts remain and resumes from its last checkpoint" in job.error_message
    assert job.lease_expires_at is None  # given back mid-validation: the rows at ~0.4 s each outlast the limit
    assert env.worker(stall_s=stall_s, heartbeat_s=0.5).serve() == job.max_attempts - 1  # until the queue is empty
    job = env.job(job_id)
    assert job.status == "failed" and job.error_kind == "stalled"
    assert f"gave up after {job.max_attempts} attempts" in job.error_message


def test_a_pause_of_the_whole_process_does_not_count_as_a_stall():
    """The heartbeat's ticks more than pause_s apart: the process was stopped (SIGSTOP, a suspended VM),
    so the job could not report either; the stall clock counts from the resume (given times, no sleeping)."""
    from jobs.progress import Heartbeat

    last_event = 100.0
    heart = Heartbeat(Path("unused.db"), 1, "w", 30.0, 1.0, stall_s=20.0, last_progress=lambda: last_event)
    assert heart.idle_s(110.0) == 10.0
    heart.notice_pause(1.5, 110.0)  # an ordinary late tick: not a pause
    assert heart.resumed_at is None
    heart.notice_pause(41.0, 151.0)  # 40 s without a tick: the process was paused
    assert heart.resumed_at == 151.0 and heart.paused_s == 40.0
    assert heart.idle_s(152.0) == 1.0  # not 52 s: no stall for the 20 s limit
    assert heart.idle_s(172.0) == 21.0  # a real stall after the resume still counts


def test_the_stall_clock_stands_still_while_the_worker_imports():
    """A worker's cold imports (torch, transformers) report nothing and may outlast a short stall limit on a busy
    machine: they are not a stall; the clock counts again from their end (given times, no sleeping)."""
    from jobs.progress import Heartbeat, ProgressWriter

    writer = ProgressWriter(None, 1, "w", None, write=lambda event: None)
    heart = Heartbeat(Path("unused.db"), 1, "w", 30.0, 1.0, stall_s=20.0, last_progress=lambda: writer.last_event)
    with writer.untimed():
        assert heart.idle_s(time.monotonic() + 10_000.0) < 0  # however long the imports take: no idle time
    assert heart.idle_s(writer.last_event + 5.0) == 5.0  # from the end of the imports


def test_cancel_while_validating_takes_effect_within_five_seconds(env, generous_row_limit):
    job_id = _slow_job(env)
    worker = env.worker(heartbeat_s=3.0)
    thread = threading.Thread(target=worker.serve)
    thread.start()
    try:
        wait_for(lambda: (events := q.progress_events(env.db, job_id, env.user)) and events[-1].phase == "validate",
                 "the job is validating its 60 slow held-out rows (~0.4 s each)")
        assert q.cancel(env.db, job_id, env.user) == "running"
        wait_for(lambda: env.job(job_id).status != "running", "the worker has stopped the job")
    finally:
        worker.shutdown.set()
        thread.join(30)
    assert env.job(job_id).status == "cancelled"
    # stopped while validating: it never went on to load the model (a cancel read only between training steps
    # would have let it validate every row, load and train first)
    assert "load" not in {e.phase for e in q.progress_events(env.db, job_id, env.user)}
    # how fast a cancel lands is a timing claim: bench/bench_cancel.py measures it side by side
    assert not thread.is_alive()


def test_a_file_url_for_the_vectors_is_a_user_error_not_a_retried_crash(env):
    request = env.config()
    request.spec.init_vectors = "file:///etc/passwd"
    job_id = q.submit(env.db, env.user, request)
    assert env.worker().serve() == 1
    job = env.job(job_id)
    assert job.status == "failed" and job.error_kind == "user_error" and job.attempts == 1  # not after retries
    assert "file:// addresses elsewhere are refused" in job.error_message
    assert not list((env.data_dir / "checkpoints").rglob("*.pt"))


def test_a_new_job_never_resumes_a_folder_left_by_another_job_with_its_id(env):
    """Issue 14: a replaced database restarts job ids; the old job 1's checkpoint must not be resumed."""
    old = env.data_dir / "checkpoints" / "1"
    (old / "checkpoints").mkdir(parents=True)
    (old / "checkpoints" / "checkpoint.pt").write_bytes(b"another job's state")
    (old / ".job-key").write_text("0" * 32)
    job_id = env.submit()
    assert job_id == 1
    assert env.worker().serve() == 1
    job = env.job(job_id)
    assert job.status == "succeeded", job.error_message
    assert not job.result.training.resumed_from_step
    stale = list((env.data_dir / "stale").iterdir())
    assert [p.name.startswith("checkpoints-1-" + "0" * 32) for p in stale] == [True]
    assert (stale[0] / "checkpoints" / "checkpoint.pt").read_bytes() == b"another job's state"
    assert (env.data_dir / "adapters" / "1" / ".job-key").read_text() == job.job_key
