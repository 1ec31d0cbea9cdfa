"""Queue overhead: claim -> first training step latency, and the cost of progress writes per step.

    python -m bench.bench_queue [--steps 8] [--claims 200] [--writes 400]

Everything runs on one real SQLite file in a temporary data directory (WAL, as the app uses it)
and a tiny T0-style model, in this process. Printed side by side in one run:
- claim(): milliseconds per claim with 1,000 jobs queued;
- claim -> first training step: of a real job run by the worker (model load included), split
  into claim -> 'load' event -> first 'train' event, for the worker's first job (cold: imports
  torch/transformers) and its second (warm);
- report_progress(): milliseconds per write, heartbeat(): per beat;
- per training step: the throttled ProgressWriter's cost vs writing every step, and both as a
  fraction of the tiny model's own step time (a real model's step is far longer).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ia3app.config import RecipeConfig
from ia3app.jobtypes import DataRef, JobRequest, JobSpec, ProgressEvent
from ia3app.templates.spec import TemplateSpec
from jobs import queue as q
from jobs.progress import ProgressWriter
from jobs.worker import Worker, WorkerConfig
from storage import repo
from storage.db import open_db
from storage.files import FileStore
from storage.users import create_user

TEMPLATE = {"name": "sentiment", "input": "{{text}} Was it good or bad?", "label_column": "label",
            "choices": ["bad", "good"]}
ROWS = [{"text": f"{w} film number {i}", "label": l} for i in range(8) for w, l in [("great", "good"), ("awful", "bad")]]


def request(dataset_id: int = 1, model: str = "bench/model", **recipe) -> JobRequest:
    spec = JobSpec(model=model, template=TemplateSpec.from_dict(TEMPLATE), recipe=RecipeConfig(**recipe),
                   eval_methods=[])
    return JobRequest(spec, DataRef(dataset_id))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_claims(root: Path, n_claims: int) -> float:
    db = open_db(root / "claims")
    owner = create_user(db, "bench", "password1")
    queued = request()
    for i in range(1000):
        q.submit(db, owner, queued, priority=i % 3)
    samples = []
    for _ in range(n_claims):
        t = time.perf_counter()
        q.claim(db, "w")
        samples.append(time.perf_counter() - t)
    return median_ms(samples)


def bench_writes(root: Path, n_writes: int) -> tuple[float, float, float, float]:
    """(report_progress ms, heartbeat ms, ProgressWriter ms/step every step, ms/step throttled)."""
    db = open_db(root / "writes")
    owner = create_user(db, "bench", "password1")
    job_id = q.submit(db, owner, request())
    q.claim(db, "w", lease_s=600)
    event = dict(phase="train", step=1, total_steps=n_writes, loss=1.0, loss_lm=0.5, loss_ul=0.3,
                 loss_ln=0.2, lr=3e-3, examples_per_s=10.0, elapsed_s=1.0, eta_s=1.0)
    writes, beats = [], []
    for i in range(n_writes):
        t = time.perf_counter()
        q.report_progress(db, job_id, "w", ProgressEvent(**{**event, "step": i + 1}))
        writes.append(time.perf_counter() - t)
        t = time.perf_counter()
        q.heartbeat(db, job_id, "w", 600)
        beats.append(time.perf_counter() - t)
    per_step = {}
    for interval in (0.0, 0.5):
        writer = ProgressWriter(db, job_id, "w", n_writes, min_interval_s=interval)
        inside = 0.0  # time spent in the callback only; the sleep stands in for a short training step
        for i in range(n_writes):
            t = time.perf_counter()
            writer(ProgressEvent(**{**event, "step": i + 1}))
            inside += time.perf_counter() - t
            time.sleep(0.005)
        per_step[interval] = inside / n_writes * 1000
    return median_ms(writes), median_ms(beats), per_step[0.0], per_step[0.5]


def bench_first_step(root: Path, steps: int) -> dict[str, float]:
    from ia3app.backbones.tiny import make_tiny_model

    model_dir = make_tiny_model("t0", root / "model")
    data = root / "job"
    db, store = open_db(data), FileStore(data)
    owner = create_user(db, "bench", "password1")
    dataset = repo.save_dataset(db, store, owner, "bench", "bench.csv", b"raw", ["text", "label"], ROWS, "label")
    config = request(dataset, str(model_dir), steps=steps, batch_size=2, warmup_steps=0, checkpoint_every=0, seed=0,
                     max_length=64)
    out = {}
    for run in ("cold", "warm"):  # cold: the worker's first job imports torch/transformers
        job_id = q.submit(db, owner, config)
        Worker(WorkerConfig(data_dir=data, progress_interval_s=0.0, once=True)).serve()
        job = q.get_job(db, job_id, owner)
        assert job.status == "succeeded", job.error_message
        events = q.progress_events(db, job_id, owner)
        load = next(e.created for e in events if e.phase == "load")
        train = [e.created for e in events if e.phase == "train"]
        out[run] = {"claim_to_load_s": load - job.started, "load_to_first_step_s": train[0] - load,
                    "claim_to_first_step_s": train[0] - job.started,
                    "step_s": (train[-1] - train[0]) / max(len(train) - 1, 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--writes", type=int, default=400)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        claim_ms = bench_claims(root, args.claims)
        write_ms, beat_ms, every_ms, throttled_ms = bench_writes(root, args.writes)
        first = bench_first_step(root, args.steps)
    step_ms = first["warm"]["step_s"] * 1000
    print(f"claim() with 1,000 queued:          {claim_ms:8.2f} ms (median of {args.claims})")
    for run in ("cold", "warm"):
        f = first[run]
        print(f"[{run}] claim -> 'load' event:       {f['claim_to_load_s'] * 1000:8.1f} ms (imports, rows, validation)")
        print(f"[{run}] 'load' -> first step:        {f['load_to_first_step_s'] * 1000:8.1f} ms (model load + step 1)")
        print(f"[{run}] claim -> first step:         {f['claim_to_first_step_s'] * 1000:8.1f} ms")
    print(f"report_progress() per write:        {write_ms:8.3f} ms (median of {args.writes})")
    print(f"heartbeat() per beat:               {beat_ms:8.3f} ms")
    print(f"progress cost per step, every step: {every_ms:8.3f} ms")
    print(f"progress cost per step, throttled:  {throttled_ms:8.3f} ms (<= 2 writes/s)")
    print(f"tiny-model training step:           {step_ms:8.1f} ms")
    print(f"ratio every-step / throttled:       {every_ms / max(throttled_ms, 1e-6):8.1f}x")
    print(f"progress cost / step time:          {every_ms / step_ms:8.3%} every step, "
          f"{throttled_ms / step_ms:.4%} throttled")

if __name__ == "__main__":
    main()
