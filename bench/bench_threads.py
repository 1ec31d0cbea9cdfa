"""CPU thread policy and bf16 on the CPU, measured side by side in one process (issue 18 item 2).

For each torch intra-op thread count in ``--threads`` (default 1,2), alternating in rounds (medians):

1. a training step: T-Few losses, VectorAdafactor, batch 8, each prompt once (ia3app.recipe.train);
2. a serving batch: ``--serve-rows`` rows, 4 adapters mixed in one batch (score_choices with a bank),
   the batch the serving engine's batcher thread runs;
3. a small serving batch (2 rows, one adapter): the batcher's usual load when traffic is light.

Then, once, at the training thread count that won: bf16 weights vs fp32 on the CPU (one training step and
one evaluation batch each), with the largest score difference and the agreement of the predictions.

The load average before and after is printed: on a 2-core machine shared with other work, fewer
threads can win (a second thread waits for a core that someone else holds).

    python -m bench.bench_threads --model tiny             # seconds
    python -m bench.bench_threads --model smollm2-135m     # the bundled real model (~3 minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.bench_real_step import model_dir, step_time  # noqa: E402
from bench.shapes import fewshot_examples  # noqa: E402
from ia3app.adapters.ia3 import inject  # noqa: E402
from ia3app.backbones.loading import load_model  # noqa: E402
from ia3app.config import RecipeConfig  # noqa: E402
from ia3app.evaluation.scoring import score_choices  # noqa: E402


def serve_time(loaded, handle, examples, names) -> float:
    t = time.perf_counter()
    with torch.inference_mode():
        score_choices(loaded.model, loaded.tokenizer, examples, batch_size=len(examples),
                      adapter_names=names, handle=handle)
    return time.perf_counter() - t


def thread_table(loaded, rows, recipe, serve_rows: int, values: list[int], rounds: int) -> dict:
    handle = inject(loaded.model)
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        handle.add_adapter(f"a{i}", {k: torch.empty(m).uniform_(0.5, 1.5, generator=g) for k, m in handle.shapes().items()})
    big = rows[:serve_rows]
    big_names = [f"a{i % 4}" for i in range(len(big))]
    small, small_names = rows[:2], ["a0", "a0"]
    times: dict[int, dict[str, list[float]]] = {v: {"train": [], "serve": [], "serve_small": []} for v in values}
    serve_time(loaded, handle, small, small_names)  # warm-up
    for _ in range(rounds):
        for v in values:
            torch.set_num_threads(v)
            times[v]["serve"].append(serve_time(loaded, handle, big, big_names))
            times[v]["serve_small"].append(min(serve_time(loaded, handle, small, small_names) for _ in range(3)))
            print(f"threads {v}: serve {times[v]['serve'][-1]:.3f} s, small {times[v]['serve_small'][-1]:.3f} s",
                  file=sys.stderr, flush=True)
    handle.unload(merge=False)
    for _ in range(rounds):
        for v in values:
            torch.set_num_threads(v)
            times[v]["train"].append(step_time(loaded, rows, recipe, True)[0])
            print(f"threads {v}: train step {times[v]['train'][-1]:.3f} s", file=sys.stderr, flush=True)
    return {v: {k: statistics.median(s) for k, s in d.items()} for v, d in times.items()}


def bf16_check(base: str, rows, recipe, eval_rows: int) -> dict:
    """fp32 vs bf16 weights on the CPU: step time, evaluation time, score difference, agreement."""
    out = {}
    scores = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        loaded = load_model(base, device="cpu", dtype=dtype)
        step, losses = step_time(loaded, rows, recipe, True)
        t = time.perf_counter()
        with torch.inference_mode():
            scored = score_choices(loaded.model, loaded.tokenizer, rows[:eval_rows], batch_size=eval_rows)
        out[name] = {"train_step_s": round(step, 4), "eval_batch_s": round(time.perf_counter() - t, 4),
                     "first_loss": round(losses[0], 5)}
        print(f"{name}: {out[name]}", file=sys.stderr, flush=True)
        scores[name] = scored
        del loaded
    diff = max(abs(a - b) for f, h in zip(scores["fp32"], scores["bf16"]) for a, b in zip(f.scores, h.scores))
    agree = sum(f.pred == h.pred for f, h in zip(scores["fp32"], scores["bf16"]))
    out["bf16_over_fp32_step"] = round(out["bf16"]["train_step_s"] / out["fp32"]["train_step_s"], 3)
    out["bf16_over_fp32_eval"] = round(out["bf16"]["eval_batch_s"] / out["fp32"]["eval_batch_s"], 3)
    out["max_score_difference"] = round(diff, 5)
    out["predictions_agree"] = f"{agree}/{len(scores['fp32'])}"
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, mid, smollm2-135m, or a local folder")
    parser.add_argument("--task", default="copa", choices=["copa", "rte"])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timing (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve-rows", type=int, default=16)
    parser.add_argument("--no-bf16", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    base = model_dir(args.model, root)
    loaded = load_model(base, device="cpu")
    rows = fewshot_examples(args.task)
    recipe = RecipeConfig(steps=args.steps, batch_size=8, checkpoint_every=0, grad_accumulation=1)
    values = [int(v) for v in args.threads.split(",")]
    table = thread_table(loaded, rows, recipe, args.serve_rows, values, args.rounds)
    del loaded
    first = values[0]
    out = {
        "bench": "threads",
        "model": args.model,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "interop_threads": torch.get_num_interop_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "threads": {str(v): {k: round(s, 4) for k, s in d.items()} for v, d in table.items()},
        "ratios_vs_first": {str(v): {k: round(table[v][k] / table[first][k], 3) for k in table[v]}
                            for v in values[1:]},
    }
    best_train = min(values, key=lambda v: table[v]["train"])
    out["best"] = {k: min(values, key=lambda v: table[v][k]) for k in ("train", "serve", "serve_small")}
    if not args.no_bf16:
        torch.set_num_threads(best_train)
        out["bf16"] = bf16_check(base, rows, recipe, args.serve_rows)
    out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
