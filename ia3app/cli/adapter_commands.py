"""`python -m ia3app evaluate` and `export`: an adapter loaded into its base model, then zero-shot vs
in-context vs T-Few on held-out rows, or a PEFT folder and/or a merged full model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ia3app.cli.data_args import read_table
from ia3app.cli.output import print_evaluation, quiet_transformers
from ia3app.errors import UserError


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
    quiet_transformers()
    from ia3app.evaluation.compare import evaluate_methods, label_names
    from ia3app.evaluation.in_context import IclConfig
    from ia3app.templates.rendering import render_all

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
    print_evaluation(evaluation)
    if args.json:
        Path(args.json).write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
    return 0


def cmd_export(args) -> int:
    quiet_transformers()
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
