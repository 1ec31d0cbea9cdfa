"""T-Few's claim measured on a real model: zero-shot vs in-context vs T-Few on rows never trained on.

For each task of T-Few's few-shot samples (bench/data/tfew_fewshot/, see bench/tfew_data.py): train on
one seed's sample through the app's own job path (ia3app.recipe.run_job: the template, the recipe,
the three losses, evaluation of all three methods on the unseen rows) and print accuracy with 95 %
bootstrap intervals per method, the paired difference T-Few − ICL (and T-Few − zero-shot) with its
interval and verdict, ECE before/after temperature scaling (cross-fitted on the unseen rows), wall
time and peak memory (resident set of the process that ran the task). Each (task, seed) runs in its
own process, so the peak memory is that task's.

Two settings:
  --setting cpu   (default) a subset for a 2-core CPU: 4 tasks, train seed 0, at most 64 unseen rows,
                  100 steps. Said so in the output. It does NOT fit in well under an hour on a busy machine:
                  SST-2 alone with 96 rows took 61 min at load ~10 (2026-12-05), 43 min of it in-context
                  evaluation (prompts of ~1,000 tokens); RTE 52 min; COPA 21 and WiC 28 min with one thread
                  at load 9-15 (2026-12-05, bench/RESULTS.md). A quiet machine is faster (not measured).
  --setting full  the paper's protocol for a GPU: all 13 tasks, 1,000 steps, every seed as the
                  training sample in turn, every unseen row.
In-context prompts are the app's: as many of the training rows as fit 1,024 tokens beside the query.

    python -m bench.bench_accuracy                       # CPU setting, bundled SmolLM2-135M-Instruct
    python -m bench.bench_accuracy --setting full --model bigscience/T0_3B
    python -m bench.bench_accuracy --tasks sst2 --steps 300 --lr 3e-3 --json /tmp/acc.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import tfew_data

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = {
    "cpu": dict(tasks=["sst2", "rte", "copa", "wic"], seeds=[0], max_eval=64, steps=100),
    "full": dict(tasks=list(tfew_data.TASKS), seeds=None, max_eval=None, steps=1000),
}
METHODS = ("zero-shot", "in-context", "t-few")


def run_one(task: str, seed: int, args) -> dict:
    """One (task, training seed) through run_job; returns the row of the table (run in a child process)."""
    from ia3app.config import RecipeConfig
    from ia3app.evaluation.calibration import coverage_at_accuracy
    from ia3app.jobtypes import JobSpec
    from ia3app.recipe.run_job import run_job
    from ia3app.templates.library import builtin

    spec_task = tfew_data.TASKS[task]
    train_rows, eval_rows = tfew_data.split(task, seed, args.max_eval)
    labels = sorted({r["label"] for r in train_rows})
    template = builtin(spec_task.template, label_values=labels, **spec_task.columns)
    template = replace(template, chat=not args.no_chat)
    more = [replace(t, chat=not args.no_chat) for t in other_wordings(spec_task.template, labels, spec_task.columns)] \
        if args.all_wordings else []
    recipe = RecipeConfig(steps=args.steps, batch_size=args.batch_size, max_length=args.max_length,
                          lr=args.lr, checkpoint_every=0, seed=args.train_seed)
    spec = JobSpec(model=args.model, template=template, recipe=recipe, eval_methods=list(args.methods),
                   train_templates=more)
    work = Path(args.work) / f"{task}-seed{seed}-{args.steps}steps-lr{args.lr}{'-all' if args.all_wordings else ''}"
    start = time.perf_counter()
    last = [0.0]

    def progress(e):
        now = time.perf_counter()
        if now - last[0] > 30 or e.phase != "train":
            last[0] = now
            print(f"  [{task} seed {seed}] {now - start:6.0f} s {e.phase} {e.message or ''} "
                  f"{'' if e.step is None else f'step {e.step}/{e.total_steps}'}", file=sys.stderr, flush=True)

    result = run_job(spec, train_rows, eval_rows, work_dir=work / "work", out_dir=work / "adapter",
                     progress=progress, device=args.device)
    wall = time.perf_counter() - start
    ev = result.evaluation
    row = {"task": task, "seed": seed, "train_rows": len(train_rows), "eval_rows": len(eval_rows),
           "steps": args.steps, "lr": args.lr, "chat": not args.no_chat,
           "train_templates": 1 + len(more), "wall_s": round(wall, 1),
           "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
           "final_losses": result.training.final_losses if result.training else None}
    for m in args.methods:
        got = ev["methods"][m]
        ci = got["intervals"]["accuracy"]
        row[m] = {"accuracy": got["accuracy"], "low": ci["low"], "high": ci["high"], "macro_f1": got.get("macro_f1"),
                  "latency_s": got.get("latency_s"), **({"shots": got["shots"]} if "shots" in got else {})}
    for name in ("t-few − in-context", "t-few − zero-shot"):
        if name not in ev["differences"]:
            continue
        d = ev["differences"][name]["accuracy"]
        row[name] = {"difference": d["difference"], "low": d["low"], "high": d["high"], "verdict": d["verdict"]}
    cal = ev.get("calibration") or {}
    reach = coverage_at_accuracy(cal["coverage"], 0.95) if cal.get("coverage") else None
    row["calibration"] = {"temperature": cal.get("temperature"), "ece_before": cal.get("ece_before"),
                          "ece_after": cal.get("ece_after_cross_fit", cal.get("ece_after")),
                          "coverage_at_95": None if reach is None else reach["coverage"]}
    return row


def other_wordings(name: str, labels: list[str], columns: dict) -> list:
    """The task's other built-in wordings (same roles and answer choices), as the template page offers them under
    "Also train with these templates": T-Few trains each example with a random one of a dataset's prompts."""
    from ia3app.templates.library import BUILTINS, builtin

    base = BUILTINS[name]
    return [builtin(n, label_values=labels, **columns) for n, b in BUILTINS.items()
            if n != name and b.description.startswith(f"{base.description} Another wording")]


def _pct(x) -> str:
    return "  –  " if x is None else f"{100 * x:5.1f}"


def _diff(d: dict | None) -> str:
    return "–" if d is None else f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def table(rows: list[dict]) -> str:
    head = ("| task | seed | unseen rows | zero-shot | in-context | T-Few | T-Few − ICL | verdict | T-Few − ZS |"
            " ECE before → after | wall s | peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        acc = [f"{_pct(r[m]['accuracy'])} [{_pct(r[m]['low'])}, {_pct(r[m]['high'])}]" if m in r else "–"
               for m in METHODS]
        d, z = r.get("t-few − in-context"), r.get("t-few − zero-shot")
        c = r["calibration"]
        lines.append(
            f"| {r['task']} | {r['seed']} | {r['eval_rows']} | {acc[0]} | {acc[1]} | {acc[2]} | "
            f"{_diff(d)} | {d['verdict'] if d else '–'} | {_diff(z)} | "
            f"{_pct(c['ece_before'])} → {_pct(c['ece_after'])} | {r['wall_s']:.0f} | {r['peak_mb']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=list(SETTINGS), default="cpu")
    p.add_argument("--model", default="smollm2-135m", help="short name, hub id or local folder (default: the bundled model)")
    p.add_argument("--tasks", nargs="*", choices=list(tfew_data.TASKS))
    p.add_argument("--seeds", nargs="*", type=int, help="training seeds (default: the setting's)")
    p.add_argument("--max-eval", type=int, help="at most this many unseen rows per task")
    p.add_argument("--steps", type=int)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the model's chat template "
                   "(the built-ins wrap them when the model has one)")
    p.add_argument("--train-seed", type=int, default=42)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="which methods to evaluate (t-few alone for a sweep of steps or learning rates)")
    p.add_argument("--all-wordings", action="store_true",
                   help="train with every built-in wording of the task's template, as T-Few trains with all prompts")
    p.add_argument("--device", default=None)
    p.add_argument("--work", default="/tmp/bench_accuracy")
    p.add_argument("--json", help="append each task's row to this JSON-lines file")
    p.add_argument("--one", nargs=2, metavar=("TASK", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    setting = SETTINGS[args.setting]
    for key in ("tasks", "max_eval", "steps"):
        if getattr(args, key) is None:
            setattr(args, key, setting[key])
    if args.one:
        print("ROW " + json.dumps(run_one(args.one[0], int(args.one[1]), args)), flush=True)
        return 0

    print(f"# accuracy bench, setting '{args.setting}': model {args.model}; tasks {', '.join(args.tasks)}; "
          f"{args.steps} steps, lr {args.lr}, batch {args.batch_size}; "
          f"unseen rows per task: {args.max_eval or 'all'}; "
          f"chat template: {'off' if args.no_chat else 'on'}; device: {args.device or 'auto'}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.setting == "cpu":
        print("# CPU setting: a subset of tasks and rows and 100 steps, not T-Few's 1,000 — see --setting full", flush=True)
    rows = []
    passthrough = list(argv if argv is not None else sys.argv[1:])
    for task in args.tasks:
        for seed in args.seeds or setting["seeds"] or tfew_data.seeds(task):
            cmd = [sys.executable, "-m", "bench.bench_accuracy", *passthrough, "--one", task, str(seed)]
            done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            got = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode != 0 or not got:
                print(f"# {task} seed {seed}: failed (exit {done.returncode})", flush=True)
                continue
            row = json.loads(got[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows))
    paired = [r["t-few − in-context"] for r in rows if "t-few − in-context" in r]
    if paired:
        print(f"# T-Few − ICL interval above 0 on {sum(d['low'] > 0 for d in paired)} of {len(paired)} runs; "
              f"below 0 on {sum(d['high'] < 0 for d in paired)}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
