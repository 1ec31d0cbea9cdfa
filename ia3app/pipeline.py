"""The job runner: one plain function of (job config, data, progress callback).

The job worker calls :func:`run_job`; so could any other dispatcher (a Ray task, a script),
since it knows nothing of the queue or the database. It validates the template against the
rows, loads the backbone, injects (IA)^3, optionally starts from T-Few's released vectors,
trains (resuming from checkpoints in work_dir), evaluates zero-shot / in-context / T-Few on the
held-out rows, and writes the adapter folder: adapter.safetensors + ia3_config.json, peft/,
README.md (model card) and results.json, written into out_dir/.tmp and moved into place with
results.json last, so a folder with results.json is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable

from ia3app.config import RecipeConfig, check_keys
from ia3app.errors import UserError
from ia3app.evaluate import METHODS, evaluate_methods, label_names
from ia3app.templates import TemplateSpec, render_all, validate

Progress = Callable[[dict], None]


@dataclass
class JobSpec:
    """Everything a training job needs besides its data. JSON-able; validated on construction."""

    model: str
    """Hub id or local folder of the backbone (T0-style models are the recipe's choice)."""
    template: dict
    """TemplateSpec.to_dict(): how a row becomes an input and its answer choices."""
    recipe: dict = field(default_factory=dict)
    """RecipeConfig.to_dict() (missing keys take T-Few's defaults)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of the backbone."""
    init_vectors: str | None = None
    """Path or URL of T-Few's released (IA)^3 vectors to start from (T0-3B only)."""
    eval_methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Which of zero-shot, in-context, t-few to evaluate on held-out rows."""
    train_templates: list[dict] = field(default_factory=list)
    """More TemplateSpec dicts for training only: as in T-Few, each example is rendered with a
    random one of `template` and these at each step. Evaluation and predictions use `template`."""

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.model, str) or not self.model.strip():
            problems.append("model must name a hub id or a local folder")
        for name in ("revision", "init_vectors"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{name} must be text or absent")
        if not isinstance(self.eval_methods, (list, tuple)) or any(m not in METHODS for m in self.eval_methods):
            problems.append(f"eval_methods must be a list drawn from {', '.join(METHODS)} (got {self.eval_methods!r})")
        else:
            self.eval_methods = list(self.eval_methods)
        for name, parse in (("template", TemplateSpec.from_dict), ("recipe", RecipeConfig.from_dict)):
            try:
                parse(getattr(self, name))
            except UserError as exc:
                problems.append(str(exc))
            except TypeError as exc:
                problems.append(f"{name}: {exc}")
        if not isinstance(self.train_templates, (list, tuple)):
            problems.append("train_templates must be a list of templates")
        else:
            self.train_templates = list(self.train_templates)
            for i, extra in enumerate(self.train_templates, 1):
                try:
                    TemplateSpec.from_dict(extra)
                except (UserError, TypeError) as exc:
                    problems.append(f"train_templates[{i}]: {exc}")
        if problems:
            raise UserError("invalid job: " + "; ".join(problems))

    def template_spec(self) -> TemplateSpec:
        return TemplateSpec.from_dict(self.template)

    def recipe_config(self) -> RecipeConfig:
        return RecipeConfig.from_dict(self.recipe)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobSpec":
        if not isinstance(data, dict):
            raise UserError("a job must be a JSON object")
        check_keys(cls, data, "job field")
        missing = [k for k in ("model", "template") if k not in data]
        if missing:
            raise UserError(f"job is missing {', '.join(missing)}")
        return cls(**data)


def _columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _jsonable(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    return value


def _check_stop(should_stop: Callable[[], bool]) -> None:
    if should_stop():
        from ia3app.errors import Cancelled

        raise Cancelled("the job was cancelled")


def run_job(
    spec: JobSpec,
    train_rows: list[dict],
    eval_rows: list[dict] | None,
    *,
    work_dir: Path,
    out_dir: Path,
    progress: Progress,
    should_stop: Callable[[], bool] = lambda: False,
    device: str | None = None,
    models=None,
    compile_cache_dir: Path | None = None,
) -> dict:
    """Run one job end to end; returns what it writes to out_dir/results.json.

    Raises UserError for problems in the job or its data, ia3app.errors.Cancelled when
    should_stop() turns true (checkpoints stay in work_dir, so a rerun resumes).
    models: an ia3app.model_cache.ModelCache kept by the caller (a worker) to reuse the loaded,
    compiled backbone for the next job of the same model. compile_cache_dir: where compiled
    kernels persist between processes (the recipe's compile setting decides whether to compile).
    """
    from ia3app.model_cache import ModelCache

    models = models if models is not None else ModelCache()
    try:
        return _run_job(spec, train_rows, eval_rows, work_dir=work_dir, out_dir=out_dir, progress=progress,
                        should_stop=should_stop, device=device, models=models, compile_cache_dir=compile_cache_dir)
    except BaseException as exc:
        from ia3app.errors import Cancelled

        if not isinstance(exc, (Cancelled, UserError)):
            models.clear()  # whatever failed may have left the kept model half-changed
        raise


def _run_job(spec, train_rows, eval_rows, *, work_dir, out_dir, progress, should_stop, device, models,
             compile_cache_dir) -> dict:
    from ia3app.adapter_io import save_adapter
    from ia3app.cost import training_flops
    from ia3app.ia3 import inject
    from ia3app.model_card import model_card
    from ia3app.models import default_device, load_model, weights_dtype
    from ia3app.params import parameter_report
    from ia3app.peft_export import export_peft
    from ia3app.train import train

    work_dir, out_dir = Path(work_dir), Path(out_dir)
    template, recipe = spec.template_spec(), spec.recipe_config()
    if not train_rows:
        raise UserError("the training data has no rows")
    progress({"phase": "validate", "message": f"checking the template against {len(train_rows)} training rows"
              + (f" and {len(eval_rows)} held-out rows" if eval_rows else "")})
    warnings = validate(template, _columns(train_rows), train_rows)
    train_examples = render_all(template, train_rows)
    if any(ex.label is None for ex in train_examples):
        raise UserError(f"every training row needs a label in column '{template.label_column}'")
    eval_examples = []
    if eval_rows:
        warnings += [f"held-out data: {w}" for w in validate(template, _columns(eval_rows), eval_rows)]
        eval_all = render_all(template, eval_rows)
        eval_examples = [ex for ex in eval_all if ex.label is not None]
    names = label_names(train_examples + eval_examples)
    train_items: list = train_examples
    if spec.train_templates:  # one rendering per template; train() draws one per row per step
        extras = [TemplateSpec.from_dict(t) for t in spec.train_templates]
        for extra in extras:
            warnings += [f"template '{extra.name}': {w}" for w in validate(extra, _columns(train_rows), train_rows)]
        train_items = list(zip(train_examples, *(render_all(extra, train_rows) for extra in extras)))

    progress({"phase": "load", "message": f"loading {spec.model}" + (f" @ {spec.revision}" if spec.revision else "")})
    device = device or default_device()
    key = (spec.model, spec.revision, device, str(weights_dtype(recipe.precision, device)))

    def load():
        from ia3app.download import fetch

        fetch(spec.model, spec.revision, progress)  # a hub model not cached yet: bytes and speed as "download"
        loaded = load_model(spec.model, spec.revision, device=device, precision=recipe.precision)
        return loaded, inject(loaded.model)

    loaded, handle = models.get(key, load)
    # Long rows: shorten the longest field, not the end of the input (the question, the template's words)
    from ia3app.truncate import fit_examples, warning as cut_warning

    fitted = fit_examples(template, train_rows, train_examples, loaded.tokenizer, recipe.max_length)
    train_examples = fitted.examples
    warnings += [w for w in [cut_warning(fitted, recipe.max_length)] if w]
    train_items = train_examples
    if spec.train_templates:
        train_items = list(zip(train_examples, *(
            fit_examples(extra, train_rows, render_all(extra, train_rows), loaded.tokenizer, recipe.max_length).examples
            for extra in extras)))
    if eval_rows:
        fitted = fit_examples(template, eval_rows, eval_all, loaded.tokenizer, recipe.max_length)
        eval_examples = [ex for ex in fitted.examples if ex.label is not None]
        warnings += [w for w in [cut_warning(fitted, recipe.max_length, "held-out")] if w]
    if spec.init_vectors:
        from ia3app.tfew_vectors import apply_tfew_vectors, resolve_tfew_vectors

        progress({"phase": "load", "message": "starting from T-Few's released (IA)^3 vectors"})
        apply_tfew_vectors(handle, resolve_tfew_vectors(spec.init_vectors, cache_dir=work_dir / "cache"))
    _check_stop(should_stop)

    def on_step(event: dict) -> None:
        message = f"step {event.get('step')}/{recipe.steps}"
        if "loss" in event:
            message += f", loss {event['loss']:.4f}"
        progress({"phase": "train", "message": message, **event})

    result = train(
        handle,
        loaded.tokenizer,
        train_items,
        recipe,
        progress=on_step,
        checkpoint_dir=work_dir / "checkpoints",
        should_stop=should_stop,
        compile_cache_dir=compile_cache_dir,
    )
    handle.model.eval()
    training = {
        "steps": result.steps,
        "wall_s": result.wall_s,
        "examples_per_s": result.examples_per_s,
        "tokens_processed": result.tokens_processed,
        "flops": training_flops(loaded.num_parameters, result.tokens_processed, loaded.is_encoder_decoder),
        "resumed_from_step": result.resumed_from_step,
        "setup": result.setup,
        "final_losses": result.losses,
    }

    evaluation = None
    if eval_examples and spec.eval_methods:
        _check_stop(should_stop)
        evaluation = evaluate_methods(
            loaded,
            handle,
            train_examples,
            eval_examples,
            methods=spec.eval_methods,
            batch_size=recipe.eval_batch_size,
            max_length=recipe.max_length,
            names=names,
            progress=progress,
        )
    elif eval_rows is not None and not eval_examples:
        warnings.append("no labelled held-out rows: evaluation skipped")

    _check_stop(should_stop)
    progress({"phase": "export", "message": "writing the adapter, PEFT export and model card"})
    report = parameter_report(handle)
    metrics = _summary(evaluation)
    results = {
        "model": spec.model,
        "revision": spec.revision,
        "template": template.to_dict(),
        "train_templates": spec.train_templates,
        "labels": names,
        "recipe": recipe.to_dict(),
        "init_vectors": spec.init_vectors,
        "params": _jsonable(report),
        "training": training,
        "evaluation": evaluation,
        "metrics": metrics,
        "num_train": len(train_examples),
        "num_eval": len(eval_examples),
        "warnings": warnings,
    }
    tmp = out_dir / ".tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    extra = {"template": template.to_dict(), "choices": names, "recipe": recipe.to_dict(), "metrics": metrics}
    base_model = _base_model_id(spec.model)
    save_adapter(handle, tmp, base_model=base_model, revision=spec.revision, extra=extra)
    try:
        export_peft(handle, tmp / "peft", base_model=base_model, revision=spec.revision)
    except UserError as exc:  # PEFT cannot express this placement: the adapter itself is still complete
        warnings.append(f"PEFT export skipped: {exc}")
    (tmp / "README.md").write_text(model_card(results), encoding="utf-8")
    (tmp / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    _publish(tmp, out_dir)
    progress({"phase": "done", "message": "finished", "metrics": metrics})
    return results


def _base_model_id(model: str) -> str:
    """A local folder as an absolute path (the adapter must find it from anywhere), a hub id as is."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _summary(evaluation: dict | None) -> dict:
    """The headline numbers per method: accuracy and macro-F1 (what ia3_config.json keeps)."""
    if not evaluation:
        return {}
    return {
        method: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}
        for method, r in evaluation["methods"].items()
    }


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move everything from tmp into out_dir, results.json last (its presence marks completion)."""
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == "results.json")
    for entry in entries:
        target = out_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()
