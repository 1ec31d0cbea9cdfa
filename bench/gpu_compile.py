"""Is the T0-3B recipe step on one GPU bound by per-op launch overhead? Eager vs torch.compile.

bench/gpu.py measured 0.35 s per step (4.5 % MFU) on an H100 for batch 8 × 256 tokens: the
matrix products are small (2,048 tokens × 2,048) and the decoder runs 24 rows of a few tokens,
so thousands of small kernels are launched from Python each step. This script runs the same
recipe step (ia3app.recipe.train.train, bf16 weights, bf16 autocast, T-Few losses) with the encoder
and decoder stacks compiled in place (``nn.Module.compile``), and reports the step time, the
compile time (first steps) and the projected 1,000-step time beside an eager run, in one run.

    python3 -m bench.gpu_compile              # on the GPU machine
    python3 -m bench.gpu_compile --dry-run    # tiny model on the CPU, aot_eager backend
"""

from __future__ import annotations

import argparse
import os

import torch

from bench.gpu import H100_BF16_DENSE_PEAK, emit, log, make_examples
from bench.shapes import random_t5, tokenizer
from ia3app.config import RecipeConfig
from ia3app.adapters.ia3 import inject
from ia3app.recipe.train import train

EAGER_TFLOP_PER_STEP = 15.53  # measured by bench/gpu.py (FlopCounterMode) for this shape and batch


def timed_run(model, tok, examples, args, compiled: bool, device: torch.device) -> dict:
    handle = inject(model)
    if compiled:
        backend = "inductor" if device.type == "cuda" else "aot_eager"
        model.encoder.compile(dynamic=False, backend=backend)
        model.decoder.compile(dynamic=False, backend=backend)
    recipe = RecipeConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch,
        warmup_steps=min(60, args.warmup + args.steps),
        max_length=args.input_tokens,
        precision="bf16",
        checkpoint_every=0,
    )
    records: list[dict] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(handle, tok, examples, recipe, progress=lambda e: records.append(e.to_dict()))
    first_steps_s = records[args.warmup - 1]["elapsed_s"]
    step_s = (records[-1]["elapsed_s"] - first_steps_s) / args.steps
    out = {
        "compiled": compiled,
        "step_s": round(step_s, 4),
        "warmup_s": round(first_steps_s, 1),
        "projected_1000_steps_s": round(first_steps_s + (1000 - args.warmup) * step_s, 1),
        "mfu": round(EAGER_TFLOP_PER_STEP * 1e12 / step_s / H100_BF16_DENSE_PEAK, 4),
    }
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
    for stack in (model.encoder, model.decoder):
        stack._compiled_call_impl = None  # back to eager for the next run
    handle.unload(merge=False)
    log(str(out))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-tokens", type=int, default=256)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args(argv)
    if args.dry_run:
        shape, device, args.steps, args.warmup, args.input_tokens = "tiny", torch.device("cpu"), 2, 1, 32
    else:
        shape, device = "t0-3b", torch.device("cuda")
    model = random_t5(shape, device=str(device), dtype=torch.bfloat16)
    tok = tokenizer()
    examples = make_examples(max(32, args.batch), args.input_tokens)
    results = {"eager": timed_run(model, tok, examples, args, False, device)}
    results["compiled"] = timed_run(model, tok, examples, args, True, device)
    summary = {
        "bench": "gpu_compile",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": shape,
        **results,
        "speedup": round(results["eager"]["step_s"] / results["compiled"]["step_s"], 2),
    }
    emit(summary, args.out, "gpu_compile.json")
    return summary


if __name__ == "__main__":
    main()
