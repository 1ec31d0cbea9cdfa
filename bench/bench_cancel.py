"""Cancel latency: from the owner's cancel to the job's state 'cancelled', for two cancel-flag polls.

    python -m bench.bench_cancel [--trials 3] [--polls 1.0 0.2]

A real worker (in this process, on its own thread) trains the tiny T0-style model on a real SQLite
file; once training has reported a step, the job is cancelled as the job page does (queue.cancel) and
the store is read every 5 ms until the worker has recorded 'cancelled'. Printed side by side, per
cancel-flag poll (WorkerConfig.cancel_poll_s): the median latency, the tiny model's step time, and
the ratio between the polls. The job page's Cancel waits for this state (ui.jobs_page.cancel_job), so
what the page shows after a click is this latency plus one request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, JobRequest, JobSpec
from ia3app.templates.spec import TemplateSpec
from jobs import queue as q
from jobs.worker import Worker, WorkerConfig
from storage import repo
from storage.db import open_db
from storage.files import FileStore
from storage.users import create_user

TEMPLATE = {"name": "sentiment", "input": "{{text}} Was it good or bad?", "label_column": "label",
            "choices": ["bad", "good"]}
ROWS = [{"text": f"{w} film number {i}", "label": l} for i in range(8) for w, l in [("great", "good"), ("awful", "bad")]]


def one_cancel(data: Path, owner: int, config: JobRequest, poll_s: float) -> tuple[float, float]:
    """(seconds from cancel to 'cancelled', seconds per training step before it) for one job."""
    db = open_db(data)
    job_id = q.submit(db, owner, config)
    worker = Worker(WorkerConfig(data_dir=data, progress_interval_s=0.0, once=True, cancel_poll_s=poll_s))
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while True:
        steps = [e for e in q.progress_events(db, job_id, owner) if e.phase == "train" and e.step]
        if len(steps) >= 3 and steps[-1].elapsed_s is not None:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} reported no training steps in 300 s")
        time.sleep(0.02)
    step_s = (steps[-1].elapsed_s - steps[0].elapsed_s) / max(steps[-1].step - steps[0].step, 1)
    asked = time.perf_counter()
    assert q.cancel(db, job_id, owner) == "running"
    while q.get_job(db, job_id, owner).status != "cancelled":
        time.sleep(0.005)
    took = time.perf_counter() - asked
    thread.join(timeout=60)
    return took, step_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--polls", type=float, nargs="+", default=[1.0, 0.2])
    args = parser.parse_args(argv)
    from ia3app.backbones.tiny import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = make_tiny_model("t0", root / "model")
        data = root / "data"
        db, store = open_db(data), FileStore(data)
        owner = create_user(db, "bench", "password1")
        dataset = repo.save_dataset(db, store, owner, "bench", "bench.csv", b"raw", ["text", "label"], ROWS, "label")
        config = JobRequest(JobSpec(model=str(model_dir), template=TemplateSpec.from_dict(TEMPLATE), eval_methods=[],
                                    recipe=RecipeConfig(steps=100_000, batch_size=2, warmup_steps=0, seed=0,
                                                        checkpoint_every=0, max_length=64)), DataRef(dataset))
        one_cancel(data, owner, config, args.polls[-1])  # warm-up: the first job imports torch and transformers
        results = {}
        for trial in range(args.trials):  # interleaved, so both polls see the same machine load
            for poll in args.polls:
                results.setdefault(poll, []).append(one_cancel(data, owner, config, poll))
    load = os.getloadavg()[0]
    print(f"cancel -> 'cancelled' (median of {args.trials}; load average {load:.1f} on {os.cpu_count()} CPUs)")
    medians = {}
    for poll, runs in results.items():
        medians[poll] = statistics.median(t for t, _ in runs)
        step = statistics.median(s for _, s in runs)
        print(f"  cancel flag read every {poll:.1f} s: {medians[poll] * 1000:7.0f} ms "
              f"(runs: {', '.join(f'{t * 1000:.0f}' for t, _ in runs)} ms; training step {step * 1000:.0f} ms)")
    first, last = args.polls[0], args.polls[-1]
    print(f"  ratio {first:.1f} s / {last:.1f} s poll: {medians[first] / medians[last]:.2f}x")


if __name__ == "__main__":
    main()
