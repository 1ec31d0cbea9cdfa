"""Worker processes under faults: cancel, SIGKILL mid-training and resume, a locked database, and
50 jobs from 5 users on 2 workers. Real worker subprocesses, a real SQLite file, a tiny T0 model."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from jobs import queue as q
from storage import repo
from storage.db import open_db
from storage.users import create_user
from test_worker import ROWS, Env, adapter_vectors
from timing import GENEROUS_S, wait_for

ROOT = Path(__file__).resolve().parent.parent


def start_worker(data_dir: Path, *args: str, log_name: str = "worker") -> subprocess.Popen:
    # One torch thread per worker: the test machine's two cores are shared.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = open(data_dir / f"{log_name}.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "jobs.worker", "--data-dir", str(data_dir), "--poll-s", "0.2",
                             "--progress-interval-s", "0", *args], cwd=ROOT, env=env, stdout=log, stderr=log)


def last_step(env: Env, job_id: int) -> int:
    steps = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.phase == "train"]
    return max(steps, default=0)


def log_text(env: Env, name: str = "worker") -> str:
    path = env.data_dir / f"{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def env(tmp_path, tiny_model_dir):
    return Env(tmp_path / "data", tiny_model_dir("t0"))


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_cancel_stops_a_running_job_within_two_seconds(env):
    job_id = env.submit(steps=500, checkpoint_every=0)
    proc = start_worker(env.data_dir, "--once")  # the default 30 s lease: the cancel flag is polled between beats
    try:
        wait_for(lambda: last_step(env, job_id) >= 1, "the first training step", 120)
        assert q.cancel(env.db, job_id, env.user) == "running"
        wait_for(lambda: env.job(job_id).status == "cancelled", "the worker to stop", 120)
        # its latency is a timing claim, measured side by side by bench/bench_cancel.py; here: it stopped early
        assert proc.wait(timeout=GENEROUS_S) == 0
    finally:
        proc.kill()
    assert last_step(env, job_id) < 500
    assert env.job(job_id).error_kind is None


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_sigkill_mid_training_resumes_from_the_checkpoint_to_the_same_adapter(env):
    settings = dict(steps=20, checkpoint_every=3)
    reference = env.submit(**settings)
    env.worker().serve()
    assert env.job(reference).status == "succeeded"

    job_id = env.submit(**settings)
    proc = start_worker(env.data_dir, "--once", "--lease-s", "2", log_name="killed")
    try:
        wait_for(lambda: last_step(env, job_id) >= 7 or proc.poll() is not None, "step 7", 300)
        assert proc.poll() is None, log_text(env, "killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=GENEROUS_S)
    finally:
        proc.kill()
    killed_at = last_step(env, job_id)
    assert killed_at < 20 and env.job(job_id).status == "running"  # nobody knows it died yet

    job = env.job(job_id)
    time.sleep(max(0.0, job.lease_expires_at - time.time()) + 0.1)
    env.worker().serve()  # requeues the stale job, claims it, resumes from the last checkpoint
    job = env.job(job_id)
    assert job.status == "succeeded", job.error_message
    resumed = job.result.training.resumed_from_step
    assert 6 <= resumed <= killed_at and resumed % 3 == 0
    assert job.attempts == 2
    second = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.attempt == 2 and e.step]
    assert second[0] == resumed + 1 and second[-1] == 20
    expected, got = adapter_vectors(env.data_dir, reference), adapter_vectors(env.data_dir, job_id)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_worker_waits_for_a_locked_database_and_carries_on(env):
    # enough steps that the job is still training when the lock is taken (a quiet CPU runs a
    # tiny-model step in well under 0.1 s now that inputs are tokenized once)
    job_id = env.submit(steps=200, checkpoint_every=0)
    proc = start_worker(env.data_dir, "--once", "--lease-s", "20")
    try:
        wait_for(lambda: last_step(env, job_id) >= 2, "step 2", 120)
        blocker = sqlite3.connect(env.data_dir / "ia3app.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(3)
        assert proc.poll() is None  # still waiting, not crashed
        blocker.execute("COMMIT")
        blocker.close()
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    job = env.job(job_id)
    assert job.status == "succeeded" and job.attempts == 1, (job.error_message, log_text(env))
    steps = [e.step for e in q.progress_events(env.db, job_id, env.user) if e.phase == "train"]
    assert steps == list(range(1, 201))


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_sigterm_gives_the_running_job_back_without_losing_it(env):
    job_id = env.submit(steps=200, checkpoint_every=0)
    proc = start_worker(env.data_dir, "--lease-s", "5")
    try:
        wait_for(lambda: last_step(env, job_id) >= 1, "the first training step", 120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=GENEROUS_S) == 0
    finally:
        proc.kill()
    job = env.job(job_id)
    assert job.status == "queued" and job.attempts == 0 and job.worker_id is None


@pytest.mark.slow
def test_fifty_jobs_from_five_users_on_two_workers(tmp_path, tiny_model_dir):
    env = Env(tmp_path / "data", tiny_model_dir("t0"))
    owners = [env.user] + [create_user(env.db, f"user{i}", "password1") for i in range(1, 5)]
    dataset_of = {env.user: env.dataset}
    for owner in owners[1:]:  # each user submits training on their own dataset
        dataset_of[owner] = repo.save_dataset(env.db, env.store, owner, "reviews", "r.csv", b"raw", ["text", "label"],
                                              ROWS, "label")
    config = env.config(steps=2, checkpoint_every=0)
    rng = random.Random(0)
    priorities = {owner: [rng.choice([0, 0, 1, 2]) for _ in range(10)] for owner in owners}
    submitted, lock, go = [], threading.Lock(), threading.Barrier(len(owners))

    def submit_all(owner):  # each user from their own thread and connection, all at once
        db = open_db(env.data_dir)
        go.wait()
        for priority in priorities[owner]:
            mine = replace(config, data=replace(config.data, dataset_id=dataset_of[owner]))
            job_id = q.submit(db, owner, mine, priority=priority)
            with lock:
                submitted.append(job_id)
        db.close()

    threads = [threading.Thread(target=submit_all, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(submitted) == 50

    workers = [start_worker(env.data_dir, "--until-empty", "--lease-s", "60", "--worker-id", f"w{i}",
                            log_name=f"w{i}") for i in range(2)]
    try:
        for w in workers:
            assert w.wait(timeout=900) == 0
    finally:
        for w in workers:
            w.kill()
    rows = env.db.execute("SELECT id, status, attempts, worker_id, priority, started FROM jobs").fetchall()
    assert len(rows) == 50
    assert all(r[1] == "succeeded" and r[2] == 1 for r in rows), [r for r in rows if r[1] != "succeeded"]
    assert {r[3] for r in rows} == {"w0", "w1"}
    for worker in ("w0", "w1"):
        mine = sorted((r for r in rows if r[3] == worker), key=lambda r: r[5])  # in the order it started them
        order = [(-r[4], r[0]) for r in mine]
        assert order == sorted(order), f"{worker} ran jobs out of priority-then-FIFO order"
    assert env.db.execute("SELECT count(*) FROM jobs WHERE result IS NOT NULL").fetchone()[0] == 50
    assert all((env.data_dir / "adapters" / str(r[0]) / "adapter.safetensors").is_file() for r in rows)
    assert env.db.execute("SELECT count(*) FROM progress WHERE phase = 'done'").fetchone()[0] == 50
    assert env.db.execute("SELECT count(DISTINCT job) FROM progress WHERE phase = 'done'").fetchone()[0] == 50
    assert env.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_local_worker_runs_jobs_for_the_app_and_stops_with_it(env):
    from jobs.local import start_local_worker

    job_id = env.submit(steps=2, checkpoint_every=0)
    worker = start_local_worker(env.data_dir, poll_s=0.2)
    try:
        wait_for(lambda: env.job(job_id).done, "the job to finish", 300, every_s=0.2)
        assert worker.alive()
    finally:
        code = worker.stop(timeout_s=GENEROUS_S)
    assert code == 0 and not worker.alive()
    assert env.job(job_id).status == "succeeded"
    assert "claimed" in worker.log_path.read_text()


@pytest.mark.slow  # worker subprocesses: ~30-60 s each on a 2-core CPU
def test_worker_started_by_the_app_stops_when_the_app_dies_by_sigkill(tmp_path):
    data, pidfile, log = tmp_path / "data", tmp_path / "worker.pid", tmp_path / "worker.log"
    open_db(data).close()
    parent = subprocess.Popen(["bash", "-c", (
        f"{sys.executable} -m jobs.worker --data-dir {data} --poll-s 0.2 --exit-with-parent $$ >{log} 2>&1 &"
        f" echo $! >{pidfile}; wait")], cwd=ROOT)
    wait_for(lambda: "watching" in (log.read_text() if log.exists() else ""), "the worker to start", 120)
    worker_pid = int(pidfile.read_text())
    parent.kill()  # SIGKILL: no atexit, no chance to stop the worker
    parent.wait()

    def gone():
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{worker_pid}/stat") as fh:  # reaped by init eventually; a zombie counts as gone
            return fh.read().split()[2] == "Z"

    wait_for(gone, "the orphaned worker to stop", GENEROUS_S, every_s=0.2)
    assert "is gone; stopping" in log.read_text()
