"""The bundled real model on this CPU: each prompt read once (shared prefix) vs once per answer choice, and
the tokens a batch's prompts start with read once per batch (common prefix).

Default model: the bundled SmolLM2-135M-Instruct (``smollm2-135m``, converted once, see
ia3app/backbones/bundled.py); ``--model tiny`` / ``--model mid`` build a random Llama (ByT5
byte tokenizer) of ~0.1 M / ~30 M parameters instead; any other value is a local folder.
Rows: the COPA (default) or RTE few-shot CSVs in examples/ through a T0-style prompt, 2 choices,
wrapped in the model's chat template as the built-in templates do (``--no-chat``: plain prompts).
Every figure is measured side by side in one run (rounds alternate the layouts, medians), in three
layouts: old = one row per (example, choice), the prompt repeated (``shared_prefix=False``); new =
each prompt once, its choices in slots (``common_prefix=False``); prefix = new, and the tokens all
prompts of a batch start with (the chat template's system block, in-context prompts' first
demonstrations) once per batch (the default). Speedups are over old:

1. training step (T-Few losses, VectorAdafactor, batch 8); the losses of all three are checked
   equal; projection of 1,000 steps (target: >= 2x the old step rate);
2. evaluation rows/s (score_choices, batch 16);
3. in-context rows/s: long prompts built as ia3app.evaluation.compare does (build_prompts with as
   many demonstrations as fit, up to --icl-tokens, then wrapped), batch 4 (target: >= 2x for 2-choice tasks);
4. serving rows/s through ia3app.serving.engine.ServingEngine with 64 adapters / 1 adapter, the same
   rows and clients (target >= 0.9x);
5. with ``--threads 1,2``: the training step and one mixed-adapter serving batch at each
   torch.set_num_threads value (the measurement a CPU thread policy needs; none is set yet).

    python -m bench.bench_real_step                       # the real model (~10+ minutes on 2 cores)
    python -m bench.bench_real_step --model tiny --steps 3 --rounds 1   # a smoke run, seconds
    python -m bench.bench_real_step --model mid --threads 1,2
    python -m bench.bench_real_step --no-serving          # training, evaluation and in-context only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.bench_serving import TEMPLATE, closed_loop, workload  # noqa: E402
from bench.shapes import fewshot_examples  # noqa: E402
from ia3app.adapters.files import save_adapter  # noqa: E402
from ia3app.adapters.ia3 import inject  # noqa: E402
from ia3app.backbones.loading import load_model  # noqa: E402
from ia3app.backbones.tiny import make_tiny_model  # noqa: E402
from ia3app.config import RecipeConfig  # noqa: E402
from ia3app.evaluation.in_context import IclConfig, build_prompts, input_limit  # noqa: E402
from ia3app.evaluation.scoring import common_prefix_length, decoder_input_ids, score_choices  # noqa: E402
from ia3app.recipe.train import train  # noqa: E402
from ia3app.serving.engine import ServingEngine  # noqa: E402
from ia3app.templates.chat import overhead_tokens, wrap_examples  # noqa: E402

RANDOM = {  # random Llamas with the byte tokenizer (vocabulary 384)
    "tiny": dict(d_model=64, layers=2, heads=4, d_ff=128),
    "mid": dict(d_model=512, layers=8, heads=8, d_ff=1376),  # ~25 M parameters
}


def model_dir(name: str, root: Path) -> str:
    if name in RANDOM:
        return str(make_tiny_model("llama", root / name, **RANDOM[name]))
    from ia3app.backbones.bundled import resolve

    return resolve(name, progress=lambda m: print(m, file=sys.stderr))


LAYOUTS = {"old": dict(shared_prefix=False, common_prefix=False), "new": dict(shared_prefix=True, common_prefix=False),
           "prefix": dict(shared_prefix=True, common_prefix=True)}
"""The three layouts compared: keyword arguments of train / score_choices."""


def step_time(loaded, rows, recipe: RecipeConfig, layout: dict) -> tuple[float, list[float]]:
    """Seconds per training step (after the first) and the losses."""
    handle = inject(loaded.model)
    try:
        result = train(handle, loaded.tokenizer, rows, recipe, progress_interval_s=0, **layout)
    finally:
        handle.unload(merge=False)
    h = result.history
    return (h[-1]["elapsed_s"] - h[0]["elapsed_s"]) / (len(h) - 1), [r["loss"] for r in h]


def rows_per_s(loaded, examples, layout: dict, batch_size: int, max_length: int = 256) -> float:
    t = time.perf_counter()
    score_choices(loaded.model, loaded.tokenizer, examples, batch_size=batch_size, max_length=max_length, **layout)
    return len(examples) / (time.perf_counter() - t)


def mean_common_prefix(tokenizer, examples, batch_size: int, max_length: int) -> float:
    """Mean common-prefix tokens of score_choices' batches (sorted by input length, as it batches them)."""
    ordered = sorted(examples, key=lambda e: len(e.input))
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    return statistics.mean(common_prefix_length(decoder_input_ids(tokenizer, b, max_length)) for b in batches)


def adapters(loaded, base: str, root: Path, n: int) -> list[Path]:
    handle = inject(loaded.model)
    folders = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        handle.load_vectors({k: torch.empty(m).uniform_(0.5, 1.5, generator=g) for k, m in handle.shapes().items()})
        folders.append(save_adapter(handle, root / f"adapter{i}", base_model=base,
                                    extra={"template": TEMPLATE.to_dict(), "choices": TEMPLATE.choices,
                                           "recipe": {"max_length": 256}}))
    handle.unload(merge=False)
    return folders


def thread_rows(loaded, rows, recipe, serve_examples, values: list[int]) -> dict:
    """Training step and one 16-row, 4-adapter mixed serving batch at each thread count, alternating."""
    handle = inject(loaded.model)
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        handle.add_adapter(f"a{i}", {k: torch.empty(m).uniform_(0.5, 1.5, generator=g) for k, m in handle.shapes().items()})
    names = [f"a{i % 4}" for i in range(len(serve_examples))]
    before = torch.get_num_threads()
    serve: dict[int, list[float]] = {v: [] for v in values}
    for _ in range(3):
        for v in values:
            torch.set_num_threads(v)
            t = time.perf_counter()
            score_choices(loaded.model, loaded.tokenizer, serve_examples, batch_size=len(serve_examples),
                          adapter_names=names, handle=handle)
            serve[v].append(time.perf_counter() - t)
    handle.unload(merge=False)
    steps: dict[int, list[float]] = {v: [] for v in values}
    for _ in range(2):
        for v in values:
            torch.set_num_threads(v)
            steps[v].append(step_time(loaded, rows, recipe, LAYOUTS["prefix"])[0])
    torch.set_num_threads(before)
    return {f"threads_{v}": {"train_step_s": round(statistics.median(steps[v]), 4),
                             "serve_batch_s": round(statistics.median(serve[v]), 4)} for v in values}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny, mid, or a local folder")
    parser.add_argument("--task", default="copa", choices=["copa", "rte"])
    parser.add_argument("--steps", type=int, default=5, help="training steps per round (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-rows", type=int, default=32)
    parser.add_argument("--icl-rows", type=int, default=8)
    parser.add_argument("--icl-tokens", type=int, default=1024, help="longest in-context prompt")
    parser.add_argument("--serve-requests", type=int, default=24)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--threads", default="", help="also compare torch thread counts, e.g. 1,2")
    parser.add_argument("--no-chat", dest="chat", action="store_false",
                        help="plain prompts (default: wrapped in the model's chat template, as the built-ins do)")
    parser.add_argument("--no-serving", dest="serving", action="store_false", help="skip the serving comparison")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-real-step-"))
    base = model_dir(args.model, root)
    loaded = load_model(base, device="cpu")
    params = sum(p.numel() for p in loaded.model.parameters())
    plain = fewshot_examples(args.task)
    rows = wrap_examples(loaded.tokenizer, plain, args.chat)
    recipe = RecipeConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=0, grad_accumulation=1)
    eval_rows = (rows * (1 + args.eval_rows // len(rows)))[: args.eval_rows]
    cfg = IclConfig()
    limit = min(args.icl_tokens, input_limit(loaded.model.config, loaded.tokenizer, cap=args.icl_tokens))
    wrap = overhead_tokens(loaded.tokenizer, args.chat)
    icl = build_prompts(plain[:16], plain[16 : 16 + args.icl_rows], loaded.tokenizer, limit=limit - wrap,
                        decoder_only=True, config=cfg)
    icl_examples = wrap_examples(loaded.tokenizer, icl.examples, args.chat)  # as ia3app.evaluation.compare
    icl_tokens = [len(loaded.tokenizer(e.input)["input_ids"]) for e in icl_examples]

    load_start = os.getloadavg()[0]
    timing: dict[str, list[float]] = {f"{part}_{key}": [] for part in ("step", "eval", "icl") for key in LAYOUTS}
    loss_diff = 0.0
    for rnd in range(args.rounds):
        order = list(LAYOUTS) if rnd % 2 == 0 else list(reversed(LAYOUTS))
        losses = {}
        for key in order:
            seconds, losses[key] = step_time(loaded, rows, recipe, LAYOUTS[key])
            timing[f"step_{key}"].append(seconds)
        for key in ("new", "prefix"):
            loss_diff = max(loss_diff, max(abs(a - b) / max(abs(b), 1e-9) for a, b in zip(losses[key], losses["old"])))
        for key in order:
            timing[f"eval_{key}"].append(rows_per_s(loaded, eval_rows, LAYOUTS[key], 16))
            timing[f"icl_{key}"].append(rows_per_s(loaded, icl_examples, LAYOUTS[key], 4, max_length=limit))
        print(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in timing.items()), file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in timing.items()}

    out = {
        "bench": "real_step",
        "model": args.model,
        "parameters": params,
        "task": args.task,
        "chat": args.chat,
        "threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average": os.getloadavg()[0],
        "common_prefix_tokens": {  # what the prefix layout reads once per batch
            "train_all_rows": common_prefix_length(decoder_input_ids(loaded.tokenizer, rows, recipe.max_length)),
            "eval_batch_mean": round(mean_common_prefix(loaded.tokenizer, eval_rows, 16, 256), 1),
            "icl_batch_mean": round(mean_common_prefix(loaded.tokenizer, icl_examples, 4, limit), 1)},
        "train_input_tokens_mean": round(statistics.mean(
            len(ids) for ids in decoder_input_ids(loaded.tokenizer, rows, recipe.max_length)), 1),
        "max_relative_loss_difference": loss_diff,
        "icl_prompt_tokens_mean": round(statistics.mean(icl_tokens), 1),
    }
    for part, unit in (("step", "train_step_s"), ("eval", "eval_rows_per_s"), ("icl", "icl_rows_per_s")):
        for key in LAYOUTS:
            out[f"{unit}_{key}"] = round(med[f"{part}_{key}"], 4)
        for key in ("new", "prefix"):
            ratio = med[f"{part}_old"] / med[f"{part}_{key}"] if part == "step" else med[f"{part}_{key}"] / med[f"{part}_old"]
            out[f"{part}_speedup_{key}"] = round(ratio, 3)
    for key in LAYOUTS:
        out[f"projected_1000_steps_min_{key}"] = round(med[f"step_{key}"] * 1000 / 60, 1)
    out["targets"] = {"step_speedup": ">= 2", "icl_speedup": ">= 2 (2 choices)", "serve_64_over_1": ">= 0.9"}

    if args.serving:
        folders = adapters(loaded, base, root, 64)
        engine = ServingEngine(device="cpu", dtype="fp32", max_batch_rows=32)
        one = workload(args.serve_requests, folders[:1], seed=1)
        many = workload(args.serve_requests, folders, seed=1)  # the same rows, 64 adapters
        for f in folders:  # every adapter resident before timing
            engine.predict(f, one[0][1][:1])
        serve = {"1": [], "64": []}
        for rnd in range(args.rounds):
            for name, reqs in (("1", one), ("64", many)) if rnd % 2 == 0 else (("64", many), ("1", one)):
                serve[name].append(closed_loop(engine.predict, reqs, args.clients)[0])
        engine.close()
        serve_med = {k: statistics.median(v) for k, v in serve.items()}
        out.update(serve_rows_per_s_1_adapter=round(serve_med["1"], 2),
                   serve_rows_per_s_64_adapters=round(serve_med["64"], 2),
                   serve_64_over_1=round(serve_med["64"] / serve_med["1"], 3))
    if args.threads:
        values = [int(v) for v in args.threads.split(",")]
        serve_examples = [e for e in eval_rows[:16]]
        out["thread_counts"] = thread_rows(loaded, rows, recipe, serve_examples, values)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
