"""The recipe's step before and after 'tokenize once, no host syncs', in one run, on this CPU.

T5-small shape (random weights), the RTE few-shot rows (examples/rte_32shot_seed0.csv, a T0-style
prompt, 2 choices) through a SentencePiece-like subword tokenizer trained here on the example CSVs
(realistic lengths: ~74 input tokens on average, up to 166). Batch 8, the full T-Few loss,
VectorAdafactor, clipping, the schedule.

- before: the per-step path train() used until now: every micro-batch tokenized, padded and
  copied at each step (scoring.choice_log_probs), token counts and four losses read back with
  ``int()`` / ``.item()``;
- after: ``ia3app.recipe.train.train`` as a job runs it: inputs tokenized once, batches gathered on the
  device, losses read back only when progress is handed out.

Both start from the same vectors and draw the same batches; the script checks they compute the
same losses. Rounds alternate (before, after, before, after, ...) and medians are compared.

    python -m bench.bench_step                     # ~3 minutes on a quiet 2-core CPU
    python -m bench.bench_step --shape tiny --steps 3 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import get_linear_schedule_with_warmup

from bench.shapes import fewshot_examples, random_t5, sentencepiece_like_tokenizer
from ia3app.config import RecipeConfig
from ia3app.adapters.ia3 import inject
from ia3app.recipe.losses import tfew_losses
from ia3app.evaluation.scoring import choice_log_probs
from ia3app.recipe.train import EpochSampler, make_optimizer, train


def before(model, tok, examples, recipe: RecipeConfig) -> tuple[float, list[float]]:
    """The per-step path: (seconds per step after the first, losses)."""
    handle = inject(model)
    params = handle.trainable_parameters()
    opt = make_optimizer(params, recipe)
    sched = get_linear_schedule_with_warmup(opt, recipe.warmup(), recipe.steps)
    sampler = EpochSampler(len(examples), recipe.seed)
    torch.manual_seed(recipe.seed)
    micro = recipe.batch_size // max(1, recipe.grad_accumulation)
    losses, stamps = [], []
    model.train()
    for _ in range(recipe.steps):
        batch = sampler.next_batch(recipe.batch_size)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for begin in range(0, len(batch), micro):
            chunk = [examples[i] for i in batch[begin : begin + micro]]
            labels = torch.tensor([e.label for e in chunk])
            out = choice_log_probs(model, tok, chunk, max_length=recipe.max_length)
            parts = tfew_losses(out.token_logprobs, out.token_mask, out.choice_index, labels)
            share = len(chunk) / len(batch)
            (parts["total"] * share).backward()
            for key in ("lm", "ul", "ln", "total"):  # what the old loop read back, every micro-batch
                value = parts[key].item() * share
            total += value
        torch.nn.utils.clip_grad_norm_(params, recipe.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(total)
        stamps.append(time.perf_counter())
    model.eval()
    handle.unload(merge=False)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1), losses


def after(model, tok, examples, recipe: RecipeConfig) -> tuple[float, list[float]]:
    handle = inject(model)
    result = train(handle, tok, examples, recipe, progress_interval_s=0.25)
    handle.unload(merge=False)
    h = result.history
    return (h[-1]["elapsed_s"] - h[0]["elapsed_s"]) / (len(h) - 1), [r["loss"] for r in h]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="t5-small", choices=["t5-small", "tiny"])
    parser.add_argument("--steps", type=int, default=6, help="steps per round (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = random_t5(args.shape)
    tok = sentencepiece_like_tokenizer()
    examples = fewshot_examples("rte")
    lengths = [len(tok(e.input)["input_ids"]) for e in examples]
    recipe = RecipeConfig(steps=args.steps, batch_size=args.batch, checkpoint_every=0, grad_accumulation=1)
    times = {"before": [], "after": []}
    diff = 0.0
    for _ in range(args.rounds):
        b, b_losses = before(model, tok, examples, recipe)
        a, a_losses = after(model, tok, examples, recipe)
        times["before"].append(b)
        times["after"].append(a)
        diff = max(diff, max(abs(x - y) / max(abs(x), 1e-9) for x, y in zip(a_losses, b_losses)))
    before_s, after_s = statistics.median(times["before"]), statistics.median(times["after"])
    out = {
        "bench": "step",
        "shape": args.shape,
        "parameters": sum(p.numel() for p in model.parameters()),
        "tokenizer": f"BPE + Metaspace, {tok.vocab_size} pieces, trained on examples/*.csv",
        "input_tokens_mean": round(statistics.mean(lengths), 1),
        "input_tokens_max": max(lengths),
        "batch": args.batch,
        "choices": 2,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "before_step_s": round(before_s, 4),
        "after_step_s": round(after_s, 4),
        "speedup": round(before_s / after_s, 3),
        "max_relative_loss_difference": diff,
        "projected_1000_steps_min_after": round(after_s * 1000 / 60, 1),
        "projected_1000_steps_min_before": round(before_s * 1000 / 60, 1),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
