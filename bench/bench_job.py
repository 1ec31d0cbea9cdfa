"""The real job path against a bare train() loop: what does the queue/worker/run_job cost per step?

    python -m bench.bench_job [--steps 40] [--rounds 3] [--shape tiny]

In one process, on one real SQLite data directory: a job is submitted to the queue, claimed by a
``jobs.worker.Worker`` and run through ``ia3app.recipe.run_job.run_job`` (the production loader, the
worker's progress writer and heartbeat thread, checkpoints at the recipe's interval, no
evaluation); then ``ia3app.recipe.train.train`` runs alone on the same rows, the same template and
recipe, the model loaded the same way, no progress callback, no checkpoints. Rounds alternate;
the per-step time of each comes from train()'s own wall clock (the job's from its
results.json), and the ratio of medians is printed (target ≤ 1.05 on a CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from ia3app.config import RecipeConfig
from ia3app.adapters.ia3 import inject
from ia3app.jobtypes import DataRef, JobRequest, JobSpec
from ia3app.backbones.loading import load_model
from ia3app.templates.rendering import render_all
from ia3app.templates.spec import TemplateSpec
from ia3app.recipe.train import train
from jobs import queue as q
from jobs.worker import Worker, WorkerConfig
from storage import repo
from storage.db import open_db
from storage.files import FileStore
from storage.users import create_user

TEMPLATE = {"name": "rte", "input": "{{premise}}\nQuestion: {{hypothesis}} True or False?",
            "label_column": "label", "choices": ["True", "False"]}


def rte_rows() -> list[dict]:
    import csv

    path = Path(__file__).resolve().parent.parent / "examples" / "rte_32shot_seed0.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"premise": r["premise"], "hypothesis": r["hypothesis"],
             "label": "True" if r["label"] == "entailment" else "False"} for r in rows]


def make_model(root: Path, shape: str) -> Path:
    from ia3app.backbones.tiny import make_tiny_model

    sizes = {"tiny": dict(d_model=64, layers=2, heads=4, d_ff=128),
             "small": dict(d_model=256, layers=4, heads=4, d_ff=1024)}[shape]
    return make_tiny_model("t0", root / f"model-{shape}", **sizes)


def job_step_s(data: Path, db, store, owner, dataset: int, spec: JobSpec) -> float:
    job_id = q.submit(db, owner, JobRequest(spec, DataRef(dataset)))
    Worker(WorkerConfig(data_dir=data, once=True)).serve()
    job = q.get_job(db, job_id, owner)
    if job.status != "succeeded":
        raise RuntimeError(f"the benchmark job failed: {job.error_message}")
    training = job.result.training
    return training.wall_s / training.steps


def bare_step_s(model_dir: Path, rows: list[dict], recipe: RecipeConfig) -> float:
    loaded = load_model(str(model_dir), precision=recipe.precision)
    handle = inject(loaded.model)
    examples = render_all(TemplateSpec.from_dict(TEMPLATE), rows)
    result = train(handle, loaded.tokenizer, examples, recipe)
    return result.wall_s / result.steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", default="tiny", choices=["tiny", "small"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = rte_rows()
    recipe = RecipeConfig(steps=args.steps, batch_size=8, seed=0)  # checkpoint_every 100: the job writes one, at the end
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = make_model(root, args.shape)
        data = root / "data"
        db, store = open_db(data), FileStore(data)
        owner = create_user(db, "bench", "password1")
        dataset = repo.save_dataset(db, store, owner, "rte", "rte.csv", b"raw", ["premise", "hypothesis", "label"],
                                    rows, "label")
        spec = JobSpec(model=str(model_dir), template=TemplateSpec.from_dict(TEMPLATE), recipe=recipe, eval_methods=[])
        job_step_s(data, db, store, owner, dataset, replace(spec, recipe=replace(recipe, steps=2)))  # warm-up
        times = {"job": [], "bare": []}
        for _ in range(args.rounds):
            times["job"].append(job_step_s(data, db, store, owner, dataset, spec))
            times["bare"].append(bare_step_s(model_dir, rows, recipe))
    job, bare = statistics.median(times["job"]), statistics.median(times["bare"])
    out = {"bench": "job", "shape": args.shape, "steps": args.steps, "rounds": args.rounds,
           "job_step_ms": round(job * 1000, 2), "bare_step_ms": round(bare * 1000, 2),
           "ratio_job_over_bare": round(job / bare, 3), "target": 1.05,
           "job_ms_all": [round(t * 1000, 2) for t in times["job"]],
           "bare_ms_all": [round(t * 1000, 2) for t in times["bare"]], "torch_threads": args.threads}
    print(f"job path {out['job_step_ms']} ms/step, bare train() {out['bare_step_ms']} ms/step: "
          f"ratio {out['ratio_job_over_bare']}x (target <= 1.05)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
