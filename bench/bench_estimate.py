"""The train page's time estimate against the real run of the same job, on datasets of different shapes.

``python -m bench.bench_estimate [--models tiny,smollm2] [--steps N] [--rows N] [--quick]``

The path a user takes: each CSV (the first --rows rows of a T-Few few-shot file: binary sentiment, 3-label
pairs, passage + question, per-row options, word sense) is stored as the Data page stores it (a third held
out), its first fitting built-in template picked, and the estimate read from ui.time_estimate exactly as the
train page reads it, with the three comparisons the page ticks by default. The estimate comes from the
worker's probe (jobs.probes, run by a real jobs.worker.Worker, fresh before each dataset: the machine's
load changes, so it is measured beside the run it estimates; --probe-once: one per model, as the app keeps
it) and the earlier datasets' jobs of the model, as the page combines them.
Then the job is queued and run by that worker; its progress events' times split the actual run into
loading (+ checking the template), training, evaluation and the rest (export).

Printed per model and dataset: rows, tokens per training step, the estimate's parts and the actual ones,
and estimate/actual for the whole job (target: within 1.5×), with the load average while it ran.
The bundled model (smollm2) needs IA3APP_MODEL_CACHE pointing at its converted copy.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEWSHOT = ROOT / "bench" / "data" / "tfew_fewshot"
DATASETS = [  # (file, shape)
    ("sst2.csv", "one text (binary sentiment)"),
    ("cb.csv", "text pair, 3 labels"),
    ("boolq.csv", "passage + question"),
    ("copa.csv", "per-row options"),
    ("wic.csv", "word sense"),
]
HOLDOUT = 1 / 3


def _subset(src: Path, dest: Path, rows: int) -> Path:
    """The first `rows` rows of a T-Few file without its bookkeeping columns (idx, seed)."""
    with src.open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))[:rows]
    columns = [c for c in table[0] if c not in ("idx", "seed")]
    with dest.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
    return dest


def _phases(events, started: float, finished: float) -> dict[str, float]:
    """Seconds of each phase of a run, from the times of its first event of each phase."""
    first: dict[str, float] = {}
    for e in events:
        first.setdefault(e.phase, e.created - (e.elapsed_s or 0.0) if e.phase == "train" else e.created)
    train = first.get("train", finished)  # when training began: its first event less the seconds it reports
    evaluate = first.get("evaluate", first.get("export", finished))
    export = first.get("export", finished)
    return {"load": train - started, "train": evaluate - train, "evaluate": export - evaluate,
            "rest": finished - export, "total": finished - started}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rows", type=int, default=48, help="rows per dataset (a third held out)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--datasets", default="", help="comma-separated file names (default: all five)")
    parser.add_argument("--methods", default="", help="comparisons evaluated, comma-separated (default: the "
                        "page's, all three; in-context prompts fill the model's input: with SmolLM2 on a CPU, "
                        "seconds per row)")
    parser.add_argument("--probe-once", action="store_true", help="one probe per model, before its first dataset "
                        "(as the app does: later estimates add the earlier jobs), not a fresh one per dataset")
    parser.add_argument("--quick", action="store_true", help="tiny model, 10 steps, two datasets (bench.run_all)")
    args = parser.parse_args(argv)
    datasets = [d for d in DATASETS if not args.datasets or d[0] in args.datasets.split(",")]
    models = args.models.split(",")
    if args.quick:
        datasets, models, args.steps = datasets[:2], ["tiny"], 10

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

    base = Path(tempfile.mkdtemp(prefix="bench-estimate-"))
    data_dir = base / "data"
    ctx = AppContext(data_dir, max_upload_bytes=5_000_000, max_rows=10_000)
    uid = users.create_user(ctx.db(), "bench", "bench password 1")
    cpu = M.Hardware("cpu", "CPU", 0)
    recipe = RecipeConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=0)
    methods = args.methods.split(",") if args.methods else list(TR.METHODS)
    worker = Worker(WorkerConfig(data_dir, device="cpu", until_empty=True))
    prepared = []
    for name, shape in datasets:
        path = _subset(FEWSHOT / name, base / name, args.rows)
        state = U.save_upload(ctx, uid, str(path), "label", None, U.AUTO, None, HOLDOUT, 0)
        template_name, spec = next(iter(T.fitting_templates(state.columns, state.label_values, "label").items()))
        rows = repo.load_rows(ctx.db(), ctx.files(), state.dataset_id, uid)
        prepared.append((name, shape, state, template_name, spec, rows))

    print(f"{os.cpu_count()} CPUs; {args.steps} steps, batch {args.batch_size}; {args.rows} rows per dataset, "
          f"{HOLDOUT:.0%} held out; comparisons: {', '.join(methods)}")
    worst = 1.0
    for model_key in models:
        key = {"tiny": M.TINY, "smollm2": M.BUNDLED}[model_key]
        model = M.resolve_model(key, "", data_dir)
        print(f"\nmodel: {model_key}")
        print(f"{'dataset':11} {'shape':28} {'rows':>4} {'tok/step':>8} | {'est load':>8} {'train':>6} "
              f"{'eval':>6} {'total':>7} | {'act load':>8} {'train':>6} {'eval':>6} {'total':>7} | "
              f"{'ratio':>5} {'train':>5} {'eval':>5} | {'load avg':>8}")
        for number, (name, shape, state, template_name, template, rows) in enumerate(prepared):
            if number == 0 or not args.probe_once:
                ctx.db().execute("DELETE FROM speed_probes")
                probes.request(ctx.db(), model, recipe)  # what the page asks when nothing is measured yet
                worker.run_probe()
            train_rows, held_out = T_E.job_rows(ctx, uid, state, "label", rows)
            est = T_E.estimate(ctx, key, model, recipe, train_rows, template, None, 64, cpu, eval_rows=held_out,
                               methods=methods, ask=False)
            if est.seconds is None or est.parts is None:
                print(f"{name}: no measured estimate: {est.source}", file=sys.stderr)
                return 1
            request = TR.build_job_config(ctx, uid, state, template, key, "", recipe, False, "", methods)
            job_id = queue.submit(ctx.db(), uid, request)
            load0 = os.getloadavg()[0]
            worker.serve()
            load1 = os.getloadavg()[0]
            job = queue.get_job(ctx.db(), job_id, uid)
            if job.status != "succeeded":
                print(f"{name}: job {job.status}: {job.error_message}", file=sys.stderr)
                return 1
            act = _phases(queue.progress_events(ctx.db(), job_id, uid), job.started, job.finished)
            parts = est.parts
            ratio = est.seconds / act["total"]
            r_train, r_eval = parts.train_s / act["train"], parts.evaluate_s / max(act["evaluate"], 1e-9)
            worst = max(worst, ratio, 1 / ratio)
            print(f"{name[:-4]:11} {shape:28} {len(rows):>4} {parts.shape.load.tokens:>8.0f} | "
                  f"{parts.load_s:>7.1f}s {parts.train_s:>5.1f}s {parts.evaluate_s:>5.1f}s {est.seconds:>6.1f}s | "
                  f"{act['load']:>7.1f}s {act['train']:>5.1f}s {act['evaluate']:>5.1f}s {act['total']:>6.1f}s | "
                  f"{ratio:>5.2f} {r_train:>5.2f} {r_eval:>5.2f} | {(load0 + load1) / 2:>8.2f}", flush=True)
    print(f"\nworst whole-job factor either way: {worst:.2f}× (target ≤ 1.5×); load average now "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
