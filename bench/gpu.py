"""The T-Few recipe on one GPU, measured on the production path: what a worker really runs.

On the GPU machine (≈ 11 minutes in all; two commands because one command may run ≤ 10 minutes;
the second reuses the model and compile cache the first left under --scratch):

    python3 -m bench.gpu --parts cold,warm
    python3 -m bench.gpu --parts syncs,memory,11b
    python3 -m bench.gpu --dry-run       # tiny model on the CPU: checks the whole script

A T0-3B-shaped model (random weights; d_model 2048, 24+24 blocks, 32 heads, gated d_ff 5120,
vocab 32128) is written once with ``save_pretrained`` (bf16) together with a subword tokenizer
(bench/shapes.py), unless ``--model`` names a real checkpoint folder. Jobs on the RTE few-shot
rows (examples/, T0-style prompt, 2 choices; ``--data synthetic256`` for 256-token inputs with
3 choices, the shape of the earlier figures) go through the queue to a ``jobs.worker.Worker``,
which runs ``ia3app.recipe.run_job.run_job``: ``load_model`` (bf16 base, TF32), (IA)^3, ``train()``
with the default recipe (compile auto = regional compilation on CUDA, compile cache under the
data dir, activation checkpointing / micro-batches auto), no evaluation. Parts:

- ``cold``: a fresh process, empty compile cache: first job, ``--cold-steps`` steps (compile time);
- ``warm``: a second fresh process, same cache: the full 1,000-step job (wall time including
  model load and compile with a warm cache), then a second job of the same model in the same
  worker (the model is kept: no load, no compile);
- ``syncs``: host synchronisations per step (torch's CUDA sync debug mode): inside steps (progress
  read only at the end) and as a worker runs (progress every 0.25 s);
- ``memory``: peak GPU memory of the production step with activation checkpointing off and on;
- ``11b``: T0 11B's shape (d_model 4096, 64 heads, d_ff 10240; built in memory in bf16, as
  load_model would give it) on the GPU limited to 48 GB (``set_per_process_memory_fraction``),
  recipe defaults (checkpointing / micro-batches auto), peak GPU memory.

The last stdout line is one JSON object (also written to $OUT/gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.shapes import SHAPES, fewshot_examples, random_t5, random_text, sentencepiece_like_tokenizer, t5_config

SHAPES.setdefault("t0-11b", dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64))
H100_BF16_DENSE_PEAK = 989e12  # FLOP/s, dense (bench/gpu_compile.py reads it)
TEMPLATE = {"name": "rte", "input": "{{text}}", "label_column": "label", "choices": ["True", "False"]}
TEMPLATE3 = {"name": "three", "input": "{{text}}", "label_column": "label", "choices": ["yes", "maybe", "no"]}


def log(msg: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(summary: dict, out_dir: str | None, name: str) -> None:
    line = json.dumps(summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        Path(out_dir, name).write_text(line + "\n")
    print(line, flush=True)


def make_examples(n: int, input_tokens: int, seed: int = 0):
    """n examples of exactly input_tokens ByT5 tokens with 3 choices (bench/gpu_compile.py's inputs)."""
    import random

    from ia3app.example import Example

    rng = random.Random(seed)
    choices = ("yes", "maybe", "no")
    return [Example(random_text(rng, input_tokens - 1), choices, rng.randrange(3)) for _ in range(n)]


def rows(data: str) -> tuple[list[dict], dict]:
    if data == "rte":
        return [{"text": e.input, "label": e.choices[e.label]} for e in fewshot_examples("rte")], TEMPLATE
    import random

    rng = random.Random(0)  # ~256 subword tokens of pseudo-words, 3 choices
    return [{"text": random_text(rng, 1100), "label": rng.choice(TEMPLATE3["choices"])} for _ in range(32)], TEMPLATE3


def write_model(shape: str, folder: Path) -> Path:
    """A random model of `shape` saved as a from_pretrained folder (bf16), with the tokenizer."""
    if (folder / "config.json").is_file():
        return folder
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = random_t5(shape, device=device, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    sentencepiece_like_tokenizer().save_pretrained(folder)
    del model
    return folder


# ------------------------------------------------------------------ children (fresh processes)


def _job(data_dir: Path, model: str, recipe: dict, data: str, device: str) -> dict:
    from jobs import queue as q
    from jobs.worker import Worker, WorkerConfig
    from storage import repo
    from storage.db import open_db
    from storage.files import FileStore
    from storage.users import create_user, user_id

    db, store = open_db(data_dir), FileStore(data_dir)
    owner = user_id(db, "bench") or create_user(db, "bench", "password1")
    table, template = rows(data)
    dataset = repo.save_dataset(db, store, owner, data, f"{data}.csv", b"raw", ["text", "label"], table, "label")
    from ia3app.jobtypes import DataRef, JobRequest, JobSpec

    spec = JobSpec.from_dict({"model": model, "template": template, "recipe": recipe, "eval_methods": []})
    job_id = q.submit(db, owner, JobRequest(spec, DataRef(dataset)))
    started = time.perf_counter()
    worker = _WORKERS.setdefault(str(data_dir), Worker(WorkerConfig(data_dir=data_dir, once=True, device=device)))
    worker.serve()
    wall = time.perf_counter() - started
    job = q.get_job(db, job_id, owner)
    if job.status != "succeeded":
        raise RuntimeError(f"job failed: {job.error_message}")
    training = job.result.training
    events = [e for e in q.progress_events(db, job_id, owner) if e.phase == "train" and e.step]
    first, last = events[0], events[-1]
    steady = (last.elapsed_s - first.elapsed_s) / max(last.step - first.step, 1)
    return {"claim_to_done_s": round(wall, 1), "train_wall_s": round(training.wall_s, 1),
            "steps": training.steps, "setup": training.setup, "first_event_step": first.step,
            "first_event_elapsed_s": round(first.elapsed_s, 1), "steady_step_s": round(steady, 4),
            "peak_gb": _peak()}


_WORKERS: dict = {}


def _peak() -> float | None:
    if not torch.cuda.is_available():
        return None
    gb = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    torch.cuda.reset_peak_memory_stats()
    return gb


def _train_direct(model_dir: str, data: str, recipe, device: str, **kw) -> tuple:
    """load_model + inject + train(), as run_job does, for the sync and memory measurements."""
    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import load_model
    from ia3app.templates.rendering import render_all
    from ia3app.templates.spec import TemplateSpec
    from ia3app.recipe.train import train

    table, template = rows(data)
    loaded = load_model(model_dir, device=device, precision=recipe.precision)
    handle = inject(loaded.model)
    examples = render_all(TemplateSpec.from_dict(template), table)
    return loaded, handle, examples, lambda r, **k: train(handle, loaded.tokenizer, examples, r, **{**kw, **k})


def child(args) -> dict:
    from ia3app.config import RecipeConfig

    data_dir, device = Path(args.data_dir), args.device
    out: dict = {}
    if args.child == "cold":
        import shutil

        shutil.rmtree(data_dir / "cache" / "compile", ignore_errors=True)  # cold: nothing compiled yet
        out["cold"] = _job(data_dir, args.model, {"steps": args.cold_steps, "checkpoint_every": 0}, args.data, device)
    if args.child == "warm":
        out["warm_1000"] = _job(data_dir, args.model, {"steps": args.steps, "checkpoint_every": 100}, args.data, device)
        out["same_worker_next_job"] = _job(data_dir, args.model, {"steps": args.next_steps, "checkpoint_every": 0},
                                           args.data, device)
    if args.child == "syncs":
        from bench.syncs import DeviceReads, cuda_syncs

        _, _, _, run = _train_direct(args.model, args.data, RecipeConfig(), device,
                                     compile_cache_dir=data_dir / "cache" / "compile")
        run(RecipeConfig(steps=3, checkpoint_every=0))  # compile (warm cache) outside the count
        counts = {}
        few, many = args.sync_steps
        for steps, interval in ((few, 1e9), (many, 1e9), (many, 0.25)):
            counter = cuda_syncs() if device == "cuda" else None
            if counter is None:
                reads = DeviceReads()
                with reads:
                    run(RecipeConfig(steps=steps, checkpoint_every=0), progress_interval_s=interval)
                counts[(steps, interval)] = reads.count
            else:
                with counter as c:
                    run(RecipeConfig(steps=steps, checkpoint_every=0), progress_interval_s=interval)
                counts[(steps, interval)] = c.count
        out["syncs"] = {"inside_steps_per_step": (counts[(many, 1e9)] - counts[(few, 1e9)]) / (many - few),
                        f"whole_run_{few}_steps": counts[(few, 1e9)], f"whole_run_{many}_steps": counts[(many, 1e9)],
                        "worker_setting_per_step": round(counts[(many, 0.25)] / many, 3),
                        "counter": "cuda sync debug mode" if device == "cuda" else "aten device-read ops (CPU)"}
    if args.child == "memory":
        _peak()
        _, handle, _, run = _train_direct(args.model, args.data, RecipeConfig(), device,
                                          compile_cache_dir=data_dir / "cache" / "compile")
        weights = _peak()
        out["memory"] = {"weights_gb": weights}
        for ckpt in ("off", "on"):
            t = time.perf_counter()
            result = run(RecipeConfig(steps=4, checkpoint_every=0, activation_checkpointing=ckpt, grad_accumulation=1))
            h = result.history
            out["memory"][f"checkpointing_{ckpt}"] = {
                "peak_gb": _peak(), "step_s": round((h[-1]["elapsed_s"] - h[1]["elapsed_s"]) / 2, 4), "setup": result.setup,
                "wall_s": round(time.perf_counter() - t, 1)}
    if args.child == "11b":
        out["t0_11b"] = t0_11b(args, device)
    return out


def t0_11b(args, device: str) -> dict:
    from ia3app.config import RecipeConfig
    from ia3app.adapters.ia3 import inject
    from ia3app.recipe.device_plan import activation_bytes
    from ia3app.templates.rendering import render_all
    from ia3app.templates.spec import TemplateSpec
    from ia3app.recipe.train import train

    _peak()
    if device == "cuda":  # behave as on a 48 GB card: the allocator and the memory planner see 48 GB
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, 48e9 / total))
    t = time.perf_counter()
    shape = "t0-11b" if device == "cuda" else "tiny"
    with torch.device(device):  # built in bf16 directly: an fp32 11B would not fit in 48 GB
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = random_t5(shape, device=device, dtype=torch.bfloat16)  # what load_model(precision auto) holds
        finally:
            torch.set_default_dtype(previous)
    built_s = time.perf_counter() - t
    handle = inject(model)
    weights = _peak()
    table, template = rows(args.data)
    examples = render_all(TemplateSpec.from_dict(template), table)
    recipe = RecipeConfig(steps=3, checkpoint_every=0, compile="off")
    result = train(handle, sentencepiece_like_tokenizer(), examples, recipe)
    h = result.history
    return {"parameters": sum(p.numel() for p in model.parameters()), "build_s": round(built_s, 1),
            "weights_gb": weights, "peak_gb": _peak(), "step_s": round((h[-1]["elapsed_s"] - h[0]["elapsed_s"]) / 2, 3),
            "compile": "off (eager) to save device time", "setup": result.setup,
            "estimate_without_checkpointing_gb": round(activation_bytes(t5_config(shape), 8, 166, 4, 2, False) / 1e9, 1)}


# ------------------------------------------------------------------ parent


def run_child(args, part: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "bench.gpu", "--child", part, "--data-dir", args.data_dir, "--model", args.model,
           "--data", args.data, "--steps", str(args.steps), "--cold-steps", str(args.cold_steps),
           "--device", args.device, "--next-steps", str(args.next_steps),
           "--sync-steps", ",".join(map(str, args.sync_steps))]
    log(f"{part}: {' '.join(cmd[2:])}")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stderr.write(proc.stderr[-3000:])
    if proc.returncode:
        return {part: {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.setdefault(part, {})
    if isinstance(result.get(part), dict):
        result[part]["process_s"] = round(time.perf_counter() - t, 1)
    log(f"{part}: {result}")
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, few steps")
    parser.add_argument("--parts", default="cold,warm,syncs,memory,11b")
    parser.add_argument("--model", help="a model folder (default: a random T0-3B shape written once)")
    parser.add_argument("--data", default="rte", choices=["rte", "synthetic256"])
    parser.add_argument("--steps", type=int, default=1000, help="steps of the warm job")
    parser.add_argument("--cold-steps", type=int, default=30)
    parser.add_argument("--next-steps", type=int, default=20, help="steps of the same worker's next job")
    parser.add_argument("--sync-steps", default="10,30", type=lambda v: tuple(int(x) for x in v.split(",")))
    parser.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "ia3-gpu"),
                        help="the random model and the worker data dir (kept: later runs reuse them)")
    parser.add_argument("--data-dir", help="worker data dir (default: SCRATCH/data)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return {}
    started = time.perf_counter()
    scratch = Path(args.scratch) / ("dry-run" if args.dry_run else "gpu")
    args.data_dir = args.data_dir or str(scratch / "data")
    if args.dry_run:
        args.device, args.steps, args.cold_steps, args.next_steps, args.sync_steps = "cpu", 3, 2, 2, (2, 4)
        shape = "tiny"
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run on a CPU")
        args.device, shape = "cuda", "t0-3b"
    if not args.model:
        t = time.perf_counter()
        args.model = str(write_model(shape, scratch / f"model-{shape}"))
        log(f"wrote the random {shape} model in {time.perf_counter() - t:.1f}s")
    results: dict = {}
    for part in [p for p in args.parts.split(",") if p]:
        results.update(run_child(args, part, timeout=590))
    summary = {"bench": "gpu", "dry_run": args.dry_run, "torch": torch.__version__, "shape": shape, "data": args.data,
               "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               **results,
               "targets": {"warm_1000_steps_s": 75, "cold_compile_s": 60, "syncs_per_step": 0, "peak_gb": 22,
                           "peak_checkpointing_gb": 8, "t0_11b_peak_gb": 40},
               "total_s": round(time.perf_counter() - started, 1)}
    emit(summary, args.out, "gpu.json")
    return summary


if __name__ == "__main__":
    main()
