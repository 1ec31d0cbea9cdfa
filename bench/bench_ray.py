"""The Ray path's per-job overhead against the local worker, on the same tiny job.

    python -m bench.bench_ray [--jobs 4] [--steps 8] [--events 300]

Starts Ray's test cluster on this machine (a head with no CPUs: the app's machine, and one worker
node with one CPU), a temporary data directory and a tiny T0-style model. Then, side by side:
- the same job run ``--jobs`` times by the local worker (jobs.worker, in this process) and by the
  Ray dispatcher (jobs.ray_backend: the job runs in a Ray worker process on the node);
  claim -> first training step and end to end are read from the database's own timestamps
  (jobs.started, the first 'train' progress row, jobs.finished): what the job page sees. The
  first job of each backend is cold (imports, model load), the rest warm (median);
- the per-step cost of progress on the training side: a local ProgressWriter writing every step
  (one SQLite transaction) against the Ray side posting every step to the mailbox (one
  fire-and-forget actor call), plus the dispatcher's cost per event (drain + the same write),
  and the stop-flag poll (one blocking actor call, made at most every STOP_POLL_S).
Both backends train with one torch thread (a Ray task with num_cpus=1 gets OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_queue import ROWS, TEMPLATE
from jobs import queue as q
from jobs.worker import Worker, WorkerConfig
from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, JobRequest, JobSpec, ProgressEvent
from ia3app.templates.spec import TemplateSpec
from storage import repo
from storage.db import open_db
from storage.files import FileStore
from storage.users import create_user


def _request() -> JobRequest:
    """A queued job for the write-cost figures (never run)."""
    return JobRequest(JobSpec(model="bench/model", template=TemplateSpec.from_dict(TEMPLATE), eval_methods=[]),
                      DataRef(1))


def setup(root: Path, model: Path, n_jobs: int, steps: int):
    db, store = open_db(root), FileStore(root)
    owner = create_user(db, "bench", "password1")
    dataset = repo.save_dataset(db, store, owner, "reviews", "reviews.csv", b"raw", ["text", "label"], ROWS, "label")
    spec = JobSpec(model=str(model), template=TemplateSpec.from_dict(TEMPLATE), eval_methods=[],
                   recipe=RecipeConfig(steps=steps, batch_size=2, warmup_steps=0, checkpoint_every=0, max_length=64))
    ids = [q.submit(db, owner, JobRequest(spec, DataRef(dataset))) for _ in range(n_jobs)]
    return db, owner, ids


def job_times(db, owner, ids) -> list[tuple[float, float]]:
    """(claim -> first 'train' row, claim -> finished) per job, from the database's timestamps."""
    out = []
    for job_id in ids:
        job = q.get_job(db, job_id, owner)
        assert job.status == "succeeded", (job.status, job.error_message)
        first = next(e.created for e in q.progress_events(db, job_id, owner) if e.phase == "train")
        out.append((first - job.started, job.finished - job.started))
    return out


def run_local(root: Path, model: Path, n_jobs: int, steps: int):
    import torch

    torch.set_num_threads(1)  # as the Ray worker process has (OMP_NUM_THREADS=1 for a 1-CPU task): same kernels
    db, owner, ids = setup(root, model, n_jobs, steps)
    worker = Worker(WorkerConfig(data_dir=root, once=True, progress_interval_s=0.5))
    for _ in ids:  # one at a time, as the Ray side runs them (max_jobs=1)
        worker.serve()
    return job_times(db, owner, ids)


def run_ray(root: Path, model: Path, n_jobs: int, steps: int):
    from jobs.ray_backend import Dispatcher, DispatcherConfig

    db, owner, ids = setup(root, model, n_jobs, steps)
    d = Dispatcher(DispatcherConfig(data_dir=root, max_jobs=1, progress_interval_s=0.5, poll_s=0.05))
    while any(q.get_job(db, i, owner).status not in q.TERMINAL for i in ids):
        d.step()
    d.close()
    return job_times(db, owner, ids)


def progress_costs(root: Path, n_events: int) -> dict[str, float]:
    import ray

    from jobs.progress import ProgressWriter
    from jobs.ray_backend import Dispatcher, DispatcherConfig
    from jobs.ray_remote import Mailbox

    db = open_db(root)
    owner = create_user(db, "bench", "password1")
    job_id = q.submit(db, owner, _request())
    q.claim(db, "w", lease_s=600)
    event = dict(phase="train", step=1, total_steps=n_events, loss=1.0, loss_lm=0.5, lr=3e-3)
    writer = ProgressWriter(db, job_id, "w", n_events, min_interval_s=0.0)
    t = time.perf_counter()
    for step in range(1, n_events + 1):
        writer(ProgressEvent(**{**event, "step": step}))
    local_ms = (time.perf_counter() - t) / n_events * 1000

    mailbox = Mailbox.remote()
    ray.get(mailbox.drain.remote())

    @ray.remote(num_cpus=1)
    def poster(box, n):
        t0 = time.perf_counter()
        for step in range(1, n + 1):
            ref = box.post.remote(1, "tok", ProgressEvent(**{**event, "step": step}))
        posted = time.perf_counter() - t0
        ray.get(ref)
        t1 = time.perf_counter()
        for _ in range(50):
            ray.get(box.stop_requested.remote("tok"))
        return posted / n * 1000, (time.perf_counter() - t1) / 50 * 1000

    post_ms, poll_ms = ray.get(poster.remote(mailbox, n_events))
    # the dispatcher's side: drain and write those events (the same report_progress as the local writer)
    d = Dispatcher(DispatcherConfig(data_dir=root / "d"))
    job2 = q.submit(d.db, create_user(d.db, "bench", "password1"), _request())
    q.claim(d.db, d.config.worker_id, lease_s=600)
    events = ray.get(mailbox.drain.remote())
    t = time.perf_counter()
    for _, _, ev in events:
        q.report_progress(d.db, job2, d.config.worker_id, ev)
    write_ms = (time.perf_counter() - t) / len(events) * 1000
    t = time.perf_counter()
    for _ in range(50):
        ray.get(mailbox.drain.remote())
    drain_ms = (time.perf_counter() - t) / 50 * 1000
    d.close()
    ray.kill(mailbox)
    return {"local_write_ms": local_ms, "ray_post_ms": post_ms, "ray_poll_ms": poll_ms,
            "dispatcher_write_ms": write_ms, "drain_ms": drain_ms}


def fmt(times: list[tuple[float, float]]) -> tuple[str, str, float, float]:
    warm = times[1:] or times
    return (f"{times[0][0]:.2f} s / {times[0][1]:.2f} s",
            f"{statistics.median(t[0] for t in warm):.2f} s / {statistics.median(t[1] for t in warm):.2f} s",
            statistics.median(t[0] for t in warm), statistics.median(t[1] for t in warm))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--events", type=int, default=300)
    args = p.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    from ia3app.backbones.tiny import make_tiny_model
    from jobs.ray_backend import connect

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = make_tiny_model("t0", root / "model")
        t = time.perf_counter()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        cluster.add_node(num_cpus=1)
        connect(cluster.address)
        startup = time.perf_counter() - t
        try:
            local = run_local(root / "local", model, args.jobs, args.steps)
            on_ray = run_ray(root / "ray", model, args.jobs, args.steps)
            costs = progress_costs(root / "events", args.events)
        finally:
            ray.shutdown()
            cluster.shutdown()
    lc, lw, l_first, l_end = fmt(local)
    rc, rw, r_first, r_end = fmt(on_ray)
    print(f"tiny T0 job, {args.steps} steps, no evaluation; {args.jobs} jobs per backend, one at a time; "
          f"Ray cluster start {startup:.1f} s")
    print("| measure | local worker | Ray dispatcher | Ray / local |")
    print("|---|---|---|---|")
    print(f"| first job: claim → first step / end to end | {lc} | {rc} | |")
    print(f"| warm jobs (median): claim → first step | {l_first:.3f} s | {r_first:.3f} s | {r_first / l_first:.1f}× |")
    print(f"| warm jobs (median): end to end | {l_end:.3f} s | {r_end:.3f} s | {r_end / l_end:.1f}× |")
    print(f"| Ray overhead per warm job (end to end, Ray − local) | | {r_end - l_end:+.3f} s | |")
    print(f"| progress event, training side | {costs['local_write_ms']:.3f} ms (SQLite write) | "
          f"{costs['ray_post_ms']:.3f} ms (actor post) | {costs['ray_post_ms'] / costs['local_write_ms']:.1f}× |")
    print(f"| progress event, dispatcher side (write) | | {costs['dispatcher_write_ms']:.3f} ms | |")
    print(f"| mailbox drain (per round, every poll_s) | | {costs['drain_ms']:.3f} ms | |")
    print(f"| stop-flag poll (blocking, ≤ 2/s) | | {costs['ray_poll_ms']:.3f} ms | |")


if __name__ == "__main__":
    main()
