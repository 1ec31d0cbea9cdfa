"""(IA)^3 adapter costs on this CPU, every figure a ratio measured side by side in one run.

Random T5 v1.1-shaped models (gated FFN, the T0 family), no download:
1. training step (forward + backward + optimizer step on the vectors) — ours vs PEFT's IA3 on
   the same weights, the same placement (our PEFT export's config) and the same batch;
2. inference forward — merged adapter vs the base model, and unmerged vs the base model;
3. serving 8 adapters — one mixed batch of 8 rows (each row its own adapter) vs the same 8
   requests as 8 single-row batches (one adapter each, as a one-adapter-at-a-time server must);
   also vs 8 single-row batches that switch a merged adapter (restore + merge) before each;
4. switching the merged adapter (restore + merge) on a T5-base-shaped model, in ms.
Timings interleave the variants repetition by repetition and report medians (the CPU is shared).

    python -m bench.bench_adapters            # default run, about 2-3 minutes on a 2-core CPU
    python -m bench.bench_adapters --quick    # tiny model only, seconds
    python -m bench.bench_adapters --write    # also record the table in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import T5Config, T5ForConditionalGeneration

from ia3app.adapters.ia3 import Ia3Model, inject
from ia3app.adapters.peft_export import peft_config

SHAPES = {
    "tiny": dict(d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2),
    # T5 v1.1 small / base (the T0 family's FFN): published sizes.
    "t5-small": dict(d_model=512, d_kv=64, num_heads=6, d_ff=1024, num_layers=8),
    "t5-base": dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12),
}
SECTION = "## Adapters (bench/bench_adapters.py)"


DEVICE = torch.device("cpu")


def build(shape: str, seed: int = 0) -> T5ForConditionalGeneration:
    sizes = SHAPES[shape]
    config = T5Config(
        **sizes, num_decoder_layers=sizes["num_layers"], vocab_size=32128, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(seed)
    with DEVICE:
        return T5ForConditionalGeneration(config).eval()


def batch(rows: int, src: int, tgt: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(3, 32000, (rows, src), generator=g).to(DEVICE),  # (B, S)
        "labels": torch.randint(3, 32000, (rows, tgt), generator=g).to(DEVICE),  # (B, T)
    }


def randomise(handle: Ia3Model, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.empty(n).uniform_(0.5, 1.5, generator=g) for k, n in handle.shapes().items()}


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn, timing them in turn within every repetition (order rotates)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            _sync()
            start = time.perf_counter()
            fns[name]()
            _sync()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> tuple[float, float]:
    """(ratio of medians, ratio of minima) of a over b: the minima are the least disturbed runs."""
    return statistics.median(times[a]) / statistics.median(times[b]), min(times[a]) / min(times[b])


def med(times: dict[str, list[float]], a: str) -> float:
    return statistics.median(times[a])


def fmt(r: tuple[float, float], unit: str = "x") -> str:
    return f"{r[0]:.3f}{unit} (min {r[1]:.3f}{unit})"


def train_step_fn(model, params, inputs) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(params, lr=1e-3)

    def step() -> None:
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_train(shape: str, reps: int, rows: int, src: int, tgt: int) -> dict:
    from peft import IA3Config, get_peft_model

    ours_model = build(shape).train()
    peft_model = copy.deepcopy(ours_model)
    handle = inject(ours_model)
    fields = peft_config(handle, base_model=shape)  # the same placement as ours
    config = IA3Config(
        task_type=fields["task_type"], target_modules=fields["target_modules"],
        feedforward_modules=fields["feedforward_modules"], fan_in_fan_out=fields["fan_in_fan_out"],
    )  # fmt: skip
    theirs = get_peft_model(peft_model, config).train()
    inputs = batch(rows, src, tgt)
    t = interleaved(
        {
            "ours": train_step_fn(ours_model, handle.trainable_parameters(), inputs),
            "peft": train_step_fn(theirs, [p for p in theirs.parameters() if p.requires_grad], inputs),
        },
        reps,
    )
    return {"ratio": ratio(t, "ours", "peft"), "ours_s": med(t, "ours"), "peft_s": med(t, "peft")}


def bench_inference(shape: str, reps: int, rows: int, src: int, tgt: int) -> dict:
    base = build(shape)
    merged_h = inject(copy.deepcopy(base))
    merged_h.load_vectors(randomise(merged_h, 1))
    merged_h.merge()
    unmerged_h = inject(copy.deepcopy(base))
    unmerged_h.load_vectors(randomise(unmerged_h, 1))
    inputs = batch(rows, src, tgt)

    def fwd(model):
        def run():
            with torch.inference_mode():
                model(**inputs)

        return run

    t = interleaved({"base": fwd(base), "merged": fwd(merged_h.model), "unmerged": fwd(unmerged_h.model)}, reps)
    return {"base_s": med(t, "base"), "merged": ratio(t, "merged", "base"), "unmerged": ratio(t, "unmerged", "base")}


def bench_mixed(shape: str, reps: int, src: int, tgt: int, n_adapters: int = 8) -> dict:
    handle = inject(build(shape))
    names = [f"task{i}" for i in range(n_adapters)]
    vectors = {name: randomise(handle, i) for i, name in enumerate(names)}
    for name in names:
        handle.add_adapter(name, vectors[name])
    inputs = batch(n_adapters, src, tgt)
    rows = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(n_adapters)]  # 8 requests of 1

    def mixed():
        with torch.inference_mode(), handle.mixed_batch(names):
            handle.model(**inputs)

    def separate():
        with torch.inference_mode():
            for name, row in zip(names, rows):
                with handle.mixed_batch([name]):
                    handle.model(**row)

    def separate_merged():  # a one-adapter-at-a-time server: re-merge the weights per request
        handle.merge()
        with torch.inference_mode():
            for name, row in zip(names, rows):
                handle.load_vectors(vectors[name])
                handle.model(**row)
        handle.restore()

    t = interleaved({"mixed": mixed, "separate": separate, "separate_merged": separate_merged}, reps)
    return {
        "mixed_s": med(t, "mixed"),
        "throughput": ratio(t, "separate", "mixed"),
        "vs_merged_switch": ratio(t, "separate_merged", "mixed"),
    }


def bench_switch(shape: str, reps: int) -> dict:
    handle = inject(build(shape))
    a, b = randomise(handle, 1), randomise(handle, 2)
    state = {"next": a}

    def switch():  # restore the base, load, merge: one copy + one multiply per wrapped weight
        handle.restore()
        handle.load_vectors(state["next"])
        handle.merge()
        state["next"] = b if state["next"] is a else a

    def remerge():  # load into the merged model: one multiply from the kept originals
        handle.merge()
        handle.load_vectors(state["next"])
        state["next"] = b if state["next"] is a else a

    t = interleaved({"switch": switch, "remerge": remerge}, reps)
    wrapped = sum(layer.base.weight.numel() for layer in handle.layers.values())
    ms = {k: (1000 * med(t, k), 1000 * min(t[k])) for k in t}
    return {"switch": ms["switch"], "remerge": ms["remerge"], "wrapped": wrapped}


# (shape, batch rows, source tokens, target tokens) per figure; --quick keeps only the tiny model.
PLAN = {
    "train": [("tiny", 8, 64, 8), ("t5-small", 4, 32, 4)],
    "inference": [("tiny", 8, 64, 8), ("t5-small", 8, 32, 4)],
    "mixed": [("tiny", 8, 64, 8), ("t5-small", 8, 32, 4)],
    "switch": [("t5-base", 0, 0, 0)],
}


def plan_for(shape: str) -> dict:
    """Every figure on one shape (e.g. t5-base on a GPU), batch 8 of 64 -> 8 tokens."""
    return {k: [(shape, 8, 64, 8)] for k in ("train", "inference", "mixed")} | {"switch": [(shape, 0, 0, 0)]}


def run(quick: bool, reps: int, plan: dict = PLAN) -> list[tuple[str, str, str, str]]:
    """Rows (figure, model and batch, measured, target). The tiny model gets 3x the repetitions."""
    pick = (lambda items: [i for i in items if i[0] == "tiny"] or [("tiny", *items[0][1:])]) if quick else list
    base_reps = reps
    reps = lambda shape: 3 * base_reps if shape == "tiny" else base_reps  # noqa: E731
    out = []
    for shape, n, src, tgt in pick(plan["train"]):
        r = bench_train(shape, reps(shape), n, src, tgt)
        where = f"{shape}, batch {n}x{src}->{tgt}; {r['ours_s'] * 1000:.1f} vs {r['peft_s'] * 1000:.1f} ms"
        out.append(("training step, ours / PEFT IA3", where, fmt(r["ratio"]), "<= 1.05x"))
    for shape, n, src, tgt in pick(plan["inference"]):
        r = bench_inference(shape, reps(shape), n, src, tgt)
        where = f"{shape}, batch {n}x{src}->{tgt}; base {r['base_s'] * 1000:.1f} ms"
        out.append(("merged inference / base", where, fmt(r["merged"]), "<= 1.02x"))
        out.append(("unmerged inference / base", where, fmt(r["unmerged"]), "<= 1.15x"))
    for shape, n, src, tgt in pick(plan["mixed"]):
        r = bench_mixed(shape, reps(shape), src, tgt, n_adapters=n)
        where = f"{shape}, {n} requests of {src}->{tgt} tokens; mixed batch {r['mixed_s'] * 1000:.1f} ms"
        out.append((f"{n} adapters: one mixed batch vs {n} single-row batches", where, fmt(r["throughput"], "x throughput"), ">= 3x"))  # fmt: skip
        out.append((f"{n} adapters: one mixed batch vs {n} merged switches", where, fmt(r["vs_merged_switch"], "x throughput"), "(info)"))  # fmt: skip
    for shape, *_ in [("tiny",)] if quick else plan["switch"]:
        r = bench_switch(shape, reps(shape))
        where = f"{shape}; {r['wrapped']:,} wrapped weights"
        out.append(("switch merged adapter (restore+load+merge)", where, "{:.1f} ms (min {:.1f})".format(*r["switch"]), "report"))  # fmt: skip
        out.append(("switch merged adapter (load_vectors on the merged model)", where, "{:.1f} ms (min {:.1f})".format(*r["remerge"]), "report"))  # fmt: skip
    return out


def table(rows) -> str:
    lines = ["| figure | model, batch | measured | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_results(text: str, path: Path = Path(__file__).with_name("RESULTS.md")) -> None:
    """Replace (or append) this script's own section of RESULTS.md; other sections untouched."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start == -1:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + "\n" + (old[nxt + 1 :] if nxt != -1 else "")
    path.write_text(new)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per variant (median)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="run every figure on this one shape")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    reps = args.reps or (5 if args.quick else 7)
    command = "python -m bench.bench_adapters " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = "2-core CPU, no GPU" if DEVICE.type == "cpu" else torch.cuda.get_device_name(DEVICE)
    started = time.perf_counter()
    rows = run(args.quick, reps, plan_for(args.shape) if args.shape else PLAN)
    elapsed = time.perf_counter() - started
    text = "\n".join([
        SECTION, "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine} "
        f"({platform.machine()}, torch {torch.__version__}, {args.threads} torch thread(s), shared with other jobs); "
        f"command: `{command.strip()}`; {reps} interleaved repetitions; ratio of medians (and of minima); "
        f"run took {elapsed:.0f} s.",
        "", table(rows),
    ])  # fmt: skip
    print(text)
    if args.write:
        write_results(text)


if __name__ == "__main__":
    main(sys.argv[1:])
