"""Rank classification: encoder reuse vs re-encoding the input once per answer choice.

Same model (T5-small-shaped, random weights: d_model 512, 6+6 layers, 8 heads, gated d_ff 2048,
vocab 32128), same examples, same scores (checked); only whether the encoder runs once per
example or once per choice differs. The two variants alternate, repeated; the median is kept.

    python -m bench.bench_scoring                     # default: ~1-2 minutes on a 2-core CPU
    python -m bench.bench_scoring --shape tiny --examples 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch

from bench.shapes import random_t5, random_text, tokenizer
from ia3app.example import Example
from ia3app.evaluation.scoring import score_choices


def make_examples(n: int, input_bytes: int, choices: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    return [
        Example(random_text(rng, input_bytes), tuple(random_text(rng, rng.randint(3, 12)) for _ in range(choices)), 0)
        for _ in range(n)
    ]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="t5-small", choices=["t5-small", "tiny"])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--choices", type=int, default=3)
    parser.add_argument("--input-bytes", type=int, default=200, help="input length (ByT5: 1 token per byte)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    model = random_t5(args.shape)
    tok = tokenizer()
    examples = make_examples(args.examples, args.input_bytes, args.choices)
    kw = dict(batch_size=args.batch_size, max_length=256)
    # Warm-up, and the two paths must agree.
    reuse = score_choices(model, tok, examples[: args.batch_size], reuse_encoder=True, **kw)
    again = score_choices(model, tok, examples[: args.batch_size], reuse_encoder=False, **kw)
    diff = max(abs(a - b) for r, s in zip(reuse, again) for a, b in zip(r.scores, s.scores))
    assert diff < 1e-4, f"encoder reuse changed the scores by {diff}"

    times = {"reuse": [], "reencode": []}
    for _ in range(args.repeats):
        for name, flag in (("reuse", True), ("reencode", False)):
            start = time.perf_counter()
            score_choices(model, tok, examples, reuse_encoder=flag, **kw)
            times[name].append((time.perf_counter() - start) / len(examples))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "bench": "scoring",
        "shape": args.shape,
        "parameters": sum(p.numel() for p in model.parameters()),
        "examples": args.examples,
        "choices": args.choices,
        "input_tokens": args.input_bytes + 1,
        "ms_per_example_reuse": round(med["reuse"] * 1e3, 2),
        "ms_per_example_reencode": round(med["reencode"] * 1e3, 2),
        "speedup": round(med["reencode"] / med["reuse"], 2),
        "max_score_diff": diff,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
