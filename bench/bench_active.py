"""Issue 20 simulated: do suggested rows ("label these next") beat random rows, and is a warm start better?

T-Few's few-shot samples of one task (bench/data/tfew_fewshot/, bench/tfew_data.py) are the data. Per
simulation seed, their unique rows are shuffled and split: a held-out share for evaluation, the rest the
unlabelled **pool** whose labels stay hidden until a row is "labelled". Start from 8 labelled pool rows
(at least one per label), train (the app's own job path, ia3app.recipe.run_job), then 3 rounds, each
adding 8 rows and training again, in three arms:

- **random**: 8 random rows of the pool per round, each round trained fresh (vectors at one);
- **suggest**: the 8 rows ia3app.serving.suggest picks with the round's adapter (smallest margin between
  the top two choices, spread by greedy farthest-point on the adapter's mean-pooled last hidden state of
  the prompt), scored through the serving engine; each round trained fresh;
- **suggest, warm**: the same labelled rows as *suggest* at every round, but each round starts from the
  previous round's vectors (the page's default until this bench measured fresh starts better), so warm vs
  fresh differ only in the start.

Printed per round: held-out accuracy per arm (mean over seeds, and every run's 95 % bootstrap interval from
ia3app.evaluation.metrics), the paired difference suggest − random and warm − fresh on the pooled held-out
rows of all seeds (paired bootstrap interval and verdict). Then the pool-scoring throughput: rows/s of
suggest's scoring (with representations) against plain batch prediction of the same rows by the same
warm engine, measured side by side, and their ratio.

    python -m bench.bench_active                           # bundled SmolLM2-135M-Instruct, sst2, 3 seeds
    python -m bench.bench_active --model tiny --steps 2 --seeds 1 --rows 60   # the plumbing, in a minute
    python -m bench.bench_active --task rte --steps 300 --seeds 5 --device cuda --json /tmp/active.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from bench import tfew_data

ARMS = ("random", "suggest", "suggest, warm")


def tiny_model(work: Path) -> str:
    """--model tiny: a tiny random T0-style model built offline (the plumbing only; its accuracy means nothing)."""
    from ia3app.backbones.tiny import make_tiny_model

    folder = work / "tiny-t0"
    if not (folder / "config.json").is_file():
        make_tiny_model("t0", folder)
    return str(folder)


def split(task: str, seed: int, rows: int | None, eval_fraction: float) -> tuple[list[dict], list[dict]]:
    """(pool, held-out) of the task's unique rows for one simulation seed (labels still on the pool rows)."""
    by_idx: dict[str, dict] = {}
    for r in tfew_data.read_all(task):  # every seed's sample
        by_idx.setdefault(r["idx"], {k: v for k, v in r.items() if k not in tfew_data.META})
    unique = list(by_idx.values())
    random.Random(seed).shuffle(unique)
    unique = unique[:rows] if rows else unique
    n_eval = max(1, round(len(unique) * eval_fraction))
    return unique[n_eval:], unique[:n_eval]


def first_labelled(pool: list[dict], k: int, seed: int) -> list[int]:
    """k pool rows to start from, at least one per label when k allows (a person starts with a few of each)."""
    rng = random.Random(seed)
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(pool):
        by_label.setdefault(r["label"], []).append(i)
    chosen = [rng.choice(idx) for idx in by_label.values()][:k]
    rest = [i for i in range(len(pool)) if i not in chosen]
    return chosen + rng.sample(rest, k - len(chosen))


class Simulation:
    def __init__(self, args, model: str, work: Path) -> None:
        from ia3app.serving.engine import ServingEngine

        self.args, self.model, self.work = args, model, work
        self.engine = ServingEngine(device=args.device, max_wait_ms=0, max_batch_rows=args.batch_rows)
        self.throughput: list[dict] = []

    def template(self, labels: list[str]):
        from ia3app.templates.library import builtin

        task = tfew_data.TASKS[self.args.task]
        return builtin(task.template, label_values=labels, **task.columns)

    def train(self, name: str, rows: list[dict], held: list[dict], labels: list[str], init: Path | None) -> tuple[Path, dict]:
        """(adapter folder, the t-few evaluation report) of one run of the app's job path."""
        from ia3app.config import RecipeConfig
        from ia3app.jobtypes import JobSpec
        from ia3app.recipe.run_job import run_job

        a = self.args
        recipe = RecipeConfig(steps=a.steps, batch_size=a.batch_size, max_length=a.max_length, lr=a.lr,
                              checkpoint_every=0, seed=a.train_seed, warmup_steps=0 if a.steps < 20 else None)
        spec = JobSpec(model=self.model, template=self.template(labels), recipe=recipe, eval_methods=["t-few"],
                       init_adapter=str(init) if init else None)
        folder = self.work / name
        result = run_job(spec, rows, held, work_dir=folder / "work", out_dir=folder / "adapter",
                         progress=lambda e: None, device=a.device)
        return folder / "adapter", {**result.evaluation["methods"]["t-few"], "gold": result.evaluation["gold"]}

    def suggest(self, adapter: Path, pool: list[dict], labelled: set[int]) -> list[int]:
        """The next rows by the app's rule, labels hidden; and the scoring throughput beside plain prediction."""
        from ia3app.serving.suggest import suggest

        hidden = [{k: v for k, v in r.items() if k != "label"} for r in pool]
        result = suggest(self.engine, adapter, hidden, self.args.per_round, exclude=labelled)
        left = [hidden[i] for i in range(len(hidden)) if i not in labelled]
        start = time.perf_counter()
        self.engine.predict(adapter, left)  # the same rows, the same warm engine, no representations
        plain = len(left) / (time.perf_counter() - start)
        self.throughput.append({"rows": len(left), "suggest_rows_per_s": result.rows_per_s,
                                "predict_rows_per_s": plain})
        return [s.index for s in result.suggestions]

    def run(self, seed: int) -> list[dict]:
        a = self.args
        pool, held = split(a.task, seed, a.rows, a.eval_fraction)
        labels = sorted({r["label"] for r in pool + held})
        start = first_labelled(pool, a.start, seed)
        sets = {arm: list(start) for arm in ARMS}
        rng = random.Random(1000 + seed)
        out, previous = [], {}
        for rnd in range(a.rounds + 1):
            reports = {}
            for arm in ARMS:
                if rnd == 0 and arm != "random":  # round 0 is one run, shared by the arms
                    reports[arm], previous[arm] = reports["random"], previous["random"]
                    continue
                init = previous.get("suggest, warm") if arm == "suggest, warm" and rnd > 0 else None
                rows = [pool[i] for i in sets[arm]]
                previous[arm], reports[arm] = self.train(f"s{seed}-r{rnd}-{arm.replace(', ', '-')}", rows, held,
                                                         labels, init)
            out.append({"seed": seed, "round": rnd, "labelled": len(sets["random"]), "task": a.task, "steps": a.steps,
                        "model": a.model,
                        **{arm: {"accuracy": r["accuracy"], "low": r["intervals"]["accuracy"]["low"],
                                 "high": r["intervals"]["accuracy"]["high"], "gold": r["gold"],
                                 "predictions": r["predictions"]} for arm, r in reports.items()}})
            if a.json:  # each round as it is done: a run stopped early keeps what it measured (--report reads it)
                with open(a.json, "a") as f:
                    f.write(json.dumps(out[-1]) + "\n")
            print(f"  seed {seed} round {rnd} ({len(sets['random'])} labelled): " + ", ".join(
                f"{arm} {100 * r['accuracy']:.1f} %" for arm, r in reports.items()), file=sys.stderr, flush=True)
            if rnd == a.rounds:
                break
            left = [i for i in range(len(pool)) if i not in set(sets["random"])]
            sets["random"] += rng.sample(left, min(a.per_round, len(left)))
            picked = self.suggest(previous["suggest"], pool, set(sets["suggest"]))
            sets["suggest"] += picked
            sets["suggest, warm"] = list(sets["suggest"])
        return out


def paired(rows: list[dict], a: str, b: str) -> dict:
    from ia3app.evaluation.metrics import paired_difference

    gold = [g for r in rows for g in r[a]["gold"]]
    return paired_difference(gold, [p for r in rows for p in r[a]["predictions"]],
                             [p for r in rows for p in r[b]["predictions"]], name_a=a, name_b=b)


def report(rows: list[dict], throughput: list[dict], args) -> str:
    from ia3app.evaluation.metrics import format_interval

    lines = [f"task {args.task}, model {args.model}, {args.steps} steps, seeds {args.seeds}, start {args.start} rows, "
             f"{args.rounds} rounds of {args.per_round}",
             "| round | labelled | " + " | ".join(f"{arm} (mean; per-seed 95 % CI)" for arm in ARMS) +
             " | suggest − random (paired, all seeds) | warm − fresh (paired) |",
             "|---|---|" + "---|" * len(ARMS) + "---|---|"]
    for rnd in range(args.rounds + 1):
        at = [r for r in rows if r["round"] == rnd]
        cells = []
        for arm in ARMS:
            mean = sum(r[arm]["accuracy"] for r in at) / len(at)
            cis = "; ".join(f"[{100 * r[arm]['low']:.0f}–{100 * r[arm]['high']:.0f}]" for r in at)
            cells.append(f"{100 * mean:.1f} % ({cis})")
        diff, warm = paired(at, "suggest", "random"), paired(at, "suggest, warm", "suggest")
        lines.append(f"| {rnd} | {at[0]['labelled']} | " + " | ".join(cells) +
                     f" | {format_interval(diff, signed=True)}: {diff['verdict']} |"
                     f" {format_interval(warm, signed=True)}: {warm['verdict']} |")
    if throughput:
        s = sum(t["rows"] for t in throughput)
        sug = s / sum(t["rows"] / t["suggest_rows_per_s"] for t in throughput)
        plain = s / sum(t["rows"] / t["predict_rows_per_s"] for t in throughput)
        lines.append(f"\npool scoring (suggest, with representations): {sug:.1f} rows/s; plain batch prediction of the "
                     f"same rows: {plain:.1f} rows/s; ratio {sug / plain:.2f} ({len(throughput)} measurements)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m",
                   help="short name, hub id or local folder (default: the bundled model); 'tiny': a tiny random model")
    p.add_argument("--task", default="sst2", choices=list(tfew_data.TASKS))
    p.add_argument("--seeds", type=int, default=3, help="simulation seeds (different splits and starts)")
    p.add_argument("--rows", type=int, help="use at most this many of the task's unique rows (pool + held-out)")
    p.add_argument("--eval-fraction", type=float, default=0.4, help="share of the rows held out for evaluation")
    p.add_argument("--start", type=int, default=8, help="labelled rows to start from")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-round", type=int, default=8, help="rows labelled per round")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--batch-rows", type=int, default=32, help="the serving engine's rows per forward")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--train-seed", type=int, default=42)
    p.add_argument("--device", default=None)
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    p.add_argument("--json", help="write every run's figures (per seed and round) to this JSON-lines file, "
                   "each round as it is done")
    p.add_argument("--first-seed", type=int, default=0, help="the first simulation seed (to split seeds over runs)")
    p.add_argument("--report", metavar="JSON", help="print the table of the rounds saved in this file, run nothing")
    args = p.parse_args(argv)
    if args.report:
        rows = [json.loads(line) for line in Path(args.report).read_text().splitlines() if line.strip()]
        done = {r["round"] for r in rows}
        args.rounds = max(r for r in range(max(done) + 1) if all(k in done for k in range(r + 1)))
        args.seeds = len({r["seed"] for r in rows})
        args.task, args.steps, args.model = (rows[0].get(k, getattr(args, k)) for k in ("task", "steps", "model"))
        print(report(rows, [], args))
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_active-"))
    model = tiny_model(work) if args.model == "tiny" else args.model
    sim = Simulation(args, model, work)
    rows: list[dict] = []
    start = time.perf_counter()
    if args.json:
        Path(args.json).write_text("")
    try:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            rows += sim.run(seed)
    finally:
        sim.engine.close()
    print(report(rows, sim.throughput, args))
    print(f"\n{time.perf_counter() - start:.0f} s in all; runs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
