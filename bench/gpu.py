"""The T-Few recipe's step on one GPU with a T0-3B-shaped model: speed, MFU, peak memory.

Random weights of T0-3B's shape (d_model 2048, 24+24 layers, 32 heads, gated d_ff 5120, vocab
32128; 2.85B parameters) built directly on the GPU; (IA)^3 injected (540,672 vectors). Batch 8,
inputs of 256 tokens, 3 answer choices each, the full T-Few loss (LM + UL + LN), the real
``ia3app.train.train`` (Adafactor, schedule, clipping, accelerate's bf16 autocast). Timed over
``--steps`` steps after ``--warmup`` steps. Two precision layouts, same recipe:

- ``bf16-weights``: frozen base weights stored in bf16, vectors fp32, bf16 autocast. Frozen
  weights get no updates, so holding them in bf16 gives the same matmul inputs autocast would
  produce from fp32 copies, without re-casting 2.85B weights every forward. (The primary figure.)
- ``fp32-weights``: fp32 master weights + bf16 autocast, as in a textbook mixed-precision run.

FLOPs per step are measured with torch's FlopCounterMode on one step (matrix products, forward and
backward; frozen weights get no weight-gradient products) and the MFU is against the H100's dense
bf16 peak (989 TFLOP/s). The last stdout line is one JSON object.

    python3 -m bench.gpu                 # on the GPU machine, < 4 minutes including model build
    python3 -m bench.gpu --dry-run       # tiny model on the CPU: checks the whole script quickly
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.shapes import random_t5, random_text, tokenizer
from ia3app.config import RecipeConfig
from ia3app.example import Example
from ia3app.ia3 import inject
from ia3app.losses import tfew_losses
from ia3app.scoring import choice_log_probs
from ia3app.train import make_accelerator, train

H100_BF16_DENSE_PEAK = 989e12


def log(msg: str) -> None:
    print(f"[gpu.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(summary: dict, out_dir: str | None, name: str) -> None:
    """Print the summary as one JSON line (the last stdout line) and save it under out_dir."""
    line = json.dumps(summary)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(line + "\n")
    print(line, flush=True)


def make_examples(n: int, input_tokens: int, seed: int = 0) -> list[Example]:
    """n examples of exactly input_tokens tokens (ByT5: bytes + EOS) with 3 choices."""
    rng = random.Random(seed)
    choices = ("yes", "maybe", "no")
    return [Example(random_text(rng, input_tokens - 1), choices, rng.randrange(3)) for _ in range(n)]


def measure_flops(handle, tok, examples, recipe, device) -> float:
    """FLOPs of one training step's forward + backward, counted by torch."""
    accelerator = make_accelerator(recipe.precision, device)
    labels = torch.tensor([e.label for e in examples], device=device)
    handle.model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        with accelerator.autocast():
            out = choice_log_probs(handle.model, tok, examples, max_length=recipe.max_length)
        loss = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, labels)["total"]
        loss.backward()
    handle.model.zero_grad(set_to_none=True)
    handle.model.eval()
    return float(counter.get_total_flops())


def run_layout(layout: str, args, device: torch.device, model, tok, examples, optimizer: str = "auto") -> dict:
    handle = inject(model)
    recipe = RecipeConfig(
        steps=args.warmup + args.steps,
        batch_size=args.batch,
        warmup_steps=min(60, args.warmup + args.steps),
        max_length=args.input_tokens,
        precision="bf16" if device.type == "cuda" or args.dry_run else "fp32",
        checkpoint_every=0,
    )
    flops = measure_flops(handle, tok, examples[: args.batch], recipe, device)
    log(f"{layout}: {flops / 1e12:.2f} TFLOP per step (measured); training {recipe.steps} steps")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    records: list[dict] = []
    result = train(handle, tok, examples, recipe, progress=records.append, optimizer=optimizer)
    if device.type == "cuda":
        torch.cuda.synchronize()
    timed = records[args.warmup :]
    base = records[args.warmup - 1]["elapsed_s"] if args.warmup else 0.0
    step_s = (timed[-1]["elapsed_s"] - base) / len(timed)
    tokens_per_step = result.tokens_processed / recipe.steps
    out = {
        "layout": layout,
        "optimizer": optimizer,
        "step_s": round(step_s, 4),
        "tokens_per_s": round(tokens_per_step / step_s),
        "examples_per_s": round(args.batch / step_s, 1),
        "tflop_per_step": round(flops / 1e12, 3),
        "mfu": round(flops / step_s / H100_BF16_DENSE_PEAK, 4),
        "projected_1000_steps_s": round(1000 * step_s, 1),
        "final_loss": round(result.losses["total"], 4),
    }
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        out["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved() / 1e9, 2)
    handle.unload(merge=False)  # the next layout injects afresh into the same base model
    log(f"{layout}: {out}")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, 2+1 steps")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-tokens", type=int, default=256)
    parser.add_argument("--layouts", default="bf16-weights,fp32-weights")
    parser.add_argument(
        "--optimizers", default="auto",
        help="comma list: auto (VectorAdafactor for the vectors), transformers (its Adafactor, per tensor)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu.json (default: $OUT)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.dry_run:
        shape, device = "tiny", torch.device("cpu")
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --dry-run on a CPU")
        shape, device = "t0-3b", torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers (outside autocast) on tensor cores
    layouts = [x for x in args.layouts.split(",") if x]
    # fp32 first (it needs the fp32 copy), then cast the same weights to bf16 in place.
    order = [x for x in ("fp32-weights", "bf16-weights") if x in layouts]
    log(f"building {shape} on {device}")
    model = random_t5(shape, device=str(device), dtype=torch.float32)
    n_params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - started
    log(f"built {n_params / 1e9:.2f}B parameters in {build_s:.1f}s")
    tok = tokenizer()
    examples = make_examples(max(32, args.batch), args.input_tokens)
    results = {}
    for layout in order:
        if layout == "bf16-weights":
            model.to(torch.bfloat16)
        for optimizer in [x for x in args.optimizers.split(",") if x]:
            name = layout if optimizer == "auto" else f"{layout}/{optimizer}"
            results[name] = run_layout(layout, args, device, model, tok, examples, optimizer)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    primary = results.get("bf16-weights") or next(iter(results.values()))
    summary = {
        "bench": "gpu",
        "dry_run": args.dry_run,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": shape,
        "parameters": n_params,
        "batch": args.batch,
        "input_tokens": args.input_tokens,
        "choices": 3,
        "timed_steps": args.steps,
        "build_s": round(build_s, 1),
        **{k: v for k, v in primary.items() if k != "layout"},
        "primary_layout": primary["layout"],
        "layouts": results,
        "targets": {"projected_1000_steps_s": 180, "peak_gb": 24},
        "total_s": round(time.perf_counter() - started, 1),
    }
    emit(summary, args.out, "gpu.json")
    return summary


if __name__ == "__main__":
    main()
