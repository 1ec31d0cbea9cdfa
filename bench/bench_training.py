"""(IA)^3 training step vs full fine-tuning step, and the 1,000-step recipe's time, on this CPU.

Model: T5-small-shaped, random weights (d_model 512, 6+6 layers, 8 heads, gated d_ff 2048,
vocab 32128). Batch 8, T-Few losses, Adafactor, clipping 1.0 — the same step code for both:
- ia3: only the (IA)^3 vectors require gradients (base weights frozen);
- full: every weight requires gradients and Adafactor keeps state for all of them.
Each variant runs in its own child process, so its peak resident memory (ru_maxrss) is its own;
"training memory" is peak RSS minus the RSS right after the model was built. Step times are
medians after one warm-up step. Then the real train() runs N recipe steps with the ia3 variant
and the 1,000-step time is projected from them (labelled as a projection).

    python -m bench.bench_training                  # default: a few minutes on a 2-core CPU
    python -m bench.bench_training --shape tiny --steps 2 --recipe-steps 2
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time

import torch
from transformers.optimization import Adafactor

from bench.shapes import random_t5, random_text, tokenizer
from ia3app.config import RecipeConfig
from ia3app.errors import Cancelled
from ia3app.example import Example
from ia3app.adapters.ia3 import inject
from ia3app.recipe.losses import tfew_losses
from ia3app.evaluation.scoring import choice_log_probs
from ia3app.recipe.train import train


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def make_examples(n: int, input_bytes: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    choices = ("yes", "maybe", "no")
    return [Example(random_text(rng, input_bytes), choices, rng.randrange(3)) for _ in range(n)]


def child(variant: str, shape: str, steps: int, batch: int, input_bytes: int) -> dict:
    """One variant's step time and memory, measured in this (fresh) process."""
    model = random_t5(shape)
    tok = tokenizer()
    handle = inject(model)
    if variant == "full":
        for p in model.parameters():
            p.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    examples = make_examples(batch, input_bytes)
    labels = torch.tensor([e.label for e in examples])
    optimizer = Adafactor(params, lr=3e-3, scale_parameter=True, relative_step=False, warmup_init=False)
    base_rss = rss_mb()
    model.train()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        out = choice_log_probs(model, tok, examples, max_length=256)
        loss = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, labels)["total"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if i:  # the first step warms up (allocations, optimizer state)
            times.append(time.perf_counter() - start)
    return {
        "variant": variant,
        "trainable": sum(p.numel() for p in params),
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_s": statistics.median(times),
        "rss_after_build_mb": round(base_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "train_mem_mb": round(peak_rss_mb() - base_rss, 1),
        "added_vectors": handle.num_added_parameters(),
    }


def run_child(args, variant: str) -> dict:
    cmd = [sys.executable, "-m", "bench.bench_training", "--child", variant, "--shape", args.shape,
           "--steps", str(args.steps), "--batch", str(args.batch), "--input-bytes", str(args.input_bytes)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def recipe_projection(args) -> dict:
    """The real train() for N steps of the recipe (ia3), projected to 1,000 steps."""
    model = random_t5(args.shape)
    handle = inject(model)
    examples = make_examples(32, args.input_bytes, seed=1)
    recipe = RecipeConfig(steps=1000, checkpoint_every=0)
    records: list[dict] = []
    calls = iter(range(10**9))
    try:  # stop after N + 1 steps: the first one warms up
        train(handle, tokenizer(), examples, recipe, progress=lambda e: records.append(e.to_dict()),
              should_stop=lambda: next(calls) >= args.recipe_steps + 1)
    except Cancelled:
        pass
    step_times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(records, records[1:])]  # drop step 1
    per_step = statistics.median(step_times)
    return {"recipe_steps_measured": len(step_times), "recipe_step_s": round(per_step, 3),
            "projected_1000_steps_min": round(per_step * 1000 / 60, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="t5-small", choices=["t5-small", "tiny"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after 1 warm-up)")
    parser.add_argument("--recipe-steps", type=int, default=3, help="timed steps of the real train()")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-bytes", type=int, default=100, help="input tokens (ByT5: 1 per byte)")
    parser.add_argument("--child", choices=["ia3", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.shape, args.steps, args.batch, args.input_bytes)))
        return {}

    ia3 = run_child(args, "ia3")
    full = run_child(args, "full")
    result = {
        "bench": "training",
        "shape": args.shape,
        "parameters": ia3["parameters"],
        "ia3_trainable": ia3["trainable"],
        "batch": args.batch,
        "input_tokens": args.input_bytes + 1,
        "ia3_step_s": round(ia3["step_s"], 3),
        "full_step_s": round(full["step_s"], 3),
        "time_ratio_full_over_ia3": round(full["step_s"] / ia3["step_s"], 2),
        "ia3_train_mem_mb": ia3["train_mem_mb"],
        "full_train_mem_mb": full["train_mem_mb"],
        "mem_ratio_full_over_ia3": round(full["train_mem_mb"] / max(ia3["train_mem_mb"], 1e-9), 2),
        "ia3_peak_rss_mb": ia3["peak_rss_mb"],
        "full_peak_rss_mb": full["peak_rss_mb"],
        "peak_rss_ratio": round(full["peak_rss_mb"] / ia3["peak_rss_mb"], 2),
        **recipe_projection(args),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
