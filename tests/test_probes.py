"""The worker's speed probe (what the train page's estimate is measured with): asked by the page, run by a
worker between jobs, never ahead of one, stored once per model, batch size and precision."""

from __future__ import annotations

from ia3app.config import RecipeConfig
from jobfactory import request
from jobs import probes, queue
from jobs.worker import Worker, WorkerConfig
from storage.db import open_db
from storage.users import create_user


def test_a_waiting_job_stops_the_probe_which_runs_at_the_next_idle_moment(tmp_path, tiny_model_dir):
    db = open_db(tmp_path)
    uid = create_user(db, "alice", "password1")
    model, recipe = str(tiny_model_dir("t0")), RecipeConfig(batch_size=2, max_length=64)
    assert probes.request(db, model, recipe).status == "queued"
    assert probes.request(db, model, recipe).id == probes.latest(db, model, recipe).id  # asked once
    job = queue.submit(db, uid, request())
    worker = Worker(WorkerConfig(tmp_path, device="cpu"))
    assert worker.run_probe()  # started, then stopped for the job that waits
    assert probes.latest(db, model, recipe).status == "queued"
    queue.cancel(db, job, uid)
    assert worker.run_probe() and not worker.run_probe()
    done = probes.latest(db, model, recipe)
    assert done.status == "done" and len(done.points) == 2  # 16 and 64 tokens (96 and 256 capped at 64)
    assert done.cost.step_seconds(done.points[1].load) > 0
    assert probes.latest(db, model, RecipeConfig(batch_size=4)) is None  # another batch size is another probe


def test_a_probe_gives_way_to_one_asked_for_later(tmp_path, tiny_model_dir):
    """The user picked another model while the worker timed the first: the page waits for the second."""
    db = open_db(tmp_path)
    model = str(tiny_model_dir("t0"))
    first = probes.request(db, model, RecipeConfig(batch_size=2, max_length=64))
    taken = probes.claim(db, "w1")
    assert taken.id == first.id and not probes.newer_waiting(db, taken)
    later = probes.request(db, model, RecipeConfig(batch_size=4, max_length=64))
    assert probes.newer_waiting(db, taken)
    probes.release(db, taken.id)  # as Worker.run_probe does when newer_waiting stops its probe
    assert probes.claim(db, "w2").id == later.id  # the one asked for last goes first
    assert not probes.newer_waiting(db, later)
    assert probes.claim(db, "w3").id == first.id  # then the first, at the next idle moment
