"""T-Few (merged adapter) vs in-context learning with 16 and 32 demonstrations: latency per prediction.

Same backbone, same queries, same rank classification; only the prompt differs. Backbones: a tiny
T0-shaped model and a T5-small-shaped one (d_model 512, 6+6 layers, gated FFN 2048; ~56M
parameters with the byte-level tokenizer's small vocabulary), random weights (latency does not
depend on them). Demonstrations come from sst2_16shot_seed0.csv, queries from
sst2_16shot_seed42.csv (examples/). Note the ByT5 byte-level tokenizer makes every
prompt ~4x longer in tokens than a SentencePiece T0 tokenizer would; token counts are printed.

    python -m bench.bench_icl                 # default run (2 queries), ~3 min on a 2-core CPU
    python -m bench.bench_icl --queries 8      # the run recorded in bench/RESULTS.md (~12 min)
    python -m bench.bench_icl --queries 4 --sizes tiny
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ia3app.tables import load_csv  # noqa: E402
from ia3app.evaluation.compare import evaluate_methods  # noqa: E402
from ia3app.adapters.ia3 import inject  # noqa: E402
from ia3app.evaluation.in_context import IclConfig  # noqa: E402
from ia3app.backbones.loading import load_model  # noqa: E402
from ia3app.templates.library import builtin  # noqa: E402
from ia3app.templates.rendering import render_all  # noqa: E402
from ia3app.backbones.tiny import make_tiny_model  # noqa: E402

FEWSHOT = Path(__file__).resolve().parents[1] / "examples"
SIZES = {
    "tiny": dict(d_model=64, layers=2, heads=4, d_ff=128),
    "t5-small": dict(d_model=512, layers=6, heads=8, d_ff=2048),
}


def examples(name: str):
    table = load_csv(FEWSHOT / name)
    spec = builtin("sentiment", label_values=sorted({r["label"] for r in table.rows}), text="sentence")
    return render_all(spec, table.rows)


def run(size: str, queries: int, shots: list[int], batch_size: int) -> list[dict]:
    train = examples("sst2_16shot_seed0.csv")
    held = examples("sst2_16shot_seed42.csv")[:queries]
    with tempfile.TemporaryDirectory() as tmp:
        loaded = load_model(str(make_tiny_model("t0", tmp, **SIZES[size])), device="cpu")
    handle = inject(loaded.model)
    g = torch.Generator().manual_seed(0)
    handle.load_vectors({k: 1 + 0.1 * torch.randn(v.shape, generator=g) for k, v in handle.vectors().items()})
    common = dict(batch_size=batch_size, max_length=256)
    rows = []
    # One warm-up call (T-Few's) takes the process's one-off costs; an in-context warm-up would
    # cost as much as a measured query (tens of seconds on the T5-small shape), so none is run.
    tfew = evaluate_methods(loaded, handle, train, held, methods=["t-few"], warmup=True, **common)["methods"]["t-few"]
    rows.append({"method": "t-few (merged)", **tfew})
    for k in shots:
        icl = evaluate_methods(loaded, handle, train, held, methods=["in-context"], icl=IclConfig(shots=k), warmup=False,
                               **common)
        rows.append({"method": f"in-context k={k}", **icl["methods"]["in-context"]})
    print(f"\n{size}: {loaded.num_parameters / 1e6:.1f}M parameters, {len(held)} queries, batch {batch_size}")
    print(f"{'method':<18}{'ms/pred':>10}{'tokens':>9}{'FLOPs/pred':>12}{'vs t-few':>10}")
    for r in rows:
        ratio = r["latency_s"] / tfew["latency_s"]
        r["ratio"] = ratio
        print(f"{r['method']:<18}{1000 * r['latency_s']:>10.1f}{r['tokens']:>9.0f}{r['flops']:>12.3g}{ratio:>9.1f}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--queries", type=int, default=2, help="held-out rows scored per method")
    parser.add_argument("--shots", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--batch-size", type=int, default=1, help="1: latency of a single prediction")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    began = time.perf_counter()
    for size in args.sizes:
        run(size, args.queries, args.shots, args.batch_size)
    print(f"\ntotal {time.perf_counter() - began:.0f} s; target: in-context >= 10x slower than T-Few")


if __name__ == "__main__":
    main()
