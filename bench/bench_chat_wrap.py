"""Whether an instruct model reads prompts better wrapped in its chat template (TemplateSpec.chat).

Zero-shot rank classification of the bundled SmolLM2-135M-Instruct (or --model) on unseen rows of
T-Few's samples (bench/tfew_data.py, train seed 0's other-seed rows), each prompt plain and wrapped
as a user turn; prints accuracy with 95 % bootstrap intervals and how often each answer was picked
(a model that answers one class for every row shows it here).

    python -m bench.bench_chat_wrap --tasks sst2 rte copa wic --rows 96
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from bench import tfew_data


def main(argv=None) -> int:
    from ia3app.backbones.bundled import resolve
    from ia3app.backbones.loading import load_model
    from ia3app.evaluation.metrics import bootstrap_interval
    from ia3app.evaluation.scoring import score_choices
    from ia3app.templates.chat import wrap_examples
    from ia3app.templates.library import builtin
    from ia3app.templates.rendering import render_all

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", nargs="*", default=["sst2", "rte", "copa", "wic"], choices=list(tfew_data.TASKS))
    p.add_argument("--rows", type=int, default=96)
    args = p.parse_args(argv)
    loaded = load_model(resolve(args.model), device="cpu")
    print("| task | rows | plain | wrapped | answers plain | answers wrapped |\n|---|---|---|---|---|---|")
    for task in args.tasks:
        spec_task = tfew_data.TASKS[task]
        train, held = tfew_data.split(task, 0, args.rows)
        template = builtin(spec_task.template, label_values=sorted({r["label"] for r in train}), **spec_task.columns)
        examples = render_all(template, held)
        cells, counts = [], []
        for chat in (False, True):
            start = time.perf_counter()
            scored = score_choices(loaded.model, loaded.tokenizer, wrap_examples(loaded.tokenizer, examples, chat),
                                   max_length=512)
            gold, preds = [ex.label for ex in examples], [s.pred for s in scored]
            ci = bootstrap_interval(gold, preds, len(examples[0].choices), metric="accuracy")
            acc = sum(g == q for g, q in zip(gold, preds)) / len(gold)
            cells.append(f"{acc:.3f} [{ci['low']:.3f}, {ci['high']:.3f}] ({time.perf_counter() - start:.0f} s)")
            counts.append(dict(sorted(Counter(preds).items())))
        print(f"| {task} | {len(examples)} | {cells[0]} | {cells[1]} | {counts[0]} | {counts[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
