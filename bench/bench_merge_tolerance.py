"""Merged vs unmerged scores: how far apart the serving engine's two paths are, in fp32 and bf16.

The serving engine scores a batch either on merged weights (one adapter folded in: the base model's
cost) or unmerged (each row gathers its adapter's vectors from the bank and the layers multiply).
Both compute the same function; they round differently. For each tiny model (T0-shaped and
Llama-shaped, random weights) and dtype, random adapters (vectors uniform in [0.5, 1.5]) score the
COPA and RTE rows both ways; printed: the largest |score difference| (scores are mean log-probabilities
per answer token, as ``score_choices`` returns), the largest |probability difference| and how many
predictions agree. ``ia3app.serving.engine.MERGED_SCORE_TOLERANCE`` is set from these figures and
tests/test_serving.py checks it.

    python -m bench.bench_merge_tolerance
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.shapes import fewshot_examples  # noqa: E402
from ia3app.adapters.ia3 import inject  # noqa: E402
from ia3app.backbones.loading import load_model  # noqa: E402
from ia3app.backbones.tiny import make_tiny_model  # noqa: E402
from ia3app.evaluation.scoring import score_choices  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def merged_vs_unmerged(model_dir: str, dtype: torch.dtype, examples, adapters: int = 3) -> dict:
    """Largest differences between the mixed (unmerged) and merged scores of the same rows."""
    loaded = load_model(model_dir, device="cpu", dtype=dtype)
    handle = inject(loaded.model)
    score_diff = prob_diff = 0.0
    agree = total = 0
    for seed in range(adapters):
        g = torch.Generator().manual_seed(seed)
        vectors = {k: torch.empty(n).uniform_(0.5, 1.5, generator=g) for k, n in handle.shapes().items()}
        handle.add_adapter("a", vectors)
        with torch.inference_mode():
            mixed = score_choices(loaded.model, loaded.tokenizer, examples, adapter_names=["a"] * len(examples),
                                  handle=handle)
            handle.load_vectors(vectors)
            handle.merge()
            merged = score_choices(loaded.model, loaded.tokenizer, examples)
            handle.restore()
        for m, u in zip(merged, mixed):
            score_diff = max(score_diff, max(abs(a - b) for a, b in zip(m.scores, u.scores)))
            prob_diff = max(prob_diff, max(abs(a - b) for a, b in zip(m.probs, u.probs)))
            agree += m.pred == u.pred
            total += 1
    return {"max_score_difference": score_diff, "max_probability_difference": prob_diff,
            "predictions_agree": f"{agree}/{total}"}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="t0,llama")
    parser.add_argument("--adapters", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-merge-tol-"))
    examples = fewshot_examples("copa") + fewshot_examples("rte")
    out = {"bench": "merge_tolerance", "torch": torch.__version__, "rows": len(examples), "results": {}}
    for kind in args.kinds.split(","):
        folder = str(make_tiny_model(kind, root / kind))
        for name, dtype in DTYPES.items():
            out["results"][f"{kind}/{name}"] = r = merged_vs_unmerged(folder, dtype, examples, args.adapters)
            print(kind, name, r, file=sys.stderr, flush=True)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
