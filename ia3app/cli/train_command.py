"""`python -m ia3app train`: an adapter from a labelled CSV (or dataset), with the recipe's flags, a held-out
file, share or cross-validation, and the evaluation printed at the end."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ia3app.cli.data_args import check_data, read_table, template_from_args
from ia3app.cli.output import print_evaluation, quiet_transformers
from ia3app.errors import UserError

RECIPE_FLAGS = {  # flag -> (RecipeConfig field, type, help)
    "--steps": ("steps", int, "optimizer steps (T-Few: 1000)"),
    "--batch-size": ("batch_size", int, "examples per step (T-Few: 8)"),
    "--grad-accumulation": ("grad_accumulation", int, "micro-batches per step (0: automatic, from free GPU memory)"),
    "--lr": ("lr", float, "Adafactor learning rate (T-Few: 3e-3)"),
    "--warmup-ratio": ("warmup_ratio", float, "linear warmup over this fraction of the steps (T-Few: 0.06)"),
    "--warmup-steps": ("warmup_steps", int, "an explicit number of warmup steps instead of --warmup-ratio"),
    "--max-length": ("max_length", int, "input tokens kept (T-Few: 256)"),
    "--precision": ("precision", str, "auto (bf16 base weights on GPUs that support it, fp32 on CPU), bf16 or fp32"),
    "--compile": ("compile", str, "torch.compile the transformer blocks: auto (on CUDA), on or off"),
    "--activation-checkpointing": ("activation_checkpointing", str,
                                   "recompute activations to save memory: auto (when needed), on or off"),
    "--seed": ("seed", int, "sampling seed"),
    "--checkpoint-every": ("checkpoint_every", int, "steps between resumable checkpoints (0: never)"),
    "--eval-batch-size": ("eval_batch_size", int, "examples per scoring batch"),
}


def _recipe(args):
    from ia3app.config import RecipeConfig

    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in RECIPE_FLAGS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    return RecipeConfig(**given)  # warmup: warmup_ratio (6 %) of the steps unless --warmup-steps


def cmd_train(args) -> int:
    from tqdm import tqdm

    from ia3app.jobtypes import Holdout, ProgressEvent, dumps

    table = read_table(args.csv, args)
    template = template_from_args(args, table)
    check_data(args, table, template)
    quiet_transformers()
    from ia3app.recipe.run_job import JobSpec, run_job

    recipe = _recipe(args)
    train_rows, eval_rows = table.rows, None
    if args.eval_csv:
        eval_rows = read_table(args.eval_csv).rows
    elif args.holdout:
        train_rows, eval_rows = Holdout(args.holdout, args.holdout_seed).split(table.rows, template.label_column)
    if args.cv and (args.eval_csv or args.holdout):
        raise UserError("--cv evaluates by cross-validation: leave out --eval-csv and --holdout")
    if args.cv and not args.quiet:
        print(f"{args.cv}-fold cross-validation: {args.cv + 1} training runs of {recipe.steps} steps each "
              f"({args.cv} to measure, 1 on every row for the adapter)", file=sys.stderr)
    extra = [template_from_args(argparse.Namespace(**{**vars(args), "template": t}), table) for t in args.train_template or []]
    spec = JobSpec(
        model=args.model, template=template, recipe=recipe, revision=args.revision,
        init_vectors=args.init_vectors, init_adapter=args.init_adapter, eval_methods=args.methods,
        train_templates=extra, cv_folds=args.cv,
    )
    out = Path(args.out)
    work = Path(args.work_dir) if args.work_dir else out / ".work"
    bar, bar_run = None, None

    def progress(event: ProgressEvent) -> None:
        nonlocal bar, bar_run
        if event.phase == "train" and event.step is not None:
            run = (event.message or "").split(": step")[0] if ": step" in (event.message or "") else "train"
            if bar is not None and bar_run != run:  # cross-validation: one bar per training run
                bar.close()
                bar = None
            if bar is None:
                bar, bar_run = tqdm(total=recipe.steps, desc=run, unit="step", disable=args.quiet), run
            bar.n = event.step
            if event.loss is not None:
                bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
            bar.refresh()
            return
        if bar is not None:
            bar.close()
            bar = None
        if not args.quiet:
            print(event.message or event.phase, file=sys.stderr)

    results = run_job(spec, train_rows, eval_rows, work_dir=work, out_dir=out, progress=progress, device=args.device)
    if bar is not None:
        bar.close()
    if not args.work_dir and not args.keep_checkpoints:
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(dumps(results, indent=2), encoding="utf-8")
    params, training = results.params, results.training
    print(f"adapter written to {out}")
    print(
        f"trained {params.get('added'):,} parameters ({100 * params.get('fraction', 0):.4f} % of the model) "
        f"in {training.steps} steps, {training.wall_s:.1f} s"
    )
    for warning in results.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if results.evaluation:
        print_evaluation(results.evaluation)
    return 0
