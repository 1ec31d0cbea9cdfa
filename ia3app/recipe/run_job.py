"""The job runner: one plain function of (job spec, data, progress callback, should_stop).

The job worker calls :func:`run_job`; so could any other dispatcher (a Ray task, a script),
since it knows nothing of the queue or the database. A job runs as named phases, each a function
here that reports its phase: :func:`prepare_examples` ("validate": checks each template against the
rows and renders each row once), :func:`load` (the backbone with (IA)^3 injected, the examples
fitted to it, optionally T-Few's released vectors or an earlier adapter to start from),
:func:`train_adapter` (resuming from checkpoints in work_dir; cross-validation folds first when
asked), :func:`evaluate` (zero-shot / in-context / T-Few on the held-out rows) and :func:`export`,
which writes the adapter folder — adapter.safetensors + ia3_config.json, peft/ and
README.md (model card), written into out_dir/.tmp and moved into place with ia3_config.json
last, so a folder with ia3_config.json is complete — and returns the :class:`JobResult`, which
its caller stores (the queue as the job's result, the CLI as results.json).

The job types live in ia3app.jobtypes (no torch); JobSpec is re-exported here.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable

from ia3app.errors import UserError
from ia3app.evaluation.report import EvaluationReport, Headline
from ia3app.example import Example
from ia3app.jobtypes import JobResult, JobSpec, Progress, ProgressEvent, TrainingStats
from ia3app.templates.spec import checked_examples

__all__ = ["JobSpec", "JobResult", "Progress", "ProgressEvent", "run_job"]


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
) -> JobResult:
    """Run one job end to end: the adapter folder in out_dir, and its JobResult returned.

    Raises UserError for problems in the job or its data, ia3app.errors.Cancelled when
    should_stop() turns true (checkpoints stay in work_dir, so a rerun resumes).
    models: an ia3app.backbones.cache.ModelCache kept by the caller (a worker) to reuse the loaded,
    compiled backbone for the next job of the same model. compile_cache_dir: where compiled
    kernels persist between processes (the recipe's compile setting decides whether to compile).
    """
    from ia3app.backbones.cache import ModelCache

    models = models if models is not None else ModelCache()
    try:
        return _run_job(spec, train_rows, eval_rows, work_dir=work_dir, out_dir=out_dir, progress=progress,
                        should_stop=should_stop, device=device, models=models, compile_cache_dir=compile_cache_dir)
    except BaseException as exc:
        from ia3app.errors import Cancelled

        if not isinstance(exc, (Cancelled, UserError)):
            models.clear()  # whatever failed may have left the kept model half-changed
        raise


@dataclass
class JobRun:
    """One run of a job, as its phases share it: what was asked, where it writes, whom it tells."""

    spec: JobSpec
    work_dir: Path
    out_dir: Path
    progress: Progress
    should_stop: Callable[[], bool]
    compile_cache_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)
    """Every phase's warnings, in order (the JobResult keeps this list)."""

    def check_stop(self) -> None:
        _check_stop(self.should_stop)


@dataclass
class Examples:
    """The prepare phase's rows as examples: every row rendered once per template."""

    train: list[Example]
    held_out: list[Example]
    """Every held-out row rendered (unlabelled ones too, with label None), in file order."""
    extras: list[list[Example]]
    """The training rows rendered by each of spec.train_templates."""
    names: list[str]
    """The answer choices' names (class names)."""


@dataclass
class ModelInputs:
    """The examples fitted to the loaded model (the load phase): what training and evaluation read."""

    train_items: list
    """What train() reads: the fitted training examples wrapped for the model, or per row a tuple of them
    (one per template) when the job trains with several templates."""
    train_examples: list[Example]
    """The fitted training examples, unwrapped (in-context demonstrations, cross-validation folds)."""
    eval_examples: list[Example]
    """The fitted labelled held-out examples, unwrapped."""


@dataclass
class Loaded:
    """The load phase's result: the backbone with (IA)^3 injected, the inputs fitted to it."""

    model: Any
    """ia3app.backbones.loading.LoadedModel."""
    handle: Any
    """ia3app.adapters.ia3.Ia3Model."""
    inputs: ModelInputs


def _run_job(spec, train_rows, eval_rows, *, work_dir, out_dir, progress, should_stop, device, models,
             compile_cache_dir) -> JobResult:
    run = JobRun(spec, Path(work_dir), Path(out_dir), progress, should_stop, compile_cache_dir)
    examples = prepare_examples(run, train_rows, eval_rows)
    loaded = load(run, examples, train_rows, eval_rows, device, models)
    run.check_stop()
    if spec.cv_folds and eval_rows:
        raise UserError("a job evaluates by cross-validation or on held-out rows, not both")
    training, evaluation = train_adapter(run, loaded, examples.names)
    if loaded.inputs.eval_examples and spec.eval_methods:
        run.check_stop()
        evaluation = evaluate(run, loaded, examples.names)
    elif eval_rows is not None and not loaded.inputs.eval_examples:
        run.warnings.append("no labelled held-out rows: evaluation skipped")
    run.check_stop()
    return export(run, loaded, examples.names, training, evaluation)


def prepare_examples(run: JobRun, train_rows: list[dict], eval_rows: list[dict] | None) -> Examples:
    """Phase "validate": check each template against the rows and render each row once (per template)."""
    from ia3app.evaluation.compare import label_names

    template = run.spec.template
    if not train_rows:
        raise UserError("the training data has no rows")
    run.progress(ProgressEvent("validate", f"checking the template against {len(train_rows)} training rows"
                               + (f" and {len(eval_rows)} held-out rows" if eval_rows else "")))
    warnings, train_examples = checked_examples(template, _columns(train_rows), train_rows)
    run.warnings += warnings
    if any(ex.label is None for ex in train_examples):
        raise UserError(f"every training row needs a label in column '{template.label_column}'")
    held_out: list[Example] = []
    if eval_rows:
        warnings, held_out = checked_examples(template, _columns(eval_rows), eval_rows)
        run.warnings += [f"held-out data: {w}" for w in warnings]
    names = label_names(train_examples + [ex for ex in held_out if ex.label is not None])
    extras = []
    for extra in run.spec.train_templates:  # train() draws one of the templates per row per step
        warnings, rendered = checked_examples(extra, _columns(train_rows), train_rows)
        run.warnings += [f"template '{extra.name}': {w}" for w in warnings]
        extras.append(rendered)
    return Examples(train_examples, held_out, extras, names)


def load(run: JobRun, examples: Examples, train_rows: list[dict], eval_rows: list[dict] | None,
         device: str | None, models) -> Loaded:
    """Phase "load": the backbone (kept by `models` between jobs) with (IA)^3 injected, the examples fitted to its
    token budget and chat template, and the vectors training starts from."""
    from ia3app.adapters.ia3 import inject
    from ia3app.backbones.loading import default_device, load_model, weights_dtype
    from ia3app.backbones.threads import use_threads

    spec, recipe = run.spec, run.spec.recipe
    run.progress(ProgressEvent("load", f"loading {spec.model}" + (f" @ {spec.revision}" if spec.revision else "")))
    device = device or default_device()
    use_threads("train", remember=run.work_dir)  # this (the job's) thread, chosen once per job: ia3app.backbones.threads
    key = (spec.model, spec.revision, device, str(weights_dtype(recipe.precision, device)))

    def fresh():
        from ia3app.backbones.bundled import resolve
        from ia3app.backbones.download import fetch

        resolve(spec.model, lambda message: run.progress(ProgressEvent("load", message)))  # bundled: converted once
        fetch(spec.model, spec.revision, run.progress)  # a hub model not cached yet: bytes and speed as "download"
        loaded = load_model(spec.model, spec.revision, device=device, precision=recipe.precision)
        return loaded, inject(loaded.model)

    model, handle = models.get(key, fresh)
    loaded = Loaded(model, handle, _fit_inputs(run, examples, train_rows, eval_rows, model.tokenizer))
    if spec.init_vectors:
        run.progress(ProgressEvent("load", "starting from T-Few's released (IA)^3 vectors"))
    if spec.init_adapter:
        run.progress(ProgressEvent("load", "starting from the previous round's (IA)^3 vectors"))
    if spec.init_vectors or spec.init_adapter:
        _start_vectors(run, handle)
    return loaded


def _fit_inputs(run: JobRun, examples: Examples, train_rows: list[dict], eval_rows: list[dict] | None,
                tokenizer) -> ModelInputs:
    """Long rows: shorten the longest field, not the end of the input (the question, the template's words).
    Training reads the model-ready inputs (wrapped in the chat template when the template asks and the model has
    one); evaluation gets them unwrapped: in-context prompts wrap their demonstrations whole."""
    from ia3app.templates.chat import wrap_examples
    from ia3app.templates.truncate import fit_examples, warning as cut_warning

    spec, max_length = run.spec, run.spec.recipe.max_length
    fitted = fit_examples(spec.template, train_rows, examples.train, tokenizer, max_length)
    train_examples = fitted.examples
    run.warnings += [w for w in [cut_warning(fitted, max_length)] if w]
    train_items = wrap_examples(tokenizer, train_examples, spec.template.chat)
    if spec.train_templates:
        train_items = list(zip(train_items, *(
            wrap_examples(tokenizer, fit_examples(extra, train_rows, rendered, tokenizer, max_length).examples,
                          extra.chat)
            for extra, rendered in zip(spec.train_templates, examples.extras))))
    eval_examples: list[Example] = []
    if eval_rows:
        fitted = fit_examples(spec.template, eval_rows, examples.held_out, tokenizer, max_length)
        eval_examples = [ex for ex in fitted.examples if ex.label is not None]
        run.warnings += [w for w in [cut_warning(fitted, max_length, "held-out")] if w]
    return ModelInputs(train_items, train_examples, eval_examples)


def _start_vectors(run: JobRun, handle) -> None:
    """Every training run starts where a single job would: ones, T-Few's released vectors, and/or an
    earlier adapter's vectors (the active-learning loop's warm start)."""
    from ia3app.adapters.files import apply_adapter
    from ia3app.adapters.tfew_vectors import apply_tfew_vectors, resolve_tfew_vectors

    handle.restore()
    handle.reset()
    if run.spec.init_vectors:
        apply_tfew_vectors(handle, resolve_tfew_vectors(run.spec.init_vectors, cache_dir=run.work_dir / "cache"))
    if run.spec.init_adapter:
        apply_adapter(handle, run.spec.init_adapter)


def _train_once(run: JobRun, loaded: Loaded, items: list, checkpoint_dir: Path, label: str = ""):
    """One training run of the recipe over `items` (checkpoints in checkpoint_dir); its train.TrainResult."""
    from ia3app.recipe.train import train

    recipe = run.spec.recipe

    def on_step(event: ProgressEvent) -> None:
        message = f"{label}step {event.step}/{recipe.steps}"
        if event.loss is not None:
            message += f", loss {event.loss:.4f}"
        run.progress(event.with_message(message))

    return train(
        loaded.handle,
        loaded.model.tokenizer,
        items,
        recipe,
        progress=on_step,
        checkpoint_dir=checkpoint_dir,
        should_stop=run.should_stop,
        compile_cache_dir=run.compile_cache_dir,
    )


def train_adapter(run: JobRun, loaded: Loaded, names: list[str]) -> tuple[TrainingStats, EvaluationReport | None]:
    """Phase "train" (train() reports each step): the adapter trained on every training row, after the
    cross-validation folds when the job asks for them; (its TrainingStats, the folds' pooled evaluation or None)."""
    from ia3app.evaluation.flops import training_flops

    spec, inputs = run.spec, loaded.inputs
    evaluation = None
    if spec.cv_folds:
        evaluation = _cross_validate(run, loaded, names)
        _start_vectors(run, loaded.handle)
        run.progress(ProgressEvent("train", f"final run {spec.cv_folds + 1}/{spec.cv_folds + 1}: "
                                            f"training on all {len(inputs.train_examples)} rows"))
    result = _train_once(run, loaded, inputs.train_items, run.work_dir / "checkpoints",
                         f"final run {spec.cv_folds + 1}/{spec.cv_folds + 1}: " if spec.cv_folds else "")
    loaded.handle.model.eval()
    model = loaded.model
    training = TrainingStats(
        steps=result.steps,
        wall_s=result.wall_s,
        examples_per_s=result.examples_per_s,
        tokens_processed=result.tokens_processed,
        flops=training_flops(model.num_parameters, result.tokens_processed, model.is_encoder_decoder),
        resumed_from_step=result.resumed_from_step,
        work_tokens=result.work_tokens,
        attention_pairs=result.attention_pairs,
        setup=json.loads(json.dumps(result.setup)),  # JSON's shapes (lists, not tuples): equal once stored
        final_losses=dict(result.losses),
        loss_curve=_loss_curve(result.history),
    )
    return training, evaluation


def evaluate(run: JobRun, loaded: Loaded, names: list[str]) -> EvaluationReport:
    """Phase "evaluate": each method the job asks for on the labelled held-out rows (evaluate_methods' report)."""
    from ia3app.evaluation.compare import evaluate_methods
    from ia3app.recipe.device_plan import eager_blocks

    recipe = run.spec.recipe
    with eager_blocks():  # compiled blocks run eager here: no recompile for the merged, no-grad model
        return evaluate_methods(
            loaded.model,
            loaded.handle,
            loaded.inputs.train_examples,
            loaded.inputs.eval_examples,
            methods=run.spec.eval_methods,
            batch_size=recipe.eval_batch_size,
            max_length=recipe.max_length,
            names=names,
            progress=run.progress,
            chat=run.spec.template.chat,
        )


def export(run: JobRun, loaded: Loaded, names: list[str], training: TrainingStats,
           evaluation: EvaluationReport | None) -> JobResult:
    """Phase "export": the JobResult, and the adapter folder written into out_dir/.tmp and moved into place
    (ia3_config.json last); then "done"."""
    from ia3app.adapters.files import save_adapter
    from ia3app.adapters.model_card import model_card
    from ia3app.adapters.params import parameter_report
    from ia3app.adapters.peft_export import export_peft
    from ia3app.backbones.bundled import peft_base_model

    spec, template, handle = run.spec, run.spec.template, loaded.handle
    run.progress(ProgressEvent("export", "writing the adapter, PEFT export and model card"))
    report = parameter_report(handle)
    metrics = _summary(evaluation)
    results = JobResult(
        model=spec.model,
        revision=spec.revision,
        template=template,
        train_templates=list(spec.train_templates),
        labels=list(names),
        recipe=spec.recipe,
        init_vectors=spec.init_vectors,
        params=_jsonable(report),
        training=training,
        evaluation=evaluation,
        metrics=metrics,
        num_train=len(loaded.inputs.train_examples),
        num_eval=(len(evaluation["gold"]) if spec.cv_folds and evaluation
                  else len(loaded.inputs.eval_examples)),
        warnings=run.warnings,  # the same list: a warning added below (PEFT export) is in the result too
    )
    tmp = run.out_dir / ".tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    extra = {"template": template.to_dict(), "choices": names, "recipe": spec.recipe.to_dict(), "metrics": metrics,
             **adapter_confidence(evaluation)}
    base_model = _base_model_id(spec.model)
    save_adapter(handle, tmp, base_model=base_model, revision=spec.revision, extra=extra)
    _plots(results, tmp)
    try:
        export_peft(handle, tmp / "peft", base_model=peft_base_model(base_model), revision=spec.revision)
    except UserError as exc:  # PEFT cannot express this placement: the adapter itself is still complete
        run.warnings.append(f"PEFT export skipped: {exc}")
    (tmp / "README.md").write_text(model_card(results), encoding="utf-8")
    _publish(tmp, run.out_dir)
    run.progress(ProgressEvent("done", "finished"))
    return results


def _cross_validate(run: JobRun, loaded: Loaded, names: list[str]) -> EvaluationReport:
    """k training runs, each on the rows outside one stratified fold and evaluated (every method) on
    that fold; the pooled out-of-fold report (compare.pool_folds). A fold's report is kept in
    work_dir/fold-i/evaluation.json, its checkpoints in work_dir/fold-i/checkpoints: a resumed job
    skips finished folds and continues the interrupted one from its last checkpoint."""
    from ia3app.evaluation.compare import evaluate_methods, pool_folds
    from ia3app.recipe.device_plan import eager_blocks
    from ia3app.tables import stratified_folds

    spec, progress, inputs = run.spec, run.progress, loaded.inputs
    k = spec.cv_folds
    train_examples, train_items = inputs.train_examples, inputs.train_items
    fold_of = stratified_folds([{"label": ex.label} for ex in train_examples], "label", k, seed=0)
    reports = []
    for i in range(k):
        run.check_stop()
        where = run.work_dir / f"fold-{i + 1}"
        done = where / "evaluation.json"
        held = [ex for ex, f in zip(train_examples, fold_of) if f == i]
        if done.exists():
            progress(ProgressEvent("evaluate", f"fold {i + 1}/{k}: already done (resumed)"))
            reports.append(json.loads(done.read_text(encoding="utf-8")))
            continue
        items = [item for item, f in zip(train_items, fold_of) if f != i]
        seen = [ex for ex, f in zip(train_examples, fold_of) if f != i]
        progress(ProgressEvent("train", f"fold {i + 1}/{k}: training on {len(items)} rows, "
                                        f"then evaluating on the {len(held)} it did not see"))
        _start_vectors(run, loaded.handle)
        _train_once(run, loaded, items, where / "checkpoints", f"fold {i + 1}/{k}: ")
        loaded.handle.model.eval()
        run.check_stop()
        with eager_blocks():
            report = evaluate_methods(loaded.model, loaded.handle, seen, held,
                                      methods=spec.eval_methods or ["t-few"], batch_size=spec.recipe.eval_batch_size,
                                      max_length=spec.recipe.max_length, names=names, progress=progress,
                                      warmup=i == 0, chat=spec.template.chat)
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / "evaluation.json.tmp"
        tmp.write_text(json.dumps(report), encoding="utf-8")
        os.replace(tmp, done)
        reports.append(report)
    return pool_folds(reports)


def adapter_confidence(evaluation: EvaluationReport | None) -> dict:
    """What ia3_config.json keeps so a downloaded adapter reports calibrated probabilities:
    {"calibration": {"temperature", "source", "n", "ece_before", "ece_after"}, "abstain_threshold": None}
    (the threshold is chosen later, on the results page). {} without a calibration fit."""
    cal = (evaluation or {}).get("calibration")
    if not cal:
        return {}
    return {"calibration": {k: cal[k] for k in ("temperature", "source", "n", "ece_before", "ece_after")},
            "abstain_threshold": None}


def _loss_curve(history: list[dict]) -> list[list[float]]:
    from ia3app.jobtypes import LOSS_CURVE_POINTS

    rows = [h for h in history if h.get("step") is not None and h.get("loss") is not None]
    if len(rows) > LOSS_CURVE_POINTS:
        stride = len(rows) / LOSS_CURVE_POINTS
        rows = [rows[int(i * stride)] for i in range(LOSS_CURVE_POINTS - 1)] + [rows[-1]]
    return [[float(h["step"]), float(h["loss"]), float(h.get("loss_lm") or 0.0), float(h.get("loss_ul") or 0.0),
             float(h.get("loss_ln") or 0.0)] for h in rows]


def _plots(results: JobResult, folder: Path) -> None:
    """The model card's pictures (PNG) beside README.md, in folder/plots/."""
    from ia3app.evaluation.plots import save_all

    save_all(results, folder / "plots")


def _base_model_id(model: str) -> str:
    """A local folder as an absolute path (the adapter must find it from anywhere), a hub id or a bundled
    model's short name as is (any machine with the bundled package finds its own converted folder)."""
    from ia3app.backbones.bundled import is_short_name

    if is_short_name(model):
        return model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


def _summary(evaluation: EvaluationReport | None) -> dict[str, Headline]:
    """The headline numbers per method: accuracy and macro-F1 (what ia3_config.json keeps)."""
    if not evaluation:
        return {}
    return {
        method: {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}
        for method, r in evaluation["methods"].items()
    }


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move everything from tmp into out_dir, ia3_config.json last (its presence marks completion)."""
    stale = out_dir / "ia3_config.json"
    if stale.exists():  # a rerun over an old folder: it is incomplete until the new config lands
        stale.unlink()
    entries = sorted(tmp.iterdir(), key=lambda p: p.name == "ia3_config.json")
    for entry in entries:
        target = out_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    tmp.rmdir()
