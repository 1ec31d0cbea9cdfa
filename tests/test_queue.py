"""jobs.queue: ordering, leases, retries, cancel, stale requeue, ownership, concurrent claims."""

import multiprocessing as mp
import subprocess
import sys
import threading
import time

import pytest

from ia3app.jobtypes import ProgressEvent
from jobs import queue as q
from jobfactory import request, result
from storage.db import open_db
from storage.users import create_user


@pytest.fixture
def db(tmp_path):
    database = open_db(tmp_path)
    yield database
    database.close()


@pytest.fixture
def users(db):
    return create_user(db, "alice", "password1"), create_user(db, "bob", "password2")


def test_claim_order_is_priority_then_fifo(db, users):
    alice, bob = users
    ids = [q.submit(db, alice, request(1)), q.submit(db, bob, request(2), priority=5), q.submit(db, alice, request(3)),
           q.submit(db, bob, request(4), priority=5)]
    assert q.queue_position(db, ids[2], alice) == 3 and q.queue_position(db, ids[1], alice) is None  # bob's
    claimed = [q.claim(db, "w") for _ in range(4)]
    assert [j.id for j in claimed] == [ids[1], ids[3], ids[0], ids[2]]
    assert all(j.status == "running" and j.attempts == 1 and j.worker_id == "w" for j in claimed)
    assert claimed[0].request == request(2) and claimed[0].lease_expires_at > time.time()
    assert q.claim(db, "w") is None


def test_complete_records_the_typed_result_and_progress(db, users):
    alice, bob = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "w1")
    q.report_progress(db, job_id, "w1", ProgressEvent("train", "step 1/2", step=1, total_steps=2, loss=2.5))
    q.report_progress(db, job_id, "w1", ProgressEvent("train", step=2, total_steps=2, loss=2.0))
    with pytest.raises(TypeError, match="ProgressEvent"):
        q.report_progress(db, job_id, "w1", {"phase": "train", "step": 3})
    with pytest.raises(q.LeaseLost):
        q.complete(db, job_id, "w2", result())  # another worker cannot finish it
    with pytest.raises(TypeError, match="JobResult"):
        q.complete(db, job_id, "w1", {"accuracy": 0.5})
    q.complete(db, job_id, "w1", result(0.75), adapter_dir=f"adapters/{job_id}")
    job = q.get_job(db, job_id, alice)
    assert job.status == "succeeded" and job.result == result(0.75) and job.finished >= job.started
    assert job.request == request() and job.request_error is None
    events = q.progress_events(db, job_id, alice)
    assert all(isinstance(e, ProgressEvent) for e in events)
    assert [e.loss for e in events] == [2.5, 2.0] and events[0].attempt == 1 and events[0].message == "step 1/2"
    assert events[0].created is not None
    assert [e.step for e in q.progress_events(db, job_id, alice, since=events[0].id)] == [2]
    from storage import repo
    adapter_id = db.execute("SELECT id FROM adapters WHERE job = ?", [job_id]).fetchone()[0]
    assert repo.adapter_job(db, adapter_id, alice) == job_id
    # user B asking for user A's job by id gets nothing
    assert q.get_job(db, job_id, bob) is None and q.list_jobs(db, bob) == []
    assert repo.adapter_job(db, adapter_id, bob) is None
    assert q.progress_events(db, job_id, bob) == [] and q.cancel(db, job_id, bob) is None
    with pytest.raises(q.LeaseLost):
        q.report_progress(db, job_id, "w1", ProgressEvent("train", step=3))  # finished: no more writes


def test_submit_takes_a_job_request_and_an_unreadable_stored_one_is_reported(db, users):
    alice, _ = users
    with pytest.raises(TypeError, match="JobRequest"):
        q.submit(db, alice, {"spec": {}})
    job_id = q.submit(db, alice, request())
    db.execute("UPDATE jobs SET config = ? WHERE id = ?", ['{"spec": {"model": "m"}, "dataset_id": 1}', job_id])
    job = q.claim(db, "w1")
    assert job.id == job_id and job.request is None and "missing template" in job.request_error


def test_crash_retries_until_max_attempts_then_fails(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    for attempt in (1, 2):
        assert q.claim(db, f"w{attempt}").attempts == attempt
        assert q.fail(db, job_id, f"w{attempt}", "crash", "RuntimeError: boom", retry=True) == "queued"
        assert q.get_job(db, job_id, alice).error_message == "RuntimeError: boom"
    assert q.claim(db, "w3").attempts == 3
    assert q.fail(db, job_id, "w3", "crash", "RuntimeError: boom", retry=True) == "failed"
    job = q.get_job(db, job_id, alice)
    assert job.status == "failed" and job.error_kind == "crash" and "after 3 attempts" in job.error_message


def test_user_error_fails_without_retry(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "w")
    assert q.fail(db, job_id, "w", "user_error", "column 'text' not found", retry=False) == "failed"
    assert q.claim(db, "w") is None


def test_cancel_queued_at_once_and_running_via_heartbeat(db, users):
    alice, _ = users
    running, queued = q.submit(db, alice, request(), priority=1), q.submit(db, alice, request())
    q.claim(db, "w")
    assert q.cancel(db, queued, alice) == "cancelled"
    assert q.get_job(db, queued, alice).status == "cancelled"
    assert q.heartbeat(db, running, "w") is False
    assert q.cancel(db, running, alice) == "running"
    assert q.heartbeat(db, running, "w") is True
    q.mark_cancelled(db, running, "w")
    assert q.get_job(db, running, alice).status == "cancelled"
    assert q.cancel(db, running, alice) == "cancelled"  # finished jobs stay as they are
    assert q.claim(db, "w") is None


def test_expired_lease_requeues_and_the_old_worker_loses_it(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    lease = q.claim(db, "dead", lease_s=60).lease_expires_at
    assert q.requeue_stale(db) == []  # lease still valid
    assert q.requeue_stale(db, now=lease + 0.01) == [job_id]  # the clock past the lease, not a sleep
    job = q.get_job(db, job_id, alice)
    assert job.status == "queued" and job.error_kind == "lost" and job.attempts == 1
    assert q.claim(db, "alive").attempts == 2
    with pytest.raises(q.LeaseLost):
        q.heartbeat(db, job_id, "dead")
    with pytest.raises(q.LeaseLost):
        q.fail(db, job_id, "dead", "crash", "x", retry=True)
    # last attempt lost as well: failed with a message, not requeued forever
    q.fail(db, job_id, "alive", "crash", "x", retry=True)
    lease = q.claim(db, "w3", lease_s=60).lease_expires_at
    assert q.requeue_stale(db, now=lease + 0.01) == []
    job = q.get_job(db, job_id, alice)
    assert job.status == "failed" and "stopped responding" in job.error_message


def test_cancel_of_a_job_whose_worker_died_is_immediate(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "dead", lease_s=-1)  # its lease has run out: the worker stopped renewing it
    assert q.cancel(db, job_id, alice) == "cancelled"


def test_a_crash_after_cancel_was_requested_ends_cancelled(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "w")
    q.cancel(db, job_id, alice)
    assert q.fail(db, job_id, "w", "crash", "RuntimeError", retry=True) == "cancelled"


def test_stale_job_with_cancel_requested_is_cancelled(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "dead", lease_s=1)
    q.cancel(db, job_id, alice)
    q.requeue_stale(db, now=time.time() + 2)
    assert q.get_job(db, job_id, alice).status == "cancelled"


def test_release_gives_the_job_back_without_spending_an_attempt(db, users):
    alice, _ = users
    job_id = q.submit(db, alice, request())
    q.claim(db, "w")
    q.release(db, job_id, "w")
    job = q.get_job(db, job_id, alice)
    assert job.status == "queued" and job.attempts == 0


def _claim_all(path, worker, out, barrier):
    db = open_db(path)
    barrier.wait()  # all processes start claiming at the same moment
    got = []
    while True:
        job = q.claim(db, worker, lease_s=60)
        if job is None:
            break
        got.append(job.id)
        time.sleep(0.005)  # "run" it: without any work, one process can drain the queue alone
        q.complete(db, job.id, worker, result(model=worker))
    out.put(got)


def test_concurrent_claims_from_several_processes_never_share_a_job(tmp_path):
    db = open_db(tmp_path)
    owner = create_user(db, "alice", "password1")
    ids = [q.submit(db, owner, request(i + 1)) for i in range(120)]
    ctx = mp.get_context("spawn")
    out, barrier = ctx.Queue(), ctx.Barrier(4)
    procs = [ctx.Process(target=_claim_all, args=(str(tmp_path), f"w{i}", out, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [j for got in results for j in got]
    assert sorted(claimed) == ids  # every job exactly once
    assert all(got == sorted(got) for got in results)  # FIFO within each worker
    assert sum(1 for got in results if got) >= 2  # they really competed
    assert db.execute("SELECT count(*) FROM jobs WHERE status = 'succeeded'").fetchone()[0] == 120
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_writer_waits_while_another_process_holds_the_lock(tmp_path):
    db = open_db(tmp_path)
    owner = create_user(db, "alice", "password1")
    # the other process holds the write lock until told to let go (no timed sleep on either side)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys\n"
        f"c = sqlite3.connect({str(tmp_path / 'ia3app.db')!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.readline(); c.execute('COMMIT')\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    released = threading.Event()
    outcome: dict = {}

    def write():
        try:
            outcome["job"] = q.submit(db, owner, request())  # blocks on the busy timeout, then succeeds
        except Exception as e:  # noqa: BLE001 - reported below
            outcome["error"] = e
        outcome["after_release"] = released.is_set()

    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.5)  # gives a writer that did not wait every chance to finish while the lock is held
    released.set()
    holder.stdin.write("go\n")
    holder.stdin.flush()
    writer.join(60)
    holder.wait(timeout=30)
    assert "error" not in outcome, outcome
    assert outcome["after_release"]  # it finished only once the lock was let go: it waited
    assert q.get_job(db, outcome["job"], owner).status == "queued"
