"""Serving many adapters on one base model: the engine (ia3app.serving.engine) against its baselines.

One process, one T5-small-shaped random model saved to a temp folder and loaded through
``models.load_model`` (as the app does), ByT5 tokenizer (one token per byte), a two-choice
template, rows of 40-200 bytes (short reviews to a paragraph), requests of 1-4 rows. Printed as
ratios measured side by side; every throughput variant runs once per round, rounds rotate the
order, medians are reported:

1. throughput with 64 distinct adapters in the traffic / with 1 adapter, same clients and rows
   (target >= 0.9x);
2. throughput with 8 adapters interleaved: the engine / the old Predictor (one merged adapter per
   backbone, a global lock, restore + merge at each switch; kept here only as the baseline)
   (target >= 2x);
3. single-client latency per request, one adapter through the engine (merged path) / the base
   model scoring the same rows with no adapter (target <= 1.05x);
4. memory added per resident adapter / its vectors' bytes (bank tensors, and process RSS) (<= 1.5x);
   and the merged copies' bytes (the price of the merged fast path);
5. p50 / p95 latency per request at 1, 8 and 32 concurrent clients (64 adapters).

    python -m bench.bench_serving                 # CPU, T5-small shape (a few minutes on 2 cores)
    python -m bench.bench_serving --quick         # tiny shape, seconds (a smoke run)
    python -m bench.bench_serving --gpu           # T0-3B shape, bf16, 1,000 adapters, on cuda
    python -m bench.bench_serving --write         # also record the table in bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.bench_adapters import write_results
from bench.shapes import random_t5, random_text, tokenizer
from ia3app.adapters.files import apply_adapter, fit_problems, save_adapter
from ia3app.adapters.ia3 import inject
from ia3app.backbones.loading import load_model
from ia3app.evaluation.scoring import score_choices
from ia3app.serving.engine import ServingEngine
from ia3app.templates.rendering import render_all
from ia3app.templates.spec import TemplateSpec

SECTION = "## Serving many adapters (bench/bench_serving.py)"
TEMPLATE = TemplateSpec(name="bench", input="{{text}}\nIs this review positive or negative?",
                        choices=["negative", "positive"])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(shape: str, root: Path, n_adapters: int, device: str, dtype) -> tuple[Path, list[Path]]:
    """A random model saved like a hub model, and n adapter folders with random vectors (0.5-1.5)."""
    model_dir = root / "model"
    model = random_t5(shape, dtype=dtype)
    model.save_pretrained(model_dir)
    tokenizer().save_pretrained(model_dir)
    handle = inject(model)
    folders = []
    for i in range(n_adapters):
        g = torch.Generator().manual_seed(i)
        handle.load_vectors({k: torch.empty(n).uniform_(0.5, 1.5, generator=g) for k, n in handle.shapes().items()})
        folders.append(save_adapter(handle, root / f"adapter{i}", base_model=str(model_dir),
                                    extra={"template": TEMPLATE.to_dict(), "choices": TEMPLATE.choices,
                                           "recipe": {"max_length": 256}}))
    del model, handle
    return model_dir, folders


def workload(n_requests: int, adapters: list[Path], seed: int) -> list[tuple[Path, list[dict]]]:
    rng = random.Random(seed)
    return [(rng.choice(adapters), [{"text": random_text(rng, rng.randint(40, 200))} for _ in range(rng.randint(1, 4))])
            for _ in range(n_requests)]


class OldPredictor:
    """The replaced ia3app.predict.Predictor, reduced to its serving path: one backbone, one merged
    adapter, a global lock, restore + load + merge whenever the next request names another adapter."""

    def __init__(self, model_dir: Path, device: str, dtype: str) -> None:
        self.loaded = load_model(str(model_dir), device=device, dtype=dtype)
        self.handle = inject(self.loaded.model)
        self.active = None
        self.lock = threading.Lock()

    def predict(self, adapter_dir: Path, rows: list[dict]):
        with self.lock:
            examples = render_all(TEMPLATE, rows)
            if self.active != adapter_dir:
                from ia3app.adapters.files import load_adapter

                vectors, config = load_adapter(adapter_dir)
                assert not fit_problems(self.handle, config)
                self.handle.restore()
                self.handle.load_vectors(vectors)
                self.handle.merge()
                self.active = adapter_dir
            return score_choices(self.loaded.model, self.loaded.tokenizer, examples, batch_size=16, max_length=256)


def closed_loop(predict, requests, clients: int) -> tuple[float, list[float]]:
    """Each client sends its share of the requests one after another; (rows per second, latencies)."""
    shares = [requests[i::clients] for i in range(clients)]
    latencies: list[float] = []
    errors: list[BaseException] = []
    start_line = threading.Barrier(clients + 1)

    def client(share):
        start_line.wait()
        try:
            for adapter, rows in share:
                t = time.perf_counter()
                predict(adapter, rows)
                latencies.append(time.perf_counter() - t)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(len(rows) for _, rows in requests) / wall, latencies


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run(args) -> list[tuple[str, str, str]]:
    device = args.device
    dtype = "bf16" if args.gpu else "fp32"
    root = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    n_adapters = max(64, args.adapters)
    model_dir, folders = build(args.shape, root, n_adapters, device, torch.bfloat16 if args.gpu else torch.float32)
    engine = ServingEngine(device=device, dtype=dtype, max_wait_ms=args.max_wait_ms, max_batch_rows=args.batch_rows,
                           adapter_budget_mb=args.budget_mb)
    one = workload(args.requests, folders[:1], seed=1)
    many = workload(args.requests, folders[:64], seed=1)  # the same rows, 64 adapters
    eight = workload(args.requests, folders[:8], seed=1)
    big = workload(args.requests, folders, seed=1) if n_adapters > 64 else None
    engine.predict(folders[0], one[0][1])  # load the backbone
    rss0 = rss_bytes()
    for f in folders:  # make every adapter resident (the memory figure)
        engine.predict(f, one[0][1][:1])
    lane = engine.stats()["backbones"][0]
    rss_per_adapter = (rss_bytes() - rss0) / max(1, lane["resident_adapters"] - 1)
    old = OldPredictor(model_dir, device, dtype)
    base = load_model(str(model_dir), device=device, dtype=dtype)

    def base_predict(_adapter, rows):
        return score_choices(base.model, base.tokenizer, render_all(TEMPLATE, rows), batch_size=16, max_length=256)

    variants = {
        "engine, 1 adapter": (engine.predict, one, args.clients),
        "engine, 64 adapters": (engine.predict, many, args.clients),
        "engine, 8 adapters": (engine.predict, eight, args.clients),
        "old Predictor, 8 adapters": (old.predict, eight, args.clients),
    }
    if big is not None:
        variants[f"engine, {n_adapters} adapters"] = (engine.predict, big, args.clients)
    latency = {"base model, 1 client": (base_predict, one[: args.latency_requests], 1),
               "engine 1 adapter, 1 client": (engine.predict, one[: args.latency_requests], 1)}
    names = list(variants) + list(latency)
    throughput: dict[str, list[float]] = {n: [] for n in names}
    lat: dict[str, list[float]] = {n: [] for n in names}
    for variant in names:  # warm-up: every path once (the merged copies, the old Predictor's backup)
        fn, reqs, _ = (variants | latency)[variant]
        closed_loop(fn, reqs[:4], 1)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            fn, reqs, clients = (variants | latency)[name]
            rate, lats = closed_loop(fn, reqs, clients)
            print(f"round {rnd + 1}: {name}: {rate:.2f} rows/s, median {1000 * statistics.median(lats):.0f} ms",
                  file=sys.stderr, flush=True)
            throughput[name].append(rate)
            lat[name].append(statistics.median(lats))
    med = {n: statistics.median(v) for n, v in throughput.items()}
    med_lat = {n: statistics.median(v) for n, v in lat.items()}
    rows = [
        ("throughput 64 adapters / 1 adapter", f"{med['engine, 64 adapters'] / med['engine, 1 adapter']:.3f}x "
         f"({med['engine, 64 adapters']:.2f} vs {med['engine, 1 adapter']:.2f} rows/s, {args.clients} clients)", ">= 0.9x"),
        ("throughput 8 adapters: engine / old Predictor",
         f"{med['engine, 8 adapters'] / med['old Predictor, 8 adapters']:.2f}x ({med['engine, 8 adapters']:.2f} vs "
         f"{med['old Predictor, 8 adapters']:.2f} rows/s)", ">= 2x"),
        ("latency 1 adapter (merged) / base model, 1 client",
         f"{med_lat['engine 1 adapter, 1 client'] / med_lat['base model, 1 client']:.3f}x "
         f"({1000 * med_lat['engine 1 adapter, 1 client']:.1f} vs {1000 * med_lat['base model, 1 client']:.1f} ms/request)",
         "<= 1.05x"),
    ]
    if big is not None:
        key = f"engine, {n_adapters} adapters"
        rows.append((f"throughput {n_adapters} adapters / 1 adapter", f"{med[key] / med['engine, 1 adapter']:.3f}x "
                     f"({med[key]:.2f} rows/s)", ">= 0.9x"))
    lane = engine.stats()["backbones"][0]
    vec = lane["adapter_bytes"]
    rows += [
        ("memory per resident adapter / vector bytes (bank tensors)",
         f"{lane['bank_bytes'] / lane['resident_adapters'] / vec:.3f}x ({lane['resident_adapters']} adapters of "
         f"{vec / 1e3:.1f} kB)", "<= 1.5x"),
        ("memory per resident adapter / vector bytes (process RSS)", f"{rss_per_adapter / vec:.2f}x", "<= 1.5x"),
        ("merged copies (the merged path's kept weights)",
         f"{lane['merged_copy_bytes'] / 1e6:.1f} MB = {lane['merged_copy_bytes'] / (4 * base.num_parameters if dtype == 'fp32' else 2 * base.num_parameters):.0%} "
         "of the model", "report"),
    ]
    for clients in (1, 8, 32):
        reqs = workload(max(clients * args.latency_per_client, 4), folders[:64], seed=10 + clients)
        _, lats = closed_loop(engine.predict, reqs, clients)
        print(f"{clients} clients: p50 {1000 * pct(lats, 0.5):.0f} ms", file=sys.stderr, flush=True)
        rows.append((f"latency per request, {clients} client(s), 64 adapters",
                     f"p50 {1000 * pct(lats, 0.5):.0f} ms, p95 {1000 * pct(lats, 0.95):.0f} ms ({len(lats)} requests)",
                     "report"))
    lane = engine.stats()["backbones"][0]
    rows.append(("engine batches (all runs)", f"{lane['batches']} batches: {lane['merged_batches']} merged, "
                 f"{lane['mixed_batches']} mixed; {lane['merges']} merges; {lane['rows']} rows", "info"))
    engine.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny model, few requests (a smoke run)")
    parser.add_argument("--gpu", action="store_true", help="T0-3B shape, bf16, 1,000 adapters on cuda")
    parser.add_argument("--shape", default=None, help="t5-small (CPU default), t0-3b (--gpu), tiny (--quick)")
    parser.add_argument("--adapters", type=int, default=None, help="adapters made resident (>= 64)")
    parser.add_argument("--requests", type=int, default=None, help="requests per throughput variant")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for the throughput figures")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--latency-requests", type=int, default=None)
    parser.add_argument("--latency-per-client", type=int, default=2)
    parser.add_argument("--max-wait-ms", type=float, default=3.0)
    parser.add_argument("--batch-rows", type=int, default=32)
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared CPU; 0: torch default)")
    parser.add_argument("--write", action="store_true", help="record the table in bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.device = "cuda" if args.gpu else "cpu"
    args.shape = args.shape or ("t0-3b" if args.gpu else "tiny" if args.quick else "t5-small")
    args.adapters = args.adapters or (1000 if args.gpu else 64)
    args.requests = args.requests or (16 if args.quick else 256 if args.gpu else 24)
    args.rounds = args.rounds or (1 if args.quick else 3 if args.gpu else 2)
    args.latency_requests = args.latency_requests or (4 if args.quick else 32 if args.gpu else 8)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python -m bench.bench_serving " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = torch.cuda.get_device_name() if args.gpu else f"{os.cpu_count()}-core CPU, no GPU"
    started = time.perf_counter()
    rows = run(args)
    text = "\n".join([
        SECTION, "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: {machine} ({platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} torch threads, shared with other jobs); command: "
        f"`{command.strip()}`; shape {args.shape}; {args.requests} requests of 1-4 rows (40-200 bytes) per throughput "
        f"variant, {args.clients} clients, {args.rounds} interleaved rounds (medians); run took "
        f"{time.perf_counter() - started:.0f} s.",
        "", "| figure | measured | target |", "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ])  # fmt: skip
    print(text)
    if args.write:
        write_results(text)


if __name__ == "__main__":
    main(sys.argv[1:])
