"""The train page's time estimate against the real run, on datasets of different shapes.

``python -m bench.bench_estimate [--steps N] [--model-dir DIR]``

The path a user takes: each CSV is stored (ui.data_page.save_upload, 25 % held out), its first
fitting built-in template picked, and the estimate read from ui.time_estimate exactly as the train
page reads it; the estimate comes from the worker's probe (jobs.probes, run by a real
jobs.worker.Worker) and, for the later datasets, from the earlier jobs of this run too. Then the job
is queued and run by that worker; the training time it records (JobResult.training.wall_s) is the
"actual". Printed per dataset: its shape, rows, tokens per step, the probe-only estimate, the
estimate with earlier jobs, the actual, and their ratios (target: within 1.5×), plus the whole job's
time (load, evaluation and export add to training).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = [  # (file, label column, shape)
    ("examples/sst2_16shot_seed0.csv", "label", "one text"),
    ("examples/rte_32shot_seed0.csv", "label", "text pair (long premises)"),
    ("examples/copa_32shot_seed0.csv", "label", "per-row options"),
    ("tests/data/boolq_like.csv", "label", "passage + question"),
    ("tests/data/wsc_like.csv", "label", "coreference (3 columns)"),
]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="10 steps, two datasets (bench.run_all)")
    args = parser.parse_args(argv)
    datasets = DATASETS[:2] if args.quick else DATASETS
    steps = 10 if args.quick else args.steps

    from ia3app.config import RecipeConfig
    from jobs import probes, queue
    from jobs.worker import Worker, WorkerConfig
    from storage import repo, users
    from ui import data_page as U
    from ui import model_picker as M
    from ui import template_page as T
    from ui import time_estimate as T_E
    from ui import train_page as TR
    from ui.context import AppContext

    data_dir = Path(tempfile.mkdtemp(prefix="bench-estimate-")) / "data"
    ctx = AppContext(data_dir, max_upload_bytes=5_000_000, max_rows=10_000)
    uid = users.create_user(ctx.db(), "bench", "bench password 1")
    model = str(M.tiny_model_path(data_dir))
    cpu = M.Hardware("cpu", "CPU", 0)
    recipe = RecipeConfig(steps=steps, batch_size=args.batch_size)
    worker = Worker(WorkerConfig(data_dir, device="cpu", until_empty=True))
    prepared = []
    for path, label, shape in datasets:
        state = U.save_upload(ctx, uid, str(ROOT / path), label, None, U.NONE, None, .25, 0)
        name, spec = next(iter(T.fitting_templates(state.columns, state.label_values, label).items()))
        rows = repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, uid)
        prepared.append((path, shape, state, name, spec, rows))

    def estimate(rows, template):
        return T_E.estimate(ctx, M.TINY, model, recipe, rows, template, None, 64, cpu)

    def probe() -> float:
        """A fresh probe by the worker (the machine's load changes: measure beside the run it estimates)."""
        ctx.db().execute("DELETE FROM speed_probes")
        probes.request(ctx.db(), model, recipe)  # what the page asks when nothing is measured yet
        began = time.perf_counter()
        worker.run_probe()
        return time.perf_counter() - began

    print(f"model: the tiny demo model (ia3app.backbones.tiny t0: d_model 64, 2 layers, ByT5 byte tokenizer), CPU; "
          f"{steps} steps, batch {args.batch_size}; {os.cpu_count()} CPUs")
    print(f"{'dataset':24} {'shape':26} {'rows':>4} {'tok/step':>8} {'probe s':>7} {'est(probe)':>10} "
          f"{'est(+jobs)':>10} {'actual':>7} {'ratio p':>7} {'ratio j':>7} {'cpu share':>9} {'load':>5} {'job s':>6}")
    worst = 1.0
    for path, shape, state, name, template, rows in prepared:
        probe_s = probe()
        shape_of_data = T_E.data_shape(model, template, rows, recipe)
        first = T_E.from_cost(T_E.measured_cost(ctx, model, recipe, with_jobs=False), shape_of_data, recipe)
        with_jobs = estimate(rows, template)  # what the page shows: the probe and the earlier datasets' jobs
        load = shape_of_data.load
        request = TR.build_job_config(ctx, uid, state, template, M.TINY, "", recipe, False, "", ["t-few"])
        job_id = queue.submit(ctx.db(), uid, request)
        cpu0, load0 = time.process_time(), os.getloadavg()[0]
        worker.serve()
        job = queue.get_job(ctx.db(), job_id, uid)
        if job.status != "succeeded":
            print(f"{path}: job {job.status}: {job.error_message}", file=sys.stderr)
            return 1
        wall = job.finished - job.started
        actual = job.result.training.wall_s
        rp, rj = first.seconds / actual, with_jobs.seconds / actual
        worst = max(worst, rp, 1 / rp, rj, 1 / rj)
        share = (time.process_time() - cpu0) / wall / (os.cpu_count() or 1)
        print(f"{Path(path).name:24} {shape:26} {len(rows):>4} {load.tokens:>8.0f} {probe_s:>6.1f}s "
              f"{first.seconds:>9.1f}s {with_jobs.seconds:>9.1f}s {actual:>6.1f}s {rp:>7.2f} {rj:>7.2f} "
              f"{share:>9.0%} {(load0 + os.getloadavg()[0]) / 2:>5.1f} {wall:>6.1f}", flush=True)
    print(f"worst factor either way: {worst:.2f}× (target ≤ 1.5×); load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
